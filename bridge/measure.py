"""Offline loudness and level measurements (ITU-R BS.1770-4, EBU Tech 3341/3342).

Runtime dependencies: numpy and numba only (no scipy).

Audio is accepted as ``(frames,)`` for mono or ``(channels, frames)`` (the engine's layout).

- :func:`integrated_loudness`: gated integrated loudness in LUFS. The K-weighting filters are designed
  for any sample rate from the analog prototype parameters (f0, Q, gain) with the bilinear transform,
  as libebur128 does, so 44.1 kHz, 32 kHz, 16 kHz ... are exact, not 48 kHz coefficients reused.
- :func:`loudness_range`: LRA per EBU Tech 3342 (3 s short-term windows at 10 Hz, absolute gate
  -70 LUFS, relative gate -20 LU, 10th..95th percentile).
- :func:`true_peak_dbtp`: 8x oversampled peak (polyphase windowed-sinc interpolator), BS.1770-4 Annex 2.
- :func:`sample_peak_dbfs`, :func:`rms_dbfs`, :func:`noise_floor_dbfs` (10th percentile of 50 ms RMS).
- :func:`measure`: all of the above in one dict.

The loudness and true-peak numbers come from :mod:`hushbridge.dsp.loudness`, the same kernel the
live ``loudness`` meter runs, so a file measured here and a stream metered block by block agree.
"""

from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.kernels import loudness as _LK
from hushbridge.dsp.kernels.loudness import k_filter
from hushbridge.dsp import loudness as _L
from hushbridge.dsp.loudness import analyze, k_weighting_coefs, k_weighting_sos

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
    "loudness_file",
]

_LOUDNESS_OFFSET = -0.691


def _as_channels(audio) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1:
        return x[np.newaxis, :]
    if x.ndim != 2:
        raise ValueError(f"audio must be (frames,) or (channels, frames), got shape {x.shape}")
    return x


def _db(power_or_amp: float, factor: float) -> float:
    if not np.isfinite(power_or_amp) or power_or_amp <= 0.0:
        return float("-inf")
    return float(factor * math.log10(power_or_amp))


# --------------------------------------------------------------------------------------------------
# Loudness: one implementation, hushbridge.dsp.loudness (the live meter's kernel run over the clip)


def k_weight(audio, sr: float) -> np.ndarray:
    """K-weighted copy of ``audio`` as float64 ``(channels, frames)``."""
    x = np.ascontiguousarray(_as_channels(audio))
    out = np.empty_like(x)
    k_filter(x, k_weighting_coefs(sr), np.zeros((x.shape[0], 4)), out)
    return out


def _power_to_lufs(p):
    with np.errstate(divide="ignore"):
        return _LOUDNESS_OFFSET + 10.0 * np.log10(p)


def momentary_loudness(audio, sr: float) -> np.ndarray:
    """Momentary loudness (400 ms windows, 100 ms hop), LUFS, ungated."""
    return _power_to_lufs(analyze(audio, int(sr), true_peak=False, hops=True)["momentary"])


def short_term_loudness(audio, sr: float) -> np.ndarray:
    """Short-term loudness (3 s windows, 100 ms hop = 10 Hz), LUFS, ungated."""
    return _power_to_lufs(analyze(audio, int(sr), true_peak=False, hops=True)["short_term"])


def integrated_loudness(audio, sr: float) -> float:
    """Integrated loudness, LUFS (BS.1770-4: 400 ms blocks, 75 % overlap, gates -70 LUFS and -10 LU).

    Returns ``-inf`` for silence or audio shorter than one 400 ms block.
    """
    return analyze(audio, int(sr), true_peak=False)["integrated_lufs"]


def loudness_range(audio, sr: float) -> float:
    """Loudness range (LRA), LU, per EBU Tech 3342. 0.0 when there is too little audio to measure."""
    return analyze(audio, int(sr), true_peak=False)["lra_lu"]


# --------------------------------------------------------------------------------------------------
# Peaks and levels


def true_peak(audio, sr: float | None = None) -> float:
    """Linear true peak: max |x| over the 8x oversampled signal and the original samples."""
    x = _as_channels(audio)
    if x.shape[1] == 0:
        return 0.0
    tp = analyze(x, int(sr or 48000), true_peak=True)["true_peak_dbtp"]
    return 0.0 if tp == float("-inf") else float(10.0 ** (tp / 20.0))


