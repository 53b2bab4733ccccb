"""``hushbridge loudness`` and ``hushbridge normalize``, run as a user runs them (a subprocess).

The normalized files are re-measured independently: integrated loudness with pyloudnorm, true
peak with scipy ``resample_poly`` at 8x (not our own meter).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import shared_data_dir
from scipy.signal import resample_poly

SHARED = shared_data_dir() or Path("/nonexistent")


def hb(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hushbridge", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ), timeout=240)


def scipy_true_peak_db(path: Path) -> float:
    a, _ = sf.read(str(path), always_2d=True)
    return float(20 * np.log10(np.abs(resample_poly(a.T, 8, 1, axis=1)).max()))


def pyln_integrated(path: Path) -> float:
    pyln = pytest.importorskip("pyloudnorm")
    a, sr = sf.read(str(path), always_2d=True)
    a = a[: (a.shape[0] // (sr // 10)) * (sr // 10)]
    return float(pyln.Meter(sr, filter_class="DeMan").integrated_loudness(a))


@pytest.fixture
def tone_file(tmp_path: Path) -> Path:
    """8 s stereo 1 kHz at -23 dBFS (so -23.0 LUFS), 24-bit WAV."""
    sr = 48000
    x = 10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * np.arange(8 * sr) / sr)
    path = tmp_path / "tone.wav"
    sf.write(str(path), np.stack([x, x]).T, sr, subtype="PCM_24")
    return path


def real(pattern: str, folder: str = "speech") -> Path:
    files = sorted((SHARED / folder).glob(pattern))
    if not files:
        pytest.skip(f"no shared recordings matching {pattern}")
    return files[0]


def test_loudness_table_and_json(tone_file: Path, tmp_path: Path) -> None:
    r = hb("loudness", tone_file)
    assert r.returncode == 0, r.stderr
    assert "-23.0" in r.stdout and "true peak" in r.stdout
    r = hb("loudness", "--json", tone_file, tone_file)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 2
    row = rows[0]
    assert row["file"] == str(tone_file)
    assert row["integrated_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert row["max_momentary_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert row["max_short_term_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert row["lra_lu"] == pytest.approx(0.0, abs=0.1)
    assert row["true_peak_dbtp"] == pytest.approx(-23.0, abs=0.05)
    assert row["sample_rate"] == 48000 and row["channels"] == 2 and row["duration_s"] == pytest.approx(8.0)


def test_loudness_bad_file_reported_rest_go_on(tone_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(4800), 48000)
    r = hb("loudness", "--json", bad, tmp_path / "missing.flac", tone_file, silent)
    assert r.returncode == 1
    rows = json.loads(r.stdout)
    assert [("error" in row) for row in rows] == [True, True, False, False]
    assert rows[2]["integrated_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert rows[3]["integrated_lufs"] is None  # -inf (silence) is null in JSON
    assert "bad.wav" in r.stderr and "missing.flac" in r.stderr and "2 of 4 files failed" in r.stderr
    r = hb("loudness", bad, tone_file)
    assert r.returncode == 1 and "tone.wav" in r.stdout


def test_loudness_matches_pyloudnorm_on_real_music() -> None:
    path = real("*Vibe_Ace*", "music")
    r = hb("loudness", "--json", path)
    assert r.returncode == 0, r.stderr
    a, sr = sf.read(str(path), always_2d=True)
    pyln = pytest.importorskip("pyloudnorm")
    ref = pyln.Meter(sr, filter_class="DeMan").integrated_loudness(a[: (a.shape[0] // (sr // 10)) * (sr // 10)])
    assert json.loads(r.stdout)[0]["integrated_lufs"] == pytest.approx(ref, abs=0.1)


@pytest.mark.parametrize("target,value", [("-16", -16.0), ("podcast", -16.0), ("streaming", -14.0),
                                          ("broadcast", -23.0)])
def test_normalize_targets_without_limiting(tone_file: Path, tmp_path: Path, target: str, value: float) -> None:
    out = tmp_path / "out.wav"
    r = hb("normalize", tone_file, out, "--target", target, "--true-peak", "-1")
    assert r.returncode == 0, r.stderr
    assert "no limiting needed" in r.stdout and "-23.0 LUFS" in r.stdout
    assert pyln_integrated(out) == pytest.approx(value, abs=0.2)
    assert sf.info(str(out)).subtype == "PCM_24"
    assert scipy_true_peak_db(out) <= -1.0 + 0.1


def test_normalize_real_speech_limiter_engaged(tmp_path: Path) -> None:
    """LibriSpeech at about -20 LUFS with peaks near 0 dBFS, to -16 LUFS: the gain alone would
    peak near +3.7 dBTP, so the limiter works (mildly, on a few peaks)."""
    src = real("librispeech_1034-*.flac")
    out = tmp_path / "speech.flac"
    r = hb("normalize", src, out, "-t", "podcast", "--true-peak", "-1")
    assert r.returncode == 0, r.stderr
    assert "true-peak limiter" in r.stdout
    assert scipy_true_peak_db(out) <= -1.0 + 0.1
    assert pyln_integrated(out) == pytest.approx(-16.0, abs=0.2)
    assert sf.info(str(out)).subtype == sf.info(str(src)).subtype  # format kept
    assert sf.info(str(out)).frames == sf.info(str(src)).frames


@pytest.mark.parametrize("ceiling", [-1.0, -2.0])
def test_normalize_never_past_the_ceiling_real_music(tmp_path: Path, ceiling: float) -> None:
    """Music pushed to -9 LUFS: the limiter works hard, the ceiling still holds (scipy 8x)."""
    src = real("*Hungarian*", "music")
    clip = tmp_path / "clip.wav"
    a, sr = sf.read(str(src), frames=15 * 44100, always_2d=True)
    sf.write(str(clip), a, sr, subtype="FLOAT")
    out = tmp_path / "loud.wav"
    r = hb("normalize", clip, out, "--target", "-9", "--true-peak", str(ceiling))
    assert r.returncode == 0, r.stderr
    assert scipy_true_peak_db(out) <= ceiling + 0.1
    assert sf.info(str(out)).subtype == "FLOAT"


def test_normalize_refuses_bad_input(tone_file: Path, tmp_path: Path) -> None:
    r = hb("normalize", tone_file, tone_file, "-t", "-16")
    assert r.returncode != 0 and "overwrite the input" in r.stderr
    r = hb("normalize", tone_file, tmp_path / "x.wav", "--target", "loud")
    assert r.returncode == 2 and "podcast" in r.stderr
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(48000), 48000)
    r = hb("normalize", silent, tmp_path / "y.wav")
    assert r.returncode == 1 and "silent" in r.stderr and not (tmp_path / "y.wav").exists()
    quiet = tmp_path / "quiet.wav"
    sf.write(str(quiet), 10 ** (-64 / 20) * np.sin(np.arange(48000) * 0.1), 48000, subtype="FLOAT")  # -67.7 LUFS
    r = hb("normalize", quiet, tmp_path / "z.wav", "-t", "-3")
    assert r.returncode == 1 and "more than the 60 dB normalize applies" in r.stderr
    # OUT where a folder would have to be a file: one line, no traceback, nothing left
    r = hb("normalize", tone_file, tone_file / "x.wav")
    assert r.returncode == 1 and "cannot write" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_normalize_raises_a_quiet_recording_past_one_gain_stage(tmp_path: Path) -> None:
    sr = 48000
    src = tmp_path / "far.wav"
    sf.write(str(src), 10 ** (-62 / 20) * np.sin(2 * np.pi * 440 * np.arange(6 * sr) / sr), sr, subtype="FLOAT")
    r = hb("normalize", src, tmp_path / "n.wav", "-t", "-23")
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("gain ")[1].split(" dB")[0]) > 24.0
    assert abs(pyln_integrated(tmp_path / "n.wav") - -23.0) < 0.2


def test_normalize_keeps_the_lowest_ceiling_with_a_trim_after_the_limiter(tmp_path: Path) -> None:
    sr = 44100
    t = np.arange(6 * sr) / sr
    src = tmp_path / "square.wav"  # a naive square: inter-sample peaks the limiter's lowest ceiling lets by
    sf.write(str(src), 0.9 * np.sign(np.sin(2 * np.pi * 3000 * t)), sr, subtype="PCM_24")
    out = tmp_path / "n.wav"
    r = hb("normalize", src, out, "-t", "-10", "--true-peak", "-24")
    assert r.returncode == 0, r.stderr
    assert scipy_true_peak_db(out) <= -24.0 + 0.1


def test_loudness_weighs_channels_by_the_wav_channel_mask(tmp_path: Path) -> None:
    import struct

    sr = 48000
    tone = 0.1 * np.sin(2 * np.pi * 997 * np.arange(8 * sr) / sr)
    mono = tmp_path / "mono.wav"
    sf.write(str(mono), tone, sr, subtype="FLOAT")
    x = np.zeros((tone.size, 6), np.float32)
    x[:, 3] = tone  # hexagonal FL FR FC BL BR BC: channel 3 is back left, not 5.1's LFE
    mask = 0x1 | 0x2 | 0x4 | 0x10 | 0x20 | 0x100
    guid = bytes.fromhex("0300000000001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_IEEE_FLOAT
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 6, sr, sr * 24, 24, 32, 22, 32, mask) + guid
    data = x.tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    hexagonal = tmp_path / "hexagonal.wav"
    hexagonal.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    r = hb("loudness", mono, hexagonal, "--json")
    assert r.returncode == 0, r.stderr
    m, h = (row["integrated_lufs"] for row in json.loads(r.stdout))
    assert h == pytest.approx(m + 10 * np.log10(1.41), abs=0.02)  # a surround channel: +1.5 dB


def test_process_and_normalize_keep_a_wavs_speaker_layout(tmp_path: Path) -> None:
    """A quad WAV (mask 0x33: FL FR BL BR) came out of process and normalize as a plain WAV: the
    rear pair lost its +1.5 dB weight, a unity render measured 0.8 LU quieter and normalize missed
    its target by as much (blaming the true-peak ceiling, which had limited nothing)."""
    from hushbridge.io.files import set_wav_channel_mask, wav_channel_mask

    sr = 48000
    rng = np.random.default_rng(5)
    x = (0.05 * rng.standard_normal((4 * sr, 4))).astype(np.float32)
    quad = tmp_path / "quad.wav"
    sf.write(str(quad), x, sr, subtype="PCM_24", format="WAV")
    with sf.SoundFile(str(quad), "w", sr, 4, "PCM_24", format="WAVEX") as f:
        f.write(x)
    assert set_wav_channel_mask(quad, 0x33) and wav_channel_mask(quad) == 0x33
    ref = json.loads(hb("loudness", quad, "--json").stdout)[0]["integrated_lufs"]
    out = tmp_path / "out.wav"
    assert hb("process", "-q", quad, out, "--chain", "gain").returncode == 0
    assert wav_channel_mask(out) == 0x33
    assert json.loads(hb("loudness", out, "--json").stdout)[0]["integrated_lufs"] == pytest.approx(ref, abs=0.01)
    for res, args in ((tmp_path / "n.wav", ("normalize", quad, tmp_path / "n.wav", "--target", "-23")),
                      (tmp_path / "p.wav", ("process", quad, tmp_path / "p.wav", "--chain", "gain",
                                            "--loudness", "-23"))):
        r = hb(*args)
        assert r.returncode == 0, r.stderr
        assert "ceiling held" not in r.stdout + r.stderr
        assert wav_channel_mask(res) == 0x33
        assert json.loads(hb("loudness", res, "--json").stdout)[0]["integrated_lufs"] == pytest.approx(-23.0, abs=0.1)


def test_a_format_that_loses_the_speaker_layout_is_named_with_what_readers_will_measure(tmp_path: Path) -> None:
    """QA: a 6.0 WAV (no LFE) normalized into FLAC reported -23.0 LUFS while the file, which FLAC
    can only declare as 5.1, measured -23.9 with us and with ffmpeg, and nothing said why."""
    from hushbridge.io.files import set_wav_channel_mask

    sr = 48000
    t = np.arange(4 * sr) / sr
    x = np.stack([10 ** (-28 / 20) * np.sin(2 * np.pi * 1000 * t)] * 6, axis=1).astype(np.float32)
    six = tmp_path / "six.wav"
    with sf.SoundFile(str(six), "w", sr, 6, "PCM_24", format="WAVEX") as f:
        f.write(x)
    assert set_wav_channel_mask(six, 0x707)  # 6.0: FL FR FC BC SL SR
    for args in (("normalize", six, tmp_path / "n.flac", "--target", "-23"),
                 ("process", six, tmp_path / "p.flac", "--chain", "gain", "--loudness", "-23")):
        r = hb(*args)
        assert r.returncode == 0, r.stderr
        err = " ".join(r.stderr.split())
        assert "FLAC cannot store the input's speaker layout (channel mask 0x707)" in err and "as 5.1" in err
        read = json.loads(hb("loudness", args[2], "--json").stdout)[0]["integrated_lufs"]
        assert f"measures {read:.1f} LUFS, not -23.0" in err and read < -23.5
    ok = hb("normalize", six, tmp_path / "n.wav", "--target", "-23")  # a WAV keeps it: no warning
    assert ok.returncode == 0 and "speaker layout" not in ok.stderr
    w64 = hb("normalize", six, tmp_path / "n.w64", "--target", "-23")  # W64: no mask written (QA)
    assert "W64 cannot store the input's speaker layout" in " ".join(w64.stderr.split())
    # a 4-channel WAV naming no speakers, taken as 4 equal channels, into FLAC, which defines quad
    quad = tmp_path / "four.wav"
    sf.write(str(quad), x[:, :4], sr, subtype="PCM_24")
    r = hb("normalize", quad, tmp_path / "four.flac", "--target", "-23")
    err = " ".join(r.stderr.split())
    assert "FLAC defines 4 channels as quad" in err and "measures" in err


def test_loudness_warns_about_a_truncated_wav(tone_file: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.wav"
    cut.write_bytes(tone_file.read_bytes()[: tone_file.stat().st_size // 2])
    r = hb("loudness", cut)
    assert r.returncode == 0 and "truncated" in r.stderr


def test_normalize_checks_its_ceiling_and_names_the_real_output(tone_file: Path, tmp_path: Path) -> None:
    for bad in ("5", "nan", "-60"):
        r = hb("normalize", tone_file, tmp_path / "x.wav", "--true-peak", bad)
        assert r.returncode == 2 and "true-peak ceiling" in r.stderr and "outside -24..0" in r.stderr
    r = hb("normalize", tone_file, tmp_path / "x.wav", "--subtype", "FOO")
    assert r.returncode == 1 and "x.wav: format WAV cannot store subtype FOO" in r.stderr
    assert ".norm" not in r.stderr and not list(tmp_path.glob(".*"))


def test_normalize_reports_the_peak_of_the_gain_it_applied(tmp_path: Path) -> None:
    src = real("vctk_*", "speech")
    r = hb("normalize", src, tmp_path / "n.wav", "-t", "-14", "--true-peak", "-3")
    assert r.returncode == 0, r.stderr
    before = float(r.stdout.split("true peak ")[1].split(" dBTP")[0])
    gain = float(r.stdout.split("gain ")[1].split(" dB")[0])
    if "would peak at" in r.stdout:
        shown = float(r.stdout.split("would peak at ")[1].split(" dBTP")[0])
    else:
        shown = float(r.stdout.split("(peak ")[1].split(" dBTP")[0])
    assert abs(before + gain - shown) <= 0.011


def test_loudness_and_normalize_say_when_samples_are_not_finite(tmp_path: Path) -> None:
    src = tmp_path / "nan.wav"
    x = 0.1 * np.sin(2 * np.pi * 1000 * np.arange(48000 * 3) / 48000)
    x[1000:1004] = np.nan
    sf.write(str(src), x, 48000, subtype="FLOAT")
    r = hb("loudness", src, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["nonfinite_samples"] == 4
    assert "warning:" in r.stderr and "4 NaN/Inf samples" in r.stderr
    r = hb("normalize", src, tmp_path / "n.wav")
    assert r.returncode == 0 and "4 NaN/Inf samples" in r.stderr
    assert np.isfinite(sf.read(str(tmp_path / "n.wav"))[0]).all()


def test_process_delivers_a_preset_render_at_the_loudness_target(tmp_path: Path) -> None:
    """`process --loudness podcast`: the podcast preset on real speech (which it leaves near
    -21 LUFS), delivered at -16 LUFS under -1 dBTP (pyloudnorm and scipy 8x, not our meter),
    in the input's format, time-aligned, no temporary file left; a batch too."""
    src = real("librispeech_1034-*.flac")
    out = tmp_path / "episode.flac"
    r = hb("process", src, out, "--preset", "podcast", "--loudness", "podcast")
    assert r.returncode == 0, r.stderr
    assert "LUFS (target -16)" in r.stdout and "true-peak limited" in r.stdout
    assert pyln_integrated(out) == pytest.approx(-16.0, abs=0.2)
    assert scipy_true_peak_db(out) <= -1.0 + 0.1
    assert sf.info(str(out)).subtype == sf.info(str(src)).subtype
    assert sf.info(str(out)).frames == sf.info(str(src)).frames
    # the same render without --loudness, gained by what the pass reported, lines up with it
    plain = tmp_path / "plain.wav"
    assert hb("process", src, plain, "--preset", "podcast", "--subtype", "FLOAT").returncode == 0
    a, _ = sf.read(str(plain))
    b, _ = sf.read(str(out))
    gain_db = float(r.stdout.split("gain ")[1].split(" dB")[0])
    # the delivered file is the render, gained (and limited on its peaks), sample-aligned
    g = 10 ** (gain_db / 20)
    assert np.median(np.abs(b - a * g)) < 1e-4
    n = len(a)
    corr = [float(np.dot(b[8 + k: n - 8 + k], a[8: n - 8])) for k in range(-3, 4)]
    assert int(np.argmax(corr)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode.flac", "plain.wav"]

    batch = tmp_path / "batch"
    tone = tmp_path / "tone.wav"
    sr = 48000
    x = 10 ** (-30 / 20) * np.sin(2 * np.pi * 1000 * np.arange(5 * sr) / sr)
    sf.write(str(tone), np.stack([x, x]).T, sr, subtype="PCM_16")
    r = hb("process", tone, src, "--chain", "gain", "--out-dir", batch, "-l", "-20", "--true-peak", "-3")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in batch.iterdir()) == sorted([tone.name, src.name])
    assert pyln_integrated(batch / tone.name) == pytest.approx(-20.0, abs=0.2)
    assert sf.info(str(batch / tone.name)).subtype == "PCM_16" and sf.info(str(batch / tone.name)).channels == 2
    assert scipy_true_peak_db(batch / src.name) <= -3.0 + 0.1


