"""Chain: an Effect made of Effects, list-like, with instance ids and latency-preserving bypass.

>>> from hushbridge.effects import Chain, HighPass, Compressor
>>> chain = Chain([HighPass(cutoff_hz=80), Compressor(threshold_db=-20)])
>>> chain.ids
['highpass', 'compressor']
>>> chain["compressor"].ratio = 3.0

Instance ids are the effect name, ``name_2``, ``name_3``... for further instances, or an id
given explicitly (``Chain([...], ids=[...])`` or ``chain.append(effect, id="voice")``). They are
the ``<id>`` in OSC addresses ``/hb/<id>/<param>``.

``Chain(..., per_channel=True)`` runs each channel as if it were alone (separate microphones in
one stream: two podcast mics, a recorder's poly file): every effect gets an instance per
channel, made at ``prepare`` from the one in the chain, except those that work on the channels
together by nature (``channel_coupling = "joint"``: ``automix``, the ``loudness`` meter, a
plugin), which run on all channels as they are. The chain's effect holds the settings (the one
you set and the engine addresses); its instances follow every change to it, and meters read
the largest over them. A channel may have settings of its own
(``chain.set_channel("gate", 2, "threshold_db", -50.0)``, OSC ``/hb/gate@2/threshold_db``); a
change to the effect itself (``chain["gate"].threshold_db = -45.0``) sets every channel again.

Bypassing an effect crossfades (``bypass_ms``) to its input delayed by the effect's latency,
so toggling never shifts timing. The Chain's latency is the sum of its effects' latencies.
Non-finite samples entering the chain or produced by an effect are replaced by silence, the
offending effect is reset and :attr:`Chain.nonfinite_events` rises.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from time import perf_counter

import numpy as np

from numba import int64, typeof

from hushbridge.dsp.kernels.util import compiled, delay_through, is_block, ramp_mix, sanitize
from hushbridge.effects.base import Effect, ProcessSpec, check_block, ramp_step
from hushbridge.effects.fused import FusedRun, SlotState, plan
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
    pos: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # line write position
    dry: np.ndarray | None = None
    # set by prepare: the latency the line was sized for, and a C-contiguous dry view per block size
    latency: int = 0
    dry_n: int = -1
    dry_view: np.ndarray | None = None
    # per channel (set by prepare in a per-channel chain, for every effect but a joint one): one
    # copy of the effect per channel, which runs; None: the effect itself runs on the whole block
    copies: list[Effect] | None = None
    # (channels, params) float64: each channel's own values (NaN: it takes the effect's); the
    # same array as the effect's ``_own``, so a change to the effect itself clears the column
    own: np.ndarray | None = None
    # (channels,) bool: channels bypassed on their own (split effects only), kept across prepares;
    # cmix (channels, 3): each channel's [gain, target, step] crossfade, as ``mix`` (set by prepare)
    off: np.ndarray | None = None
    cmix: np.ndarray | None = None

    def instances(self) -> list[Effect] | tuple[Effect]:
        return self.copies or (self.effect,)


class Chain(Effect):
    """Effects in series. ``chain[i]`` or ``chain["id"]`` gives an effect; ``len``, iteration,
    ``append``, ``insert`` and ``del`` work as on a list (before ``prepare`` or between renders)."""

    name = "chain"
    #: per-effect CPU seconds, accumulated only while not None (the engine sets a float64 array
    #: of len(chain) while a /hb/meter/engine subscriber wants per-effect load)
    effect_seconds: np.ndarray | None = None
    #: whether ``prepare`` may compile fused runs. The engine clears it for live swaps (numba
    #: holds the GIL for seconds while compiling); runs not in the disk cache then stay slot by
    #: slot and their generated module files are listed in :attr:`uncompiled`.
    compile_fused: bool = True
    uncompiled: list[str] = []
    #: (len(chain), most params + 1) float64 set by the engine that runs the chain: when the last
    #: change applied to each parameter was made (last column: bypass); see ``Engine._apply``
    change_order: np.ndarray | None = None
    #: columns of :attr:`change_order` per block: the effect's parameters, then each channel's;
    #: and the channels it has blocks for (set by the engine with it)
    order_stride: int = 1
    order_channels: int = 0

    def __init__(self, effects: Iterable[Effect] = (), ids: Iterable[str | None] | None = None,
                 fuse: bool | None = None, per_channel: bool = False) -> None:
        """``fuse`` (default: on unless the environment sets ``HUSHBRIDGE_FUSE=0``) runs each run of
        kernel effects as one compiled call per block (:mod:`hushbridge.effects.fused`); off, every
        effect is called on its own. The output is the same either way. ``per_channel``: each
        channel as if it were alone (see the module docstring); takes effect at ``prepare``."""
        super().__init__()
        if fuse is None:
            fuse = os.environ.get("HUSHBRIDGE_FUSE", "1") != "0"
        if not isinstance(per_channel, (bool, np.bool_)):
            raise TypeError(f"per_channel must be True or False, not {per_channel!r}")
        object.__setattr__(self, "fuse", bool(fuse))
        object.__setattr__(self, "_per_channel", bool(per_channel))
        object.__setattr__(self, "_units", [])
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
        if any(s.effect is effect for s in self._slots):  # two slots would share one state
            raise ChainError(f"this {effect.name} is already in the chain; add another instance "
                             f"(e.g. {type(effect).__name__}(**effect.values()))")
        own = effect._own
        # an effect brings its channels' values (moved within a chain, or from another), as a copy
        self._slots.insert(index, _Slot(effect, self._new_id(effect, id), own=None if own is None else own.copy()))
        object.__setattr__(effect, "_own", self._slots[index].own)
        self._drop_split()

    def __delitem__(self, key: int | str) -> None:
        del self._slots[self.index_of(key)]
        self._drop_split()

    def __getitem__(self, key: int | str) -> Effect:
        return self._slots[self.index_of(key)].effect

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, item: object) -> bool:
        """``"compressor" in chain`` (an id) or ``effect in chain`` (that instance)."""
        if isinstance(item, str):
            return any(s.id == item for s in self._slots)
        return any(s.effect is item for s in self._slots)

    def __iter__(self) -> Iterator[Effect]:
        return (s.effect for s in self._slots)

    def index_of(self, key: int | str) -> int:
        if isinstance(key, slice):
            raise TypeError("a Chain is indexed by position or id, not sliced (list(chain)[a:b] gives the effects)")
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

    def wet(self, index: int) -> bool:
        """Whether effect ``index`` is running now (not bypassed, or still fading out); real-time safe."""
        return self._slots[index].mix[0] > 0.0

    def set_bypass(self, key: int | str, bypassed: bool) -> None:
        """Bypass an effect (or bring it back) with a short crossfade."""
        self.set_bypass_index(self.index_of(key), bool(bypassed))

    def set_bypass_index(self, index: int, bypassed: bool) -> None:
        """Real-time safe: used by the engine at block start."""
        slot = self._slots[index]
        if slot.bypassed and not bypassed and slot.effect.reset_on_enable:
            # state went stale while bypassed; start from clean state as the fade brings it in
            for effect in slot.instances():
                effect.reset()
        slot.bypassed = bypassed
        slot.mix[1] = 0.0 if bypassed else 1.0
        if self._spec is None:
            slot.mix[0] = slot.mix[1]

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def latency_samples(self) -> int:
        return sum(s.instances()[0].latency_samples for s in self._slots)

    # -- settings per channel -----------------------------------------------------------------
    def set_channel(self, key: int | str, channel: int, pid: str, value: float | str) -> None:
        """Give channel ``channel`` (1, 2, ...) of effect ``key`` a value of parameter ``pid``
        of its own, in a chain run per channel (the other channels keep the effect's). Setting
        the effect's parameter itself (``chain[key].<pid> = ...``) sets every channel again. An
        effect that works on all channels together (``automix``, ``loudness``, a plugin) has
        values per channel only for its ``channel_params`` (the automixer's ``weight_db``), in
        any chain.

        Raises ChainError for a parameter that cannot differ per channel, for a channel the
        prepared stream does not have and for a prepared chain that does not run per channel;
        ParamError for a value out of range."""
        index = self.index_of(key)
        s = self._slots[index]
        self._adopt(s)
        effect = s.effect
        p = effect.param(pid)
        c = self._channel_number(s, channel, pid)
        v = p.check(value, f"{s.id}@{c}")
        if pid in effect.shared_params:
            raise ChainError(f"{s.id}: {pid} is the same on every channel (it sets the latency they share); "
                             f"set it for all: chain[{s.id!r}].{pid} = ...")
        if s.own is None or s.own.shape[0] < c:  # off the audio thread only: prepare sizes it
            self._grow_own(s, c)
        s.own[c - 1, effect._index[pid]] = v
        if s.copies is not None and self._spec is not None and c <= len(s.copies):
            s.copies[c - 1].set_index(effect._index[pid], v)
        elif s.copies is None and pid in effect.channel_params:
            effect._channel_changed(c - 1, effect._index[pid])  # a joint effect reads it (channel_value)

    def set_channel_index(self, index: int, channel: int, param: int, value: float) -> None:
        """Set ``channel``'s (0-based) own value of parameter ``param`` (index) of effect
        ``index``, clamped. Real-time safe: used by the engine at block start, for a channel
        the prepared chain has."""
        s = self._slots[index]
        copies = s.copies
        if copies is None:  # a joint effect's value per channel, which it reads itself
            own = s.own
            if own is not None and 0 <= channel < own.shape[0] and self._spec is not None \
                    and channel < self._spec.channels:
                own[channel, param] = s.effect.params[param].clamp(value)
                s.effect._channel_changed(channel, param)
            return
        if not 0 <= channel < len(copies):
            return
        v = s.effect.params[param].clamp(value)
        s.own[channel, param] = v
        copies[channel].set_index(param, v)

    def set_channel_bypass(self, key: int | str, channel: int, bypassed: bool) -> None:
        """Bypass effect ``key`` on channel ``channel`` (1, 2, ...) alone, with a short crossfade,
        in a chain run per channel (a gate off on one mic). Independent of the effect's own
        bypass (:meth:`set_bypass`), which bypasses it on every channel."""
        index = self.index_of(key)
        s = self._slots[index]
        c = self._channel_number(s, channel, "bypass")
        self._grow_off(s, max(c, self._spec.channels if self._spec else 0))
        s.off[c - 1] = bool(bypassed)
        self.set_channel_bypass_index(index, c - 1, bool(bypassed))

    def set_channel_bypass_index(self, index: int, channel: int, bypassed: bool) -> None:
        """Real-time safe: used by the engine at block start, for a channel the chain has."""
        s = self._slots[index]
        off, cm = s.off, s.cmix
        if off is None or not 0 <= channel < len(off):
            return
        off[channel] = bypassed
        if cm is None or channel >= cm.shape[0]:
            return
        if cm[channel, 1] == 0.0 and not bypassed and s.effect.reset_on_enable and s.copies is not None:
            s.copies[channel].reset()  # its state went stale while it did not run
        cm[channel, 1] = 0.0 if bypassed else 1.0
        if self._spec is None:
            cm[channel, 0] = cm[channel, 1]

    def is_channel_bypassed(self, key: int | str, channel: int) -> bool:
        s = self._slots[self.index_of(key)]
        return bool(s.off is not None and 1 <= channel <= len(s.off) and s.off[channel - 1])

    def channel_value_index(self, index: int, channel: int, param: int) -> float:
        """``channel``'s (0-based) own value of parameter ``param`` of effect ``index``, NaN
        when it has none. Real-time safe."""
        own = self._slots[index].own
        if own is None or not 0 <= channel < own.shape[0]:
            return np.nan
        return float(own[channel, param])

    def get_channel(self, key: int | str, channel: int, pid: str) -> float:
        """Channel ``channel``'s value of ``pid`` for effect ``key``: its own, else the effect's."""
        s = self._slots[self.index_of(key)]
        self._adopt(s)
        v = s.effect.get(pid)  # ParamError for an unknown one
        c = self._channel_number(s, channel, pid)
        i = s.effect._index.get(pid)
        if s.own is not None and c <= s.own.shape[0] and s.own[c - 1, i] == s.own[c - 1, i]:
            return float(s.own[c - 1, i])
        return v

    def channel_values(self, key: int | str) -> dict[int, dict[str, float]]:
        """The values channels of effect ``key`` have of their own: ``{channel: {param: value}}``
        (channels from 1), only those that differ from the effect's."""
        s = self._slots[self.index_of(key)]
        self._adopt(s)
        out: dict[int, dict[str, float]] = {}
        if s.own is None:
            if s.off is not None:
                return {c + 1: {"bypass": 1.0} for c in range(len(s.off)) if s.off[c]}
            return out
        base = s.effect._values
        for c in range(s.own.shape[0]):
            row = {p.id: float(s.own[c, i]) for i, p in enumerate(s.effect.params)
                   if s.own[c, i] == s.own[c, i] and s.own[c, i] != base[i]}
            if s.off is not None and c < len(s.off) and s.off[c]:
                row["bypass"] = 1.0
            if row:
                out[c + 1] = row
        return out

    def channels_beyond(self, channels: int, split: bool = True) -> list[str]:
        """``id@n`` of every effect with values of its own for a channel ``n`` beyond ``channels``
        (a preset for four mics on a stereo stream): values that go unused there. ``split``:
        whether the chain runs per channel (else only a joint effect's, such as the
        automixer's weights, count: the others go unused anyway)."""
        return [f"{eid}@{c}" for k, (eid, effect) in enumerate(self.items()) for c in self.channel_values(k)
                if c > channels and (split or effect.channel_coupling == "joint")]

    def _channel_number(self, s: _Slot, channel: int, pid: str) -> int:
        if isinstance(channel, (bool, np.bool_)) or not isinstance(channel, (int, np.integer)) or channel < 1:
            raise ChainError(f"{s.id}: channels are whole numbers from 1, got {channel!r}")
        joint = s.effect.channel_coupling == "joint"
        if joint and pid not in s.effect.channel_params:
            kind = f" ({s.effect.name})" if s.effect.name != s.id else ""
            per = ", ".join(sorted(s.effect.channel_params))
            raise ChainError(f"{s.id}{kind} works on all channels together; it has no settings per channel"
                             + (f" but {per}" if per else ""))
        spec = self._spec
        if spec is not None:
            if not self._per_channel and not joint:
                raise ChainError(f"{s.id}: settings per channel need a chain run per channel (per_channel=True)")
            if channel > spec.channels:
                raise ChainError(f"{s.id}: channel {channel} is not in the stream ({spec.channels} "
                                 f"channel{'s' if spec.channels != 1 else ''})")
        return int(channel)

    @staticmethod
    def _adopt(s: _Slot) -> None:
        """Link the effect's channel values to its slot's again: a copy made by the effect's own
        reduce (a model effect) lost the link, and ``effect.set_channel`` on an effect in a
        chain may have grown an array of its own (its values join the slot's). Off the audio
        thread."""
        own = s.effect._own
        if own is not None and own is not s.own:
            rows = max(own.shape[0], 0 if s.own is None else s.own.shape[0])
            merged = np.full((rows, len(s.effect.params)), np.nan)
            if s.own is not None:
                merged[: s.own.shape[0]] = s.own
            mine = own == own
            merged[: own.shape[0]][mine] = own[mine]
            s.own = merged
        object.__setattr__(s.effect, "_own", s.own)

    @staticmethod
    def _grow_off(s: _Slot, rows: int) -> None:
        """At least ``rows`` per-channel bypass flags, those set kept. Off the audio thread."""
        if s.off is None or len(s.off) < rows:
            off = np.zeros(rows, dtype=bool)
            if s.off is not None:
                off[: len(s.off)] = s.off
            s.off = off

    @staticmethod
    def _grow_own(s: _Slot, rows: int) -> None:
        own = np.full((rows, len(s.effect.params)), np.nan)
        if s.own is not None:
            own[: s.own.shape[0]] = s.own
        s.own = own
        object.__setattr__(s.effect, "_own", own)

    def reading(self, index: int, attr: str) -> float:
        """Effect ``index``'s meter ``attr`` (``gain_reduction_db``, ``activity``): in a
        per-channel chain the largest over its channels' instances."""
        out = np.full(1 + len(self._slots[index].instances()), np.nan)
        self.reading_into(index, attr, out)
        return float(out[0])

    def reading_into(self, index: int, attr: str, out: np.ndarray) -> None:
        """Write :meth:`reading` into ``out[0]`` and, where the effect runs per channel, each
        channel's into ``out[1 + c]`` (the rest NaN); 0 while the effect is bypassed (what it
        last measured is not happening). Real-time safe (the audio thread's meters)."""
        s = self._slots[index]
        copies = s.copies
        wet = s.mix[0] > 0.0
        out.fill(np.nan)  # a method, not a slice: no view made per block
        if copies is None:
            out[0] = getattr(s.effect, attr) if wet else 0.0
            if wet:
                s.effect.channel_readings(attr, out)
            return
        value = -np.inf
        cmix = s.cmix
        for c in range(len(copies)):
            # 0 on a channel bypassed alone too (its instance does not run)
            v = getattr(copies[c], attr) if wet and (cmix is None or cmix[c, 0] > 0.0) else 0.0
            out[1 + c] = v
            if v > value:  # NaN (a model with no reading yet) never wins
                value = v
        out[0] = value if value > -np.inf else np.nan

    @property
    def per_channel(self) -> bool:
        """Each channel as if it were alone (see the module docstring). Changing it unprepares
        the chain (its instances per channel are made or dropped at the next ``prepare``)."""
        return self._per_channel

    @per_channel.setter
    def per_channel(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"per_channel must be True or False, not {value!r}")
        if bool(value) != self._per_channel:
            object.__setattr__(self, "_per_channel", bool(value))
            self._drop_split()

    def _drop_split(self) -> None:
        for s in self._slots:
            s.copies = None
            s.cmix = None
            object.__setattr__(s.effect, "_followers", ())
        object.__setattr__(self, "_spec", None)
        object.__setattr__(self, "_units", [])

    def instances(self, key: int | str) -> list[Effect]:
        """The effect at ``key`` and, in a prepared per-channel chain, its other channels'
        instances (channel order)."""
        return list(self._slots[self.index_of(key)].instances())

    def _prepare(self, spec: ProcessSpec) -> None:
        split = self.per_channel
        for s in self._slots:
            self._adopt(s)
        # a channel alone names no speaker: a microphone is heard whatever the stream's layout
        mono = replace(spec, channels=1, channel_mask=0)
        for s in self._slots:
            object.__setattr__(s.effect, "_followers", ())
            previous, s.copies = s.copies or [], None
            apart = split and s.effect.channel_coupling != "joint"
            share = 1.0 / spec.channels if apart else 1.0
            if s.effect._channel_share != share:
                object.__setattr__(s.effect, "_channel_share", share)
                object.__setattr__(s.effect, "_spec", None)  # budgets are set in _prepare
            if apart:
                if s.own is None or s.own.shape[0] < spec.channels:
                    self._grow_own(s, spec.channels)
                # every channel runs a copy; the effect itself keeps the settings every channel
                # takes (prepared too, so that what it reports holds: latency, ranges)
                s.copies = [copy.deepcopy(s.effect) for _ in range(spec.channels)]
                for c, effect in enumerate(s.copies):
                    object.__setattr__(effect, "_channel_instance", c)
                    object.__setattr__(effect, "_own", None)
                    # what a copy does not carry (a model effect is rebuilt from its file)
                    object.__setattr__(effect, "_channel_share", share)
                    effect.set_non_realtime(s.effect.non_realtime)
                    effect.prepare(mono)
                    for i in range(len(effect.params)):
                        if s.own[c, i] == s.own[c, i] and effect.params[i].id not in effect.shared_params:
                            effect.set_index(i, float(s.own[c, i]))
                    if c < len(previous):
                        effect._carry_counters(previous[c])
                s.effect.prepare(mono)
                object.__setattr__(s.effect, "_followers", tuple(s.copies))
                self._grow_off(s, spec.channels)
                s.cmix = np.zeros((spec.channels, 3), dtype=np.float64)
                s.cmix[:, 1] = np.where(s.off[: spec.channels], 0.0, 1.0)
                s.cmix[:, 0] = s.cmix[:, 1]
                s.cmix[:, 2] = ramp_step(spec, BYPASS_MS)
            else:
                s.cmix = None
                if s.effect.channel_params and (s.own is None or s.own.shape[0] < spec.channels):
                    self._grow_own(s, spec.channels)  # so that a live change never allocates
                s.effect.prepare(spec)
                for pid in s.effect.channel_params:  # a prepare with an equal spec changed nothing
                    s.effect._param_changed(s.effect._index[pid])
            lat = s.instances()[0].latency_samples
            s.line = np.zeros((spec.channels, lat + spec.max_block_size + 1), dtype=np.float32)
            s.dry = np.zeros((spec.channels, spec.max_block_size), dtype=np.float32)
            s.latency = lat
            s.dry_n = -1
            s.mix[2] = ramp_step(spec, BYPASS_MS)
        self._plan_units(compile=self.compile_fused)

    def _plan_units(self, compile: bool) -> None:  # noqa: A002
        states = [SlotState(s.effect, s.mix, s.line, s.pos, s.dry.reshape(-1), s.latency) for s in self._slots]
        missing: list[str] = []
        split = frozenset(k for k, s in enumerate(self._slots) if s.copies)  # run channel by channel
        units = plan(states, enabled=self.fuse, compile=compile, missing=missing, alone=split)
        object.__setattr__(self, "uncompiled", missing)
        object.__setattr__(self, "_units", units)  # one attribute store: the audio thread sees old or new

    def fuse_from_cache(self) -> bool:
        """After the runs listed in :attr:`uncompiled` were compiled elsewhere (a background
        process), load them and switch to the fused path. Safe while the audio thread runs this
        chain: both paths share all state and the switch is one attribute store. Returns
        whether every run is fused now."""
        if self._spec is not None and self.uncompiled:
            self._plan_units(compile=False)
        return not self.uncompiled

    def prepare(self, spec: ProcessSpec) -> None:
        # children may have changed since the last prepare even when the spec is equal
        object.__setattr__(self, "_spec", None)
        super().prepare(spec)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for s in self._slots:  # an effect copied by its own reduce (a model effect) lost the link
            self._adopt(s)

    def __getstate__(self) -> dict:
        # fused runs are compiled closures: a pickled chain comes back unprepared (its effects
        # keep their settings); the renderer, the engine or prepare() builds the runs again
        state = super().__getstate__()
        state["_spec"] = None
        state["_units"] = []
        state["_slots"] = [replace(s, copies=None) for s in self._slots]  # made again at prepare
        state.pop("_engine_ref", None)  # a copy belongs to no engine
        return state

    def set_non_realtime(self, non_realtime: bool) -> None:
        super().set_non_realtime(non_realtime)
        for s in self._slots:
            s.effect.set_non_realtime(non_realtime)  # the copies made at the next prepare take it
            for effect in s.copies or ():
                effect.set_non_realtime(non_realtime)

    def reset(self) -> None:
        for s in self._slots:
            for effect in s.instances():
                effect.reset()
            if s.line is not None:
                s.line.fill(0.0)
            s.pos[0] = 0
            s.mix[0] = s.mix[1]
            if s.cmix is not None:
                s.cmix[:, 0] = s.cmix[:, 1]

    def process(self, block: np.ndarray) -> None:
        """Run every effect in order on ``block`` (channels, frames) float32, in place.

        Hot path: runs of kernel effects go through one fused compiled call each
        (:mod:`hushbridge.effects.fused`) when ``block`` is C-contiguous float32 and per-effect
        timing is off; otherwise each effect is called on its own (:meth:`_run_slot`), which
        gives the same output.
        """
        spec = self._spec
        if spec is None:
            raise RuntimeError("chain: call prepare(spec) before process()")
        if block.ndim != 2 or block.shape[0] != spec.channels:
            check_block(block, spec, "chain")
        if block.shape[1] > spec.max_block_size:  # the kernels' buffers hold max_block_size frames
            m = spec.max_block_size
            for i in range(0, block.shape[1], m):
                self.process(block[:, i: i + m])
            return
        fast = is_block(block)
        if fast and self.effect_seconds is None:
            checked = False
            for unit in self._units:
                if type(unit) is int:
                    if not checked and _SANITIZE(block):
                        self.nonfinite_events += 1
                    self._run_slot(unit, block, True)
                elif unit.watch and any(e.python_needed for e in unit.watch):
                    if not checked and _SANITIZE(block):
                        self.nonfinite_events += 1
                    for k in range(unit.start, unit.start + len(unit.effects)):
                        self._run_slot(k, block, True)
                else:
                    a = unit.args
                    bad = unit.entry(block, not checked, a[0], a[1], a[2])
                    if bad:
                        self._fused_nonfinite(unit, bad)
                checked = True
            if not checked and _SANITIZE(block):  # an empty chain still sanitises
                self.nonfinite_events += 1
            return
        if (_SANITIZE if fast else sanitize)(block):
            self.nonfinite_events += 1
        for k in range(len(self._slots)):
            self._run_slot(k, block, fast)

    def _fused_nonfinite(self, unit: FusedRun, bad: int) -> None:
        if bad & 1:
            self.nonfinite_events += 1
        for k, effect in enumerate(unit.effects):
            if bad & (2 << k):
                self.nonfinite_events += 1
                effect.reset()  # a fused effect is never split: it has no other instances

    def _run_slot(self, k: int, block: np.ndarray, fast: bool) -> None:
        """Slot ``k`` alone: dry delay line and bypass crossfade around the effect, then the
        non-finite check (the fused path does the same in compiled code)."""
        s = self._slots[k]
        n = block.shape[1]
        timing = self.effect_seconds
        mix = s.mix
        m0 = mix[0]
        fading = m0 != mix[1]
        wet = m0 == 1.0 and not fading
        cmix = s.cmix
        partial = False  # a channel bypassed on its own, or fading
        if cmix is not None:
            for c in range(cmix.shape[0]):
                if cmix[c, 0] != 1.0 or cmix[c, 1] != 1.0:
                    partial = True
                    break
        if not wet or s.latency or partial:
            if s.dry_n != n:
                s.dry_view = s.dry.reshape(-1)[: block.shape[0] * n].reshape(block.shape[0], n)
                s.dry_n = n
            dry = s.dry_view
            if fast:
                s.pos[0] = _DELAY_THROUGH(block, s.line, int(s.pos[0]), s.latency, dry)
            else:
                s.pos[0] = delay_through(block, s.line, int(s.pos[0]), s.latency, dry)
            if m0 == 0.0 and not fading:
                block[...] = dry
                return
        t = 0.0 if timing is None else perf_counter()
        copies = s.copies
        check = _SANITIZE if fast else sanitize
        if copies is None:
            s.effect.process(block)
            if timing is not None:
                timing[k] += perf_counter() - t
            if check(block):
                self.nonfinite_events += 1
                block.fill(0.0)
                s.effect.reset()
        else:
            for c in range(len(copies)):
                row = block[c:c + 1]  # a row of a C-contiguous block is one too
                if partial and cmix[c, 0] == 0.0 and cmix[c, 1] == 0.0:
                    row[...] = dry[c:c + 1]  # bypassed on this channel alone
                    continue
                copies[c].process(row)
                if check(row):  # that channel alone: the others run on as if it were not there
                    self.nonfinite_events += 1
                    row.fill(0.0)
                    copies[c].reset()
                if partial and (cmix[c, 0] != 1.0 or cmix[c, 1] != 1.0):
                    ramp_mix(row, dry[c:c + 1], cmix[c])
            if timing is not None:
                timing[k] += perf_counter() - t
        if not wet:
            ramp_mix(block, dry, mix)
