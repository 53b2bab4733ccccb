"""Offline file rendering: formats, alignment, dither, clipping policy, safety on failure."""
import os

import numpy as np
import pytest
import soundfile as sf

from hushbridge.effects import Chain, Gain, ProcessSpec
from hushbridge.errors import AudioFileError
from hushbridge.io.files import process_file, read_audio


def write(path, data, sr=48000, subtype="PCM_24"):
    sf.write(str(path), np.asarray(data).T, sr, subtype=subtype)
    return path


def noise(ch, n, seed=0, level=0.25):
    return (np.random.default_rng(seed).standard_normal((ch, n)) * level).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_keeps_rate_channels_subtype_and_length(tmp_path, channels):
    src = write(tmp_path / "in.wav", noise(channels, 44100 + 17), sr=44100, subtype="PCM_16")
    dst = tmp_path / "out.wav"
    rep = process_file(src, dst, Chain([Gain(gain_db=-6)]))
    info = sf.info(str(dst))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (44100, channels, "PCM_16", 44117)
    assert rep.frames == 44117
    x, _ = read_audio(src)
    y, _ = read_audio(dst)
    # -6 dB within the 16-bit dither (±1 LSB TPDF) plus rounding
    assert np.max(np.abs(y - x * 10 ** (-6 / 20))) < 2.5 / 32768


def test_float_output_bit_exact_and_keeps_overs(tmp_path):
    x = noise(2, 10000, level=0.8)
    src = write(tmp_path / "in.wav", x, subtype="FLOAT")
    dst = tmp_path / "out.wav"
    rep = process_file(src, dst, Chain([Gain(gain_db=6)]))
    y, _ = read_audio(dst)
    ref = Chain([Gain(gain_db=6)])(x, 48000)
    np.testing.assert_array_equal(y, ref)
    assert rep.over_full_scale > 0 and rep.clipped == 0
    assert np.abs(y).max() > 1.0  # float formats keep samples beyond full scale


def test_integer_output_clips_and_reports(tmp_path):
    src = write(tmp_path / "in.wav", noise(1, 10000, level=0.8), subtype="PCM_24")
    rep = process_file(src, tmp_path / "out.wav", Chain([Gain(gain_db=12)]))
    assert rep.clipped > 0 and rep.over_full_scale >= rep.clipped


def test_tpdf_dither_decorrelates_quantisation(tmp_path):
    # a -100 dBFS tone vanishes without dither in 16 bit; with TPDF it survives as noise + tone
    sr = 48000
    t = np.arange(sr) / sr
    x = (10 ** (-100 / 20) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None]
    src = write(tmp_path / "in.wav", x, subtype="FLOAT")
    process_file(src, tmp_path / "out.wav", Chain([Gain()]), subtype="PCM_16")
    y, _ = read_audio(tmp_path / "out.wav")
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert spectrum[1000] > 5 * np.median(spectrum)
    assert np.std(y) > 0.5 / 32768  # dither noise present


