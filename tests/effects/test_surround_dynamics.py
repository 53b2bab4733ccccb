"""Linked dynamics on surround audio: the LFE channel does not drive the detectors (its rumble
would pump the dialogue), the leveler weighs channels as BS.1770 does, and only a layout the
file names (a WAV's channel mask, FLAC's and Ogg's defined order) decides which channel is the
LFE: six channels that name nothing may be six microphones, and every one is heard."""
import numpy as np
import pytest
import soundfile as sf

from hushbridge.effects import Chain, Compressor, DeEsser, Gate, Leveler, ProcessSpec
from hushbridge.io.files import process_file, read_audio, set_wav_channel_mask

SR = 48000
MASK_51 = 0x60F  # FL FR FC LFE SL SR
MASK_60 = 0x707  # FL FR FC BC SL SR: channel 4 is a speaker


def surround(seconds=4.0, voice_db=-30.0, rumble_db=-6.0, rumble_from=1.0, rumble_to=3.0, seed=0, voice_from=0.0):
    """Six channels in WAV order: a steady 'voice' (300 Hz and its harmonics) in the centre from
    ``voice_from`` s over a quiet floor everywhere, and from ``rumble_from`` to ``rumble_to`` s a
    loud 45 Hz rumble on channel 4 (the LFE of a 5.1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 10 ** (-60 / 20) * rng.standard_normal((6, t.size))
    voice = sum(np.sin(2 * np.pi * 300 * k * t) / k for k in (1, 2, 3, 5))
    x[2] += 10 ** (voice_db / 20) * voice / np.abs(voice).max() * (t >= voice_from)
    x[3] += 10 ** (rumble_db / 20) * np.sin(2 * np.pi * 45 * t) * ((t >= rumble_from) & (t < rumble_to))
    return x.astype(np.float32)


def render(effect, x, mask=0):
    effect.prepare(ProcessSpec(SR, 512, x.shape[0], mask))
    y = x.copy()
    for i in range(0, y.shape[1], 512):
        v = y[:, i:i + 512]
        block = np.ascontiguousarray(v)
        effect.process(block)
        v[...] = block
    return y


def db(a):
    return 20 * np.log10(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def centre_change_db(x, y, a=1.5, b=2.9):
    s = slice(int(a * SR), int(b * SR))
    return db(y[2, s]) - db(x[2, s])


def test_spec_names_the_lfe_by_the_mask_only():
    assert list(ProcessSpec(SR, 128, 6, MASK_51).detector_keys()) == [1, 1, 1, 0, 1, 1]
    assert list(ProcessSpec(SR, 128, 8, 0x63F).detector_keys()) == [1, 1, 1, 0, 1, 1, 1, 1]
    assert list(ProcessSpec(SR, 128, 6, MASK_60).detector_keys()) == [1] * 6
    assert list(ProcessSpec(SR, 128, 6).detector_keys()) == [1] * 6  # no mask: maybe six microphones
    assert list(ProcessSpec(SR, 128, 2).detector_keys()) == [1, 1]
    assert list(ProcessSpec(SR, 128, 1, 0x8).detector_keys()) == [1]  # an LFE alone is still listened to
    np.testing.assert_allclose(ProcessSpec(SR, 128, 6, MASK_51).loudness_weights(), [1, 1, 1, 0, 1.41, 1.41])
    np.testing.assert_allclose(ProcessSpec(SR, 128, 6).loudness_weights(), [1] * 6)
    with pytest.raises(ValueError, match="channel_mask"):
        ProcessSpec(SR, 128, 2, -1)


@pytest.mark.parametrize("make", [
    lambda: Compressor(threshold_db=-30.0, ratio=4.0, knee_db=0.0),
    lambda: Leveler(target_lufs=-30.0, max_cut_db=12.0, time_s=0.3),
], ids=["compressor", "leveler"])
def test_an_lfe_rumble_does_not_turn_the_dialogue_down(make):
    # the voice starts after the take does: the leveler counts sound as speech once it has heard
    # a voice (a rumble alone at a take's start is not one)
    x = surround(voice_from=0.5)
    quiet = surround(rumble_db=-200.0, voice_from=0.5)
    y_51 = render(make(), x, MASK_51)
    y_ref = render(make(), quiet, MASK_51)  # no rumble at all
    y_60 = render(make(), x, MASK_60)  # the same channel as a speaker: it drives the detector
    assert abs(centre_change_db(x, y_51) - centre_change_db(quiet, y_ref)) < 0.2
    assert centre_change_db(x, y_60) < centre_change_db(quiet, y_ref) - 6.0


def test_an_lfe_rumble_does_not_open_the_gate():
    x = surround(voice_db=-200.0)  # floor only, and the rumble: nobody speaks
    make = lambda: Gate(threshold_db=-40.0, range_db=40.0, attack_ms=1.0, release_ms=50.0)  # noqa: E731
    y_51 = render(make(), x, MASK_51)
    y_60 = render(make(), x)  # no mask: channel 4 may be a microphone
    assert centre_change_db(x, y_51) < -20.0  # the centre's floor stays gated
    assert centre_change_db(x, y_60) > -3.0  # a speaker that loud opens it


def test_deesser_listens_to_the_speakers_only():
    t = np.arange(2 * SR) / SR
    x = np.zeros((6, t.size), np.float32)
    x[3] = 0.5 * np.sin(2 * np.pi * 7000 * t)  # an LFE channel with hiss in it (a bad bass-managed stem)
    x[2] = 0.01 * np.sin(2 * np.pi * 7000 * t)
    make = lambda: DeEsser(threshold_db=-30.0)  # noqa: E731
    assert abs(centre_change_db(x, render(make(), x, MASK_51), 0.5, 1.9)) < 0.1
    assert centre_change_db(x, render(make(), x, MASK_60), 0.5, 1.9) < -3.0


@pytest.mark.parametrize("loudness", [False, True])
def test_the_layout_a_file_names_reaches_the_chain(tmp_path, loudness):
    """A WAV's mask, FLAC's defined 5.1; a WAV naming nothing has every channel heard. The same
    through `process --loudness`, whose float render writes no mask (QA, session 23: it took the
    layout as unknown there)."""
    from hushbridge.cli import main

    x, quiet = surround(), surround(rumble_db=-200.0)
    make = lambda: Compressor(threshold_db=-30.0, ratio=4.0, knee_db=0.0)  # noqa: E731

    def dip(y):  # the centre during the rumble against before it: blind to any overall gain
        return db(y[2, int(1.5 * SR):int(2.9 * SR)]) - db(y[2, int(0.2 * SR):int(0.9 * SR)])

    untouched = dip(render(make(), quiet))
    for name, mask, lfe in (("51.wav", MASK_51, True), ("60.wav", MASK_60, False), ("none.wav", 0, False),
                            ("51.flac", None, True)):
        src = tmp_path / name
        if name.endswith(".flac"):
            sf.write(str(src), x.T, SR, subtype="PCM_24")
        else:
            with sf.SoundFile(str(src), "w", SR, 6, "FLOAT", format="WAVEX" if mask else "WAV") as f:
                f.write(x.T)
            assert not mask or set_wav_channel_mask(src, mask)
        out = tmp_path / "out.wav"
        if loudness:
            assert main(["process", str(src), str(out), "--chain", "compressor", "--set", "compressor.threshold_db=-30",
                         "--set", "compressor.ratio=4", "--set", "compressor.knee_db=0", "--loudness", "-30",
                         "--keep-dc", "-q"]) == 0
        else:
            process_file(src, out, Chain([make()]))
        y, _ = read_audio(out)
        change = dip(y) - untouched
        assert (abs(change) < 0.3) == lfe, (name, change)


def test_the_loudness_meter_on_auto_weighs_the_speakers_a_mask_names():
    from hushbridge.effects import Loudness

    meter = Loudness()
    meter.prepare(ProcessSpec(SR, 128, 6, MASK_60))
    assert meter.channel_weights == pytest.approx((1, 1, 1, 1.41, 1.41, 1.41))
    meter.prepare(ProcessSpec(SR, 128, 4, 0x33))  # quad
    assert meter.channel_weights == pytest.approx((1, 1, 1.41, 1.41))
    meter.prepare(ProcessSpec(SR, 128, 6))
    assert meter.channel_weights == pytest.approx((1, 1, 1, 0, 1.41, 1.41))


def test_a_live_engine_told_its_layout_keeps_the_lfe_out_of_the_detectors():
    """`run --layout 5.1`: live input names no speakers, so the engine is told (QA's rumble
    through the compressor, block by block as the callback runs it)."""
    from hushbridge.cli import main
    from hushbridge.engine import Engine

    x, quiet = surround(), surround(rumble_db=-200.0)

    def live(mask, signal):
        engine = Engine(Chain([Compressor(threshold_db=-30.0, ratio=4.0, knee_db=0.0)]), channels=6,
                        channel_mask=mask)
        engine.prepare(SR, 128)
        y = np.zeros_like(signal)
        for i in range(0, signal.shape[1], 128):
            out = np.zeros((6, 128), np.float32)
            engine.process(np.ascontiguousarray(signal[:, i:i + 128]), out)
            y[:, i:i + 128] = out
        return y

    untouched = centre_change_db(quiet, live(MASK_51, quiet))
    assert abs(centre_change_db(x, live(MASK_51, x)) - untouched) < 0.2
    assert centre_change_db(x, live(0, x)) < untouched - 6.0  # not told: every channel heard
    assert main(["run", "--layout", "5.1"]) == 2  # 2 channels by default: a usage error, not a guess


def test_process_layout_names_the_speakers_a_mask_less_wav_does_not(tmp_path):
    from hushbridge.cli import main
    from hushbridge.io.files import wav_channel_mask

    x, quiet = surround(), surround(rumble_db=-200.0)
    src = tmp_path / "none.wav"
    sf.write(str(src), x.T, SR, subtype="FLOAT")
    args = ["--chain", "compressor", "--set", "compressor.threshold_db=-30", "--set", "compressor.ratio=4",
            "--set", "compressor.knee_db=0", "--keep-dc", "-q"]
    untouched = centre_change_db(quiet, render(Compressor(threshold_db=-30.0, ratio=4.0, knee_db=0.0), quiet))
    for extra, lfe in (([], False), (["--layout", "5.1"], True), (["--layout", "5.1", "--loudness", "-30"], True)):
        out = tmp_path / "out.wav"
        assert main(["process", str(src), str(out), *args, *extra]) == 0
        y, _ = read_audio(out)
        change = centre_change_db(x, y) - untouched
        if "--loudness" in extra:  # one gain on top: compare the dip against the level before it
            change = (db(y[2, int(1.5 * SR):int(2.9 * SR)]) - db(y[2, int(0.2 * SR):int(0.9 * SR)])) - (
                db(x[2, int(1.5 * SR):int(2.9 * SR)]) - db(x[2, int(0.2 * SR):int(0.9 * SR)]))
        assert (abs(change) < 0.3) == lfe, (extra, change)
        assert wav_channel_mask(out) == (MASK_51 if extra else None), extra
    assert main(["process", str(src), str(tmp_path / "o2.wav"), "--layout", "7.1", "-q"]) == 1  # 6 channels