def true_peak_dbtp(audio, sr: float | None = None) -> float:
    """True peak in dBTP (8x oversampling, BS.1770-4 Annex 2; ``sr`` is accepted for symmetry)."""
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
    """All report measurements of one clip (one pass of the loudness meter)."""
    m = analyze(audio, int(sr), true_peak=True)
    return {
        "integrated_lufs": m["integrated_lufs"],
        "true_peak_dbtp": m["true_peak_dbtp"] if _as_channels(audio).shape[1] else float("-inf"),
        "sample_peak_dbfs": sample_peak_dbfs(audio),
        "lra_lu": m["lra_lu"],
        "noise_floor_dbfs": noise_floor_dbfs(audio, sr),
        "rms_dbfs": rms_dbfs(audio),
    }


def _file_weights(path, info, layout: str | None, channel_mask: int | None) -> tuple[np.ndarray, int | None]:
    """The channels' BS.1770 weights for :func:`loudness_file` (see there) and the mask they came from."""
    from hushbridge.io.files import channel_mask_of

    mask = None if layout is not None else (channel_mask or channel_mask_of(path, info))
    if layout == "equal":
        return np.ones(info.channels), mask
    return (_L.channel_weights_from_mask(info.channels, mask) if mask
            else _L.channel_weights(info.channels, layout)), mask


def _one_block_loudness(path, *, layout: str | None = None, channel_mask: int | None = None) -> float:
    """Loudness (LUFS) of a clip shorter than BS.1770's 400 ms block, which has no integrated
    loudness: the K-weighted power over its whole length, as one block, channels weighted as
    :func:`loudness_file` weighs them; ``-inf`` under the -70 LUFS gate. For short stings and
    single words that a batch normalizes with everything else (:func:`hushbridge.normalize.
    normalize_file`, which hands it a file libsndfile reads, decoded by ffmpeg where needed)."""
    import soundfile as sf

    from hushbridge.errors import AudioFileError
    from hushbridge.io.files import audio_info, wav_order

    info = audio_info(path)
    weights, _ = _file_weights(path, info, layout, channel_mask)
    try:
        with sf.SoundFile(str(path)) as f:
            perm = wav_order(f.format, f.channels)
            data = f.read(dtype="float64", always_2d=True)
    except (sf.LibsndfileError, sf.SoundFileRuntimeError, RuntimeError) as e:
        raise AudioFileError(f"{path}: corrupt or truncated audio ({e})") from e
    if data.shape[0] == 0:
        return float("-inf")
    data[~np.isfinite(data)] = 0.0
    x = data.T if perm is None else data.T[perm]
    power = float(np.dot(np.asarray(weights, dtype=np.float64), np.mean(k_weight(x, info.samplerate) ** 2, axis=1)))
    lufs = float(_power_to_lufs(power)) if power > 0.0 else float("-inf")
    return lufs if lufs > -70.0 else float("-inf")