def test_process_loudness_refuses_what_it_cannot_deliver(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(48000 * 2), 48000)
    good = tmp_path / "out.wav"
    good.write_bytes(b"keep me")
    r = hb("process", silent, good, "--chain", "gain", "--loudness", "-16")
    assert r.returncode == 1
    assert "out.wav (as rendered): silent" in r.stderr and "nothing to normalize" in r.stderr
    assert good.read_bytes() == b"keep me"  # the old file stays
    r = hb("process", silent, tmp_path / "x.flac", "--chain", "gain", "-l", "-16", "--subtype", "FLOAT")
    assert r.returncode == 1 and "cannot store subtype FLOAT" in r.stderr
    r = hb("process", silent, good, "-l", "loud")
    assert r.returncode == 2 and "'loud' is not a loudness" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav", "silent.wav"]


def test_a_clip_shorter_than_one_400_ms_block_is_measured_as_one(tmp_path: Path) -> None:
    """A sting or a one-word drop has no BS.1770 integrated loudness (no 400 ms block to gate):
    `normalize` refused it and `process --loudness` wrote no file, so a batch lost such clips (QA,
    session 30). Now the whole clip is one block; and a file whose only sound is on the LFE is
    said to be that, not silent."""
    sr = 48000
    t = np.arange(int(0.3 * sr)) / sr
    tone = 10 ** (-20 / 20) * np.sin(2 * np.pi * 997 * t)
    clip = tmp_path / "sting.wav"
    sf.write(str(clip), np.stack([tone, tone], axis=1), sr, subtype="PCM_24")
    out = tmp_path / "n.wav"
    r = hb("normalize", clip, out, "--target", "-16")
    assert r.returncode == 0, r.stderr
    assert "300 ms, shorter than BS.1770's 400 ms block" in " ".join(r.stdout.split())
    y, _ = sf.read(str(out))
    # a steady 997 Hz stereo tone: -20 dBFS per channel is -20 LUFS (K-weighting +0.7 dB there,
    # offset -0.691), so -16 LUFS is 4 dB of gain, whatever this meter says of itself
    assert 20 * np.log10(np.abs(y).max()) == pytest.approx(-16.0, abs=0.1)
    rendered = tmp_path / "p.wav"
    r = hb("process", clip, rendered, "--chain", "gain", "--loudness", "-16")
    assert r.returncode == 0 and sf.info(str(rendered)).frames == len(t), r.stderr
    sf.write(str(tmp_path / "quiet.wav"), np.zeros((len(t), 2)), sr)
    r = hb("normalize", tmp_path / "quiet.wav", tmp_path / "q.wav")
    assert r.returncode == 1 and "silent" in r.stderr and not (tmp_path / "q.wav").exists()
    short_lfe = np.zeros((len(t), 6))
    short_lfe[:, 3] = tone  # a short one too (it was called silent)
    sf.write(str(tmp_path / "slfe.wav"), short_lfe, sr, subtype="PCM_24")
    r = hb("normalize", tmp_path / "slfe.wav", tmp_path / "sl.wav")
    assert r.returncode == 1 and "(the LFE)" in r.stderr, r.stderr
    lfe = _mics(tmp_path, 6, talking=3)  # mask-less 6 channels read as 5.1: the fourth is the LFE
    r = hb("normalize", lfe, tmp_path / "l.wav")
    assert r.returncode == 1 and "only in channels BS.1770 leaves out of loudness (the LFE)" in " ".join(r.stderr.split())


