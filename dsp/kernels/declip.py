"""De-clipper kernel: detect clipped runs, rebuild them by least-squares AR interpolation.

Per channel and sample, in order (so the output never depends on the block size):

1. **Detect.** A running peak ``M`` (instant attack, slow release) of each half-wave sets its clip
   threshold ``T = M * thr`` (a clip on one rail only is found although the other half-wave peaks
   higher). A *clipped run* is two or more consecutive samples at or above ``T`` with the
   same sign that are flat (each within ``flat * M`` of the previous one, ``flat`` = the
   ``flatness_pct`` parameter, 1e-6 by default): what a hard clip
   (converter rail, integer overflow guard, ``np.clip``) leaves, entered and left with a real step
   (a smooth natural peak that quantisation made flat is not one), at a level the signal had
   reached before, with the largest magnitude unchanged for ``settle`` samples (a clip level is
   hit again and again and never exceeded; a quiet onset whose rising maxima repeat a quantised
   value is not clipped; so the runs in the first 50 ms after a recording first clips are left
   as they are), at the level of the previous such run on the same half-wave (a rail is hit at
   one level; the first run at a level only marks it). Runs longer than ``max_run`` are
   left alone and counted. Soft saturation (``tanh``-like) leaves no flat runs; it is detected from
   the amplitude distribution: over each analysis window the share of samples above 0.9 Mf among
   those above 0.5 Mf (Mf: a fast-release peak, so each phrase is judged against its own peaks),
   which grows as a curve flattens the tops of the waveform. It is a heuristic: natural speech
   with dense, even peaks can read like mild saturation.
2. **Rebuild.** Once ``P`` samples after a run are in, the run is re-estimated by the
   least-squares AR interpolation of Janssen, Veldhuis & Vries (IEEE ASSP 1986): estimate an AR(p)
   model from the window ``[start - P, end + P)`` (from the known samples, then again from the
   rebuilt window), and choose the missing samples that minimise the summed squared prediction
   error over the window; other flagged samples in the window are solved for too. The rebuilt
   samples keep at least the clipped magnitude (the true signal went past the clip level).
3. **Desaturate.** Once a window has been judged soft-saturated, the output goes through the inverse
   of a ``tanh`` curve, ``y -> C atanh(tanh(k) y / C) / k`` with ``C`` the largest magnitude seen (so
   peaks keep their level and everything below them regains the dynamics the curve took away). The
   drive ``k`` is estimated blind and causally: for each drive of a fixed grid the inverse of the
   *input* is high-passed (4 kHz, or 0.4 of the rate) and its high-band share of energy is
   accumulated (decaying per window). A saturating curve adds harmonics that the right inverse
   removes again, while for a tanh the inverses with larger drives differ from the right one little
   more than by a gain, so the share falls until the true drive and then stays flat; the smallest
   drive within ``SOFT_TOL_DB`` of the lowest share is chosen at every window's end (a change is
   crossfaded). The inverse engages when a window is judged soft-saturated, or when the estimate
   reaches ``ENGAGE_DRIVE`` in a window whose amplitude statistic is at least ``ENGAGE_RATIO`` of
   the detector's threshold; it then follows the estimate until that falls to 0 (no drive makes
   the signal cleaner), after which it takes a new detection again. Samples that the curve
   squashed into the last float32 steps below ``C`` cannot be told apart any more; the inverse is
   capped there.
4. **Delay.** The output is the input delayed by ``D = max_run + P`` samples, so every run is
   rebuilt before its first sample leaves.

All state lives in arrays owned by the Effect; nothing is allocated per call.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import DENORMAL_FLOOR

ORDER = 48          # largest AR model order: at 48 kHz (24 gave 1.1-1.3 dB less SNR at -6..-12 dBFS clips)
MIN_ORDER = 24      # ... scaled with the rate (a span of 1 ms), never below this
EDGE_SLOPE = 1e-3   # ... and the signal enters and leaves it with a step of at least this share
QUEUE = 64          # pending runs per channel
MIN_CLIP = 10.0 ** (-50.0 / 20.0)  # no clip sits this low (the first LSBs of a quiet start do repeat)
CONSTRAIN_PASSES = 1  # re-solves with the samples that came out under the clip level held at it
AR_PASSES = 2         # AR fits: from the known samples, then (if 2) again from the rebuilt window
SOFT_TOL_DB = 0.1   # the smallest drive whose high-band share is within this of the lowest is chosen
ENGAGE_DRIVE = 4.0  # a drive estimate this strong engages the inverse when the amplitude statistic
ENGAGE_RATIO = 0.7  # ... is at least this share of the detector's threshold
SOFT_DECAY = 0.7    # the drive statistics of earlier windows decay by this factor per window
U_MAX = 0.9999999   # cap of tanh(k) y / C before atanh (float32 resolution of a squashed peak)
# per-drive state columns (soft array, (channels, drives, N_SD))
S_Z1 = 0            # high-pass state
S_Z2 = 1
S_HF = 2            # accumulated high-band energy of the inverse
S_ALL = 3           # accumulated energy of the inverse
N_SD = 4

# per-channel istate columns
C_RUN_START = 0     # absolute index of the open run's first sample (-1: none)
C_RUN_LEN = 1
C_RUN_SIGN = 2
C_Q_HEAD = 3
C_Q_COUNT = 4
C_WIN_N = 5         # samples in the current soft-saturation window
C_WIN_MID = 6       # ... at or above 0.5 M
C_WIN_HI = 7        # ... at or above 0.9 M (not part of a hard-clipped run)
C_MAX_AGE = 8       # samples since the largest magnitude was last raised
C_XF = 9            # samples left in a drive crossfade
C_MAX_AGE_NEG = 10  # the same for the largest negative magnitude (C_MAX_AGE: positive)
N_CI = 11
# per-channel fstate columns
C_PEAK = 0          # running peak M of the positive half-wave
C_PREV = 1          # previous input sample
C_ENTRY = 2         # step into the open run
C_SEEN = 3          # whether the open run's level had been reached before it (1.0 / 0.0)
C_MAX = 4           # largest magnitude since the reset (no release)
C_FAST = 5          # fast-release peak (soft-saturation statistics)
C_DRIVE = 6         # drive of the inverse curve applied (0: none)
C_DRIVE_OLD = 7     # drive being crossfaded from
C_PEAK_NEG = 8      # running peak M of the negative half-wave
C_MAX_POS = 9       # largest positive sample since the reset
C_MAX_NEG = 10      # largest negative magnitude since the reset
C_RAIL_POS = 11     # level of the last clip-shaped run on the positive half-wave (0: none yet)
C_RAIL_NEG = 12     # ... on the negative half-wave
C_DC = 13           # running mean (DC offset) that the soft-saturation statistics leave out
N_CF = 14
# global counters (int64)
G_CLOCK = 0         # samples seen per channel
G_REPAIRED = 1      # runs rebuilt
G_TOO_LONG = 2      # runs longer than max_run, left as they were
G_SOFT = 3          # analysis windows judged soft-saturated
G_NONFINITE = 4     # NaN/Inf input samples (replaced by silence)
G_SAMPLES = 5       # samples rebuilt
G_DESAT = 6         # samples passed through the inverse curve
N_G = 7
# consts (float64)
K_THR = 0           # threshold as a share of the running peak
K_REL = 1           # peak release coefficient per sample
K_MAXRUN = 2        # longest run rebuilt (samples, <= allocated)
K_SOFT_WIN = 3      # soft-saturation analysis window (samples)
K_SOFT_RATIO = 4    # share above which a window counts as soft-saturated
K_SETTLE = 5        # the largest magnitude must have held this long (samples) before a run counts
K_FAST_REL = 6      # release coefficient of the fast peak
K_HP_B0 = 7         # high-pass biquad of the drive estimate (b0, b1, b2, a1, a2)
K_HP_B1 = 8
K_HP_B2 = 9
K_HP_A1 = 10
K_HP_A2 = 11
K_XFADE = 12        # drive crossfade length (samples)
K_DESAT = 13        # 1.0: invert detected soft saturation, 0.0: only detect
K_ORDER = 14        # AR model order
K_DC = 15           # coefficient of the running mean (per sample)
K_FLAT = 16         # successive samples of a clipped run differ by at most this share of the peak
N_K = 17


@njit(cache=True)
def _levinson(r: np.ndarray, p: int, a: np.ndarray, tmp: np.ndarray) -> None:
    """AR coefficients ``a[0..p]`` (``a[0] = 1``) from autocorrelation ``r[0..p]`` (Levinson-Durbin)."""
    for i in range(p + 1):
        a[i] = 0.0
    a[0] = 1.0
    err = r[0]
    if err <= 0.0:
        return
    for i in range(1, p + 1):
        acc = r[i]
        for j in range(1, i):
            acc += a[j] * r[i - j]
        k = -acc / err
        for j in range(i + 1):
            tmp[j] = a[j]
        for j in range(1, i):
            a[j] = tmp[j] + k * tmp[i - j]
        a[i] = k
        err *= 1.0 - k * k
        if err <= r[0] * 1e-12:
            break


@njit(cache=True)
def _ar_estimate(x: np.ndarray, unknown: np.ndarray, w: int, p: int, use_all: bool,
                 r: np.ndarray, a: np.ndarray, tmp: np.ndarray) -> None:
    """AR(p) fit of ``x[:w]``: from the known samples only, or (``use_all``) from every sample."""
    for k in range(p + 1):
        acc = 0.0
        cnt = 0
        for n in range(w - k):
            if use_all or (unknown[n] == 0 and unknown[n + k] == 0):
                acc += x[n] * x[n + k]
                cnt += 1
        r[k] = acc * (w - k) / (cnt * w) if cnt > 0 else 0.0
    r[0] *= 1.0 + 1e-6  # white-noise correction keeps the normal equations well conditioned
    r[0] += 1e-20
    for k in range(1, p + 1):  # mild lag window
        g = 0.5 * (k / (p + 1.0)) ** 2
        r[k] *= math.exp(-g)
    _levinson(r, p, a, tmp)


@njit(cache=True)
def _lsar(x: np.ndarray, unknown: np.ndarray, idx: np.ndarray, nu: int, w: int, p: int, a: np.ndarray,
          ek: np.ndarray, band: np.ndarray, rhs: np.ndarray, ra: np.ndarray) -> bool:
    """Solve for ``x[idx[:nu]]`` minimising the AR prediction error over the window; in place.

    The normal matrix couples two unknowns only when they lie within ``p`` samples of each other,
    and ``idx`` ascends, so it is banded with half-width ``p`` in unknown order: it is built and
    factored in band storage, ``band[i, d]`` = entry ``(i, i - d)``. That is O(nu p^2) where a dense
    Cholesky was O(nu^3) (a long run beside others: 10 ms in one 128-frame block), with the same
    result, since the Cholesky factor of a band matrix holds exact zeros outside the band.
    """
    # prediction error of the known samples alone
    for n in range(p, w):
        acc = 0.0
        for i in range(p + 1):
            j = n - i
            if unknown[j] == 0:
                acc += a[i] * x[j]
        ek[n] = acc
    # the normal matrix sum_n a[n - ju] a[n - jv] is the autocorrelation of ``a`` at lag |ju - jv|
    # wherever the window does not cut the sum short (unknowns at least p from both ends)
    for k in range(p + 1):
        acc = 0.0
        for i in range(p + 1 - k):
            acc += a[i] * a[i + k]
        ra[k] = acc
    for u in range(nu):
        ju = idx[u]
        acc = 0.0
        for n in range(max(p, ju), min(w - 1, ju + p) + 1):
            acc += a[n - ju] * ek[n]
        rhs[u] = -acc
        inner_u = p <= ju <= w - 1 - p
        for v in range(max(0, u - p), u + 1):
            jv = idx[v]
            lag = ju - jv
            if lag > p:
                s = 0.0
            elif inner_u and p <= jv <= w - 1 - p:
                s = ra[lag]
            else:
                lo = max(p, ju)
                hi = min(w - 1, jv + p)
                s = 0.0
                for n in range(lo, hi + 1):
                    s += a[n - ju] * a[n - jv]
            band[u, u - v] = s
    energy = 0.0
    for i in range(p + 1):
        energy += a[i] * a[i]
    for u in range(nu):
        band[u, 0] += 1e-9 * energy
    # band Cholesky (lower factor in place), then two banded triangular solves
    for j in range(nu):
        s = band[j, 0]
        for k in range(max(0, j - p), j):
            s -= band[j, j - k] * band[j, j - k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        band[j, 0] = d
        for i in range(j + 1, min(nu, j + p + 1)):
            s = band[i, i - j]
            for k in range(max(0, i - p), j):
                s -= band[i, i - k] * band[j, j - k]
            band[i, i - j] = s / d
    for i in range(nu):
        s = rhs[i]
        for k in range(max(0, i - p), i):
            s -= band[i, i - k] * rhs[k]
        rhs[i] = s / band[i, 0]
    for i in range(nu - 1, -1, -1):
        s = rhs[i]
        for k in range(i + 1, min(nu, i + p + 1)):
            s -= band[k, k - i] * rhs[k]
        rhs[i] = s / band[i, 0]
    for u in range(nu):
        if not math.isfinite(rhs[u]):
            return False
    for u in range(nu):
        x[idx[u]] = rhs[u]
    return True


@njit(cache=True)
def _rebuild(c: int, s: int, e: int, clock: int, ring: np.ndarray, flags: np.ndarray, ctx: int, order: int,
             work: np.ndarray, unknown: np.ndarray, idx: np.ndarray, r: np.ndarray, a: np.ndarray,
             tmp: np.ndarray, ek: np.ndarray, band: np.ndarray, rhs: np.ndarray, g: np.ndarray) -> None:
    """Rebuild run ``[s, e)`` of channel ``c`` in the ring from the window ``[s - ctx, e + ctx)``."""
    size = ring.shape[1]
    ws = s - ctx
    w = e + ctx - ws
    maxu = idx.shape[0]
    nu = 0
    for j in range(w):
        t = ws + j
        if t < 0:
            work[j] = 0.0
            unknown[j] = 0
            continue
        pos = t % size
        work[j] = ring[c, pos]
        inside = s <= t < e
        if (inside or flags[c, pos] != 0) and nu < maxu:
            unknown[j] = 1
            idx[nu] = j
            nu += 1
        else:
            unknown[j] = 0
    p = order
    if w < 2 * p + 2:
        p = max(2, (w - 2) // 2)
    ok = True
    for it in range(AR_PASSES):
        _ar_estimate(work, unknown, w, p, it > 0, r, a, tmp)
        ok = _lsar(work, unknown, idx, nu, w, p, a, ek, band, rhs, tmp)
        if not ok:
            break
    # the true signal went past the clip level: a rebuilt sample that came out short of it is set
    # to it and the others are solved again with it known (a constrained least-squares solution,
    # where clamping alone would leave its neighbours fitted to the value that was too small)
    for _ in range(CONSTRAIN_PASSES):
        if not ok:
            break
        moved = 0
        keep = 0
        for u in range(nu):
            j = idx[u]
            t = ws + j
            if s <= t < e:
                clipped = np.float64(ring[c, t % size])
                if (clipped > 0.0 and work[j] < clipped) or (clipped < 0.0 and work[j] > clipped):
                    work[j] = clipped
                    unknown[j] = 0
                    moved += 1
                    continue
            idx[keep] = j
            keep += 1
        if moved == 0 or keep == 0:
            break
        nu = keep
        ok = _lsar(work, unknown, idx, nu, w, p, a, ek, band, rhs, tmp)
    for t in range(s, e):
        pos = t % size
        flags[c, pos] = 0
        if ok:
            clipped = np.float64(ring[c, pos])
            v = work[t - ws]
            if clipped > 0.0 and v < clipped:
                v = clipped
            elif clipped < 0.0 and v > clipped:
                v = clipped
            ring[c, pos] = np.float32(v)
    if ok:
        g[G_REPAIRED] += 1
        g[G_SAMPLES] += e - s


@njit(cache=True)
def _inverse(y: float, k: float, tk: float, ceiling: float) -> float:
    """``C atanh(tanh(k) y / C) / k`` (``tk = tanh(k)``): the inverse of ``C tanh(k x / C) / tanh(k)``,
    peak-preserving."""
    if k <= 0.0 or ceiling <= 0.0:
        return y
    u = abs(y) / ceiling * tk
    if u > U_MAX:
        u = U_MAX
    v = ceiling * math.atanh(u) / k
    return v if y >= 0.0 else -v


@njit(cache=True)
def _choose_drive(c: int, drives: np.ndarray, soft: np.ndarray) -> float:
    """The smallest drive whose inverse has a high-band share within SOFT_TOL_DB of the lowest; 0 (no
    inverse) when that is the grid's smallest, i.e. when no drive makes the signal cleaner."""
    nd = drives.shape[0]
    best = math.inf
    for d in range(nd):
        tot = soft[c, d, S_ALL]
        if tot > 0.0:
            share = 10.0 * math.log10(soft[c, d, S_HF] / tot + 1e-30)
            if share < best:
                best = share
    if not math.isfinite(best):
        return 0.0
    for d in range(nd):
        tot = soft[c, d, S_ALL]
        if tot > 0.0 and 10.0 * math.log10(soft[c, d, S_HF] / tot + 1e-30) <= best + SOFT_TOL_DB:
            return drives[d, 0] if d > 0 else 0.0
    return 0.0


