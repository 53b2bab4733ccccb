"""HighPass and PeakingEQ: against scipy with independently computed RBJ coefficients,
block-size invariance, smoothing, NaN and denormal safety, no allocation in process."""
from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir
from scipy import signal

from hushbridge.effects import EFFECTS, HighPass, PeakingEQ, ProcessSpec, create_effect
from hushbridge.errors import ParamError

RATES = [44100, 48000, 96000]
MUSIC = (shared_data_dir() or Path("/nonexistent")) / "music"



def started_sosfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """scipy's sosfilt started as hushbridge starts its filters: in the steady state of the
    first sample (``sosfilt_zi``), so a DC offset passes without a step."""
    zi = signal.sosfilt_zi(sos)[:, None, :] * x[:, 0].astype(np.float64)[None, :, None]
    return signal.sosfilt(sos, x.astype(np.float64), axis=1, zi=zi)[0]

def rbj_sos(kind: str, fs: float, f0: float, q: float, gain_db: float = 0.0) -> np.ndarray:
    """One second-order section from the Audio EQ Cookbook (written out independently)."""
    w0 = 2 * math.pi * f0 / fs
    c, alpha = math.cos(w0), math.sin(w0) / (2 * q)
    if kind == "hp":
        b, a = [(1 + c) / 2, -(1 + c), (1 + c) / 2], [1 + alpha, -2 * c, 1 - alpha]
    else:
        A = 10 ** (gain_db / 40)
        b, a = [1 + alpha * A, -2 * c, 1 - alpha * A], [1 + alpha / A, -2 * c, 1 - alpha / A]
    return np.concatenate([np.array(b) / a[0], np.array(a) / a[0]])


def noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((channels, frames)) * 0.25).astype(np.float32)


def music(frames: int) -> np.ndarray:
    import soundfile as sf

    files = sorted(MUSIC.glob("*Vibe_Ace*")) if MUSIC.is_dir() else []
    if not files:
        pytest.skip(f"real music not found in {MUSIC}")
    data, _ = sf.read(str(files[0]), frames=frames, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T)