def _mics(tmp_path: Path, channels: int, talking: int, fmt: str = "WAV") -> Path:
    """A mask-less poly WAV: one 1 kHz 'talker' at -30 dBFS on mic ``talking``, the rest silent."""
    sr = 48000
    x = np.zeros((8 * sr, channels))
    x[:, talking] = 10 ** (-30 / 20) * np.sin(2 * np.pi * 1000 * np.arange(8 * sr) / sr)
    path = tmp_path / f"mics{channels}.{'wav' if fmt == 'WAV' else 'flac'}"
    sf.write(str(path), x, sr, subtype="PCM_24", format=fmt)
    return path


def test_separate_microphones_weigh_alike_with_layout_equal_and_per_channel(tmp_path: Path) -> None:
    """Six mask-less channels read as 5.1 (BS.1770's default), so a talker on mic 4 measured -inf
    and `--per-channel --loudness` refused the file as silent (QA, session 23)."""
    src = _mics(tmp_path, 6, talking=3)
    r = hb("loudness", src, "--json")
    assert json.loads(r.stdout)[0]["integrated_lufs"] is None  # as 5.1: the fourth channel is the LFE
    r = hb("loudness", src, "--json", "--layout", "equal")
    assert json.loads(r.stdout)[0]["integrated_lufs"] == pytest.approx(-33.0, abs=0.05)
    assert "has 2 channels" in " ".join(hb("loudness", src, "--layout", "stereo").stderr.split())
    out = tmp_path / "out.wav"
    r = hb("process", src, out, "--chain", "gain", "--per-channel", "--loudness", "-23")
    assert r.returncode == 0, r.stderr
    r = hb("loudness", out, "--json", "--layout", "equal")
    assert json.loads(r.stdout)[0]["integrated_lufs"] == pytest.approx(-23.0, abs=0.1)
    r = hb("normalize", src, tmp_path / "n.wav", "--layout", "equal", "--target", "-23")
    assert r.returncode == 0, r.stderr
    assert "-23.0 LUFS" in r.stdout and "read as 5.1, as BS.1770 tools take 6 channels" in " ".join(r.stderr.split())
    r = hb("process", src, tmp_path / "x.wav", "--set", "automix.range_db=12")
    assert r.returncode == 2 and "add --automix" in r.stderr


