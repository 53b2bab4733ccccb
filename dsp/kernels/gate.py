"""Gate / downward-expander kernel with hysteresis, hold, range and optional look-ahead.

Per sample (:func:`gate`), all state explicit, so the output never depends on the block size:

1. Side-chain high-pass per channel (biquad, TDF-II), then the linked detector: the loudest
   channel's ``|x|`` drives one peak envelope (instant attack, :data:`DETECTOR_RELEASE_MS`
   release), so every channel gets the same gain.
2. State machine: the gate opens when the envelope reaches ``threshold``; while open, each
   sample at or above ``threshold - hysteresis`` re-arms the hold counter; below it the hold
   counts down and the gate closes when it runs out.
3. Gain computer (dB): open -> 0; closed -> ``(level - threshold) * (ratio - 1)`` clamped to
   ``[-range, 0]`` (a downward expander; a large ratio makes it a gate).
4. Ballistics on that gain in dB: one pole with ``attack`` when the gain rises (opening),
   ``release`` when it falls; 63 % of a step after ``attack_ms`` / ``release_ms``.
5. The gain is applied to the input delayed by the look-ahead (``dline``), so the gate is
   already opening when a word starts.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import DENORMAL_FLOOR, finite_sample, flush_state

DETECTOR_RELEASE_MS = 10.0
# consts: threshold_db, close_db, ratio - 1, range_db, attack coef, release coef, detector coef,
#         hold samples, look-ahead samples
G_THR = 0
G_CLOSE = 1
G_SLOPE = 2
G_RANGE = 3
G_ATT = 4
G_REL = 5
G_DET = 6
G_HOLD = 7
G_LOOK = 8
G_CONSTS = 9
# fstate: envelope (linear), gain (dB); istate: open (0/1), hold counter, delay position
_DB20_PER_NEPER = 20.0 / math.log(10.0)
_NEPER_PER_DB20 = math.log(10.0) / 20.0


@njit(cache=True)
def gate_curve(level_db: float, threshold_db: float, slope: float, range_db: float) -> float:
    """Closed-state gain in dB (<= 0): ``(level - threshold) * slope`` clamped to ``[-range, 0]``."""
    g = (level_db - threshold_db) * slope
    if g > 0.0:
        return 0.0
    if g < -range_db:
        return -range_db
    return g


@njit(cache=True)
def gate(
    block: np.ndarray,
    consts: np.ndarray,
    sc_coefs: np.ndarray,
    sc_state: np.ndarray,
    dline: np.ndarray,
    fstate: np.ndarray,
    istate: np.ndarray,
    meter: np.ndarray,
) -> None:
    """Gate/expand ``block`` (channels, frames) float32 in place.

    Parameters
    ----------
    consts : float64 ``(G_CONSTS,)``, see the ``G_*`` indices.
    sc_coefs : float64 ``(5,)`` side-chain high-pass; sc_state : float64 ``(channels, 2)``.
    dline : float32 ``(channels, L)`` look-ahead ring, ``L > look-ahead``.
    fstate : float64 ``[envelope, gain_db]``; istate : int64 ``[open, hold, delay position]``.
    meter : float64 ``(1,)`` receives the block's largest attenuation in dB (>= 0).
    """
    ch, n = block.shape
    thr = consts[G_THR]
    close = consts[G_CLOSE]
    slope = consts[G_SLOPE]
    rng = consts[G_RANGE]
    att = consts[G_ATT]
    rel = consts[G_REL]
    det = consts[G_DET]
    hold_len = int(consts[G_HOLD])
    look = int(consts[G_LOOK])
    thr_lin = math.exp(thr * _NEPER_PER_DB20)
    close_lin = math.exp(close * _NEPER_PER_DB20)
    b0 = sc_coefs[0]
    b1 = sc_coefs[1]
    b2 = sc_coefs[2]
    a1 = sc_coefs[3]
    a2 = sc_coefs[4]
    size = dline.shape[1]
    env = fstate[0]
    g_db = fstate[1]
    is_open = istate[0]
    hold = istate[1]
    dp = istate[2]
    worst = 0.0
    for i in range(n):
        peak = 0.0
        for c in range(ch):
            x = finite_sample(block, c, i)
            s1 = sc_state[c, 0]
            s2 = sc_state[c, 1]
            xh = b0 * x + s1
            sc_state[c, 0] = b1 * x - a1 * xh + s2
            sc_state[c, 1] = b2 * x - a2 * xh
            a = abs(xh)
            if a > peak:
                peak = a
        env = max(peak, det * env)
        if env < DENORMAL_FLOOR:
            env = 0.0
        if env >= thr_lin:
            is_open = 1
            hold = hold_len
        elif is_open == 1:
            if env >= close_lin:
                hold = hold_len
            elif hold > 0:
                hold -= 1
            else:
                is_open = 0
        target = 0.0
        if is_open == 0:
            if env > 0.0:
                target = gate_curve(_DB20_PER_NEPER * math.log(env), thr, slope, rng)
            else:
                target = -rng
        if target > g_db:
            g_db = att * g_db + (1.0 - att) * target
        else:
            g_db = rel * g_db + (1.0 - rel) * target
        if g_db > -1e-9:  # far below float32 resolution: exactly unity from here on
            g_db = 0.0
        if -g_db > worst:
            worst = -g_db
        g = np.float32(math.exp(g_db * _NEPER_PER_DB20))
        if look > 0:
            r = dp - look
            if r < 0:
                r += size
            for c in range(ch):
                x = block[c, i]
                dline[c, dp] = x
                block[c, i] = dline[c, r] * g
            dp += 1
            if dp == size:
                dp = 0
        elif g_db != 0.0:
            for c in range(ch):
                block[c, i] *= g
    flush_state(sc_state)
    if not (math.isfinite(env) and math.isfinite(g_db)):
        env = 0.0
        g_db = -rng
    fstate[0] = env
    fstate[1] = g_db
    istate[0] = is_open
    istate[1] = hold
    istate[2] = dp
    meter[0] = worst
