"""The hand-off from control threads (OSC, MIDI, CLI, host scripts) to the audio callback.

Control handlers never touch DSP state. They emit a :class:`ParamChange`; the engine applies it
at the next block start. The hand-off is a fixed-size ring of preallocated numpy slots with one
producer and one consumer: producers serialise among themselves with a lock the audio thread
never takes, and the audio thread only reads slots and advances its own index. When the ring
is full, changes wait in a "pending" map on the control side where the latest value per
parameter wins (counted in ``coalesced_changes``) and are flushed as room appears.

Every change carries its ``order``: ``time.monotonic()`` when it was accepted (one clock for
every process on the machine). The engine applies a change only if it is not older than the
last one applied to that parameter, and reports a value only if it is not older than the one
reported; so changes that reach the audio thread by different ways (this ring, the OSC
receive process's ring, a coalescing map that flushes later) end on the latest, as sent.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BYPASS = -1  # param index that means "bypass" in a ParamChange
#: a ParamChange's ``param`` of ``index + n * CHANNEL_STRIDE`` sets channel n's (1, 2, ...) own
#: value of parameter ``index`` in a chain run per channel (``/hb/<id>@<n>/<param>``)
CHANNEL_STRIDE = 1 << 12


@dataclass(frozen=True)
class ParamChange:
    """Set parameter ``param`` (index; ``BYPASS`` for bypass; plus ``n * CHANNEL_STRIDE`` for
    channel n's own value) of chain slot ``slot`` to ``value``.

    ``generation`` names the chain the indices refer to; changes for a chain that has since been
    swapped out are ignored.
    """

    generation: int
    slot: int
    param: int
    value: float


class ParamRing:
    """Bounded single-producer / single-consumer ring of parameter changes.

    ``push`` is called by one producer at a time (see :class:`ControlPort`); ``drain`` only by
    the audio thread. Neither allocates buffers, neither blocks.

    ``buffer`` (optional, :meth:`nbytes` long) holds the slots and both indices instead of
    private arrays, so the producer may be another process (shared memory; see
    :mod:`hushbridge.control.osc_process`): each index is one aligned 8-byte word with one
    writer, stored after the slot it publishes.
    """

    def __init__(self, capacity: int = 1024, buffer: object = None) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity!r}")
        self.capacity = capacity
        if buffer is None:
            buffer = bytearray(self.nbytes(capacity))
        words = np.ndarray((2 + 6 * capacity,), dtype=np.int64, buffer=buffer)
        floats = words.view(np.float64)
        self._index = words[:2]  # [write, read]
        self._gen, self._slot, self._param = (words[2 + k * capacity:2 + (k + 1) * capacity] for k in range(3))
        self._value = floats[2 + 3 * capacity:2 + 4 * capacity]
        self._stamp = floats[2 + 4 * capacity:2 + 5 * capacity]
        self._order = floats[2 + 5 * capacity:]

    @staticmethod
    def nbytes(capacity: int) -> int:
        """Bytes of the buffer a ring of ``capacity`` slots needs."""
        return 8 * (2 + 6 * capacity)

    @property
    def _write(self) -> int:
        return int(self._index[0])

    @property
    def _read(self) -> int:
        return int(self._index[1])

    def __len__(self) -> int:
        return self._write - self._read

    def free(self) -> int:
        return self.capacity - (self._write - self._read)

    def push(self, generation: int, slot: int, param: int, value: float, stamp: float = 0.0,
             order: float = 0.0) -> bool:
        """Append one change (``stamp``: a bundle's time tag, Unix s, or 0; ``order``: when it
        was accepted, ``time.monotonic()``); False when full (the caller coalesces)."""
        index = self._index
        w = int(index[0])
        if w - int(index[1]) >= self.capacity:
            return False
        i = w % self.capacity
        self._gen[i] = generation
        self._slot[i] = slot
        self._param[i] = param
        self._value[i] = value
        self._stamp[i] = stamp
        self._order[i] = order
        index[0] = w + 1  # publish after the slot is written
        return True

    def drain(self, apply: Callable[[int, int, int, float, float, float], None], limit: int = 1 << 30) -> int:
        """``apply(generation, slot, param, value, stamp, order)`` up to ``limit`` waiting changes
        in order; return how many."""
        index = self._index
        r = int(index[1])
        w = int(index[0])
        n = 0
        while r < w and n < limit:
            i = r % self.capacity
            r += 1
            n += 1
            index[1] = r  # advance first: a change that raises must not block the ring forever
            apply(int(self._gen[i]), int(self._slot[i]), int(self._param[i]), float(self._value[i]),
                  float(self._stamp[i]), float(self._order[i]))
        return n


class ControlPort:
    """The producer side: any number of control threads submit changes here.

    Never blocks on the audio thread. Keeps FIFO order: once anything is pending, new changes
    join the pending map until it has been flushed.
    """

    def __init__(self, ring: ParamRing) -> None:
        self.ring = ring
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int, int], tuple[float, float, float]] = {}
        self.coalesced_changes = 0
        #: set when a change starts to wait in the pending map (and by a chain load): wakes the
        #: backend's housekeeping thread, which flushes it as room appears
        self.waiting = threading.Event()

    def submit(self, change: ParamChange, stamp: float = 0.0) -> float:
        """Hand ``change`` over; returns its order (``time.monotonic()``, taken under the lock, so
        the ring's order and the orders agree)."""
        with self._lock:
            order = time.monotonic()
            if self._pending:
                self._flush_locked()
            if self._pending or not self.ring.push(change.generation, change.slot, change.param, change.value,
                                                   stamp, order):
                key = (change.generation, change.slot, change.param)
                if key in self._pending:
                    self.coalesced_changes += 1
                elif not self._pending:
                    self.waiting.set()
                self._pending[key] = (change.value, stamp, order)
            return order

    def flush(self) -> int:
        """Move pending changes into the ring while there is room; return how many remain."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        while self._pending:
            key, (value, stamp, order) = next(iter(self._pending.items()))
            if not self.ring.push(key[0], key[1], key[2], value, stamp, order):
                break
            del self._pending[key]
        return len(self._pending)

    def count_coalesced(self, n: int) -> None:
        """Add ``n`` changes coalesced elsewhere (another process's producer side)."""
        with self._lock:
            self.coalesced_changes += n

    @property
    def pending(self) -> int:
        return len(self._pending)
