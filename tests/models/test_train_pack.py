"""The training pack (what a lent GPU machine trains from): pools survive the Opus round trip with
their rates, band limits, names and levels, and a sampler built from a pack makes valid batches.

Needs no torch: packing and mixing are numpy, soundfile and soxr.
"""

from __future__ import annotations

import numpy as np
import pytest

from hushbridge.models.train.data import SR, Clip, MixConfig, MixtureSampler
from hushbridge.models.train.pack import load_pack, write_pack


def _voice(sr: int, seconds: float, f0: float, seed: int) -> np.ndarray:
    """A harmonic, amplitude-modulated tone band-limited by its rate: speech-like for Opus."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, int(sr / 2 / f0)))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    return (0.2 * x * env / np.max(np.abs(x))).astype(np.float32)


class _Pools:
    """The attributes of a MixtureSampler that a pack holds."""

    def __init__(self):
        self.speech = [Clip(_voice(16000, 3.0, 140.0, 1), 16000, 7800.0, "a.flac"),
                       Clip(_voice(22050, 3.0, 210.0, 2), 22050, 10500.0, "b.wav"),
                       Clip(_voice(48000, 3.0, 120.0, 3), 48000, 20000.0, "wide.wav")]
        self.tts = [Clip(_voice(8000, 2.0, 100.0, 4), 8000, 3880.0, "0000.npz")]
        rng = np.random.default_rng(5)
        self.noise = [Clip((0.05 * rng.standard_normal(44100 * 2)).astype(np.float32), 44100, 21000.0, "n.ogg"),
                      Clip((1.5 * np.sin(np.arange(32000) * 0.05)).astype(np.float32), 16000, 7700.0, "loud.wav")]
        decay = np.exp(-np.arange(4800) / 800.0)
        self.rirs = [(decay * np.random.default_rng(6).standard_normal(4800)).astype(np.float32) for _ in range(3)]
        for h in self.rirs:
            h[0] = 1.0
        self.rirs_from_step = (2, 100)


def _level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20)


def test_pack_round_trip_keeps_rates_bands_names_and_levels(tmp_path):
    pools = _Pools()
    write_pack(pools, tmp_path)
    back = MixtureSampler.__new__(MixtureSampler)
    back.cfg = MixConfig(pra_from_step=100)
    load_pack(back, tmp_path, verbose=False)
    for name in ("speech", "tts", "noise"):
        a, b = getattr(pools, name), getattr(back, name)
        assert [c.name for c in b] == [c.name for c in a]
        assert [c.band_hz for c in b] == [c.band_hz for c in a]
        for ca, cb in zip(a, b):
            # Opus rates only: 22.05 kHz goes up to 24 kHz and 44.1 kHz to 48 kHz (resampled, same duration)
            want = {22050: 24000, 44100: 48000}.get(ca.sr, ca.sr)
            assert cb.sr == want
            assert cb.audio.size / cb.sr == pytest.approx(ca.audio.size / ca.sr, abs=0.01)
            # same level within 0.5 dB, also for a clip that had to be scaled into [-1, 1] for Opus
            assert _level_db(cb.audio) == pytest.approx(_level_db(ca.audio), abs=0.5)
    # the spectrum is kept (a lossy codec, so not sample-exact): same fundamental, >= 20 dB above the rest
    a, b = pools.speech[0].audio, back.speech[0].audio
    spec = np.abs(np.fft.rfft(b * np.hanning(b.size)))
    f = np.fft.rfftfreq(b.size, 1 / 16000)
    assert abs(f[np.argmax(spec)] - 140.0) < 2.0
    assert len(back.rirs) == 3 and back.rirs_from_step == (2, 100)
    assert np.max(np.abs(back.rirs[0] - pools.rirs[0])) < 1e-3  # float16
    assert [c.name for c in back.wide] == ["wide.wav"]


def test_sampler_from_a_pack_makes_finite_batches_with_the_config_length(tmp_path):
    write_pack(_Pools(), tmp_path)
    cfg = MixConfig(seconds=0.5, p_tts=0.5, pra_from_step=100)
    s = MixtureSampler(cfg, seed=3, pack=tmp_path, verbose=False)
    noisy, target, band = s.batch(7, 4)
    assert noisy.shape == target.shape == (4, SR // 2)
    assert np.all(np.isfinite(noisy)) and np.all(np.isfinite(target))
    assert np.max(np.abs(noisy)) <= 0.99 + 1e-6
    assert band.shape == (4,) and np.all(band > 0)
    again = MixtureSampler(cfg, seed=3, pack=tmp_path, verbose=False).batch(7, 4)
    assert np.array_equal(again[0], noisy)  # a pure function of (seed, step), as from ../shared


def test_fast_fft_len_is_the_next_5_smooth_size():
    from hushbridge.models.train.data import fast_fft_len

    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in list(range(1, 400)) + [96000 + 72000 - 1, 131073]:
        m = fast_fft_len(n)
        assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m))


def test_reverb_equals_two_linear_convolutions(tmp_path):
    """The cached-spectrum reverb gives what the direct convolutions give, for the whole response and
    for its early part (the target), also when the same room comes back (cache hit)."""
    from hushbridge.models.train.data import early_part

    write_pack(_Pools(), tmp_path)
    s = MixtureSampler(MixConfig(seconds=0.25, pra_from_step=100), seed=1, pack=tmp_path, verbose=False)
    x = np.random.default_rng(2).standard_normal(SR // 4).astype(np.float32)
    for _ in range(2):
        wet, target = s._reverb(x, 1)
        h = s.rirs[1]
        np.testing.assert_allclose(wet, np.convolve(x, h)[: x.size], atol=2e-5)
        np.testing.assert_allclose(target, np.convolve(x, early_part(h, s.cfg.early_ms))[: x.size], atol=2e-5)


def test_pack_carries_the_music_pools_and_a_music_run_refuses_a_pack_without(tmp_path):
    pools = _Pools()
    write_pack(pools, tmp_path / "plain")  # a sampler without music (denoise), as packs were before
    pools.real_music = [Clip(_voice(44100, 2.0, 330.0, 7), 44100, 20000.0, "strings.ogg")]
    pools.synth_music = [Clip(_voice(48000, 2.0, 220.0, 8), 48000, 24000.0, "m000")]
    write_pack(pools, tmp_path / "music")
    back = MixtureSampler.__new__(MixtureSampler)
    back.cfg = MixConfig(p_music=0.5, synth_music_count=1)
    load_pack(back, tmp_path / "music", verbose=False)
    assert [c.name for c in back.real_music] == ["strings.ogg"] and [c.name for c in back.synth_music] == ["m000"]
    assert _level_db(back.synth_music[0].audio) == pytest.approx(_level_db(pools.synth_music[0].audio), abs=0.5)
    x = back._noise(np.random.default_rng(0), 4800)
    assert np.isfinite(x).all()
    plain = MixtureSampler.__new__(MixtureSampler)
    plain.cfg = MixConfig()
    load_pack(plain, tmp_path / "plain", verbose=False)
    assert plain.real_music == [] and plain.synth_music == []
    plain.cfg = MixConfig(p_music=0.5)
    with pytest.raises(ValueError, match="no music"):
        load_pack(plain, tmp_path / "plain", verbose=False)
