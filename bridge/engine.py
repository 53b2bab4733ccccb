"""The engine: owns the Chain, runs it in the audio callback, takes control changes safely.

Audio side (``process``, called by whichever Backend runs the engine)::

    engine.process(inp, out)   # inp, out: (channels, frames) float32, C-contiguous

At block start it drains the :class:`~hushbridge.control.params.ParamRing`, then runs the chain
on ``out`` (a copy of ``inp``), crossfading from the previous chain if one was just swapped
out. It never allocates buffers, never takes a lock the control side holds and never raises:
an exception is counted, the block is silenced, and the message is kept for a non-RT thread.

Control side (any thread): :meth:`Engine.set`, :meth:`Engine.set_norm`,
:meth:`Engine.set_bypass`, :meth:`Engine.get`, :meth:`Engine.parameters`,
:meth:`Engine.load_chain` / :meth:`Engine.load_preset`. Values are checked (``set`` raises
:class:`~hushbridge.errors.ParamError`, ``set(..., clamp=True)`` clamps, as OSC and MIDI do).
"""
from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hushbridge.control.params import BYPASS, ControlPort, ParamChange, ParamRing
from hushbridge.dsp.kernels.util import crossfade_into, peak_and_square_sum, sanitize
from hushbridge.effects.base import Effect, Param, ProcessSpec
from hushbridge.effects.chain import Chain
from hushbridge.errors import ChainError, ParamError

SWAP_FADE_MS = 20.0
GIL_SWITCH_INTERVAL = 0.0005  # seconds
ENGINE_STATS = (
    "xruns",
    "cpu_load",
    "latency_samples",
    "sample_rate",
    "block_size",
    "dropped_messages",
    "coalesced_changes",
    "late_blocks",
    "nonfinite_events",
    "callback_errors",
)

Listener = Callable[[str, float, object], None]


@dataclass(frozen=True)
class ParamInfo:
    """One controllable parameter of the running chain, as the control plane sees it."""

    address: str  # "/hb/<id>/<param>" or "/hb/<id>/bypass"
    effect_id: str
    slot: int
    index: int  # parameter index, or BYPASS
    param: Param


BYPASS_PARAM = Param("bypass", 0.0, 1.0, 0.0, step=1.0, choices=("off", "on"))


