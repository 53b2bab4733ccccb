"""humremove on real speech with synthesized hum: >= 30 dB less hum at the fundamental, the
speech band (300-3400 Hz) changed < 0.5 dB; auto-detection of 50 vs 60 Hz and smooth switching."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir

from hushbridge.effects import HumRemover, ProcessSpec
from hushbridge.errors import ParamError

SPEECH = (shared_data_dir() or Path("/nonexistent")) / "speech"


def speech(seconds: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    files = sorted(SPEECH.glob("vctk_p*.wav")) if SPEECH.is_dir() else []
    if not files:
        pytest.skip(f"real speech not found in {SPEECH}")
    parts, sr = [], 48000
    for f in files:
        x, sr = sf.read(str(f), dtype="float64")
        parts.append(x)
        if sum(map(len, parts)) >= seconds * sr:
            break
    x = np.concatenate(parts)[: int(seconds * sr)]
    return x / np.sqrt(np.mean(x**2)) * 10 ** (-23 / 20), sr  # speech at -23 dBFS RMS


def hum(n: int, sr: int, f0: float) -> np.ndarray:
    """Ground-loop buzz: odd harmonics strong, -30 dBFS RMS in all."""
    t = np.arange(n) / sr
    h = sum(a * np.sin(2 * np.pi * f0 * k * t + k) for k, a in [(1, 1.0), (2, 0.3), (3, 0.6), (4, 0.2), (5, 0.4)])
    return h / np.sqrt(np.mean(h**2)) * 10 ** (-30 / 20)


def tone_db(x: np.ndarray, f: float, sr: int) -> float:
    """Level of the component at ``f`` (exact projection over whole cycles)."""
    n = int(len(x) // (sr / f) * (sr / f))
    t = np.arange(n) / sr
    c = 2 * np.mean(x[:n] * np.cos(2 * np.pi * f * t))
    s = 2 * np.mean(x[:n] * np.sin(2 * np.pi * f * t))
    return 10 * np.log10(c * c + s * s + 1e-30)


def band_db(x: np.ndarray, sr: int, lo: float = 300.0, hi: float = 3400.0) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    return 10 * np.log10(spec[(f >= lo) & (f <= hi)].sum())


def run(fx, x: np.ndarray, sr: int, block: int = 480) -> np.ndarray:
    fx.prepare(ProcessSpec(sr, block, 1))
    y = x[None, :].astype(np.float32).copy()
    for s in range(0, y.shape[1], block):
        fx.process(y[:, s : s + block])
    return y[0].astype(np.float64)


@pytest.mark.parametrize("mains", [50.0, 60.0])
@pytest.mark.parametrize("auto", [0, 1])
def test_removes_hum_from_real_speech(mains: float, auto: int) -> None:
    clean, sr = speech(12.0)
    noisy = clean + hum(len(clean), sr, mains)
    # auto starts from the wrong guess and must find the right one
    fx = HumRemover(mains_hz=(110.0 - mains) if auto else mains, auto=auto)  # 4 harmonics, q 30
    y = run(fx, noisy, sr)
    if auto:
        assert fx.detected_hz == mains
    settle = 5 * sr  # auto needs a few 1 s windows; measure after that
    residual = y[settle:] - run(HumRemover(mains_hz=mains), clean, sr)[settle:]
    for k in (1, 3):
        before = tone_db(noisy[settle:] - clean[settle:], mains * k, sr)
        after = tone_db(residual, mains * k, sr)
        assert before - after >= 30.0, f"harmonic {k}: only {before - after:.1f} dB less hum"
    # in the output as it is (speech included), the fundamental is down by >= 30 dB too
    assert tone_db(noisy[settle:], mains, sr) - tone_db(y[settle:], mains, sr) >= 30.0
    change = band_db(y[settle:], sr) - band_db(clean[settle:], sr)
    assert abs(change) < 0.5, f"speech band changed by {change:.2f} dB"


def test_auto_switch_glides_without_click() -> None:
    sr = 48000
    n = 8 * sr
    fade = np.clip((np.arange(2 * n) - n) / (0.05 * sr) + 0.5, 0.0, 1.0)  # 50 ms crossfade, no step
    x = (1 - fade) * hum(2 * n, sr, 50.0) + fade * hum(2 * n, sr, 60.0)
    fx = HumRemover(auto=1, harmonics=5)
    y = run(fx, x, sr)
    assert fx.detected_hz == 60.0
    # both hums end up removed, and the glide never produces a sample larger than the input's
    # (from 0.5 s after the hum changes: before that the 50 Hz notches ring out, as any notch does)
    assert np.abs(y[4 * sr : n - sr // 10]).max() < 0.01 * np.abs(x).max()
    assert np.abs(y[n + 6 * sr :]).max() < 0.01 * np.abs(x).max()  # decided within ~4 s, then glided
    assert np.abs(y[n + sr // 2 :]).max() <= 1.05 * np.abs(x[n:]).max()


def test_auto_ignores_noise_and_speech_without_hum() -> None:
    clean, sr = speech(8.0)
    rng = np.random.default_rng(3)
    for x in (clean, rng.standard_normal(len(clean)) * 0.1, clean + rng.standard_normal(len(clean)) * 0.01):
        fx = HumRemover(auto=1)
        run(fx, x, sr)
        assert fx.detected_hz == 0.0


def test_harmonics_change_is_ramped_and_params() -> None:
    sr = 48000
    x = hum(2 * sr, sr, 50.0)
    fx = HumRemover(harmonics=1)
    fx.prepare(ProcessSpec(sr, 480, 1))
    y = x[None, :].astype(np.float32).copy()
    for k, s in enumerate(range(0, 2 * sr, 480)):
        if s == sr:
            fx.harmonics = 5
        fx.process(y[:, s : s + 480])
    d = np.abs(np.diff(y[0, sr - 480 : sr + 4800]))
    assert d.max() <= np.abs(np.diff(x[:sr])).max() * 1.01  # no click when notches come in
    assert np.abs(y[0, -sr // 2 :]).max() < 0.01 * np.abs(x).max()
    assert fx.values() == {"mains_hz": 50.0, "harmonics": 5.0, "q": 30.0, "depth_db": 60.0, "auto": 0.0}
    assert fx.param("auto").display(1) == "on"
    fx.mains_hz = 58.0  # quantised to 50 or 60
    assert fx.mains_hz == 60.0
    with pytest.raises(ParamError, match="harmonics"):
        fx.harmonics = 11


def test_auto_fades_the_notches_out_without_hum_so_a_plosive_does_not_ring() -> None:
    """A notch takes nothing from material without hum but rings at its harmonics for ~Q/(pi f)
    after a low-frequency pop; with auto on it fades out once a few seconds hold no hum, and a
    hum that appears is notched again."""
    clean, sr = speech(12.0)
    n = len(clean)
    pop_at = int(8.0 * sr)
    t = np.arange(int(0.025 * sr)) / sr
    x = clean * 0.3
    x[pop_at:pop_at + len(t)] += 0.5 * np.sin(2 * np.pi * 40 * t) * np.hanning(len(t))  # a plosive's thump
    rings = {}
    for auto in (0, 1):
        fx = HumRemover(auto=auto, harmonics=6, q=30.0, depth_db=50.0)
        y = run(fx, x, sr)
        after = slice(pop_at + int(0.03 * sr), pop_at + int(0.33 * sr))
        rings[auto] = band_db(y[after], sr, 85.0, 115.0) - band_db(x[after], sr, 85.0, 115.0)
        assert fx.hum_present == (auto == 0)
    assert rings[0] > 6.0 and rings[1] < 1.0, rings  # the always-on notch rings; the faded one does not
    fx = HumRemover(auto=1)
    y = run(fx, np.concatenate([x[:n], x[:n] + hum(n, sr, 60.0)]), sr)
    assert fx.hum_present and fx.detected_hz == 60.0
    assert tone_db(y[-3 * sr:], 60.0, sr) < tone_db(hum(n, sr, 60.0)[-3 * sr:], 60.0, sr) - 30.0


def test_digital_silence_is_no_evidence_of_no_hum() -> None:
    """A live engine idles on digital silence before the take: that silence must neither fade the
    notches out (as 5 s of no hum would) nor shift the detection windows, so what follows comes
    out as an offline render of the take alone does, sample for sample."""
    clean, sr = speech(4.0)
    take = clean + hum(len(clean), sr, 50.0)
    fresh_fx = HumRemover(auto=1)
    fresh = run(fresh_fx, take, sr)
    idle_fx = HumRemover(auto=1)
    idle = run(idle_fx, np.concatenate([np.zeros(7 * sr + 123), take]), sr)
    np.testing.assert_array_equal(idle[7 * sr + 123:], fresh)
    assert idle_fx.hum_present and idle_fx.detected_hz == 50.0
