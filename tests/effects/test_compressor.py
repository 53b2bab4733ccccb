"""Compressor: static curve, ballistics, linking, side-chain filter, makeup, block-size
invariance, NaN and denormal safety, no allocation in process."""
from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir

from hushbridge.effects import EFFECTS, Compressor, ProcessSpec
from hushbridge.errors import ParamError

SR = 48000
SPEECH = (shared_data_dir() or Path("/nonexistent")) / "speech"
MUSIC = (shared_data_dir() or Path("/nonexistent")) / "music"


def alternating(level_db: float, frames: int) -> np.ndarray:
    """A full-scale-Nyquist tone: |x| is constant, so a peak detector sees a steady level."""
    a = 10 ** (level_db / 20)
    return (a * np.where(np.arange(frames) % 2 == 0, 1.0, -1.0)).astype(np.float32)


def run(comp: Compressor, x: np.ndarray, block: int = 256, sr: int = SR) -> np.ndarray:
    x2 = np.atleast_2d(x).astype(np.float32)
    comp.prepare(ProcessSpec(sr, block, x2.shape[0]))
    y = x2.copy()
    for start in range(0, y.shape[1], block):
        comp.process(y[:, start : start + block])
    return y


def expected_gr(level_db: float, threshold_db: float, ratio: float, knee_db: float) -> float:
    """Static curve written out independently (Giannoulis, Massberg & Reiss, JAES 2012, eq. 4)."""
    over = level_db - threshold_db
    if 2 * over < -knee_db:
        out = level_db
    elif knee_db > 0 and 2 * abs(over) <= knee_db:
        out = level_db + (1 / ratio - 1) * (over + knee_db / 2) ** 2 / (2 * knee_db)
    else:
        out = threshold_db + over / ratio
    return level_db - out


def steady_gain_db(x: np.ndarray, y: np.ndarray) -> float:
    half = x.shape[-1] // 2
    return float(10 * np.log10(np.mean(y[..., half:] ** 2) / np.mean(x[..., half:] ** 2)))


def load(folder: Path, pattern: str, frames: int, channels: int) -> tuple[np.ndarray, int]:
    import soundfile as sf

    files = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if not files:
        pytest.skip(f"real audio not found in {folder}")
    data, sr = sf.read(str(files[0]), frames=frames, dtype="float32", always_2d=True)
    data = data[:, :channels] if data.shape[1] >= channels else np.repeat(data[:, :1], channels, axis=1)
    return np.ascontiguousarray(data.T), sr


@pytest.mark.parametrize("threshold, ratio, knee", [(-24.0, 4.0, 0.0), (-18.0, 3.0, 6.0), (-40.0, 20.0, 12.0),
                                                    (-10.0, 1.5, 24.0), (-30.0, 1.0, 0.0)])
