"""Offline loudness and level measurements (ITU-R BS.1770-4, EBU Tech 3341/3342).

Runtime dependencies: numpy and numba only (no scipy).

Audio is accepted as ``(frames,)`` for mono or ``(channels, frames)`` (the engine's layout).

- :func:`integrated_loudness`: gated integrated loudness in LUFS. The K-weighting filters are designed
  for any sample rate from the analog prototype parameters (f0, Q, gain) with the bilinear transform,
  as libebur128 does, so 44.1 kHz, 32 kHz, 16 kHz ... are exact, not 48 kHz coefficients reused.
- :func:`loudness_range`: LRA per EBU Tech 3342 (3 s short-term windows at 10 Hz, absolute gate
  -70 LUFS, relative gate -20 LU, 10th..95th percentile).
- :func:`true_peak_dbtp`: 4x oversampled peak (polyphase windowed-sinc interpolator), BS.1770-4 Annex 2.
- :func:`sample_peak_dbfs`, :func:`rms_dbfs`, :func:`noise_floor_dbfs` (10th percentile of 50 ms RMS).
- :func:`measure`: all of the above in one dict.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "k_weighting_sos",
    "k_weight",
    "integrated_loudness",
    "loudness_range",
    "short_term_loudness",
    "momentary_loudness",
    "true_peak_dbtp",
    "sample_peak_dbfs",
    "rms_dbfs",
    "noise_floor_dbfs",
    "measure",
]

# Analog prototype parameters of the BS.1770 K-weighting (as derived by libebur128 / B. de Man);
# at 48 kHz they reproduce the coefficients printed in BS.1770-4 Tables 1 and 2.
_SHELF_F0 = 1681.974450955533
_SHELF_G_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_VB_EXP = 0.4996667741545416
_RLB_F0 = 38.13547087602444
_RLB_Q = 0.5003270373238773

# Channel weights: L, R, C = 1.0; Ls, Rs = 1.41 (BS.1770-4 Table 3). Channels past the fifth get 1.0.
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)

_ABS_GATE_LUFS = -70.0
_REL_GATE_LU = -10.0
_LRA_REL_GATE_LU = -20.0
_LOUDNESS_OFFSET = -0.691


def _as_channels(audio) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1:
        return x[np.newaxis, :]
    if x.ndim != 2:
        raise ValueError(f"audio must be (frames,) or (channels, frames), got shape {x.shape}")
    return x


def _channel_weights(n: int) -> np.ndarray:
    return np.array([_CHANNEL_WEIGHTS[i] if i < len(_CHANNEL_WEIGHTS) else 1.0 for i in range(n)])


def _db(power_or_amp: float, factor: float) -> float:
    if not np.isfinite(power_or_amp) or power_or_amp <= 0.0:
        return float("-inf")
    return float(factor * math.log10(power_or_amp))


# --------------------------------------------------------------------------------------------------
# K-weighting


def k_weighting_sos(sr: float) -> np.ndarray:
    """The two K-weighting biquads for sample rate ``sr`` as ``(2, 6)`` rows ``b0 b1 b2 a0 a1 a2``.

    Stage 1 is the pre-filter high shelf (+4 dB above ~1.7 kHz, the head's acoustic effect), stage 2
    the RLB high-pass (~38 Hz); both bilinear-transformed from their analog prototypes with the
    frequency pre-warped, ``K = tan(pi f0 / sr)``.
    """
    if sr <= 2 * _SHELF_F0:
        raise ValueError(f"sample rate {sr} Hz is too low for K-weighting")
    k = math.tan(math.pi * _SHELF_F0 / sr)
    vh = 10.0 ** (_SHELF_G_DB / 20.0)
    vb = vh**_SHELF_VB_EXP
    a0 = 1.0 + k / _SHELF_Q + k * k
    shelf = [
        (vh + vb * k / _SHELF_Q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / _SHELF_Q + k * k) / a0,
        1.0,
        2.0 * (k * k - 1.0) / a0,
        (1.0 - k / _SHELF_Q + k * k) / a0,
    ]
    k = math.tan(math.pi * _RLB_F0 / sr)
    a0 = 1.0 + k / _RLB_Q + k * k
    rlb = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _RLB_Q + k * k) / a0]
    return np.array([shelf, rlb], dtype=np.float64)


@njit(cache=True, nogil=True)
def _sosfilt(sos, x):  # pragma: no cover - compiled
    """Cascade of biquads (transposed direct form II), float64, along the last axis of (ch, n)."""
    out = np.empty_like(x)
    n_ch, n = x.shape
    n_sec = sos.shape[0]
    for c in range(n_ch):
        for i in range(n):
            out[c, i] = x[c, i]
        for s in range(n_sec):
            b0 = sos[s, 0] / sos[s, 3]
            b1 = sos[s, 1] / sos[s, 3]
            b2 = sos[s, 2] / sos[s, 3]
            a1 = sos[s, 4] / sos[s, 3]
            a2 = sos[s, 5] / sos[s, 3]
            z1 = 0.0
            z2 = 0.0
            for i in range(n):
                v = out[c, i]
                y = b0 * v + z1
                z1 = b1 * v - a1 * y + z2
                z2 = b2 * v - a2 * y
                out[c, i] = y
    return out


def k_weight(audio, sr: float) -> np.ndarray:
    """K-weighted copy of ``audio`` as float64 ``(channels, frames)``."""
    x = np.ascontiguousarray(_as_channels(audio))
    return _sosfilt(k_weighting_sos(sr), x)


# --------------------------------------------------------------------------------------------------
# Gated block loudness


def _subblock_energy(kw: np.ndarray, sr: float, hop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel energy (sum of squares) of consecutive ``hop_s`` sub-blocks, and their lengths."""
    n = kw.shape[1]
    n_sub = int(math.floor(n / (hop_s * sr) + 1e-9))
    if n_sub == 0:
        return np.zeros((kw.shape[0], 0)), np.zeros(0)
    edges = np.round(np.arange(n_sub + 1) * hop_s * sr).astype(np.int64)
    edges[-1] = min(edges[-1], n)
    sq = kw * kw
    energy = np.add.reduceat(sq, edges[:-1], axis=1)
    # reduceat sums to the end for the last index; trim the last sub-block to its edge
    last = edges[-2]
    energy[:, -1] = sq[:, last : edges[-1]].sum(axis=1)
    return energy, np.diff(edges).astype(np.float64)


def _block_powers(kw: np.ndarray, sr: float, block_s: float, hop_s: float) -> np.ndarray:
    """Channel-weighted mean square ``sum_i G_i z_ij`` of each gating block (overlapping blocks)."""
    per_block = int(round(block_s / hop_s))
    energy, lengths = _subblock_energy(kw, sr, hop_s)
    n_blocks = energy.shape[1] - per_block + 1
    if n_blocks <= 0:
        return np.zeros(0)
    c = np.concatenate([np.zeros((energy.shape[0], 1)), np.cumsum(energy, axis=1)], axis=1)
    cl = np.concatenate([[0.0], np.cumsum(lengths)])
    block_energy = c[:, per_block:] - c[:, :-per_block]  # (ch, n_blocks)
    block_len = cl[per_block:] - cl[:-per_block]
    z = np.maximum(block_energy, 0.0) / block_len
    return _channel_weights(kw.shape[0]) @ z


def _power_to_lufs(p):
    with np.errstate(divide="ignore"):
        return _LOUDNESS_OFFSET + 10.0 * np.log10(p)


def momentary_loudness(audio, sr: float) -> np.ndarray:
    """Momentary loudness (400 ms windows, 100 ms hop), LUFS, ungated."""
    return _power_to_lufs(_block_powers(k_weight(audio, sr), sr, 0.4, 0.1))


def short_term_loudness(audio, sr: float) -> np.ndarray:
    """Short-term loudness (3 s windows, 100 ms hop = 10 Hz), LUFS, ungated."""
    return _power_to_lufs(_block_powers(k_weight(audio, sr), sr, 3.0, 0.1))


def _integrated_from_powers(p: np.ndarray) -> float:
    if p.size == 0:
        return float("-inf")
    lk = _power_to_lufs(p)
    above_abs = lk >= _ABS_GATE_LUFS
    if not np.any(above_abs):
        return float("-inf")
    rel_gate = float(_power_to_lufs(p[above_abs].mean())) + _REL_GATE_LU
    keep = above_abs & (lk > rel_gate)
    if not np.any(keep):
        return float("-inf")
    return float(_power_to_lufs(p[keep].mean()))


def integrated_loudness(audio, sr: float) -> float:
    """Integrated loudness, LUFS (BS.1770-4: 400 ms blocks, 75 % overlap, gates -70 LUFS and -10 LU).

    Returns ``-inf`` for silence or audio shorter than one 400 ms block.
    """
    return _integrated_from_powers(_block_powers(k_weight(audio, sr), sr, 0.4, 0.1))


def _lra_from_short_term(p: np.ndarray) -> float:
    if p.size == 0:
        return 0.0
    lk = _power_to_lufs(p)
    above_abs = lk >= _ABS_GATE_LUFS
    if not np.any(above_abs):
        return 0.0
    rel_gate = float(_power_to_lufs(p[above_abs].mean())) + _LRA_REL_GATE_LU
    gated = lk[above_abs & (lk >= rel_gate)]
    if gated.size < 2:
        return 0.0
    lo, hi = np.percentile(gated, [10.0, 95.0])
    return float(hi - lo)


def loudness_range(audio, sr: float) -> float:
    """Loudness range (LRA), LU, per EBU Tech 3342. 0.0 when there is too little audio to measure."""
    return _lra_from_short_term(_block_powers(k_weight(audio, sr), sr, 3.0, 0.1))


# --------------------------------------------------------------------------------------------------
# Peaks and levels

_TP_FACTOR = 4
_TP_TAPS_PER_PHASE = 48
_tp_cache: dict[tuple[int, int], np.ndarray] = {}


def _tp_polyphase(factor: int = _TP_FACTOR, taps_per_phase: int = _TP_TAPS_PER_PHASE) -> np.ndarray:
    """Polyphase bank ``(factor, taps_per_phase)`` of a Kaiser-windowed sinc interpolator.

    The prototype's cutoff is the input Nyquist frequency, so phase 0 is a pure (delayed) impulse and
    the original samples pass through unchanged; each phase has unity DC gain.
    """
    key = (factor, taps_per_phase)
    bank = _tp_cache.get(key)
    if bank is None:
        n = factor * taps_per_phase
        t = (np.arange(n) - (n // 2)) / factor  # in input samples; t = 0 lands on phase 0
        h = np.sinc(t) * np.kaiser(n, 10.0)
        bank = h.reshape(taps_per_phase, factor).T.copy()  # bank[p, m] = h[m*factor + p]
        bank /= bank.sum(axis=1, keepdims=True)
        _tp_cache[key] = bank
    return bank


def true_peak(audio, sr: float | None = None) -> float:
    """Linear true peak: max |x| over the 4x oversampled signal and the original samples."""
    x = _as_channels(audio)
    if x.shape[1] == 0:
        return 0.0
    bank = _tp_polyphase()
    peak = float(np.max(np.abs(x)))
    for ch in x:
        for phase in bank[1:]:
            y = np.convolve(ch, phase, mode="full")
            peak = max(peak, float(np.max(np.abs(y))))
    return peak


def true_peak_dbtp(audio, sr: float | None = None) -> float:
    """True peak in dBTP (4x oversampling, BS.1770-4 Annex 2; ``sr`` is accepted for symmetry)."""
    return _db(true_peak(audio, sr), 20.0)


def sample_peak_dbfs(audio) -> float:
    x = _as_channels(audio)
    return _db(float(np.max(np.abs(x))) if x.size else 0.0, 20.0)


def rms_dbfs(audio) -> float:
    """RMS over all samples and channels, dBFS (a full-scale square wave is 0 dBFS)."""
    x = _as_channels(audio)
    return _db(float(np.mean(x * x)) if x.size else 0.0, 10.0)


def noise_floor_dbfs(audio, sr: float, window_s: float = 0.05, percentile: float = 10.0) -> float:
    """Noise floor estimate, dBFS: the ``percentile``-th percentile of ``window_s`` RMS windows.

    Windows are non-overlapping; the power is averaged over channels. Digital silence reads ``-inf``.
    """
    x = _as_channels(audio)
    win = max(1, int(round(window_s * sr)))
    n_win = x.shape[1] // win
    if n_win == 0:
        return rms_dbfs(x)
    p = (x[:, : n_win * win] ** 2).reshape(x.shape[0], n_win, win).mean(axis=2).mean(axis=0)
    return _db(float(np.percentile(p, percentile)), 10.0)


def measure(audio, sr: float) -> dict[str, float]:
    """All report measurements of one clip (the K-weighting is run once)."""
    kw = k_weight(audio, sr)
    return {
        "integrated_lufs": _integrated_from_powers(_block_powers(kw, sr, 0.4, 0.1)),
        "true_peak_dbtp": true_peak_dbtp(audio, sr),
        "sample_peak_dbfs": sample_peak_dbfs(audio),
        "lra_lu": _lra_from_short_term(_block_powers(kw, sr, 3.0, 0.1)),
        "noise_floor_dbfs": noise_floor_dbfs(audio, sr),
        "rms_dbfs": rms_dbfs(audio),
    }
