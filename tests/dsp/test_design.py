"""RBJ biquad design: coefficients against the cookbook formulas written out independently,
responses against scipy.signal.freqz."""
from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit
from scipy import signal

from hushbridge.dsp.design import (
    KIND_PEAKING,
    design_stage,
    make_highpass,
    make_highshelf,
    make_lowpass,
    make_lowshelf,
    make_peaking,
    to_ba,
)

RATES = [44100, 48000, 96000]


def rbj(kind: str, fs: float, f0: float, q: float, gain_db: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Audio EQ Cookbook (R. Bristow-Johnson), transcribed independently of the package."""
    A = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / fs
    c, s = math.cos(w0), math.sin(w0)
    alpha = s / (2 * q)
    if kind == "hp":
        b = [(1 + c) / 2, -(1 + c), (1 + c) / 2]
        a = [1 + alpha, -2 * c, 1 - alpha]
    elif kind == "lp":
        b = [(1 - c) / 2, 1 - c, (1 - c) / 2]
        a = [1 + alpha, -2 * c, 1 - alpha]
    elif kind == "peak":
        b = [1 + alpha * A, -2 * c, 1 - alpha * A]
        a = [1 + alpha / A, -2 * c, 1 - alpha / A]
    elif kind == "lowshelf":
        sq = 2 * math.sqrt(A) * alpha
        b = [A * ((A + 1) - (A - 1) * c + sq), 2 * A * ((A - 1) - (A + 1) * c), A * ((A + 1) - (A - 1) * c - sq)]
        a = [(A + 1) + (A - 1) * c + sq, -2 * ((A - 1) + (A + 1) * c), (A + 1) + (A - 1) * c - sq]
    elif kind == "highshelf":
        sq = 2 * math.sqrt(A) * alpha
        b = [A * ((A + 1) + (A - 1) * c + sq), -2 * A * ((A - 1) + (A + 1) * c), A * ((A + 1) + (A - 1) * c - sq)]
        a = [(A + 1) - (A - 1) * c + sq, 2 * ((A - 1) - (A + 1) * c), (A + 1) - (A - 1) * c - sq]
    else:
        raise ValueError(kind)
    b, a = np.array(b), np.array(a)
    return b / a[0], a / a[0]


def mag_db(b: np.ndarray, a: np.ndarray, f: float, fs: float) -> float:
    _, h = signal.freqz(b, a, worN=[f], fs=fs)
    return float(20 * np.log10(abs(h[0])))


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("f0", [20.0, 80.0, 1000.0, 8000.0, 18000.0])
@pytest.mark.parametrize("q", [0.1, 0.707, 2.0, 10.0])
def test_coefficients_match_cookbook(fs: int, f0: float, q: float) -> None:
    for name, make, args in [
        ("hp", make_highpass, ()),
        ("lp", make_lowpass, ()),
        ("peak", make_peaking, (7.5,)),
        ("peak", make_peaking, (-18.0,)),
        ("lowshelf", make_lowshelf, (6.0,)),
        ("highshelf", make_highshelf, (-9.0,)),
    ]:
        b, a = to_ba(make(fs, f0, q, *args))
        rb, ra = rbj(name, fs, f0, q, *args)
        np.testing.assert_allclose(b, rb, rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(a, ra, rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("fs", RATES)
def test_responses(fs: int) -> None:
    b, a = to_ba(make_highpass(fs, 80.0, 2**-0.5))
    assert mag_db(b, a, 80.0, fs) == pytest.approx(-3.0103, abs=0.01)
    assert mag_db(b, a, 40.0, fs) == pytest.approx(10 * math.log10(1 / (1 + 2**4)), abs=0.05)  # Butterworth
    assert mag_db(b, a, 5000.0, fs) == pytest.approx(0.0, abs=0.01)
    b, a = to_ba(make_lowpass(fs, 5000.0, 2**-0.5))
    assert mag_db(b, a, 5000.0, fs) == pytest.approx(-3.0103, abs=0.01)
    b, a = to_ba(make_peaking(fs, 1000.0, 1.5, -6.0))
    assert mag_db(b, a, 1000.0, fs) == pytest.approx(-6.0, abs=1e-9)
    assert mag_db(b, a, 20.0, fs) == pytest.approx(0.0, abs=0.05)
    b, a = to_ba(make_lowshelf(fs, 200.0, 2**-0.5, 6.0))
    assert mag_db(b, a, 1.0, fs) == pytest.approx(6.0, abs=0.01)
    assert mag_db(b, a, 200.0, fs) == pytest.approx(3.0, abs=0.01)  # shelf midpoint
    assert mag_db(b, a, fs * 0.45, fs) == pytest.approx(0.0, abs=0.05)
    b, a = to_ba(make_highshelf(fs, 4000.0, 2**-0.5, -4.0))
    assert mag_db(b, a, fs / 2 * 0.999, fs) == pytest.approx(-4.0, abs=0.05)
    assert mag_db(b, a, 20.0, fs) == pytest.approx(0.0, abs=0.01)


def test_zero_db_peaking_is_exact_identity() -> None:
    for fs in RATES:
        for f in (20.0, 440.0, 19000.0):
            c = make_peaking(fs, f, 0.7, 0.0)
            assert c[0] == 1.0 and c[1] == c[3] and c[2] == c[4]


@pytest.mark.parametrize("f0", [1e-3, 30000.0, 1e9])
def test_out_of_range_frequencies_stay_stable(f0: float) -> None:
    for make in (make_highpass, make_lowpass):
        c = make(8000, f0, 10.0)
        assert np.all(np.isfinite(c))
        assert np.all(np.abs(np.roots([1.0, c[3], c[4]])) < 1.0)
    c = make_peaking(22050, f0, 0.1, 24.0)
    assert np.all(np.isfinite(c)) and np.all(np.abs(np.roots([1.0, c[3], c[4]])) < 1.0)


def test_design_is_callable_from_numba() -> None:
    @njit
    def inside(out: np.ndarray) -> None:
        design_stage(KIND_PEAKING, 48000.0, 1000.0, 1.0, 3.0, out)

    out = np.zeros(5)
    inside(out)
    np.testing.assert_array_equal(out, make_peaking(48000, 1000.0, 1.0, 3.0))
