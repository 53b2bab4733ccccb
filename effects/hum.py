"""humremove: notches at the mains frequency (50 or 60 Hz) and its harmonics, optional auto-detect.

One notch per harmonic ``k * mains_hz``, ``k = 1..harmonics``, all with the same ``q`` (so the
-3 dB bandwidth of harmonic ``k`` is ``k * mains_hz / q``) and ``depth_db`` of attenuation at
the centre (:func:`hushbridge.dsp.design.design_dip`: the bandwidth does not widen with depth).
Stages beyond ``harmonics`` are exactly transparent and cost nothing; changing ``harmonics`` or
``depth_db`` ramps the notch depths, changing ``mains_hz`` glides the notch frequencies, so no
change clicks.

``auto = 1`` detects the mains frequency from the signal (see :mod:`hushbridge.dsp.kernels.hum`:
Goertzel powers at 50/100/150 vs 60/120/180 Hz over one-second windows, averaged over about
two seconds; a family must beat the other by 6 dB and its own neighbours 2 Hz away by 10 dB)
and glides the notches over :data:`GLIDE_MS` when it
changes its mind. Until the first decision the notches sit at ``mains_hz``. With ``auto`` on the
notches also fade out after 5 s without a tonal hum (``ABSENT_WINDOWS`` one-second windows) and back in when one appears: on material
without hum they would only ring at the harmonics after low-frequency transients (plosives).
:attr:`HumRemover.detected_hz` gives the current decision (0 before one is made).

>>> from hushbridge.effects import HumRemover
>>> hum = HumRemover(mains_hz=60, harmonics=6, auto=0)
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from hushbridge.dsp.design import KIND_DIP
from hushbridge.dsp.kernels.hum import (
    D_COEF,
    D_DEPTH,
    D_MAINS,
    D_MISSES,
    D_POW,
    D_IDLE,
    D_PRESENT,
    DET_SIZE,
    DETECT_HARMONICS,
    MAX_STAGES,
    NEIGHBOUR_HZ,
    hum_remover,
)
from hushbridge.effects.base import Param, ProcessSpec
from hushbridge.effects.filters import BiquadEffect

#: glide time of the notch frequencies when auto-detection switches between 50 and 60 Hz
GLIDE_MS = 200.0
MAX_HARMONICS = 10
assert MAX_HARMONICS <= MAX_STAGES  # the detector keeps a configured depth per stage


class HumRemover(BiquadEffect):
    """Mains hum remover; see the module docstring."""

    name = "humremove"
    channel_coupling = "linked"  # its mains detector hears every channel
    params = (
        Param("mains_hz", 50.0, 60.0, 50.0, step=10.0, smoothing_ms=GLIDE_MS),
        Param("harmonics", 1.0, float(MAX_HARMONICS), 4.0, step=1.0, smoothing_ms=50.0),
        Param("q", 5.0, 100.0, 30.0, scale="log", smoothing_ms=50.0),
        Param("depth_db", 6.0, 90.0, 60.0, smoothing_ms=50.0),
        Param("auto", 0.0, 1.0, 0.0, step=1.0, smoothing_ms=GLIDE_MS, choices=("off", "on")),
    )
    stages: ClassVar[int] = MAX_HARMONICS

    def __init__(self, **values: float) -> None:
        object.__setattr__(self, "_det", np.zeros(DET_SIZE, dtype=np.float64))
        self._det[D_PRESENT] = 1.0  # notches in until detection has heard enough to say otherwise
        object.__setattr__(self, "_det_clock", np.zeros(1, dtype=np.int64))
        object.__setattr__(self, "_window", 48000)
        super().__init__(**values)

    @property
    def detected_hz(self) -> float:
        """Mains frequency found by auto-detection: 50, 60, or 0 (no decision yet, or auto off)."""
        return float(self._det[D_MAINS]) if self._values[4] >= 0.5 else 0.0

    def _mains(self) -> float:
        found = self._det[D_MAINS]
        return float(found) if self._values[4] >= 0.5 and found > 0.0 else float(self._values[0])

    @property
    def hum_present(self) -> bool:
        """Whether the notches are in: always with ``auto`` off; with it on, until
        :data:`~hushbridge.dsp.kernels.hum.ABSENT_WINDOWS` one-second windows found no hum."""
        return self._values[4] < 0.5 or self._det[D_PRESENT] > 0.5

    def _stage_targets(self, stage: int) -> tuple[int, float, float, float]:
        v = self._values
        depth = -v[3] if stage < int(v[1]) else 0.0
        self._det[D_DEPTH + stage] = depth  # where the kernel fades a stage back in to
        return KIND_DIP, self._mains() * (stage + 1), v[2], depth if self.hum_present else 0.0

    def _param_changed(self, index: int) -> None:
        if index == 4:
            if self._values[4] < 0.5:
                self._det[D_MAINS] = 0.0
            self._det[D_PRESENT], self._det[D_MISSES] = 1.0, 0.0
        super()._param_changed(index)

    def _prepare(self, spec: ProcessSpec) -> None:
        super()._prepare(spec)
        object.__setattr__(self, "_window", int(spec.sample_rate))  # 1 s: whole cycles of every bin
        d = NEIGHBOUR_HZ
        for g, (base, off) in enumerate(((50.0, 0.0), (60.0, 0.0), (50.0, -d), (50.0, d), (60.0, -d), (60.0, d))):
            for k in range(DETECT_HARMONICS):
                w = 2.0 * math.pi * (base * (k + 1) + off) / spec.sample_rate
                self._det[D_COEF + g * DETECT_HARMONICS + k] = 2.0 * math.cos(w)

    def reset(self) -> None:
        """Clear filter and detector state; notches return to ``mains_hz`` until detection decides."""
        self._det[:D_COEF] = 0.0
        self._det[D_POW:D_MAINS + 1] = 0.0
        self._det[D_PRESENT], self._det[D_MISSES] = 1.0, 0.0
        self._det[D_IDLE] = 1.0
        self._det_clock[0] = 0
        self._param_changed(3)  # depths back to their configured values
        for s in range(self.stages):
            self._ramp[s, 3] = math.log(self._mains() * (s + 1))
        super().reset()

    def process(self, block: np.ndarray) -> None:
        """Remove hum from ``block`` (channels, frames) float32 in place."""
        spec = self._require_prepared(block)
        hum_remover(block, self._work, self._kinds, self._ramp, self._coefs, self._state, self._clock,
                    float(spec.sample_rate), self._det, self._det_clock, self._window, self._values[4] >= 0.5,
                    max(1.0, GLIDE_MS * 1e-3 * spec.sample_rate))
