"""Inputs only ffmpeg reads (M4A/AAC, a video's sound): probed and decoded to a temporary file,
processed and measured as any other, the temporary file gone afterwards. Real ffmpeg."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from hushbridge.effects import Chain, Gain
from hushbridge.errors import AudioFileError
from hushbridge.io import decode
from hushbridge.io.files import audio_info, process_file, read_audio
from hushbridge.measure import loudness_file

pytestmark = pytest.mark.skipif(not decode.available(), reason="ffmpeg/ffprobe not installed")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture
def m4a(tmp_path):
    """Two seconds of a stereo voice-like signal as AAC in an M4A, as a phone records it."""
    sr = 48000
    t = np.arange(2 * sr) / sr
    voice = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    src = tmp_path / "source.wav"
    sf.write(src, np.stack([voice, 0.5 * voice]).T.astype(np.float32), sr, subtype="FLOAT")
    out = tmp_path / "memo.m4a"
    ffmpeg("-i", str(src), "-c:a", "aac", "-b:a", "128k", "-metadata", "title=Episode 12", "-metadata", "artist=Host",
           str(out))
    return out


def test_an_m4a_is_probed_decoded_processed_and_its_temporary_file_removed(m4a, tmp_path):
    info = audio_info(m4a)
    assert info.format == "FFMPEG" and info.subtype == "aac" and info.channels == 2 and info.samplerate == 48000
    assert abs(info.frames - 2 * 48000) < 4096  # from the stream's duration (an encoder pads)
    ref = tmp_path / "ref.wav"
    ffmpeg("-i", str(m4a), "-c:a", "pcm_f32le", str(ref))
    expected, _ = sf.read(ref, dtype="float32", always_2d=True)
    out = tmp_path / "clean.wav"
    report = process_file(m4a, out, Chain([Gain(gain_db=-6.0)]), dc_offset="keep")
    assert report.input == str(m4a) and report.notes[0] == "decoded with ffmpeg (aac, 48000 Hz, 2 ch)"
    assert report.subtype == "PCM_24" and sf.info(out).subtype == "PCM_24"  # a lossy input: 24 bits
    y, sr = read_audio(out)
    assert sr == 48000 and y.shape == expected.T.shape
    np.testing.assert_allclose(y, expected.T * 10 ** (-6 / 20), atol=2e-6)  # 24-bit dither
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".hushbridge")]
    from hushbridge.io.metadata import read_tags

    assert read_tags(out) == {"title": "Episode 12", "artist": "Host"}  # the input's, not ffmpeg's own
    z, _ = read_audio(m4a)  # the whole-file reader decodes too
    np.testing.assert_array_equal(z, expected.T)
    m = loudness_file(m4a)
    assert m["integrated_lufs"] == pytest.approx(loudness_file(ref)["integrated_lufs"], abs=1e-6)


def test_what_ffmpeg_cannot_help_with_is_said_plainly(m4a, tmp_path, monkeypatch):
    video = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=160x120:rate=10", "-c:v", "mpeg4", str(video))
    with pytest.raises(AudioFileError, match="has no audio stream"):
        process_file(video, tmp_path / "x.wav", Chain([Gain()]))
    junk = tmp_path / "junk.m4a"
    junk.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioFileError, match="not a readable audio file"):
        audio_info(junk)
    # a problem found after decoding names the input, never the temporary file
    with pytest.raises(AudioFileError, match="processing rate 4000 Hz") as e:
        process_file(m4a, tmp_path / "x.wav", Chain([Gain()]), sample_rate=4000)
    assert str(e.value).startswith(f"{m4a}:") and ".hushbridge-decoded" not in str(e.value)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".hushbridge")]
    # without ffmpeg: the error says how to read it
    monkeypatch.setattr(decode.shutil, "which", lambda name: None)
    with pytest.raises(AudioFileError, match="install ffmpeg"):
        audio_info(m4a)


def test_the_cli_cleans_and_normalizes_an_m4a(m4a, tmp_path):
    import json
    import sys

    def hb(*args):
        return subprocess.run([sys.executable, "-m", "hushbridge", *map(str, args)], capture_output=True, text=True,
                              timeout=240)

    r = hb("process", m4a, tmp_path / "clean.flac", "--preset", "podcast")
    assert r.returncode == 0, r.stderr
    assert "decoded with ffmpeg (aac" in r.stdout and sf.info(tmp_path / "clean.flac").subtype == "PCM_24"
    r = hb("normalize", m4a, tmp_path / "n.wav", "--target", "-20")
    assert r.returncode == 0, r.stderr
    got = json.loads(hb("loudness", tmp_path / "n.wav", "--json").stdout)[0]["integrated_lufs"]
    assert got == pytest.approx(-20.0, abs=0.1)
    assert json.loads(hb("loudness", m4a, "--json").stdout)[0]["integrated_lufs"] < -9.0
    # a batch writes an input whose format it cannot write as WAV, under the input's name
    r = hb("process", m4a, tmp_path / "source.wav", "--out-dir", tmp_path / "out", "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["memo.wav", "source.wav"]
    (tmp_path / "memo.wav").write_bytes((tmp_path / "source.wav").read_bytes())
    r = hb("process", m4a, tmp_path / "memo.wav", "--out-dir", tmp_path / "out2", "-q")
    assert r.returncode != 0 and "same name" in r.stderr  # both would be out2/memo.wav



def test_review_session_24_streamed_webm_unlabelled_channels_and_loudness_renders(tmp_path):
    """A WebM written as a stream has no duration in its header (it was refused as "0 frames");
    three channels that name no speakers got ffmpeg's guess (2.1: the third weighed as an LFE);
    `process --loudness` of an M4A wrote 16 bits and dropped its tags."""
    import json
    import sys

    sr = 48000
    rng = np.random.default_rng(8)
    three = (0.1 * rng.standard_normal((2 * sr, 3))).astype(np.float32)
    wav = tmp_path / "three.wav"
    sf.write(wav, three, sr, subtype="PCM_24")
    piped = tmp_path / "piped.webm"
    subprocess.run(f"ffmpeg -nostdin -v error -y -i '{wav}' -ac 2 -c:a libopus -f webm - > '{piped}'", shell=True,
                   check=True)
    info = audio_info(piped)
    assert info.format == "FFMPEG" and info.frames == 0 and not info.length_known
    report = process_file(piped, tmp_path / "piped.wav", Chain([Gain()]))
    assert report.frames > 1.9 * sr
    mov = tmp_path / "three.mov"
    ffmpeg("-guess_layout_max", "0", "-i", str(wav), "-c:a", "pcm_s24le", str(mov))
    assert loudness_file(mov)["integrated_lufs"] == pytest.approx(loudness_file(wav)["integrated_lufs"], abs=1e-6)
    from hushbridge.io.files import wav_channel_mask

    process_file(mov, tmp_path / "three_out.wav", Chain([Gain()]))
    assert not wav_channel_mask(tmp_path / "three_out.wav")
    m4a = tmp_path / "memo.m4a"
    ffmpeg("-i", str(wav), "-ac", "1", "-c:a", "aac", "-metadata", "title=Memo", str(m4a))
    r = subprocess.run([sys.executable, "-m", "hushbridge", "process", str(m4a), str(tmp_path / "loud.wav"),
                        "--chain", "gain", "--loudness", "-20"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    from hushbridge.io.metadata import read_tags

    assert sf.info(tmp_path / "loud.wav").subtype == "PCM_24" and read_tags(tmp_path / "loud.wav") == {"title": "Memo"}
    assert sf.info(tmp_path / "loud.wav").format == "WAV"  # mono names no speakers: a plain WAV
    assert "decoded with ffmpeg (aac" in r.stdout and ".hushbridge" not in r.stdout + r.stderr
    got = json.loads(subprocess.run([sys.executable, "-m", "hushbridge", "loudness", "--json", str(tmp_path / "loud.wav")],
                                    capture_output=True, text=True, timeout=240).stdout)[0]["integrated_lufs"]
    assert got == pytest.approx(-20.0, abs=0.1)


def test_a_cut_short_m4a_is_processed_with_a_warning_and_loudness_and_normalize_say_they_decoded(m4a, tmp_path):
    """QA, session 24: a faststart M4A cut short in a transfer decoded as far as it went, with
    ffmpeg's "partial file" report dropped: the output was shorter than the file said, silently."""
    import sys

    fast = tmp_path / "fast.m4a"
    ffmpeg("-i", str(m4a), "-c", "copy", "-movflags", "+faststart", str(fast))
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size * 2 // 3])
    report = process_file(cut, tmp_path / "cut.wav", Chain([Gain()]))
    assert any("ffmpeg decoded it with errors" in w and "cut short" in w for w in report.warnings), report.warnings
    assert report.frames < audio_info(cut).frames  # what it holds, not what it promised
    assert loudness_file(cut)["truncated"].startswith(f"{cut}: ffmpeg decoded it with errors")
    assert loudness_file(m4a)["truncated"] is None and loudness_file(m4a)["decoded"].startswith("decoded with ffmpeg")

    def hb(*args):
        return subprocess.run([sys.executable, "-m", "hushbridge", *map(str, args)], capture_output=True, text=True,
                              timeout=240)

    r = hb("loudness", m4a)
    assert r.returncode == 0 and "decoded with ffmpeg (aac" in r.stderr
    r = hb("normalize", m4a, tmp_path / "n.wav", "--target", "-20")
    assert r.returncode == 0 and "decoded with ffmpeg (aac" in r.stdout
    r = hb("process", cut, tmp_path / "c2.wav", "--chain", "gain", "-q")
    assert r.returncode == 0 and "ffmpeg decoded it with errors" in r.stderr  # a warning, also with -q


