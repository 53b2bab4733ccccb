"""duck: the bed (music, game audio) falls under the voices and comes back after them."""
import numpy as np
import pytest

from hushbridge.effects import EFFECTS, Chain, Duck, ProcessSpec

SR = 48000


def level_db(a):
    return 20 * np.log10(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def stream(seconds=5.0, words=((1.0, 2.0),), seed=0):
    """A voice on channel 1 (a 200 Hz buzz while it talks, room noise at -70 dBFS) and a stereo
    music bed on 2-3 (0.1 peak tones) all through."""
    t = np.arange(int(seconds * SR)) / SR
    talking = np.zeros(t.size, bool)
    for a, b in words:
        talking |= (t >= a) & (t < b)
    rng = np.random.default_rng(seed)
    voice = 0.2 * np.sin(2 * np.pi * 200 * t) * talking + 3e-4 * rng.standard_normal(t.size)
    music = np.stack([0.1 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 660 * t + 1.0)])
    return np.vstack([voice, music]).astype(np.float32)


def cut_db(x, y, start, stop, c=1):
    s = slice(int(start * SR), int(stop * SR))
    return level_db(y[c, s]) - level_db(x[c, s])


def test_the_bed_falls_by_the_depth_under_a_voice_and_comes_back_after_hold_and_release():
    x = stream(seconds=6.0)
    duck = Duck(depth_db=15.0, attack_ms=50.0, hold_ms=300.0, release_ms=500.0)
    y = Chain([duck])(x, SR)
    np.testing.assert_array_equal(y[0], x[0])  # the voice passes untouched
    assert cut_db(x, y, 0.2, 0.95) == pytest.approx(0.0, abs=0.01)  # room noise does not duck
    assert cut_db(x, y, 1.4, 1.95) == pytest.approx(-15.0, abs=0.1)
    assert cut_db(x, y, 1.4, 1.95, c=2) == pytest.approx(-15.0, abs=0.1)  # one gain: the image holds
    # 63 % of the way down one attack time after the voice starts (the key's 10 ms included)
    at = 1.0 + 0.05 + 0.005
    assert cut_db(x, y, at - 0.002, at + 0.002) == pytest.approx(-15.0 * 0.63, abs=1.5)
    assert cut_db(x, y, 2.05, 2.25) == pytest.approx(-15.0, abs=0.1)  # held over the gap after the word
    after = 2.0 + 0.3 + 0.5  # the hold, then one release time: 63 % of the way back up
    assert cut_db(x, y, after - 0.002, after + 0.002) == pytest.approx(-15.0 * 0.37, abs=1.5)
    assert cut_db(x, y, 5.5, 5.95) == pytest.approx(0.0, abs=0.05)  # six release times on
    gains = y[1] / np.where(np.abs(x[1]) > 0.02, x[1], np.nan)
    steps = np.abs(np.diff(20 * np.log10(gains[np.isfinite(gains)])))
    assert steps.max() < 0.05  # a smooth ride, no zipper


def test_gaps_between_words_shorter_than_hold_keep_the_bed_down():
    words = [(1.0 + 0.5 * k, 1.3 + 0.5 * k) for k in range(6)]  # 0.3 s words, 0.2 s gaps
    x = stream(words=words)
    y = Chain([Duck(depth_db=12.0, hold_ms=400.0)])(x, SR)
    for k in range(1, 6):
        gap = 1.3 + 0.5 * (k - 1)
        assert cut_db(x, y, gap, gap + 0.2) == pytest.approx(-12.0, abs=0.2)


def test_the_same_samples_for_any_block_size_and_the_voices_set_how_many_channels_key():
    x = stream(seconds=3.0)
    outs = []
    for block in (1, 64, 1000):
        d = Duck(voices=1)
        d.prepare(ProcessSpec(SR, block, 3))
        y = x.copy()
        for i in range(0, y.shape[1], block):
            d.process(y[:, i:i + block])
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    two_mics = np.vstack([x[:1] * 0, x])  # channel 2 is the talker now: voices=2 keys on it
    y = Chain([Duck(voices=2, depth_db=10.0)])(two_mics, SR)
    assert cut_db(two_mics, y, 1.4, 1.95, c=2) == pytest.approx(-10.0, abs=0.1)
    np.testing.assert_array_equal(y[:2], two_mics[:2])
    alone = Chain([Duck(voices=3)])(x, SR)  # no bed: nothing to duck
    np.testing.assert_array_equal(alone, x)


def test_non_finite_samples_never_leave_and_meters_say_how_far_the_bed_is_down():
    x = stream(seconds=3.0)
    x[1, 1000:1010] = np.nan
    x[0, 2000] = np.inf
    d = Duck(depth_db=9.0)
    y = Chain([d])(x[:, :int(1.9 * SR)], SR)
    assert np.isfinite(y).all()
    assert d.gain_reduction_db == pytest.approx(9.0, abs=0.05) and d.activity == 1.0
    d.reset()
    assert d.gain_reduction_db == 0.0 and d.activity == 0.0
    assert EFFECTS["duck"] is Duck and Duck.channel_coupling == "joint"
