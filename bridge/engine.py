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
:meth:`Engine.publish` makes read-only values (MIDI clock tempo, transport) readable with
``get`` and echoes them to listeners; :meth:`Engine.count_dropped` counts rejected control
messages from any thread.

Timed changes (OSC bundle time tags). ``set(..., stamp=T)`` with ``T`` in Unix seconds
(``time.time()``; python-osc converts the bundle's NTP time tag to that clock) is applied at
the first block whose start time reaches ``T``. The block clock is ``time.time()`` read once at
the top of each callback, plus ``frames / sample_rate`` per sub-block, so the accuracy is one
block (2.7 ms at 128 frames / 48 kHz) plus the sender's clock offset: on one machine both
clocks are the same; a remote sender needs NTP-synchronised clocks. ``stamp=0`` (or a time
already past) means at the next block. Future changes wait in a sorted, preallocated queue on
the audio side (:data:`TIMED_CAPACITY`); when it is full a change applies at once and
``timed_overflows`` rises. On the control side a future change counts for ``get``, presets and
listeners (OSC feedback) only from its time on (:meth:`Engine.settle_timed`), so they report what
is audible; at most :data:`TIMED_CAPACITY` wait there (``timed_pending``), a further one is
refused with ParamError.

Meters (:class:`MeterTap`, lock-free, one writer). Every callback the audio thread writes one
row of a ring: per-channel peak and sum of squares of input and output, the frame count, the
block's wall-clock time, the chain generation and the gain reduction / activity of up to
:data:`MAX_TRACKED` effects that expose ``gain_reduction_db`` or ``activity``; then it publishes
the row by incrementing ``seq``. Readers never reset anything: each keeps its own cursor, so
any number of subscribers at any rates read the same rows without disturbing each other or
the audio thread (see :meth:`MeterTap.read`). Per-effect CPU time is accumulated by the Chain
only while :meth:`Engine.enable_effect_timing` is on.
"""
from __future__ import annotations

import gc
import heapq
import itertools
import logging
import math
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hushbridge.control.params import BYPASS, CHANNEL_STRIDE, ControlPort, ParamChange, ParamRing
from hushbridge.dsp.kernels.meter import block_levels
from hushbridge.dsp.kernels.record import DONE as REC_DONE
from hushbridge.dsp.kernels.record import ROLLING as REC_ROLLING
from hushbridge.dsp.kernels.record import STATE as REC_STATE
from hushbridge.dsp.kernels.record import STOPPING as REC_STOPPING
from hushbridge.dsp.kernels.record import tap_input, tap_output
from hushbridge.dsp.kernels.schedule import timed_drop, timed_due, timed_insert, timed_keep_from
from hushbridge.dsp.kernels.util import sanitize, swap_fade_into
from hushbridge.effects.base import Effect, Param, ProcessSpec
from hushbridge.effects.chain import Chain
from hushbridge.errors import ChainError, ParamError

log = logging.getLogger(__name__)
#: exit codes of a child process ended by Ctrl-C, SIGTERM or SIGHUP (sent to the process group)
_STOPPING_SIGNALS = frozenset(-getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

SWAP_FADE_MS = 20.0
GIL_SWITCH_INTERVAL = 0.0002  # s: longest wait of the audio thread for a busy control thread's GIL
ENGINE_STATS = (
    "xruns",
    "cpu_load",
    "latency_samples",
    "device_latency_samples",
    "sample_rate",
    "block_size",
    "dropped_messages",
    "coalesced_changes",
    "late_blocks",
    "late_starts",
    "nonfinite_events",
    "callback_errors",
    "timed_overflows",
    "timed_pending",
    "model_overloads",
    "model_dry",
    "channels",
    "per_channel",
)

Listener = Callable[[str, float, object], None]

METER_SLOTS = 1024  # rows in the meter ring: 2.7 s of callbacks at 128 frames / 48 kHz
MAX_TRACKED = 16  # effects whose gain reduction / activity the audio thread copies per block
TIMED_CAPACITY = 256  # future-stamped (bundle) changes waiting on the audio side
PROBE_CAPACITY = 1 << 17  # rows of an ApplyProbe


class MeterTap:
    """Per-callback meter rows written by the audio thread, read by any number of readers.

    A seqlock-like ring. The writer (the audio thread, only) fills row ``seq % slots`` and then
    publishes it with ``seq += 1``; it never waits and never reads what readers do. A reader
    keeps its own cursor (the ``seq`` it has consumed up to) and calls :meth:`read`, which copies
    the published rows ``[max(cursor, w - slots + 1), w)`` (``w`` = ``seq`` before copying), then
    reads ``seq`` again and discards the rows the writer may have overwritten meanwhile
    (those below ``seq_after - slots + 1``). A reader that falls more than ``slots`` rows behind
    loses the oldest rows, never gets torn ones.

    Arrays (row = one callback):

    ``level`` (slots, 4 * channels) float64
        ``[peak_in, peak_out, sumsq_in, sumsq_out]``, each ``channels`` wide, linear.
    ``frames`` (slots,) int64; ``time`` (slots,) float64 (``time.time()`` at the block start);
    ``generation`` (slots,) int64 (the chain that ran); ``extra`` (slots, MAX_TRACKED, 1 +
        channels) float64 (``gain_reduction_db`` / ``activity`` of the tracked effects, see
        :attr:`Engine.tracked`: the largest, then each channel's where a per-channel chain runs
        the effect per channel, NaN where it does not).
    """

    def __init__(self, channels: int, slots: int = METER_SLOTS) -> None:
        self.channels = channels
        self.slots = slots
        self.level = np.zeros((slots, 4 * channels), dtype=np.float64)
        self.frames = np.zeros(slots, dtype=np.int64)
        self.time = np.zeros(slots, dtype=np.float64)
        self.generation = np.zeros(slots, dtype=np.int64)
        self.extra = np.full((slots, MAX_TRACKED, 1 + channels), np.nan, dtype=np.float64)
        self.seq = 0  # published rows; written by the audio thread only

    def read(self, cursor: int) -> tuple[int, dict[str, np.ndarray]]:
        """Rows published since ``cursor``: returns ``(new_cursor, rows)`` where ``rows`` has
        ``level``, ``frames``, ``time``, ``generation`` and ``extra`` (copies, oldest first;
        empty when nothing new). Control side; allocates."""
        w = self.seq
        lo = max(cursor, w - self.slots + 1)
        idx = np.arange(lo, w) % self.slots
        rows = {"level": self.level[idx], "frames": self.frames[idx], "time": self.time[idx],
                "generation": self.generation[idx], "extra": self.extra[idx]}
        valid = self.seq - self.slots + 1  # rows below this may have been overwritten meanwhile
        if lo < valid:
            cut = min(valid - lo, w - lo)
            rows = {k: v[cut:] for k, v in rows.items()}
        return w, rows


class ApplyProbe:
    """Optional record of when changes were applied (for the control-flood benchmark): the
    audio thread writes ``(chain slot, value, time.perf_counter())`` per change as it applies
    it at a block start, into preallocated arrays until they are full."""

    def __init__(self, capacity: int = PROBE_CAPACITY) -> None:
        self.slots = np.zeros(capacity, dtype=np.int64)
        self.values = np.zeros(capacity, dtype=np.float64)
        self.times = np.zeros(capacity, dtype=np.float64)
        self.n = 0


@dataclass(frozen=True)
class ParamInfo:
    """One controllable parameter of the running chain, as the control plane sees it."""

    address: str  # "/hb/<id>/<param>", "/hb/<id>@<n>/<param>" or "/hb/<id>/bypass"
    effect_id: str
    slot: int
    index: int  # parameter index (+ n * CHANNEL_STRIDE for channel n's own value), or BYPASS
    param: Param
    channel: int = 0  # n of /hb/<id>@<n>/<param>; 0: the effect's (every channel's)

    @property
    def param_index(self) -> int:
        """The parameter's index in its effect (BYPASS for bypass)."""
        return self.index if self.index < 0 else self.index % CHANNEL_STRIDE


BYPASS_PARAM = Param("bypass", 0.0, 1.0, 0.0, step=1.0, choices=("off", "on"))


_kernels_warm = False


def warm_effect_kernels(spec: ProcessSpec) -> None:
    """Load every built-in effect's numba kernels (and one session of each shipped model: denoise,
    dereverb, isolate; each then waits in the session pool) into this process, once, before audio
    starts.

    A preset loaded live is built on a control thread while the callback runs; loading a kernel
    from numba's disk cache or creating an onnxruntime session holds the GIL for 20-100 ms, far
    longer than a 2.7 ms period, so the first live load of an effect type cost xruns."""
    global _kernels_warm
    if _kernels_warm:
        return
    _kernels_warm = True
    from hushbridge.effects import EFFECTS

    noise = (np.random.default_rng(0).standard_normal((spec.channels, spec.max_block_size)) * 0.1).astype(np.float32)
    for name, cls in EFFECTS.items():
        if name in ("plugin", "chain"):
            continue
        try:
            effect = cls()
            effect.prepare(spec)
            effect.process(noise.copy())
            del effect
        except Exception as e:  # noqa: BLE001 - e.g. no shipped model: that effect loads when used
            log.debug("warming %s skipped: %s", name, e)


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
    channel_mask : int
        The speakers the channels feed (WAV channel mask; 0: not known).
    per_channel : bool, optional
        Run every chain (this one and each loaded later: presets) per channel, each channel as
        if it were alone (separate microphones; see :class:`~hushbridge.effects.Chain`).
        Default: as ``chain`` says.
    """

    def __init__(self, chain: Chain, channels: int = 2, ring_capacity: int = 1024, *,
                 channel_mask: int = 0, per_channel: bool | None = None) -> None:
        if not isinstance(chain, Chain):
            raise TypeError(f"Engine needs a Chain, got {chain!r}")
        if per_channel is not None and not isinstance(per_channel, (bool, np.bool_)):
            raise TypeError(f"per_channel must be True, False or None, not {per_channel!r}")
        #: every chain this engine runs runs per channel (see :class:`~hushbridge.effects.Chain`)
        self.per_channel = bool(chain.per_channel if per_channel is None else per_channel)
        self._claim(chain)
        self.channels = int(channels)
        #: the speakers the channels feed, as a WAV channel mask (0: not known), for the effects'
        #: ProcessSpec: a named LFE stays out of the dynamics' detectors
        self.channel_mask = int(channel_mask)
        self.ring = ParamRing(ring_capacity)
        self.control = ControlPort(self.ring)
        #: further hand-off rings with producers of their own (the OSC receive process, the
        #: MIDI fast path in the JACK callback), drained after :attr:`ring` at every callback;
        #: see :meth:`attach_ring`
        self._remote_rings: tuple[ParamRing, ...] = ()
        self.spec: ProcessSpec | None = None
        self._chain = chain
        self._generation = 0
        self._incoming: tuple[Chain, int] | None = None
        self._fading_from: Chain | None = None
        self._fade_pos = 0
        self._fade_len = 1
        # the swap's two ramps (samples from the swap on): the old chain falls from _fade_out_at,
        # the new one rises from _fade_in_at; see _process_block
        self._fade_out_at = self._fade_in_at = self._fade_end = 0
        self._chain_latency = chain.latency_samples
        self._incoming_latency = 0
        self._attached: bool | None = None  # set by backends; None: driven by hand
        self._retired: list[Chain] = []
        self._swap_lock = threading.Lock()  # control side only: one swap at a time
        # (process, chain): a background compile of the fused runs of a chain prepared before audio
        # started whose runs were not in the disk cache (a chain swapped in live is not fused)
        self._fuse_job: tuple[Any, Chain] | None = None
        self._table: dict[str, ParamInfo] = {}
        self._shadow: dict[str, float] = {}
        self._shadow_order: dict[str, float] = {}  # address -> order of the value in _shadow
        self._listeners: list[Listener] = []
        self._latency_listeners: list[Callable[[int], None]] = []
        self._preset_listeners: list[Callable[[Any], None]] = []
        self._chain_filters: list[Callable[[Chain], None]] = []
        self._timed_listeners: list[Callable[[], None]] = []
        self._announced_latency = chain.latency_samples
        # counters (written by the audio thread or the backend, read anywhere)
        self.xruns = 0
        self.last_xrun_time = 0.0
        self.late_blocks = 0
        #: callbacks that started after half their period had gone (JACK: the thread woke late, or
        #: waited that long for the GIL a control thread held), however short their processing
        self.late_starts = 0
        self.period_frames = 0  # the backend's current buffer size, where it differs from spec's (JACK)
        #: the device's own input + output latency where the backend knows it and no host is told
        #: it otherwise (PortAudio's estimate; on JACK the ports carry theirs): the round trip is
        #: ``latency_samples`` plus this
        self.device_latency_samples = 0
        self._dropped = 0
        self._dropped_lock = threading.Lock()  # control threads only: OSC, MIDI, workers
        self.callback_errors = 0
        self.last_callback_error = ""
        self.cpu_load = 0.0
        self.blocks = 0
        self._nonfinite_base = 0
        self._published: dict[str, float] = {}
        self.meter = MeterTap(self.channels)
        #: (chain, ((effect id, attribute, effect), ...), generation): effects whose
        #: ``gain_reduction_db`` / ``activity`` the audio thread copies into meter rows
        self.tracked: tuple[Chain, tuple[tuple[str, str, Effect], ...], int, tuple[int, ...]] = (chain, (), 0, ())
        self._timed = np.zeros((TIMED_CAPACITY, 5), dtype=np.float64)
        self._timed_n = 0
        self._timed_next = float("inf")
        self._keep = np.full(self.channels, np.nan)  # _apply's scratch: channel values to keep
        self.timed_overflows = 0
        # control side: what a future-stamped change will make of get() and feedback once it is
        # audible, (stamp, seq, address, value, source, table generation), earliest first
        self._timed_shadow: list[tuple[float, int, str, float, object, int, float]] = []
        self._timed_shadow_lock = threading.Lock()  # control threads only
        self._timed_seq = itertools.count()
        self._timed_orders: dict[float, float] = {}  # time tag -> order, while changes of it wait
        self._block_time = 0.0  # time.time() at the start of the current (sub-)block
        self._callback_time = 0.0  # time.time() at the start of the current callback
        self.apply_probe: ApplyProbe | None = None
        self._effect_timing = False
        # (ring, state, input channels, output channels): a recorder's tap (hushbridge.record)
        self._record_tap: tuple[np.ndarray, np.ndarray, int, int] | None = None
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

    @property
    def dropped_messages(self) -> int:
        """Rejected control messages (OSC, MIDI, any source); raise it with :meth:`count_dropped`."""
        return self._dropped

    @dropped_messages.setter
    def dropped_messages(self, value: int) -> None:
        with self._dropped_lock:
            self._dropped = int(value)

    def count_dropped(self, n: int = 1) -> None:
        """Count ``n`` rejected control messages. Thread-safe for any number of control threads
        (its own lock; the audio thread never counts here)."""
        with self._dropped_lock:
            self._dropped += n

    def prepare(self, sample_rate: int, block_size: int) -> None:
        """Allocate for the device's format and warm numba up. Call before audio starts and
        whenever the backend's sample rate or buffer size changes (never from ``process``)."""
        spec = ProcessSpec(int(sample_rate), int(block_size), self.channels, self.channel_mask)
        self.period_frames = 0
        tap = self._record_tap
        if tap is not None and self.spec is not None and spec.sample_rate != self.spec.sample_rate:
            # a take cannot change its rate: it ends with what came at the old one
            state = tap[1]
            if state[REC_STATE] in (REC_ROLLING, REC_STOPPING):
                state[REC_STATE] = REC_DONE
        warm_effect_kernels(spec)
        with self._swap_lock:
            # JACK calls this between callbacks; every chain the callback may touch is re-prepared
            self._old = np.zeros((self.channels, spec.max_block_size), dtype=np.float32)
            chains = [self._chain]
            if self._incoming is not None:
                chains.append(self._incoming[0])
            if self._fading_from is not None:
                chains.append(self._fading_from)
            for chain in chains:
                self._prepare_chain(chain, spec)
            self._chain_latency = self._chain.latency_samples  # look-ahead depends on the rate
            if self._incoming is not None:
                self._incoming_latency = self._incoming[0].latency_samples
            self._prepare_meters(spec)
            self.spec = spec

    def _prepare_meters(self, spec: ProcessSpec) -> None:
        self._take_cursor = self.meter.seq
        # compile (or load) the meter and schedule kernels here, not in the first callback
        block = np.zeros((self.channels, 1), dtype=np.float32)
        scratch = np.zeros((1, 4 * self.channels), dtype=np.float64)
        block_levels(block, scratch, 0, 0, 2 * self.channels)
        q = np.zeros((2, 5), dtype=np.float64)
        n = timed_insert(q, 0, 0, 0, 0, 0.0, 1.0)
        timed_drop(q, timed_keep_from(q, n, 0), timed_due(q, n, 2.0))
        swap_fade_into(block, block.copy(), 0, 0, 0, 1)
        ring, state = np.zeros((4, 2 * self.channels), dtype=np.float32), np.zeros(8, dtype=np.int64)
        state[2] = 1  # rolling: every path of the record taps, for whole buffers and slices of them
        for b in (block, np.zeros((self.channels, 2), dtype=np.float32)[:, :1]):
            tap_input(ring, state, b, self.channels)
            tap_output(ring, state, b, self.channels, self.channels)
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
            now = time.time()
            self._block_time = self._callback_time = now
            meter = self.meter
            row = meter.seq % meter.slots
            ch = self.channels
            block_levels(inp, meter.level, row, 0, 2 * ch)  # before: inp may be out (files)
            tap = self._record_tap
            if tap is not None:
                tap_input(tap[0], tap[1], inp, tap[2])
            self.ring.drain(self._apply)
            for ring in self._remote_rings:
                ring.drain(self._apply)
            n = inp.shape[1]
            bs = self.spec.max_block_size
            sr = self.spec.sample_rate
            for start in range(0, n, bs):
                stop = min(n, start + bs)
                if self._timed_next <= now + start / sr:
                    self._apply_due(now + start / sr)
                self._process_block(inp[:, start:stop], out[:, start:stop])
            block_levels(out, meter.level, row, ch, 3 * ch)
            meter.frames[row] = n
            meter.time[row] = now
            meter.generation[row] = self._generation
            tracked = self.tracked
            if tracked[0] is self._chain:
                extra = meter.extra
                try:  # a failing meter attribute must not silence the block already computed
                    for j, (_eid, attr, _effect) in enumerate(tracked[1]):
                        # a bypassed effect is not run: what it last measured is not happening
                        self._chain.reading_into(tracked[3][j], attr, extra[row, j])
                except Exception as e:  # noqa: BLE001 - counted, reported from a non-RT thread
                    self.callback_errors += 1
                    self.last_callback_error = f"meter: {e!r}"
            meter.seq += 1  # publish the row
        except Exception as e:  # noqa: BLE001 - the callback must never raise into the driver
            out.fill(0.0)
            self.callback_errors += 1
            self.last_callback_error = repr(e)
        tap = self._record_tap
        if tap is not None:  # here: a block silenced above is recorded too, so the take keeps its time
            tap_output(tap[0], tap[1], out, tap[2], tap[3])
        spent = time.perf_counter() - t0
        period = inp.shape[1] / self.spec.sample_rate if self.spec else self._period
        load = spent / period if period > 0 else 0.0
        if load > 1.0:
            self.late_blocks += 1
        self.cpu_load += 0.05 * (load - self.cpu_load)
        self.blocks += 1

    def _process_block(self, inp: np.ndarray, out: np.ndarray) -> None:
        n = inp.shape[1]
        incoming = self._incoming
        if incoming is not None and self._fading_from is None:
            self._fading_from = self._chain
            self._nonfinite_base += self._chain.nonfinite_events
            self._chain, self._generation = incoming
            self._incoming = None
            # The new chain starts with empty delay lines: its output is real only after its
            # latency. With the old chain's latency equal, the two are time-aligned and crossfade
            # from then on; otherwise the old one fades out first and the new one fades in after,
            # since a crossfade of x(t - a) with x(t - b) combs (a low tone nearly cancels).
            l_old, l_new, fade = self._chain_latency, self._incoming_latency, self._fade_len
            self._chain_latency = l_new
            if l_old == l_new:
                self._fade_out_at = self._fade_in_at = l_new
            else:
                self._fade_out_at, self._fade_in_at = 0, max(l_new, fade)
            self._fade_end = self._fade_in_at + fade
            self._fade_pos = 0
            if self._timed_n:  # changes timed for the chain just replaced would only hold slots
                kept = timed_keep_from(self._timed, self._timed_n, self._generation)
                self._timed_n = kept
                self._timed_next = self._timed[0, 4] if kept else float("inf")
        out[...] = inp
        self._chain.process(out)
        old = self._fading_from
        if old is not None:
            buf = self._old[:, :n]
            buf[...] = inp
            old.process(buf)
            self._fade_pos = swap_fade_into(buf, out, self._fade_pos, self._fade_out_at, self._fade_in_at,
                                            self._fade_len)
            if self._fade_pos >= self._fade_end:
                self._retired.append(old)  # dropped by the control side, not here
                self._fading_from = None
        if sanitize(out):
            self._nonfinite_base += 1

    def _apply(self, generation: int, slot: int, param: int, value: float, stamp: float, order: float = 0.0) -> None:
        if stamp > self._block_time:  # a bundle time tag in the future: wait for its block
            n = self._timed_n
            if n < TIMED_CAPACITY:
                self._timed_n = timed_insert(self._timed, n, generation, slot, param, value, stamp)
                self._timed_next = self._timed[0, 4]
                return
            self.timed_overflows += 1
        if generation == self._generation:
            chain = self._chain
        else:
            incoming = self._incoming
            if incoming is None or incoming[1] != generation:
                return  # meant for a chain that is gone
            chain = incoming[0]
        if not 0 <= slot < len(chain):
            return
        orders = chain.change_order
        if param == BYPASS:
            if order < orders[slot, -1]:
                return  # a later change to it came another way and is in already
            orders[slot, -1] = order
            chain.set_bypass_index(slot, value >= 0.5)
        elif 0 <= param < len(chain[slot].params):
            if order < orders[slot, param]:
                return
            orders[slot, param] = order
            stride = chain.order_stride
            channels = chain.order_channels
            keep = self._keep
            for c in range(min(channels, len(keep))):
                # a channel's own value set after this change (it came another way) stays
                keep[c] = chain.channel_value_index(slot, c, param) \
                    if orders[slot, (c + 1) * stride + param] > order else np.nan
            chain[slot].set_index(param, value)
            for c in range(min(channels, len(keep))):
                if keep[c] == keep[c]:
                    chain.set_channel_index(slot, c, param, keep[c])
        elif param < BYPASS:  # one channel's own bypass: columns -2, -3... (the effect's is -1)
            c = BYPASS - param
            if c > chain.order_channels:
                return
            if order < orders[slot, -1 - c]:
                return
            orders[slot, -1 - c] = order
            chain.set_channel_bypass_index(slot, c - 1, value >= 0.5)
        elif param >= CHANNEL_STRIDE:
            c, index = divmod(param, CHANNEL_STRIDE)
            stride = chain.order_stride
            if not (0 <= index < len(chain[slot].params) and c <= chain.order_channels):
                return
            column = c * stride + index
            if order < orders[slot, column] or order < orders[slot, index]:
                return  # a later change to it, or to every channel, is in already
            orders[slot, column] = order
            chain.set_channel_index(slot, c - 1, index, value)
        probe = self.apply_probe
        if probe is not None and probe.n < len(probe.values):
            probe.slots[probe.n] = slot
            probe.values[probe.n] = value
            probe.times[probe.n] = time.perf_counter()  # when it took effect (after any GIL wait)
            probe.n += 1

    def _apply_due(self, now: float) -> None:
        """Apply the queued timed changes whose time has come (audio thread, block start)."""
        self._block_time = now
        q = self._timed
        k = timed_due(q, self._timed_n, now)
        # a timed change counts as made at its time tag (on the monotonic clock, as the control
        # side counts it in settle_timed): the latest change wins on both sides alike
        shift = time.monotonic() - now
        for i in range(k):
            self._apply(int(q[i, 0]), int(q[i, 1]), int(q[i, 2]), float(q[i, 3]), 0.0, float(q[i, 4]) + shift)
        self._timed_n = n = timed_drop(q, self._timed_n, k)
        self._timed_next = q[0, 4] if n else float("inf")

    def note_xrun(self) -> None:
        """Called by a backend when the driver reports an xrun."""
        self.xruns += 1
        self.last_xrun_time = time.time()

    # == control side ============================================================================
    def _rebuild_table(self, chain: Chain, generation: int) -> None:
        table: dict[str, ParamInfo] = {}
        shadow: dict[str, float] = {}
        by_channel: dict[str, tuple[str, ...]] = {}
        for slot, (eid, effect) in enumerate(chain.items()):
            for index, p in enumerate(effect.params):
                address = f"/hb/{eid}/{p.id}"
                table[address] = ParamInfo(address, eid, slot, index, p)
                shadow[address] = effect.get(p.id)
            joint = effect.channel_coupling == "joint"
            if (chain.per_channel and not joint) or effect.channel_params:
                # each channel's own settings: /hb/<id>@<n>/<param> (of an effect that works on all
                # channels together, those it keeps per channel, in any chain: automix weight_db)
                for index, p in enumerate(effect.params):
                    if p.id in effect.shared_params or (joint and p.id not in effect.channel_params):
                        continue  # the same on every channel (a look-ahead: the latency they share)
                    mine = []
                    for c in range(1, self.channels + 1):
                        address = f"/hb/{eid}@{c}/{p.id}"
                        table[address] = ParamInfo(address, eid, slot, index + c * CHANNEL_STRIDE, p, c)
                        own = chain.channel_value_index(slot, c - 1, index)
                        shadow[address] = own if own == own else shadow[f"/hb/{eid}/{p.id}"]
                        mine.append(address)
                    by_channel[f"/hb/{eid}/{p.id}"] = tuple(mine)
            if chain.per_channel and not joint:  # bypassed on one channel alone (independent of the effect's)
                for c in range(1, self.channels + 1):
                    address = f"/hb/{eid}@{c}/bypass"
                    table[address] = ParamInfo(address, eid, slot, BYPASS - c, BYPASS_PARAM, c)
                    shadow[address] = 1.0 if chain.is_channel_bypassed(slot, c) else 0.0
            address = f"/hb/{eid}/bypass"
            table[address] = ParamInfo(address, eid, slot, BYPASS, BYPASS_PARAM)
            shadow[address] = 1.0 if chain.is_bypassed(slot) else 0.0
        tracked, slots = [], []
        for slot, (eid, effect) in enumerate(chain.items()):
            for attr in ("gain_reduction_db", "activity"):
                if len(tracked) < MAX_TRACKED and _has_attr(effect, attr):
                    tracked.append((eid, attr, effect))
                    slots.append(slot)
        if self._effect_timing:
            chain.effect_seconds = np.zeros(len(chain), dtype=np.float64)
        # when the last change applied to each parameter was made (last column: bypass); the
        # audio thread skips an older one that arrives later by another way (see _apply)
        # columns: every parameter of the effect, then each channel's own values, then bypass
        stride = max((len(e.params) for e in chain), default=0)
        chain.order_stride = max(stride, 1)
        chain.order_channels = self.channels
        # ... then each channel's own bypass (from the end: -2 for channel 1) and the effect's (-1)
        width = chain.order_stride * (1 + self.channels) + self.channels + 1
        chain.change_order = np.full((len(chain), width), -np.inf)
        self._shadow_order = {}
        self._by_channel = by_channel
        self._table, self._shadow = table, shadow
        self._table_generation = generation
        self.tracked = (chain, tuple(tracked), generation, tuple(slots))

    def parameters(self) -> list[tuple[ParamInfo, float]]:
        """Every controllable parameter with its current value, in chain order."""
        table, shadow = self._table, self._shadow
        return [(info, shadow[a]) for a, info in table.items()]

    def info(self, address: str) -> ParamInfo:
        try:
            return self._table[address]
        except KeyError:
            raise ParamError(f"unknown address {address!r}{self.why_unknown(address)}") from None

    def why_unknown(self, address: str) -> str:
        """Why ``/hb/<id>@<n>/<param>`` is not an address here, where the effect exists (": ..."),
        else ""."""
        head, _, pid = address[len("/hb/"):].partition("/")
        eid, at, n = head.partition("@")
        if not at or f"/hb/{eid}/{pid.removesuffix('/norm')}" not in self._table:
            return ""
        effect = self.tracked[0][self._table[f"/hb/{eid}/{pid.removesuffix('/norm')}"].slot]
        if effect.channel_coupling == "joint" and pid.removesuffix("/norm") not in effect.channel_params:
            per = ", ".join(sorted(effect.channel_params))
            return f": {eid} works on all channels together; it has no settings per channel" + (f" but {per}" if per else "")
        if not self.per_channel and effect.channel_coupling != "joint":
            return ": settings per channel need an engine run per channel (run --per-channel)"
        if pid.removesuffix("/norm") in effect.shared_params:
            return f": {pid} is the same on every channel (it sets the latency they share); set /hb/{eid}/{pid}"
        return f": channels are 1 to {self.channels} here"

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

    def add_timed_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called after a future-stamped change is scheduled (so whoever calls
        :meth:`settle_timed` when it is due can wake up for it)."""
        self._timed_listeners.append(listener)

    def remove_timed_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._timed_listeners:
            self._timed_listeners.remove(listener)

    def add_chain_filter(self, fix: Callable[[Chain], None]) -> None:
        """``fix(chain)`` is called with every chain :meth:`load_chain` takes (a preset loaded
        live too), before it is prepared, while no other swap runs (the running chain is
        :attr:`chain`, its values :meth:`get`): it may add to it what the session keeps whatever
        the preset (``run --automix`` keeps its automixer)."""
        self._chain_filters.append(fix)

    def add_preset_listener(self, listener: Callable[[Any], None]) -> None:
        """``listener(preset)`` (a :class:`hushbridge.presets.Preset`) is called after
        :meth:`load_preset` swapped its chain in, e.g. so that MIDI takes the preset's ``[midi]`` maps."""
        self._preset_listeners.append(listener)

    def remove_preset_listener(self, listener: Callable[[Any], None]) -> None:
        """Stop calling ``listener``; nothing happens if it was not registered."""
        if listener in self._preset_listeners:
            self._preset_listeners.remove(listener)

    def set(self, address: str, value: float, *, clamp: bool = False, source: object = None, stamp: float = 0.0) -> float:
        """Set ``/hb/<id>/<param>`` (or ``/hb/<id>/bypass``). Returns the value applied.

        Raises ParamError for an unknown address or, unless ``clamp``, an out-of-range value.
        """
        info = self.info(address)
        p = info.param
        if isinstance(value, str) and p.choices:  # a switch or mode by name, e.g. "equal"
            value = p.check(value, f"{info.effect_id}")
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
        if info.index >= 0:  # in range, but can this prepared instance take it?
            self.tracked[0][info.slot].check_value(info.param_index, v)
        # the table may already describe a chain the audio thread has not swapped in yet
        change = ParamChange(self._table_generation, info.slot, info.index, v)
        if stamp > time.time():
            # get(), presets and feedback report what is audible: this value counts from its time on
            with self._timed_shadow_lock:
                if len(self._timed_shadow) >= TIMED_CAPACITY:
                    raise ParamError(f"{address}: {TIMED_CAPACITY} timed changes are already waiting; "
                                     "this one was not scheduled")
                # its order: when it becomes audible, on the monotonic clock (see _apply_due); a
                # bundle's messages share their time tag, and so one order: they count in the
                # order written, as the audio thread applies them
                order = self._timed_orders.setdefault(stamp, stamp - time.time() + time.monotonic())
                heapq.heappush(self._timed_shadow, (stamp, next(self._timed_seq), address, v, source,
                                                    self._table_generation, order))
            self.control.submit(change, stamp)
            for listener in list(self._timed_listeners):
                listener()
            return v
        order = self.control.submit(change, stamp)
        if order < self._shadow_order.get(address, -math.inf):
            return v  # a later change (from the OSC receive process) is reported already
        self._report(address, p, v, source, order)
        return v

    def _report(self, address: str, p: Param, value: float, source: object, order: float) -> None:
        """Count an accepted change for get(), presets and listeners (feedback); a change to an
        effect's parameter counts for each channel's address of it too (every channel takes it)."""
        # a button (momentary) does its thing once and reads as its default again
        shown = p.default if p.momentary else value
        for a in (address, *self._by_channel.get(address, ())):
            if order < self._shadow_order.get(a, -math.inf):
                if a is address:
                    return  # a later change to it is reported already
                continue  # that channel's own value came later
            self._shadow_order[a] = order
            self._shadow[a] = shown
            for listener in list(self._listeners):
                listener(a, value, source)

    def attach_ring(self, ring: ParamRing) -> None:
        """Drain ``ring`` at every callback too (after :attr:`ring`). Its one producer (another
        process, or the JACK callback itself) writes validated changes straight into it
        (generation, slot and index from :meth:`table_snapshot`) and reports them with
        :meth:`record_remote_set` so that :meth:`get`, presets and listeners follow."""
        if ring not in self._remote_rings:
            self._remote_rings = (*self._remote_rings, ring)  # one store: the audio thread sees old or new

    def detach_ring(self, ring: ParamRing) -> None:
        """Stop draining ``ring``. The audio thread may still be in the middle of one drain of it."""
        self._remote_rings = tuple(r for r in self._remote_rings if r is not ring)

    def record_remote_set(self, address: str, value: float, generation: int, order: float, *,
                          source: object = None) -> bool:
        """A change that went to the audio thread through an attached ring: count it for
        :meth:`get`, presets and listeners (feedback) as :meth:`set` does. ``order``: when it
        was accepted (``time.monotonic()``). False (and nothing happens) when it was made
        against a table that has been replaced since, or a later change to the parameter
        has been counted already (the audio thread skips it for the same reason)."""
        if generation != self._table_generation:
            return False
        info = self._table.get(address)
        if info is None or order < self._shadow_order.get(address, -math.inf):
            return False
        self._report(address, info.param, value, source, order)
        return True

    def table_snapshot(self) -> tuple[int, Chain, list[ParamInfo]]:
        """``(generation, chain, infos)`` of the parameter table, taken together (under the swap
        lock, so never the slots of one chain with the generation of another)."""
        with self._swap_lock:
            chain, _, generation, _ = self.tracked
            return generation, chain, list(self._table.values())

    @property
    def table_generation(self) -> int:
        """The generation of the parameter table (:meth:`parameters`): the chain set last,
        which the audio thread may not have swapped in yet."""
        return self._table_generation

    def settle_timed(self, now: float | None = None) -> int:
        """Let the future-stamped changes whose time has come count for :meth:`get`, presets and
        listeners (feedback); return how many. Called by :meth:`get` and by the OSC server's
        meter thread, so feedback follows within a few ms of the change becoming audible."""
        now = time.time() if now is None else now
        due = []
        with self._timed_shadow_lock:
            while self._timed_shadow and self._timed_shadow[0][0] <= now:
                due.append(heapq.heappop(self._timed_shadow))
            for stamp in [s for s in self._timed_orders if s <= now]:
                del self._timed_orders[stamp]
        for _, _, address, v, source, generation, order in due:
            if generation != self._table_generation:
                continue  # scheduled for a chain that has been replaced since
            self._report(address, self._table[address].param, v, source, order)
        return len(due)

    def next_timed(self) -> float:
        """When the next future-stamped change becomes audible (Unix s; inf when none waits)."""
        with self._timed_shadow_lock:
            return self._timed_shadow[0][0] if self._timed_shadow else float("inf")

    @property
    def timed_pending(self) -> int:
        """Future-stamped changes still waiting for their time."""
        return len(self._timed_shadow)

    def set_norm(self, address: str, norm: float, *, source: object = None, stamp: float = 0.0) -> float:
        """Set a parameter from a 0..1 fader position through its scale."""
        info = self.info(address)
        return self.set(address, info.param.from_norm(float(norm)), clamp=True, source=source, stamp=stamp)

    def set_bypass(self, effect_id: str, bypassed: bool, *, source: object = None) -> None:
        self.set(f"/hb/{effect_id}/bypass", 1.0 if bypassed else 0.0, source=source)

    def get(self, address: str) -> float:
        """Current value of a parameter address, or of ``/hb/engine/<stat>``."""
        if address.startswith("/hb/engine/"):
            stat = address[len("/hb/engine/"):]
            if stat not in ENGINE_STATS:
                raise ParamError(f"unknown engine stat {stat!r} (stats: {', '.join(ENGINE_STATS)})")
            if stat == "timed_pending":
                self.settle_timed()
            if stat in ("sample_rate", "block_size"):
                if self.spec is None:
                    return 0.0
                if stat == "sample_rate":
                    return float(self.spec.sample_rate)
                return float(self.period_frames or self.spec.max_block_size)
            return float(getattr(self, stat))
        published = self._published.get(address)
        if published is not None:
            return published
        self.info(address)
        if self._timed_shadow:
            self.settle_timed()
        return self._shadow[address]

    def display(self, address: str, value: float) -> str:
        if address.startswith("/hb/engine/"):
            stat = address[len("/hb/engine/"):]
            if stat == "cpu_load":
                return f"{value * 100:.1f} %"
            if stat == "sample_rate":
                return f"{value:.0f} Hz"
            if stat in ("latency_samples", "device_latency_samples"):
                ms = f" ({value / self.spec.sample_rate * 1000:.2f} ms)" if self.spec else ""
                return f"{value:.0f} samples{ms}"
            return f"{value:.0f}"
        if address in self._published:
            return f"{value:g}"
        return self.info(address).param.display(value)

    # == published read-only values (transport state, ...) ======================================
    def publish(self, address: str, value: float, *, source: object = None) -> None:
        """Publish a read-only value under ``address`` (e.g. ``/hb/transport/tempo_bpm`` from
        MIDI clock): ``get(address)`` returns it and, when it changed, every listener gets
        ``(address, value, source)`` (OSC feedback to registered clients; meter
        ``/hb/meter/transport`` pushes all ``/hb/transport/...`` values). Any thread; publish on
        change (e.g. tempo rounded to 0.1 BPM), not on every clock tick."""
        if not address.startswith("/hb/") or address in self._table or address.startswith("/hb/engine/"):
            raise ParamError(f"cannot publish {address!r}: not under /hb/, or a parameter or engine stat")
        v = float(value)
        old = self._published.get(address)
        self._published[address] = v
        if old != v:
            for listener in list(self._listeners):
                listener(address, v, source)

    def snapshot(self) -> "ChainSnapshot":
        """The chain as the control side has set it (values not yet applied by the audio thread
        included, future-stamped ones only once their time has come), in the shape
        :func:`hushbridge.presets.save_preset` reads."""
        self.settle_timed()
        chain, shadow = self._chain if self._incoming is None else self._incoming[0], self._shadow
        return ChainSnapshot(chain, shadow)

    def is_published(self, address: str) -> bool:
        return address in self._published

    @property
    def published(self) -> dict[str, float]:
        """Every published read-only value, by address."""
        return dict(self._published)

    # == metering support (control side) ========================================================
    @property
    def record_tap(self) -> tuple[np.ndarray, np.ndarray, int, int] | None:
        """The recorder's tap, if one is set (:meth:`set_record_tap`)."""
        return self._record_tap

    def set_record_tap(self, ring: np.ndarray | None, state: np.ndarray | None = None,
                       input_channels: int = 0, output_channels: int = 0) -> None:
        """Copy every callback's input (its first ``input_channels``, before the chain) and output
        (its first ``output_channels``) into ``ring`` as :mod:`hushbridge.dsp.kernels.record`
        says; ``None`` stops it. For :class:`hushbridge.record.Recorder`."""
        if ring is None:
            self._record_tap = None
            return
        if ring.dtype != np.float32 or ring.ndim != 2 or ring.shape[1] != input_channels + output_channels:
            raise ValueError("record ring: float32 (rows, input_channels + output_channels)")
        if not (0 <= input_channels <= self.channels and 0 <= output_channels <= self.channels):
            raise ValueError(f"record tap: at most {self.channels} channels each way")
        if state is None or state.dtype != np.int64:
            raise ValueError("record tap: an int64 state array")
        self._record_tap = (ring, state, int(input_channels), int(output_channels))

    def enable_effect_timing(self, on: bool = True) -> None:
        """Let the Chain accumulate per-effect CPU seconds in ``chain.effect_seconds`` (a
        perf_counter pair around each effect; off by default, and then free)."""
        self._effect_timing = bool(on)
        chains = [self._chain]
        incoming = self._incoming
        if incoming is not None:
            chains.append(incoming[0])
        for chain in chains:
            chain.effect_seconds = np.zeros(len(chain), dtype=np.float64) if on else None

    def _uses(self, chain: Chain) -> bool:
        incoming = self._incoming
        return chain is self._chain or chain is self._fading_from or (incoming is not None and incoming[0] is chain)

    def _claim(self, chain: Chain) -> None:
        """Refuse a chain that an engine runs (this one: it would be re-prepared under the audio
        thread and run twice per block in the crossfade; another: both would process it)."""
        ref = getattr(chain, "_engine_ref", None)
        owner = ref() if ref is not None else None
        if owner is not None and owner._uses(chain):
            where = "this engine" if owner is self else "another engine"
            raise ChainError(f"this Chain is running in {where}: load a new one (copy.deepcopy(chain) "
                             "copies it with its settings)")
        object.__setattr__(chain, "_engine_ref", weakref.ref(self))
        object.__setattr__(chain, "per_channel", self.per_channel)  # the input's, not the preset's

    def attach(self, running: bool) -> None:
        """Backends say whether they are calling :meth:`process` (start) or no longer (stop).
        Without callbacks, a load swaps at once instead of waiting for a block boundary that
        never comes; an engine driven by hand (neither said) keeps the block-boundary swap."""
        with self._swap_lock:
            self._attached = running
            if not running:
                self._finish_swap_now()

    def _finish_swap_now(self) -> None:
        """Complete a handed-over swap without the audio thread (it is not running)."""
        incoming = self._incoming
        if incoming is not None:
            self._retired.append(self._chain)
            self._chain, self._generation = incoming
            self._chain_latency = self._incoming_latency
            self._incoming = None
        if self._fading_from is not None:
            self._retired.append(self._fading_from)
            self._fading_from = None

    def load_chain(self, chain: Chain, *, source: object = None) -> None:
        """Swap in another chain live: prepared and warmed here (off the audio thread), then
        faded in at a block boundary (see :meth:`_process_block`). Returns once the swap is
        handed over. ``chain`` must be a new Chain, not one an engine is running."""
        if not isinstance(chain, Chain):
            raise ChainError(f"load_chain needs a Chain, got {chain!r}")
        with self._swap_lock:
            self._claim(chain)
            self.wait_for_swap()
            for fix in self._chain_filters:  # after the claim: never on a chain that is running
                fix(chain)
            if self.spec is not None:
                self._prepare_chain(chain, self.spec, live=self._attached is True)
            generation = self._generation + 1
            if self.spec is None or self._attached is False:  # no callbacks: swap directly
                if self.spec is not None:
                    self._retired.append(self._chain)
                self._chain, self._generation = chain, generation
                self._chain_latency = chain.latency_samples
            else:
                self._incoming_latency = chain.latency_samples  # read by the audio thread at the swap
                self._incoming = (chain, generation)
                self.control.waiting.set()  # the backend's housekeeping follows the swap closely
            self._rebuild_table(chain, generation)
            with self._timed_shadow_lock:  # what was timed for the old chain will never be heard
                self._timed_shadow = [t for t in self._timed_shadow if t[5] >= generation]
        self.housekeeping()
        for address, value in self._shadow.items():
            for listener in list(self._listeners):
                listener(address, value, source)

    @property
    def swapping(self) -> bool:
        """A loaded chain is waiting for the audio thread or still crossfading in."""
        return self._incoming is not None or self._fading_from is not None

    def wait_for_swap(self, timeout: float = 2.0) -> bool:
        """Wait until a handed-over chain has fully crossfaded in (control side only)."""
        deadline = time.monotonic() + timeout
        while self._incoming is not None or self._fading_from is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def load_preset(self, name: str, *, source: object = None) -> None:
        """Build the preset ``name`` off the audio thread and swap it in (see :meth:`load_chain`);
        then tell the preset listeners."""
        from hushbridge.presets import find_preset

        preset = find_preset(name)
        self.load_chain(preset.build(), source=source)
        for listener in list(self._preset_listeners):
            try:
                listener(preset)
            except Exception:  # noqa: BLE001 - the chain is in; a listener's failure is its own
                log.exception("preset listener failed")

    def _prepare_chain(self, chain: Chain, spec: ProcessSpec, live: bool = False) -> None:
        """Prepare and warm ``chain``. Compiling its fused runs (:mod:`hushbridge.effects.fused`)
        would hold the GIL for seconds, so only runs in the disk cache load here; the others
        compile in a background process, and :meth:`housekeeping` switches the chain to them
        when they are ready (until then it runs effect by effect, with the same output).
        ``live`` (a swap while a backend calls the engine): no fused runs at all, since even
        loading one from the disk cache holds the GIL for 50-100 ms, tens of periods; effect by
        effect costs about 15 us more per 128-frame block."""
        fuse = chain.fuse
        chain.compile_fused = False
        if live:
            object.__setattr__(chain, "fuse", False)
        try:
            chain.prepare(spec)
        finally:
            chain.compile_fused = True
            object.__setattr__(chain, "fuse", fuse)
        self._warm_up(chain, spec)
        if chain.uncompiled:
            self._compile_fused_in_background(chain)

    def _compile_fused_in_background(self, chain: Chain) -> None:
        from hushbridge.effects.fused import compile_in_background

        self._fuse_job = (compile_in_background(chain.uncompiled), chain)

    def housekeeping(self) -> None:
        """Non-RT upkeep: flush coalesced changes, free retired chains, announce latency, switch
        a live-swapped chain to its fused runs once their background compile is done.
        Backends call it from a control thread every few milliseconds."""
        job = self._fuse_job
        if job is not None and job[0].poll() is not None and self._swap_lock.acquire(blocking=False):
            try:  # under the swap lock: a re-prepare must not interleave with the re-plan
                self._fuse_job = None
                if job[0].returncode == 0 and job[1] in (self._chain, *(self._incoming or ())[:1]):
                    if job[1].fuse_from_cache():
                        log.info("fused runs compiled: the chain now runs as one call per block")
                elif job[0].returncode in _STOPPING_SIGNALS:  # the process group's Ctrl-C or SIGTERM
                    log.info("compiling fused runs was stopped (signal %d)", -job[0].returncode)
                elif job[0].returncode != 0:
                    log.warning("compiling fused runs failed (exit %s): the chain keeps running effect by "
                                "effect", job[0].returncode)
            finally:
                self._swap_lock.release()
        self.control.flush()
        while self._retired:
            self._retired.pop()
        lat = self._chain.latency_samples
        if lat != self._announced_latency and self._incoming is None:
            self._announced_latency = lat
            for listener in list(self._latency_listeners):
                listener(lat)

    def take_meter(self) -> dict[str, np.ndarray]:
        """Linear peak and RMS per channel since the last call (one reader of :attr:`meter`
        with its own cursor; other meter readers are not disturbed)."""
        self._take_cursor, rows = self.meter.read(getattr(self, "_take_cursor", 0))
        ch = self.channels
        level = rows["level"]
        n = max(int(rows["frames"].sum()), 1)
        if len(level) == 0:
            level = np.zeros((1, 4 * ch))
        return {
            "peak_in": level[:, :ch].max(axis=0),
            "peak_out": level[:, ch:2 * ch].max(axis=0),
            "rms_in": np.sqrt(level[:, 2 * ch:3 * ch].sum(axis=0) / n),
            "rms_out": np.sqrt(level[:, 3 * ch:].sum(axis=0) / n),
        }

    def _models(self) -> list:
        chain = self._chain
        return [e for k in range(len(chain)) for e in chain.instances(k) if hasattr(type(e), "overload_events")]

    @property
    def model_overloads(self) -> int:
        """Times a model effect of the running chain fell back to its dry path because inference
        missed its budget (``ModelEffect.overload_events``, summed)."""
        return sum(int(e.overload_events) for e in self._models())

    def model_states(self) -> list[tuple[str, bool, int]]:
        """``(id, on its dry path now, overload fallbacks so far)`` per model effect of the running
        chain (a per-channel one is dry when any channel's instance is)."""
        chain = self._chain
        out = []
        for k, eid in enumerate(chain.ids):
            models = [e for e in chain.instances(k) if hasattr(type(e), "overload_events")]
            if models:
                out.append((eid, any(e.overloaded for e in models), sum(int(e.overload_events) for e in models)))
        return out

    @property
    def model_dry(self) -> int:
        """Model effects of the running chain on their dry path now (overloaded)."""
        return sum(1 for e in self._models() if e.overloaded)

    def status_line(self) -> str:
        sr = self.spec.sample_rate if self.spec else 0
        lat = self.latency_samples
        ms = lat / sr * 1000 if sr else 0.0
        line = (
            f"xruns {self.xruns}  cpu {self.cpu_load * 100:5.1f}%  latency {lat} smp ({ms:.2f} ms)  "
            f"late {self.late_blocks}" + (f" (+{self.late_starts} started late)" if self.late_starts else "")
            + f"  rejected msgs {self.dropped_messages}"
        )
        models = self._models()
        if models:  # whether what is heard is the model's output or its dry fallback
            dry = sum(1 for e in models if e.overloaded)
            events = sum(int(e.overload_events) for e in models)
            line += f"  model {'DRY (overloaded)' if dry else 'on'}" + (f", {events} overloads" if events else "")
        return line


def _has_attr(obj: object, attr: str) -> bool:
    """Whether ``obj`` has ``attr``; a property that raises something else still counts."""
    try:
        getattr(obj, attr)
    except AttributeError:
        return False
    except Exception:  # noqa: BLE001 - it exists; reading it fails (reported where it is read)
        return True
    return True


class ChainSnapshot:
    """Read-only view of a chain with the engine's shadow values (see :meth:`Engine.snapshot`)."""

    def __init__(self, chain: Chain, shadow: dict[str, float]) -> None:
        self._items = []
        self._bypassed = []
        self._own: list[dict[int, dict[str, float]]] = []
        for k, (eid, effect) in enumerate(chain.items()):
            values = {p.id: float(shadow.get(f"/hb/{eid}/{p.id}", effect.get(p.id))) for p in effect.params}
            self._items.append((eid, _EffectValues(effect.name, values)))
            self._bypassed.append(shadow.get(f"/hb/{eid}/bypass", 0.0) >= 0.5)
            own: dict[int, dict[str, float]] = {}
            for c, row in chain.channel_values(k).items():  # in case the engine's table has none
                own.setdefault(c, {}).update(row)
            for address, value in shadow.items():  # what the control side set last
                head, _, pid = address[4:].rpartition("/")
                name, at, c = head.partition("@")
                if at and name == eid and pid == "bypass":  # bypassed on that channel alone
                    row = own.setdefault(int(c), {})
                    row.pop("bypass", None)
                    if value >= 0.5:
                        row["bypass"] = 1.0
                elif at and name == eid and pid in values:
                    row = own.setdefault(int(c), {})
                    row.pop(pid, None)
                    if value != values[pid]:
                        row[pid] = float(value)
            self._own.append({c: row for c, row in sorted(own.items()) if row})

    def items(self) -> list[tuple[str, "_EffectValues"]]:
        return list(self._items)

    def channel_values(self, index: int) -> dict[int, dict[str, float]]:
        """Effect ``index``'s channels' own values (see :meth:`Chain.channel_values`)."""
        return {c: dict(row) for c, row in self._own[index].items()}

    def is_bypassed(self, index: int) -> bool:
        return self._bypassed[index]


class _EffectValues:
    def __init__(self, name: str, values: dict[str, float]) -> None:
        self.name = name
        self._values = values

    def values(self) -> dict[str, float]:
        return dict(self._values)


def effect_of(engine: Engine, effect_id: str) -> Effect:
    """The effect instance ``effect_id`` of the engine's current chain (for tests and tools)."""
    return engine.chain[effect_id]
