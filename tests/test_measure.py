"""hushbridge.measure against pyloudnorm, EBU Tech 3341/3342 style signals and scipy; make_demo determinism."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir

from hushbridge import measure as M

SHARED = shared_data_dir() or Path("/nonexistent")
SPEECH = SHARED / "speech"
MUSIC = SHARED / "music"


def _sine(freq: float, dbfs: float, seconds: float, sr: int, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return 10.0 ** (dbfs / 20.0) * np.sin(2 * np.pi * freq * t + phase)


def _recordings() -> list[Path]:
    files: list[Path] = []
    if SPEECH.is_dir():
        files += sorted(p for p in SPEECH.iterdir() if p.suffix in (".flac", ".wav", ".ogg"))[:4]
    if MUSIC.is_dir():
        files += sorted(p for p in MUSIC.iterdir() if p.suffix in (".flac", ".wav", ".ogg"))[:3]
    return files


# ------------------------------------------------------------------------------------------------ K-weighting


def test_k_weighting_48k_matches_bs1770_tables():
    sos = M.k_weighting_sos(48000)
    shelf, rlb = sos
    np.testing.assert_allclose(
        shelf, [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
        atol=1e-9,
    )
    np.testing.assert_allclose(rlb, [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], atol=1e-9)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_tech3341_sine_minus23_stereo(sr):
    s = _sine(1000.0, -23.0, 20.0, sr)
    assert M.integrated_loudness(np.stack([s, s]), sr) == pytest.approx(-23.0, abs=0.1)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_tech3341_sine_minus33_stereo(sr):
    s = _sine(1000.0, -33.0, 20.0, sr)
    assert M.integrated_loudness(np.stack([s, s]), sr) == pytest.approx(-33.0, abs=0.1)


def test_mono_and_channel_layout():
    sr = 48000
    s = _sine(1000.0, -23.0, 5.0, sr)
    # one channel of a -23 dBFS sine is 3 dB below the stereo pair
    assert M.integrated_loudness(s, sr) == pytest.approx(M.integrated_loudness(s[None, :], sr))
    assert M.integrated_loudness(s, sr) == pytest.approx(-26.01, abs=0.1)


def test_silence_and_short_input():
    assert M.integrated_loudness(np.zeros(48000), 48000) == float("-inf")
    assert M.integrated_loudness(np.zeros(100), 48000) == float("-inf")
    assert M.loudness_range(np.zeros(48000), 48000) == 0.0


# ------------------------------------------------------------------------------------------------ pyloudnorm


def _trim_to_hops(a: np.ndarray, sr: int) -> np.ndarray:
    # pyloudnorm rounds the block count and so may add one incomplete final block (BS.1770 uses whole
    # blocks only); cut to whole 100 ms hops so both meters gate exactly the same blocks
    hop = sr // 10
    return a[: (a.shape[0] // hop) * hop]


@pytest.mark.parametrize("path", _recordings(), ids=lambda p: p.name[:40])
def test_integrated_loudness_matches_pyloudnorm(path):
    pyln = pytest.importorskip("pyloudnorm")
    sf = pytest.importorskip("soundfile")
    import soxr

    audio, native = sf.read(str(path), dtype="float64", always_2d=True)  # (frames, channels)
    audio = audio[: 30 * native]
    for sr in sorted({native, 32000, 44100, 48000}):
        a = audio if sr == native else soxr.resample(audio, native, sr)
        a = _trim_to_hops(a, sr)
        mine = M.integrated_loudness(a.T, sr)
        # same analog-prototype K-weighting design as ours and libebur128: should agree closely
        ref_deman = pyln.Meter(sr, filter_class="DeMan").integrated_loudness(a)
        assert mine == pytest.approx(ref_deman, abs=0.1), (sr, mine, ref_deman)
        assert mine == pytest.approx(ref_deman, abs=0.01), (sr, mine, ref_deman)
        if sr >= 32000:
            # pyloudnorm's default K-weighting (RBJ cookbook shelf) drifts from the BS.1770 curve as
            # the rate falls (~0.04 LU at 48 kHz, ~0.12 LU at 16 kHz): compare at 32 kHz and up
            ref = pyln.Meter(sr).integrated_loudness(a)
            assert mine == pytest.approx(ref, abs=0.1), (sr, mine, ref)


# ------------------------------------------------------------------------------------------------ LRA


def test_tech3342_case1_lra():
    sr = 48000
    s = np.concatenate([_sine(1000.0, -20.0, 20.0, sr), _sine(1000.0, -30.0, 20.0, sr)])
    assert M.loudness_range(np.stack([s, s]), sr) == pytest.approx(10.0, abs=1.0)


def test_tech3342_case2_lra():
    sr = 44100
    s = np.concatenate([_sine(1000.0, -20.0, 20.0, sr), _sine(1000.0, -15.0, 20.0, sr)])
    assert M.loudness_range(np.stack([s, s]), sr) == pytest.approx(5.0, abs=1.0)


def test_lra_steady_tone_is_zero():
    sr = 48000
    s = _sine(1000.0, -20.0, 10.0, sr)
    assert M.loudness_range(s, sr) == pytest.approx(0.0, abs=0.1)


# ------------------------------------------------------------------------------------------------ peaks, levels


def _faded(x: np.ndarray, sr: int, fade_s: float = 0.05) -> np.ndarray:
    n = int(fade_s * sr)
    w = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    y = x.copy()
    y[:n] *= w
    y[-n:] *= w[::-1]
    return y


@pytest.mark.parametrize("sr", [44100, 48000])
def test_true_peak_quarter_rate_sine_45deg(sr):
    scipy_signal = pytest.importorskip("scipy.signal")
    n = sr
    # samples at +-1.0 (0 dBFS sample peak); the underlying sine peaks at sqrt(2), +3.01 dB
    x = np.sqrt(2.0) * np.sin(np.pi / 2 * np.arange(n) + np.pi / 4)
    x = _faded(x, sr)  # no abrupt start/stop (its Gibbs overshoot is real, but not what we test)
    assert M.sample_peak_dbfs(x) == pytest.approx(0.0, abs=1e-6)
    tp = M.true_peak_dbtp(x, sr)
    ref = 20 * np.log10(np.max(np.abs(scipy_signal.resample_poly(x, 8, 1))))
    assert tp == pytest.approx(3.01, abs=0.05)
    assert tp == pytest.approx(ref, abs=0.05)


def test_true_peak_against_8x_on_real_audio():
    scipy_signal = pytest.importorskip("scipy.signal")
    sf = pytest.importorskip("soundfile")
    files = _recordings()
    if not files:
        pytest.skip("no shared recordings")
    for path in files[:3]:
        a, sr = sf.read(str(path), dtype="float64", always_2d=True)
        a = a[: 10 * sr].T
        tp = M.true_peak_dbtp(a, sr)
        ref = 20 * np.log10(np.max(np.abs(scipy_signal.resample_poly(a, 8, 1, axis=1))))
        # 4x can only miss inter-sample peaks, by a little
        assert ref - 0.6 <= tp <= ref + 0.05, (path.name, tp, ref)
        assert tp >= M.sample_peak_dbfs(a) - 1e-9


def test_levels_and_measure_dict():
    sr = 48000
    rng = np.random.default_rng(1)
    noise = 10 ** (-60 / 20) * rng.standard_normal(sr * 4)
    x = noise.copy()
    x[sr : 3 * sr] += _sine(1000.0, -10.0, 2.0, sr)
    assert M.rms_dbfs(_sine(1000.0, 0.0, 1.0, sr)) == pytest.approx(-3.01, abs=0.01)
    assert M.noise_floor_dbfs(x, sr) == pytest.approx(-60.0, abs=1.0)
    d = M.measure(x, sr)
    assert set(d) == {"integrated_lufs", "true_peak_dbtp", "sample_peak_dbfs", "lra_lu", "noise_floor_dbfs", "rms_dbfs"}
    assert d["integrated_lufs"] == pytest.approx(M.integrated_loudness(x, sr))
    assert d["sample_peak_dbfs"] == pytest.approx(-10.0, abs=0.15)  # sine + noise
    assert d["true_peak_dbtp"] >= d["sample_peak_dbfs"]
    assert all(isinstance(v, float) for v in d.values())


def test_no_scipy_at_runtime():
    import ast

    tree = ast.parse(Path(M.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "scipy" not in names and "pyloudnorm" not in names


# ------------------------------------------------------------------------------------------------ demo clip


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")), reason="needs espeak-ng and flite")
def test_make_demo_is_deterministic(tmp_path):
    sf = pytest.importorskip("soundfile")
    from hushbridge.data import make_demo

    outs = []
    for i in range(2):
        out = tmp_path / f"demo{i}.flac"
        clean = tmp_path / f"clean{i}.flac"
        assert make_demo.main(["--out", str(out), "--seed", "7", "--seconds", "3", "--clean", str(clean)]) == 0
        outs.append((sf.read(str(out))[0], sf.read(str(clean))[0]))
    (a0, c0), (a1, c1) = outs
    assert a0.shape == (3 * 48000,) and sf.info(str(tmp_path / "demo0.flac")).subtype == "PCM_24"
    np.testing.assert_array_equal(a0, a1)
    np.testing.assert_array_equal(c0, c1)
    assert np.max(np.abs(a0)) < 1.0
    other = tmp_path / "other.flac"
    make_demo.main(["--out", str(other), "--seed", "8", "--seconds", "3"])
    assert not np.array_equal(sf.read(str(other))[0], a0)


def test_shipped_demo_clip():
    sf = pytest.importorskip("soundfile")
    path = Path(M.__file__).resolve().parent / "data" / "demo.flac"
    if not path.exists():
        pytest.skip("demo.flac not generated")
    info = sf.info(str(path))
    assert info.samplerate == 48000 and info.channels == 1 and info.subtype == "PCM_24"
    assert 11.0 <= info.duration <= 13.0
    assert path.stat().st_size < 1_100_000
    audio, sr = sf.read(str(path))
    d = M.measure(audio, sr)
    assert d["sample_peak_dbfs"] < 0.0
    assert -26.0 < d["integrated_lufs"] < -16.0
    # noisy: the floor sits 10-15 dB-ish under the speech
    assert -40.0 < d["noise_floor_dbfs"] < -25.0


@pytest.mark.parametrize("args", [["--seconds", "0"], ["--seconds", "nan"], ["--seconds", "-1"],
                                  ["--out", "demo.wav"], ["--clean", "dry.ogg"]])
def test_make_demo_refuses_bad_arguments(args, capsys):
    from hushbridge.data import make_demo

    with pytest.raises(SystemExit) as e:
        make_demo.main(args)
    assert e.value.code == 2 and "error: argument" in capsys.readouterr().err


def test_flac_and_ogg_files_are_weighed_by_the_layout_their_format_defines(tmp_path):
    """FLAC and Ogg define 4 channels as quad (FL FR BL BR) and 7 as 6.1; a 4-channel FLAC was
    weighed as four equal channels, 0.8 LU off what ffmpeg reads (QA). A WAV without a channel
    mask defines nothing: it stays equal."""
    import soundfile as sf

    from hushbridge.io.files import set_wav_channel_mask

    sr = 48000
    x = (np.random.default_rng(4).standard_normal((2 * sr, 4)) * 0.05).astype(np.float32)
    flac, ogg, plain, quad = (tmp_path / n for n in ("q.flac", "q.ogg", "q_plain.wav", "q_quad.wav"))
    sf.write(str(flac), x, sr, subtype="PCM_24")
    sf.write(str(ogg), x, sr)
    sf.write(str(plain), x, sr, subtype="PCM_24")
    with sf.SoundFile(str(quad), "w", sr, 4, "PCM_24", format="WAVEX") as f:
        f.write(x)
    assert set_wav_channel_mask(quad, 0x33)
    lufs = {p.name: M.loudness_file(p)["integrated_lufs"] for p in (flac, ogg, plain, quad)}
    assert lufs["q.flac"] == pytest.approx(lufs["q_quad.wav"], abs=0.01)
    # through the Vorbis codec the level differs; the weighting is the quad one
    assert lufs["q.ogg"] == pytest.approx(M.loudness_file(ogg, channel_mask=0x33)["integrated_lufs"], abs=1e-9)
    decoded = tmp_path / "q_ogg_plain.wav"  # the same decoded samples in a WAV without a mask
    sf.write(str(decoded), sf.read(str(ogg), dtype="float32")[0], sr, subtype="FLOAT")
    assert lufs["q.ogg"] - M.loudness_file(decoded)["integrated_lufs"] > 0.7
    assert lufs["q_quad.wav"] - lufs["q_plain.wav"] > 0.7  # the rear pair's +1.5 dB


def test_a_file_measured_with_a_timeline_says_when_it_is_loud_and_where_it_peaks(tmp_path):
    """loudness_file(timeline_s=0.1): the short-term loudness at the end of each step is the
    meter's (the same as short_term_loudness where both have a full 3 s window), the true peak
    is each step's own, and the summary is as without the timeline."""
    import soundfile as sf

    from hushbridge.measure import loudness_file, short_term_loudness

    sr = 48000
    t = np.arange(10 * sr) / sr
    x = 0.05 * np.sin(2 * np.pi * 1000 * t)
    x[5 * sr:6 * sr] *= 10  # one loud second, 5..6 s
    path = tmp_path / "prog.wav"
    sf.write(path, x.astype(np.float32), sr, subtype="FLOAT")
    plain, timed = loudness_file(path), loudness_file(path, timeline_s=0.1)
    for key in ("integrated_lufs", "lra_lu", "max_short_term_lufs", "true_peak_dbtp"):
        assert timed[key] == plain[key]
    line = timed["timeline"]
    assert line["step_s"] == 0.1 and len(line["short_term_lufs"]) == 100
    ref = short_term_loudness(x, sr)  # its first reading ends at 3 s, the timeline's 30th step
    np.testing.assert_allclose(line["short_term_lufs"][29:29 + len(ref)], ref, atol=1e-6)
    loud = [i for i, tp in enumerate(line["true_peak_dbtp"]) if tp > -10.0]
    # the steps of the loud second (the oversampling filter's few samples of delay may reach the next)
    assert loud[0] == 50 and loud[-1] in (59, 60) and loud == list(range(50, loud[-1] + 1))
