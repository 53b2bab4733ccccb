"""The training-data cache: several processes (an A/B run, the batch workers) that fill it at once
all get the clip, and none leaves or reads a half-written file.

Needs no torch: the cache is numpy and soundfile.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import soundfile as sf

from hushbridge.models.train import data

N_PROCS = 4


def _load_together(cache: str, wav: str, barrier, results) -> None:
    import os

    os.environ["HUSHBRIDGE_TRAIN_CACHE"] = cache
    barrier.wait()
    try:
        clip = data.load_clip(Path(wav))
        results.put(("ok", float(np.sum(clip.audio, dtype=np.float64)), clip.sr))
    except Exception as e:  # reported to the test, which fails on it
        results.put(("error", repr(e), 0))


def test_processes_filling_the_cache_at_once_all_get_the_clip(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal((48000 * 20, 2))).astype(np.float32)
    ctx = mp.get_context("fork")
    for round_ in range(3):
        wav = tmp_path / f"clip{round_}.wav"
        sf.write(wav, x, 48000, subtype="FLOAT")
        cache = tmp_path / f"cache{round_}"
        barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
        procs = [ctx.Process(target=_load_together, args=(str(cache), str(wav), barrier, results))
                 for _ in range(N_PROCS)]
        for p in procs:
            p.start()
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert all(g[0] == "ok" for g in got), got
        assert len({g[1] for g in got}) == 1 and got[0][2] == 48000
        files = sorted(p.name for p in (cache / "audio").iterdir())
        assert len(files) == 1 and files[0].endswith(".npz") and ".tmp" not in files[0], files
        # a later load reads the cached clip: the same samples, mono
        monkeypatch.setenv("HUSHBRIDGE_TRAIN_CACHE", str(cache))
        again = data.load_clip(wav)
        assert float(np.sum(again.audio, dtype=np.float64)) == got[0][1]
        np.testing.assert_allclose(again.audio, x.mean(axis=1), atol=1e-7)


def _sine_clip(freq: float, sr: int = 16000, seconds: float = 3.0) -> data.Clip:
    t = np.arange(int(sr * seconds)) / sr
    return data.Clip(audio=(0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr=sr, band_hz=7000.0)


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * data.SR / x.size)


def test_speed_perturbation_scales_pitch_and_band():
    clip = _sine_clip(1000.0)
    rng = np.random.default_rng(0)
    n = 48000
    assert abs(_peak_hz(data.crop_48k(rng, clip, n)) - 1000.0) < 2.0
    fast = data.crop_48k(rng, clip, n, speed=1.2)
    slow = data.crop_48k(rng, clip, n, speed=0.9)
    assert fast.shape == slow.shape == (n,)
    assert abs(_peak_hz(fast) - 1200.0) < 2.0
    assert abs(_peak_hz(slow) - 900.0) < 2.0

    sampler = data.MixtureSampler.__new__(data.MixtureSampler)
    sampler.wide, sampler.tts, sampler.speech = [], [], [clip]
    sampler.cfg = data.MixConfig(p_speed=1.0, speed_range=(1.25, 1.25))
    x, band = sampler._speech(np.random.default_rng(1), n)
    assert band == 7000.0 * 1.25
    assert abs(_peak_hz(x) - 1250.0) < 2.0


def test_no_speed_perturbation_keeps_the_random_draws_of_older_configs():
    clip = _sine_clip(440.0)
    sampler = data.MixtureSampler.__new__(data.MixtureSampler)
    sampler.wide, sampler.tts, sampler.speech = [], [], [clip]
    sampler.cfg = data.MixConfig()  # p_speed 0
    rng = np.random.default_rng(7)
    x, band = sampler._speech(rng, 4800)
    old = np.random.default_rng(7)  # the draws of the code before speed perturbation existed
    old.random()
    old.integers(1)
    np.testing.assert_array_equal(x, data.crop_48k(old, clip, 4800))
    assert band == 7000.0
    assert rng.random() == old.random()


def _noise_sampler(cfg: data.MixConfig, clips: list[data.Clip]) -> data.MixtureSampler:
    sampler = data.MixtureSampler.__new__(data.MixtureSampler)
    sampler.cfg = cfg
    sampler.noise, sampler.dev_noise = data.split_dev_noise(clips, cfg.dev_noise_every)
    return sampler


def test_no_noise_augmentation_keeps_the_random_draws_of_older_configs():
    clip = _sine_clip(440.0)
    sampler = _noise_sampler(data.MixConfig(p_real_noise=1.0), [clip])  # p_noise_aug 0
    rng = np.random.default_rng(11)
    x = sampler._noise(rng, 4800)
    old = np.random.default_rng(11)  # the draws of the code before noise augmentation existed
    old.random()
    old.integers(1)
    y = data.crop_48k(old, clip, 4800)
    np.testing.assert_allclose(x, y / (np.sqrt(np.mean(y**2)) + 1e-9), rtol=1e-6)
    assert rng.random() == old.random()


def test_noise_augmentation_shifts_and_colours_the_recording():
    clip = _sine_clip(1000.0)
    cfg = data.MixConfig(p_real_noise=1.0, p_noise_aug=1.0, noise_speed_range=(0.8, 0.8), noise_eq_db=9.0)
    x = _noise_sampler(cfg, [clip])._noise(np.random.default_rng(2), 48000)
    assert abs(_peak_hz(x) - 800.0) < 2.0  # played 0.8x as fast
    assert abs(np.sqrt(np.mean(x.astype(np.float64) ** 2)) - 1.0) < 1e-3  # still unit RMS
    # the EQ differs between draws: the same crop through two random curves
    a = _noise_sampler(cfg, [clip])._noise(np.random.default_rng(3), 48000)
    b = _noise_sampler(cfg, [clip])._noise(np.random.default_rng(4), 48000)
    assert not np.allclose(a, b)


def test_dev_noises_stay_out_of_the_training_pool():
    clips = [data.Clip(np.zeros(10, np.float32), 48000, 20000.0, f"n{i:02d}.wav") for i in range(30)]
    train, dev = data.split_dev_noise(clips, 6)
    assert [c.name for c in dev] == ["n03.wav", "n09.wav", "n15.wav", "n21.wav", "n27.wav"]
    assert len(train) == 25 and not {c.name for c in train} & {c.name for c in dev}
    assert data.split_dev_noise(clips, 0) == (clips, [])
    # a sampler with the setting never draws a dev recording
    sampler = _noise_sampler(data.MixConfig(p_real_noise=1.0, dev_noise_every=6),
                             [_sine_clip(100.0 * (i + 1)) for i in range(12)])
    rng = np.random.default_rng(0)
    seen = {round(_peak_hz(sampler._noise(rng, 9600)) / 100.0) for _ in range(200)}
    assert seen == {1, 2, 3, 5, 6, 7, 8, 9, 11, 12}


def test_the_cache_keeps_files_of_one_name_in_two_folders_apart(tmp_path, monkeypatch):
    """The paired sets hold a clean and a noisy file of the same name (and size, and time): the
    cache key had only those, so one would have been read as the other."""
    import os

    monkeypatch.setenv("HUSHBRIDGE_TRAIN_CACHE", str(tmp_path / "cache"))
    paths = []
    for folder, value in (("clean", 0.25), ("noisy", -0.5)):
        (tmp_path / folder).mkdir()
        p = tmp_path / folder / "p287_001.wav"
        sf.write(str(p), np.full(4800, value, np.float32), 48000, subtype="FLOAT")
        os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
        paths.append(p)
    assert [float(data.load_clip(p).audio[0]) for p in paths] == [0.25, -0.5]


def test_the_held_out_speakers_do_not_move_when_the_folder_changes(tmp_path):
    """The split picked LibriSpeech speakers by their position in the folder's sorted list: one
    file fewer moved all 14 held-out speakers into training."""
    import pytest

    from hushbridge.models.train import split

    try:
        base = split.shared_data_dir()
    except FileNotFoundError:
        pytest.skip("../shared/data not found")
    held = {p.name for p in split.eval_split(base).speech}
    assert len([n for n in held if n.endswith(".flac")]) == 14
    for sub in ("speech", "noise", "rir"):
        (tmp_path / sub).mkdir()
        for p in sorted((base / sub).iterdir())[(1 if sub == "speech" else 0):]:  # one file fewer
            (tmp_path / sub / p.name).symlink_to(p)
    assert {p.name for p in split.eval_split(tmp_path).speech} == held
    train = {p.name for p in split.train_split(tmp_path).speech}
    assert not train & held


# -- music (the voice-isolation model's noise) ---------------------------------------------------
def _music_sampler(cfg: data.MixConfig, real: list[data.Clip], synth: list[data.Clip]) -> data.MixtureSampler:
    sampler = _noise_sampler(cfg, [_sine_clip(100.0)])
    sampler.real_music, sampler.synth_music = real, synth
    return sampler


def test_music_is_the_noise_as_often_as_configured_and_real_as_often_as_configured():
    cfg = data.MixConfig(p_real_noise=1.0, p_music=0.6, p_real_music=0.3)
    sampler = _music_sampler(cfg, [_sine_clip(1000.0)], [_sine_clip(2000.0), _sine_clip(3000.0)])
    rng = np.random.default_rng(5)
    kinds = [round(_peak_hz(sampler._noise(rng, 9600)) / 100.0) for _ in range(600)]
    share = {k: kinds.count(k) / len(kinds) for k in set(kinds)}
    assert set(share) == {1, 10, 20, 30}  # the recorded noise, real music, both synthesized pieces
    assert abs(share[1] - 0.4) < 0.06
    assert abs(share[10] - 0.6 * 0.3) < 0.05
    assert abs(share[20] + share[30] - 0.6 * 0.7) < 0.06


def test_no_music_keeps_the_random_draws_of_older_configs():
    clip = _sine_clip(440.0)
    sampler = _music_sampler(data.MixConfig(p_real_noise=1.0), [], [])  # p_music 0
    sampler.noise = [clip]
    rng = np.random.default_rng(11)
    x = sampler._noise(rng, 4800)
    old = np.random.default_rng(11)
    old.random()
    old.integers(1)
    y = data.crop_48k(old, clip, 4800)
    np.testing.assert_allclose(x, y / (np.sqrt(np.mean(y**2)) + 1e-9), rtol=1e-6)
    assert rng.random() == old.random()


def test_held_out_music_stays_out_of_training(tmp_path):
    from hushbridge.models.train import split

    (tmp_path / "speech").mkdir()
    (tmp_path / "music").mkdir()
    names = ["librosa_Kevin_MacLeod_-_Vibe_Ace.hq.ogg", split._EVAL_MUSIC[0], "other.wav"]
    for n in names:
        (tmp_path / "music" / n).write_bytes(b"")
    assert [p.name for p in split.eval_split(tmp_path).music] == [split._EVAL_MUSIC[0]]
    assert sorted(p.name for p in split.train_split(tmp_path).music) == sorted([names[0], names[2]])


def test_random_pieces_are_reproducible_and_differ(tmp_path):
    import mido

    a = data.random_midi(np.random.default_rng(3), 10.0)
    b = data.random_midi(np.random.default_rng(3), 10.0)
    c = data.random_midi(np.random.default_rng(4), 10.0)
    msgs = lambda m: [str(x) for t in m.tracks for x in t if x.type != "end_of_track"]  # noqa: E731
    assert msgs(a) == msgs(b) and msgs(a) != msgs(c)
    notes = [x for t in a.tracks for x in t if x.type == "note_on" and x.velocity > 0]
    assert len(notes) > 20 and all(0 <= x.note <= 127 for x in notes)
    assert 8.0 < a.length < 16.0  # about the length asked for (the last bar may run on)
    # every piece plays at its own tempo (version 1 lost it without a chord part: 1 piece in 6)
    for seed in range(40):
        piece = data.random_midi(np.random.default_rng(seed), 20.0)
        assert any(x.type == "set_tempo" for t in piece.tracks for x in t), seed
        assert 19.0 < piece.length < 30.0, (seed, piece.length)  # never shorter (the render is cut to 20 s)
        old = data.random_midi(np.random.default_rng(seed), 20.0, version=1)  # same draws, same notes
        notes = lambda m: [str(x) for t in m.tracks for x in t if x.type.startswith("note")]  # noqa: E731
        assert notes(old) == notes(piece)
    a.save(tmp_path / "a.mid")
    assert msgs(mido.MidiFile(tmp_path / "a.mid")) == msgs(a)


def test_synthesized_music_is_rendered_once_and_cached(tmp_path, monkeypatch):
    import shutil

    import pytest

    if shutil.which("fluidsynth") is None or not any(Path(f).exists() for f in data._SOUNDFONTS):
        pytest.skip("FluidSynth or a General MIDI SoundFont is not installed (training-only tools)")
    monkeypatch.setenv("HUSHBRIDGE_TRAIN_CACHE", str(tmp_path))
    clips = data.synth_music(2, seed=1, seconds=4.0)
    assert [c.sr for c in clips] == [data.SR, data.SR] and all(c.audio.size == 4 * data.SR for c in clips)
    for c in clips:  # sound all through, at the pool's level, not one piece twice
        rms = [np.sqrt(np.mean(c.audio[k * 12000:(k + 1) * 12000] ** 2)) for k in range(14)]
        assert min(rms) > 0.003 and abs(np.sqrt(np.mean(c.audio**2)) - 0.05) < 1e-3
    assert not np.allclose(clips[0].audio, clips[1].audio)
    monkeypatch.setattr(data.shutil, "which", lambda _name: None)  # a second call reads the cache
    again = data.synth_music(2, seed=1, seconds=4.0)
    np.testing.assert_array_equal(again[0].audio, clips[0].audio)
    with pytest.raises(RuntimeError, match="FluidSynth"):
        data.synth_music(3, seed=1, seconds=4.0)
    assert data.synth_music(0, seed=1) == []  # real music only: no FluidSynth needed
