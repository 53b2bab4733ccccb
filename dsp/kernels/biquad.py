"""Cascaded biquads (transposed direct form II) with zipper-free parameter ramps.

Layout, as everywhere in the engine: ``block`` is ``(channels, frames)`` float32, C-contiguous,
processed in place. Filter state is float64 ``(channels, stages, 2)``.

Each stage has a ``KIND_*`` (see :mod:`hushbridge.dsp.design`) and three smoothed parameters,
kept in ``ramp`` (float64, ``(stages, 9)``)::

    [ln f, ln q, gain_db,            # current values
     ln f, ln q, gain_db,            # targets
     step_ln_f, step_ln_q, step_db]  # per-sample step (> 0) toward the target

While any stage ramps, coefficients are recomputed every :data:`RAMP_INTERVAL` samples. That
schedule is counted in absolute samples (``clock``), never per host block, so the output does
not depend on how the signal is cut into blocks. With constant parameters nothing is
recomputed and the output is bit-identical whatever the block size.

A ``clock`` of ``2 + channels`` elements carries start flags: ``clock[1]`` (any channel) and
``clock[2 + c]`` (channel ``c``) say that the channel has seen only digital silence since a
reset. Its first nonzero sample then primes every stage with the steady state of a constant
input equal to it (``scipy.signal.lfilter_zi`` scaled by it). A filter reset on a signal with a
DC offset (a live stream's first block, a high-pass brought back from bypass) then starts as if
the offset had always been there, instead of passing it as a step: a thump after a high-pass.
Waiting for the first nonzero sample keeps live and offline alike: a live engine idling on
digital silence primes where the take starts, as a file render does at its first sample
(digital silence through a filter at rest stays exactly zero either way).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.design import design_stage
from hushbridge.dsp.kernels.util import DENORMAL_FLOOR, to_output

RAMP_INTERVAL = 16


@njit(cache=True)
def advance_ramps(kinds: np.ndarray, ramp: np.ndarray, coefs: np.ndarray, sample_rate: float, samples: int) -> None:
    """Move every ramping stage ``samples`` steps toward its target and redesign its coefficients."""
    for s in range(kinds.shape[0]):
        moved = False
        for k in range(3):
            cur = ramp[s, k]
            tgt = ramp[s, 3 + k]
            if cur != tgt:
                d = samples * ramp[s, 6 + k]
                if cur < tgt:
                    cur = min(cur + d, tgt)
                else:
                    cur = max(cur - d, tgt)
                ramp[s, k] = cur
                moved = True
        if moved:
            design_stage(kinds[s], sample_rate, math.exp(ramp[s, 0]), math.exp(ramp[s, 1]), ramp[s, 2], coefs[s])


@njit(cache=True)
def design_current(kinds: np.ndarray, ramp: np.ndarray, coefs: np.ndarray, sample_rate: float) -> None:
    """Coefficients of every stage at its current (not target) parameters."""
    for s in range(kinds.shape[0]):
        design_stage(kinds[s], sample_rate, math.exp(ramp[s, 0]), math.exp(ramp[s, 1]), ramp[s, 2], coefs[s])


@njit(cache=True)
def _run_segment(block: np.ndarray, work: np.ndarray, pos: int, n: int, coefs: np.ndarray, state: np.ndarray,
                 clock: np.ndarray, flags: bool) -> None:
    """Filter ``block[:, pos:pos+n]`` through every stage, in float64, with fixed coefficients;
    with ``flags``, a channel still waiting for its first nonzero sample (see the module
    docstring) only from it."""
    ch = block.shape[0]
    stages = coefs.shape[0]
    for c in range(ch):
        lo = 0
        if flags:
            wait = clock[2 + c]
            if wait == 1:
                lo = n  # silence so far: the state stays at rest
            elif wait < 0:  # primed at sample -wait - 1 of this block
                lo = min(max(0, -wait - 1 - pos), n)
            for i in range(lo):
                block[c, pos + i] = 0.0  # zeros (or NaN/Inf, which enter as silence)
            if lo == n:
                continue
        m = n - lo
        for i in range(m):
            x = np.float64(block[c, pos + lo + i])
            if not math.isfinite(x):  # guard the state: NaN/Inf enters as silence
                x = 0.0
            work[i] = x
        for s in range(stages):
            b0 = coefs[s, 0]
            b1 = coefs[s, 1]
            b2 = coefs[s, 2]
            a1 = coefs[s, 3]
            a2 = coefs[s, 4]
            s1 = state[c, s, 0]
            s2 = state[c, s, 1]
            if b0 == 1.0 and b1 == a1 and b2 == a2 and s1 == 0.0 and s2 == 0.0:
                # exact identity (e.g. a 0 dB peaking band) with empty state: running it would
                # give y == x and leave the state at exactly 0, so skipping changes nothing
                continue
            for i in range(m):
                x = work[i]
                y = b0 * x + s1
                s1 = b1 * x - a1 * y + s2
                s2 = b2 * x - a2 * y
                work[i] = y
            if not (math.isfinite(s1) and math.isfinite(s2)):
                s1 = 0.0
                s2 = 0.0
            if abs(s1) < DENORMAL_FLOOR:
                s1 = 0.0
            if abs(s2) < DENORMAL_FLOOR:
                s2 = 0.0
            state[c, s, 0] = s1
            state[c, s, 1] = s2
        for i in range(m):
            block[c, pos + lo + i] = to_output(work[i])


@njit(cache=True)
def find_first_sound(block: np.ndarray, clock: np.ndarray) -> None:
    """Mark, for each channel still waiting (``clock[2 + c] == 1``), where its first nonzero
    finite sample lies in ``block``: ``clock[2 + c] = -(index + 1)``, cleared after the block."""
    for c in range(block.shape[0]):
        if clock[2 + c] != 1:
            continue
        for i in range(block.shape[1]):
            v = np.float64(block[c, i])
            if v != 0.0 and math.isfinite(v):
                clock[2 + c] = -(i + 1)
                break


@njit(cache=True)
def prime_steady(c: int, x: float, coefs: np.ndarray, state: np.ndarray) -> None:
    """Set channel ``c``'s ``state`` to each stage's steady state for a constant input ``x``,
    with the coefficients in force (those of the ramp segment that holds the sample)."""
    for s in range(coefs.shape[0]):
        b0 = coefs[s, 0]
        b1 = coefs[s, 1]
        b2 = coefs[s, 2]
        a1 = coefs[s, 3]
        a2 = coefs[s, 4]
        den = 1.0 + a1 + a2
        # the DC gain; 0/0 (a pole at DC) never happens for the stable stages designed here
        y = (b0 + b1 + b2) / den * x if den != 0.0 else 0.0
        state[c, s, 0] = y - b0 * x
        state[c, s, 1] = b2 * x - a2 * y
        x = y


@njit(cache=True)
def biquad_cascade(
    block: np.ndarray,
    work: np.ndarray,
    kinds: np.ndarray,
    ramp: np.ndarray,
    coefs: np.ndarray,
    state: np.ndarray,
    clock: np.ndarray,
    sample_rate: float,
) -> None:
    """Run ``block`` (channels, frames) float32 through the stages in place.

    Parameters
    ----------
    work : float64 array, at least ``frames`` long (scratch).
    kinds : int64 ``(stages,)``; ramp : float64 ``(stages, 9)``; coefs : float64 ``(stages, 5)``
        ``[b0, b1, b2, a1, a2]`` at the current ramp values.
    state : float64 ``(channels, stages, 2)``; clock : int64 ``(1,)`` samples modulo
        :data:`RAMP_INTERVAL`, or ``(2,)`` with the start flag (see the module docstring).
    """
    n = block.shape[1]
    flags = clock.shape[0] >= 2 + block.shape[0] and clock[1] != 0
    if flags:
        find_first_sound(block, clock)
    stages = kinds.shape[0]
    pos = 0
    while pos < n:
        seg = n - pos
        ramping = False
        for s in range(stages):
            if ramp[s, 0] != ramp[s, 3] or ramp[s, 1] != ramp[s, 4] or ramp[s, 2] != ramp[s, 5]:
                ramping = True
        if ramping:
            phase = clock[0]
            if phase == 0:
                advance_ramps(kinds, ramp, coefs, sample_rate, RAMP_INTERVAL)
            seg = min(seg, RAMP_INTERVAL - phase)
        if flags:  # prime where the sound starts, with this segment's coefficients
            for c in range(block.shape[0]):
                k = -clock[2 + c] - 1
                if clock[2 + c] < 0 and pos <= k < pos + seg:
                    prime_steady(c, np.float64(block[c, k]), coefs, state)
        _run_segment(block, work, pos, seg, coefs, state, clock, flags)
        pos += seg
        clock[0] = (clock[0] + seg) % RAMP_INTERVAL
    if flags:
        waiting = 0
        for c in range(block.shape[0]):
            if clock[2 + c] < 0:
                clock[2 + c] = 0  # primed: runs as usual from the next block on
            elif clock[2 + c] == 1:
                waiting = 1
        clock[1] = waiting
