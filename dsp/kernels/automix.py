"""Gain-sharing automixer kernel (Dugan's method): each channel's gain is its share of the
total power, so the microphone of whoever talks stays open and the others fall by as much as
their bleed of that talker lies under it, while the sum of the gains' powers stays 1 (the room
noise of all microphones together does not change as talkers take turns). A channel's weight
scales its power in the sharing (Dugan's "weight", a priority): a host's microphone weighted
+6 dB keeps more of the gain when both talk and cuts the others 6 dB deeper while it talks."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import finite_sample, flush_state

A_ATTACK = 0  # one-pole coefficient of the power envelope while it rises
A_RELEASE = 1  # ... while it falls
A_FLOOR = 2  # the lowest share a channel's gain goes to (10^(-range_db/10))
A_MICS = 3  # the first this many channels share the gain (0: all); the ones after pass untouched
A_CONSTS = 4

SILENT_POWER = 1e-20  # under this total power (-200 dB) every channel shares alike


@njit(cache=True)
def automix(block: np.ndarray, consts: np.ndarray, env: np.ndarray, meter: np.ndarray, weights: np.ndarray) -> None:
    """Share the gain of ``block`` (channels, frames) float32 in place.

    consts : float64 ``(A_CONSTS,)``; env : float64 ``(channels,)`` the power envelopes;
    meter : float64 ``(channels,)`` receives each channel's gain in dB at the block's end;
    weights : float64 ``(channels,)`` each channel's weight on its power (1.0: none).
    """
    ch, n = block.shape
    for c in range(ch):
        meter[c] = 0.0
    mics = int(consts[A_MICS])
    if 0 < mics < ch:
        ch = mics  # a bed after the microphones (music under them) is not theirs to share: untouched
    att = consts[A_ATTACK]
    rel = consts[A_RELEASE]
    floor = consts[A_FLOOR]
    even = 1.0 / ch
    for i in range(n):
        total = 0.0
        for c in range(ch):
            x = finite_sample(block, c, i)
            p = x * x
            e = env[c]
            e = p + (att if p > e else rel) * (e - p)
            env[c] = e
            total += weights[c] * e
        for c in range(ch):
            share = weights[c] * env[c] / total if total > SILENT_POWER else even
            if share < floor:
                share = floor
            if share < 1.0:
                block[c, i] = np.float32(block[c, i] * math.sqrt(share))
    flush_state(env)
    total = 0.0
    for c in range(ch):
        total += weights[c] * env[c]
    for c in range(ch):
        share = weights[c] * env[c] / total if total > SILENT_POWER else even
        meter[c] = 10.0 * math.log10(min(max(share, floor), 1.0))
