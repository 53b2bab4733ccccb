"""duck: auto-ducking, the bed (music, game audio) falls while a voice talks.

The first ``voices`` channels are the voices (microphones) and key the ducker; every channel
after them is the bed. While the loudest voice is over ``threshold_db`` (its power over 10 ms),
the bed goes down by ``depth_db``, reaching 63 % of the way ``attack_ms`` after the voice starts;
it stays down for ``hold_ms`` after the voice falls 3 dB under the threshold (the gaps between
words), then comes back up with ``release_ms``. One gain for the whole bed (a stereo bed keeps
its image); the voices pass untouched. A streamer with a microphone on channel 1 and a stereo
game or music feed on 2-3:

>>> from hushbridge.effects import Duck
>>> duck = Duck(voices=1, depth_db=15.0)

Put it after the voice's cleanup (the key then hears the cleaned voice, not the room), and run
the chain per channel with the cleanup bypassed on the bed's channels
(``--per-channel --set denoise@2.bypass=on ...``), or the bed gets the voice's processing.
:attr:`Duck.gain_reduction_db` is the bed's cut (meters); :attr:`Duck.activity` is 1 while a
voice holds it down.
"""
from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.kernels.duck import (
    D_ATTACK,
    D_CLOSE,
    D_CONSTS,
    D_DEPTH,
    D_HOLD,
    D_KEY,
    D_OPEN,
    D_RELEASE,
    D_VOICES,
    HYSTERESIS_DB,
    KEY_MS,
    S_GAIN,
    S_OPEN,
    S_SIZE,
    duck,
)
from hushbridge.effects.base import Effect, Param, ProcessSpec


class Duck(Effect):
    """Auto-ducker: voices key, the bed channels fall; see the module docstring."""

    name = "duck"
    channel_coupling = "joint"  # the voices key the other channels: one instance for all
    reset_on_enable = True
    params = (
        Param("voices", 1.0, 63.0, 1.0, step=1.0, smoothing_ms=0.0),
        Param("threshold_db", -70.0, 0.0, -40.0, smoothing_ms=0.0),
        Param("depth_db", 0.0, 40.0, 12.0, smoothing_ms=0.0),
        Param("attack_ms", 1.0, 1000.0, 60.0, scale="log", smoothing_ms=0.0),
        Param("hold_ms", 0.0, 3000.0, 400.0, smoothing_ms=0.0),
        Param("release_ms", 10.0, 5000.0, 800.0, scale="log", smoothing_ms=0.0),
    )

    def __init__(self, **values: float) -> None:
        object.__setattr__(self, "_consts", np.zeros(D_CONSTS, dtype=np.float64))
        object.__setattr__(self, "_state", np.zeros(S_SIZE, dtype=np.float64))
        super().__init__(**values)

    @property
    def gain_reduction_db(self) -> float:
        """How far the bed is down (dB, >= 0) at the end of the latest block."""
        return 0.0 - float(self._state[S_GAIN])

    @property
    def activity(self) -> float:
        """1.0 while a voice holds the bed down, else 0.0."""
        return float(self._state[S_OPEN])

    def _param_changed(self, index: int) -> None:
        v, k = self._values, self._consts
        k[D_VOICES] = round(v[0])
        k[D_OPEN] = 10.0 ** (v[1] / 10.0)
        k[D_CLOSE] = 10.0 ** ((v[1] - HYSTERESIS_DB) / 10.0)
        k[D_DEPTH] = v[2]
        spec = self._spec
        if spec is not None:
            sr = float(spec.sample_rate)
            k[D_KEY] = math.exp(-1.0 / (KEY_MS * 1e-3 * sr))
            k[D_ATTACK] = math.exp(-1.0 / (v[3] * 1e-3 * sr))
            k[D_HOLD] = round(v[4] * 1e-3 * sr)
            k[D_RELEASE] = math.exp(-1.0 / (v[5] * 1e-3 * sr))

    def _prepare(self, spec: ProcessSpec) -> None:
        pass

    def reset(self) -> None:
        """The bed at full level, no voice heard."""
        self._state.fill(0.0)

    def kernel(self):
        """Duck a block (channels, frames) float32 in place."""
        return duck, (self._consts, self._state)
