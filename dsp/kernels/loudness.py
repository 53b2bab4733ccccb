"""Loudness-meter kernels (ITU-R BS.1770-4, EBU Tech 3341 / 3342), streaming and exact.

One kernel, :func:`loudness_meter`, runs per block over ``(channels, frames)`` audio and keeps all
of its state in explicit arrays (see :mod:`hushbridge.dsp.loudness` for the design and the
allocation). Per sample it K-weights every channel (two biquads, transposed direct form II,
float64), adds the channel-weighted square to the energy of the current 100 ms hop and, when
asked, updates the true peak on an oversampled grid. At each hop boundary the hop's energy enters
a ring of the last 30 hops; the momentary (4 hops = 400 ms) and short-term (30 hops = 3 s) block
powers are summed from that ring and added to two loudness histograms (exact power sums and
counts per 0.01 LU bin from -70 LUFS up), from which the gated integrated loudness (-70 LUFS,
-10 LU) and the loudness range (-70 LUFS, -20 LU, 10th..95th percentile) are recomputed.

Because everything advances sample by sample from state, in a fixed order, the numbers never
depend on how the audio was cut into blocks: a file measured in one call and a live stream
measured in blocks of 1, 64 or 1000 frames give bit-identical results. Memory is O(1) in the
duration (the histograms replace the list of blocks libebur128-style).

Hop ``k`` covers samples ``[b(k), b(k+1))`` with ``b(k) = (k * sample_rate + 5) // 10`` (100 ms,
rounded), so rates that are not multiples of 10 Hz keep the 10 Hz block rate on average.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from hushbridge.dsp.kernels.util import DENORMAL_FLOOR

# istate
I_HOP_POS = 0   # samples already in the current hop
I_HOP_IDX = 1   # index k of the current hop
I_RING = 2      # next write position in the hop ring
I_FILLED = 3    # completed hops in the ring (saturates at RING)
I_RATE = 4      # sample rate (Hz, integer)
I_HOPS_OUT = 5  # rows written to hop_out
I_HOP_LEN = 6   # length of the current hop (samples)
I_TP_POS = 7    # true-peak history position
I_SINCE = 8     # completed hops since the measurement (re)started (saturates at RING; -1 while
                # the hop under way at a restart ends): a block reaches the histograms and maxima
                # only when it lies wholly after the restart
N_ISTATE = 9
# fstate
F_HOP_E = 0     # weighted energy of the current hop so far
F_M = 1         # latest momentary power (zero-padded while the first 400 ms fill)
F_S = 2         # latest short-term power (zero-padded while the first 3 s fill)
F_M_MAX = 3     # largest momentary power of a complete 400 ms block
F_S_MAX = 4     # largest short-term power of a complete 3 s block
F_I = 5         # integrated loudness, LUFS (-inf until a block passes the gates)
F_LRA = 6       # loudness range, LU
F_TP = 7        # largest true peak (linear)
N_FSTATE = 8

RING = 30       # hops in a short-term block
M_HOPS = 4      # hops in a momentary block
HIST_LO = -70.0  # absolute gate, LUFS: lower edge of the histograms
HIST_STEP = 0.01  # LU per bin
HIST_BINS = 10000  # -70 .. +30 LUFS; louder blocks land in the top bin (their power stays exact)
OFFSET = -0.691   # BS.1770 loudness offset, LUFS = OFFSET + 10 log10(power)
REL_GATE_I = -10.0
REL_GATE_LRA = -20.0
_DB10 = 10.0 / math.log(10.0)


@njit(cache=True)
def power_to_lufs(p: float) -> float:
    """Block power (channel-weighted mean square) -> LUFS; ``-inf`` for 0."""
    if p > 0.0:
        return OFFSET + _DB10 * math.log(p)
    return -np.inf


@njit(cache=True)
def hop_boundary(k: int, rate: int) -> int:
    """First sample of hop ``k``: ``round(k * rate / 10)``."""
    return (k * rate + 5) // 10


@njit(cache=True)
def k_filter(x: np.ndarray, coefs: np.ndarray, state: np.ndarray, out: np.ndarray) -> None:
    """K-weight ``x`` (channels, frames) into ``out`` (float64), continuing from ``state`` (channels, 4).

    ``coefs`` is float64 ``(2, 5)``: ``[b0, b1, b2, a1, a2]`` of the shelf, then of the RLB high-pass.
    State values below the denormal floor are flushed every sample.
    """
    ch, n = x.shape
    for c in range(ch):
        for i in range(n):
            out[c, i] = _k_sample(np.float64(x[c, i]), coefs, state, c)


@njit(cache=True, inline="always")
def _k_sample(x: float, k: np.ndarray, st: np.ndarray, c: int) -> float:
    y = k[0, 0] * x + st[c, 0]
    z1 = k[0, 1] * x - k[0, 3] * y + st[c, 1]
    z2 = k[0, 2] * x - k[0, 4] * y
    if abs(z1) < DENORMAL_FLOOR and abs(z2) < DENORMAL_FLOOR:  # both at once: no limit cycle
        z1 = 0.0
        z2 = 0.0
    st[c, 0] = z1
    st[c, 1] = z2
    v = k[1, 0] * y + st[c, 2]
    z1 = k[1, 1] * y - k[1, 3] * v + st[c, 3]
    z2 = k[1, 2] * y - k[1, 4] * v
    if abs(z1) < DENORMAL_FLOOR and abs(z2) < DENORMAL_FLOOR:  # both at once: no limit cycle
        z1 = 0.0
        z2 = 0.0
    st[c, 2] = z1
    st[c, 3] = z2
    return v


@njit(cache=True)
def hist_add(hist: np.ndarray, p: float) -> None:
    """Add a block of power ``p`` to ``hist`` (float64 ``(2, HIST_BINS)``: counts, power sums)."""
    lk = power_to_lufs(p)
    if not lk >= HIST_LO:
        return
    j = int((lk - HIST_LO) / HIST_STEP)
    if j >= HIST_BINS:
        j = HIST_BINS - 1
    hist[0, j] += 1.0
    hist[1, j] += p


@njit(cache=True)
def _gate_bin(hist: np.ndarray, rel_lu: float) -> tuple[int, float, float]:
    """Relative gate of a histogram: (bin holding it, gate LUFS, blocks above the absolute gate)."""
    cnt = 0.0
    tot = 0.0
    for j in range(HIST_BINS):
        cnt += hist[0, j]
        tot += hist[1, j]
    if cnt == 0.0:
        return -1, -np.inf, 0.0
    gate = power_to_lufs(tot / cnt) + rel_lu
    jg = int(math.floor((gate - HIST_LO) / HIST_STEP))
    return jg, gate, cnt


@njit(cache=True)
def _first_bin(hist: np.ndarray, jg: int, gate: float, strict: bool) -> int:
    """First bin inside the relative gate; the bin holding the gate is decided by its mean."""
    if jg < 0:
        return 0
    if jg >= HIST_BINS:
        return HIST_BINS
    if hist[0, jg] > 0.0:
        lk = power_to_lufs(hist[1, jg] / hist[0, jg])
        if lk > gate or (not strict and lk == gate):
            return jg
    return jg + 1


@njit(cache=True)
def integrated_from_hist(hist: np.ndarray) -> float:
    """Gated integrated loudness (LUFS) of a momentary-block histogram; ``-inf`` if nothing passes."""
    jg, gate, cnt = _gate_bin(hist, REL_GATE_I)
    if cnt == 0.0:
        return -np.inf
    j0 = _first_bin(hist, jg, gate, True)
    c = 0.0
    s = 0.0
    for j in range(j0, HIST_BINS):
        c += hist[0, j]
        s += hist[1, j]
    if c == 0.0:
        return -np.inf
    return power_to_lufs(s / c)


@njit(cache=True)
def _value_at(hist: np.ndarray, j0: int, rank: int) -> float:
    """Loudness (bin mean) of the ``rank``-th smallest gated block."""
    seen = 0.0
    for j in range(j0, HIST_BINS):
        seen += hist[0, j]
        if seen > rank:
            return power_to_lufs(hist[1, j] / hist[0, j])
    return np.nan


@njit(cache=True)
def lra_from_hist(hist: np.ndarray) -> float:
    """Loudness range (LU) of a short-term-block histogram per EBU Tech 3342; 0 with < 2 blocks."""
    jg, gate, cnt = _gate_bin(hist, REL_GATE_LRA)
    if cnt == 0.0:
        return 0.0
    j0 = _first_bin(hist, jg, gate, False)
    n = 0.0
    for j in range(j0, HIST_BINS):
        n += hist[0, j]
    if n < 2.0:
        return 0.0
    lo = _percentile(hist, j0, n, 0.10)
    hi = _percentile(hist, j0, n, 0.95)
    return hi - lo


@njit(cache=True)
def _percentile(hist: np.ndarray, j0: int, n: float, q: float) -> float:
    """``numpy.percentile`` (linear) of the gated blocks, each at its bin's mean loudness."""
    pos = q * (n - 1.0)
    r = int(math.floor(pos))
    a = _value_at(hist, j0, r)
    if pos == r:
        return a
    b = _value_at(hist, j0, r + 1)
    return a + (pos - r) * (b - a)


