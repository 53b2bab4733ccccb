"""deesser: static curve and time constants from steps, sibilant bursts reduced, vowels untouched,
bands sum flat when idle."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal as sps

from hushbridge.effects import EFFECTS, DeEsser, ProcessSpec
from hushbridge.errors import ParamError

SR = 48000


def tone(f: float, level_db: float, frames: int) -> np.ndarray:
    return (10 ** (level_db / 20) * np.sin(2 * np.pi * f * np.arange(frames) / SR)).astype(np.float32)


def run(fx: DeEsser, x: np.ndarray, block: int = 256) -> np.ndarray:
    x2 = np.atleast_2d(x).astype(np.float32)
    fx.prepare(ProcessSpec(SR, block, x2.shape[0]))
    y = x2.copy()
    for s in range(0, y.shape[1], block):
        fx.process(y[:, s : s + block])
    return y


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2)))


@pytest.mark.parametrize("thr, ratio, rng", [(-30.0, 4.0, 12.0), (-20.0, 2.0, 24.0), (-40.0, 20.0, 6.0)])
def test_static_curve_wideband(thr: float, ratio: float, rng: float) -> None:
    """A 12 kHz tone (in the detector's pass band) reads its RMS, amplitude - 3.01 dB."""
    for level in np.arange(-50.0, 0.1, 5.0):
        x = tone(12000.0, level, SR // 2)
        y = run(DeEsser(threshold_db=thr, ratio=ratio, range_db=rng, mode=1, release_ms=200.0), x)
        seen = level - 10 * math.log10(2)
        want = min(rng, max(0.0, (seen - thr) * (1 - 1 / ratio)))
        got = rms_db(x[SR // 4 :]) - rms_db(y[0, SR // 4 :])
        assert got == pytest.approx(want, abs=0.15), f"level {level}"


@pytest.mark.parametrize("attack_ms, release_ms", [(0.5, 60.0), (5.0, 200.0)])
def test_time_constants_from_steps(attack_ms: float, release_ms: float) -> None:
    n1, n2, n3 = SR // 10, SR, 2 * SR
    amp = np.concatenate([np.full(n1, 1e-3), np.full(n2, 0.5), np.full(n3, 1e-3)])
    x = (amp * np.where(np.arange(amp.size) % 2 == 0, 1.0, -1.0)).astype(np.float32)  # Nyquist: |x| steady
    fx = DeEsser(threshold_db=-30.0, ratio=20.0, range_db=12.0, attack_ms=attack_ms, release_ms=release_ms,
                 mode=1)
    y = run(fx, x, block=100)
    gr = -20 * np.log10(np.abs(y[0]) / np.abs(x))
    assert gr[n1 + n2 - 1] == pytest.approx(12.0, abs=1e-3)

    def cross(g: np.ndarray, target: float, rising: bool) -> float:
        i = int(np.argmax(g >= target) if rising else np.argmax(g <= target))
        return i - 1 + (target - g[i - 1]) / (g[i] - g[i - 1])

    # the 2 ms RMS detector passes the threshold within ~0.02 ms going up; going down the level
    # must fall ~21 dB below the -6 dB start before the reduction releases from 12 dB
    t_att = (cross(gr[n1:], 12.0 * (1 - math.exp(-1)), True) + 1) / SR * 1e3
    assert t_att == pytest.approx(attack_ms, rel=0.1, abs=0.1)
    seg = gr[n1 + n2 :]
    start = int(np.argmax(seg < 12.0 - 1e-6))
    t_rel = (cross(seg[start - 1 :], 12.0 * math.exp(-1), False)) / SR * 1e3
    assert t_rel == pytest.approx(release_ms, rel=0.05, abs=0.2)


def test_sibilance_reduced_vowels_untouched() -> None:
    rng = np.random.default_rng(0)
    sos = sps.butter(8, [5000.0, 9000.0], btype="bandpass", fs=SR, output="sos")
    n = SR * 2
    t = np.arange(n) / SR
    vowels = sum(10 ** (-14 / 20) * np.sin(2 * np.pi * f * t + f) for f in (200.0, 450.0, 700.0, 1000.0))
    ess = sps.sosfilt(sos, rng.standard_normal(n))
    ess = ess / np.sqrt(np.mean(ess**2)) * 10 ** (-18 / 20)
    bursts = ((t % 0.5) > 0.3).astype(float)  # 200 ms bursts every 500 ms
    fx = DeEsser(freq_hz=6500.0, threshold_db=-35.0, range_db=10.0)
    # vowels alone: no reduction, magnitude untouched (the crossover is an all-pass)
    v32 = vowels.astype(np.float32)
    assert fx.gain_reduction_db == 0.0
    assert rms_db(run(fx, v32)[0, SR // 2 :]) == pytest.approx(rms_db(v32[SR // 2 :]), abs=0.01)
    # vowels + sibilance: the sibilant band comes down, the vowels stay within 0.1 dB
    x = (vowels + ess * bursts).astype(np.float32)
    y = run(DeEsser(freq_hz=6500.0, threshold_db=-35.0, range_db=10.0), x)[0].astype(np.float64)
    hi = sps.butter(8, [5000.0, 9000.0], btype="bandpass", fs=SR, output="sos")
    on = bursts > 0
    on[: SR // 2] = False
    drop = rms_db(sps.sosfilt(hi, x)[on]) - rms_db(sps.sosfilt(hi, y)[on])
    assert drop > 6.0, f"sibilance down only {drop:.1f} dB"
    for f in (200.0, 450.0, 700.0, 1000.0):
        c = np.exp(-2j * np.pi * f * t)
        level = lambda s: 20 * np.log10(abs(np.mean(s[SR // 2 :] * c[SR // 2 :])))  # noqa: E731
        assert level(y) - level(x) == pytest.approx(0.0, abs=0.1), f"vowel at {f} Hz changed"


def test_bands_sum_flat_when_idle_and_split_never_boosts() -> None:
    imp = np.zeros(SR, dtype=np.float32)
    imp[100] = 0.01  # far under the threshold: no reduction
    for sr_fx in (DeEsser(threshold_db=-10.0),):
        h = run(sr_fx, imp)[0].astype(np.float64)
        mag = 20 * np.log10(np.abs(np.fft.rfft(h)) / 0.01)
        assert np.abs(mag).max() < 0.01, "LR4 bands must sum to a flat magnitude"
    x = (np.random.default_rng(1).standard_normal((2, SR)) * 0.01).astype(np.float32)
    np.testing.assert_array_equal(run(DeEsser(threshold_db=-10.0, mode=1), x), x)  # wideband idle: exact
    # split at full reduction: low + g * high never exceeds the input at any frequency
    fx = DeEsser(threshold_db=-60.0, ratio=20.0, range_db=24.0, release_ms=500.0)
    busy = tone(12000.0, -12.0, SR // 2)  # keeps the detector reducing
    for f in (500.0, 1000.0, 3000.0, 6500.0, 9000.0):
        x = tone(f, -6.0, SR // 2)
        y = run(fx, x + busy)[0].astype(np.float64)
        n = np.arange(SR // 4, SR // 2)
        c = np.exp(-2j * np.pi * f * n / SR)
        gain = 20 * np.log10(abs(np.mean(y[n] * c)) / abs(np.mean(x[n] * c)))
        assert gain <= 1e-3, f"{f} Hz boosted by {gain:.3f} dB"
        if f <= 1000.0:
            assert gain > -0.02, f"{f} Hz cut by {gain:.3f} dB at full reduction"


def test_params() -> None:
    fx = DeEsser()
    assert fx.values() == {"freq_hz": 6500.0, "threshold_db": -30.0, "range_db": 8.0, "ratio": 4.0,
                           "attack_ms": 0.5, "release_ms": 60.0, "mode": 0.0}
    assert fx.param("mode").display(1) == "wideband"
    assert EFFECTS["deesser"] is DeEsser and fx.latency_samples == 0
    with pytest.raises(ParamError, match="freq_hz"):
        fx.freq_hz = 1000.0


def test_mode_by_name_in_the_python_api():
    # as presets and --set take it: the choice's name, or its index
    assert DeEsser(mode="wideband").mode == 1.0
    ds = DeEsser(mode=1)
    ds.mode = "Split"
    assert ds.mode == 0.0
    with pytest.raises(ParamError, match=r"deesser\.mode must be one of 'split', 'wideband' \(or 0..1\), got 'x'"):
        DeEsser(mode="x")