@njit(cache=True)
def declip(
    block: np.ndarray,
    ring: np.ndarray,
    flags: np.ndarray,
    queue: np.ndarray,
    ci: np.ndarray,
    cf: np.ndarray,
    g: np.ndarray,
    consts: np.ndarray,
    ctx: int,
    work: np.ndarray,
    unknown: np.ndarray,
    idx: np.ndarray,
    r: np.ndarray,
    a: np.ndarray,
    tmp: np.ndarray,
    ek: np.ndarray,
    band: np.ndarray,
    rhs: np.ndarray,
    drives: np.ndarray,
    soft: np.ndarray,
) -> None:
    """De-clip ``block`` (channels, frames) float32 in place; output delayed by ``ring.shape[1] - ctx - 2``.

    Parameters
    ----------
    ring : float32 ``(channels, R)``; flags : int8 ``(channels, R)``
        Delay line / analysis history (``R = D + ctx + 2``) and the clipped-sample marks.
    queue : int64 ``(channels, QUEUE, 2)``
        Runs waiting for their right-hand context (absolute start, end).
    ci : int64 ``(channels, N_CI)``; cf : float64 ``(channels, N_CF)``; g : int64 ``(N_G,)``
        Per-channel run / soft-saturation state, running peak, counters (``G_*``).
    consts : float64 ``(N_K,)``
        Threshold share, peak release, longest run, soft window, soft ratio (``K_*``).
    ctx : int
        Context ``P`` on each side of a run.
    work, unknown, idx, r, a, tmp, ek, band, rhs
        Scratch for the interpolation (window ``W = 2 ctx + max_run``; ``idx``/``rhs`` sized for
        the most unknowns solved at once, ``band`` (that many, ``ORDER + 1``): the normal matrix
        in band storage).
    drives : float64 ``(D, 2)``; soft : float64 ``(channels, D, N_SD)``
        Drive grid of the soft-saturation inverse (ascending; drive, tanh of it) and its per-drive
        statistics.
    """
    ch, n = block.shape
    size = ring.shape[1]
    delay = size - ctx - 2
    thr = consts[K_THR]
    rel = consts[K_REL]
    maxrun = int(consts[K_MAXRUN])
    soft_win = int(consts[K_SOFT_WIN])
    soft_ratio = consts[K_SOFT_RATIO]
    settle = int(consts[K_SETTLE])
    fast_rel = consts[K_FAST_REL]
    hb0, hb1, hb2 = consts[K_HP_B0], consts[K_HP_B1], consts[K_HP_B2]
    ha1, ha2 = consts[K_HP_A1], consts[K_HP_A2]
    xfade = int(consts[K_XFADE])
    desat = consts[K_DESAT] > 0.0
    order = int(consts[K_ORDER])
    dc_coef = consts[K_DC]
    flat = consts[K_FLAT]
    nd = drives.shape[0]
    clock = g[G_CLOCK]
    if not desat:  # repair switched off: crossfade out of an engaged inverse
        for c in range(ch):
            if cf[c, C_DRIVE] > 0.0:
                cf[c, C_DRIVE_OLD] = cf[c, C_DRIVE]
                cf[c, C_DRIVE] = 0.0
                ci[c, C_XF] = xfade
    for i in range(n):
        pos = clock % size
        for c in range(ch):
            x = np.float64(block[c, i])
            if not math.isfinite(x):
                x = 0.0
                g[G_NONFINITE] += 1
            ax = abs(x)
            if ax > cf[c, C_MAX]:
                cf[c, C_MAX] = ax
            # each half-wave has its own peak and clip level: a converter or a stage that clips
            # one rail only (or a DC offset) leaves the other half-wave peaking higher
            for col in (C_MAX_AGE, C_MAX_AGE_NEG):
                if ci[c, col] < settle:
                    ci[c, col] += 1
            pk_col, mx_col, age_col = (C_PEAK, C_MAX_POS, C_MAX_AGE) if x > 0.0 else (C_PEAK_NEG, C_MAX_NEG,
                                                                                       C_MAX_AGE_NEG)
            m_before = cf[c, mx_col]
            if ax > m_before:
                cf[c, mx_col] = ax
                ci[c, age_col] = 0
            for col in (C_PEAK, C_PEAK_NEG):
                v = cf[c, col] * rel
                cf[c, col] = v if v >= DENORMAL_FLOOR else 0.0
            if ax > cf[c, pk_col]:
                cf[c, pk_col] = ax
            m = cf[c, pk_col]
            ring[c, pos] = np.float32(x)
            flags[c, pos] = 0
            level = m * thr
            cand = ax >= MIN_CLIP and ax >= level
            sign = 1 if x > 0.0 else -1
            rl = ci[c, C_RUN_LEN]
            if rl > 0:
                m_run = cf[c, C_PEAK] if ci[c, C_RUN_SIGN] > 0 else cf[c, C_PEAK_NEG]
                if cand and sign == ci[c, C_RUN_SIGN] and abs(x - cf[c, C_PREV]) <= flat * m_run:
                    rl += 1
                    if rl == 2:  # the run is real: mark its first sample too
                        flags[c, (clock - 1) % size] = 1
                    if rl >= 2:
                        flags[c, pos] = 1
                    ci[c, C_RUN_LEN] = rl
                else:
                    start = ci[c, C_RUN_START]
                    edges = (cf[c, C_ENTRY] >= EDGE_SLOPE * m_run and abs(x - cf[c, C_PREV]) >= EDGE_SLOPE * m_run
                             and cf[c, C_SEEN] > 0.0)
                    if rl >= 2 and edges:
                        # a rail is hit again and again at the same level; two equal samples at a
                        # peak once (16-bit speech has them) are not a clip: the first run at a
                        # new level only marks it
                        rail_col = C_RAIL_POS if ci[c, C_RUN_SIGN] > 0 else C_RAIL_NEG
                        level_run = abs(cf[c, C_PREV])
                        if abs(level_run - cf[c, rail_col]) > flat * m_run:
                            cf[c, rail_col] = level_run
                            edges = False
                    if rl >= 2 and not edges:  # a smooth natural peak, not a clip
                        for t in range(max(start, clock - size + 1), start + rl):
                            flags[c, t % size] = 0
                    elif rl >= 2:
                        if rl <= maxrun and ci[c, C_Q_COUNT] < QUEUE:
                            slot = (ci[c, C_Q_HEAD] + ci[c, C_Q_COUNT]) % QUEUE
                            queue[c, slot, 0] = start
                            queue[c, slot, 1] = start + rl
                            ci[c, C_Q_COUNT] += 1
                        else:
                            g[G_TOO_LONG] += 1
                            for t in range(max(start, clock - size + 1), start + rl):
                                flags[c, t % size] = 0
                    ci[c, C_RUN_LEN] = 0
                    rl = 0
            if rl == 0 and cand:
                ci[c, C_RUN_START] = clock
                ci[c, C_RUN_LEN] = 1
                ci[c, C_RUN_SIGN] = sign
                cf[c, C_ENTRY] = abs(x - cf[c, C_PREV])
                seen = ax <= m_before * (1.0 + flat) and ci[c, age_col] >= settle
                cf[c, C_SEEN] = 1.0 if seen else 0.0
            cf[c, C_PREV] = x
            # soft saturation: share of the top 10 % of the (local) range among the top half, of
            # the signal around its running mean (a DC offset shifts the peaks of one half-wave
            # up, which read like flattened tops)
            k_dc = max(dc_coef, 1.0 / (clock + 1.0))  # a plain mean until the time constant has passed
            dc = cf[c, C_DC] + k_dc * (x - cf[c, C_DC])
            cf[c, C_DC] = dc if abs(dc) >= DENORMAL_FLOOR else 0.0
            ax = abs(x - dc)
            mf = cf[c, C_FAST] * fast_rel
            if ax > mf:
                mf = ax
            if mf < DENORMAL_FLOOR:
                mf = 0.0
            cf[c, C_FAST] = mf
            if mf > 0.0 and ax >= 0.5 * mf and mf >= 0.25 * cf[c, C_MAX]:
                ci[c, C_WIN_MID] += 1
                if ax >= 0.9 * mf and flags[c, pos] == 0 and ci[c, C_RUN_LEN] < 2:
                    ci[c, C_WIN_HI] += 1
            # drive statistics: high-band share of each candidate inverse of the input
            ceiling = cf[c, C_MAX]
            if desat and ceiling > 0.0:
                for d in range(nd):
                    v = _inverse(x, drives[d, 0], drives[d, 1], ceiling)
                    hp = hb0 * v + soft[c, d, S_Z1]
                    soft[c, d, S_Z1] = hb1 * v - ha1 * hp + soft[c, d, S_Z2]
                    soft[c, d, S_Z2] = hb2 * v - ha2 * hp
                    soft[c, d, S_HF] += hp * hp
                    soft[c, d, S_ALL] += v * v
            ci[c, C_WIN_N] += 1
            if ci[c, C_WIN_N] >= soft_win:
                mid = ci[c, C_WIN_MID]
                busy = mid * 100 >= soft_win
                flagged = busy and ci[c, C_WIN_HI] > soft_ratio * mid
                if flagged:
                    g[G_SOFT] += 1
                if desat:
                    k_new = _choose_drive(c, drives, soft)
                    leaning = busy and ci[c, C_WIN_HI] > ENGAGE_RATIO * soft_ratio * mid
                    engaged = flagged or cf[c, C_DRIVE] > 0.0 or (leaning and k_new >= ENGAGE_DRIVE)
                    if engaged and k_new != cf[c, C_DRIVE]:
                        cf[c, C_DRIVE_OLD] = cf[c, C_DRIVE]
                        cf[c, C_DRIVE] = k_new
                        ci[c, C_XF] = xfade
                for d in range(nd):
                    soft[c, d, S_HF] *= SOFT_DECAY
                    soft[c, d, S_ALL] *= SOFT_DECAY
                    for col in (S_Z1, S_Z2):
                        if abs(soft[c, d, col]) < DENORMAL_FLOOR:
                            soft[c, d, col] = 0.0
                ci[c, C_WIN_N] = 0
                ci[c, C_WIN_MID] = 0
                ci[c, C_WIN_HI] = 0
            # rebuild every queued run whose right-hand context is complete
            while ci[c, C_Q_COUNT] > 0:
                head = ci[c, C_Q_HEAD]
                s = queue[c, head, 0]
                e = queue[c, head, 1]
                if clock < e - 1 + ctx:
                    break
                _rebuild(c, s, e, clock, ring, flags, ctx, order, work, unknown, idx, r, a, tmp, ek, band, rhs, g)
                ci[c, C_Q_HEAD] = (head + 1) % QUEUE
                ci[c, C_Q_COUNT] -= 1
            # output: the sample that entered ``delay`` samples ago
            if clock >= delay:
                y = ring[c, (clock - delay) % size]
                k = cf[c, C_DRIVE]
                xf = ci[c, C_XF]
                if k > 0.0 or xf > 0:
                    v = _inverse(np.float64(y), k, math.tanh(k), ceiling)
                    if xf > 0:
                        w = xf / (xfade + 1.0)
                        ko = cf[c, C_DRIVE_OLD]
                        v = w * _inverse(np.float64(y), ko, math.tanh(ko), ceiling) + (1.0 - w) * v
                        ci[c, C_XF] = xf - 1
                    y = np.float32(v)
                    g[G_DESAT] += 1
                block[c, i] = y
            else:
                block[c, i] = 0.0
        clock += 1
    g[G_CLOCK] = clock