def test_loudness_is_checked_with_the_weights_it_was_set_with(tmp_path: Path) -> None:
    """A mask-less 4-channel WAV is four equal channels; written as FLAC it is read as quad. The
    gain was set with the first weights and checked with the second (-16 asked, -15.1 read)."""
    from hushbridge.normalize import normalize_file

    sr = 48000
    x = 10 ** (-30 / 20) * np.sin(2 * np.pi * 1000 * np.arange(8 * sr) / sr)
    src = tmp_path / "four.wav"
    sf.write(str(src), np.stack([x, x, x, x]).T, sr, subtype="PCM_24")
    rep = normalize_file(src, tmp_path / "four.flac", -16.0)
    assert rep.after["integrated_lufs"] == pytest.approx(-16.0, abs=0.1)
    assert any("read that way it measures" in w for w in rep.warnings)


def test_a_surround_flac_written_as_wav_keeps_its_layout_and_per_channel_on_it_warns(tmp_path: Path) -> None:
    from hushbridge.io.files import process_file, wav_channel_mask

    src = _mics(tmp_path, 6, talking=2, fmt="FLAC")  # FLAC's six channels are 5.1
    rep = process_file(src, tmp_path / "out.wav", "dialogue")
    assert wav_channel_mask(tmp_path / "out.wav") == 0x3F and not rep.warnings
    rep = process_file(src, tmp_path / "pc.wav", "dialogue", per_channel=True)
    assert any("names a surround layout" in w for w in rep.warnings)
    with pytest.raises(TypeError, match="per_channel and automix must be True or False"):
        process_file(src, tmp_path / "x.wav", "dialogue", per_channel="yes")


