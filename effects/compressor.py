"""compressor: feed-forward broadcast compressor with a linked detector and soft knee.

Signal flow (per sample, :func:`hushbridge.dsp.kernels.dynamics.compressor`):

1. Side-chain high-pass (``sidechain_hpf_hz``, 12 dB/oct) on the detector path only, so
   rumble and plosives do not pump the programme.
2. Detector, linked across channels (the loudest channel wins; an LFE channel is not heard,
   :meth:`ProcessSpec.detector_keys`): instantaneous peak, or RMS averaged over :data:`RMS_WINDOW_MS`.
3. Gain computer in dB: ``threshold_db``, ``ratio``, quadratic soft knee ``knee_db`` wide.
4. Ballistics on the gain reduction in dB: a release stage (one pole, ``release_ms``, instant
   attack) followed by an attack stage (one pole, ``attack_ms``). A step up reaches 63 % of its
   gain reduction after ``attack_ms``; a step down recovers 63 % after ``release_ms``.
5. Gain reduction and ``makeup_db`` applied to every channel alike.

``freeze_db`` (0: off) makes it a gated compressor, as broadcast processors have: while the
detector, or its level smoothed over 20 ms, is more than ``freeze_db`` under the threshold, the
gain reduction does not release to 0 but goes, at the release's pace, to its average over the
last second of speech (it still rises where the level asks for more). So a pause gets the gain
the phrase had, not what its last soft syllable left (less reduction: the pause came up against
the phrase) nor what a knock or a laugh left (more: the next word started quiet), and short
bursts in a pause release nothing: the peaks of the noise under the peak detector, typing (each
click released a little, and 3 s of it got the whole makeup). Without it a pause gets the whole ``makeup_db`` while the speech around it gets the
makeup minus its gain reduction, so the pause comes up against the speech by that much (the
room noise "breathes" up between phrases); frozen, a pause keeps the gain of the speech before it.

Threshold, ratio, knee and makeup ramp over 20 ms. :attr:`Compressor.gain_reduction_db`
holds the largest gain reduction of the latest block, for meters.

>>> from hushbridge.effects import Compressor
>>> comp = Compressor(threshold_db=-20.0, ratio=4.0, attack_ms=5.0, release_ms=150.0)
"""
from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.design import design_highpass
from hushbridge.dsp.kernels.dynamics import compressor
from hushbridge.effects.base import Effect, Param, ProcessSpec

RMS_WINDOW_MS = 10.0
FREEZE_SMOOTHING_MS = 20.0  # the freeze test's level: noise peaks in a pause must not release it
FREEZE_AVERAGE_S = 1.0  # a frozen gain reduction goes to its average over this much speech
_SC_Q = 2.0**-0.5

# parameter index -> column of the kernel's ramp array
_RAMPED = {0: 0, 1: 1, 2: 2, 5: 3}


class Compressor(Effect):
    """Feed-forward compressor; see the module docstring for the signal flow."""

    name = "compressor"
    params = (
        Param("threshold_db", -60.0, 0.0, -18.0, scale="db", smoothing_ms=20.0),
        Param("ratio", 1.0, 20.0, 3.0, scale="log", smoothing_ms=20.0),
        Param("knee_db", 0.0, 24.0, 6.0, smoothing_ms=20.0),
        Param("attack_ms", 0.1, 200.0, 10.0, scale="log", smoothing_ms=0.0),
        Param("release_ms", 5.0, 2000.0, 120.0, scale="log", smoothing_ms=0.0),
        Param("makeup_db", 0.0, 24.0, 0.0, scale="db", smoothing_ms=20.0),
        Param("detector", 0.0, 1.0, 0.0, step=1.0, smoothing_ms=0.0, choices=("peak", "rms")),
        Param("sidechain_hpf_hz", 20.0, 500.0, 20.0, scale="log", smoothing_ms=0.0),
        Param("freeze_db", 0.0, 40.0, 0.0, smoothing_ms=0.0),
    )

    def __init__(self, **values: float) -> None:
        object.__setattr__(self, "_ramp", np.zeros((3, 4), dtype=np.float64))
        object.__setattr__(self, "_consts", np.zeros(7, dtype=np.float64))
        object.__setattr__(self, "_sc_coefs", np.array([1.0, 0.0, 0.0, 0.0, 0.0]))
        object.__setattr__(self, "_sc_state", np.zeros((1, 2), dtype=np.float64))
        object.__setattr__(self, "_rms_state", np.zeros(1, dtype=np.float64))
        object.__setattr__(self, "_env", np.zeros(4, dtype=np.float64))
        object.__setattr__(self, "_meter", np.zeros(1, dtype=np.float64))
        object.__setattr__(self, "_keys", np.ones(1, dtype=np.float64))
        super().__init__(**values)

    @property
    def gain_reduction_db(self) -> float:
        """Largest gain reduction (dB, >= 0) during the latest processed block."""
        return float(self._meter[0])

    def _param_changed(self, index: int) -> None:
        v = self._values
        spec = self._spec
        if index in _RAMPED:
            col = _RAMPED[index]
            value = 1.0 - 1.0 / v[1] if index == 1 else v[index]
            r = self._ramp
            r[1, col] = value
            if spec is None:
                r[0, col] = value
            else:
                ramp = max(1.0, self.params[index].smoothing_ms * 1e-3 * spec.sample_rate)
                r[2, col] = max(abs(value - r[0, col]) / ramp, 1e-12)
            return
        if spec is None:
            return
        sr = float(spec.sample_rate)
        if index == 3:
            self._consts[0] = math.exp(-1.0 / (v[3] * 1e-3 * sr))
        elif index == 4:
            self._consts[1] = math.exp(-1.0 / (v[4] * 1e-3 * sr))
        elif index == 6:
            self._consts[3] = v[6]
        elif index == 7:
            design_highpass(sr, float(v[7]), _SC_Q, self._sc_coefs)
        elif index == 8:
            self._consts[4] = v[8]

    def _prepare(self, spec: ProcessSpec) -> None:
        object.__setattr__(self, "_sc_state", np.zeros((spec.channels, 2), dtype=np.float64))
        object.__setattr__(self, "_rms_state", np.zeros(spec.channels, dtype=np.float64))
        object.__setattr__(self, "_keys", spec.detector_keys())
        self._consts[2] = math.exp(-1.0 / (RMS_WINDOW_MS * 1e-3 * spec.sample_rate))
        self._consts[5] = math.exp(-1.0 / (FREEZE_SMOOTHING_MS * 1e-3 * spec.sample_rate))
        self._consts[6] = math.exp(-1.0 / (FREEZE_AVERAGE_S * spec.sample_rate))

    def reset(self) -> None:
        """Clear detector and envelope state; parameter ramps jump to their targets."""
        self._ramp[0] = self._ramp[1]
        self._sc_state.fill(0.0)
        self._rms_state.fill(0.0)
        self._env.fill(0.0)
        self._env[3] = -1.0  # no speech heard yet: no average for a freeze to go to
        self._meter[0] = 0.0

    def kernel(self):
        """Compress a block (channels, frames) float32 in place."""
        return compressor, (self._ramp, self._consts, self._sc_coefs, self._sc_state, self._rms_state, self._env,
                            self._meter, self._keys)