@njit(cache=True)
def _end_hop(ring: np.ndarray, istate: np.ndarray, fstate: np.ndarray, hist_m: np.ndarray,
             hist_s: np.ndarray, hop_out: np.ndarray) -> None:
    """Close the current hop: ring, momentary/short-term powers, histograms, gated results."""
    rate = istate[I_RATE]
    rp = istate[I_RING]
    ring[0, rp] = fstate[F_HOP_E]
    ring[1, rp] = np.float64(istate[I_HOP_LEN])
    rp += 1
    if rp == RING:
        rp = 0
    istate[I_RING] = rp
    filled = min(istate[I_FILLED] + 1, RING)
    istate[I_FILLED] = filled
    since = min(istate[I_SINCE] + 1, RING)
    istate[I_SINCE] = since
    k = istate[I_HOP_IDX] + 1
    istate[I_HOP_IDX] = k
    istate[I_HOP_LEN] = hop_boundary(k + 1, rate) - hop_boundary(k, rate)
    istate[I_HOP_POS] = 0
    fstate[F_HOP_E] = 0.0
    pm = np.nan
    ps = np.nan
    for span in (M_HOPS, RING):
        e = 0.0
        length = 0.0
        for back in range(min(span, filled), 0, -1):  # oldest first
            j = rp - back
            if j < 0:
                j += RING
            e += ring[0, j]
            length += ring[1, j]
        if filled >= span:
            p = e / length if length > 0.0 else 0.0
            counted = since >= span
            if span == M_HOPS:
                pm = p
                fstate[F_M] = p
                if counted:
                    if p > fstate[F_M_MAX]:
                        fstate[F_M_MAX] = p
                    hist_add(hist_m, p)
            else:
                ps = p
                fstate[F_S] = p
                if counted:
                    if p > fstate[F_S_MAX]:
                        fstate[F_S_MAX] = p
                    hist_add(hist_s, p)
        else:  # not yet a whole window: the display reads it zero-padded (as libebur128 does)
            nominal = span * rate / 10.0
            if span == M_HOPS:
                fstate[F_M] = e / nominal
            else:
                fstate[F_S] = e / nominal
    if since >= M_HOPS:
        fstate[F_I] = integrated_from_hist(hist_m)
    if since >= RING:
        fstate[F_LRA] = lra_from_hist(hist_s)
    h = istate[I_HOPS_OUT]
    if h < hop_out.shape[0]:
        hop_out[h, 0] = pm
        hop_out[h, 1] = ps
        istate[I_HOPS_OUT] = h + 1


