"""Loudness design: K-weighting for any sample rate, channel weights by layout, meter state.

This is the one implementation of BS.1770 measurement in hushbridge: the ``loudness`` Effect
(live meter), :mod:`hushbridge.measure` (offline reports) and the CLI all run
:func:`~hushbridge.dsp.kernels.loudness.loudness_meter` over state allocated by
:func:`allocate`, so streaming and offline numbers are the same.

>>> from hushbridge.dsp.loudness import analyze, channel_weights
>>> import numpy as np
>>> sr = 48000
>>> tone = 10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * np.arange(10 * sr) / sr)
>>> round(analyze(np.stack([tone, tone]), sr)["integrated_lufs"], 1)
-23.0
>>> channel_weights(6).tolist()            # 5.1: L R C LFE Ls Rs
[1.0, 1.0, 1.0, 0.0, 1.41, 1.41]
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from hushbridge.dsp.kernels import loudness as K
from hushbridge.dsp.kernels.dynamics import true_peak_taps

# Analog prototype parameters of the BS.1770 K-weighting (as derived by libebur128 / B. de Man);
# at 48 kHz they reproduce the coefficients printed in BS.1770-4 Tables 1 and 2.
_SHELF_F0 = 1681.974450955533
_SHELF_G_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_VB_EXP = 0.4996667741545416
_RLB_F0 = 38.13547087602444
_RLB_Q = 0.5003270373238773

#: True-peak interpolator: the limiter's polyphase Kaiser-sinc design, 8x, with 48 taps per phase
#: (flat to 0.45 fs within 0.01 dB, so the -0.4 dB Tech 3341 tolerance is never at risk).
TP_OVERSAMPLE = 8
TP_TAPS_PER_PHASE = 48
TP_TAPS = true_peak_taps(TP_TAPS_PER_PHASE, TP_OVERSAMPLE)
TP_L1 = float(np.abs(TP_TAPS).sum(axis=1).max())
_NO_TAPS = np.zeros((0, TP_TAPS_PER_PHASE), dtype=np.float64)

SURROUND_WEIGHT = 1.41  # BS.1770-4 Table 3 (+1.5 dB)
#: Channel order of each layout (SMPTE / ITU order); weights follow from the channel names.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "mono": ("C",),
    "stereo": ("L", "R"),
    "5.0": ("L", "R", "C", "Ls", "Rs"),
    "5.1": ("L", "R", "C", "LFE", "Ls", "Rs"),
    "7.1": ("L", "R", "C", "LFE", "Ls", "Rs", "Lrs", "Rrs"),
}
_DEFAULT_LAYOUT = {1: "mono", 2: "stereo", 5: "5.0", 6: "5.1", 8: "7.1"}
#: each layout as a WAV channel mask (surrounds as the side pair, the rears as back: what
#: weighs them is only that they are surrounds)
LAYOUT_MASKS = {"mono": 0x4, "stereo": 0x3, "5.0": 0x607, "5.1": 0x60F, "7.1": 0x63F}
_NAME_WEIGHT = {"L": 1.0, "R": 1.0, "C": 1.0, "LFE": 0.0}


def k_weighting_sos(sr: float) -> np.ndarray:
    """The two K-weighting biquads for sample rate ``sr`` as ``(2, 6)`` rows ``b0 b1 b2 a0 a1 a2``.

    Stage 1 is the pre-filter high shelf (+4 dB above ~1.7 kHz, the head's acoustic effect), stage 2
    the RLB high-pass (~38 Hz); both bilinear-transformed from their analog prototypes with the
    frequency pre-warped, ``K = tan(pi f0 / sr)``.
    """
    if not sr > 2 * _SHELF_F0:
        raise ValueError(f"sample rate {sr!r} Hz is too low for K-weighting (needs > {2 * _SHELF_F0:.0f} Hz)")
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


def k_weighting_coefs(sr: float) -> np.ndarray:
    """K-weighting as the kernels take it: float64 ``(2, 5)`` rows ``[b0, b1, b2, a1, a2]``."""
    sos = k_weighting_sos(sr)
    return np.ascontiguousarray((sos[:, [0, 1, 2, 4, 5]] / sos[:, 3:4]))


#: WAVE_FORMAT_EXTENSIBLE speaker bits (channel order = bit order) weighted 1.41 as surrounds
#: (ffmpeg's ebur128 does the same: back, side and top-back speakers) and 0 as LFE.
_MASK_LFE = (1 << 3) | (1 << 35)
_MASK_SURROUND = (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 15) | (1 << 16) | (1 << 17)


def channel_weights_from_mask(channels: int, mask: int) -> np.ndarray:
    """BS.1770 weights for a file whose channel mask (``dwChannelMask``) names its speakers;
    channels beyond the mask's bits weigh 1.0."""
    weights = np.ones(channels, dtype=np.float64)
    bits = [b for b in range(64) if mask >> b & 1][:channels]
    for ch, b in enumerate(bits):
        if _MASK_LFE >> b & 1:
            weights[ch] = 0.0
        elif _MASK_SURROUND >> b & 1:
            weights[ch] = SURROUND_WEIGHT
    return weights


def channel_weights(channels: int, layout: str | None = None) -> np.ndarray:
    """BS.1770 weights for ``channels`` channels: 1.0 for L/R/C, 0 for LFE, 1.41 for surrounds.

    ``layout`` is one of :data:`LAYOUTS` (``mono``, ``stereo``, ``5.0``, ``5.1``, ``7.1``); by default
    it follows from the channel count (1, 2, 5, 6, 8), and other counts weigh every channel 1.0.
    """
    if not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    if layout is None:
        layout = _DEFAULT_LAYOUT.get(int(channels))
        if layout is None:
            return np.ones(int(channels), dtype=np.float64)
    try:
        names = LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown layout {layout!r} (layouts: {', '.join(LAYOUTS)})") from None
    if len(names) != channels:
        raise ValueError(f"layout {layout!r} has {len(names)} channels, the audio {channels}")
    return np.array([_NAME_WEIGHT.get(nm, SURROUND_WEIGHT) for nm in names], dtype=np.float64)


def resolve_weights(channels: int, layout: str | None = None, weights=None) -> np.ndarray:
    """Explicit ``weights`` (checked: one finite value >= 0 per channel) or those of the layout."""
    if weights is None:
        return channel_weights(channels, layout)
    w = np.array(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != channels or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"channel_weights must be {channels} finite values >= 0, got {weights!r}")
    return w


class MeterState(NamedTuple):
    """Every array :func:`~hushbridge.dsp.kernels.loudness.loudness_meter` needs, in its order."""

    coefs: np.ndarray
    kstate: np.ndarray
    weights: np.ndarray
    ring: np.ndarray
    istate: np.ndarray
    fstate: np.ndarray
    hist_m: np.ndarray
    hist_s: np.ndarray
    taps: np.ndarray
    l1: float
    tp_hist: np.ndarray
    tp_quiet: np.ndarray
    hop_out: np.ndarray


def allocate(channels: int, sample_rate: int, weights: np.ndarray, true_peak: bool = True,
             hops: int = 0) -> MeterState:
    """Allocate (and reset) meter state; ``hops`` rows record per-hop momentary/short-term powers."""
    taps = TP_TAPS if true_peak else _NO_TAPS
    st = MeterState(
        k_weighting_coefs(sample_rate),
        np.zeros((channels, 4)),
        np.ascontiguousarray(weights, dtype=np.float64),
        np.zeros((2, K.RING)),
        np.zeros(K.N_ISTATE, dtype=np.int64),
        np.zeros(K.N_FSTATE),
        np.zeros((2, K.HIST_BINS)),
        np.zeros((2, K.HIST_BINS)),
        taps,
        TP_L1,
        np.zeros((channels, 2 * TP_TAPS_PER_PHASE)),
        np.zeros(channels, dtype=np.int64),
        np.full((int(hops), 2), np.nan),
    )
    st.istate[K.I_RATE] = int(sample_rate)
    reset(st)
    return st


def reset(st: MeterState) -> None:
    """Clear every measurement (keeps coefficients and weights)."""
    rate = int(st.istate[K.I_RATE])
    st.kstate.fill(0.0)
    st.ring.fill(0.0)
    st.istate.fill(0)
    st.istate[K.I_RATE] = rate
    st.istate[K.I_HOP_LEN] = K.hop_boundary(1, rate)
    st.fstate.fill(0.0)
    st.fstate[K.F_I] = -np.inf
    st.hist_m.fill(0.0)
    st.hist_s.fill(0.0)
    st.tp_hist.fill(0.0)
    st.tp_quiet.fill(len(st.taps[0]) if st.taps.shape[0] else 0)
    st.hop_out.fill(np.nan)


def restart(st: MeterState) -> None:
    """Start integrated loudness, LRA, the maxima and the true peak again from here, as a meter's
    reset button does; momentary and short-term keep their windows (they read right on, instead
    of 3 s low while a cleared window filled again). Real-time safe."""
    # a hop under way holds audio from before the press: count from the next one on
    st.istate[K.I_SINCE] = -1 if st.istate[K.I_HOP_POS] > 0 else 0
    # nor the K-weighting's ring-out of it (30 dB louder before, it read 0.25 LU into the next 6 s)
    st.kstate.fill(0.0)
    st.hist_m.fill(0.0)
    st.hist_s.fill(0.0)
    f = st.fstate
    f[K.F_M_MAX] = 0.0
    f[K.F_S_MAX] = 0.0
    f[K.F_I] = -np.inf
    f[K.F_LRA] = 0.0
    f[K.F_TP] = 0.0
    # the true-peak interpolator starts from rest as at a fresh start: its memory of the samples
    # before would put their peaks into the new maximum
    st.tp_hist.fill(0.0)
    st.tp_quiet.fill(len(st.taps[0]) if st.taps.shape[0] else 0)


def run(st: MeterState, block: np.ndarray) -> None:
    """Meter one ``(channels, frames)`` block (real-time safe: no allocation)."""
    K.loudness_meter(block, *st)


def lufs(power: float) -> float:
    """Power -> LUFS (``-inf`` for 0)."""
    return float(K.power_to_lufs(float(power)))


def results(st: MeterState) -> dict[str, float]:
    """The meter's current readings (LUFS, LU, dBTP)."""
    f = st.fstate
    tp = float(f[K.F_TP])
    return {
        "integrated_lufs": float(f[K.F_I]),
        "lra_lu": float(f[K.F_LRA]),
        "momentary_lufs": lufs(f[K.F_M]),
        "short_term_lufs": lufs(f[K.F_S]),
        "max_momentary_lufs": lufs(f[K.F_M_MAX]),
        "max_short_term_lufs": lufs(f[K.F_S_MAX]),
        "true_peak_dbtp": 20.0 * math.log10(tp) if tp > 0.0 else float("-inf"),
    }


def finish(st: MeterState) -> dict[str, float]:
    """:func:`results` at the end of a signal: the true peak also sees the interpolator's tail
    (the ringing after the last sample is real once the audio stops). ``st`` is left as it was."""
    out = results(st)
    if st.taps.shape[0]:
        probe = MeterState(*[a.copy() if isinstance(a, np.ndarray) else a for a in st])
        run(probe, np.zeros((st.kstate.shape[0], TP_TAPS_PER_PHASE // 2)))
        out["true_peak_dbtp"] = results(probe)["true_peak_dbtp"]
    return out


def _as_channels(audio) -> np.ndarray:
    x = np.asarray(audio)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim == 1:
        x = x[np.newaxis, :]
    if x.ndim != 2:
        raise ValueError(f"audio must be (frames,) or (channels, frames), got shape {x.shape}")
    return np.ascontiguousarray(x)


def analyze(audio, sample_rate: int, *, layout: str | None = None, channel_weights=None,
            true_peak: bool = True, hops: bool = False, chunk: int | None = None) -> dict:
    """Measure a whole signal: what a live meter reads after the last sample (see :func:`results`).

    ``audio`` is ``(frames,)`` or ``(channels, frames)``, float32 or float64 (kept as given, so a
    float32 signal reads exactly what the Effect reads from the same samples). With ``true_peak``
    the interpolator's tail is flushed with silence after the signal. With ``hops`` the result also
    holds ``momentary`` and ``short_term`` arrays of block powers (one per 100 ms hop, from the
    first whole window on). ``chunk`` meters in blocks of that many frames (same numbers).
    """
    x = _as_channels(audio)
    sr = int(sample_rate)
    w = resolve_weights(x.shape[0], layout, channel_weights)
    n_hops = (x.shape[1] * 10) // sr + 2 if hops else 0
    st = allocate(x.shape[0], sr, w, true_peak=true_peak, hops=n_hops)
    step = x.shape[1] if not chunk else int(chunk)
    for start in range(0, x.shape[1], max(step, 1)):
        run(st, x[:, start:start + step])
    out: dict = finish(st) if x.shape[1] else results(st)
    if hops:
        h = st.hop_out[: st.istate[K.I_HOPS_OUT]]
        out["momentary"] = h[~np.isnan(h[:, 0]), 0].copy()
        out["short_term"] = h[~np.isnan(h[:, 1]), 1].copy()
    return out
