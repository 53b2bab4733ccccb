"""Biquad coefficient design (RBJ Audio EQ Cookbook), kept apart from filter state.

Every ``design_*`` function is a pure numba ``@njit`` function writing the normalised
coefficients ``(b0, b1, b2, a1, a2)`` (``a0`` divided out) into ``out[:5]``, so kernels can
recompute coefficients while a parameter ramps. The ``make_*`` functions are the plain-Python
factories returning a new float64 array of 5:

>>> from hushbridge.dsp.design import make_peaking
>>> c = make_peaking(48000, 1000.0, 1.0, 0.0)   # 0 dB peaking is exactly the identity
>>> bool(c[0] == 1.0 and c[1] == c[3] and c[2] == c[4])
True

The transfer function is ``H(z) = (b0 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2)``.
Frequencies are clamped to ``[1e-5, 0.49] * sample_rate`` and ``q`` to at least 1e-3 so
every design is stable whatever the sample rate.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# Stage kinds understood by :func:`design_stage` and the biquad cascade kernel.
KIND_IDENTITY = 0
KIND_HIGHPASS = 1
KIND_LOWPASS = 2
KIND_PEAKING = 3
KIND_LOWSHELF = 4
KIND_HIGHSHELF = 5
KIND_BANDPASS = 6
KIND_NOTCH = 7
KIND_DIP = 8

_MAX_FRACTION = 0.49
_MIN_Q = 1e-3


@njit(cache=True)
def _w0(sample_rate: float, freq_hz: float) -> float:
    """Angular frequency of ``freq_hz``, clamped to a safe range below Nyquist."""
    f = min(max(freq_hz, 1e-5 * sample_rate), _MAX_FRACTION * sample_rate)
    return 2.0 * math.pi * f / sample_rate


@njit(cache=True)
def _store(b0: float, b1: float, b2: float, a0: float, a1: float, a2: float, out: np.ndarray) -> None:
    """Write ``b/a0`` and ``a/a0`` into ``out``."""
    out[0] = b0 / a0
    out[1] = b1 / a0
    out[2] = b2 / a0
    out[3] = a1 / a0
    out[4] = a2 / a0


@njit(cache=True)
def design_identity(out: np.ndarray) -> None:
    """``H(z) = 1``."""
    out[0] = 1.0
    out[1] = 0.0
    out[2] = 0.0
    out[3] = 0.0
    out[4] = 0.0


@njit(cache=True)
def design_highpass(sample_rate: float, freq_hz: float, q: float, out: np.ndarray) -> None:
    """Second-order high-pass, -3 dB at ``freq_hz`` for ``q = 1/sqrt(2)`` (Butterworth)."""
    w0 = _w0(sample_rate, freq_hz)
    cw = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * max(q, _MIN_Q))
    _store((1.0 + cw) * 0.5, -(1.0 + cw), (1.0 + cw) * 0.5, 1.0 + alpha, -2.0 * cw, 1.0 - alpha, out)


@njit(cache=True)
def design_lowpass(sample_rate: float, freq_hz: float, q: float, out: np.ndarray) -> None:
    """Second-order low-pass, -3 dB at ``freq_hz`` for ``q = 1/sqrt(2)``."""
    w0 = _w0(sample_rate, freq_hz)
    cw = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * max(q, _MIN_Q))
    _store((1.0 - cw) * 0.5, 1.0 - cw, (1.0 - cw) * 0.5, 1.0 + alpha, -2.0 * cw, 1.0 - alpha, out)


@njit(cache=True)
def design_peaking(sample_rate: float, freq_hz: float, q: float, gain_db: float, out: np.ndarray) -> None:
    """Peaking (bell) EQ: ``gain_db`` at ``freq_hz``, bandwidth set by ``q``. 0 dB is exactly ``H = 1``."""
    w0 = _w0(sample_rate, freq_hz)
    cw = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * max(q, _MIN_Q))
    a = 10.0 ** (gain_db / 40.0)
    _store(1.0 + alpha * a, -2.0 * cw, 1.0 - alpha * a, 1.0 + alpha / a, -2.0 * cw, 1.0 - alpha / a, out)


@njit(cache=True)
def design_lowshelf(sample_rate: float, freq_hz: float, q: float, gain_db: float, out: np.ndarray) -> None:
    """Low shelf: ``gain_db`` below ``freq_hz`` (the shelf midpoint), slope set by ``q``."""
    w0 = _w0(sample_rate, freq_hz)
    cw = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * max(q, _MIN_Q))
    a = 10.0 ** (gain_db / 40.0)
    k = 2.0 * math.sqrt(a) * alpha
    _store(
        a * ((a + 1.0) - (a - 1.0) * cw + k),
        2.0 * a * ((a - 1.0) - (a + 1.0) * cw),
        a * ((a + 1.0) - (a - 1.0) * cw - k),
        (a + 1.0) + (a - 1.0) * cw + k,
        -2.0 * ((a - 1.0) + (a + 1.0) * cw),
        (a + 1.0) + (a - 1.0) * cw - k,
        out,
    )


@njit(cache=True)
def design_highshelf(sample_rate: float, freq_hz: float, q: float, gain_db: float, out: np.ndarray) -> None:
    """High shelf: ``gain_db`` above ``freq_hz`` (the shelf midpoint), slope set by ``q``."""
    w0 = _w0(sample_rate, freq_hz)
    cw = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * max(q, _MIN_Q))
    a = 10.0 ** (gain_db / 40.0)
    k = 2.0 * math.sqrt(a) * alpha
    _store(
        a * ((a + 1.0) + (a - 1.0) * cw + k),
        -2.0 * a * ((a - 1.0) + (a + 1.0) * cw),
        a * ((a + 1.0) + (a - 1.0) * cw - k),
        (a + 1.0) - (a - 1.0) * cw + k,
        2.0 * ((a - 1.0) - (a + 1.0) * cw),
        (a + 1.0) - (a - 1.0) * cw - k,
        out,
    )


@njit(cache=True)
def design_bandpass(sample_rate: float, freq_hz: float, q: float, out: np.ndarray) -> None:
    """Band-pass with 0 dB peak gain at ``freq_hz``; -3 dB bandwidth ``freq_hz / q``."""
    w0 = _w0(sample_rate, freq_hz)
    cw = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * max(q, _MIN_Q))
    _store(alpha, 0.0, -alpha, 1.0 + alpha, -2.0 * cw, 1.0 - alpha, out)


@njit(cache=True)
def design_notch(sample_rate: float, freq_hz: float, q: float, out: np.ndarray) -> None:
    """Notch: zero gain at ``freq_hz``, -3 dB bandwidth ``freq_hz / q`` (``1 - bandpass``)."""
    w0 = _w0(sample_rate, freq_hz)
    cw = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * max(q, _MIN_Q))
    _store(1.0, -2.0 * cw, 1.0, 1.0 + alpha, -2.0 * cw, 1.0 - alpha, out)


@njit(cache=True)
def design_dip(sample_rate: float, freq_hz: float, q: float, gain_db: float, out: np.ndarray) -> None:
    """Notch of finite depth: ``1 - (1 - g) * bandpass`` with ``g = 10**(min(gain_db, 0)/20)``.

    The poles are the notch's (bandwidth ``freq_hz / q`` whatever the depth, unlike a deep
    peaking cut, which widens); ``gain_db = 0`` is exactly ``H = 1``, ``-inf`` the full notch.
    """
    w0 = _w0(sample_rate, freq_hz)
    cw = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * max(q, _MIN_Q))
    g = 10.0 ** (min(gain_db, 0.0) / 20.0)
    _store(1.0 + alpha * g, -2.0 * cw, 1.0 - alpha * g, 1.0 + alpha, -2.0 * cw, 1.0 - alpha, out)


@njit(cache=True)
def design_stage(kind: int, sample_rate: float, freq_hz: float, q: float, gain_db: float, out: np.ndarray) -> None:
    """Dispatch on a ``KIND_*`` constant (``gain_db`` is ignored by pass filters)."""
    if kind == KIND_HIGHPASS:
        design_highpass(sample_rate, freq_hz, q, out)
    elif kind == KIND_LOWPASS:
        design_lowpass(sample_rate, freq_hz, q, out)
    elif kind == KIND_PEAKING:
        design_peaking(sample_rate, freq_hz, q, gain_db, out)
    elif kind == KIND_LOWSHELF:
        design_lowshelf(sample_rate, freq_hz, q, gain_db, out)
    elif kind == KIND_HIGHSHELF:
        design_highshelf(sample_rate, freq_hz, q, gain_db, out)
    elif kind == KIND_BANDPASS:
        design_bandpass(sample_rate, freq_hz, q, out)
    elif kind == KIND_NOTCH:
        design_notch(sample_rate, freq_hz, q, out)
    elif kind == KIND_DIP:
        design_dip(sample_rate, freq_hz, q, gain_db, out)
    else:
        design_identity(out)


def make_highpass(sample_rate: float, freq_hz: float, q: float = 2**-0.5) -> np.ndarray:
    """Return ``[b0, b1, b2, a1, a2]`` of a second-order high-pass."""
    out = np.empty(5, dtype=np.float64)
    design_highpass(float(sample_rate), float(freq_hz), float(q), out)
    return out


def make_lowpass(sample_rate: float, freq_hz: float, q: float = 2**-0.5) -> np.ndarray:
    """Return ``[b0, b1, b2, a1, a2]`` of a second-order low-pass."""
    out = np.empty(5, dtype=np.float64)
    design_lowpass(float(sample_rate), float(freq_hz), float(q), out)
    return out


def make_peaking(sample_rate: float, freq_hz: float, q: float, gain_db: float) -> np.ndarray:
    """Return ``[b0, b1, b2, a1, a2]`` of a peaking EQ band."""
    out = np.empty(5, dtype=np.float64)
    design_peaking(float(sample_rate), float(freq_hz), float(q), float(gain_db), out)
    return out


def make_lowshelf(sample_rate: float, freq_hz: float, q: float, gain_db: float) -> np.ndarray:
    """Return ``[b0, b1, b2, a1, a2]`` of a low shelf."""
    out = np.empty(5, dtype=np.float64)
    design_lowshelf(float(sample_rate), float(freq_hz), float(q), float(gain_db), out)
    return out


def make_highshelf(sample_rate: float, freq_hz: float, q: float, gain_db: float) -> np.ndarray:
    """Return ``[b0, b1, b2, a1, a2]`` of a high shelf."""
    out = np.empty(5, dtype=np.float64)
    design_highshelf(float(sample_rate), float(freq_hz), float(q), float(gain_db), out)
    return out


def make_bandpass(sample_rate: float, freq_hz: float, q: float) -> np.ndarray:
    """Return ``[b0, b1, b2, a1, a2]`` of a 0 dB-peak band-pass."""
    out = np.empty(5, dtype=np.float64)
    design_bandpass(float(sample_rate), float(freq_hz), float(q), out)
    return out


def make_notch(sample_rate: float, freq_hz: float, q: float) -> np.ndarray:
    """Return ``[b0, b1, b2, a1, a2]`` of a notch."""
    out = np.empty(5, dtype=np.float64)
    design_notch(float(sample_rate), float(freq_hz), float(q), out)
    return out


def make_dip(sample_rate: float, freq_hz: float, q: float, gain_db: float) -> np.ndarray:
    """Return ``[b0, b1, b2, a1, a2]`` of a notch ``gain_db`` (<= 0) deep."""
    out = np.empty(5, dtype=np.float64)
    design_dip(float(sample_rate), float(freq_hz), float(q), float(gain_db), out)
    return out


def to_ba(coefs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[b0, b1, b2, a1, a2]`` -> ``(b, a)`` as scipy.signal.lfilter takes them."""
    c = np.asarray(coefs, dtype=np.float64)
    return c[:3].copy(), np.array([1.0, c[3], c[4]])
