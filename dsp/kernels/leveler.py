"""Leveler (slow speech AGC) kernel, gated by a speech-activity detector.

Per sample (:func:`leveler`), all state explicit, so the output never depends on the block size:

1. K-weighting per channel (BS.1770 pre-filter: high shelf +4 dB at 1.5 kHz and a 38 Hz
   high-pass, designed for the actual sample rate) and two mean squares: a short one
   (:data:`SHORT_MS`) for activity and a slow one (:data:`LEVEL_MS`) for the level. Channel
   powers are summed as in BS.1770; levels are in LUFS (``-0.691 + 10 log10``).
2. Noise floor: follows the short level down at once (not below :data:`FLOOR_MIN_LUFS`) and
   rises at :data:`FLOOR_RISE_DB_S`.
   It starts at the first short level once :data:`WARMUP_MS` have passed.
3. Activity: short level above ``floor + activity_db``, above :data:`ABS_GATE_LUFS`, and no more
   than :data:`RELATIVE_GATE_DB` below the speech reference: the loudest short level while active,
   reached with a :data:`REF_RISE_MS` time constant (in dB) and falling at :data:`REF_FALL_DB_S`
   (a relative gate, as BS.1770's for loudness). The slow rise is for a door slam or a cough at
   the start of a take: taken at once as the reference, it put a quiet voice 20 dB under it out
   of the gate for 15 s. Keyboard clicks
   or a door in a pause clear the noise floor by far but sit 25-30 dB under the voice: without
   it the level integrated them and the gain climbed toward the target in every pause; a second
   speaker 12 dB quieter still counts.
4. Digital silence (every channel exactly 0) for :data:`REARM_MS` or longer, while no voice is
   remembered (none heard since the reset, or the speech reference has fallen back to
   :data:`FLOOR_MIN_LUFS`, about a minute after the last word), carries no room: it puts the
   detector back where a reset puts it (K-weighting and short mean square cleared, floor
   forgotten, warm-up again from the first sample after it; the gain and slow level hold). So a
   live engine that idled on silence treats the first words it hears as a file's first words
   are treated offline, and a microphone unmuted into room tone sets the floor there instead of
   counting the room as speech while the floor climbs from -90 LUFS. Between phrases of a
   gated source (exact zeros in its pauses) nothing restarts: the remembered voice keeps the
   relative gate working, and the output is the same as with a faint floor in the pauses.
   While a voice is remembered, :data:`SILENCE_MS` or more of exact zeros (an edit on a
   timeline, a gated source's pause) hold the noise floor, and so does the first
   :data:`WARMUP_MS` of sound after them (the short level rising again from nothing): they say
   nothing about the room. The floor used to fall to -90 LUFS in an edit's zeros, and the room
   tone after the edit passed for speech until the floor had climbed back (9.5 dB of gain on a
   real fan 15 dB under the voice, in 4 s).
5. Only while active: the slow mean square integrates (so pauses do not drag the level down),
   and the gain (dB) moves toward ``target - level``, clamped to ``[-max_cut, +max_gain]``, by a
   one pole of time constant ``time_s``. In pauses the gain is frozen: the noise floor is not
   pumped up. Within the first :data:`FAST_WINDOW_S` of speech since the reset (or the re-arm
   of 4), for up to :data:`FAST_START_S`, a gain that has to rise moves with
   :data:`FAST_TIME_S` (or ``time_s`` if shorter): a quiet take's first words get its gain, not
   the 0 dB a reset leaves. Cuts always take ``time_s`` (a cough at the start is not the level).
6. The first voice: until a voice has been heard since the reset (or the re-arm of 4), activity
   also needs voicing: :data:`VOICED_HOPS` 5 ms hops in a row whose normalised autocorrelation
   (the channels' weighted sum, band-passed 50 Hz-1 kHz and decimated to about 8 kHz, 25 ms window;
   hops counted from where the level first says active, so where a stream started does not move them)
   peaks over :data:`VOICED_R` at a lag of a 70-400 Hz pitch, past its first zero crossing (so
   rumble, whose autocorrelation stays positive, does not pass; the 50 Hz high-pass keeps a DC
   offset from holding it positive too: a LibriSpeech file with one 0 dB over its speech was
   taken for a whisper, its first 2 s unlevelled). Half a second of breath or
   murmur before the first word, 10 dB over the room and 30 dB under the voice, had passed for
   speech: the fast start lifted it 10 dB, and the voice that followed came out 8-10 dB hot until
   ``time_s`` brought it down (a VCTK take at -12.3 LUFS for a -20 target). A cough or a knock
   before the first word is no voice either. A take that is never voiced (a whisper) counts as a
   voice after :data:`WHISPER_S` of activity. Once a voice is heard the analysis stops (it costs
   nothing after the first word) and activity is as in 3.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import DENORMAL_FLOOR, finite_sample, flush_state

SHORT_MS = 50.0
LEVEL_MS = 400.0
FLOOR_RISE_DB_S = 3.0
WARMUP_MS = 150.0
ABS_GATE_LUFS = -70.0
FLOOR_MIN_LUFS = -90.0
RELATIVE_GATE_DB = 20.0
REF_FALL_DB_S = 1.0
REF_RISE_MS = 500.0  # the reference climbs toward a louder level with this time constant (in dB)
REARM_MS = 500.0
SILENCE_MS = 10.0  # exact zeros this long are digital silence (a 16-bit room has single zero samples)
FAST_START_S = 1.0  # of lifting with FAST_TIME_S ...
FAST_WINDOW_S = 5.0  # ... within the first this much speech heard since the reset
FAST_TIME_S = 0.3
VOICED_R = 0.65  # periodicity of a voiced hop (speech in fan noise at 5 dB SNR: 12-26 % of hops in runs of 3)
VOICED_HOPS = 3  # in a row (a ceiling fan's blade tone: 0.8 % of its hops at 0.7)
WHISPER_S = 2.0
VOICE_RATE = 8000.0  # about: the voicing analysis's rate after decimation
VOICE_LP_HZ = 1000.0
VOICE_HP_HZ = 50.0
VOICE_WIN_S = 0.025
VOICE_HOP_S = 0.005
VOICE_F0_MIN = 70.0
VOICE_F0_MAX = 400.0
# consts: target, max_gain, max_cut, gain coef, short coef, level coef, floor rise per sample,
#         activity margin, warm-up samples, speech reference fall per sample, re-arm samples,
#         the fast start's gain coef and samples of lift, samples of zeros that are silence, the
#         reference's rise coef, the fast start's window (samples of speech)
V_TARGET = 0
V_MAX_GAIN = 1
V_MAX_CUT = 2
V_GAIN_COEF = 3
V_SHORT = 4
V_LEVEL = 5
V_RISE = 6
V_MARGIN = 7
V_WARMUP = 8
V_REF_FALL = 9
V_REARM = 10
V_FAST_COEF = 11
V_FAST_LEN = 12
V_SILENCE = 13
V_REF_RISE = 14
V_FAST_WINDOW = 15
V_DECIM = 16  # the voicing analysis: decimation factor, hop, window and lags (decimated samples),
V_VHOP = 17   # samples of unvoiced activity that count as a voice (a whisper)
V_VWIN = 18
V_TMIN = 19
V_TMAX = 20
V_WHISPER = 21
V_CONSTS = 22
# fstate: gain_db, floor_db, slow level mean square (summed), samples since reset, active (0/1),
#         speech reference (dB, -inf before the first speech)
F_GAIN = 0
F_FLOOR = 1
F_LEVEL = 2
F_COUNT = 3
F_ACTIVE = 4
F_REF = 5
F_ZEROS = 6  # samples of digital silence in a row
F_HEARD = 7  # samples of speech (active) since the reset, up to the fast start's window
F_SETTLE = 8  # samples after a digital silence during which the floor holds
F_LIFTED = 9  # samples the fast start has lifted, up to its length
F_VOICE = 10  # 1 once a voice is heard since the reset
F_PHASE = 11  # the voicing analysis: samples to the next decimated one, ring write index,
F_RPOS = 12   # decimated samples since the last hop, voiced hops in a row, samples of
F_VHOPC = 13  # unvoiced activity before the first voice
F_VRUN = 14
F_UNVOICED = 15
F_SOUNDING = 16  # active by level alone (1., 3.) at the last sample, before the first voice
F_SIZE = 17
_DB10_PER_NEPER = 10.0 / math.log(10.0)
_NEPER_PER_DB20 = math.log(10.0) / 20.0


def voice_ring_size(sample_rate: float) -> tuple[int, int, int, int, int, int]:
    """(decimation, hop, window, min lag, max lag, ring length) of the voicing analysis."""
    decim = max(1, int(round(sample_rate / VOICE_RATE)))
    rate = sample_rate / decim
    win = int(round(VOICE_WIN_S * rate))
    tmax = int(math.ceil(rate / VOICE_F0_MIN))
    return decim, int(round(VOICE_HOP_S * rate)), win, int(rate / VOICE_F0_MAX), tmax, win + tmax + 1


@njit(cache=True)
def _periodicity(ring: np.ndarray, pos: int, win: int, tmin: int, tmax: int) -> float:
    """Peak normalised autocorrelation of the latest ``win`` samples of ``ring`` (written up to
    ``pos``) at lags ``tmin..tmax``, searched past its first zero crossing; 0 without one."""
    size = ring.shape[0]
    e0 = 0.0
    for k in range(win):
        v = ring[(pos - 1 - k) % size]
        e0 += v * v
    if e0 <= 1e-18:
        return 0.0
    et = e0  # energy of the window lagged by t, kept by a running sum
    best = 0.0
    crossed = False
    for t in range(1, tmax + 1):
        old = ring[(pos - t) % size]
        new = ring[(pos - t - win) % size]
        et += new * new - old * old
        acc = 0.0
        for k in range(win):
            acc += ring[(pos - 1 - k) % size] * ring[(pos - 1 - k - t) % size]
        r = acc / math.sqrt(e0 * max(et, 1e-30))
        if not crossed:
            crossed = r < 0.0
        elif t >= tmin and r > best:
            best = r
    return best


@njit(cache=True)
def leveler(
    block: np.ndarray,
    consts: np.ndarray,
    kw_coefs: np.ndarray,
    kw_state: np.ndarray,
    ms_short: np.ndarray,
    fstate: np.ndarray,
    meter: np.ndarray,
    weights: np.ndarray,
    voice_coefs: np.ndarray,
    voice_state: np.ndarray,
    voice_ring: np.ndarray,
) -> None:
    """Level ``block`` (channels, frames) float32 in place.

    Parameters
    ----------
    consts : float64 ``(V_CONSTS,)``, see the ``V_*`` indices.
    kw_coefs : float64 ``(2, 5)`` K-weighting stages; kw_state : float64 ``(channels, 2, 2)``.
    ms_short : float64 ``(channels,)`` short mean squares (K-weighted).
    fstate : float64 ``(F_SIZE,)``, see the ``F_*`` indices.
    meter : float64 ``[gain_db, level_lufs, floor_lufs, active]`` after the block.
    weights : float64 ``(channels,)`` each channel's BS.1770 weight in the level (0.0: an LFE).
    voice_coefs : float64 ``(stages, 5)`` the voicing analysis's filter; voice_state : float64
    ``(stages, 2)``; voice_ring : float64 ``(ring length,)`` (:func:`voice_ring_size`).
    """
    ch, n = block.shape
    target = consts[V_TARGET]
    max_gain = consts[V_MAX_GAIN]
    max_cut = consts[V_MAX_CUT]
    gc = consts[V_GAIN_COEF]
    sc = consts[V_SHORT]
    lc = consts[V_LEVEL]
    rise = consts[V_RISE]
    margin = consts[V_MARGIN]
    warmup = consts[V_WARMUP]
    ref_fall = consts[V_REF_FALL]
    ref_rise = consts[V_REF_RISE]
    rearm = consts[V_REARM]
    fast_coef = min(consts[V_FAST_COEF], gc)
    fast_len = consts[V_FAST_LEN]
    heard = fstate[F_HEARD]
    lifted = fstate[F_LIFTED]
    fast_window = consts[V_FAST_WINDOW]
    settle = fstate[F_SETTLE]
    silence = consts[V_SILENCE]
    zeros = fstate[F_ZEROS]
    ref = fstate[F_REF]
    g_db = fstate[F_GAIN]
    floor = fstate[F_FLOOR]
    level = fstate[F_LEVEL]
    count = fstate[F_COUNT]
    active = fstate[F_ACTIVE]
    voice = fstate[F_VOICE]
    sounding = fstate[F_SOUNDING]
    phase = fstate[F_PHASE]
    rpos = int(fstate[F_RPOS])
    vhopc = fstate[F_VHOPC]
    vrun = fstate[F_VRUN]
    unvoiced = fstate[F_UNVOICED]
    decim = consts[V_DECIM]
    vhop = consts[V_VHOP]
    vwin = int(consts[V_VWIN])
    tmin = int(consts[V_TMIN])
    tmax = int(consts[V_TMAX])
    whisper = consts[V_WHISPER]
    rsize = voice_ring.shape[0]
    gain = np.float32(math.exp(g_db * _NEPER_PER_DB20))
    for i in range(n):
        silent = True
        for c in range(ch):
            if finite_sample(block, c, i) != 0.0:
                silent = False
        if silent:
            if zeros < rearm:
                zeros += 1.0
            if zeros >= rearm and ref <= FLOOR_MIN_LUFS:  # a reset's detector state (the gain holds)
                if count > 0.0:  # the first sample of the re-arm: the voicing analysis starts afresh
                    voice_ring[:] = 0.0
                    voice_state[:] = 0.0
                    phase = 0.0
                    vhopc = 0.0
                kw_state[:] = 0.0
                ms_short[:] = 0.0
                count = 0.0
                floor = 0.0
                active = 0.0
                ref = FLOOR_MIN_LUFS
                heard = 0.0
                lifted = 0.0
                settle = 0.0
                voice = 0.0
                vrun = 0.0
                unvoiced = 0.0
                sounding = 0.0
                continue
        else:
            if zeros >= silence and count >= warmup:  # sound after digital silence: the short level
                settle = warmup                           # settles first (after a re-arm, the warm-up does)
            zeros = 0.0
        short = 0.0
        for c in range(ch):
            x = finite_sample(block, c, i)
            for s in range(2):
                y = kw_coefs[s, 0] * x + kw_state[c, s, 0]
                kw_state[c, s, 0] = kw_coefs[s, 1] * x - kw_coefs[s, 3] * y + kw_state[c, s, 1]
                kw_state[c, s, 1] = kw_coefs[s, 2] * x - kw_coefs[s, 4] * y
                x = y
            p = sc * ms_short[c] + (1.0 - sc) * x * x
            ms_short[c] = p
            short += weights[c] * p
        if voice < 0.5 and not silent:  # listening for the first voice (6.); digital silence is
            # skipped, so its hop grid starts at the first sound, offline or after a live idle
            x = 0.0
            for c in range(ch):
                x += weights[c] * block[c, i]
            for s in range(voice_coefs.shape[0]):
                y = voice_coefs[s, 0] * x + voice_state[s, 0]
                voice_state[s, 0] = voice_coefs[s, 1] * x - voice_coefs[s, 3] * y + voice_state[s, 1]
                voice_state[s, 1] = voice_coefs[s, 2] * x - voice_coefs[s, 4] * y
                x = y
            phase += 1.0
            if phase >= decim:
                phase = 0.0
                voice_ring[rpos] = x
                rpos = rpos + 1 if rpos + 1 < rsize else 0
                vhopc += 1.0
                if vhopc >= vhop:
                    vhopc = 0.0
                    if sounding > 0.5 and _periodicity(voice_ring, rpos, vwin, tmin, tmax) > VOICED_R:
                        vrun += 1.0
                    else:
                        vrun = 0.0
        if count < warmup:
            count += 1.0
            active = 0.0
        else:
            short_db = -0.691 + _DB10_PER_NEPER * math.log(max(short, 1e-20))
            if count == warmup:
                count += 1.0
                floor = short_db
            if zeros >= silence:  # digital silence says nothing about the room: the floor holds
                pass
            elif settle > 0.0:  # nor does the short level rising again from it
                settle -= 1.0
            elif short_db < floor:
                floor = max(short_db, FLOOR_MIN_LUFS)
            else:
                floor += rise
            active = 1.0 if (short_db > floor + margin and short_db > ABS_GATE_LUFS
                             and short_db > ref - RELATIVE_GATE_DB) else 0.0
            if voice < 0.5:
                if active > 0.5 and sounding < 0.5:
                    # the analysis's grid starts where the sound does (not where the stream did: a
                    # live engine's idle, a model's residue before it, shift that), one hop now
                    phase = decim - 1.0
                    vhopc = vhop - 1.0
                    vrun = 0.0
                sounding = active
            if active > 0.5 and voice < 0.5:  # before the first voice, sound is not speech unless voiced
                if vrun >= VOICED_HOPS or unvoiced >= whisper:
                    voice = 1.0
                else:
                    unvoiced += 1.0
                    active = 0.0
            if active > 0.5 and short_db > ref:  # by a time constant: a door slam is not the voice
                ref = short_db + ref_rise * (ref - short_db)
            elif ref > FLOOR_MIN_LUFS:
                ref -= ref_fall
            if active > 0.5:
                if level <= 0.0:
                    level = short  # first speech: start the slow level where it is
                level = lc * level + (1.0 - lc) * short
                level_db = -0.691 + _DB10_PER_NEPER * math.log(max(level, 1e-20))
                want = min(max(target - level_db, -max_cut), max_gain)
                if heard < fast_window:
                    heard += 1.0
                if want > g_db and lifted < fast_len and heard < fast_window:  # a quiet take's first words
                    lifted += 1.0
                    g_db = fast_coef * g_db + (1.0 - fast_coef) * want
                else:  # cuts always take time_s: a door slam or a cough is not the voice's level
                    g_db = gc * g_db + (1.0 - gc) * want
                if abs(g_db) < 1e-9:
                    g_db = 0.0
                gain = np.float32(math.exp(g_db * _NEPER_PER_DB20))
        if g_db != 0.0:
            for c in range(ch):
                block[c, i] *= gain
    flush_state(kw_state)
    flush_state(ms_short)
    if not (math.isfinite(g_db) and math.isfinite(level) and math.isfinite(floor) and math.isfinite(ref)):
        g_db = 0.0
        level = 0.0
        floor = 0.0
        ref = FLOOR_MIN_LUFS
    if level < DENORMAL_FLOOR:
        level = 0.0
    fstate[F_GAIN] = g_db
    fstate[F_FLOOR] = floor
    fstate[F_LEVEL] = level
    fstate[F_REF] = ref
    fstate[F_COUNT] = count
    fstate[F_ACTIVE] = active
    fstate[F_ZEROS] = zeros
    fstate[F_HEARD] = heard
    fstate[F_LIFTED] = lifted
    fstate[F_SETTLE] = settle
    fstate[F_VOICE] = voice
    fstate[F_SOUNDING] = sounding
    fstate[F_PHASE] = phase
    fstate[F_RPOS] = rpos
    fstate[F_VHOPC] = vhopc
    fstate[F_VRUN] = vrun
    fstate[F_UNVOICED] = unvoiced
    flush_state(voice_state)
    meter[0] = g_db
    meter[1] = -0.691 + _DB10_PER_NEPER * math.log(max(level, 1e-20))
    meter[2] = floor
    meter[3] = active