def test_a_file_whose_only_channel_is_named_the_lfe_says_why_it_reads_minus_inf(tmp_path: Path) -> None:
    """A mono WAV whose mask names the LFE (0x8) measures -inf by BS.1770 (the LFE is left out):
    said as that, not "silent", and --layout equal measures it."""
    from hushbridge.io.files import set_wav_channel_mask

    sr = 48000
    x = (0.1 * np.sin(2 * np.pi * 60 * np.arange(3 * sr) / sr)).astype(np.float32)
    lfe = tmp_path / "lfe.wav"
    with sf.SoundFile(str(lfe), "w", sr, 1, "FLOAT", format="WAVEX") as f:
        f.write(x)
    assert set_wav_channel_mask(lfe, 0x8)
    r = hb("loudness", lfe)
    assert r.returncode == 0 and "names only the LFE" in r.stderr and "--layout equal" in r.stderr
    r = hb("normalize", lfe, tmp_path / "n.wav", "--target", "-16")
    assert r.returncode != 0 and "names only the LFE" in r.stderr and "silent" not in r.stderr
    r = hb("normalize", lfe, tmp_path / "n.wav", "--target", "-16", "--layout", "equal")
    assert r.returncode == 0, r.stderr
    assert json.loads(hb("loudness", "--layout", "equal", tmp_path / "n.wav", "--json").stdout)[0][
        "integrated_lufs"] == pytest.approx(-16.0, abs=0.1)


