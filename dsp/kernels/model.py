"""Buffer kernels for streaming models: hop FIFOs and absolute-index output rings.

Rings are addressed by absolute sample counts (int64) so that a reader can ask for samples that
are not written yet (they read as zeros and are counted) and a writer can produce samples that
are already past (they are dropped): the delay through a ring never drifts.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def all_finite(x: np.ndarray) -> bool:
    """Whether every value of the 1-D array ``x`` is finite."""
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    return True


@njit(cache=True)
def fifo_fill(src: np.ndarray, start: int, fifo: np.ndarray, fill: int) -> int:
    """Copy ``src[start:]`` into ``fifo[fill:]`` until the FIFO is full; return samples taken."""
    k = min(src.shape[0] - start, fifo.shape[0] - fill)
    for i in range(k):
        fifo[fill + i] = src[start + i]
    return k


@njit(cache=True)
def ring_write(ring: np.ndarray, w: int, src: np.ndarray) -> int:
    """Write ``src`` at absolute positions ``w, w+1...`` of the 1-D ``ring``; return the new ``w``."""
    size = ring.shape[0]
    for i in range(src.shape[0]):
        ring[(w + i) % size] = src[i]
    return w + src.shape[0]


@njit(cache=True)
def ring_read(ring: np.ndarray, w: int, r: int, dst: np.ndarray) -> int:
    """Read absolute positions ``r .. r+len(dst)`` into ``dst``; positions before 0 read as 0.

    Positions not written yet (``>= w``) or already overwritten (``< w - size``) read as 0 and
    are counted; returns that count (0 in normal operation).
    """
    size = ring.shape[0]
    missing = 0
    for i in range(dst.shape[0]):
        j = r + i
        if j < 0:
            dst[i] = 0.0
        elif j >= w or j < w - size:
            dst[i] = 0.0
            missing += 1
        else:
            dst[i] = ring[j % size]
    return missing


@njit(cache=True)
def scaled_copy(src: np.ndarray, dst: np.ndarray, gain: float) -> None:
    """``dst[:] = src * gain`` for 1-D arrays of equal length."""
    g = np.float32(gain)
    for i in range(src.shape[0]):
        dst[i] = src[i] * g


@njit(cache=True)
def clamp_block(block: np.ndarray, limit: float) -> int:
    """Clamp ``block`` (channels, frames) to ``[-limit, limit]`` in place; returns how many samples
    were over."""
    lim = np.float32(limit)
    over = 0
    ch, n = block.shape
    for c in range(ch):
        for i in range(n):
            x = block[c, i]
            if x > lim:
                block[c, i] = lim
                over += 1
            elif x < -lim:
                block[c, i] = -lim
                over += 1
    return over


@njit(cache=True)
def signal_span(block: np.ndarray, quiet: float) -> tuple[int, int]:
    """First and last frame of ``block`` (channels, frames) where some channel's magnitude is
    above ``quiet``; ``(frames, -1)`` when none is."""
    ch, n = block.shape
    first, last = n, -1
    for i in range(n):
        for c in range(ch):
            if abs(block[c, i]) > quiet:
                if first == n:
                    first = i
                last = i
                break
    return first, last


def warm_up() -> None:
    """Compile (or load from cache) every kernel of this module."""
    a = np.zeros(4, dtype=np.float32)
    b = np.zeros(8, dtype=np.float32)
    all_finite(a)
    fifo_fill(a, 0, b, 0)
    ring_write(b, 0, a)
    ring_read(b, 4, -2, a)
    scaled_copy(a, a, 1.0)
    signal_span(np.zeros((1, 4), dtype=np.float32), 0.0)
    clamp_block(np.zeros((1, 4), dtype=np.float32), 1.0)
