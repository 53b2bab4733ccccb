"""Ducking kernel: the bed channels (music, game audio) fall while a voice channel talks.

The key is the loudest of the first ``voices`` channels, as power smoothed over ``KEY_MS``. It
opens at the threshold and closes ``HYSTERESIS_DB`` under it once ``hold`` samples have passed
without it reopening, so the bed stays down between words. The bed's gain moves in dB toward
``-depth`` (open) or 0 (closed) with one-pole ballistics (63 % of the way in the attack or the
release time), one gain for every bed channel, so a stereo bed keeps its image. The voices pass
untouched.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import finite_sample

KEY_MS = 10.0  # the key's power average: a syllable, not a waveform cycle
HYSTERESIS_DB = 3.0

D_KEY = 0  # one-pole coefficient of the key's power
D_ATTACK = 1  # ... of the gain moving down
D_RELEASE = 2  # ... of the gain moving back up
D_OPEN = 3  # key power that opens (threshold)
D_CLOSE = 4  # key power under which it may close
D_HOLD = 5  # samples it stays open after the key falls under D_CLOSE
D_DEPTH = 6  # dB the bed goes down while open (>= 0)
D_VOICES = 7  # leading channels that are voices (keys)
D_CONSTS = 8

S_KEY = 0  # the key's smoothed power
S_HOLD = 1  # samples of hold left
S_GAIN = 2  # the bed's gain, dB (<= 0)
S_OPEN = 3  # 1.0 while a voice holds the bed down
S_SIZE = 4


@njit(cache=True)
def duck(block: np.ndarray, consts: np.ndarray, state: np.ndarray) -> None:
    """Duck the bed channels of ``block`` (channels, frames) float32 in place under its voices.

    consts : float64 ``(D_CONSTS,)``; state : float64 ``(S_SIZE,)``.
    """
    ch, n = block.shape
    voices = min(int(consts[D_VOICES]), ch)
    a_key = consts[D_KEY]
    a_att = consts[D_ATTACK]
    a_rel = consts[D_RELEASE]
    p_open = consts[D_OPEN]
    p_close = consts[D_CLOSE]
    hold = consts[D_HOLD]
    depth = consts[D_DEPTH]
    key = state[S_KEY]
    left = state[S_HOLD]
    g = state[S_GAIN]
    is_open = state[S_OPEN] > 0.5
    for i in range(n):
        p = 0.0
        for c in range(voices):
            x = finite_sample(block, c, i)
            if x * x > p:
                p = x * x
        key = p + a_key * (key - p)
        if key >= p_open:
            is_open = True
            left = hold
        elif key < p_close:
            if left > 0.0:
                left -= 1.0
            else:
                is_open = False
        elif is_open:
            left = hold  # between the two thresholds: an open duck stays, a closed one stays closed
        target = -depth if is_open else 0.0
        g = target + (a_att if target < g else a_rel) * (g - target)
        if g > -1e-6:
            g = 0.0 if target == 0.0 else g
        if voices < ch and g < 0.0:
            gain = math.pow(10.0, g / 20.0)
            for c in range(voices, ch):
                x = finite_sample(block, c, i)
                block[c, i] = np.float32(x * gain)
        else:
            for c in range(voices, ch):
                finite_sample(block, c, i)
    if key < 1e-25:
        key = 0.0
    state[S_KEY] = key
    state[S_HOLD] = left
    state[S_GAIN] = g
    state[S_OPEN] = 1.0 if is_open else 0.0
