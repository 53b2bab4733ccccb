"""Hum remover kernel: mains-frequency detection (Goertzel) feeding a cascade of notches.

:func:`hum_remover` runs, sample-exactly whatever the host block size:

1. Detection (only when ``auto``): Goertzel power at ``k * 50`` and ``k * 60`` Hz, ``k = 1..3``,
   and at ``k * f0 +- 2 Hz`` beside each, on the channel sum, over windows of exactly one second
   (so every bin is a whole number of cycles: a steady hum leaks into none of the others,
   while speech and noise spread over neighbours alike). Each window's powers feed a
   running average with a time constant of :data:`AVERAGE_WINDOWS` windows; when one mains
   family beats the other by :data:`SWITCH_DB` and its own neighbours by :data:`TONAL_DB`
   (a steady, narrow tone: hum, not a voice's harmonics) the notch targets glide to it.
2. :func:`~hushbridge.dsp.kernels.biquad.biquad_cascade` over the notch stages, whose
   frequency ramps (log domain) make a 50 <-> 60 Hz switch a smooth glide, not a click.

The block is cut at window boundaries, so a switch takes effect at the same sample whatever
the block size.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.biquad import biquad_cascade

DETECT_HARMONICS = 3
AVERAGE_WINDOWS = 2.0
SWITCH_DB = 6.0
TONAL_DB = 10.0
NEIGHBOUR_HZ = 2.0  # whole bins of a 1 s window away: orthogonal to a steady hum, not to speech
# Goertzel groups of DETECT_HARMONICS bins each: k*50, k*60, k*50-2, k*50+2, k*60-2, k*60+2 Hz
GROUPS = 6
_NG = GROUPS * DETECT_HARMONICS
# det layout (float64): Goertzel s1, s2 and coefficients 2cos(w) per bin, then the averaged
# power of each group, then the detected mains (0 none, 50, 60)
D_S1 = 0
D_S2 = _NG
D_COEF = 2 * _NG
D_POW = 3 * _NG
D_MAINS = 3 * _NG + GROUPS
DET_SIZE = 3 * _NG + GROUPS + 1


@njit(cache=True, nogil=True)
def set_mains(ramp: np.ndarray, mains_hz: float, ramp_samples: float) -> None:
    """Point every stage's frequency target at its harmonic of ``mains_hz``, ramping over ``ramp_samples``."""
    for s in range(ramp.shape[0]):
        tgt = math.log(mains_hz * (s + 1))
        ramp[s, 3] = tgt
        ramp[s, 6] = max(abs(tgt - ramp[s, 0]) / ramp_samples, 1e-12)


@njit(cache=True, nogil=True)
def _detect(block: np.ndarray, a: int, b: int, det: np.ndarray) -> None:
    """Run the Goertzel recurrences over ``block[:, a:b]`` (channel sum)."""
    ch = block.shape[0]
    for i in range(a, b):
        x = 0.0
        for c in range(ch):
            v = np.float64(block[c, i])
            if math.isfinite(v):
                x += v
        for k in range(_NG):
            s0 = x + det[D_COEF + k] * det[D_S1 + k] - det[D_S2 + k]
            det[D_S2 + k] = det[D_S1 + k]
            det[D_S1 + k] = s0


@njit(cache=True, nogil=True)
def _end_window(det: np.ndarray, ramp: np.ndarray, ramp_samples: float) -> None:
    """Close a detection window: average the group powers, maybe switch the notch targets."""
    w = 1.0 - math.exp(-1.0 / AVERAGE_WINDOWS)
    for g in range(GROUPS):
        pg = 0.0
        for j in range(DETECT_HARMONICS):
            k = g * DETECT_HARMONICS + j
            s1 = det[D_S1 + k]
            s2 = det[D_S2 + k]
            pk = s1 * s1 + s2 * s2 - det[D_COEF + k] * s1 * s2
            if math.isfinite(pk) and pk > 0.0:
                pg += pk
            det[D_S1 + k] = 0.0
            det[D_S2 + k] = 0.0
        det[D_POW + g] += w * (pg - det[D_POW + g])
    p50 = det[D_POW]
    p60 = det[D_POW + 1]
    n50 = 0.5 * (det[D_POW + 2] + det[D_POW + 3])
    n60 = 0.5 * (det[D_POW + 4] + det[D_POW + 5])
    beat = 10.0 ** (SWITCH_DB / 10.0)
    tonal = 10.0 ** (TONAL_DB / 10.0)
    new = det[D_MAINS]
    if p50 > beat * p60 and p50 > tonal * n50 and p50 > 0.0:
        new = 50.0
    elif p60 > beat * p50 and p60 > tonal * n60 and p60 > 0.0:
        new = 60.0
    if new != det[D_MAINS]:
        det[D_MAINS] = new
        set_mains(ramp, new, ramp_samples)


@njit(cache=True, nogil=True)
def hum_remover(
    block: np.ndarray,
    work: np.ndarray,
    kinds: np.ndarray,
    ramp: np.ndarray,
    coefs: np.ndarray,
    state: np.ndarray,
    clock: np.ndarray,
    sample_rate: float,
    det: np.ndarray,
    det_clock: np.ndarray,
    window: int,
    auto: bool,
    ramp_samples: float,
) -> None:
    """Detect (if ``auto``) and notch ``block`` (channels, frames) float32 in place.

    Parameters
    ----------
    work, kinds, ramp, coefs, state, clock
        As for :func:`~hushbridge.dsp.kernels.biquad.biquad_cascade` (one stage per harmonic).
    det : float64 ``(DET_SIZE,)``; det_clock : int64 ``(1,)`` samples into the current window.
    window : detection window in samples; ramp_samples : glide length of a mains switch.
    """
    n = block.shape[1]
    pos = 0
    while pos < n:
        seg = n - pos
        if auto:
            seg = min(seg, window - det_clock[0])
            _detect(block, pos, pos + seg, det)
        biquad_cascade(block[:, pos:pos + seg], work, kinds, ramp, coefs, state, clock, sample_rate)
        if auto:
            det_clock[0] += seg
            if det_clock[0] >= window:  # the switch starts at the window end, whatever the blocks
                det_clock[0] = 0
                _end_window(det, ramp, ramp_samples)
        pos += seg