def test_static_curve_peak(threshold: float, ratio: float, knee: float) -> None:
    worst = 0.0
    for level in np.arange(-60.0, 0.1, 3.0):
        x = alternating(level, SR // 2)
        comp = Compressor(threshold_db=threshold, ratio=ratio, knee_db=knee, attack_ms=1.0, release_ms=200.0)
        y = run(comp, x)
        err = steady_gain_db(x, y) + expected_gr(level, threshold, ratio, knee)
        worst = max(worst, abs(err))
        assert comp.gain_reduction_db == pytest.approx(expected_gr(level, threshold, ratio, knee), abs=0.05)
    assert worst < 0.1, f"static curve off by {worst:.3f} dB"


@pytest.mark.parametrize("detector", [0, 1])
def test_static_curve_on_sines(detector: int) -> None:
    """A 1 kHz tone: the peak detector sees its amplitude, the RMS detector amplitude - 3 dB."""
    t = np.arange(SR) / SR
    for level in (-30.0, -18.0, -12.0, -6.0, 0.0):
        x = (10 ** (level / 20) * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
        comp = Compressor(threshold_db=-24.0, ratio=4.0, knee_db=0.0, attack_ms=5.0, release_ms=300.0,
                          detector=detector)
        y = run(comp, x)
        seen = level - (10 * math.log10(2) if detector else 0.0)
        assert steady_gain_db(x, y) == pytest.approx(-expected_gr(seen, -24.0, 4.0, 0.0), abs=0.5)


def measure_crossing(gr: np.ndarray, target: float, rising: bool) -> float:
    """Fractional sample index where ``gr`` first crosses ``target``."""
    idx = np.argmax(gr >= target) if rising else np.argmax(gr <= target)
    assert idx > 0
    a, b = gr[idx - 1], gr[idx]
    return idx - 1 + (target - a) / (b - a)


@pytest.mark.parametrize("attack_ms", [1.0, 10.0, 50.0])
@pytest.mark.parametrize("release_ms", [50.0, 120.0, 500.0])
def test_attack_release_time_constants(attack_ms: float, release_ms: float) -> None:
    quiet, loud = -40.0, 0.0
    n1, n2, n3 = SR // 10, SR * 2, SR * 4
    x = np.concatenate([alternating(quiet, n1), alternating(loud, n2), alternating(quiet, n3)])
    comp = Compressor(threshold_db=-20.0, ratio=4.0, knee_db=0.0, attack_ms=attack_ms, release_ms=release_ms)
    y = run(comp, x, block=100)
    gr = -20 * np.log10(np.abs(y[0]) / np.abs(x))
    final = expected_gr(loud, -20.0, 4.0, 0.0)  # 15 dB
    assert gr[n1 + n2 - 1] == pytest.approx(final, abs=0.01)
    t_att = (measure_crossing(gr[n1:], final * (1 - math.exp(-1)), rising=True) + 1) / SR * 1e3
    t_rel = (measure_crossing(gr[n1 + n2:], final * math.exp(-1), rising=False) + 1) / SR * 1e3
    assert t_att == pytest.approx(attack_ms, rel=0.03, abs=0.05)
    assert t_rel == pytest.approx(release_ms, rel=0.03, abs=0.05)


def test_linked_detector_applies_one_gain_to_all_channels() -> None:
    loud = alternating(-6.0, SR // 2)
    quiet = alternating(-40.0, SR // 2)
    x = np.stack([quiet, loud])
    y = run(Compressor(threshold_db=-20.0, ratio=4.0, knee_db=0.0), x)
    g = y.astype(np.float64) / x
    np.testing.assert_allclose(g[0], g[1], rtol=2e-7)  # same gain; only float32 rounding differs
    assert steady_gain_db(x[0], y[0]) == pytest.approx(-expected_gr(-6.0, -20.0, 4.0, 0.0), abs=0.05)


def test_sidechain_highpass_ignores_rumble() -> None:
    t = np.arange(SR) / SR
    rumble = (0.5 * np.sin(2 * np.pi * 40.0 * t)).astype(np.float32)
    flat = run(Compressor(threshold_db=-20.0, ratio=4.0, sidechain_hpf_hz=20.0), rumble)
    filtered = run(Compressor(threshold_db=-20.0, ratio=4.0, sidechain_hpf_hz=400.0), rumble)
    assert steady_gain_db(rumble, flat) < -6.0
    assert steady_gain_db(rumble, filtered) > -0.2


def test_makeup_and_params() -> None:
    x = alternating(-40.0, SR // 4)
    y = run(Compressor(makeup_db=6.0), x)
    assert steady_gain_db(x, y) == pytest.approx(6.0, abs=1e-4)
    comp = Compressor()
    assert comp.values() == {"threshold_db": -18.0, "ratio": 3.0, "knee_db": 6.0, "attack_ms": 10.0,
                             "release_ms": 120.0, "makeup_db": 0.0, "detector": 0.0, "sidechain_hpf_hz": 20.0,
                             "freeze_db": 0.0}
    assert comp.param("detector").display(1) == "rms"
    assert comp.latency_samples == 0
    with pytest.raises(ParamError, match="ratio"):
        comp.ratio = 0.5
    assert EFFECTS["compressor"] is Compressor


def test_freeze_holds_the_gain_reduction_in_a_pause() -> None:
    """A gated compressor: a loud stretch (-6 dB, 12 dB over a -18 dB threshold, ratio 4: 9 dB of
    gain reduction), then a pause at -50 dB, then the loud level again. Without ``freeze_db``
    the pause releases to the whole makeup and comes up 9 dB against the loud part; with it (the
    pause is more than 12 dB under the threshold) the pause keeps the loud part's gain, and the
    loud part after it starts where the first one ended (no attack transient). Levels between
    the freeze level and the threshold still release."""
    loud, pause = alternating(-6.0, SR), alternating(-50.0, SR)
    x = np.concatenate([loud, pause, loud, alternating(-24.0, SR)])
    params = dict(threshold_db=-18.0, ratio=4.0, knee_db=0.0, attack_ms=5.0, release_ms=100.0, makeup_db=9.0)
    plain = run(Compressor(**params), x)[0]
    frozen = run(Compressor(**params, freeze_db=12.0), x)[0]

    def gain(y, a, b):
        sl = slice(int(a * SR), int(b * SR))
        return float(20 * np.log10(np.abs(y[sl]).mean() / np.abs(x[sl]).mean()))

    assert gain(plain, 0.5, 1.0) == pytest.approx(0.0, abs=0.05)  # 9 dB GR, 9 dB makeup
    assert gain(plain, 1.5, 2.0) == pytest.approx(9.0, abs=0.05)  # the pause lifted by the makeup
    assert gain(frozen, 0.5, 1.0) == pytest.approx(0.0, abs=0.05)
    assert gain(frozen, 1.05, 2.0) == pytest.approx(0.0, abs=0.05)  # the pause kept the loud part's gain
    g = 20 * np.log10(np.abs(frozen[2 * SR:2 * SR + 480]) / np.abs(x[2 * SR:2 * SR + 480]))
    assert np.all(np.abs(g) < 0.05)  # the next loud part starts at its gain: no overshoot
    # -24 dB: 6 dB under the threshold, not 12: it releases (to the makeup) as without freeze
    assert gain(frozen, 3.6, 4.0) == pytest.approx(gain(plain, 3.6, 4.0), abs=0.05)
    assert gain(frozen, 3.6, 4.0) == pytest.approx(9.0, abs=0.1)


def gain_reductions(comp: Compressor, x: np.ndarray) -> list[float]:
    """``x`` through ``comp`` (prepared afresh) in 480-frame blocks: each block's gain reduction."""
    comp.prepare(ProcessSpec(SR, 480, 1))
    comp.reset()
    y = x[None].copy()
    gr = []
    for s in range(0, y.shape[1], 480):
        comp.process(y[:, s:s + 480])
        gr.append(comp.gain_reduction_db)
    return gr


def test_freeze_holds_through_the_peaks_of_noise_with_the_peak_detector() -> None:
    """With the peak detector (the default), the noise in a pause has peaks 10-13 dB over its
    RMS: 20 dB under the threshold, they crossed a 12 dB freeze level and released the gain
    reduction within half a second (a QA finding). The freeze holds while the level smoothed
    over 20 ms stays under it and the peaks stay under the knee."""
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    tone = 10 ** (-10 / 20) * math.sqrt(2) * np.sin(2 * np.pi * 200 * t)
    x = np.concatenate([tone, rng.normal(0.0, 10 ** (-50 / 20), 3 * SR)]).astype(np.float32)
    comp = Compressor(threshold_db=-30.0, ratio=4.0, knee_db=6.0, attack_ms=5.0, release_ms=120.0, freeze_db=12.0)
    gr = gain_reductions(comp, x)
    assert gr[99] > 15.0  # the end of the tone
    assert min(gr[110:]) > 14.0, min(gr[110:])  # held for the whole 3 s of noise


@pytest.mark.parametrize("detector", [0, 1])
def test_freeze_holds_through_short_bursts_in_a_pause(detector: int) -> None:
    """Typing in a pause: 3 ms bursts 2 dB under the threshold (in the knee), ten a second. Each burst lifted
    the detector over the freeze level and released a little, so over 3 s of typing the gain
    reduction was gone and the clicks got the whole makeup (QA, session 22). A burst that long
    never brings the level held over 20 ms up to the freeze level: the gain reduction holds. A
    burst over the threshold still raises it."""
    t = np.arange(SR) / SR
    tone = 10 ** (-10 / 20) * math.sqrt(2) * np.sin(2 * np.pi * 200 * t)
    pause = np.zeros(3 * SR)
    burst = int(0.003 * SR)
    for start in range(0, 3 * SR, SR // 10):
        pause[start:start + burst] = alternating(-32.0, burst)  # in the knee, under the threshold
    x = np.concatenate([tone, pause]).astype(np.float32)
    comp = Compressor(threshold_db=-30.0, ratio=4.0, knee_db=6.0, attack_ms=5.0, release_ms=120.0,
                      freeze_db=6.0, detector=detector)
    gr = gain_reductions(comp, x)
    # (the RMS detector takes ~50 ms to fall under the freeze level when the tone stops, and
    # releases meanwhile: README, known gaps; its 20 ms level, ~100 ms); from 0.25 s on it holds
    assert gr[125] > 10.0
    assert min(gr[125:]) > gr[125] - 0.3, (gr[125], min(gr[125:]))  # held through 3 s of typing
    loud = x.copy()
    loud[SR + SR // 2:SR + SR // 2 + burst] = alternating(-2.0, burst)  # a desk knock, 28 dB over the threshold
    gr = gain_reductions(comp, loud)
    assert max(gr[150:152]) > gr[125] + 3.0  # it still compresses what needs it


def test_a_frozen_gain_reduction_goes_to_the_speechs_average() -> None:
    """A phrase: 2 s loud (9 dB of gain reduction), then a soft last syllable that releases most
    of it, then a pause. The pause got what the soft syllable left (the room came up against the
    phrase); now it goes to the average over the last second of speech. A knock in the pause
    raises the gain reduction (it needs it), and afterwards it comes back to that average instead
    of holding the knock's (the next word started quiet)."""
    x = np.concatenate([alternating(-6.0, 2 * SR), alternating(-20.0, SR // 2), alternating(-50.0, SR),
                        alternating(0.0, SR // 200), alternating(-50.0, SR)])
    comp = Compressor(threshold_db=-18.0, ratio=4.0, knee_db=0.0, attack_ms=5.0, release_ms=100.0,
                      makeup_db=9.0, freeze_db=12.0)
    gr = gain_reductions(comp, x)
    soft_end, pause = gr[249], gr[340]  # end of the soft syllable; 0.9 s into the pause
    assert gr[199] == pytest.approx(9.0, abs=0.05) and soft_end < 2.0
    assert pause > soft_end + 3.0 and pause < 9.0  # the last second's average: mostly the loud part
    assert max(gr[350:352]) > 10.0  # the knock (18 dB over the threshold) is compressed
    assert gr[-1] == pytest.approx(pause, abs=0.3)  # and then back to the average, not held


def test_threshold_change_is_smoothed() -> None:
    x = alternating(-6.0, SR)
    comp = Compressor(threshold_db=0.0, ratio=20.0, knee_db=0.0, attack_ms=0.1, release_ms=5.0)
    comp.prepare(ProcessSpec(SR, 480, 1))
    y = x[None, :].copy()
    for k, start in enumerate(range(0, SR, 480)):
        if k == 50:
            comp.threshold_db = -30.0
        comp.process(y[:, start : start + 480])
    gain = 20 * np.log10(np.abs(y[0]) / np.abs(x))
    steps = np.abs(np.diff(gain[24000 - 10 : 24000 + 2400]))
    assert gain[24000 - 1] == pytest.approx(0.0, abs=1e-6)
    assert gain[-1] == pytest.approx(-expected_gr(-6.0, -30.0, 20.0, 0.0), abs=0.01)
    assert steps.max() < 0.1, "threshold jumps must ramp, not click"


@pytest.mark.parametrize("detector", [0, 1])
def test_block_size_invariance(detector: int) -> None:
    try:
        x, _ = load(MUSIC, "*Vibe_Ace*", 60000, 2)
        x = x * 2.0
    except pytest.skip.Exception:
        x = (np.random.default_rng(0).standard_normal((2, 60000)) * 0.3).astype(np.float32)

    def make() -> Compressor:
        return Compressor(threshold_db=-30.0, ratio=6.0, knee_db=6.0, attack_ms=3.0, release_ms=80.0,
                          makeup_db=4.0, detector=detector, sidechain_hpf_hz=100.0)

    whole = run(make(), x, block=x.shape[1])
    for block in (1, 64, 128, 1000):
        np.testing.assert_array_equal(run(make(), x, block=block), whole, err_msg=f"block {block}")


def test_real_speech_is_compressed() -> None:
    x, sr = load(SPEECH, "librispeech_1034-*.flac", 16000 * 8, 1)
    comp = Compressor(threshold_db=-30.0, ratio=4.0, attack_ms=5.0, release_ms=100.0)
    y = run(comp, x, sr=sr)
    assert np.all(np.isfinite(y))
    # the loud parts come down, so the crest between loud and quiet frames shrinks
    frames = lambda s: 10 * np.log10(np.mean(s.reshape(-1, 400) ** 2, axis=1) + 1e-12)  # noqa: E731
    fx, fy = frames(x[0]), frames(y[0])
    loud = fx > np.percentile(fx, 90)
    assert np.mean(fx[loud] - fy[loud]) > 3.0
    assert np.max(fy - fx) < 1e-3  # never louder without makeup


def test_nan_input_does_not_poison_state() -> None:
    comp = Compressor(threshold_db=-30.0)
    comp.prepare(ProcessSpec(SR, 256, 2))
    bad = np.full((2, 256), 0.5, dtype=np.float32)
    bad[0, 3] = np.nan
    bad[1, 7] = -np.inf
    comp.process(bad)
    assert np.all(np.isfinite(bad))
    assert np.all(np.isfinite(comp._env)) and np.all(np.isfinite(comp._sc_state))
    comp.reset()
    clean = np.stack([alternating(-10.0, 256)] * 2)
    y = clean.copy()
    comp.process(y)
    fresh = Compressor(threshold_db=-30.0)
    fresh.prepare(ProcessSpec(SR, 256, 2))
    z = clean.copy()
    fresh.process(z)
    np.testing.assert_array_equal(y, z)


@pytest.mark.parametrize("detector", [0, 1])
def test_state_decays_to_exact_zero(detector: int) -> None:
    comp = Compressor(threshold_db=-40.0, detector=detector, release_ms=5.0, sidechain_hpf_hz=500.0)
    comp.prepare(ProcessSpec(SR, 4096, 2))
    comp.process((np.random.default_rng(1).standard_normal((2, 4096))).astype(np.float32))
    silence = np.zeros((2, 4096), dtype=np.float32)
    for _ in range(120):
        silence.fill(0.0)
        comp.process(silence)
    for state in (comp._env[:3], comp._sc_state, comp._rms_state):  # [3]: the freeze's average, off here
        assert np.all(state == 0.0)
    assert comp.gain_reduction_db == 0.0


def test_process_does_not_allocate() -> None:
    comp = Compressor(threshold_db=-30.0, detector=1)
    comp.prepare(ProcessSpec(SR, 128, 2))
    block = (np.random.default_rng(2).standard_normal((2, 128)) * 0.5).astype(np.float32)
    comp.process(block)
    comp.threshold_db = -20.0
    tracemalloc.start()
    try:
        for _ in range(200):
            comp.process(block)
            _ = comp.gain_reduction_db
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2048, f"process allocated {peak} bytes"
