"""Smoothed gain."""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def smoothed_gain(block: np.ndarray, state: np.ndarray) -> None:
    """Multiply ``block`` (channels, frames) by a gain that moves linearly toward its target.

    ``state`` is float64 ``[current, target, step]``; ``step`` > 0 is the per-sample change.
    Non-finite samples come out as silence, as from every other effect.
    """
    ch, n = block.shape
    g = state[0]
    target = state[1]
    step = state[2]
    if g == target:
        gf = np.float32(g)
        for c in range(ch):
            for i in range(n):
                v = block[c, i] * gf
                block[c, i] = v if math.isfinite(v) else np.float32(0.0)
        return
    for i in range(n):
        if g < target:
            g = min(g + step, target)
        elif g > target:
            g = max(g - step, target)
        gf = np.float32(g)
        for c in range(ch):
            v = block[c, i] * gf
            block[c, i] = v if math.isfinite(v) else np.float32(0.0)
    state[0] = g