@njit(cache=True)
def loudness_meter(
    block: np.ndarray,
    coefs: np.ndarray,
    kstate: np.ndarray,
    weights: np.ndarray,
    ring: np.ndarray,
    istate: np.ndarray,
    fstate: np.ndarray,
    hist_m: np.ndarray,
    hist_s: np.ndarray,
    taps: np.ndarray,
    l1: float,
    tp_hist: np.ndarray,
    tp_quiet: np.ndarray,
    hop_out: np.ndarray,
) -> None:
    """Meter ``block`` (channels, frames), float32 or float64; the audio is not modified.

    Parameters
    ----------
    coefs : float64 ``(2, 5)``; kstate : float64 ``(channels, 4)``
        K-weighting (see :func:`k_filter`) and its state.
    weights : float64 ``(channels,)``
        BS.1770 channel weights (0 excludes a channel, e.g. LFE).
    ring : float64 ``(2, RING)``
        Energies and lengths of the last 30 hops.
    istate : int64 ``(N_ISTATE,)``; fstate : float64 ``(N_FSTATE,)``
        Counters and results (``I_*`` / ``F_*``).
    hist_m, hist_s : float64 ``(2, HIST_BINS)``
        Histograms of momentary and short-term block powers.
    taps : float64 ``(phases, K)``
        True-peak interpolator (:func:`~hushbridge.dsp.kernels.dynamics.true_peak_taps`);
        ``(0, K)`` switches the true peak off. ``l1``: largest ``sum |taps|`` of a phase.
    tp_hist : float64 ``(channels, 2K)``; tp_quiet : int64 ``(channels,)``
        Interpolator history (written twice so the last K are contiguous) and, per channel, samples
        since one that could raise the true peak (the interpolation is skipped when none can).
    hop_out : float64 ``(H, 2)``
        Receives the momentary and short-term power of each hop (NaN while not yet a whole window)
        until full; ``(0, 2)`` for a live meter.
    """
    ch, n = block.shape
    phases = taps.shape[0]
    kt = taps.shape[1]
    hp = istate[I_TP_POS]
    tp = fstate[F_TP]
    hop_e = fstate[F_HOP_E]
    pos = istate[I_HOP_POS]
    hop_len = istate[I_HOP_LEN]
    for i in range(n):
        e = 0.0
        for c in range(ch):
            x = np.float64(block[c, i])
            if not math.isfinite(x):
                x = 0.0
            y = _k_sample(x, coefs, kstate, c)
            e += weights[c] * (y * y)
            if phases > 0:
                tp_hist[c, hp] = x
                tp_hist[c, hp + kt] = x
                ax = abs(x)
                if ax > tp:
                    tp = ax
                if ax * l1 > tp:
                    tp_quiet[c] = 0
                elif tp_quiet[c] < kt:
                    tp_quiet[c] += 1
                if tp_quiet[c] < kt:
                    base = hp + 1
                    for p in range(phases):
                        acc = 0.0
                        for j in range(kt):
                            acc += taps[p, j] * tp_hist[c, base + j]
                        a = abs(acc)
                        if a > tp:
                            tp = a
        if phases > 0:
            hp += 1
            if hp == kt:
                hp = 0
        hop_e += e
        pos += 1
        if pos >= hop_len:
            fstate[F_HOP_E] = hop_e
            istate[I_HOP_POS] = pos
            _end_hop(ring, istate, fstate, hist_m, hist_s, hop_out)
            hop_e = 0.0
            pos = 0
            hop_len = istate[I_HOP_LEN]
    if not math.isfinite(hop_e):
        hop_e = 0.0
    fstate[F_HOP_E] = hop_e
    fstate[F_TP] = tp
    istate[I_HOP_POS] = pos
    istate[I_TP_POS] = hp