def test_process_per_channel_takes_a_channel_s_own_settings_from_set_and_presets(tmp_path: Path) -> None:
    """`--set gain@2.gain_db=-6 --per-channel` turns the second mic alone down; a preset's
    `channels = { 2 = {...} }` does the same; without --per-channel the first is refused and
    the second warned about (a preset may serve both)."""
    sr = 48000
    tone = 10 ** (-30 / 20) * np.sin(2 * np.pi * 1000 * np.arange(2 * sr) / sr)
    src = tmp_path / "two.wav"
    sf.write(str(src), np.stack([tone, tone], axis=1), sr, subtype="FLOAT")
    rms = lambda y: 20 * np.log10(np.sqrt(np.mean(np.square(y[sr:], dtype=np.float64), axis=0)))  # noqa: E731
    out = tmp_path / "out.wav"
    r = hb("process", src, out, "--chain", "gain", "--per-channel", "--set", "gain@2.gain_db=-6")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(rms(sf.read(str(out))[0]), [-33.01, -39.03], atol=0.02)
    r = hb("process", src, out, "--chain", "gain", "--set", "gain@2.gain_db=-6")
    assert r.returncode == 2 and "add --per-channel" in r.stderr
    preset = tmp_path / "mics.toml"
    preset.write_text('version = 1\nname = "mics"\n[[chain]]\neffect = "gain"\nparams = { gain_db = -3.0 }\n'
                      'channels = { 1 = { gain_db = 0.0 } }\n')
    r = hb("process", src, out, "--preset", preset, "--per-channel")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(rms(sf.read(str(out))[0]), [-33.01, -36.01], atol=0.02)
    r = hb("process", src, out, "--preset", preset)
    assert r.returncode == 0 and "used with --per-channel" in " ".join(r.stderr.split())
    np.testing.assert_allclose(rms(sf.read(str(out))[0]), [-36.01, -36.01], atol=0.02)
    preset.write_text(preset.read_text().replace("1 = {", "0 = {"))
    r = hb("process", src, out, "--preset", preset, "--per-channel")
    assert r.returncode != 0 and "numbered from 1" in r.stderr