class Engine:
    """Runs a Chain for a Backend. See the module docstring for the two sides.

    Parameters
    ----------
    chain : Chain
        The chain to run; replace it live with :meth:`load_chain`.
    channels : int
        Channels in and out.
    ring_capacity : int
        Slots in the parameter hand-off ring.
    """

    def __init__(self, chain: Chain, channels: int = 2, ring_capacity: int = 1024) -> None:
        if not isinstance(chain, Chain):
            raise TypeError(f"Engine needs a Chain, got {chain!r}")
        self.channels = int(channels)
        self.ring = ParamRing(ring_capacity)
        self.control = ControlPort(self.ring)
        self.spec: ProcessSpec | None = None
        self._chain = chain
        self._generation = 0
        self._incoming: tuple[Chain, int] | None = None
        self._fading_from: Chain | None = None
        self._fade_pos = 0
        self._fade_len = 1
        self._retired: list[Chain] = []
        self._swap_lock = threading.Lock()  # control side only: one swap at a time
        self._table: dict[str, ParamInfo] = {}
        self._shadow: dict[str, float] = {}
        self._listeners: list[Listener] = []
        self._latency_listeners: list[Callable[[int], None]] = []
        self._announced_latency = chain.latency_samples
        # counters (written by the audio thread or the backend, read anywhere)
        self.xruns = 0
        self.last_xrun_time = 0.0
        self.late_blocks = 0
        self.dropped_messages = 0
        self.callback_errors = 0
        self.last_callback_error = ""
        self.cpu_load = 0.0
        self.blocks = 0
        self._nonfinite_base = 0
        self._rebuild_table(chain, 0)

    # == set-up (non-RT) =========================================================================
    @property
    def chain(self) -> Chain:
        return self._chain

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def latency_samples(self) -> int:
        return self._chain.latency_samples

    @property
    def coalesced_changes(self) -> int:
        return self.control.coalesced_changes

    @property
    def nonfinite_events(self) -> int:
        return self._nonfinite_base + self._chain.nonfinite_events

    def prepare(self, sample_rate: int, block_size: int) -> None:
        """Allocate for the device's format and warm numba up. Call before audio starts and
        whenever the backend's sample rate or buffer size changes (never from ``process``)."""
        spec = ProcessSpec(int(sample_rate), int(block_size), self.channels)
        with self._swap_lock:
            # JACK calls this between callbacks; every chain the callback may touch is re-prepared
            self._old = np.zeros((self.channels, spec.max_block_size), dtype=np.float32)
            chains = [self._chain]
            if self._incoming is not None:
                chains.append(self._incoming[0])
            if self._fading_from is not None:
                chains.append(self._fading_from)
            for chain in chains:
                chain.prepare(spec)
                self._warm_up(chain, spec)
            self._prepare_meters(spec)
            self.spec = spec

    def _prepare_meters(self, spec: ProcessSpec) -> None:
        self.peaks_in = np.zeros(self.channels, dtype=np.float64)
        self.peaks_out = np.zeros(self.channels, dtype=np.float64)
        self.sq_in = np.zeros(self.channels, dtype=np.float64)
        self.sq_out = np.zeros(self.channels, dtype=np.float64)
        self.meter_frames = 0
        self._fade_len = max(1, int(SWAP_FADE_MS * 1e-3 * spec.sample_rate))
        self._period = spec.max_block_size / spec.sample_rate

    @staticmethod
    def _warm_up(chain: Chain, spec: ProcessSpec) -> None:
        """Run every kernel once (numba compiles or loads its cache here, not in a callback)."""
        rng = np.random.default_rng(0)
        block = (rng.standard_normal((spec.channels, spec.max_block_size)) * 0.1).astype(np.float32)
        chain.process(block)
        chain.process(np.zeros((spec.channels, min(spec.max_block_size, 1)), dtype=np.float32))
        chain.reset()

    def freeze_gc(self) -> None:
        """Move start-up objects out of the collector's way so a collection in the callback is
        short, and make the interpreter hand the GIL over more often than every 5 ms (longer than
        a 128-frame period) so the audio thread gets it back quickly from control threads."""
        gc.collect()
        gc.freeze()
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL)

    # == audio side (RT) =========================================================================
    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        """The audio callback body. ``inp`` and ``out`` are (channels, frames) float32; ``out`` is
        always fully written. Frames beyond the prepared block size are processed in pieces."""
        t0 = time.perf_counter()
        try:
            self.ring.drain(self._apply)
            n = inp.shape[1]
            bs = self.spec.max_block_size
            for start in range(0, n, bs):
                stop = min(n, start + bs)
                self._process_block(inp[:, start:stop], out[:, start:stop])
        except Exception as e:  # noqa: BLE001 - the callback must never raise into the driver
            out.fill(0.0)
            self.callback_errors += 1
            self.last_callback_error = repr(e)
        spent = time.perf_counter() - t0
        period = inp.shape[1] / self.spec.sample_rate if self.spec else self._period
        load = spent / period if period > 0 else 0.0
        if load > 1.0:
            self.late_blocks += 1
        self.cpu_load += 0.05 * (load - self.cpu_load)
        self.blocks += 1

    def _process_block(self, inp: np.ndarray, out: np.ndarray) -> None:
        n = inp.shape[1]
        peak_and_square_sum(inp, self.peaks_in, self.sq_in)
        incoming = self._incoming
        if incoming is not None and self._fading_from is None:
            self._fading_from = self._chain
            self._nonfinite_base += self._chain.nonfinite_events
            self._chain, self._generation = incoming
            self._incoming = None
            self._fade_pos = 0
        out[...] = inp
        self._chain.process(out)
        old = self._fading_from
        if old is not None:
            buf = self._old[:, :n]
            buf[...] = inp
            old.process(buf)
            self._fade_pos = crossfade_into(buf, out, self._fade_pos, self._fade_len)
            if self._fade_pos >= self._fade_len:
                self._retired.append(old)  # dropped by the control side, not here
                self._fading_from = None
        if sanitize(out):
            self._nonfinite_base += 1
        peak_and_square_sum(out, self.peaks_out, self.sq_out)
        self.meter_frames += n

    def _apply(self, generation: int, slot: int, param: int, value: float, stamp: float) -> None:
        if generation == self._generation:
            chain = self._chain
        else:
            incoming = self._incoming
            if incoming is None or incoming[1] != generation:
                return  # meant for a chain that is gone
            chain = incoming[0]
        if not 0 <= slot < len(chain):
            return
        if param == BYPASS:
            chain.set_bypass_index(slot, value >= 0.5)
        elif 0 <= param < len(chain[slot].params):
            chain[slot].set_index(param, value)

    def note_xrun(self) -> None:
        """Called by a backend when the driver reports an xrun."""
        self.xruns += 1
        self.last_xrun_time = time.time()

    # == control side ============================================================================
    def _rebuild_table(self, chain: Chain, generation: int) -> None:
        table: dict[str, ParamInfo] = {}
        shadow: dict[str, float] = {}
        for slot, (eid, effect) in enumerate(chain.items()):
            for index, p in enumerate(effect.params):
                address = f"/hb/{eid}/{p.id}"
                table[address] = ParamInfo(address, eid, slot, index, p)
                shadow[address] = effect.get(p.id)
            address = f"/hb/{eid}/bypass"
            table[address] = ParamInfo(address, eid, slot, BYPASS, BYPASS_PARAM)
            shadow[address] = 1.0 if chain.is_bypassed(slot) else 0.0
        self._table, self._shadow = table, shadow
        self._table_generation = generation

    def parameters(self) -> list[tuple[ParamInfo, float]]:
        """Every controllable parameter with its current value, in chain order."""
        table, shadow = self._table, self._shadow
        return [(info, shadow[a]) for a, info in table.items()]

    def info(self, address: str) -> ParamInfo:
        try:
            return self._table[address]
        except KeyError:
            raise ParamError(f"unknown address {address!r}") from None

    def add_listener(self, listener: Listener) -> None:
        """``listener(address, value, source)`` is called after every accepted change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def add_latency_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(latency_samples)`` is called (from a control thread) when latency changes."""
        self._latency_listeners.append(listener)

    def remove_latency_listener(self, listener: Callable[[int], None]) -> None:
        """Stop calling ``listener``; nothing happens if it was not registered."""
        if listener in self._latency_listeners:
            self._latency_listeners.remove(listener)

    def set(self, address: str, value: float, *, clamp: bool = False, source: object = None, stamp: float = 0.0) -> float:
        """Set ``/hb/<id>/<param>`` (or ``/hb/<id>/bypass``). Returns the value applied.

        Raises ParamError for an unknown address or, unless ``clamp``, an out-of-range value.
        """
        info = self.info(address)
        p = info.param
        if clamp:
            try:
                v = float(value)
            except (TypeError, ValueError) as e:
                raise ParamError(f"{address} needs a number, got {value!r}") from e
            if v != v or v in (float("inf"), float("-inf")):
                raise ParamError(f"{address} needs a finite number, got {value!r}")
            v = p.clamp(v)
        else:
            v = p.check(value, f"{info.effect_id}")
        self._shadow[address] = v
        # the table may already describe a chain the audio thread has not swapped in yet
        self.control.submit(ParamChange(self._table_generation, info.slot, info.index, v), stamp)
        for listener in list(self._listeners):
            listener(address, v, source)
        return v

    def set_norm(self, address: str, norm: float, *, source: object = None) -> float:
        """Set a parameter from a 0..1 fader position through its scale."""
        info = self.info(address)
        return self.set(address, info.param.from_norm(float(norm)), clamp=True, source=source)

    def set_bypass(self, effect_id: str, bypassed: bool, *, source: object = None) -> None:
        self.set(f"/hb/{effect_id}/bypass", 1.0 if bypassed else 0.0, source=source)

    def get(self, address: str) -> float:
        """Current value of a parameter address, or of ``/hb/engine/<stat>``."""
        if address.startswith("/hb/engine/"):
            stat = address[len("/hb/engine/"):]
            if stat not in ENGINE_STATS:
                raise ParamError(f"unknown engine stat {stat!r} (stats: {', '.join(ENGINE_STATS)})")
            if stat in ("sample_rate", "block_size"):
                if self.spec is None:
                    return 0.0
                return float(self.spec.sample_rate if stat == "sample_rate" else self.spec.max_block_size)
            return float(getattr(self, stat))
        self.info(address)
        return self._shadow[address]

    def display(self, address: str, value: float) -> str:
        if address.startswith("/hb/engine/"):
            stat = address[len("/hb/engine/"):]
            if stat == "cpu_load":
                return f"{value * 100:.1f} %"
            if stat == "sample_rate":
                return f"{value:.0f} Hz"
            if stat == "latency_samples" and self.spec:
                return f"{value:.0f} samples ({value / self.spec.sample_rate * 1000:.2f} ms)"
            return f"{value:.0f}"
        return self.info(address).param.display(value)

    def load_chain(self, chain: Chain, *, source: object = None) -> None:
        """Swap in another chain live: prepared and warmed here (off the audio thread), then
        crossfaded in at a block boundary. Returns once the swap is handed over."""
        if not isinstance(chain, Chain):
            raise ChainError(f"load_chain needs a Chain, got {chain!r}")
        with self._swap_lock:
            self.wait_for_swap()
            if self.spec is not None:
                chain.prepare(self.spec)
                self._warm_up(chain, self.spec)
            generation = self._generation + 1
            if self.spec is None:  # not running yet: swap directly
                self._chain, self._generation = chain, generation
            else:
                self._incoming = (chain, generation)
            self._rebuild_table(chain, generation)
        self.housekeeping()
        for address, value in self._shadow.items():
            for listener in list(self._listeners):
                listener(address, value, source)

    def wait_for_swap(self, timeout: float = 2.0) -> bool:
        """Wait until a handed-over chain has fully crossfaded in (control side only)."""
        deadline = time.monotonic() + timeout
        while self._incoming is not None or self._fading_from is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def load_preset(self, name: str, *, source: object = None) -> None:
        from hushbridge.presets import load_preset

        self.load_chain(load_preset(name), source=source)

    def housekeeping(self) -> None:
        """Non-RT upkeep: flush coalesced changes, free retired chains, announce latency.
        Backends call it from a control thread every few milliseconds."""
        self.control.flush()
        while self._retired:
            self._retired.pop()
        lat = self._chain.latency_samples
        if lat != self._announced_latency and self._incoming is None:
            self._announced_latency = lat
            for listener in list(self._latency_listeners):
                listener(lat)

    def take_meter(self) -> dict[str, np.ndarray]:
        """Peak and RMS per channel since the last call (control side; values are approximate
        under concurrency, which meters tolerate)."""
        n = max(self.meter_frames, 1)
        result = {
            "peak_in": self.peaks_in.copy(),
            "peak_out": self.peaks_out.copy(),
            "rms_in": np.sqrt(self.sq_in / n),
            "rms_out": np.sqrt(self.sq_out / n),
        }
        self.peaks_in[:] = 0
        self.peaks_out[:] = 0
        self.sq_in[:] = 0
        self.sq_out[:] = 0
        self.meter_frames = 0
        return result

    def status_line(self) -> str:
        sr = self.spec.sample_rate if self.spec else 0
        lat = self.latency_samples
        ms = lat / sr * 1000 if sr else 0.0
        return (
            f"xruns {self.xruns}  cpu {self.cpu_load * 100:5.1f}%  latency {lat} smp ({ms:.2f} ms)  "
            f"late {self.late_blocks}  dropped msgs {self.dropped_messages}"
        )


def effect_of(engine: Engine, effect_id: str) -> Effect:
    """The effect instance ``effect_id`` of the engine's current chain (for tests and tools)."""
    return engine.chain[effect_id]
