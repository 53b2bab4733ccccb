"""The hushbridge command, run as a user runs it (a subprocess), on real files."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf


def hb(*args, cwd=None, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "hushbridge", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=240)


@pytest.fixture
def speechlike(tmp_path):
    sr = 48000
    rng = np.random.default_rng(0)
    t = np.arange(sr * 2) / sr
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    x = (0.3 * env * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    path = tmp_path / "voice.wav"
    sf.write(str(path), np.stack([x, 0.8 * x]).T, sr, subtype="PCM_24")
    return path


def test_help_explains_commands():
    r = hb("--help")
    assert r.returncode == 0
    for word in ("process", "demo", "run", "devices", "presets"):
        assert word in r.stdout
    r = hb("process", "--help")
    assert "--preset" in r.stdout and "--chain" in r.stdout and "--set" in r.stdout and "--out-dir" in r.stdout


def test_process_default_preset(speechlike, tmp_path):
    out = tmp_path / "clean.wav"
    r = hb("process", speechlike, out)
    assert r.returncode == 0, r.stderr
    info, ref = sf.info(str(out)), sf.info(str(speechlike))
    assert (info.frames, info.channels, info.samplerate, info.subtype) == (ref.frames, 2, 48000, "PCM_24")
    assert "latency" in r.stdout


def test_process_chain_and_set(speechlike, tmp_path):
    out = tmp_path / "g.wav"
    r = hb("process", speechlike, out, "--chain", "gain", "--set", "gain.gain_db=-6", "--subtype", "FLOAT")
    assert r.returncode == 0, r.stderr
    x, _ = sf.read(str(speechlike), dtype="float32")
    y, _ = sf.read(str(out), dtype="float32")
    np.testing.assert_allclose(y, x * 10 ** (-6 / 20), atol=1e-6)


def test_set_link_runs_a_stereo_pair_s_denoiser_per_channel(speechlike, tmp_path):
    """``--set denoise.link=none``: each side on its own, as a mono file of it would come out (a
    set-up option, as a preset's ``link = "none"``); by default the pair is linked."""
    x, sr = sf.read(str(speechlike), dtype="float32")
    x = x[: 2 * sr]
    x[:, 1] = 0.5 * x[:, 0] + 0.01 * np.random.default_rng(3).standard_normal(x.shape[0]).astype(np.float32)
    src = tmp_path / "pair.wav"
    sf.write(str(src), x, sr, subtype="FLOAT")
    outs = {}
    for name, extra in (("none", ["--set", "denoise.link=none"]), ("linked", []), ("left", None)):
        if extra is None:
            sf.write(str(tmp_path / "left.wav"), x[:, 0], sr, subtype="FLOAT")
            r = hb("process", tmp_path / "left.wav", tmp_path / "left_out.wav", "--chain", "denoise",
                   "--subtype", "FLOAT", "--keep-dc")
        else:
            r = hb("process", src, tmp_path / f"{name}.wav", "--chain", "denoise", "--subtype", "FLOAT",
                   "--keep-dc", *extra)
        assert r.returncode == 0, r.stderr
        outs[name] = sf.read(str(tmp_path / (f"{name}.wav" if extra is not None else "left_out.wav")),
                             dtype="float32")[0]
    np.testing.assert_allclose(outs["none"][:, 0], outs["left"], atol=1e-6)
    assert np.abs(outs["linked"][:, 0] - outs["left"]).max() > 1e-3


def test_link_any_case_and_a_note_where_per_channel_leaves_nothing_to_link(speechlike, tmp_path):
    r = hb("process", speechlike, tmp_path / "a.wav", "--chain", "denoise", "--set", "denoise.link=NONE")
    assert r.returncode == 0, r.stderr
    r = hb("process", speechlike, tmp_path / "b.wav", "--chain", "denoise", "--per-channel", "--set",
           "denoise.link=all")
    assert r.returncode == 0 and "nothing to link" in " ".join(r.stderr.split())


def test_an_error_that_a_signal_caused_ends_as_the_signal(monkeypatch, tmp_path):
    """A SIGTERM inside onnxruntime's import came out as "onnxruntime is needed" and exit 1 (QA,
    session 29): an error raised while a signal is being handled ends as that signal."""
    from hushbridge import cli
    from hushbridge.models.runtime import ModelError

    def signalled_then_failed(args):  # noqa: ARG001
        cli._signalled.append(signal.SIGTERM)
        raise ModelError("cannot load x.onnx: initialization failed")

    monkeypatch.setattr(cli, "_cmd_process", signalled_then_failed)
    assert cli.main(["process", str(tmp_path / "in.wav"), str(tmp_path / "out.wav")]) == 128 + signal.SIGTERM

    def failed(args):  # noqa: ARG001
        raise ModelError("cannot load x.onnx")

    monkeypatch.setattr(cli, "_cmd_process", failed)
    assert cli.main(["process", str(tmp_path / "in.wav"), str(tmp_path / "out.wav")]) == cli.EXIT_FAILED


def test_process_removes_a_dc_offset_and_says_so_unless_told_to_keep_it(speechlike, tmp_path):
    x, sr = sf.read(str(speechlike), dtype="float32")
    src = tmp_path / "offset.wav"
    sf.write(str(src), x + np.float32(0.02), sr, subtype="FLOAT")
    r = hb("process", src, tmp_path / "a.wav", "--chain", "gain", "--loudness", "-20")
    assert r.returncode == 0, r.stderr
    assert "removed a DC offset" in r.stdout and "+0.0200" in r.stdout
    r = hb("process", src, tmp_path / "b.wav", "--chain", "gain", "--keep-dc", "--subtype", "FLOAT")
    assert r.returncode == 0, r.stderr
    assert "DC offset" not in r.stdout
    np.testing.assert_array_equal(sf.read(str(tmp_path / "b.wav"), dtype="float32")[0], x + np.float32(0.02))
    assert abs(sf.read(str(tmp_path / "a.wav"))[0].mean()) < 1e-3


def test_midi_learn_refuses_a_bad_preset_name_before_anything_is_learned():
    r = hb("midi", "learn", "/hb/compressor/ratio", "--save", "../x")  # no MIDI port needed to say so
    assert r.returncode == 2 and "--save: preset name '../x' has a path separator" in " ".join(r.stderr.split())


def test_process_chain_with_a_plugin(speechlike, tmp_path):
    pedalboard = pytest.importorskip("pedalboard")
    out = tmp_path / "p.wav"
    r = hb("process", speechlike, out, "--chain", "plugin:Gain", "--set", "plugin.gain_db=-6", "--subtype", "FLOAT")
    assert r.returncode == 0, r.stderr
    x, sr = sf.read(str(speechlike), dtype="float32")
    y, _ = sf.read(str(out), dtype="float32")
    np.testing.assert_allclose(y, pedalboard.Gain(gain_db=-6)(x.T.copy(), sr).T, atol=1e-6)
    r = hb("process", speechlike, tmp_path / "q.wav", "--chain", "plugin:Nope")
    assert r.returncode != 0 and "unknown pedalboard plugin 'Nope'" in r.stderr
    assert not (tmp_path / "q.wav").exists()


@pytest.mark.parametrize("args, message", [
    (["--set", "compressor.threshold_db=10"], r"must be in [-60, 0] dB"),
    (["--set", "nonsense"], "expected ID.PARAM=VALUE"),
    (["--set", "nosuch.gain_db=1"], "no effect with id 'nosuch'"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--chain", "gain,fuzz"], "unknown effect 'fuzz'"),
    (["--chain", "gain", "--set", "gain.gain=1"], "no parameter 'gain' (parameters: gain_db"),
    # an option fixed when the effect is made, not a parameter ("'HQ' is not a number" before)
    (["--chain", "denoise", "--set", "denoise.resample_quality=HQ"], "Denoise(resample_quality=...)"),
    (["--chain", "denoise", "--set", "denoise.link=left"], "link must be one of stereo, all, none, got 'left'"),
    (["--chain", "denoise", "--per-channel", "--set", "denoise@2.link=none"],
     "link says how denoise hears all the channels together, not one channel's value"),
    (["--chain", "gain", "--set", "gain.link=none"], "no parameter 'link'"),
])
def test_bad_options_fail_clearly_and_leave_out_untouched(speechlike, tmp_path, args, message):
    out = tmp_path / "out.wav"
    out.write_bytes(b"keep me")
    r = hb("process", speechlike, out, *args)
    assert r.returncode != 0
    assert message in " ".join(r.stderr.split())
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("kind", ["missing", "corrupt", "empty"])
def test_bad_input_files(tmp_path, kind):
    src = tmp_path / "in.wav"
    if kind == "corrupt":
        src.write_bytes(b"RIFF....WAVEfmt garbage" * 20)
    elif kind == "empty":
        sf.write(str(src), np.zeros((0, 2), np.float32), 48000)
    out = tmp_path / "out.wav"
    out.write_bytes(b"keep me")
    r = hb("process", src, out)
    assert r.returncode == 1
    assert {"missing": "no such file", "corrupt": "not a readable audio file", "empty": "no audio"}[kind] in r.stderr
    assert out.read_bytes() == b"keep me"


def test_refuses_in_equals_out(speechlike):
    before = speechlike.read_bytes()
    r = hb("process", speechlike, speechlike)
    assert r.returncode == 1 and "refusing to overwrite the input" in r.stderr
    assert speechlike.read_bytes() == before


def test_batch_reports_failures_and_goes_on(speechlike, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    second = tmp_path / "second.flac"
    sf.write(str(second), np.zeros((4800, 1), np.float32), 48000)
    outdir = tmp_path / "cleaned"
    r = hb("process", speechlike, bad, second, "--out-dir", outdir, "--preset", "podcast")
    assert r.returncode == 1
    assert "bad.wav" in r.stderr and "1 of 3 files failed" in " ".join(r.stderr.split())
    assert (outdir / "voice.wav").exists() and (outdir / "second.flac").exists()
    assert not (outdir / "bad.wav").exists()


def test_presets_and_devices_commands(tmp_path):
    r = hb("presets")
    assert r.returncode == 0 and "dialogue" in r.stdout and "music-safe" in r.stdout
    # a preset's set-up option shows beside its effect (platformdirs reads XDG_CONFIG_HOME)
    folder = tmp_path / "cfg" / "hushbridge" / "presets"
    folder.mkdir(parents=True)
    (folder / "apart.toml").write_text('version = 1\n[[chain]]\neffect = "denoise"\nlink = "none"\n')
    r = hb("presets", env_extra={"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert r.returncode == 0 and "denoise (link=none)" in r.stdout, r.stdout
    r = hb("devices", env_extra={"JACK_DEFAULT_SERVER": "hb-no-such-server"})
    assert r.returncode == 0 and "JACK" in r.stdout and "PortAudio" in r.stdout
    assert "Cannot connect to server" not in r.stderr  # "no server" is an answer, not libjack noise


def test_demo_runs_on_bundled_clip(tmp_path):
    r = hb("demo", "--out", tmp_path / "demo.wav")
    assert r.returncode == 0, r.stderr
    assert "integrated loudness" in r.stdout and "true peak" in r.stdout
    y, sr = sf.read(str(tmp_path / "demo.wav"), dtype="float32")
    assert sr == 48000 and y.size > sr * 5 and np.isfinite(y).all()


def test_demo_into_an_unwritable_place_is_one_line(tmp_path):
    r = hb("demo", "--out", "/proc/hb-demo.wav")  # not writable even for root
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "error: cannot write /proc/hb-demo.wav" in r.stderr


def test_process_writes_through_a_symbolic_link(speechlike, tmp_path):
    real = tmp_path / "takes" / "clean.wav"
    real.parent.mkdir()
    sf.write(str(real), np.zeros(10, np.float32), 48000)
    link = tmp_path / "clean.wav"
    link.symlink_to(real)
    r = hb("process", speechlike, link)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and sf.info(str(real)).frames == sf.info(str(speechlike)).frames


def test_process_chain_denoise_keeps_format_and_time_alignment(tmp_path):
    """``--chain denoise`` on a 44.1 kHz stereo file: same length, rate, channels; the cleaned speech
    lines up with the input to the sample (the effect's latency, resampling included, is trimmed;
    our resampler makes that latency a whole number of samples at any rate)."""
    from hushbridge.models.runtime import default_model_path

    if not default_model_path("denoise.onnx").is_file():
        pytest.skip("models/denoise.onnx is not shipped")
    from helpers import shared_data_dir

    data = shared_data_dir()
    speech = None if data is None else data / "speech" / "vctk_p301_102.wav"
    if speech is None or not speech.is_file():
        pytest.skip("held-out speech file not found in ../shared/data")
    import soxr

    s, r0 = sf.read(str(speech), dtype="float32")
    sr = 44100
    s = soxr.resample(s, r0, sr).astype(np.float32)[: 3 * sr]
    rng = np.random.default_rng(3)
    x = np.stack([s + 0.01 * rng.standard_normal(s.size).astype(np.float32), 0.7 * s]).T
    src, out = tmp_path / "take.wav", tmp_path / "clean.wav"
    sf.write(str(src), x, sr, subtype="PCM_24")
    r = hb("process", src, out, "--chain", "denoise")
    assert r.returncode == 0, r.stderr
    info = sf.info(str(out))
    assert (info.frames, info.channels, info.samplerate, info.subtype) == (x.shape[0], 2, sr, "PCM_24")
    y, _ = sf.read(str(out), dtype="float32")
    for c in range(2):
        a, b = x[:, c].astype(np.float64), y[:, c].astype(np.float64)
        lags = range(-40, 41)
        xc = [np.dot(a[100 + k:-100 + k], b[100:-100]) for k in lags]
        assert lags[int(np.argmax(xc))] == 0


def test_process_reports_soft_saturation_and_repairs_it_when_asked(tmp_path):
    from helpers import shared_data_dir

    src = (shared_data_dir() or tmp_path) / "speech" / "vctk_p301_102.wav"
    if not src.exists():
        pytest.skip(f"{src} not found")
    x, sr = sf.read(str(src), dtype="float32")
    x = x[: 6 * sr] / np.abs(x[: 6 * sr]).max()
    sat = tmp_path / "saturated.wav"
    sf.write(str(sat), np.tanh(10 * x) / np.tanh(10), sr, subtype="FLOAT")
    r = hb("process", sat, tmp_path / "a.wav", "--chain", "declip")
    assert r.returncode == 0, r.stderr
    assert "declip: soft saturation found" in r.stdout and "--set declip.soft_repair=on" in r.stdout
    r = hb("process", sat, tmp_path / "b.wav", "--chain", "declip", "--set", "declip.soft_repair=on")
    assert r.returncode == 0, r.stderr
    assert "soft saturation found and undone" in r.stdout, r.stdout
    a, _ = sf.read(str(tmp_path / "a.wav"), dtype="float32")
    b, _ = sf.read(str(tmp_path / "b.wav"), dtype="float32")
    assert not np.array_equal(a, b) and np.abs(b).max() <= np.abs(a).max() * (1 + 1e-6)


def test_declipping_a_recording_that_hit_full_scale_needs_headroom_and_says_so(tmp_path):
    """The commonest clipped file: 16-bit speech that hit 0 dBFS. The rebuilt peaks lie above full
    scale, so a 16-bit output clips them again (no better than the input); the warning says to
    give them headroom (a limiter would squash them again), and --loudness does."""
    from helpers import shared_data_dir

    src = (shared_data_dir() or tmp_path) / "speech" / "vctk_p301_102.wav"
    if not src.exists():
        pytest.skip(f"{src} not found")
    x, sr = sf.read(str(src), dtype="float64")
    x = x[: 8 * sr] / np.abs(x[: 8 * sr]).max() * 2.0  # 6 dB too hot
    hot = tmp_path / "hot.wav"
    sf.write(str(hot), np.clip(x, -1, 1), sr, subtype="PCM_16")

    def snr(path):
        y, _ = sf.read(str(path))
        g = np.dot(x, y) / np.dot(y, y)
        return 10 * np.log10(np.sum(x ** 2) / np.sum((x - g * y) ** 2))

    r = hb("process", hot, tmp_path / "a.wav", "--chain", "declip")
    assert r.returncode == 0, r.stderr
    assert "clipped runs rebuilt" in r.stdout
    assert "beyond full scale, clipped by the format: the de-clipper rebuilt peaks above it" in r.stderr
    assert "--loudness" in r.stderr and "limiter" not in r.stderr
    assert snr(tmp_path / "a.wav") < snr(hot) + 0.5
    r = hb("process", hot, tmp_path / "b.wav", "--chain", "declip", "--loudness", "-20")
    assert r.returncode == 0, r.stderr
    assert "beyond full scale" not in r.stderr
    assert sf.info(str(tmp_path / "b.wav")).subtype == "PCM_16"
    assert snr(tmp_path / "b.wav") > snr(hot) + 2.0


@pytest.mark.parametrize("args, message", [
    (["--rate", "-44100"], "sample rate -44100 is outside 8000..768000"),
    (["--rate", "0"], "sample rate 0 is outside"),
    (["--block-size", "0"], "block size 0 is outside 1..65536"),
    (["--chain", ""], "empty chain"),
    (["--set", "compressor.bypass=maybe"], "bypass takes on/off"),
])
def test_bad_numbers_are_usage_errors_not_tracebacks(speechlike, tmp_path, args, message):
    out = tmp_path / "out.wav"
    r = hb("process", speechlike, out, *args)
    assert r.returncode == 2, r.stderr
    assert message in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
    assert not out.exists()


def test_set_bypass_takes_an_effect_out(speechlike, tmp_path):
    on, off = tmp_path / "on.wav", tmp_path / "off.wav"
    assert hb("process", speechlike, on, "--chain", "gain", "--set", "gain.gain_db=-6", "-q").returncode == 0
    r = hb("process", speechlike, off, "--chain", "gain", "--set", "gain.gain_db=-6", "--set", "gain.bypass=on", "-q")
    assert r.returncode == 0, r.stderr
    x, _ = sf.read(str(speechlike), dtype="float32")
    assert np.array_equal(sf.read(str(off), dtype="float32")[0], x)  # 24-bit in, on the grid: bit-exact
    assert not np.array_equal(sf.read(str(on), dtype="float32")[0], x)


def test_set_takes_switches_and_modes_by_name_as_a_preset_does():
    import argparse

    from hushbridge.cli import _build_chain

    chain = _build_chain(argparse.Namespace(chain="highpass,loudness,declip", preset=None, set=[
        "highpass.slope=24", "loudness.layout=5.0", "declip.soft_repair=on"]))
    assert chain["highpass"].param("slope").choices[int(chain["highpass"].slope)].startswith("24")
    assert chain["loudness"].param("layout").choices[int(chain["loudness"].layout)] == "5.0"  # not index 5
    assert chain["declip"].soft_repair == 1.0
    chain = _build_chain(argparse.Namespace(chain="loudness", preset=None, set=["loudness.layout=1"]))
    assert chain["loudness"].layout == 1.0  # no choice is called "1": the index


def test_batch_with_an_unprocessable_rate_goes_on(speechlike, tmp_path):
    low = tmp_path / "low.wav"
    sf.write(str(low), np.zeros((4000, 1), np.float32) + 0.1, 4000)
    outdir = tmp_path / "cleaned"
    r = hb("process", low, speechlike, "--out-dir", outdir, "--chain", "gain")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "4000 Hz is outside" in " ".join(r.stderr.split()) and (outdir / "voice.wav").exists()


def test_batch_refuses_inputs_that_would_overwrite_each_other(speechlike, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "take.wav", tmp_path / "b" / "take.wav"
    first.write_bytes(speechlike.read_bytes())
    second.write_bytes(speechlike.read_bytes())
    r = hb("process", first, second, "--out-dir", tmp_path / "out")
    assert r.returncode == 2 and "would overwrite each other" in " ".join(r.stderr.split())
    assert not (tmp_path / "out").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = hb("process", speechlike, "--out-dir", afile)
    assert r.returncode == 2 and "is a file, not a folder" in r.stderr and "Traceback" not in r.stderr


def test_brackets_in_file_names_are_printed_as_they_are(speechlike, tmp_path):
    src = tmp_path / "ep [final].wav"
    src.write_bytes(speechlike.read_bytes())
    r = hb("process", src, tmp_path / "ep [final] clean.wav", "--chain", "gain")
    assert r.returncode == 0 and "ep [final].wav -> " in r.stdout and "ep [final] clean.wav" in r.stdout
    r = hb("process", tmp_path / "[/]missing.wav", tmp_path / "o.wav")
    assert r.returncode == 1 and "[/]missing.wav: no such file" in r.stderr and "Traceback" not in r.stderr


def test_outputs_follow_the_umask_and_keep_a_replaced_files_mode(speechlike, tmp_path):
    out = tmp_path / "o.wav"
    assert hb("process", speechlike, out, "--chain", "gain", "-q").returncode == 0
    old = os.umask(0)
    os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o666 & ~old
    out.chmod(0o640)
    assert hb("process", speechlike, out, "--chain", "gain", "-q").returncode == 0
    assert out.stat().st_mode & 0o777 == 0o640


def test_digital_silence_stays_silent_in_integer_pcm(tmp_path):
    src = tmp_path / "silence.wav"
    sf.write(str(src), np.zeros(48000 * 2, np.float32), 48000, subtype="PCM_16")
    out = tmp_path / "o.wav"
    r = hb("process", src, out, "-q")  # the default preset, dithered 16-bit output
    assert r.returncode == 0, r.stderr
    y, _ = sf.read(str(out), dtype="int16")
    assert not np.any(y)


def test_data_warnings_show_even_when_quiet(tmp_path):
    src = tmp_path / "nan.wav"
    x = 0.1 * np.sin(np.arange(48000) * 0.05).astype(np.float32)
    x[100:103] = [np.nan, np.inf, -np.inf]
    sf.write(str(src), x, 48000, subtype="FLOAT")
    r = hb("process", src, tmp_path / "o.wav", "--chain", "gain", "-q")
    assert r.returncode == 0 and "warning:" in r.stderr and "3 NaN/Inf input samples" in r.stderr
    full = tmp_path / "full.wav"
    sf.write(str(full), np.full(48000, 0.5, np.float32), 48000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[:30000])
    r = hb("process", cut, tmp_path / "c.wav", "--chain", "gain", "-q")
    assert r.returncode == 0 and "truncated: its header declares 1.00 s" in " ".join(r.stderr.split())
    r = hb("process", full, tmp_path / "f.wav", "--chain", "gain", "-q")
    assert r.returncode == 0 and "truncated" not in r.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_leaves_no_temporary_file(tmp_path, sig):
    """SIGTERM, and SIGHUP (a closed terminal, a dropped ssh: session 24's QA found a decoded
    input's copy, 691 MB, left behind), unwind like Ctrl-C."""
    sig = getattr(signal, sig)
    src = tmp_path / "long.wav"
    sf.write(str(src), (0.05 * np.random.default_rng(1).standard_normal(48000 * 120)).astype(np.float32), 48000)
    p = subprocess.Popen([sys.executable, "-m", "hushbridge", "process", str(src), str(tmp_path / "o.wav"),
                          "--chain", "denoise", "-q"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".o.*")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "finished before it could be stopped"
    p.send_signal(sig)
    p.wait(timeout=60)
    assert p.returncode == 128 + sig  # as a shell reports it
    assert sorted(f.name for f in tmp_path.iterdir()) == ["long.wav"]


def test_osc_layout_output_errors_are_clear(tmp_path):
    r = hb("osc-layout", "--out", tmp_path / "nodir" / "l.json")
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = hb("osc-layout", "--out", tmp_path)
    assert r.returncode == 2 and "is a folder" in r.stderr
    r = hb("osc-layout", "--port", "99999")
    assert r.returncode == 2 and "UDP port 99999 is outside 1..65535" in r.stderr


def test_pick_cleans_the_channels_asked_for_and_keeps_the_source_s_timecode(tmp_path):
    """A poly WAV from a field recorder (boom on 1, lav on 2) with its Broadcast WAV timecode:
    `--pick 2` cleans the lav alone into a mono file that keeps the recorder's time reference and
    sample format, so it lines up on an editor's timeline (the DaVinci Resolve script splits such
    files this way); a channel the file lacks is an error that writes nothing."""
    import json
    import shutil

    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("needs ffmpeg and ffprobe (apt ffmpeg)")
    sr = 48000
    t = np.arange(2 * sr) / sr
    plain = tmp_path / "plain.wav"
    sf.write(str(plain), np.stack([0.1 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 440 * t)], 1), sr,
             subtype="PCM_24")
    src = tmp_path / "ZOOM0001.WAV"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(plain), "-c:a", "pcm_s24le", "-write_bext", "1",
                    "-metadata", "time_reference=172800000", str(src)], check=True)
    from hushbridge.io.metadata import insert_wav_chunks, wav_chunks

    track = "<TRACK><CHANNEL_INDEX>{0}</CHANNEL_INDEX><INTERLEAVE_INDEX>{0}</INTERLEAVE_INDEX><NAME>{1}</NAME></TRACK>"
    ixml = ("<?xml version=\"1.0\"?><BWFXML><TRACK_LIST><TRACK_COUNT>2</TRACK_COUNT>" + track.format(1, "Boom")
            + track.format(2, "Lav") + "</TRACK_LIST></BWFXML>").encode()
    assert insert_wav_chunks(src, [(b"iXML", ixml)])
    out = tmp_path / "lav.wav"
    r = hb("process", str(src), str(out), "--chain", "gain", "--pick", "2")
    assert r.returncode == 0, r.stderr
    assert f"{src} (channel 2) -> {out}" in r.stdout and ".hushbridge-picked" not in r.stdout + r.stderr
    y, _ = sf.read(str(out))
    x, _ = sf.read(str(src))
    assert y.ndim == 1 and np.array_equal(y, x[:, 1])  # a gain of 0 dB: the lav, bit for bit
    assert sf.info(str(out)).subtype == "PCM_24"
    tags = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags", "-of", "json",
                                      str(out)], check=True, capture_output=True, text=True).stdout)["format"]["tags"]
    assert tags["time_reference"] == "172800000"
    # its iXML names the lav alone (the poly file's list called its one channel "Boom")
    (kept,) = [d for cid, d in wav_chunks(out, (b"iXML",))]
    assert b"<TRACK_COUNT>1</TRACK_COUNT>" in kept and b"<NAME>Lav</NAME>" in kept and b"Boom" not in kept
    assert b"<CHANNEL_INDEX>1</CHANNEL_INDEX>" in kept
    r = hb("process", str(src), str(tmp_path / "x.wav"), "--pick", "3")
    assert r.returncode == 1 and "has 2 channels; cannot pick 3" in r.stderr and not (tmp_path / "x.wav").exists()
    # the output's format falls back as without --pick (a float input into FLAC, which stores no
    # float), and an error names the user's file, not the temporary one (review, session 30)
    floats = tmp_path / "floats.wav"
    sf.write(str(floats), x, sr, subtype="FLOAT")
    r = hb("process", str(floats), str(tmp_path / "lav.flac"), "--chain", "gain", "--pick", "2")
    assert r.returncode == 0 and sf.info(str(tmp_path / "lav.flac")).subtype == "PCM_24", r.stderr
    r = hb("process", str(src), str(tmp_path / "y.wav"), "--pick", "2", "--layout", "stereo")
    assert r.returncode == 1 and f"{src} (channel 2): has 1 channel" in r.stderr and ".picked" not in r.stderr
    # from a file only ffmpeg reads: its decoding is said, as without --pick
    mka = tmp_path / "take.mka"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(plain), "-c:a", "flac", str(mka)], check=True)
    r = hb("process", str(mka), str(tmp_path / "m.wav"), "--chain", "gain", "--pick", "1")
    assert r.returncode == 0 and "decoded with ffmpeg" in r.stdout, r.stdout + r.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