def test_per_channel_set_order_unused_channels_and_odd_numbers_are_told(tmp_path: Path) -> None:
    """QA, session 25: `--set gate.x` after a preset's channel values cleared them silently; a
    channel the input lacks was taken without a word; `gate@²` crashed; `automix@1` with
    --automix named the chain's ids."""
    sr = 48000
    tone = 10 ** (-30 / 20) * np.sin(2 * np.pi * 1000 * np.arange(sr) / sr)
    src = tmp_path / "two.wav"
    sf.write(str(src), np.stack([tone, tone], axis=1), sr, subtype="FLOAT")
    out = tmp_path / "out.wav"
    rms = lambda y: 20 * np.log10(np.sqrt(np.mean(np.square(y[sr // 2:], dtype=np.float64), axis=0)))  # noqa: E731
    # the channel's own value wins whichever --set comes first
    for order in (("gain@2.gain_db=-6", "gain.gain_db=-3"), ("gain.gain_db=-3", "gain@2.gain_db=-6")):
        r = hb("process", src, out, "--chain", "gain", "--per-channel", "--set", order[0], "--set", order[1])
        assert r.returncode == 0, r.stderr
        np.testing.assert_allclose(rms(sf.read(str(out))[0]), [-36.01, -39.03], atol=0.02)
    preset = tmp_path / "mics.toml"
    preset.write_text('version = 1\nname = "mics"\n[[chain]]\neffect = "gain"\nchannels = { 2 = { gain_db = -6.0 } }\n')
    r = hb("process", src, out, "--preset", preset, "--per-channel", "--set", "gain.gain_db=-3")
    assert r.returncode == 0 and "gain@2.gain_db=-6" in " ".join(r.stderr.split())
    r = hb("process", src, out, "--chain", "gain", "--per-channel", "--set", "gain@3.gain_db=-6")
    assert r.returncode == 0 and "gain@3 are not used" in " ".join(r.stderr.split())
    for odd in ("gain@\u00b2.gain_db=-6", "gain@02.gain_db=-6", "gain@x.gain_db=-6"):
        r = hb("process", src, out, "--chain", "gain", "--per-channel", "--set", odd)
        assert r.returncode == 2 and "ID@N.PARAM=VALUE" in r.stderr, r.stderr
    r = hb("process", src, out, "--chain", "gain", "--per-channel", "--automix", "--set", "automix@1.range_db=6")
    assert r.returncode == 2 and "no settings per channel" in r.stderr
    r = hb("osc-layout", "--chain", "gain", "--channels", "3")
    assert r.returncode == 2 and "--per-channel" in r.stderr
    r = hb("osc-layout", "--chain", "gain", "--per-channel", "--automix", "-f", "touchosc-list")
    assert r.returncode == 0 and "/hb/automix/range_db" in r.stdout and "/hb/gain@2/gain_db" in r.stdout
    # an automixer keeps a weight per microphone in any engine: its layout has them, and a
    # preset with its weights is not warned about without --per-channel (QA, session 25)
    r = hb("osc-layout", "--chain", "gain", "--automix", "--channels", "3", "-f", "touchosc-list")
    assert r.returncode == 0 and "/hb/automix@3/weight_db" in r.stdout and "/hb/gain@" not in r.stdout
    weights = tmp_path / "weights.toml"
    weights.write_text('version = 1\nname = "w"\n[[chain]]\neffect = "automix"\nchannels = { 2 = { weight_db = -3.0 } }\n'
                       '[[chain]]\neffect = "gain"\nchannels = { 2 = { gain_db = -3.0 } }\n')
    r = hb("process", src, out, "--preset", weights)
    assert r.returncode == 0 and "values per channel (gain) are used with --per-channel" in " ".join(r.stderr.split())


def test_process_automix_takes_a_weight_per_microphone(tmp_path: Path) -> None:
    """`process --automix --set automix@1.weight_db=6`: the host's mic weighed up in the gain
    sharing, with or without --per-channel (the automixer works on all channels together)."""
    sr = 48000
    t = np.arange(2 * sr) / sr
    both = np.stack([0.3 * np.sin(2 * np.pi * 200 * t), 0.3 * np.sin(2 * np.pi * 310 * t)], axis=1)
    src = tmp_path / "both.wav"
    sf.write(str(src), both, sr, subtype="FLOAT")
    out = tmp_path / "out.wav"
    cut = lambda y: 20 * np.log10(np.sqrt(np.mean(np.square(y[sr:], dtype=np.float64), axis=0)) / (0.3 / np.sqrt(2)))  # noqa: E731
    for extra in ((), ("--per-channel",)):
        r = hb("process", src, out, "--chain", "gain", "--automix", *extra, "--set", "automix@1.weight_db=6")
        assert r.returncode == 0, r.stderr
        np.testing.assert_allclose(cut(sf.read(str(out))[0]), [-0.97, -6.99], atol=0.05)
    r = hb("process", src, out, "--chain", "gain", "--automix", "--set", "automix@1.range_db=6")
    assert r.returncode == 2 and "no settings per channel but weight_db" in r.stderr
    # a weight for a microphone the file lacks is named, with or without --per-channel
    for extra in ((), ("--per-channel",)):
        r = hb("process", src, out, "--chain", "gain", "--automix", *extra, "--set", "automix@3.weight_db=6")
        assert r.returncode == 0 and "automix@3 are not used" in " ".join(r.stderr.split()), r.stderr
    r = hb("process", src, out, "--chain", "gain", "--set", "automix@2.weight_db=6")
    assert r.returncode == 2 and "add --automix" in r.stderr
    # an effect bypassed on one microphone alone
    r = hb("process", src, out, "--chain", "gain", "--per-channel", "--set", "gain.gain_db=-6", "--set", "gain@1.bypass=on")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(cut(sf.read(str(out))[0]), [0.0, -6.02], atol=0.02)
    r = hb("process", src, out, "--chain", "gain", "--per-channel", "--set", "gain@1.bypass=maybe")
    assert r.returncode == 2 and "bypass takes on/off" in r.stderr
