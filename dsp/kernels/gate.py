"""Gate / downward-expander kernel with hysteresis, hold, range and optional look-ahead.

Per sample (:func:`gate`), all state explicit, so the output never depends on the block size:

1. Side-chain high-pass and low-pass per channel (biquads, TDF-II; the low-pass is skipped while
   it is the identity), then the linked detector: the loudest
   channel's ``|x|`` drives one peak envelope (instant attack, :data:`DETECTOR_RELEASE_MS`
   release), so every channel gets the same gain.
2. Adaptive threshold (``adaptive`` > 0): the threshold used is the larger of ``threshold`` and
   ``floor + adaptive`` dB; hysteresis and the gain curve follow it. The floor is tracked on the
   linked side-chain's power smoothed over :data:`FLOOR_SMOOTHING_MS` (not the peak detector: a
   café's babble dips far below its usual level between syllables, which put the floor 10 dB
   too low there). Its estimate is the lowest smoothed power in the last
   :data:`FLOOR_WINDOW_S` (minimum statistics over :data:`FLOOR_SLOTS` sub-windows), and the
   floor moves toward it at bounded rates:

   - it starts (once the smoothed power has settled, 6 time constants heard) at the lower of
     the estimate and the floor at which ``floor + adaptive`` equals ``threshold``, so the
     first threshold is the fixed one: a take cut at its first word has shown only speech,
     whose quietest 50 ms are not the room (that floor cut first words by up to 16 dB);
   - it rises toward the estimate at :data:`FLOOR_MAX_RISE_DB_PER_S` at most, so unbroken
     speech longer than the window cannot carry it up into the words; except that at the end
     of a *steady* slot (its smoothed power within :data:`FLOOR_STEADY_DB`: fans, rain, traffic,
     most of a café's slots; under 2 % of speech's) it takes the estimate at once, so a noisy
     room is followed as soon as it has been heard for one slot;
   - it falls only while the power heard now is under it, at :data:`FLOOR_MAX_FALL_DB_PER_S`
     at most: the filters before a gate ring down through an edit's digital silence, and that
     tail is not the room (it pulled the floor 30 dB down and opened the gate on the room tone
     after the edit for 3 s).

   Samples of digital silence (all channels under :data:`SILENCE_LEVEL`, -140 dBFS: a 24-bit
   file's last bit is -144) leave the floor as it is, so a live engine idling on silence before a
   take gates that take as an offline render of it does; the residue a model before the gate
   leaves in that silence (-220 dBFS) counts as silence too (it pulled the floor 3 dB down in a
   0.7 s idle, and the take after it was gated up to 0.07 dB apart from its offline render).
3. State machine: the gate opens when the envelope reaches the threshold; while open, each
   sample at or above ``threshold - hysteresis`` re-arms the hold counter; below it the hold
   counts down and the gate closes when it runs out.
4. Gain computer (dB): open -> 0; closed -> ``(level - threshold) * (ratio - 1)`` clamped to
   ``[-range, 0]`` (a downward expander; a large ratio makes it a gate).
5. Ballistics on that gain in dB: one pole with ``attack`` when the gain rises (opening),
   ``release`` when it falls; 63 % of a step after ``attack_ms`` / ``release_ms``.
6. The gain is applied to the input delayed by the look-ahead (``dline``), so the gate is
   already opening when a word starts.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import DENORMAL_FLOOR, finite_sample, flush_state

DETECTOR_RELEASE_MS = 10.0
FLOOR_SMOOTHING_MS = 50.0  # the floor is tracked on the power over ~50 ms, not on the peak detector
FLOOR_WINDOW_S = 3.0  # a pause shorter than this in every 3 s of speech keeps the floor down
FLOOR_SLOTS = 6
# consts: threshold_db, close_db, ratio - 1, range_db, attack coef, release coef, detector coef,
#         hold samples, look-ahead samples, adaptive margin (dB, 0: off), samples per floor slot,
#         floor power smoothing coef, the floor's largest rise and fall per sample (power factors)
G_THR = 0
G_CLOSE = 1
G_SLOPE = 2
G_RANGE = 3
G_ATT = 4
G_REL = 5
G_DET = 6
G_HOLD = 7
G_LOOK = 8
G_ADAPT = 9
G_SLOT = 10
G_POW = 11
G_RISE = 12
G_FALL = 13
G_CONSTS = 14
# fstate: envelope (linear), gain (dB), minimum of the current floor slot, minimum of the finished
# slots, smoothed power, the floor the threshold follows, the current slot's maximum (powers);
# istate: open (0/1), hold counter, delay position, samples into the slot, next slot, samples
# heard (up to the warm-up)
F_SLOT_MIN = 2
F_PAST_MIN = 3
F_POWER = 4
F_FLOOR = 5
F_SLOT_MAX = 6
F_SIZE = 7
I_SIZE = 6
FLOOR_WARMUP = 6.0  # smoothing time constants heard before the smoothed power counts for the floor
NO_FLOOR = 1e30  # a floor slot with nothing heard yet (finite: state stays finite everywhere)
SILENCE_LEVEL = 1e-7  # -140 dBFS: under it a sample says nothing about the room
FLOOR_MAX_FALL_DB_PER_S = 4.0  # the filters before a gate ring down through an edit's silence
FLOOR_MAX_RISE_DB_PER_S = 4.0  # a take that starts with speech, or unbroken speech, is not the room
FLOOR_STEADY_DB = 5.0  # a slot whose smoothed power stays within this is steady noise, not speech
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
    floor_slots: np.ndarray,
    keys: np.ndarray,
) -> None:
    """Gate/expand ``block`` (channels, frames) float32 in place.

    Parameters
    ----------
    consts : float64 ``(G_CONSTS,)``, see the ``G_*`` indices.
    sc_coefs : float64 ``(10,)`` side-chain high-pass, then low-pass (identity: off);
        sc_state : float64 ``(channels, 4)``.
    dline : float32 ``(channels, L)`` look-ahead ring, ``L > look-ahead``.
    fstate : float64 ``(F_SIZE,)``; istate : int64 ``(I_SIZE,)`` (see the module constants).
    meter : float64 ``(1,)`` receives the block's largest attenuation in dB (>= 0).
    floor_slots : float64 ``(FLOOR_SLOTS,)`` the smoothed power's minimum in each finished slot (NO_FLOOR: none).
    keys : float64 ``(channels,)`` 1.0 for a channel the detector listens to, 0.0 for one it ignores (an LFE).
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
    adapt = consts[G_ADAPT]
    adapt_lin = math.exp(adapt * _NEPER_PER_DB20)
    hyst_lin = close_lin / thr_lin
    slot_len = int(consts[G_SLOT])
    n_slots = floor_slots.shape[0]
    slot_min = fstate[F_SLOT_MIN]
    past_min = fstate[F_PAST_MIN]
    power = fstate[F_POWER]
    pow_coef = consts[G_POW]
    heard_count = istate[5]
    warmup = int(FLOOR_WARMUP / (1.0 - pow_coef)) if pow_coef < 1.0 else 0
    rise = consts[G_RISE]
    fall = consts[G_FALL]
    floor_power = fstate[F_FLOOR]
    slot_max = fstate[F_SLOT_MAX]
    steady = math.exp(2.0 * FLOOR_STEADY_DB * _NEPER_PER_DB20)  # in power
    # where the floor starts: the one at which the adaptive threshold equals the fixed one
    first_floor = (thr_lin / adapt_lin) ** 2 if adapt > 0.0 else NO_FLOOR
    slot_count = istate[3]
    slot_pos = istate[4]
    thr_i = thr
    thr_i_lin = thr_lin
    close_i_lin = close_lin
    b0 = sc_coefs[0]
    b1 = sc_coefs[1]
    b2 = sc_coefs[2]
    a1 = sc_coefs[3]
    a2 = sc_coefs[4]
    l0 = sc_coefs[5]
    l1 = sc_coefs[6]
    l2 = sc_coefs[7]
    la1 = sc_coefs[8]
    la2 = sc_coefs[9]
    lpf = not (l0 == 1.0 and l1 == 0.0 and l2 == 0.0 and la1 == 0.0 and la2 == 0.0)
    size = dline.shape[1]
    env = fstate[0]
    g_db = fstate[1]
    is_open = istate[0]
    hold = istate[1]
    dp = istate[2]
    worst = 0.0
    for i in range(n):
        peak = 0.0
        heard = False
        for c in range(ch):
            x = finite_sample(block, c, i)
            if abs(x) > SILENCE_LEVEL:
                heard = True
            s1 = sc_state[c, 0]
            s2 = sc_state[c, 1]
            xh = b0 * x + s1
            sc_state[c, 0] = b1 * x - a1 * xh + s2
            sc_state[c, 1] = b2 * x - a2 * xh
            if lpf:
                s1 = sc_state[c, 2]
                s2 = sc_state[c, 3]
                xl = l0 * xh + s1
                sc_state[c, 2] = l1 * xh - la1 * xl + s2
                sc_state[c, 3] = l2 * xh - la2 * xl
                xh = xl
            a = abs(xh) * keys[c]  # a product, not a test: the loop stays branch-light
            if a > peak:
                peak = a
        env = max(peak, det * env)
        if env < DENORMAL_FLOOR:
            env = 0.0
        if adapt > 0.0:
            if heard:  # digital silence says nothing about the room: the floor waits
                power = pow_coef * power + (1.0 - pow_coef) * peak * peak
                if power < DENORMAL_FLOOR:
                    power = 0.0
                if heard_count < warmup:  # the smoothed power is still rising from nothing
                    heard_count += 1
                else:
                    if power < slot_min:
                        slot_min = power
                    if power > slot_max:
                        slot_max = power
                    estimate = min(slot_min, past_min)
                    if floor_power >= NO_FLOOR:
                        floor_power = min(estimate, first_floor)
                    elif power < floor_power:  # only what is heard now takes the floor down
                        floor_power = max(power, floor_power * fall)
                    elif estimate > floor_power:
                        floor_power = min(estimate, floor_power * rise)
                slot_count += 1
                if slot_count >= slot_len:  # a slot ends: the oldest minimum leaves the window
                    floor_slots[slot_pos] = slot_min
                    slot_pos = (slot_pos + 1) % n_slots
                    past_min = floor_slots[0]
                    for k in range(1, n_slots):
                        if floor_slots[k] < past_min:
                            past_min = floor_slots[k]
                    if slot_min < NO_FLOOR and slot_max <= slot_min * steady and floor_power < past_min:
                        floor_power = past_min  # steady noise: the window's minimum is the room
                    slot_min = NO_FLOOR
                    slot_max = 0.0
                    slot_count = 0
            floor = math.sqrt(floor_power) if floor_power < NO_FLOOR else 0.0  # none yet: the fixed one
            if floor * adapt_lin > thr_lin:
                thr_i_lin = floor * adapt_lin
                close_i_lin = thr_i_lin * hyst_lin
            else:
                thr_i_lin = thr_lin
                close_i_lin = close_lin
        if env >= thr_i_lin:
            is_open = 1
            hold = hold_len
        elif is_open == 1:
            if env >= close_i_lin:
                hold = hold_len
            elif hold > 0:
                hold -= 1
            else:
                is_open = 0
        target = 0.0
        if is_open == 0:
            if thr_i_lin != thr_lin:
                thr_i = _DB20_PER_NEPER * math.log(thr_i_lin)
            else:
                thr_i = thr
            if env > 0.0:
                target = gate_curve(_DB20_PER_NEPER * math.log(env), thr_i, slope, rng)
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
    if not (slot_min >= 0.0 and past_min >= 0.0 and floor_power >= 0.0 and slot_max >= 0.0):
        slot_min = NO_FLOOR  # NaN from a blown-up side-chain: forget the floor
        slot_max = 0.0
        past_min = NO_FLOOR
        floor_power = NO_FLOOR
        floor_slots[:] = NO_FLOOR
    if not (power >= 0.0 and power < NO_FLOOR):
        power = 0.0
    fstate[F_SLOT_MIN] = slot_min
    fstate[F_PAST_MIN] = past_min
    fstate[F_POWER] = power
    fstate[F_FLOOR] = floor_power
    fstate[F_SLOT_MAX] = slot_max
    istate[0] = is_open
    istate[1] = hold
    istate[2] = dp
    istate[3] = slot_count
    istate[4] = slot_pos
    istate[5] = heard_count
    meter[0] = worst
