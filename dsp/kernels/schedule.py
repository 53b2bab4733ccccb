"""A time-ordered queue of parameter changes kept on the audio thread (bundle time tags).

The queue is a preallocated float64 array ``q`` of shape (capacity, 5); row = ``(generation,
slot, param, value, stamp)``, rows ``0..n-1`` are used and kept sorted by ``stamp`` (ties keep
insertion order), so the changes due at a block are always a prefix.
"""
from __future__ import annotations

import numpy as np
from numba import njit

STAMP = 4  # column of the target time


@njit(cache=True)
def timed_insert(q: np.ndarray, n: int, generation: int, slot: int, param: int, value: float, stamp: float) -> int:
    """Insert one change in stamp order; return the new count (``n`` unchanged when full)."""
    if n >= q.shape[0]:
        return n
    i = n
    while i > 0 and q[i - 1, STAMP] > stamp:
        for k in range(5):
            q[i, k] = q[i - 1, k]
        i -= 1
    q[i, 0] = generation
    q[i, 1] = slot
    q[i, 2] = param
    q[i, 3] = value
    q[i, STAMP] = stamp
    return n + 1


@njit(cache=True)
def timed_due(q: np.ndarray, n: int, now: float) -> int:
    """How many leading rows are due at ``now`` (stamp <= now)."""
    k = 0
    while k < n and q[k, STAMP] <= now:
        k += 1
    return k


@njit(cache=True)
def timed_drop(q: np.ndarray, n: int, k: int) -> int:
    """Remove the first ``k`` rows, keeping order; return the new count."""
    for i in range(k, n):
        for c in range(5):
            q[i - k, c] = q[i, c]
    return n - k


@njit(cache=True)
def timed_keep_from(q: np.ndarray, n: int, generation: int) -> int:
    """Remove the rows of chains older than ``generation`` (a chain swap), keeping order; return
    the new count."""
    m = 0
    for i in range(n):
        if q[i, 0] >= generation:
            if m != i:
                for c in range(5):
                    q[m, c] = q[i, c]
            m += 1
    return m
