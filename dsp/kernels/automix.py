"""Gain-sharing automixer kernel (Dugan's method): each channel's gain is its share of the
total power, so the microphone of whoever talks stays open and the others fall by as much as
their bleed of that talker lies under it, while the sum of the gains' powers stays 1 (the room
noise of all microphones together does not change as talkers take turns). A channel's weight
scales its power in the sharing (Dugan's "weight", a priority): a host's microphone weighted
+6 dB keeps more of the gain when both talk and cuts the others 6 dB deeper while it talks.

Level matching: Dugan's method assumes the microphones' gains are matched (each talker reads the
same on their own mic); a hot preamp's mic took the gain in double talk (a quiet mic's talker cut
15 dB on average where two talked at once) and its bleed counted as much as a quiet mic's speech.
While a microphone holds the talk (over :data:`MATCH_SHARE` of the power, for :data:`MATCH_HOLD_S`
in a row: not a noise's moment over the others'), its power feeds its speech level (a running
mean, then a one pole over :data:`MATCH_TIME_S` of its own talk); every :data:`MATCH_EVERY`
samples each microphone heard for :data:`MATCH_ENOUGH_S` gets as weight its level's distance
under the heard ones' mean (power), at most ``limit`` dB either way: matched gains weigh alike."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import finite_sample, flush_state

A_ATTACK = 0  # one-pole coefficient of the power envelope while it rises
A_RELEASE = 1  # ... while it falls
A_FLOOR = 2  # the lowest share a channel's gain goes to (10^(-range_db/10))
A_MICS = 3  # the first this many channels share the gain (0: all); the ones after pass untouched
A_MATCH_DB = 4  # the level matching's largest correction (dB; 0: off)
A_MATCH_COEF = 5  # one-pole coefficient of a microphone's speech level (per sample it holds the talk)
A_MATCH_HOLD = 6  # samples a microphone holds the talk before its power counts as its speech
A_MATCH_ENOUGH = 7  # samples of its speech before a microphone is matched
A_CONSTS = 8
MATCH_HOLD_S = 0.1
MATCH_ENOUGH_S = 0.5
MATCH_SHARE = 0.6  # a microphone holds the talk with this much of the (weighted) power
MATCH_MIN_POWER = 1e-7  # -70 dBFS: under it a microphone's power says nothing of its talker
MATCH_EVERY = 64  # samples between updates of the matching weights
MATCH_TIME_S = 2.0  # of a microphone's own talk: its speech level's time constant

SILENT_POWER = 1e-20  # under this total power (-200 dB) every channel shares alike


@njit(cache=True)
def _match(speech: np.ndarray, auto: np.ndarray, ch: int, limit_db: float, enough: float) -> None:
    """Each heard microphone's matching weight: its speech level against the heard ones' mean
    (dB), turned into a power factor, at most ``limit_db`` either way; 1 for one not heard for
    ``enough`` samples yet."""
    mean = 0.0
    heard = 0
    for c in range(ch):
        if speech[1, c] >= enough and speech[0, c] > SILENT_POWER:
            mean += 10.0 * math.log10(speech[0, c])
            heard += 1
    if heard == 0:
        return
    mean /= heard
    for c in range(ch):
        if speech[1, c] >= enough and speech[0, c] > SILENT_POWER:
            d = mean - 10.0 * math.log10(speech[0, c])
            d = min(max(d, -limit_db), limit_db)
            auto[c] = 10.0 ** (d / 10.0)
        else:
            auto[c] = 1.0


@njit(cache=True)
def automix(block: np.ndarray, consts: np.ndarray, env: np.ndarray, meter: np.ndarray, weights: np.ndarray,
            speech: np.ndarray, auto: np.ndarray, tick: np.ndarray) -> None:
    """Share the gain of ``block`` (channels, frames) float32 in place.

    consts : float64 ``(A_CONSTS,)``; env : float64 ``(channels,)`` the power envelopes;
    meter : float64 ``(channels,)`` receives each channel's gain in dB at the block's end;
    weights : float64 ``(channels,)`` each channel's weight on its power (1.0: none);
    speech : float64 ``(3, channels)`` each microphone's power while it holds the talk (0: not
    yet), the samples of it heard so far and the samples it has held the talk in a row;
    auto : float64 ``(channels,)`` the level matching's weights (1.0: none); tick : float64
    ``(1,)`` samples since the matching weights were last worked out (a fixed grid, whatever the
    block size).
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
    limit = consts[A_MATCH_DB]
    mcoef = consts[A_MATCH_COEF]
    hold = consts[A_MATCH_HOLD]
    enough = consts[A_MATCH_ENOUGH]
    even = 1.0 / ch
    t = tick[0]
    for i in range(n):
        total = 0.0
        for c in range(ch):
            x = finite_sample(block, c, i)
            p = x * x
            e = env[c]
            e = p + (att if p > e else rel) * (e - p)
            env[c] = e
            total += weights[c] * auto[c] * e
        for c in range(ch):
            share = weights[c] * auto[c] * env[c] / total if total > SILENT_POWER else even
            if limit > 0.0 and share > MATCH_SHARE and env[c] > MATCH_MIN_POWER:  # this mic holds the talk
                speech[2, c] += 1.0
                if speech[2, c] >= hold:  # for a while: not a noise's moment over the others'
                    # a running mean over the mic's first MATCH_TIME_S of talk (no weight on where
                    # it started), then a one pole
                    k = speech[1, c] + 1.0
                    speech[1, c] = k
                    w = max(mcoef, 1.0 - 1.0 / k)
                    speech[0, c] = w * speech[0, c] + (1.0 - w) * env[c]
            else:
                speech[2, c] = 0.0
            if share < floor:
                share = floor
            if share < 1.0:
                block[c, i] = np.float32(block[c, i] * math.sqrt(share))
        t += 1.0
        if t >= MATCH_EVERY:
            t = 0.0
            if limit > 0.0:
                _match(speech, auto, ch, limit, enough)
            else:
                for c in range(ch):
                    auto[c] = 1.0
    tick[0] = t
    flush_state(env)
    total = 0.0
    for c in range(ch):
        total += weights[c] * auto[c] * env[c]
    for c in range(ch):
        share = weights[c] * auto[c] * env[c] / total if total > SILENT_POWER else even
        meter[c] = 10.0 * math.log10(min(max(share, floor), 1.0))
