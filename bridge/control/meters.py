"""Meter subscriptions: what ``/hb/subscribe <address> <rate_hz>`` pushes, computed off the audio thread.

Socket-free (STYLE rule 7): :class:`MeterHub` keeps the subscriptions and, when polled, turns the
values the audio thread published (:class:`~hushbridge.engine.MeterTap`, lock-free) into OSC
messages ``(address, args, dest)``. :class:`~hushbridge.control.osc.OscServer` polls it from its
own meter thread and sends them.

Meters (``<address>`` of ``/hb/subscribe`` is ``/hb/meter/<name>`` or just ``<name>``):

=================================  =============================================================
``/hb/meter/peak``                 ``in_1..in_N out_1..out_N`` (f, dBFS): largest sample since the
                                   subscriber's previous message
``/hb/meter/rms``                  ``in_1..in_N out_1..out_N`` (f, dBFS) over the same interval
``/hb/meter/lufs``                 ``momentary short_term integrated`` (f, LUFS) of the chain's
                                   ``loudness`` effect (subscribe fails without one)
``/hb/meter/true_peak``            ``dbtp`` (f) of the chain's ``loudness`` effect
``/hb/meter/gain_reduction/<id>``  ``db`` (f, >= 0): largest gain reduction of effect ``<id>``
                                   (any effect with ``gain_reduction_db``) over the interval;
                                   where a per-channel engine runs it per channel, then
                                   ``ch_1..ch_N``: each channel's largest
``/hb/meter/activity/<id>``        ``value`` (f, 0..1 e.g. speech probability): mean over the
                                   interval of effect ``<id>``'s ``activity`` attribute (per
                                   channel: its largest over the channels, then each channel's)
``/hb/meter/engine``               ``xruns (i) last_xrun_time (d, Unix s, 0 = none) cpu_load
                                   (f, 0..1) late_blocks (i) dropped_messages (i)`` then
                                   ``<id> (s) <load> (f)`` per effect (share of real time)
``/hb/meter/model``                ``dry (i) overloads (i)`` then ``<id> (s) <dry> (i)`` per model
                                   effect (``denoise``, ``dereverb``, ``isolate``): 1 while it plays
                                   its latency-matched dry path because inference missed its
                                   budget (CPU overload), else 0; ``dry`` counts those effects,
                                   ``overloads`` the fallbacks since the chain started (subscribe
                                   fails without a model effect)
``/hb/meter/transport``            ``<name> (s) <value> (f)`` per published ``/hb/transport/...``
                                   value (MIDI clock tempo, playing...)
=================================  =============================================================

dB values are floored at -120. Peak, RMS, gain reduction and activity come from the meter ring
and are sent only while audio runs (no new blocks, no message). A subscription whose effect a
preset load took away gets one ``/hb/error`` saying so, then waits and resumes when a chain with
that effect comes back; a bypassed ``loudness`` gets one too, and no readings (its last ones
would look live) until it is on again. The ring holds a few seconds of
blocks (:data:`~hushbridge.engine.METER_SLOTS`), less than the interval of a slow subscription
(down to 10 s), so the hub folds what the ring holds into each such subscription every
:data:`FOLD_S` and sends the whole interval: a 50 ms over in a 0.1 Hz peak meter is in its next
message. Rates are capped at
:data:`MAX_RATE_HZ`; a client holds at most :data:`MAX_PER_CLIENT` subscriptions, and all clients
together :data:`MAX_SUBSCRIPTIONS`. UDP never says that a client has gone (an app restarted on a
new port, a tablet that left), so when they are all taken, a new subscription makes room by
dropping those of the client heard from least recently, if it has sent nothing for
:data:`IDLE_EVICT_S` (a client that only listens renews its subscriptions by sending
``/hb/subscribe`` again now and then).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hushbridge.errors import HushbridgeError

ClientAddress = tuple[str, int]

MAX_RATE_HZ = 60.0
MIN_RATE_HZ = 0.1
MAX_PER_CLIENT = 16
MAX_SUBSCRIPTIONS = 256
FLOOR_DB = -120.0
PREFIX = "/hb/meter/"
SIMPLE = ("peak", "rms", "lufs", "true_peak", "engine", "model", "transport")
PER_EFFECT = {"gain_reduction": "gain_reduction_db", "activity": "activity"}
LOUDNESS_ATTRS = ("momentary_lufs", "short_term_lufs", "integrated_lufs")
FOLD_S = 0.2  # ring meters are read at least this often (the ring: 0.68 s of 32-frame blocks at 48 kHz)
IDLE_EVICT_S = 60.0  # when all subscriptions are taken, those of a client silent this long make room


class MeterError(HushbridgeError, ValueError):
    """A subscription the hub refuses (unknown meter, nothing to measure, too many)."""


class Double(float):
    """A float sent as OSC ``d`` (64-bit), e.g. a Unix time that float32 would round to minutes."""


class Notice(str):
    """What a subscription sends once, as ``/hb/error`` to its owner, instead of values (its
    effect is gone or bypassed)."""


def db(x: Any) -> Any:
    """Linear amplitude to dB, floored at :data:`FLOOR_DB` (scalars or arrays)."""
    return np.maximum(20.0 * np.log10(np.maximum(x, 1e-6)), FLOOR_DB)


def _finite_db(v: float) -> float:
    v = float(v)
    return v if math.isfinite(v) and v > FLOOR_DB else FLOOR_DB


@dataclass(eq=False)
class Subscription:
    dest: ClientAddress
    name: str  # "peak", "gain_reduction/compressor", ...
    period: float
    next_due: float
    cursor: int
    state: dict[str, Any] = field(default_factory=dict)
    owner: ClientAddress | None = None  # who asked (meters may go to another port of its host)

    @property
    def address(self) -> str:
        return PREFIX + self.name

    @property
    def from_ring(self) -> bool:
        """Whether the values come from the meter ring (and must be folded in between messages)."""
        return self.name in ("peak", "rms") or self.name.partition("/")[0] in PER_EFFECT


def find_attr(chain: Any, attr: str) -> tuple[str, Any] | None:
    """The first ``(id, effect)`` of ``chain`` that has attribute ``attr``."""
    for eid, effect in chain.items():
        if attr in dir(type(effect)) or attr in getattr(effect, "__dict__", {}):
            return eid, effect
    return None


class MeterHub:
    """Subscriptions of OSC clients to meters, and the values to push (see the module docstring).

    ``subscribe``/``unsubscribe`` run on the OSC server thread, ``poll`` on the meter thread;
    a lock (never taken by the audio thread) keeps them apart.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._subs: dict[tuple[ClientAddress, str], Subscription] = {}
        self._lock = threading.Lock()
        self._next_fold = math.inf
        self._heard: dict[ClientAddress, float] = {}  # client -> time.monotonic() of its last datagram
        #: called after a subscription is added or removed (wakes the thread that polls, which
        #: otherwise sleeps until the next one is due)
        self.on_change: Any = None

    # == subscriptions ===========================================================================
    def normalize(self, address: str) -> str:
        """``/hb/meter/peak`` or ``peak`` -> ``peak``; MeterError for an unknown meter."""
        name = address[len(PREFIX):] if address.startswith(PREFIX) else address.lstrip("/")
        if name in SIMPLE:
            return name
        kind, _, eid = name.partition("/")
        if kind in PER_EFFECT and eid:
            return name
        raise MeterError(f"unknown meter {address!r} (meters: {', '.join(SIMPLE)}, "
                         "gain_reduction/<id>, activity/<id>)")

    def check_available(self, name: str) -> None:
        """MeterError when the running chain has nothing to measure for ``name``."""
        chain = self.engine.chain
        if name in ("lufs", "true_peak"):
            attr = "true_peak_dbtp" if name == "true_peak" else "momentary_lufs"
            if find_attr(chain, attr) is None:
                raise MeterError(f"/hb/meter/{name} needs a `loudness` effect in the chain "
                                 f"(add one, e.g. --chain ...,loudness or a preset entry effect = \"loudness\")")
        if name == "model" and not self.engine.model_states():
            raise MeterError("/hb/meter/model needs a model effect in the chain (denoise, dereverb, isolate)")
        kind, _, eid = name.partition("/")
        if kind in PER_EFFECT:
            attr = PER_EFFECT[kind]
            have = [e for e, a, _ in self.engine.tracked[1] if a == attr]
            if eid not in have:
                raise MeterError(f"/hb/meter/{name}: no effect {eid!r} with {attr} in the chain "
                                 f"(effects with it: {', '.join(have) or 'none'})")

    def heard(self, client: ClientAddress, now: float | None = None) -> None:
        """Note that ``client`` sent something (any datagram): its subscriptions are not stale."""
        self._heard[client] = time.monotonic() if now is None else now
        if len(self._heard) > 4 * MAX_SUBSCRIPTIONS:  # forget clients that hold nothing
            with self._lock:
                keep = {s.owner for s in self._subs.values()} | {client}
                self._heard = {c: t for c, t in self._heard.items() if c in keep}

    def _evict_idle(self, asking: ClientAddress, now: float) -> bool:
        """Drop the subscriptions of the least recently heard owner silent for IDLE_EVICT_S (not
        ``asking``); False when there is none. Lock held."""
        owners = {s.owner for s in self._subs.values()} - {asking}
        idle = [(self._heard.get(o, -math.inf), o) for o in owners]
        idle = [(t, o) for t, o in idle if now - t >= IDLE_EVICT_S]
        if not idle:
            return False
        _, owner = min(idle, key=lambda pair: pair[0])
        for key in [k for k, s in self._subs.items() if s.owner == owner]:
            del self._subs[key]
        self._heard.pop(owner, None)
        return True

    def subscribe(self, dest: ClientAddress, address: str, rate_hz: float,
                  owner: ClientAddress | None = None) -> Subscription:
        """Push meter ``address`` to ``dest`` at ``rate_hz`` (clamped to 0.1..60) for ``owner``
        (the client that asked; default ``dest``, whose limit it counts against); replaces an
        earlier subscription of ``dest`` to the same meter."""
        owner = dest if owner is None else owner
        name = self.normalize(address)
        rate = float(rate_hz)
        if not math.isfinite(rate) or rate <= 0:
            raise MeterError(f"/hb/subscribe {address}: rate_hz must be a positive number, got {rate_hz!r}")
        rate = min(max(rate, MIN_RATE_HZ), MAX_RATE_HZ)
        self.check_available(name)
        with self._lock:
            key = (dest, name)
            if key not in self._subs:
                mine = sum(1 for s in self._subs.values() if s.owner == owner)
                if mine >= MAX_PER_CLIENT:
                    raise MeterError(f"/hb/subscribe: at most {MAX_PER_CLIENT} meters per client")
                now = time.monotonic()
                while len(self._subs) >= MAX_SUBSCRIPTIONS:
                    if not self._evict_idle(owner, now):
                        raise MeterError(f"/hb/subscribe: at most {MAX_SUBSCRIPTIONS} subscriptions in all, "
                                         f"every client heard from in the last {IDLE_EVICT_S:g} s")
            self._heard.setdefault(owner, time.monotonic())
            sub = Subscription(dest, name, 1.0 / rate, time.monotonic(), self.engine.meter.seq, owner=owner)
            self._subs[key] = sub
            self._update_timing()
            if sub.from_ring:
                self._next_fold = min(self._next_fold, time.monotonic() + FOLD_S)
        if self.on_change is not None:
            self.on_change()
        return sub

    def unsubscribe(self, dest: ClientAddress, address: str | None = None,
                    owner: ClientAddress | None = None) -> int:
        """Stop meter ``address`` (all meters when None) for ``dest``, and, with ``owner``,
        wherever ``owner`` had it sent; returns how many stopped."""
        name = self.normalize(address) if address else None
        with self._lock:
            keys = [k for k, s in self._subs.items()
                    if (k[0] == dest or (owner is not None and s.owner == owner)) and (name is None or k[1] == name)]
            for k in keys:
                del self._subs[k]
            self._update_timing()
        if keys and self.on_change is not None:
            self.on_change()
        return len(keys)

    def _update_timing(self) -> None:
        want = any(s.name == "engine" for s in self._subs.values())
        if want != getattr(self.engine, "_effect_timing", False):
            self.engine.enable_effect_timing(want)

    @property
    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return list(self._subs.values())

    def next_due(self) -> float:
        """``time.monotonic()`` of the next :meth:`poll` (a push, or folding the ring into slow
        subscriptions; inf when nothing is subscribed)."""
        with self._lock:
            return min(min((s.next_due for s in self._subs.values()), default=math.inf), self._next_fold)

    # == values ==================================================================================
    def poll(self, now: float | None = None) -> list[tuple[str, tuple[Any, ...], ClientAddress]]:
        """The messages due at ``now`` (``time.monotonic()``), one per due subscription that has
        something to say."""
        now = time.monotonic() if now is None else now
        out = []
        with self._lock:
            due = [s for s in self._subs.values() if s.next_due <= now]
            ring = [s for s in self._subs.values() if s.from_ring]
            if now >= self._next_fold:
                for s in ring:
                    if s.next_due > now:
                        self._fold(s)
            self._next_fold = now + FOLD_S if ring else math.inf
            for s in due:
                s.next_due += s.period
                if s.next_due <= now:  # fell behind: no bursts, just carry on
                    s.next_due = now + s.period
                args = self.values(s)
                if args is None and s.name not in ("peak", "rms", "engine", "transport"):
                    args = self._gone(s)
                if isinstance(args, Notice):
                    out.append(("/hb/error", (str(args),), s.owner or s.dest))
                elif args is not None:
                    out.append((s.address, args, s.dest))
                    s.state.pop("gone", None)
        return out

    @staticmethod
    def _once(sub: Subscription, key: str, text: str) -> Notice | None:
        """``text`` as a Notice the first time ``key`` holds for ``sub``; None after that."""
        if key in sub.state:
            return None
        sub.state[key] = True
        return Notice(text)

    def _gone(self, sub: Subscription) -> Notice | None:
        """A preset load took away what ``sub`` measures: say so once and keep the subscription
        (it resumes when a chain with that effect comes back)."""
        try:
            self.check_available(sub.name)
        except MeterError as e:
            return self._once(sub, "gone", f"{e}; the subscription waits and resumes when the chain has it again")
        return None

    def _fold(self, sub: Subscription) -> None:
        """Fold the ring rows published since ``sub``'s cursor into its accumulators (``sub.state``)."""
        engine = self.engine
        sub.cursor, rows = engine.meter.read(sub.cursor)
        level = rows["level"]
        if len(level) == 0:
            return
        acc = sub.state
        name = sub.name
        ch = engine.channels
        if name == "peak":
            peak = level[:, :2 * ch].max(axis=0)
            acc["peak"] = np.maximum(acc["peak"], peak) if "peak" in acc else peak
            return
        if name == "rms":
            acc["sumsq"] = acc.get("sumsq", 0.0) + level[:, 2 * ch:].sum(axis=0)
            acc["frames"] = acc.get("frames", 0) + int(rows["frames"].sum())
            return
        kind, _, eid = name.partition("/")
        _, tracked, generation, _ = engine.tracked
        attr = PER_EFFECT[kind]
        cols = [j for j, (e, a, _) in enumerate(tracked) if e == eid and a == attr]
        mask = rows["generation"] == generation
        if not cols or not mask.any():
            return
        block = rows["extra"][mask, cols[0]]  # (rows, 1 + channels): the largest, then per channel
        block = block[np.isfinite(block[:, 0])]
        if len(block) == 0:
            return
        # each channel's reading in the rows where the effect ran per channel (a per-channel
        # chain writes them; NaN where one channel had no reading yet, such as a model after a
        # restart: that channel's are left out, not the row's)
        each = block[:, 1:1 + ch]
        each = each[np.isfinite(each).any(axis=1)]
        if kind == "gain_reduction":
            acc["max"] = max(acc.get("max", -math.inf), float(block[:, 0].max()))
            if len(each):
                seen = np.fmax.reduce(each, axis=0)
                acc["each"] = np.fmax(acc["each"], seen) if "each" in acc else seen
        else:
            acc["sum"] = acc.get("sum", 0.0) + float(block[:, 0].sum())
            acc["n"] = acc.get("n", 0) + len(block)
            if len(each):
                acc["each_sum"] = acc.get("each_sum", 0.0) + np.nansum(each, axis=0)
                acc["each_n"] = acc.get("each_n", 0) + np.isfinite(each).sum(axis=0)

    def values(self, sub: Subscription) -> tuple[Any, ...] | Notice | None:
        """The arguments of the next message of ``sub`` (None: nothing new to send; a Notice: an
        error to tell its owner once)."""
        name = sub.name
        engine = self.engine
        if sub.from_ring:
            self._fold(sub)
            acc = sub.state
            if name == "peak":
                lin = acc.pop("peak", None)
                return None if lin is None else tuple(float(v) for v in db(lin))
            if name == "rms":
                if "sumsq" not in acc:
                    return None
                lin = np.sqrt(acc.pop("sumsq") / max(acc.pop("frames"), 1))
                return tuple(float(v) for v in db(lin))
            if "max" in acc:
                each = acc.pop("each", None)
                return (acc.pop("max"),) + (() if each is None else tuple(float(v) for v in each))
            if "n" in acc:
                mean = (acc.pop("sum") / acc.pop("n"),)
                if "each_n" in acc:
                    n = acc.pop("each_n")
                    return mean + tuple(float(v / k) if k else math.nan for v, k in zip(acc.pop("each_sum"), n))
                return mean
            return None
        if name in ("lufs", "true_peak"):
            chain = engine.chain
            found = find_attr(chain, "momentary_lufs" if name == "lufs" else "true_peak_dbtp")
            if found is None:
                return None
            if chain.is_bypassed(found[0]):  # a bypassed meter measures nothing: its last values are stale
                return self._once(sub, "bypassed", f"/hb/meter/{name}: {found[0]!r} is bypassed; "
                                                   "no readings until it is on")
            sub.state.pop("bypassed", None)
            if name == "true_peak":
                return (_finite_db(found[1].true_peak_dbtp),)
            return tuple(_finite_db(getattr(found[1], a)) for a in LOUDNESS_ATTRS)
        if name == "engine":
            return self._engine_values(sub)
        if name == "model":
            states = engine.model_states()
            if not states:
                return None
            args: list[Any] = [sum(dry for _, dry, _ in states), sum(n for _, _, n in states)]
            for eid, dry, _ in states:
                args += [eid, int(dry)]
            return tuple(args)
        if name == "transport":
            pairs: list[Any] = []
            for address, value in sorted(engine.published.items()):
                if address.startswith("/hb/transport/"):
                    pairs += [address[len("/hb/transport/"):], float(value)]
            return tuple(pairs) or None
        return None

    def _engine_values(self, sub: Subscription) -> tuple[Any, ...]:
        engine = self.engine
        args: list[Any] = [int(engine.xruns), Double(engine.last_xrun_time), float(engine.cpu_load),
                           int(engine.late_blocks), int(engine.dropped_messages)]
        chain = engine.chain
        seconds = chain.effect_seconds
        now = time.perf_counter()
        # every message has the same layout: one <id> <load> pair per effect, 0 until two timed
        # readings exist (the first message, or the first after a chain swap)
        loads = [0.0] * len(chain.ids)
        if seconds is not None:
            seconds = seconds.copy()
            prev = sub.state.get("timing")
            if prev is not None and prev[0] is chain and len(prev[1]) == len(seconds) and now > prev[2]:
                loads = [float(v) for v in (seconds - prev[1]) / (now - prev[2])]
            sub.state["timing"] = (chain, seconds, now)
        for eid, load in zip(chain.ids, loads):
            args += [eid, load]
        return tuple(args)


__all__ = ["Double", "IDLE_EVICT_S", "Notice", "MAX_PER_CLIENT", "MAX_RATE_HZ", "MeterError", "MeterHub", "Subscription", "db"]
