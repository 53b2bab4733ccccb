"""Meter kernels: per-block levels written into one row of a preallocated meter ring.

Layout of a level row (``channels`` = C): ``[peak_in 0..C-1, peak_out 0..C-1, sumsq_in 0..C-1,
sumsq_out 0..C-1]``, linear (not dB), float64. Blocks are (channels, frames) float32.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def block_levels(block: np.ndarray, level: np.ndarray, row: int, peak_col: int, sq_col: int) -> None:
    """Write the block's per-channel peak (max |x|) to ``level[row, peak_col + c]`` and its sum of
    squares to ``level[row, sq_col + c]`` (overwriting, not accumulating)."""
    ch, n = block.shape
    for c in range(ch):
        pk = 0.0
        s = 0.0
        for i in range(n):
            x = abs(block[c, i])
            if x > pk:
                pk = x
            s += x * x
        level[row, peak_col + c] = pk
        level[row, sq_col + c] = s
