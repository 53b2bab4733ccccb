"""De-esser kernel: a high-passed side chain drives gain reduction of the high band (or all).

Per sample (:func:`deesser`):

1. Side chain per channel: two high-pass biquads at ``freq_hz`` (4th-order Butterworth,
   24 dB/oct), so vowels and voice fundamentals never reach the detector; mean square over
   :data:`RMS_WINDOW_MS`; linked: the loudest channel wins.
2. Gain computer (dB, hard knee): ``(level - threshold) * (1 - 1/ratio)`` clamped to
   ``[0, range]``.
3. Ballistics on the reduction like the compressor's: release stage (instant attack) then
   attack stage; 63 % of a step after ``attack_ms`` / ``release_ms``.
4. Split mode: a 4th-order Linkwitz-Riley crossover (each band two TDF-II
   Butterworth biquads); the output is ``low + g * high``. The LR4 bands are in phase and their
   magnitudes sum to exactly 1, so with no reduction the output is the input through an
   all-pass (flat magnitude, phase turning only around ``freq_hz``), and for any reduction
   ``|low + g * high| = |low| + g |high| <= 1``: nothing is ever boosted, and a 1 kHz vowel
   moves by less than 0.01 dB at full reduction. Wideband mode: ``g * x`` (no crossover).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import DENORMAL_FLOOR, finite_sample, flush_state, to_output

RMS_WINDOW_MS = 2.0
# consts: threshold_db, 1 - 1/ratio, range_db, attack coef, release coef, rms coef, mode (0 split, 1 wideband)
D_THR = 0
D_SLOPE = 1
D_RANGE = 2
D_ATT = 3
D_REL = 4
D_RMS = 5
D_MODE = 6
D_CONSTS = 7
_DB10_PER_NEPER = 10.0 / math.log(10.0)
_NEPER_PER_DB20 = math.log(10.0) / 20.0


@njit(cache=True)
def deesser_curve(level_db: float, threshold_db: float, slope: float, range_db: float) -> float:
    """Gain reduction in dB (>= 0) for a side-chain level: hard knee, at most ``range_db``."""
    gr = (level_db - threshold_db) * slope
    if gr < 0.0:
        return 0.0
    if gr > range_db:
        return range_db
    return gr


@njit(cache=True)
def _biquad(c: np.ndarray, st: np.ndarray, ch: int, stage: int, x: float) -> float:
    y = c[stage, 0] * x + st[ch, stage, 0]
    st[ch, stage, 0] = c[stage, 1] * x - c[stage, 3] * y + st[ch, stage, 1]
    st[ch, stage, 1] = c[stage, 2] * x - c[stage, 4] * y
    return y


@njit(cache=True)
def deesser(
    block: np.ndarray,
    consts: np.ndarray,
    sc_coefs: np.ndarray,
    sc_state: np.ndarray,
    xo_coefs: np.ndarray,
    xo_state: np.ndarray,
    ms: np.ndarray,
    env: np.ndarray,
    meter: np.ndarray,
    keys: np.ndarray,
) -> None:
    """De-ess ``block`` (channels, frames) float32 in place.

    Parameters
    ----------
    consts : float64 ``(D_CONSTS,)``, see the ``D_*`` indices.
    sc_coefs : float64 ``(2, 5)`` side-chain high-passes; sc_state : float64 ``(channels, 2, 2)``.
    xo_coefs : float64 ``(4, 5)`` crossover: low-pass, low-pass, high-pass, high-pass;
        xo_state : float64 ``(channels, 4, 2)``.
    ms : float64 ``(channels,)`` side-chain mean square; env : float64 ``(2,)`` ballistics (dB).
    meter : float64 ``(1,)`` receives the block's largest reduction in dB.
    keys : float64 ``(channels,)`` 1.0 for a channel the detector listens to, 0.0 for one it ignores (an LFE).
    """
    ch, n = block.shape
    thr = consts[D_THR]
    slope = consts[D_SLOPE]
    rng = consts[D_RANGE]
    att = consts[D_ATT]
    rel = consts[D_REL]
    rc = consts[D_RMS]
    wide = consts[D_MODE] > 0.5
    floor_pow = 10.0 ** (thr / 10.0)
    y1 = env[0]
    yl = env[1]
    worst = 0.0
    for i in range(n):
        power = 0.0
        for c in range(ch):
            x = finite_sample(block, c, i)
            s = _biquad(sc_coefs, sc_state, c, 0, x)
            s = _biquad(sc_coefs, sc_state, c, 1, s)
            p = rc * ms[c] + (1.0 - rc) * s * s
            ms[c] = p
            p *= keys[c]
            if p > power:
                power = p
        target = 0.0
        if power > floor_pow:
            target = deesser_curve(_DB10_PER_NEPER * math.log(power), thr, slope, rng)
        y1 = max(target, rel * y1 + (1.0 - rel) * target)
        if y1 > yl:
            yl = att * yl + (1.0 - att) * y1
        else:
            yl = y1
        if y1 < DENORMAL_FLOOR:
            y1 = 0.0
        if yl < 1e-9:  # far below float32 resolution: exactly no reduction from here on
            yl = 0.0
        if yl > worst:
            worst = yl
        g = math.exp(-yl * _NEPER_PER_DB20)
        for c in range(ch):
            x = np.float64(block[c, i])
            if wide:
                if yl > 0.0:
                    block[c, i] = np.float32(g * x)
            else:
                low = _biquad(xo_coefs, xo_state, c, 1, _biquad(xo_coefs, xo_state, c, 0, x))
                high = _biquad(xo_coefs, xo_state, c, 3, _biquad(xo_coefs, xo_state, c, 2, x))
                block[c, i] = to_output(low + g * high)
    flush_state(sc_state)
    flush_state(xo_state)
    flush_state(ms)
    if not (math.isfinite(y1) and math.isfinite(yl)):
        y1 = 0.0
        yl = 0.0
    env[0] = y1
    env[1] = yl
    meter[0] = worst