def test_resampling_with_rate_option(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    src = write(tmp_path / "in.wav", np.sin(2 * np.pi * 1000 * t)[None] * 0.5, sr=sr, subtype="FLOAT")
    rep = process_file(src, tmp_path / "out.wav", Chain([Gain()]), sample_rate=48000)
    y, sr2 = read_audio(tmp_path / "out.wav")
    assert sr2 == 48000 and y.shape[1] == 48000 and rep.notes
    spectrum = np.abs(np.fft.rfft(y[0, 4800:-4800] * np.hanning(48000 - 9600)))
    freqs = np.fft.rfftfreq(48000 - 9600, 1 / 48000)
    assert abs(freqs[np.argmax(spectrum)] - 1000) < 3


def test_formats_flac_ogg(tmp_path):
    x = noise(2, 20000)
    src = write(tmp_path / "in.flac", x, subtype="PCM_24")
    process_file(src, tmp_path / "out.flac", Chain([Gain()]))
    assert sf.info(str(tmp_path / "out.flac")).subtype == "PCM_24"
    process_file(src, tmp_path / "out.ogg", Chain([Gain()]))
    assert sf.info(str(tmp_path / "out.ogg")).format == "OGG"


def test_an_opus_file_is_opus_at_an_opus_rate(tmp_path):
    """``.opus`` was written as Ogg Vorbis (the Ogg default)."""
    src = write(tmp_path / "in.wav", noise(1, 48000), sr=48000)
    process_file(src, tmp_path / "out.opus", Chain([Gain()]))
    assert sf.info(str(tmp_path / "out.opus")).subtype == "OPUS"
    src44 = write(tmp_path / "in44.wav", noise(1, 44100), sr=44100)
    with pytest.raises(AudioFileError, match="Opus stores 8, 12, 16, 24, 48 kHz, not 44100 Hz: add --rate 48000"):
        process_file(src44, tmp_path / "out44.opus", Chain([Gain()]))
    assert not (tmp_path / "out44.opus").exists()
    process_file(src44, tmp_path / "out44.opus", Chain([Gain()]), sample_rate=48000)
    assert sf.info(str(tmp_path / "out44.opus")).samplerate == 48000


def test_subtypes_the_output_format_cannot_hold_fall_back_with_a_note(tmp_path):
    x = (0.3 * np.sin(np.arange(48000) * 0.05)).astype(np.float32)
    mp3 = tmp_path / "in.mp3"
    sf.write(str(mp3), x, 48000, format="MP3")  # libsndfile says WAV takes MPEG_LAYER_III; it cannot
    report = process_file(mp3, tmp_path / "out.wav", Chain([Gain()]))
    # decoded lossy audio is float: 24-bit keeps it (16-bit requantized it for nothing)
    assert sf.info(str(tmp_path / "out.wav")).subtype == "PCM_24" == report.subtype
    assert any("cannot store the input's MPEG_LAYER_III" in n for n in report.notes)
    with pytest.raises(AudioFileError, match=r"cannot store subtype MPEG_LAYER_III \(it can: PCM_16, (?!.*MPEG)"):
        process_file(mp3, tmp_path / "o2.wav", Chain([Gain()]), subtype="MPEG_LAYER_III")
    flt = tmp_path / "in.wav"
    sf.write(str(flt), x, 48000, subtype="FLOAT")
    report = process_file(flt, tmp_path / "out.flac", Chain([Gain()]))  # FLAC has no float: 24-bit, not 16
    assert sf.info(str(tmp_path / "out.flac")).subtype == "PCM_24"
    assert any("FLAC PCM_24" in n for n in report.notes)
    report = process_file(flt, tmp_path / "same.wav", Chain([Gain()]))
    assert report.subtype == "FLOAT" and not report.notes


def test_refuses_in_equals_out_and_keeps_file(tmp_path):
    src = write(tmp_path / "in.wav", noise(1, 1000))
    before = src.read_bytes()
    with pytest.raises(AudioFileError, match="refusing to overwrite the input"):
        process_file(src, tmp_path / "." / "in.wav", Chain([Gain()]))
    assert src.read_bytes() == before


@pytest.mark.parametrize("kind", ["missing", "corrupt", "empty", "truncated"])
def test_bad_input_leaves_existing_output_untouched(tmp_path, kind):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"precious")
    src = tmp_path / "in.wav"
    if kind == "corrupt":
        src.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    elif kind == "empty":
        sf.write(str(src), np.zeros((0, 1), np.float32), 48000)
    elif kind == "truncated":
        write(src, noise(2, 48000))
        data = src.read_bytes()
        src.write_bytes(data[: len(data) // 2])
    if kind == "truncated":
        # libsndfile reads a truncated WAV as shorter audio; it must still be rendered atomically
        process_file(src, dst, Chain([Gain()]))
        assert sf.info(str(dst)).frames > 0
        return
    with pytest.raises(AudioFileError):
        process_file(src, dst, Chain([Gain()]))
    assert dst.read_bytes() == b"precious"
    assert not [p for p in os.listdir(tmp_path) if ".part" in p]


def test_nonfinite_input_never_reaches_output(tmp_path):
    x = noise(2, 5000)
    x[0, 100:200] = np.nan
    x[1, 300] = np.inf
    src = write(tmp_path / "in.wav", x, subtype="FLOAT")
    rep = process_file(src, tmp_path / "out.wav", Chain([Gain()]))
    y, _ = read_audio(tmp_path / "out.wav")
    assert np.isfinite(y).all() and rep.nonfinite_input == 101


def test_failure_midway_keeps_old_output(tmp_path):
    class Fails(Gain):
        name = "fails"
        calls = 0

        def process(self, block):
            Fails.calls += 1
            if Fails.calls > 30:
                raise RuntimeError("disk on fire")
            super().process(block)

    src = write(tmp_path / "in.wav", noise(1, 48000 * 4))
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="disk on fire"):
        process_file(src, dst, Chain([Fails()]), block_size=512)
    assert dst.read_bytes() == b"precious"
    assert not [p for p in os.listdir(tmp_path) if ".part" in p]


def test_file_backend_runs_the_engine_with_the_same_samples_as_offline(tmp_path):
    from hushbridge.engine import Engine
    from hushbridge.io.files import FileBackend
    from hushbridge.presets import load_preset

    x = noise(2, 48000, level=0.3)
    src = write(tmp_path / "in.wav", x, subtype="FLOAT")
    process_file(src, tmp_path / "offline.wav", load_preset("dialogue"), block_size=4096)
    backend = FileBackend(Engine(load_preset("dialogue"), channels=2), src, tmp_path / "engine.wav", block_size=128)
    backend.start()
    a, _ = read_audio(tmp_path / "offline.wav")
    b, _ = read_audio(tmp_path / "engine.wav")
    reference = load_preset("dialogue")
    reference.prepare(ProcessSpec(48000, 128, 2))
    assert backend.report.latency_samples == reference.latency_samples > 0
    np.testing.assert_array_equal(a, b)


def test_dither_spares_a_channel_on_the_grid_and_silence_but_no_sample_of_a_changed_one():
    from hushbridge.io.files import Quantizer

    rng = np.random.default_rng(3)
    on_grid = np.round(rng.uniform(-0.5, 0.5, (2, 4000)) * 32768) / 32768
    q = Quantizer("PCM_16")(on_grid.astype(np.float32)) // 2 ** 16
    assert np.array_equal(q.T, np.round(on_grid * 32768))  # bit-exact, digital silence included
    off_grid = (on_grid + 0.25 / 32768).astype(np.float32)
    err = Quantizer("PCM_16")(off_grid) // 2 ** 16 - off_grid.T.astype(np.float64) * 32768
    # plain rounding would leave -0.25 LSB everywhere; TPDF dither spreads it (variance 1/6 + 1/16)
    assert abs(err.mean()) < 0.05 and 0.15 < err.var() < 0.3
    # a 16-bit input through -6.02 dB: half its samples land on the grid; they are dithered like
    # the rest (they were spared, so the error's power followed the signal), and zeros stay zero
    halved = (np.round(rng.uniform(-0.5, 0.5, (1, 40000)) * 32768) / 65536).astype(np.float32)
    halved[0, :1000] = 0.0
    err = (Quantizer("PCM_16")(halved) // 2 ** 16)[:, 0] - halved[0].astype(np.float64) * 32768
    exact = halved[0] * 32768 == np.floor(halved[0] * 32768)
    assert np.all(err[:1000] == 0.0)
    assert err[1000:][exact[1000:]].var() == pytest.approx(err[1000:][~exact[1000:]].var(), rel=0.2)


def test_a_preset_name_or_an_effect_is_a_chain_too_and_anything_else_a_clear_error(tmp_path):
    src = write(tmp_path / "in.wav", noise(1, 48000))
    rep = process_file(src, tmp_path / "p.wav", "podcast")
    assert rep.frames == 48000 and sf.info(str(tmp_path / "p.wav")).frames == 48000
    process_file(src, tmp_path / "g.wav", Gain(gain_db=-6))
    y, _ = read_audio(tmp_path / "g.wav")
    x, _ = read_audio(src)
    assert np.max(np.abs(y - x * 10 ** (-6 / 20))) < 2.5 / 2**23
    with pytest.raises(TypeError, match="must be a Chain, an Effect or a preset name, not list"):
        process_file(src, tmp_path / "x.wav", [Gain()])
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.skipif(__import__("shutil").which("ffmpeg") is None, reason="needs ffmpeg (apt ffmpeg)")
def test_ogg_and_opus_surround_channels_are_read_and_written_in_wav_order(tmp_path):
    """Vorbis and Opus store 5.1 as FL C FR RL RR LFE and libsndfile hands that order over:
    the meter weighed the rear left as the LFE (0) and the LFE as a surround, and a WAV written
    into Opus came out with its centre on the right. ffmpeg (which maps to WAV order) is the
    independent check."""
    import subprocess

    from hushbridge.measure import loudness_file

    sr = 48000
    t = np.arange(2 * sr) / sr
    freqs = [300.0, 500.0, 700.0, 60.0, 1100.0, 1300.0]  # FL FR FC LFE BL BR; the LFE gets a low tone
    x = np.stack([0.1 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)
    wav = tmp_path / "surround.wav"
    sf.write(str(wav), x, sr, subtype="PCM_24")

    def tones(data):  # dominant frequency of each channel, (channels, frames) data
        spec = np.abs(np.fft.rfft(data[:, sr // 2: sr // 2 + sr], axis=1))
        return list(np.fft.rfftfreq(sr, 1 / sr)[np.argmax(spec, axis=1)])

    for ext in ("ogg", "opus"):
        enc = tmp_path / f"by_ffmpeg.{ext}"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(enc)], check=True)
        y, _ = read_audio(enc)
        assert tones(y) == freqs, ext
        assert loudness_file(enc)["integrated_lufs"] == pytest.approx(loudness_file(wav)["integrated_lufs"], abs=0.3)
        ours = tmp_path / f"by_us.{ext}"
        process_file(wav, ours, Chain([Gain()]))
        back = tmp_path / f"back_{ext}.wav"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(ours), str(back)], check=True)
        z, _ = sf.read(str(back), dtype="float32", always_2d=True)
        assert tones(z.T) == freqs, ext


def test_a_quad_flac_written_as_wav_says_it_is_quad(tmp_path):
    """A 4-channel FLAC is quad by FLAC's definition; a WAV has to say so in its channel mask,
    or readers (and our meter) weigh its rear pair like the front one."""
    from hushbridge.io.files import wav_channel_mask
    from hushbridge.measure import loudness_file

    x = noise(4, 96000, seed=7, level=0.05)
    flac = tmp_path / "quad.flac"
    sf.write(str(flac), x.T, 48000, subtype="PCM_24")
    out = tmp_path / "quad.wav"
    process_file(flac, out, Chain([Gain()]))
    assert wav_channel_mask(out) == 0x33
    assert loudness_file(out)["integrated_lufs"] == pytest.approx(loudness_file(flac)["integrated_lufs"], abs=0.01)


def _with_offset(seconds, offset, sr=48000, seed=1):
    """A quiet noise floor, then a tone from 0.3 s on, riding on a DC offset (a cheap interface)."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.003 * np.random.default_rng(seed).standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * 220 * t) * (t >= 0.3)
    return (x + offset).astype(np.float32)


def test_a_dc_offset_is_removed_before_the_chain_so_its_filters_start_without_a_thump(tmp_path):
    from hushbridge.effects import HighPass

    x = _with_offset(4.0, 0.1)
    src = write(tmp_path / "in.wav", x[None], subtype="FLOAT")
    kept = process_file(src, tmp_path / "kept.wav", Chain([HighPass(cutoff_hz=80.0)]), dc_offset="keep")
    removed = process_file(src, tmp_path / "removed.wav", Chain([HighPass(cutoff_hz=80.0)]))
    yk, _ = read_audio(tmp_path / "kept.wav")
    yr, _ = read_audio(tmp_path / "removed.wav")
    head = slice(0, int(0.3 * 48000))  # before the tone: the floor, and the thump if there is one
    # the floor (0.003 rms) only, either way: the filter starts in the steady state of the first
    # sample now (from rest it met a 0.1 step: a thump of 0.05 and more, before session 25)
    assert np.abs(yk[0, head]).max() < 0.015 and np.abs(yr[0, head]).max() < 0.015
    # once the high-pass has settled the two agree: only the head changed
    np.testing.assert_allclose(yr[0, 48000:], yk[0, 48000:], atol=2e-4)
    assert not kept.notes and any("DC offset" in n and "+0.1000" in n for n in removed.notes)
    # a head that fades in (an editor's clip fade) or starts on a quiet lead-in before the offset
    # comes: the subtraction follows the offset in, so it adds no step of its own (QA, session 23:
    # subtracting it from the first sample made a -19 dBFS thump out of a -37 dBFS one)
    fade = x.copy()
    fade[:480] *= np.linspace(0.0, 1.0, 480)
    lead = np.concatenate([0.0001 * np.random.default_rng(5).standard_normal(960).astype(np.float32), x])
    for name, y in (("fade", fade), ("lead", lead)):
        src = write(tmp_path / f"{name}.wav", y[None], subtype="FLOAT")
        peaks = []
        for mode in ("keep", "remove"):
            process_file(src, tmp_path / "o.wav", Chain([HighPass(cutoff_hz=80.0)]), dc_offset=mode)
            peaks.append(np.abs(read_audio(tmp_path / "o.wav")[0][0, : int(0.3 * 48000)]).max())
        assert peaks[1] <= peaks[0] * 1.05, (name, peaks)


def test_audio_without_an_offset_and_offsets_that_are_content_are_left_alone(tmp_path):
    sr = 48000
    cases = {
        "none": _with_offset(2.0, 0.0)[None],
        "short": _with_offset(0.2, 0.1)[None],  # under 0.25 s: too few quiet stretches to tell
        # a one-shot: its lopsided decay has a mean, but not a steady one, and none in its tail
        "one-shot": (np.exp(-np.arange(sr // 2) / (0.05 * sr)) * np.sin(2 * np.pi * 50 * np.arange(sr // 2) / sr)
                     + 0.3 * np.exp(-np.arange(sr // 2) / (0.01 * sr))).astype(np.float32)[None],
        "swell": (np.linspace(0.0, 0.3, 3 * sr) + _with_offset(3.0, 0.0)).astype(np.float32)[None],  # not steady
        # a kick loop's lopsided waveform has a steady mean, but not in the quiet between kicks
        "kick": np.tile(np.exp(-np.arange(sr // 2) / (0.05 * sr)) * np.sin(2 * np.pi * 50 * np.arange(sr // 2) / sr)
                        + 0.3 * np.exp(-np.arange(sr // 2) / (0.01 * sr)), 8).astype(np.float32)[None],
        # a channel starting in digital silence keeps its offset (removing it would put the step at the start)
        "silent head": np.concatenate([np.zeros(sr // 2, np.float32), _with_offset(2.0, 0.1)])[None],
    }
    for name, x in cases.items():
        src = write(tmp_path / f"{name}.wav", x, subtype="FLOAT")
        a = process_file(src, tmp_path / "a.wav", Chain([Gain(gain_db=0.0)]))
        process_file(src, tmp_path / "b.wav", Chain([Gain(gain_db=0.0)]), dc_offset="keep")
        np.testing.assert_array_equal(read_audio(tmp_path / "a.wav")[0], read_audio(tmp_path / "b.wav")[0],
                                      err_msg=name)
        assert not a.notes, name


def test_the_offset_is_measured_and_removed_per_channel(tmp_path):
    x = np.stack([_with_offset(3.0, -0.05), _with_offset(3.0, 0.0, seed=2)])
    src = write(tmp_path / "in.wav", x, subtype="FLOAT")
    rep = process_file(src, tmp_path / "out.wav", Chain([Gain(gain_db=0.0)]))
    y, _ = read_audio(tmp_path / "out.wav")
    np.testing.assert_allclose(y[0], x[0] + 0.05, atol=2e-3)
    np.testing.assert_array_equal(y[1], x[1])
    assert any("channel 1: -0.05" in n and "channel 2" not in n for n in rep.notes)
    with pytest.raises(ValueError, match="dc_offset"):
        process_file(src, tmp_path / "out.wav", Chain([Gain()]), dc_offset="auto")


def test_per_channel_gives_each_channel_what_it_would_get_as_a_file_of_its_own(tmp_path):
    """Two speakers on the left and right of one take (or a recorder's poly WAV): with
    ``per_channel`` each channel comes out as its own mono file would, the quiet speaker levelled
    for itself; linked, the loud one sets the gain of both."""
    sr = 48000
    t = np.arange(6 * sr) / sr
    rng = np.random.default_rng(9)
    talk = lambda level, start: (10 ** (level / 20) * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))  # noqa: E731
                                 * ((t % 2.0 >= start) & (t % 2.0 < start + 0.9)))
    x = np.stack([talk(-14.0, 0.0), talk(-38.0, 1.0)]) + 10 ** (-66 / 20) * rng.standard_normal((2, t.size))
    src = write(tmp_path / "two.wav", x.astype(np.float32), subtype="FLOAT")
    apart = process_file(src, tmp_path / "apart.wav", "dialogue", per_channel=True)
    linked_report = process_file(src, tmp_path / "linked.wav", "dialogue")
    # linked, the two taking turns far apart are named as what they look like
    assert any("take turns 15 dB or more apart" in n and "--per-channel" in n for n in linked_report.notes)
    assert not any("take turns" in n for n in apart.notes)
    # a denoiser links a stereo pair too (one network for both sides): the same note; with each
    # channel on its own (link="none") there is nothing linked to warn about
    from hushbridge.effects import Denoise

    assert any("take turns" in n for n in process_file(src, tmp_path / "dn.wav", Chain([Denoise()])).notes)
    assert not any("take turns" in n for n in process_file(src, tmp_path / "dn1.wav",
                                                           Chain([Denoise(link="none")])).notes)
    y, _ = read_audio(tmp_path / "apart.wav")
    linked, _ = read_audio(tmp_path / "linked.wav")
    for k in range(2):
        mono = write(tmp_path / f"mono{k}.wav", x[k:k + 1].astype(np.float32), subtype="FLOAT")
        process_file(mono, tmp_path / f"mono{k}_out.wav", "dialogue")
        np.testing.assert_array_equal(y[k], read_audio(tmp_path / f"mono{k}_out.wav")[0][0])
    quiet = slice(int(3.1 * sr), int(3.8 * sr))  # the quiet speaker, late enough for the leveler
    level = lambda a: 20 * np.log10(np.sqrt(np.mean(np.square(a, dtype=np.float64))))  # noqa: E731
    assert level(y[1, quiet]) > level(linked[1, quiet]) + 6.0
    assert any("per channel" in n for n in apart.notes)


def test_automix_before_per_channel_keeps_each_speakers_bleed_down(tmp_path):
    """Per channel, a mic's leveler lifted the other speakers' bleed in its own speaker's pauses
    (QA: six mics, 30..9 dB of separation in, 26..2 out); gain sharing first keeps it down."""
    sr = 48000
    t = np.arange(8 * sr) / sr
    a = 10 ** (-20 / 20) * np.sin(2 * np.pi * 190 * t) * (1 + np.sin(2 * np.pi * 3 * t)) * ((t % 4) < 2)
    b = 10 ** (-34 / 20) * np.sin(2 * np.pi * 260 * t) * (1 + np.sin(2 * np.pi * 4 * t)) * ((t % 4) >= 2)
    floor = 10 ** (-62 / 20) * np.random.default_rng(3).standard_normal((2, t.size))
    k = 10 ** (-15 / 20)  # each mic hears the other talker 15 dB under
    x = (np.stack([a + k * b, b + k * a]) + floor).astype(np.float32)
    src = write(tmp_path / "two.wav", x, subtype="FLOAT")
    level = lambda v: 20 * np.log10(np.sqrt(np.mean(np.square(v, dtype=np.float64))))  # noqa: E731
    b_talks = slice(int(6.3 * sr), int(7.8 * sr))  # mic 1 hears only B's bleed here
    a_talks = slice(int(4.3 * sr), int(5.8 * sr))
    gaps = {}
    for name, kw in (("per", {}), ("mixed", {"automix": True})):
        rep = process_file(src, tmp_path / f"{name}.wav", "dialogue", per_channel=True, **kw)
        y, _ = read_audio(tmp_path / f"{name}.wav")
        gaps[name] = level(y[0, a_talks]) - level(y[0, b_talks])  # mic 1: its talker over the bleed
        assert ("automixed" in " ".join(rep.notes)) == bool(kw)
    assert gaps["mixed"] > gaps["per"] + 10.0, gaps
    assert gaps["mixed"] > level(x[0, a_talks]) - level(x[0, b_talks])  # no worse than it came in


def test_automix_takes_its_settings_and_says_when_it_is_misused(tmp_path):
    from hushbridge.cli import main
    from hushbridge.effects import Automix, Limiter

    sr = 48000
    t = np.arange(2 * sr) / sr
    talk = np.sin(2 * np.pi * 200 * t) * 0.3
    mics = np.stack([talk, 10 ** (-40 / 20) * np.sin(2 * np.pi * 200 * t + 1.0)
                     + 1e-3 * np.random.default_rng(2).standard_normal(t.size)]).astype(np.float32)
    src = write(tmp_path / "mics.wav", mics, subtype="FLOAT")
    level = lambda v: 20 * np.log10(np.sqrt(np.mean(np.square(v[sr // 2:], dtype=np.float64))))  # noqa: E731
    rep = process_file(src, tmp_path / "a.wav", Chain([Gain()]), automix=Automix(range_db=12.0))
    y, _ = read_audio(tmp_path / "a.wav")
    assert level(y[1]) - level(mics[1]) == pytest.approx(-12.0, abs=0.3) and not rep.warnings
    assert main(["process", str(src), str(tmp_path / "b.wav"), "--chain", "gain", "--automix", "--set",
                 "automix.range_db=12", "-q"]) == 0  # --set reaches the automixer that runs outside the chain
    np.testing.assert_array_equal(read_audio(tmp_path / "b.wav")[0], y)
    # an automix inside a per-channel chain shares the gain across all channels where it sits
    # (it is never split): the same as the automixer before the chain
    rep = process_file(src, tmp_path / "c.wav", Chain([Automix(), Limiter()]), per_channel=True)
    assert not rep.warnings
    process_file(src, tmp_path / "c2.wav", Chain([Limiter()]), per_channel=True, automix=True)
    np.testing.assert_array_equal(read_audio(tmp_path / "c.wav")[0], read_audio(tmp_path / "c2.wav")[0])
    # misuse is named: an automix twice, and a stereo mix (alike channels) automixed
    rep = process_file(src, tmp_path / "d.wav", Chain([Automix()]), automix=True)
    assert any("shared twice" in w for w in rep.warnings)
    mix = write(tmp_path / "mix.wav", np.stack([talk, 0.8 * talk]).astype(np.float32), subtype="FLOAT")
    rep = process_file(mix, tmp_path / "e.wav", Chain([Gain()]), automix=True)
    assert any("a stereo or surround mix?" in w for w in rep.warnings)


def test_the_mix_check_and_the_separate_mics_hint_look_where_the_programme_is(tmp_path):
    """QA, session 23: a mix after 3 s of silence, or panned 30 % each way, passed as separate
    microphones (the check read the first 3 s and wanted alike levels within 6 dB); the
    separate-mics hint came with --automix on already and on a chain without dynamics."""
    from hushbridge.effects import HighPass

    sr = 48000
    t = np.arange(12 * sr) / sr
    music = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t)) * (t >= 3.0)
    voice = 0.2 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) * (t >= 3.0)
    panned = np.stack([music + 0.8 * voice, 0.5 * music + 0.35 * voice])  # a mixdown, leaning, after a pre-roll
    src = write(tmp_path / "mix.wav", panned.astype(np.float32), subtype="FLOAT")
    for kw in ({"automix": True}, {"per_channel": True}):
        rep = process_file(src, tmp_path / "o.wav", Chain([Gain()]), **kw)
        assert any("a stereo or surround mix?" in w for w in rep.warnings), kw
    a = 0.3 * np.sin(2 * np.pi * 190 * t) * ((t % 4) < 2)
    b = 0.3 * np.sin(2 * np.pi * 260 * t) * ((t % 4) >= 2)
    mics = (np.stack([a + 0.05 * b, b + 0.05 * a]) + 1e-4 * np.random.default_rng(4).standard_normal((2, t.size)))
    two = write(tmp_path / "two.wav", mics.astype(np.float32), subtype="FLOAT")
    hint = lambda rep: any("take turns" in n for n in rep.notes)  # noqa: E731
    assert hint(process_file(two, tmp_path / "o.wav", "dialogue"))
    assert not hint(process_file(two, tmp_path / "o.wav", "dialogue", automix=True))
    assert not hint(process_file(two, tmp_path / "o.wav", Chain([HighPass()])))  # nothing linked to undo
    rep = process_file(two, tmp_path / "o.wav", "dialogue", automix=True, per_channel=True)
    assert not rep.warnings, rep.warnings  # two mics: neither a mix nor a named layout
    rep = process_file(two, tmp_path / "o.wav", Chain([Gain()]), per_channel=True, channel_mask=0x3)
    assert not rep.warnings  # stereo speakers are no surround


def test_process_file_per_channel_leaves_the_callers_chain_as_it_found_it(tmp_path):
    """Review, session 24: after a per-channel render the chain said per_channel False but still
    ran split (prepared per channel) when used directly."""
    from hushbridge.effects import Compressor

    sr = 48000
    x = (0.2 * np.random.default_rng(3).standard_normal((2, sr))).astype(np.float32)
    src = write(tmp_path / "two.wav", x, subtype="FLOAT")
    chain = Chain([Compressor(threshold_db=-30)])
    process_file(src, tmp_path / "out.wav", chain, per_channel=True)
    assert not chain.per_channel and len(chain.instances("compressor")) == 1 and chain.spec is None
    linked = process_file(src, tmp_path / "linked.wav", chain)  # and it renders linked again
    assert not linked.warnings
