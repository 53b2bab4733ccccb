"""gain: a smoothed volume change in dB."""
from __future__ import annotations

import numpy as np

from hushbridge.dsp.kernels.gain import smoothed_gain
from hushbridge.effects.base import Effect, Param


class Gain(Effect):
    """Volume change. ``gain_db`` ramps over 20 ms so automation never clicks."""

    name = "gain"
    channel_coupling = "independent"
    params = (Param("gain_db", -96.0, 24.0, 0.0, scale="db", smoothing_ms=20.0, silent_at_min=True),)

    def __init__(self, gain_db: float = 0.0) -> None:
        self._state = np.zeros(3, dtype=np.float64)  # [current, target, step]
        super().__init__(gain_db=gain_db)

    def _param_changed(self, index: int) -> None:
        target = 10.0 ** (self._values[0] / 20.0) if self._values[0] > -96.0 else 0.0
        st = self._state
        st[1] = target
        if self._spec is None:
            st[0] = target
        else:
            ramp = max(1.0, self.params[0].smoothing_ms * 1e-3 * self._spec.sample_rate)
            st[2] = max(abs(target - st[0]) / ramp, 1e-12)

    def reset(self) -> None:
        self._state[0] = self._state[1]

    def kernel(self):
        """Apply the smoothed gain to a block (channels, frames) float32 in place."""
        return smoothed_gain, (self._state,)
