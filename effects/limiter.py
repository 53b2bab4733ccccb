"""limiter: look-ahead true-peak limiter.

The true peak of the *input* is estimated on an 8x oversampled grid, linked across channels, as
the larger of two interpolators (Kaiser-windowed sinc): the one of hushbridge's own BS.1770 meter
(:data:`hushbridge.dsp.loudness.TP_TAPS`, 48 taps per phase), so ``hushbridge loudness`` never
reads the output over the ceiling, and a shorter one (24 taps per phase) that reads material with
strong content near Nyquist the way short resampling filters (scipy's ``resample_poly``, other
meters) do. Where the band ends interpolators disagree: on over-range noise or clipped speech at
96 kHz the 24-tap estimate alone let the meter read 0.7 dB over the ceiling (before session 19),
and the 48-tap one alone let ``resample_poly`` read 0.15 dB over. A low-pass before the limiter
removes what they disagree on. The gain needed to stay under
``ceiling_dbtp`` is held over the look-ahead window, released with a one-pole ``release_ms``
(in dB) and smoothed by a moving average that ramps the gain down over about a millisecond
before each peak arrives, so the output true peak stays under the ceiling without clipping.
The audio is delayed by :attr:`Limiter.latency_samples` (:data:`LOOKAHEAD_MS`, at least
:data:`MIN_LATENCY` samples); hosts and the Chain compensate it.

>>> from hushbridge.effects import Limiter
>>> lim = Limiter(ceiling_dbtp=-1.0, release_ms=80.0)
"""
from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.kernels.dynamics import limiter, true_peak_taps
from hushbridge.dsp.loudness import TP_OVERSAMPLE, TP_TAPS, TP_TAPS_PER_PHASE
from hushbridge.effects.base import UNPREPARED_RATE, Effect, Param, ProcessSpec

LOOKAHEAD_MS = 1.5
OVERSAMPLE = TP_OVERSAMPLE
TAPS_PER_PHASE = TP_TAPS_PER_PHASE
SHORT_TAPS_PER_PHASE = 24
# The gain is held at its lowest for this many samples either side of every peak, so the
# neighbours that the interpolated (inter-sample) peak is built from are turned down as well.
NEIGHBOURHOOD = 8
MIN_ATTACK = 16
MIN_LATENCY = TAPS_PER_PHASE // 2 + NEIGHBOURHOOD + MIN_ATTACK - 1
# Internal headroom under the ceiling for the estimate's residual error (dB).
SAFETY_DB = 0.05

# both interpolators as phases of one FIR (the short one centred in the long window, zeros
# around it): the kernel takes the largest |value| over every phase
_SHORT = true_peak_taps(SHORT_TAPS_PER_PHASE, OVERSAMPLE)
_PAD = (TAPS_PER_PHASE - SHORT_TAPS_PER_PHASE) // 2
_TAPS = np.ascontiguousarray(np.vstack([TP_TAPS, np.pad(_SHORT, ((0, 0), (_PAD, _PAD)))]))
_TAPS_T = np.ascontiguousarray(_TAPS.T)
_L1 = float(np.abs(_TAPS).sum(axis=1).max())
_BOUND = np.ascontiguousarray(np.abs(_TAPS).max(axis=0))


class Limiter(Effect):
    """Look-ahead true-peak limiter; see the module docstring."""

    name = "limiter"
    params = (
        Param("ceiling_dbtp", -24.0, 0.0, -1.0, scale="db", smoothing_ms=0.0),
        Param("release_ms", 1.0, 1000.0, 80.0, scale="log", smoothing_ms=0.0),
    )

    def __init__(self, ceiling_dbtp: float = -1.0, release_ms: float = 80.0) -> None:
        object.__setattr__(self, "_consts", np.zeros(2, dtype=np.float64))
        object.__setattr__(self, "_meter", np.zeros(1, dtype=np.float64))
        object.__setattr__(self, "_acc", np.zeros(_TAPS.shape[0], dtype=np.float64))  # kernel scratch
        object.__setattr__(self, "_istate", np.zeros(6, dtype=np.int64))
        object.__setattr__(self, "_fstate", np.zeros(2, dtype=np.float64))
        object.__setattr__(self, "_latency", 0)
        super().__init__(ceiling_dbtp=ceiling_dbtp, release_ms=release_ms)

    @property
    def latency_samples(self) -> int:
        """Look-ahead delay in samples at the prepared rate (before ``prepare``, at 48 kHz)."""
        return self._latency if self._spec is not None else self.latency_for(UNPREPARED_RATE)

    @property
    def gain_reduction_db(self) -> float:
        """Largest gain reduction (dB, >= 0) during the latest processed block."""
        return float(self._meter[0])

    @staticmethod
    def latency_for(sample_rate: int) -> int:
        """The latency a Limiter prepared at ``sample_rate`` reports."""
        return max(int(round(LOOKAHEAD_MS * 1e-3 * sample_rate)), MIN_LATENCY)

    def _param_changed(self, index: int) -> None:
        v = self._values
        if index == 0:
            self._consts[0] = v[0] - SAFETY_DB
        elif index == 1 and self._spec is not None:
            self._consts[1] = math.exp(-1.0 / (v[1] * 1e-3 * self._spec.sample_rate))

    def _prepare(self, spec: ProcessSpec) -> None:
        d = self.latency_for(spec.sample_rate)
        half = TAPS_PER_PHASE // 2
        object.__setattr__(self, "_latency", d)
        object.__setattr__(self, "_hist", np.zeros((spec.channels, 2 * TAPS_PER_PHASE), dtype=np.float64))
        object.__setattr__(self, "_dline", np.zeros((spec.channels, d), dtype=np.float32))
        hold = d + NEIGHBOURHOOD - half + 1
        object.__setattr__(self, "_dq_val", np.zeros(hold, dtype=np.float64))
        object.__setattr__(self, "_dq_idx", np.zeros(hold, dtype=np.int64))
        object.__setattr__(self, "_box", np.zeros(d - NEIGHBOURHOOD - half + 1, dtype=np.float64))

    def reset(self) -> None:
        """Clear the delay line, history and gain envelope."""
        if self._spec is None:
            return
        self._hist.fill(0.0)
        self._dline.fill(0.0)
        self._dq_val.fill(0.0)
        self._dq_idx.fill(0)
        self._box.fill(0.0)
        self._istate.fill(0)
        self._fstate.fill(0.0)
        self._meter[0] = 0.0

    def kernel(self):
        """Limit a block (channels, frames) float32 in place; output delayed by ``latency_samples``."""
        return limiter, (_TAPS_T, self._acc, _BOUND, _L1, self._hist, self._dline, self._dq_val, self._dq_idx, self._box,
                         self._istate, self._fstate, self._consts, self._meter)
