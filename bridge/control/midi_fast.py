"""Plain CC maps applied in the JACK process callback, so a controller's knob never wakes a thread.

On JACK every cycle that brings MIDI events used to wake the MIDI service thread, which parsed
them, took the GIL and queued the changes for the next block: a knob turned or a dense CC
stream costs one wake-up of the engine process per cycle (375 a second at 128 frames), each one
a GIL hand-off the audio callback may wait for. :class:`CcFastPath` takes the commonest message
off that path: a 7-bit control change whose every map is a plain ``cc`` map to a parameter.

- On the control side (:meth:`rebuild`) it turns those maps into a table ``(status, cc) ->
  targets``, each target with a 128-entry table of ready values (curve, range, invert and clamp
  applied, as :meth:`MidiMapper._apply <hushbridge.control.midi.MidiMapper._apply>` would),
  for the engine's current parameter table.
- In the process callback (:meth:`take`, called by
  :class:`~hushbridge.control.jack_midi.JackMidiIn` for every 3-byte event before the audio is
  processed) a CC found there is pushed into a :class:`~hushbridge.control.params.ParamRing`
  the engine drains at the start of the same cycle's block (:meth:`Engine.attach_ring
  <hushbridge.engine.Engine.attach_ring>`): half a period after it was sent on average, where
  the service thread's way takes one and a half.
- The latest value and its order per target wait in two arrays; the service thread, woken at
  most every :data:`REPORT_S` while CCs come, reports them (:meth:`report`, through
  :meth:`Engine.record_remote_set <hushbridge.engine.Engine.record_remote_set>`: ``/hb/get``,
  presets, OSC feedback).

Everything else takes the service thread's way as before: 14-bit pairs (a CC below 64 whose
half has a ``cc14`` map), NRPN and RPN controllers, notes, program changes, clock, any message
while MIDI learn is armed (the table is emptied at once, before learn returns), maps to an
address the chain lacks (rejected and counted there), and parameters the effect checks against
its prepared state. Any change to the maps or the chain empties the table at once and the
service thread rebuilds it.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, NamedTuple

import numpy as np

from hushbridge.control.params import ParamRing

REPORT_S = 0.02     # the service thread reports fast-path changes at most this often while CCs come
RING_CAPACITY = 1024  # changes between two blocks; beyond it a CC takes the service thread's way
_NRPN_CCS = (6, 38, 96, 97, 98, 99, 100, 101)


class _Table(NamedTuple):
    routes: dict[tuple[int, int], tuple[tuple[int, int, int, int, np.ndarray], ...]]  # (status, cc) -> targets
    addresses: tuple[str, ...]  # target k -> its address
    generation: int
    values: np.ndarray   # target k -> latest value taken (audio thread writes)
    orders: np.ndarray   # target k -> when (time.monotonic()); -inf: never
    reported: np.ndarray  # target k -> order reported last (service thread)


_EMPTY = _Table({}, (), -1, np.zeros(0), np.zeros(0), np.zeros(0))


class CcFastPath:
    """See the module docstring.

    Parameters
    ----------
    mapper : MidiMapper
        Its maps, learn state and engine.
    wake : callable
        Wakes the service thread (a :class:`~hushbridge.control.waker.Waker`'s ``set``: no
        lock, GIL kept); called from the process callback.
    """

    def __init__(self, mapper: Any, wake: Any) -> None:
        self.mapper = mapper
        self.engine = mapper.engine
        self.wake = wake
        self.ring = ParamRing(RING_CAPACITY)
        self._table = _EMPTY
        self._retired: list[_Table] = []  # replaced tables whose last values are not reported yet
        self.dirty = True  # the service thread rebuilds the table
        self._rebuild_lock = threading.Lock()
        self._last_wake = -math.inf
        self.taken = 0      # CCs applied here (audio thread)
        self.applied = 0    # their targets set
        self._counted = (0, 0)  # (taken, applied) counted in the mapper's stats (service thread)
        self._attached = False

    # == control side ============================================================================
    def attach(self) -> None:
        """Start: the engine drains the ring; changes to maps, learn or chain empty the table."""
        self.engine.attach_ring(self.ring)
        self.engine.add_listener(self._on_engine_change)
        self.mapper.add_change_listener(self.invalidate)
        self._attached = True
        self.invalidate()

    def detach(self) -> None:
        """Stop (the caller has stopped calling :meth:`take`). Idempotent."""
        if not self._attached:
            return
        self._attached = False
        self._table = _EMPTY
        self.mapper.remove_change_listener(self.invalidate)
        self.engine.remove_listener(self._on_engine_change)
        self.engine.detach_ring(self.ring)

    def invalidate(self) -> None:
        """Empty the table now (every CC takes the service thread's way) and have it rebuilt."""
        self._install(_EMPTY)
        self.dirty = True
        self.wake()

    def _on_engine_change(self, address: str, value: float, source: object) -> None:
        if self.engine.table_generation != self._table.generation and self._table is not _EMPTY:
            self.invalidate()  # a new chain: slots and indices moved

    def rebuild(self) -> None:
        """Build the table for the current maps and chain (service thread, on ``dirty``)."""
        from hushbridge.effects.base import Effect

        with self._rebuild_lock:
            self.dirty = False
            mapper = self.mapper
            generation, chain, infos = self.engine.table_snapshot()
            by_address = {info.address: info for info in infos}
            routes: dict[tuple[int, int], tuple[tuple[int, int, int, int, np.ndarray], ...]] = {}
            addresses: list[str] = []
            index_of: dict[str, int] = {}  # address -> target k (one report per address)
            with mapper._lock:
                if mapper.learning is not None:
                    self._install(_EMPTY)
                    return
                for channel in range(16):
                    for cc in range(128):
                        if cc in _NRPN_CCS:
                            continue
                        maps = mapper._lookup("cc", channel, cc)
                        if not maps:
                            continue
                        if cc < 64 and mapper._lookup("cc14", channel, cc if cc < 32 else cc - 32):
                            continue  # part of a 14-bit pair: the service thread pairs halves
                        targets = []
                        for m in maps:
                            info = by_address.get(m.address)
                            if info is None or info.index < 0:
                                break  # unknown here (rejected and counted there), or a bypass
                            if type(chain[info.slot]).check_value is not Effect.check_value:
                                break  # the effect refuses some values by its prepared state
                            p = info.param
                            lut = np.array([p.clamp(m.value(v / 127.0, p)) for v in range(128)])
                            k = index_of.setdefault(m.address, len(addresses))
                            if k == len(addresses):
                                addresses.append(m.address)
                            targets.append((k, generation, info.slot, info.index, lut))
                        else:
                            routes[(0xB0 | channel, cc)] = tuple(targets)
                n = len(addresses)
                # under the mapper lock: a map change (which invalidates) cannot fall in between
                self._install(_Table(routes, tuple(addresses), generation, np.zeros(n), np.full(n, -math.inf),
                                     np.full(n, -math.inf)))
            if self.engine.table_generation != generation:
                self.invalidate()  # a chain loaded while building (take() checks this too)

    def _install(self, table: _Table) -> None:
        old = self._table
        self._table = table  # one store: the process callback sees the old table or the new
        if len(old.orders):
            # what the old one took since its last report is still to be reported (report())
            self._retired.append(old)

    def report(self) -> bool:
        """Report the changes taken since the last report (service thread); True if any."""
        table = self._table
        counts = (self.taken, self.applied)
        if counts != self._counted:
            stats = self.mapper.stats
            stats["received"] += counts[0] - self._counted[0]
            stats["applied"] += counts[1] - self._counted[1]  # per target, as the other way counts
            self._counted = counts
        any_fresh = False
        while self._retired:  # tables replaced since the last report (a map change, learn, a chain)
            any_fresh |= self._report_table(self._retired.pop(0))
        if len(table.orders):
            any_fresh |= self._report_table(table)
        return any_fresh

    def _report_table(self, table: _Table) -> bool:
        from hushbridge.control.midi import MIDI_SOURCE

        fresh = np.flatnonzero(table.orders > table.reported)
        if len(fresh):
            # the service thread looks again REPORT_S from now anyway (MidiInput._serve): the
            # process callback need not wake it before then
            self._last_wake = time.monotonic()
        for k in fresh:
            order = float(table.orders[k])
            value = float(table.values[k])
            table.reported[k] = order
            # an older table's value yields to a later one (order stamps: latest wins)
            self.engine.record_remote_set(table.addresses[k], value, table.generation, order, source=MIDI_SOURCE)
        return len(fresh) > 0

    # == process callback ========================================================================
    def take(self, data: bytes) -> bool:
        """Apply a 3-byte event if it is a CC of the table; False: it takes the other way (which
        also rejects and counts a malformed one, e.g. a status byte where the value belongs)."""
        table = self._table
        targets = table.routes.get((data[0], data[1]))
        if targets is None or data[2] > 0x7F:
            return False
        if table.generation != self.engine.table_generation:
            # a chain was loaded (one without parameters tells no listener): the other way, and
            # the service thread rebuilds the table
            if not self.dirty:
                self.dirty = True
                self.wake()
            return False
        ring = self.ring
        if ring.free() < len(targets):
            return False
        now = time.monotonic()
        v = data[2]
        values, orders = table.values, table.orders
        for k, generation, slot, index, lut in targets:
            value = lut[v]
            ring.push(generation, slot, index, value, 0.0, now)
            values[k] = value
            orders[k] = now
        self.taken += 1
        self.applied += len(targets)
        if now - self._last_wake >= REPORT_S:
            self._last_wake = now
            self.wake()
        return True


__all__ = ["CcFastPath", "REPORT_S"]
