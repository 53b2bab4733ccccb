"""Our streaming polyphase resampler (quality "RT" of ModelEffect): response, aliasing, timing,
block-size invariance, agreement with scipy's resample_poly, and no allocation per chunk."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.signal import resample_poly

from hushbridge.dsp.resample import ROUND_TRIP_CUTOFF, polyphase_bank
from hushbridge.effects.resampler import PolyphaseResampler

PAIRS = [(44100, 48000), (48000, 44100), (16000, 48000), (48000, 16000), (96000, 48000), (22050, 48000),
         (48000, 32000)]


def run(r: PolyphaseResampler, x: np.ndarray, block: int) -> np.ndarray:
    return np.concatenate([r.resample_chunk(x[i:i + block]).copy() for i in range(0, len(x), block)])


def tone(rate: int, freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * freq * t).astype(np.float32)


def level_at(y: np.ndarray, rate: int, freq: float) -> float:
    """dB of ``y`` at ``freq`` (Hann-windowed DFT bin, 0 dB = full-scale sine)."""
    w = np.hanning(len(y))
    spec = np.abs(np.fft.rfft(y * w)) / (w.sum() / 2)
    k = int(round(freq * len(y) / rate))
    return 20 * np.log10(spec[max(k - 2, 0):k + 3].max() + 1e-15)


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
def test_pass_band_is_flat_and_aliases_are_gone(rate_in, rate_out):
    low = min(rate_in, rate_out)
    for share in (0.05, 0.2, 0.4):
        y = run(PolyphaseResampler(rate_in, rate_out, 256), tone(rate_in, share * low), 256)
        y = y[len(y) // 4:]
        assert abs(20 * np.log10(np.sqrt(2 * np.mean(y ** 2)))) < 0.05, share
    if rate_in > rate_out:  # a tone above the output's Nyquist must not fold back into the band
        f = min(0.53 * low, 0.49 * rate_in)
        y = run(PolyphaseResampler(rate_in, rate_out, 256), tone(rate_in, f), 256)[2000:]
        assert 20 * np.log10(np.sqrt(2 * np.mean(y ** 2)) + 1e-15) < -70
    else:  # an upsampled tone leaves no images: everything but the tone is far down
        f = 0.4 * low
        y = run(PolyphaseResampler(rate_in, rate_out, 256), tone(rate_in, f), 256)[2000:]
        w = np.hanning(len(y))
        spec = 20 * np.log10(np.abs(np.fft.rfft(y * w)) / (w.sum() / 2) + 1e-15)
        freqs = np.fft.rfftfreq(len(y), 1 / rate_out)
        assert spec[np.abs(freqs - f) > 300].max() < -70


@pytest.mark.parametrize("rate", [16000, 22050, 32000, 44100])
def test_round_trip_cutoff_keeps_the_band_and_folds_images_back(rate):
    """Up to 48 kHz and back with the wide round-trip low-pass: within 1 dB to 0.45 x the rate,
    and the images of the way up fold back onto the tone, not elsewhere."""
    for share, floor_db in ((0.3, -0.3), (0.45, -1.0), (0.49, -6.5)):
        f = share * rate
        up = PolyphaseResampler(rate, 48000, 256, cutoff=ROUND_TRIP_CUTOFF)
        down = PolyphaseResampler(48000, rate, 256, cutoff=ROUND_TRIP_CUTOFF)
        y = run(down, run(up, tone(rate, f, 1.0), 256), 256)[rate // 4:]
        level = 20 * np.log10(np.sqrt(2 * np.mean(y ** 2)))
        assert floor_db < level < 0.1, (share, level)
        w = np.hanning(len(y))
        spec = np.abs(np.fft.rfft(y * w)) / (w.sum() / 2)
        k = int(round(f * len(y) / rate))
        spec[k - 8:k + 9] = 0.0
        assert 20 * np.log10(spec.max() + 1e-15) < -60, share


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
def test_signal_is_not_delayed_and_blocks_do_not_matter(rate_in, rate_out):
    x = np.zeros(rate_in // 4, np.float32)
    at = 1001
    x[at] = 1.0
    ys = [run(PolyphaseResampler(rate_in, rate_out, 1000), x, b) for b in (1, 7, 128, 1000)]
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
    assert abs(int(np.argmax(np.abs(ys[0]))) - at * rate_out / rate_in) <= 0.5
    # the delay of a tone, from its phase: zero (a symmetric kernel centred on the output time)
    f = 0.1 * min(rate_in, rate_out)
    y = run(PolyphaseResampler(rate_in, rate_out, 256), tone(rate_in, f), 256)[1000:].astype(np.float64)
    t = (np.arange(len(y)) + 1000) / rate_out
    a, b = np.linalg.lstsq(np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], 1), y, rcond=None)[0]
    delay_out_samples = -np.arctan2(b, a) / (2 * np.pi * f) * rate_out
    assert abs(delay_out_samples) < 0.01, delay_out_samples
    # the output of a chunk is released ``lookahead`` input samples later, never more
    r = PolyphaseResampler(rate_in, rate_out, 1000)
    n_out = len(r.resample_chunk(np.zeros(1000, np.float32)))
    expect = (1000 - r.lookahead) * rate_out / rate_in
    assert expect - 1 <= n_out <= expect + 1


@pytest.mark.parametrize("rate_in,rate_out", [(44100, 48000), (48000, 44100), (48000, 16000)])
def test_agrees_with_scipy_resample_poly_on_band_limited_noise(rate_in, rate_out):
    rng = np.random.default_rng(3)
    low = min(rate_in, rate_out)
    n = rate_in
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[np.fft.rfftfreq(n, 1 / rate_in) > 0.35 * low] = 0.0  # inside both filters' pass bands
    x = (np.fft.irfft(spec, n) * 0.2).astype(np.float32)
    ours = PolyphaseResampler(rate_in, rate_out, 512).resample_chunk(x, last=True).astype(np.float64)
    _, up, down, _ = polyphase_bank(rate_in, rate_out)
    ref = resample_poly(x.astype(np.float64), up, down, window=("kaiser", 10.0))
    m = min(len(ours), len(ref))
    core = slice(m // 8, m - m // 8)  # away from both ends' transients
    err = ours[:m][core] - ref[:m][core]
    snr = 10 * np.log10(np.sum(ref[:m][core] ** 2) / np.sum(err ** 2))
    assert snr > 60, snr


@pytest.mark.parametrize("rate_in,rate_out", [(16000, 44100), (48000, 44100), (48000, 22050)])
def test_fractional_delay_delays_by_exactly_that(rate_in, rate_out):
    f = 0.1 * min(rate_in, rate_out)
    for delay in (0.25, 0.5, 0.9):
        y = run(PolyphaseResampler(rate_in, rate_out, 256, delay=delay), tone(rate_in, f), 256)[1000:]
        t = (np.arange(len(y)) + 1000) / rate_out
        a, b = np.linalg.lstsq(np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], 1),
                               y.astype(np.float64), rcond=None)[0]
        assert -np.arctan2(b, a) / (2 * np.pi * f) * rate_out == pytest.approx(delay, abs=0.01)
        assert abs(20 * np.log10(np.hypot(a, b))) < 0.05
    with pytest.raises(ValueError, match="delay"):
        polyphase_bank(48000, 44100, delay=1.0)


def test_chunks_allocate_nothing_but_the_result_view():
    r = PolyphaseResampler(44100, 48000, 128)
    x = tone(44100, 1000.0)[:128].copy()
    for _ in range(50):
        r.resample_chunk(x)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            r.resample_chunk(x)
        cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 512, peak - base  # a view object, never a sample buffer (128 x 4 bytes)
    assert cur - base < 256


def test_clear_forgets_the_past():
    r = PolyphaseResampler(44100, 48000, 256)
    x = tone(44100, 440.0, 0.05)
    first = run(r, x, 256)
    r.clear()
    np.testing.assert_array_equal(run(r, x, 256), first)


def test_bad_rates_are_a_clear_error():
    with pytest.raises(ValueError, match="positive"):
        polyphase_bank(0, 48000)