def loudness_file(path, *, layout: str | None = None, channel_mask: int | None = None,
                  block_frames: int = 1 << 16, timeline_s: float | None = None) -> dict[str, float]:
    """Loudness report of an audio file, read in blocks (constant memory for any duration).

    Returns ``integrated_lufs``, ``lra_lu``, ``max_momentary_lufs``, ``max_short_term_lufs``,
    ``true_peak_dbtp`` (and the momentary/short-term readings at the end), plus ``sample_rate``,
    ``channels``, ``duration_s``, ``nonfinite_samples`` (NaN/Inf samples, measured as
    silence), ``truncated`` (what a WAV cut short lacks, or what ffmpeg reported decoding an input
    only it reads, else None), ``unweighed`` (None, or why no channel counts: a file whose channel
    mask names only the LFE reads -inf by BS.1770) and ``decoded`` (how ffmpeg decoded it, or None). Channels are weighted by
    ``layout`` if given (``equal``: every channel 1.0, e.g. separate microphones), else by ``channel_mask`` (a WAV ``dwChannelMask``: for a file that cannot
    carry one, such as a render's temporary W64), else by a WAV's own channel mask where it has
    one, else by the layout FLAC and Ogg define for the count (4: quad, 7: 6.1), else by their count
    (:func:`hushbridge.dsp.loudness.channel_weights`). Raises :class:`~hushbridge.errors.AudioFileError` for a
    missing, unreadable, empty or corrupt file.

    With ``timeline_s`` (seconds, e.g. 0.1) the result also has ``timeline``: the momentary and
    short-term loudness at the end of every step and the true peak within it
    (``momentary_lufs``, ``short_term_lufs``, ``true_peak_dbtp`` lists, ``step_s``), for reports
    that say where a programme is too loud.
    """
    import soundfile as sf

    from hushbridge.errors import AudioFileError
    from hushbridge.io.files import audio_info, truncation_warning, wav_order

    info = audio_info(path)
    if info.format == "FFMPEG":  # only ffmpeg reads it: measured from a decoded copy
        from hushbridge.io.decode import decoded, decoded_note, mentions

        with decoded(path, info=info) as (tmp, said):
            try:
                out = loudness_file(tmp, layout=layout, channel_mask=channel_mask, block_frames=block_frames,
                                    timeline_s=timeline_s)
            except AudioFileError as e:
                raise AudioFileError(mentions(str(e), tmp, path)) from e
        out["truncated"] = said or (out["truncated"] and mentions(out["truncated"], tmp, path))
        out["decoded"] = decoded_note(info)
        return out
    if info.samplerate <= 3400:
        raise AudioFileError(f"{path}: sample rate {info.samplerate} Hz is too low for BS.1770 loudness")
    weights, mask = _file_weights(path, info, layout, channel_mask)
    st = _L.allocate(info.channels, info.samplerate, weights)
    frames = nonfinite = 0
    timeline: dict[str, list] | None = None
    if timeline_s is not None:
        if not timeline_s > 0:
            raise ValueError(f"timeline_s must be > 0, not {timeline_s!r}")
        block_frames = max(1, round(timeline_s * info.samplerate))
        timeline = {"momentary_lufs": [], "short_term_lufs": [], "true_peak_dbtp": []}
        tp_max = 0.0
    try:
        with sf.SoundFile(str(path)) as f:
            perm = wav_order(f.format, f.channels)  # Ogg's channel order is not the layouts'
            while True:
                data = f.read(block_frames, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                frames += data.shape[0]
                bad = ~np.isfinite(data)
                if bad.any():  # measured as silence, and said so
                    nonfinite += int(bad.sum())
                    data[bad] = 0.0
                _L.run(st, np.ascontiguousarray(data.T if perm is None else data.T[perm]))
                if timeline is not None:  # the step's readings; its own true peak, the maximum kept aside
                    now = _L.results(st)
                    timeline["momentary_lufs"].append(now["momentary_lufs"])
                    timeline["short_term_lufs"].append(now["short_term_lufs"])
                    timeline["true_peak_dbtp"].append(now["true_peak_dbtp"])
                    tp_max = max(tp_max, float(st.fstate[_LK.F_TP]))
                    st.fstate[_LK.F_TP] = 0.0
    except (sf.LibsndfileError, sf.SoundFileRuntimeError, RuntimeError) as e:
        raise AudioFileError(f"{path}: corrupt or truncated audio ({e})") from e
    if timeline is not None:
        st.fstate[_LK.F_TP] = max(tp_max, float(st.fstate[_LK.F_TP]))
    out = _L.finish(st)
    if timeline is not None:
        timeline["step_s"] = block_frames / info.samplerate
        out["timeline"] = timeline
    unweighed = None
    if mask and not np.any(np.asarray(weights) > 0.0):  # only a mask can name nothing but an LFE
        unweighed = (f"its channel mask ({mask:#x}) names only the LFE, which BS.1770 leaves out of loudness, so "
                     "it measures -inf; --layout equal measures it as full-range sound")
    out.update(sample_rate=int(info.samplerate), channels=int(info.channels), duration_s=frames / info.samplerate,
               nonfinite_samples=nonfinite, truncated=truncation_warning(path, info), unweighed=unweighed,
               decoded=None)
    return out
