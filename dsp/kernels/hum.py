"""Hum remover kernel: mains-frequency detection (Goertzel) feeding a cascade of notches.

:func:`hum_remover` runs, sample-exactly whatever the host block size:

1. Detection (only when ``auto``): Goertzel power at ``k * 50`` and ``k * 60`` Hz, ``k = 1..3``,
   and at ``k * f0 +- 2 Hz`` beside each, on the channel sum, over windows of exactly one second
   (so every bin is a whole number of cycles: a steady hum leaks into none of the others,
   while speech and noise spread over neighbours alike). Each window's powers feed a
   running average with a time constant of :data:`AVERAGE_WINDOWS` windows; when one mains
   family beats the other by :data:`SWITCH_DB` and its own neighbours by :data:`TONAL_DB`
   (a steady, narrow tone: hum, not a voice's harmonics) the notch targets glide to it. After
   :data:`ABSENT_WINDOWS` windows without such a tone the notches fade out (depth 0 dB) and
   they fade back in at the first window that finds one.
2. :func:`~hushbridge.dsp.kernels.biquad.biquad_cascade` over the notch stages, whose
   frequency ramps (log domain) make a 50 <-> 60 Hz switch a smooth glide, not a click.

The block is cut at window boundaries, so a switch takes effect at the same sample whatever
the block size. Digital silence (every channel exactly 0) carries no evidence either way: a
window that is all silence changes nothing, and the next window starts at the first sample of
signal after it (as after a reset), so a live engine that idled on silence decides as an
offline render of the same signal does.
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
# hum presence (1/0), windows in a row without it, and each stage's configured depth (dB, <= 0)
D_PRESENT = D_MAINS + 1
D_MISSES = D_MAINS + 2
D_DEPTH = D_MAINS + 3
MAX_STAGES = 16
# 1 while waiting for signal: after a reset or a window of digital silence (which says nothing
# about hum), the next window starts at the first sample that is not exactly 0
D_IDLE = D_DEPTH + MAX_STAGES
DET_SIZE = D_IDLE + 1
#: one-second windows without a tonal hum before the notches fade out (auto only), and how far
#: the mains family must stand above its neighbours to count as present (lower than TONAL_DB:
#: speech over the hum narrows the margin, and a hum that was found should stay notched)
ABSENT_WINDOWS = 5
PRESENT_DB = 6.0


@njit(cache=True)
def set_mains(ramp: np.ndarray, mains_hz: float, ramp_samples: float) -> None:
    """Point every stage's frequency target at its harmonic of ``mains_hz``, ramping over ``ramp_samples``."""
    for s in range(ramp.shape[0]):
        tgt = math.log(mains_hz * (s + 1))
        ramp[s, 3] = tgt
        ramp[s, 6] = max(abs(tgt - ramp[s, 0]) / ramp_samples, 1e-12)


@njit(cache=True)
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


@njit(cache=True)
def _end_window(det: np.ndarray, ramp: np.ndarray, ramp_samples: float) -> None:
    """Close a detection window: average the group powers, maybe switch the notch targets."""
    w = 1.0 - math.exp(-1.0 / AVERAGE_WINDOWS)
    silent = True
    for k in range(_NG):
        if det[D_S1 + k] != 0.0 or det[D_S2 + k] != 0.0:
            silent = False
    if silent:  # nothing but digital silence: no evidence; wait for signal
        det[D_IDLE] = 1.0
        return
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
    # Presence: a notch on material without hum takes nothing away but rings at its harmonic for
    # ~Q / (pi f) after every low-frequency transient (a plosive, a bump: -37 dBFS of 100 Hz for
    # 0.3 s where the input had -51). So the notches fade out after ABSENT_WINDOWS windows with
    # no tonal hum of the mains family, and back in as soon as one window finds it.
    mains = det[D_MAINS]
    keep = 10.0 ** (PRESENT_DB / 10.0)
    if mains == 50.0:
        present = p50 > keep * n50 and p50 > 0.0
    elif mains == 60.0:
        present = p60 > keep * n60 and p60 > 0.0
    else:
        present = False
    if present:
        det[D_MISSES] = 0.0
        if det[D_PRESENT] < 0.5:
            det[D_PRESENT] = 1.0
            _fade_depths(ramp, det, True, ramp_samples)
    else:
        det[D_MISSES] += 1.0
        if det[D_MISSES] >= ABSENT_WINDOWS and det[D_PRESENT] > 0.5:
            det[D_PRESENT] = 0.0
            _fade_depths(ramp, det, False, ramp_samples)


@njit(cache=True)
def _fade_depths(ramp: np.ndarray, det: np.ndarray, on: bool, ramp_samples: float) -> None:
    """Ramp every stage's depth to its configured value (``on``) or to 0 dB."""
    for s in range(ramp.shape[0]):
        tgt = det[D_DEPTH + s] if on else 0.0
        ramp[s, 5] = tgt
        ramp[s, 8] = max(abs(tgt - ramp[s, 2]) / ramp_samples, 1e-12)


@njit(cache=True)
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
    ch = block.shape[0]
    pos = 0
    while pos < n:
        seg = n - pos
        if auto and det[D_IDLE] > 0.5:
            start = pos
            while start < n:
                nonzero = False
                for c in range(ch):
                    v = block[c, start]
                    if v != 0.0 and math.isfinite(v):
                        nonzero = True
                if nonzero:
                    break
                start += 1
            if start > pos:  # silence before any signal: notched, not analysed
                biquad_cascade(block[:, pos:start], work, kinds, ramp, coefs, state, clock, sample_rate)
                pos = start
                continue
            det[D_IDLE] = 0.0
            det_clock[0] = 0
            clock[0] = 0  # coefficient ramps step on the same samples as after a reset
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
