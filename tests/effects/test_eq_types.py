"""eq band types and the new RBJ designs (band-pass, notch, finite-depth notch) against scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from hushbridge.dsp.design import make_bandpass, make_dip, make_notch, to_ba
from hushbridge.effects import PeakingEQ, ProcessSpec
from hushbridge.effects.filters import BAND_TYPES

RATES = [44100, 48000, 96000]



def started_sosfilt(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """scipy's sosfilt started as hushbridge starts its filters: in the steady state of the
    first sample (``sosfilt_zi``), so a DC offset passes without a step."""
    zi = signal.sosfilt_zi(sos)[:, None, :] * x[:, 0].astype(np.float64)[None, :, None]
    return signal.sosfilt(sos, x.astype(np.float64), axis=1, zi=zi)[0]

def rbj(kind: str, fs: float, f0: float, q: float, gain_db: float = 0.0) -> np.ndarray:
    """Audio EQ Cookbook sections, transcribed independently: [b0, b1, b2, 1, a1, a2]."""
    A = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / fs
    c, s = math.cos(w0), math.sin(w0)
    al = s / (2 * q)
    sq = 2 * math.sqrt(A) * al
    b, a = {
        "peak": ([1 + al * A, -2 * c, 1 - al * A], [1 + al / A, -2 * c, 1 - al / A]),
        "lowshelf": ([A * ((A + 1) - (A - 1) * c + sq), 2 * A * ((A - 1) - (A + 1) * c), A * ((A + 1) - (A - 1) * c - sq)],
                     [(A + 1) + (A - 1) * c + sq, -2 * ((A - 1) + (A + 1) * c), (A + 1) + (A - 1) * c - sq]),
        "highshelf": ([A * ((A + 1) + (A - 1) * c + sq), -2 * A * ((A - 1) + (A + 1) * c), A * ((A + 1) + (A - 1) * c - sq)],
                      [(A + 1) - (A - 1) * c + sq, 2 * ((A - 1) - (A + 1) * c), (A + 1) - (A - 1) * c - sq]),
        "lowpass": ([(1 - c) / 2, 1 - c, (1 - c) / 2], [1 + al, -2 * c, 1 - al]),
        "highpass": ([(1 + c) / 2, -(1 + c), (1 + c) / 2], [1 + al, -2 * c, 1 - al]),
        "notch": ([1, -2 * c, 1], [1 + al, -2 * c, 1 - al]),
        "bandpass": ([al, 0, -al], [1 + al, -2 * c, 1 - al]),
    }[kind]
    b, a = np.array(b, float), np.array(a, float)
    return np.concatenate([b / a[0], a / a[0]])


@pytest.mark.parametrize("fs", RATES)
def test_new_designs_match_cookbook_and_freqz(fs: int) -> None:
    for f0, q in [(50.0, 30.0), (1000.0, 0.7), (6500.0, 2.0)]:
        for ours, kind in [(make_bandpass(fs, f0, q), "bandpass"), (make_notch(fs, f0, q), "notch")]:
            ref = rbj(kind, fs, f0, q)
            np.testing.assert_allclose(np.concatenate([ours[:3], [1.0], ours[3:]]), ref, rtol=1e-12, atol=1e-15)
            w = np.geomspace(20, fs * 0.45, 200)
            _, h = signal.freqz(*to_ba(ours), worN=w, fs=fs)
            _, hr = signal.freqz(ref[:3], ref[3:], worN=w, fs=fs)
            np.testing.assert_allclose(h, hr, rtol=1e-9, atol=1e-12)  # magnitude and phase
        _, h = signal.freqz(*to_ba(make_bandpass(fs, f0, q)), worN=[f0], fs=fs)
        assert abs(h[0]) == pytest.approx(1.0, abs=1e-9)
        # finite-depth notch: depth at the centre, same -3 dB bandwidth as the notch
        for depth in (20.0, 60.0):
            b, a = to_ba(make_dip(fs, f0, q, -depth))
            _, h = signal.freqz(b, a, worN=[f0], fs=fs)
            assert 20 * np.log10(abs(h[0])) == pytest.approx(-depth, abs=1e-6)
        b, a = to_ba(make_dip(fs, f0, q, 0.0))
        assert b[0] == 1.0 and b[1] == a[1] and b[2] == a[2]  # exactly H = 1


@pytest.mark.parametrize("fs", RATES)
def test_every_band_type_matches_sosfilt(fs: int) -> None:
    x = (np.random.default_rng(1).standard_normal((2, fs // 4)) * 0.25).astype(np.float32)
    settings = [(80.0, 6.0, 0.7), (700.0, -8.0, 2.0), (3000.0, 4.0, 1.2), (11000.0, -5.0, 0.8)]
    for start in range(len(BAND_TYPES)):
        types = [BAND_TYPES[(start + k) % len(BAND_TYPES)] for k in range(4)]
        eq = PeakingEQ()
        for i, ((f, g, q), t) in enumerate(zip(settings, types), start=1):
            eq.set(f"band{i}_freq_hz", f)
            eq.set(f"band{i}_gain_db", g)
            eq.set(f"band{i}_q", q)
            eq.set(f"band{i}_type", BAND_TYPES.index(t))
        eq.prepare(ProcessSpec(fs, 300, 2))
        y = x.copy()
        for s in range(0, y.shape[1], 300):
            eq.process(y[:, s : s + 300])
        sos = np.array([rbj(t, fs, f, q, g) for (f, g, q), t in zip(settings, types)])
        ref = started_sosfilt(sos, x)
        np.testing.assert_allclose(y, ref, atol=2e-5, err_msg=str(types))


def test_defaults_and_old_presets_load() -> None:
    eq = PeakingEQ(band1_freq_hz=250.0, band1_gain_db=-2.5, band1_q=1.0)  # a preset from before types
    ids = [p.id for p in eq.params]
    assert ids[:12] == [f"band{i}_{k}" for i in range(1, 5) for k in ("freq_hz", "gain_db", "q")]
    assert ids[12:] == [f"band{i}_type" for i in range(1, 5)]
    assert all(eq.get(f"band{i}_type") == 0.0 for i in range(1, 5))
    assert eq.param("band1_type").display(5) == "notch"
    assert BAND_TYPES == ("peak", "lowshelf", "highshelf", "lowpass", "highpass", "notch", "bandpass")


def test_type_change_crossfades_without_click_and_block_size_invariant() -> None:
    sr, change = 48000, 24000
    t = np.arange(sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 200.0 * t) + 0.3 * np.sin(2 * np.pi * 3000.0 * t)).astype(np.float32)[None, :]
    outs = []
    for block in (1, 64, 1000, change):
        eq = PeakingEQ(band2_freq_hz=1000.0, band2_gain_db=0.0)
        eq.prepare(ProcessSpec(sr, block, 1))
        y = x.copy()
        for start in range(0, sr, block):
            if start == change:
                eq.band2_type = BAND_TYPES.index("lowpass")
            eq.process(y[:, start : start + block])
        outs.append(y)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    y = outs[0][0].astype(np.float64)
    # no click: the largest sample-to-sample step stays at the steady signal's
    steady = np.abs(np.diff(x[0, :change])).max()
    assert np.abs(np.diff(y[change - 100 : change + 2000])).max() <= steady * 1.01
    # the fade lasts 20 ms, then the band is a low-pass: 3 kHz down by ~19 dB, 200 Hz untouched
    tail = y[change + 2000 :]
    ref = signal.sosfilt(rbj("lowpass", sr, 1000.0, 1.0)[None, :], x[0].astype(np.float64))[change + 2000 :]
    np.testing.assert_allclose(tail[4000:], ref[4000:], atol=1e-5)
    # a hard switch would have produced a step much larger than the steady signal's
    hard = PeakingEQ(band2_freq_hz=1000.0, band2_type=BAND_TYPES.index("lowpass"))
    assert hard.band2_type == 3.0