def test_a_camera_s_mono_audio_streams_are_its_channels_and_a_mix_of_streams_takes_the_first(tmp_path):
    """A camera records each microphone as a mono stream (two, four): all of them are decoded,
    one per channel, as an editor shows them (only the first was: the second mic, a lav on the
    camera's input 2, was lost without a word; QA, session 30). Four are separate microphones,
    not quad. A file whose streams are not all mono (a film's 5.1 and its stereo commentary)
    takes the first, and says so."""
    freqs = (300, 500, 700, 900)
    inputs = [a for f in freqs for a in ("-f", "lavfi", "-i", f"sine=f={f}:d=1:sample_rate=48000")]
    cam = tmp_path / "C0002.mov"
    ffmpeg(*inputs, "-f", "lavfi", "-i", "color=c=black:s=64x64:d=1",
           "-map", "4:v", *[x for k in range(4) for x in ("-map", f"{k}:a")], "-c:v", "mpeg4", "-c:a", "pcm_s24le",
           str(cam))
    info = audio_info(cam)
    assert info.channels == 4 and info.merged == 4
    out = tmp_path / "cam.wav"
    report = process_file(cam, out, Chain([Gain()]))
    y, _ = read_audio(out)
    peaks = [int(np.argmax(np.abs(np.fft.rfft(y[c])))) for c in range(4)]
    assert peaks == list(freqs)  # 1 s: bin = Hz, each stream its own channel, in order
    assert any("its 4 mono audio streams as channels" in n for n in report.notes)
    m = loudness_file(cam)
    mono = loudness_file(out, layout="equal")
    assert m["integrated_lufs"] == pytest.approx(mono["integrated_lufs"], abs=0.05)  # four mics, no surround weights
    # streams of unequal length, and one that starts later: placed by their start times, padded
    # to the longest (amerge alone cut both to the shortest and put the late one early)
    late = tmp_path / "late.mov"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=3:sample_rate=48000", "-itsoffset", "0.5", "-f", "lavfi", "-i",
           "sine=f=660:d=1:sample_rate=48000", "-map", "0", "-map", "1", "-c:a", "pcm_s16le", str(late))
    report = process_file(late, tmp_path / "late.wav", Chain([Gain()]))
    y, sr = read_audio(tmp_path / "late.wav")
    assert y.shape[1] == 3 * sr and "padded with silence to the longest" in " ".join(report.notes)
    sounding = [np.flatnonzero(np.abs(y[c]) > 1e-3) for c in range(2)]
    assert sounding[0][0] < 10 and sounding[0][-1] > 3 * sr - 10
    assert abs(sounding[1][0] - sr // 2) < 10 and abs(sounding[1][-1] - 3 * sr // 2) < 10
    mixed = tmp_path / "film.mkv"
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=1", "-f", "lavfi", "-i", "sine=f=500:d=1",
           "-filter_complex", "[0:a][0:a]amerge=inputs=2[st]", "-map", "[st]", "-map", "1:a", "-c:a", "pcm_s16le",
           str(mixed))
    info = audio_info(mixed)
    assert info.channels == 2 and info.merged == 1 and info.streams == 2
    report = process_file(mixed, tmp_path / "film.wav", Chain([Gain()]))
    assert any("the first of its 2 audio streams" in n for n in report.notes)
