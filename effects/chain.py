"""Chain: an Effect made of Effects, list-like, with instance ids and latency-preserving bypass.

>>> from hushbridge.effects import Chain, HighPass, Compressor
>>> chain = Chain([HighPass(cutoff_hz=80), Compressor(threshold_db=-20)])
>>> chain.ids
['highpass', 'compressor']
>>> chain["compressor"].ratio = 3.0

Instance ids are the effect name, ``name_2``, ``name_3``... for further instances, or an id
given explicitly (``Chain([...], ids=[...])`` or ``chain.append(effect, id="voice")``). They are
the ``<id>`` in OSC addresses ``/hb/<id>/<param>``.

Bypassing an effect crossfades (``bypass_ms``) to its input delayed by the effect's latency,
so toggling never shifts timing. The Chain's latency is the sum of its effects' latencies.
Non-finite samples entering the chain or produced by an effect are replaced by silence, the
offending effect is reset and :attr:`Chain.nonfinite_events` rises.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np

from numba import int64, typeof

from hushbridge.dsp.kernels.util import compiled, delay_through, is_block, ramp_mix, sanitize
from hushbridge.effects.base import Effect, ProcessSpec, ramp_step
from hushbridge.errors import ChainError

_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
BYPASS_MS = 20.0

_BLOCK_T = typeof(np.zeros((1, 1), dtype=np.float32))  # (channels, frames) float32, C-contiguous
_SANITIZE = compiled(sanitize, _BLOCK_T)
_DELAY_THROUGH = compiled(delay_through, _BLOCK_T, _BLOCK_T, int64, int64, _BLOCK_T)


@dataclass(eq=False)
class _Slot:
    effect: Effect
    id: str
    bypassed: bool = False
    # float64 [gain, target, step] for ramp_mix: 1 = effect fully in, 0 = dry (bypassed)
    mix: np.ndarray = field(default_factory=lambda: np.array([1.0, 1.0, 1.0], dtype=np.float64))
    line: np.ndarray | None = None
    line_pos: int = 0
    dry: np.ndarray | None = None
    # set by prepare: the latency the line was sized for, and a C-contiguous dry view per block size
    latency: int = 0
    dry_n: int = -1
    dry_view: np.ndarray | None = None


class Chain(Effect):
    """Effects in series. ``chain[i]`` or ``chain["id"]`` gives an effect; ``len``, iteration,
    ``append``, ``insert`` and ``del`` work as on a list (before ``prepare`` or between renders)."""

    name = "chain"
    #: per-effect CPU seconds, accumulated only while not None (the engine sets a float64 array
    #: of len(chain) while a /hb/meter/engine subscriber wants per-effect load)
    effect_seconds: np.ndarray | None = None

    def __init__(self, effects: Iterable[Effect] = (), ids: Iterable[str | None] | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_slots", [])
        object.__setattr__(self, "nonfinite_events", 0)
        effects = list(effects)
        id_list = list(ids) if ids is not None else [None] * len(effects)
        if len(id_list) != len(effects):
            raise ChainError(f"{len(effects)} effects but {len(id_list)} ids")
        for effect, eid in zip(effects, id_list):
            self.append(effect, id=eid)

    # -- list behaviour -----------------------------------------------------------------------
    def _new_id(self, effect: Effect, eid: str | None) -> str:
        taken = {s.id for s in self._slots}
        if eid is not None:
            if not _ID_RE.match(eid):
                raise ChainError(f"instance id {eid!r} must start with a letter and use only letters, digits, _ and -")
            if eid in taken or eid in ("get", "list", "engine", "preset", "register", "unregister",
                                       "subscribe", "unsubscribe", "learn", "meter", "error", "value"):
                raise ChainError(f"instance id {eid!r} is already used or reserved")
            return eid
        base, n = effect.name, 1
        eid = base
        while eid in taken:
            n += 1
            eid = f"{base}_{n}"
        return eid

    def append(self, effect: Effect, id: str | None = None) -> None:  # noqa: A002 - id is the domain word
        self.insert(len(self._slots), effect, id=id)

    def insert(self, index: int, effect: Effect, id: str | None = None) -> None:  # noqa: A002
        if not isinstance(effect, Effect):
            raise TypeError(f"Chain holds Effects, got {effect!r}")
        self._slots.insert(index, _Slot(effect, self._new_id(effect, id)))
        object.__setattr__(self, "_spec", None)

    def __delitem__(self, key: int | str) -> None:
        del self._slots[self.index_of(key)]
        object.__setattr__(self, "_spec", None)

    def __getitem__(self, key: int | str) -> Effect:
        return self._slots[self.index_of(key)].effect

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[Effect]:
        return (s.effect for s in self._slots)

    def index_of(self, key: int | str) -> int:
        if isinstance(key, str):
            for i, s in enumerate(self._slots):
                if s.id == key:
                    return i
            raise ChainError(f"no effect with id {key!r} in chain (ids: {', '.join(self.ids) or 'none'})")
        if not -len(self._slots) <= key < len(self._slots):
            raise IndexError(f"chain index {key} out of range for {len(self._slots)} effects")
        return key % len(self._slots)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self._slots]

    def items(self) -> list[tuple[str, Effect]]:
        return [(s.id, s.effect) for s in self._slots]

    def __repr__(self) -> str:
        inner = ", ".join(f"{s.id}={s.effect!r}" for s in self._slots)
        return f"<Chain [{inner}] latency={self.latency_samples}>"

    # -- bypass -----------------------------------------------------------------------------
    def is_bypassed(self, key: int | str) -> bool:
        return self._slots[self.index_of(key)].bypassed

    def set_bypass(self, key: int | str, bypassed: bool) -> None:
        """Bypass an effect (or bring it back) with a short crossfade."""
        self.set_bypass_index(self.index_of(key), bool(bypassed))

    def set_bypass_index(self, index: int, bypassed: bool) -> None:
        """Real-time safe: used by the engine at block start."""
        slot = self._slots[index]
        if slot.bypassed and not bypassed:
            # state went stale while bypassed; start from clean state as the fade brings it in
            slot.effect.reset()
        slot.bypassed = bypassed
        slot.mix[1] = 0.0 if bypassed else 1.0
        if self._spec is None:
            slot.mix[0] = slot.mix[1]

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def latency_samples(self) -> int:
        return sum(s.effect.latency_samples for s in self._slots)

    def _prepare(self, spec: ProcessSpec) -> None:
        for s in self._slots:
            s.effect.prepare(spec)
            lat = s.effect.latency_samples
            s.line = np.zeros((spec.channels, lat + spec.max_block_size + 1), dtype=np.float32)
            s.dry = np.zeros((spec.channels, spec.max_block_size), dtype=np.float32)
            s.latency = lat
            s.dry_n = -1
            s.mix[2] = ramp_step(spec, BYPASS_MS)

    def prepare(self, spec: ProcessSpec) -> None:
        # children may have changed since the last prepare even when the spec is equal
        object.__setattr__(self, "_spec", None)
        super().prepare(spec)

    def set_non_realtime(self, non_realtime: bool) -> None:
        super().set_non_realtime(non_realtime)
        for s in self._slots:
            s.effect.set_non_realtime(non_realtime)

    def reset(self) -> None:
        for s in self._slots:
            s.effect.reset()
            if s.line is not None:
                s.line.fill(0.0)
            s.line_pos = 0
            s.mix[0] = s.mix[1]

    def process(self, block: np.ndarray) -> None:
        """Run every effect in order on ``block`` (channels, frames) float32, in place.

        Hot path: a zero-latency effect that is fully in (not bypassed, not fading) needs no dry
        signal, so its delay line is skipped; the kernels are called through their compiled entry
        points when ``block`` is C-contiguous float32 (any other layout takes the dispatcher).
        """
        if self._spec is None:
            raise RuntimeError("chain: call prepare(spec) before process()")
        fast = is_block(block)
        check = _SANITIZE if fast else sanitize
        if check(block):
            self.nonfinite_events += 1
        n = block.shape[1]
        timing = self.effect_seconds
        for k, s in enumerate(self._slots):
            mix = s.mix
            m0 = mix[0]
            fading = m0 != mix[1]
            wet = m0 == 1.0 and not fading
            if not wet or s.latency:
                if s.dry_n != n:
                    s.dry_view = s.dry.reshape(-1)[: block.shape[0] * n].reshape(block.shape[0], n)
                    s.dry_n = n
                dry = s.dry_view
                if fast:
                    s.line_pos = _DELAY_THROUGH(block, s.line, s.line_pos, s.latency, dry)
                else:
                    s.line_pos = delay_through(block, s.line, s.line_pos, s.latency, dry)
                if m0 == 0.0 and not fading:
                    block[...] = dry
                    continue
            if timing is None:
                s.effect.process(block)
            else:
                t = perf_counter()
                s.effect.process(block)
                timing[k] += perf_counter() - t
            if check(block):
                self.nonfinite_events += 1
                block.fill(0.0)
                s.effect.reset()
            if not wet:
                ramp_mix(block, dry, mix)