def run_blocks(effect, x: np.ndarray, sr: int, block: int) -> np.ndarray:
    """Prepare ``effect`` and process ``x`` (channels, frames) raw, in blocks of ``block``."""
    effect.prepare(ProcessSpec(sr, block, x.shape[0]))
    y = x.copy()
    for start in range(0, x.shape[1], block):
        effect.process(y[:, start : start + block])
    return y


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("cutoff, q", [(80.0, 2**-0.5), (10.0, 0.5), (1000.0, 4.0)])
def test_highpass_matches_lfilter(sr: int, cutoff: float, q: float) -> None:
    x = noise(2, sr // 2)
    y = run_blocks(HighPass(cutoff_hz=cutoff, q=q), x, sr, 512)
    ref = started_sosfilt(rbj_sos("hp", sr, cutoff, q)[None, :], x)
    np.testing.assert_allclose(y, ref, atol=2e-6)


@pytest.mark.parametrize("sr", RATES)
def test_highpass_24db_is_4th_order_butterworth(sr: int) -> None:
    x = noise(1, sr // 2)
    y = run_blocks(HighPass(cutoff_hz=120.0, slope=1), x, sr, 256)
    sos = signal.butter(4, 120.0, btype="highpass", fs=sr, output="sos")
    # the bilinear Butterworth prewarps; RBJ does too (same analog prototype), so they agree
    ref = started_sosfilt(sos, x)
    np.testing.assert_allclose(y, ref, atol=2e-5)
    stages = np.array([rbj_sos("hp", sr, 120.0, 1 / (2 * math.cos(k * math.pi / 8))) for k in (1, 3)])
    w, h = signal.sosfreqz(stages, worN=[120.0, 60.0, 30.0], fs=sr)
    db = 20 * np.log10(np.abs(h))
    assert db[0] == pytest.approx(-3.0103, abs=0.02)
    assert db[2] - db[1] == pytest.approx(-24.0, abs=0.3)  # 24 dB/oct well below cutoff


@pytest.mark.parametrize("sr", RATES)
def test_peaking_eq_matches_sosfilt(sr: int) -> None:
    bands = [(60.0, 12.0, 0.7), (400.0, -9.0, 3.0), (2500.0, 4.5, 1.0), (12000.0, -24.0, 0.3)]
    eq = PeakingEQ()
    for i, (f, g, q) in enumerate(bands, start=1):
        eq.set(f"band{i}_freq_hz", f)
        eq.set(f"band{i}_gain_db", g)
        eq.set(f"band{i}_q", q)
    x = noise(2, sr // 2, seed=3)
    y = run_blocks(eq, x, sr, 333)
    sos = np.array([rbj_sos("peak", sr, f, q, g) for f, g, q in bands])
    ref = started_sosfilt(sos, x)
    np.testing.assert_allclose(y, ref, atol=5e-6)
    # and the response at each centre is the band gain
    for f, g, q in bands:
        _, h = signal.sosfreqz(sos, worN=[f], fs=sr)
        others = [s for s, (ff, _, _) in zip(sos, bands) if ff != f]
        _, ho = signal.sosfreqz(np.array(others), worN=[f], fs=sr)
        assert 20 * np.log10(abs(h[0]) / abs(ho[0])) == pytest.approx(g, abs=1e-9)


def test_flat_eq_is_bit_exact_passthrough() -> None:
    x = noise(2, 20000)
    y = run_blocks(PeakingEQ(), x, 48000, 128)
    np.testing.assert_array_equal(y, x)


def make_effects() -> dict[str, object]:
    eq = PeakingEQ(band1_gain_db=6.0, band2_gain_db=-4.0, band4_gain_db=3.0, band4_q=0.5)
    return {
        "hp12": lambda: HighPass(cutoff_hz=90.0),
        "hp24": lambda: HighPass(cutoff_hz=150.0, q=1.2, slope=1),
        "eq": lambda: PeakingEQ(**eq.values()),
    }


@pytest.mark.parametrize("which", ["hp12", "hp24", "eq"])
def test_block_size_invariance(which: str) -> None:
    factory = make_effects()[which]
    try:
        x = music(64000)
    except pytest.skip.Exception:
        x = noise(2, 64000)
    whole = run_blocks(factory(), x, 44100, x.shape[1])
    for block in (1, 64, 128, 1000):
        np.testing.assert_array_equal(run_blocks(factory(), x, 44100, block), whole, err_msg=f"block {block}")


@pytest.mark.parametrize("which", ["hp12", "hp24", "eq", "deess_split"])
def test_a_decay_into_silence_is_block_size_invariant_and_never_subnormal(which: str) -> None:
    """The state is flushed at block ends, so a decay into silence came out differently (~1e-24)
    for different block sizes, and as float32 subnormals; outputs under -300 dBFS are 0 now."""
    from hushbridge.effects import DeEsser

    factory = {**make_effects(), "deess_split": lambda: DeEsser(mode=0)}[which]
    sr = 8000  # slow decays per sample: the longest tails
    x = np.concatenate([noise(2, sr // 4), np.zeros((2, 20 * sr), np.float32)], axis=1)
    whole = run_blocks(factory(), x, sr, 1000)
    for block in (1, 64, 128):
        np.testing.assert_array_equal(run_blocks(factory(), x, sr, block), whole, err_msg=f"block {block}")
    tiny = np.finfo(np.float32).tiny
    assert not np.any((whole != 0) & (np.abs(whole) < tiny)), "subnormal output samples"


def test_automation_is_block_size_invariant_and_smooth() -> None:
    """A change applied at the same sample gives the same ramp whatever the block size."""
    sr, change = 48000, 32000  # multiple of 1, 64, 128 and 1000
    t = np.arange(48000) / sr
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)[None, :]
    outs = []
    for block in (1, 64, 128, 1000, change):
        eq = PeakingEQ(band3_freq_hz=1000.0, band3_q=1.0)
        eq.prepare(ProcessSpec(sr, block, 1))
        y = x.copy()
        for start in range(0, y.shape[1], block):
            if start == change:
                eq.band3_gain_db = 12.0
            eq.process(y[:, start : start + block])
        outs.append(y)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    y = outs[0][0]
    # no zipper/click: the largest sample step never exceeds the steady +12 dB sine's
    steady_step = 0.5 * 10 ** (12 / 20) * 2 * math.sin(math.pi * 1000.0 / sr)
    assert np.abs(np.diff(y)).max() <= steady_step * 1.02
    # the ramp takes about smoothing_ms and then the band is at +12 dB
    env = np.abs(signal.hilbert(y))
    assert env[change - 200] == pytest.approx(0.5, rel=1e-3)
    assert env[change + int(0.030 * sr)] == pytest.approx(0.5 * 10 ** (12 / 20), rel=2e-3)
    assert env[change + int(0.010 * sr)] < 0.5 * 10 ** (12 / 20) * 0.95  # not instantaneous


def test_slope_switch_and_params() -> None:
    hp = HighPass()
    assert [p.id for p in hp.params] == ["cutoff_hz", "q", "slope"]
    assert hp.param("slope").display(1) == "24 dB/oct"
    with pytest.raises(ParamError, match="10"):
        hp.cutoff_hz = 5.0
    eq = PeakingEQ()
    assert [p.id for p in eq.params][:3] == ["band1_freq_hz", "band1_gain_db", "band1_q"]
    assert [eq.get(f"band{i}_freq_hz") for i in range(1, 5)] == [100.0, 400.0, 2500.0, 8000.0]
    assert EFFECTS["highpass"] is HighPass and EFFECTS["eq"] is PeakingEQ
    assert isinstance(create_effect("eq", band2_gain_db=3.0), PeakingEQ)
    assert "cutoff_hz=80" in repr(hp)
    assert hp.latency_samples == 0 and eq.latency_samples == 0


@pytest.mark.parametrize("factory", [lambda: HighPass(slope=1), lambda: PeakingEQ(band1_gain_db=9.0)])
def test_nan_input_does_not_poison_state(factory) -> None:
    fx = factory()
    fx.prepare(ProcessSpec(48000, 256, 2))
    bad = noise(2, 256)
    bad[0, 10] = np.nan
    bad[1, 20] = np.inf
    fx.process(bad)
    assert np.all(np.isfinite(bad))
    clean = noise(2, 256, seed=5)
    y = clean.copy()
    fx.process(y)
    assert np.all(np.isfinite(y))
    fx.reset()
    y = clean.copy()
    fx.process(y)
    fresh = factory()
    fresh.prepare(ProcessSpec(48000, 256, 2))
    z = clean.copy()
    fresh.process(z)
    np.testing.assert_array_equal(y, z)


@pytest.mark.parametrize("factory", [lambda: HighPass(cutoff_hz=10.0, slope=1), lambda: PeakingEQ(band1_gain_db=9.0, band1_q=10.0)])
def test_state_decays_to_exact_zero(factory) -> None:
    fx = factory()
    fx.prepare(ProcessSpec(48000, 4096, 2))
    fx.process(noise(2, 4096))
    silence = np.zeros((2, 4096), dtype=np.float32)
    for _ in range(120):  # ~10 s
        silence.fill(0.0)
        fx.process(silence)
    state = fx._state
    assert np.all(state == 0.0), "filter state must be flushed to zero, never left subnormal"


@pytest.mark.parametrize("factory", [lambda: HighPass(slope=1), lambda: PeakingEQ(band1_gain_db=3.0, band3_gain_db=-3.0)])
def test_process_does_not_allocate(factory) -> None:
    fx = factory()
    fx.prepare(ProcessSpec(48000, 128, 2))
    block = noise(2, 128)
    fx.process(block)  # compile / warm up
    fx.set("q" if isinstance(fx, HighPass) else "band1_gain_db", 2.0)  # ramping path too
    tracemalloc.start()
    try:
        for _ in range(200):
            fx.process(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2048, f"process allocated {peak} bytes"


def test_a_dc_offset_passes_a_reset_filter_without_a_thump() -> None:
    """A live stream from an interface with a DC offset (cheap USB mics: -20 dBFS here): the
    high-pass started from rest passed the offset as a step, a thump of the offset's size, at
    the start of every `run` and after every bypass of it. It starts in the steady state of the
    first sample now, in any block size; a signal starting from zero is filtered as before."""
    from hushbridge.effects import Chain
    from hushbridge.engine import Engine
    from hushbridge.presets import load_preset

    sr = 48000
    x = (0.1 + 0.001 * np.random.default_rng(3).standard_normal((1, sr // 2))).astype(np.float32)
    outs = [run_blocks(HighPass(cutoff_hz=80.0, slope=s), x, sr, block) for s in (0, 1) for block in (1, 128, 1000)]
    for y in outs:
        assert np.abs(y).max() < 0.01  # the noise, high-passed; from rest the first peak was 0.1
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[1], outs[2])
    # bypassed and brought back mid-stream: started again from where the signal is
    chain = Chain([HighPass()])
    chain.prepare(ProcessSpec(sr, 128, 1))
    y = x.copy()
    for i in range(0, y.shape[1], 128):
        if i == 128 * 40:
            chain.set_bypass("highpass", True)
        if i == 128 * 80:
            chain.set_bypass("highpass", False)
        chain.process(y[:, i:i + 128])
    back = 128 * 80 + 960 + 128  # after the 20 ms bypass crossfade from the dry offset
    assert np.abs(y[:, back:]).max() < 0.01 and np.abs(y[:, 128 * 80:]).max() < 0.102
    # the default preset live, as the engine starts on such an input
    engine = Engine(load_preset("dialogue"), channels=1)
    engine.prepare(sr, 128)
    out = np.zeros_like(x)
    for i in range(0, x.shape[1], 128):
        engine.process(x[:, i:i + 128], out[:, i:i + 128])
    assert np.abs(out).max() < 0.01  # 0.146 (-17 dBFS) from rest
    # digital silence keeps the filter at rest (so a take after a live engine idled on silence
    # comes out as a file render of it); a signal that then starts smoothly from zero is primed
    # with its first nonzero sample, so it differs from a start at rest by no more than that
    tone = np.sin(2 * np.pi * 50 * np.arange(sr // 4) / sr)[None, :].astype(np.float32)
    ref = signal.sosfilt(rbj_sos("hp", sr, 80.0, 2**-0.5)[None, :], tone.astype(np.float64), axis=1)
    got = run_blocks(HighPass(), tone, sr, 128)
    assert np.abs(got - ref).max() <= 1.01 * tone[0, 1] and np.abs(got - ref)[:, sr // 8:].max() < 1e-6
    idle = np.concatenate([np.zeros((1, 1000), np.float32), x], axis=1)
    for block in (128, 1000):
        after = run_blocks(HighPass(), idle, sr, block)
        assert not after[:, :1000].any()
        np.testing.assert_array_equal(after[:, 1000:], outs[0])


BAND_TYPES_INDEX = {"peak": 0, "lowshelf": 1, "highshelf": 2, "lowpass": 3, "highpass": 4, "notch": 5, "bandpass": 6}


def test_priming_takes_the_coefficients_where_the_sound_starts_in_any_block_size() -> None:
    """Review, session 25: a filter primed with the coefficients at the start of the call, so
    while a cutoff or gain ramp ran (a knob moved during the silence before a take) the output
    depended on the block size (0.099 on a +12 dB shelf ramp); and an EQ band changing type
    while still waiting for sound faded out of a path that started from rest (a 0.089 thump)."""
    sr = 48000
    x = np.zeros((1, 4800), np.float32)
    x[:, 300:] = 0.1 + 0.001 * np.random.default_rng(4).standard_normal((1, 4500)).astype(np.float32)

    def render(effect, block, change):  # the knob moves at sample 200, 2 ms before the sound
        effect.prepare(ProcessSpec(sr, block, 1))
        y = x.copy()
        for lo, hi in ((0, 200), (200, y.shape[1])):
            if lo:
                change(effect)
            for start in range(lo, hi, block):
                effect.process(y[:, start:min(start + block, hi)])
        return y

    def ramp_cutoff(effect):
        effect.cutoff_hz = 400.0

    def ramp_shelf(effect):
        effect.band1_gain_db = 12.0

    def change_type(effect):
        effect.band3_type = BAND_TYPES_INDEX["lowpass"]

    for make, change in ((lambda: HighPass(cutoff_hz=40.0), ramp_cutoff),
                         (lambda: PeakingEQ(band1_type=1.0, band1_freq_hz=200.0), ramp_shelf)):
        outs = [render(make(), block, change) for block in (1, 7, 64, 1024)]
        for y in outs[:-1]:
            np.testing.assert_array_equal(y, outs[-1])
    eq = lambda: PeakingEQ(band1_type=4.0, band1_freq_hz=80.0)  # noqa: E731 - band 1 a high-pass
    y = render(eq(), 64, change_type)
    assert np.abs(y[:, 300:]).max() < 0.01  # 0.089 when the old path started from rest
