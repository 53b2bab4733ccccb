"""Dynamics kernels: a feed-forward compressor and a look-ahead true-peak limiter.

Layout, as everywhere in the engine: ``block`` is ``(channels, frames)`` float32, C-contiguous,
processed in place. All state is explicit float64/int64 arrays owned by the Effect; everything
runs sample by sample from state, so the output never depends on the host block size.
Non-finite input samples enter the state as silence and leave as silence; state below
:data:`~hushbridge.dsp.kernels.util.DENORMAL_FLOOR` is flushed to zero.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import DENORMAL_FLOOR, finite_sample, flush_state

# -- compressor ---------------------------------------------------------------------------------
# ramp rows: current, target, per-sample step; columns:
C_THRESHOLD = 0  # threshold, dB
C_SLOPE = 1      # 1 - 1/ratio
C_KNEE = 2       # knee width, dB
C_MAKEUP = 3     # makeup gain, dB
# consts: attack coef, release coef, rms coef, detector (0 peak, 1 rms), freeze depth (dB under
#         the threshold where the gain reduction stops releasing; 0: never), its level's smoothing coef,
#         the coef of the speech's average gain reduction that a frozen one goes to
_LOG10_FLOOR = 1e-30
_DB10_PER_NEPER = 10.0 / math.log(10.0)  # 10*log10(p) == _DB10_PER_NEPER * ln(p)
_NEPER_PER_DB20 = math.log(10.0) / 20.0  # 10**(db/20) == exp(db * _NEPER_PER_DB20)


@njit(cache=True)
def gain_computer(level_db: float, threshold_db: float, slope: float, knee_db: float) -> float:
    """Static curve: gain reduction in dB (>= 0) for a detector level, soft knee of width ``knee_db``.

    ``slope`` is ``1 - 1/ratio``. Below ``threshold - knee/2`` nothing; above
    ``threshold + knee/2`` the ratio; in between the quadratic knee (Giannoulis et al., JAES 2012).
    """
    d = level_db - threshold_db
    if 2.0 * d <= -knee_db:
        return 0.0
    if 2.0 * d < knee_db:
        t = d + 0.5 * knee_db
        return slope * t * t / (2.0 * knee_db)
    return slope * d


@njit(cache=True)
def compressor(
    block: np.ndarray,
    ramp: np.ndarray,
    consts: np.ndarray,
    sc_coefs: np.ndarray,
    sc_state: np.ndarray,
    rms_state: np.ndarray,
    env: np.ndarray,
    meter: np.ndarray,
    keys: np.ndarray,
) -> None:
    """Feed-forward compressor with a linked (max over channels) detector, in place.

    Parameters
    ----------
    ramp : float64 ``(3, 4)``
        Rows current / target / per-sample step of threshold_db, slope, knee_db, makeup_db.
    consts : float64 ``(6,)``
        Attack and release one-pole coefficients, RMS averaging coefficient, detector (0 peak, 1 rms),
        freeze depth in dB (0: off): while the detector, or its power smoothed over ~20 ms, is that
        far under the threshold (frozen) the gain reduction does not release to 0 but goes to its
        average over the last second of speech (a gated compressor: pauses keep the speech's gain,
        and short bursts in them, such as typing or the noise's peaks under the peak detector,
        release nothing); it still rises whenever the level asks for more; that smoothing's
        coefficient; the average's coefficient.
    sc_coefs : float64 ``(5,)``
        Side-chain high-pass ``[b0, b1, b2, a1, a2]``; ``sc_state`` float64 ``(channels, 2)``.
    rms_state : float64 ``(channels,)``
        Mean-square per channel (RMS detector).
    env : float64 ``(4,)``
        Gain-reduction ballistics in dB: release stage (instant attack), then attack stage; the
        freeze test's smoothed power; the gain reduction averaged while not frozen (-1: none yet).
    meter : float64 ``(1,)``
        Receives the block's largest gain reduction in dB.
    keys : float64 ``(channels,)``
        1.0 for a channel the detector listens to, 0.0 for one it ignores (an LFE).
    """
    ch, n = block.shape
    att = consts[0]
    rel = consts[1]
    rc = consts[2]
    rms = consts[3] > 0.5
    freeze = consts[4]
    fc = consts[5]
    avg_c = consts[6]
    held = env[2]
    gavg = env[3]
    b0 = sc_coefs[0]
    b1 = sc_coefs[1]
    b2 = sc_coefs[2]
    a1 = sc_coefs[3]
    a2 = sc_coefs[4]
    thr = ramp[0, C_THRESHOLD]
    slope = ramp[0, C_SLOPE]
    knee = ramp[0, C_KNEE]
    makeup = ramp[0, C_MAKEUP]
    ramping = False
    for k in range(4):
        if ramp[0, k] != ramp[1, k]:
            ramping = True
    # detector power (squared level) below which no gain reduction can happen: skip the log
    floor_pow = 10.0 ** ((thr - 0.5 * knee) / 10.0)
    freeze_pow = 10.0 ** ((thr - freeze) / 10.0) if freeze > 0.0 else -1.0
    y1 = env[0]
    yl = env[1]
    peak_gr = 0.0
    for i in range(n):
        if ramping:
            ramping = False
            for k in range(4):
                cur = ramp[0, k]
                tgt = ramp[1, k]
                if cur != tgt:
                    if cur < tgt:
                        cur = min(cur + ramp[2, k], tgt)
                    else:
                        cur = max(cur - ramp[2, k], tgt)
                    ramp[0, k] = cur
                    ramping = True
            thr = ramp[0, C_THRESHOLD]
            slope = ramp[0, C_SLOPE]
            knee = ramp[0, C_KNEE]
            makeup = ramp[0, C_MAKEUP]
            floor_pow = 10.0 ** ((thr - 0.5 * knee) / 10.0)
            freeze_pow = 10.0 ** ((thr - freeze) / 10.0) if freeze > 0.0 else -1.0
        # detector: side-chain high-pass per channel, linked by taking the loudest channel
        power = 0.0
        for c in range(ch):
            x = finite_sample(block, c, i)
            s1 = sc_state[c, 0]
            s2 = sc_state[c, 1]
            xh = b0 * x + s1
            sc_state[c, 0] = b1 * x - a1 * xh + s2
            sc_state[c, 1] = b2 * x - a2 * xh
            p = xh * xh
            if rms:
                p = rc * rms_state[c] + (1.0 - rc) * p
                rms_state[c] = p
            p *= keys[c]  # a product, not a test: the loop stays branch-light (a test cost 15 %)
            if p > power:
                power = p
        held = fc * held + (1.0 - fc) * power
        # the gain reduction rises whenever the level asks for it; it is released only while the
        # level, now and held over 20 ms, is within freeze_db of the threshold: a pause keeps
        # the gain the speech had from its first quiet sample, and so do short bursts in it
        # (typing: each click released a little, and 3 s of typing got the whole makeup; the
        # peak detector's noise peaks did the same)
        target = 0.0
        if power > floor_pow:
            target = gain_computer(_DB10_PER_NEPER * math.log(max(power, _LOG10_FLOOR)), thr, slope, knee)
        active = power >= freeze_pow and held >= freeze_pow
        if target > y1 or active:
            # ballistics on the gain reduction: release stage with instant attack, then attack stage
            y1 = max(target, rel * y1 + (1.0 - rel) * target)
        if freeze_pow > 0.0:
            if active:
                gavg = y1 if gavg < 0.0 else avg_c * gavg + (1.0 - avg_c) * y1
            elif gavg >= 0.0 and target <= y1:
                # frozen: the gain reduction goes, at the release's pace, to what the speech had
                # on average over the last second, not to what its last syllable left (lower: a
                # pause came up against the phrase) nor to a knock's (higher: the next word
                # started quiet)
                y1 = max(target, rel * y1 + (1.0 - rel) * gavg)
        if y1 > yl:
            yl = att * yl + (1.0 - att) * y1
        else:
            yl = y1
        if yl < DENORMAL_FLOOR:
            yl = 0.0
        if y1 < DENORMAL_FLOOR:
            y1 = 0.0
        if yl > peak_gr:
            peak_gr = yl
        g_db = makeup - yl
        if g_db != 0.0:
            g = np.float32(math.exp(g_db * _NEPER_PER_DB20))
            for c in range(ch):
                block[c, i] *= g
    # guard and flush the state
    flush_state(sc_state)
    flush_state(rms_state)
    if not (math.isfinite(y1) and math.isfinite(yl)):
        y1 = 0.0
        yl = 0.0
    if not (held >= DENORMAL_FLOOR and math.isfinite(held)):
        held = 0.0
    if not math.isfinite(gavg):
        gavg = -1.0
    env[0] = y1
    env[1] = yl
    env[2] = held
    env[3] = gavg
    meter[0] = peak_gr


# -- limiter ------------------------------------------------------------------------------------
# istate: FIR history position, delay-line position, hold deque head, hold deque count,
#         sample clock, box position
L_HIST = 0
L_DELAY = 1
L_HEAD = 2
L_COUNT = 3
L_CLOCK = 4
L_BOX = 5
# fstate: release stage (dB), running box sum (dB)


def true_peak_taps(taps_per_phase: int = 24, oversample: int = 8, beta: float = 7.0) -> np.ndarray:
    """Polyphase interpolator for true-peak estimation: float64 ``(oversample - 1, taps_per_phase)``.

    Row ``p - 1`` gives the value at ``n + p / oversample`` from ``x[n - K/2 + 1 .. n + K/2]``
    (``K = taps_per_phase``, oldest first). Kaiser-windowed sinc, each phase normalised to unity
    DC gain. Phase 0 is the sample itself (the prototype is a Nyquist filter).
    """
    k = int(taps_per_phase)
    if k < 2 or k % 2:
        raise ValueError(f"taps_per_phase must be even and >= 2, got {taps_per_phase!r}")
    p = np.arange(1, oversample, dtype=np.float64)[:, None] / oversample
    j = np.arange(k, dtype=np.float64)[None, :]
    t = k / 2 - 1 - j + p
    w = np.i0(beta * np.sqrt(np.clip(1.0 - (t / (k / 2)) ** 2, 0.0, None))) / np.i0(beta)
    h = np.sinc(t) * w
    return np.ascontiguousarray(h / h.sum(axis=1, keepdims=True))


@njit(cache=True, fastmath=True)
def _abs_weighted_sum(hist: np.ndarray, c: int, base: int, w: np.ndarray) -> float:
    """``sum_j w[j] * |hist[c, base + j]|`` (any summation order: it is only a bound)."""
    acc = 0.0
    for j in range(w.shape[0]):
        acc += w[j] * abs(hist[c, base + j])
    return acc


@njit(cache=True)
def limiter(
    block: np.ndarray,
    taps_t: np.ndarray,
    acc: np.ndarray,
    bound: np.ndarray,
    l1: float,
    hist: np.ndarray,
    dline: np.ndarray,
    dq_val: np.ndarray,
    dq_idx: np.ndarray,
    box: np.ndarray,
    istate: np.ndarray,
    fstate: np.ndarray,
    consts: np.ndarray,
    meter: np.ndarray,
) -> None:
    """Look-ahead true-peak limiter, in place; the output is the input delayed by ``dline.shape[1]``.

    Per input sample the true peak of the *input* is estimated on an oversampled grid (``taps``,
    see :func:`true_peak_taps`; the estimate lags ``K/2`` samples) across all channels, giving the
    gain needed (dB) to stay under the ceiling. That requirement goes through a sliding-window
    minimum of ``H = len(dq_val)`` samples (hold), a one-pole release in dB (instant attack), and a
    moving average of ``B = len(box)`` samples (the attack ramp). With the delay ``D``,
    ``B - 1 <= D - W - K/2`` and ``H - 1 >= D + W - K/2`` the applied gain is at or below every
    requirement for ``W`` samples either side of each peak, so the interpolated output stays
    under the ceiling.

    Parameters
    ----------
    taps_t : float64 ``(K, phases)``, the interpolator's phases as columns (any number of them, e.g.
        two interpolators stacked: the largest |value| over all counts), so the inner loop runs
        over contiguous phases and vectorizes; acc : float64 ``(phases,)`` scratch;
        bound : float64 ``(K,)`` ``max_p |taps[p, j]|``, for a per-sample
        bound that skips the interpolation where no phase can reach the ceiling (same result);
        l1 : largest ``sum |taps|`` of a phase (for the quiet bypass).
    hist : float64 ``(channels, 2K)`` FIR history, written twice so the last ``K`` are contiguous.
    dline : float32 ``(channels, D)`` audio delay line.
    dq_val, dq_idx : float64 / int64 ``(H,)`` monotonic deque of the hold.
    box : float64 ``(B,)`` ring of the moving average.
    istate : int64 ``(6,)``; fstate : float64 ``(2,)``; consts : float64 ``[ceiling_db, release_coef]``.
    meter : float64 ``(1,)`` receives the block's largest gain reduction in dB.
    """
    ch, n = block.shape
    k = taps_t.shape[0]
    phases = taps_t.shape[1]
    half = k // 2
    dlen = dline.shape[1]
    hlen = dq_val.shape[0]
    blen = box.shape[0]
    ceil_db = consts[0]
    rel = consts[1]
    ceil_lin = 10.0 ** (ceil_db / 20.0)
    hp = istate[L_HIST]
    dp = istate[L_DELAY]
    head = istate[L_HEAD]
    count = istate[L_COUNT]
    clock = istate[L_CLOCK]
    bp = istate[L_BOX]
    e_db = fstate[0]
    bsum = fstate[1]

    # Quiet bypass: if no sample in the FIR history or this block can reach the ceiling even
    # through the worst-case interpolation gain, every requirement is exactly 0 dB.
    loudest = 0.0
    for c in range(ch):
        for j in range(k):
            a = abs(hist[c, j])
            if a > loudest:
                loudest = a
        for i in range(n):
            a = abs(np.float64(block[c, i]))
            if a > loudest:
                loudest = a
    quiet = loudest * l1 * (1.0 + 1e-9) < ceil_lin  # margin covers rounding in the FIR sums

    max_gr = 0.0
    for i in range(n):
        peak = 0.0
        for c in range(ch):
            x = np.float64(block[c, i])
            if not math.isfinite(x):
                x = 0.0
            hist[c, hp] = x
            hist[c, hp + k] = x
            if not quiet:
                base = hp + 1  # hist[c, base:base+k] = last k inputs, oldest first
                a = abs(hist[c, base + half - 1])
                if a > peak:
                    peak = a
                # no phase can exceed sum_j max_p|taps[p, j]| * |x_j|: when that bound stays under
                # the ceiling, the phases cannot change the requirement, so skip them (exact)
                if _abs_weighted_sum(hist, c, base, bound) * (1.0 + 1e-9) >= ceil_lin:
                    for p in range(phases):
                        acc[p] = 0.0
                    for j in range(k):  # each phase summed in j order, as one dot product would
                        xj = hist[c, base + j]
                        for p in range(phases):
                            acc[p] += taps_t[j, p] * xj
                    for p in range(phases):
                        a = abs(acc[p])
                        if a > peak:
                            peak = a
            # audio delay line
            out = dline[c, dp]
            dline[c, dp] = np.float32(x)
            block[c, i] = out
        hp += 1
        if hp == k:
            hp = 0
        dp += 1
        if dp == dlen:
            dp = 0
        req = 0.0
        if peak > ceil_lin:
            req = ceil_db - 20.0 * math.log10(peak)
        # hold: sliding-window minimum over the last hlen requirements (monotonic deque)
        while count > 0 and dq_idx[head] <= clock - hlen:
            head += 1
            if head == hlen:
                head = 0
            count -= 1
        while count > 0:
            back = head + count - 1
            if back >= hlen:
                back -= hlen
            if dq_val[back] >= req:
                count -= 1
            else:
                break
        slot = head + count
        if slot >= hlen:
            slot -= hlen
        dq_val[slot] = req
        dq_idx[slot] = clock
        count += 1
        clock += 1
        h = dq_val[head]
        # release (instant attack), in dB
        e_db = min(h, rel * e_db + (1.0 - rel) * h)
        if h == 0.0 and e_db > -1e-6:  # 1e-6 dB: below float32 resolution
            e_db = 0.0
        # attack ramp: moving average of blen values, exact sum recomputed once per lap
        bsum += e_db - box[bp]
        box[bp] = e_db
        bp += 1
        if bp == blen:
            bp = 0
            bsum = 0.0
            for j in range(blen):
                bsum += box[j]
        g_db = min(bsum / blen, 0.0)
        if g_db < 0.0:
            g = np.float32(10.0 ** (g_db / 20.0))
            for c in range(ch):
                block[c, i] *= g
            if -g_db > max_gr:
                max_gr = -g_db
    if not (math.isfinite(e_db) and math.isfinite(bsum)):
        e_db = 0.0
        bsum = 0.0
    istate[L_HIST] = hp
    istate[L_DELAY] = dp
    istate[L_HEAD] = head
    istate[L_COUNT] = count
    istate[L_CLOCK] = clock
    istate[L_BOX] = bp
    fstate[0] = e_db
    fstate[1] = bsum
    meter[0] = max_gr
