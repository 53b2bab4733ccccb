"""deesser: split-band de-esser (or wideband), side chain high-passed at ``freq_hz``.

Signal flow in :func:`hushbridge.dsp.kernels.deesser.deesser`: the detector hears only what is
above ``freq_hz`` (24 dB/oct Butterworth high-pass, mean square over 2 ms, linked across
channels, an LFE channel not heard); reduction ``(level - threshold_db) * (1 - 1/ratio)`` dB, at most ``range_db``,
with attack/release ballistics (63 % after ``attack_ms`` / ``release_ms``). A sine at
``freq_hz`` well inside the pass band reads 3 dB below its peak (it is an RMS detector).

``mode = split`` (default) reduces only the high band: a Linkwitz-Riley 24 dB/oct crossover at
``0.7 * freq_hz`` (:data:`XO_RATIO`, so all the detector hears is in the reduced band) whose bands sum to a flat magnitude (an all-pass: with no reduction only the phase
around ``freq_hz`` turns), output ``low + g * high``, which never rises above the input and
leaves vowels (below ~2 kHz) within 0.01 dB. ``mode = wideband`` turns the whole signal down
instead (and is bit-exact when idle). :attr:`DeEsser.gain_reduction_db` holds the block's
largest reduction, for meters.

>>> from hushbridge.effects import DeEsser
>>> ds = DeEsser(freq_hz=6500.0, threshold_db=-30.0, range_db=8.0)
"""
from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.design import design_highpass, design_lowpass
from hushbridge.dsp.kernels.deesser import (
    D_ATT,
    D_CONSTS,
    D_MODE,
    D_RANGE,
    D_REL,
    D_RMS,
    D_SLOPE,
    D_THR,
    RMS_WINDOW_MS,
    deesser,
)
from hushbridge.effects.base import Effect, Param, ProcessSpec

# 4th-order Butterworth high-pass as two biquads
_BW4_Q = (1.0 / (2.0 * math.cos(math.pi / 8.0)), 1.0 / (2.0 * math.cos(3.0 * math.pi / 8.0)))
_BW2_Q = 2.0**-0.5
#: the split sits this far below ``freq_hz``, so the whole band the detector hears is reduced
XO_RATIO = 0.7


class DeEsser(Effect):
    """Split-band de-esser; see the module docstring."""

    name = "deesser"
    params = (
        Param("freq_hz", 2000.0, 12000.0, 6500.0, scale="log", smoothing_ms=0.0),
        Param("threshold_db", -60.0, 0.0, -30.0, scale="db", smoothing_ms=0.0),
        Param("range_db", 0.0, 24.0, 8.0, smoothing_ms=0.0),
        Param("ratio", 1.0, 20.0, 4.0, scale="log", smoothing_ms=0.0),
        Param("attack_ms", 0.1, 50.0, 0.5, scale="log", smoothing_ms=0.0),
        Param("release_ms", 5.0, 500.0, 60.0, scale="log", smoothing_ms=0.0),
        Param("mode", 0.0, 1.0, 0.0, step=1.0, smoothing_ms=0.0, choices=("split", "wideband")),
    )

    def __init__(self, **values: float) -> None:
        object.__setattr__(self, "_consts", np.zeros(D_CONSTS, dtype=np.float64))
        object.__setattr__(self, "_sc_coefs", np.zeros((2, 5), dtype=np.float64))
        object.__setattr__(self, "_xo_coefs", np.zeros((4, 5), dtype=np.float64))
        object.__setattr__(self, "_keys", np.ones(1, dtype=np.float64))
        object.__setattr__(self, "_sc_state", np.zeros((1, 2, 2), dtype=np.float64))
        object.__setattr__(self, "_xo_state", np.zeros((1, 4, 2), dtype=np.float64))
        object.__setattr__(self, "_ms", np.zeros(1, dtype=np.float64))
        object.__setattr__(self, "_env", np.zeros(2, dtype=np.float64))
        object.__setattr__(self, "_meter", np.zeros(1, dtype=np.float64))
        super().__init__(**values)

    @property
    def gain_reduction_db(self) -> float:
        """Largest reduction (dB, >= 0) during the latest processed block."""
        return float(self._meter[0])

    def _param_changed(self, index: int) -> None:
        spec = self._spec
        if spec is None:
            return
        v = self._values
        sr = float(spec.sample_rate)
        k = self._consts
        if index == 0:
            for s in range(2):
                design_highpass(sr, float(v[0]), _BW4_Q[s], self._sc_coefs[s])
            for s in range(2):
                design_lowpass(sr, XO_RATIO * float(v[0]), _BW2_Q, self._xo_coefs[s])
                design_highpass(sr, XO_RATIO * float(v[0]), _BW2_Q, self._xo_coefs[2 + s])
        elif index == 1:
            k[D_THR] = v[1]
        elif index == 2:
            k[D_RANGE] = v[2]
        elif index == 3:
            k[D_SLOPE] = 1.0 - 1.0 / v[3]
        elif index == 4:
            k[D_ATT] = math.exp(-1.0 / (v[4] * 1e-3 * sr))
        elif index == 5:
            k[D_REL] = math.exp(-1.0 / (v[5] * 1e-3 * sr))
        elif index == 6:
            k[D_MODE] = v[6]

    def _prepare(self, spec: ProcessSpec) -> None:
        object.__setattr__(self, "_sc_state", np.zeros((spec.channels, 2, 2), dtype=np.float64))
        object.__setattr__(self, "_xo_state", np.zeros((spec.channels, 4, 2), dtype=np.float64))
        object.__setattr__(self, "_ms", np.zeros(spec.channels, dtype=np.float64))
        object.__setattr__(self, "_keys", spec.detector_keys())
        self._consts[D_RMS] = math.exp(-1.0 / (RMS_WINDOW_MS * 1e-3 * spec.sample_rate))

    def reset(self) -> None:
        """Clear side-chain, crossover and envelope state."""
        self._sc_state.fill(0.0)
        self._xo_state.fill(0.0)
        self._ms.fill(0.0)
        self._env.fill(0.0)
        self._meter[0] = 0.0

    def kernel(self):
        """De-ess a block (channels, frames) float32 in place."""
        return deesser, (self._consts, self._sc_coefs, self._sc_state, self._xo_coefs, self._xo_state, self._ms,
                         self._env, self._meter, self._keys)
