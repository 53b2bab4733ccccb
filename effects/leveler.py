"""leveler: slow speech AGC toward a loudness target, frozen in pauses.

Signal flow in :func:`hushbridge.dsp.kernels.leveler.leveler`: K-weighting (BS.1770 pre-filter
designed for the actual rate), a 50 ms level for speech activity and a 400 ms level
(momentary-loudness-like, in LUFS, channels summed with BS.1770's weights: surrounds +1.5 dB,
an LFE not at all, :meth:`ProcessSpec.loudness_weights`) that integrates only while
speech is active. Activity = the 50 ms level is ``activity_db`` above an adaptive noise floor
(follows the level down at once, rises 3 dB/s) and within 20 dB of the loudest recent speech
(so clicks and typing in pauses, far under the voice, do not count). While active, the gain moves toward
``target_lufs - level`` (clamped to ``[-max_cut_db, +max_gain_db]``) with time constant
``time_s``; in pauses it is frozen, so the leveler never pumps the noise floor up. Fast start:
within the first 5 s of speech after a reset (or after the detector re-arms on a long digital
silence), for up to 1 s, a gain that has to rise moves with a 0.3 s time constant (``time_s`` if
shorter), so a quiet take is at its level within its first words instead of after ``time_s``
(a -40 dBFS take's first words had stayed under the following expander's threshold in the
dialogue preset). Cuts always take ``time_s``: a cough or a door slam at the start of a take is
not its level. The speech reference of the relative gate climbs toward a louder level with a
0.5 s time constant for the same reason (a slam taken as the reference kept a quiet voice out of
the gate, and the gain frozen, for about 15 s).

:attr:`Leveler.gain_db` is the gain now; :attr:`Leveler.active` whether speech is detected.

>>> from hushbridge.effects import Leveler
>>> lev = Leveler(target_lufs=-20.0, max_gain_db=12.0, time_s=3.0)
"""
from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.design import design_highpass, design_highshelf, design_lowpass
from hushbridge.dsp.kernels.leveler import (
    FLOOR_MIN_LUFS,
    FLOOR_RISE_DB_S,
    FAST_START_S,
    FAST_TIME_S,
    FAST_WINDOW_S,
    F_REF,
    F_SIZE,
    LEVEL_MS,
    REF_FALL_DB_S,
    REF_RISE_MS,
    SHORT_MS,
    V_CONSTS,
    V_FAST_COEF,
    V_FAST_LEN,
    V_FAST_WINDOW,
    V_GAIN_COEF,
    V_LEVEL,
    V_MARGIN,
    V_MAX_CUT,
    V_MAX_GAIN,
    V_REF_FALL,
    V_REF_RISE,
    V_SILENCE,
    V_RISE,
    V_SHORT,
    V_TARGET,
    V_WARMUP,
    WARMUP_MS,
    REARM_MS,
    SILENCE_MS,
    V_REARM,
    V_DECIM,
    V_VHOP,
    V_VWIN,
    V_TMIN,
    V_TMAX,
    V_WHISPER,
    VOICE_HP_HZ,
    VOICE_LP_HZ,
    WHISPER_S,
    leveler,
    voice_ring_size,
)
from hushbridge.effects.base import Effect, Param, ProcessSpec


class Leveler(Effect):
    """Speech leveler / AGC; see the module docstring."""

    name = "leveler"
    params = (
        Param("target_lufs", -40.0, -6.0, -20.0, smoothing_ms=0.0),
        Param("max_gain_db", 0.0, 30.0, 12.0, smoothing_ms=0.0),
        Param("max_cut_db", 0.0, 30.0, 12.0, smoothing_ms=0.0),
        Param("time_s", 0.3, 30.0, 3.0, scale="log", smoothing_ms=0.0),
        Param("activity_db", 3.0, 30.0, 10.0, smoothing_ms=0.0),
    )

    def __init__(self, **values: float) -> None:
        object.__setattr__(self, "_consts", np.zeros(V_CONSTS, dtype=np.float64))
        object.__setattr__(self, "_kw_coefs", np.zeros((2, 5), dtype=np.float64))
        object.__setattr__(self, "_kw_state", np.zeros((1, 2, 2), dtype=np.float64))
        object.__setattr__(self, "_weights", np.ones(1, dtype=np.float64))
        object.__setattr__(self, "_ms", np.zeros(1, dtype=np.float64))
        object.__setattr__(self, "_fstate", np.zeros(F_SIZE, dtype=np.float64))
        self._fstate[F_REF] = FLOOR_MIN_LUFS
        object.__setattr__(self, "_meter", np.zeros(4, dtype=np.float64))
        object.__setattr__(self, "_voice_coefs", np.zeros((3, 5), dtype=np.float64))
        object.__setattr__(self, "_voice_state", np.zeros((3, 2), dtype=np.float64))
        object.__setattr__(self, "_voice_ring", np.zeros(1, dtype=np.float64))
        super().__init__(**values)

    @property
    def gain_db(self) -> float:
        """The gain applied at the end of the latest block (dB)."""
        return float(self._meter[0])

    @property
    def active(self) -> bool:
        """Whether speech was detected at the end of the latest block."""
        return bool(self._meter[3] > 0.5)

    def _param_changed(self, index: int) -> None:
        spec = self._spec
        if spec is None:
            return
        v = self._values
        k = self._consts
        if index == 0:
            k[V_TARGET] = v[0]
        elif index == 1:
            k[V_MAX_GAIN] = v[1]
        elif index == 2:
            k[V_MAX_CUT] = v[2]
        elif index == 3:
            k[V_GAIN_COEF] = math.exp(-1.0 / (v[3] * spec.sample_rate))
        elif index == 4:
            k[V_MARGIN] = v[4]

    def _prepare(self, spec: ProcessSpec) -> None:
        sr = float(spec.sample_rate)
        object.__setattr__(self, "_kw_state", np.zeros((spec.channels, 2, 2), dtype=np.float64))
        object.__setattr__(self, "_ms", np.zeros(spec.channels, dtype=np.float64))
        object.__setattr__(self, "_weights", spec.loudness_weights())
        design_highshelf(sr, 1500.0, 2.0**-0.5, 4.0, self._kw_coefs[0])
        design_highpass(sr, 38.0, 0.5, self._kw_coefs[1])
        k = self._consts
        k[V_SHORT] = math.exp(-1.0 / (SHORT_MS * 1e-3 * sr))
        k[V_LEVEL] = math.exp(-1.0 / (LEVEL_MS * 1e-3 * sr))
        k[V_RISE] = FLOOR_RISE_DB_S / sr
        k[V_REF_FALL] = REF_FALL_DB_S / sr
        k[V_REF_RISE] = math.exp(-1.0 / (REF_RISE_MS * 1e-3 * sr))
        k[V_WARMUP] = round(WARMUP_MS * 1e-3 * sr)
        k[V_REARM] = round(REARM_MS * 1e-3 * sr)
        k[V_FAST_COEF] = math.exp(-1.0 / (FAST_TIME_S * sr))
        k[V_FAST_LEN] = round(FAST_START_S * sr)
        k[V_FAST_WINDOW] = round(FAST_WINDOW_S * sr)
        k[V_SILENCE] = round(SILENCE_MS * 1e-3 * sr)
        decim, hop, win, tmin, tmax, size = voice_ring_size(sr)
        k[V_DECIM], k[V_VHOP], k[V_VWIN], k[V_TMIN], k[V_TMAX] = decim, hop, win, tmin, tmax
        k[V_WHISPER] = round(WHISPER_S * sr)
        # 4th-order Butterworth before decimating: the voicing analysis needs only the fundamental
        # and the first formant's harmonics
        design_lowpass(sr, VOICE_LP_HZ, 0.5412, self._voice_coefs[0])
        design_lowpass(sr, VOICE_LP_HZ, 1.3066, self._voice_coefs[1])
        design_highpass(sr, VOICE_HP_HZ, 2.0**-0.5, self._voice_coefs[2])  # a DC offset, rumble
        object.__setattr__(self, "_voice_ring", np.zeros(size, dtype=np.float64))
        self._voice_state.fill(0.0)
        self._fstate[F_REF] = FLOOR_MIN_LUFS

    def reset(self) -> None:
        """Clear level, floor and gain state (the gain returns to 0 dB)."""
        self._kw_state.fill(0.0)
        self._ms.fill(0.0)
        self._fstate.fill(0.0)
        self._fstate[F_REF] = FLOOR_MIN_LUFS  # no speech heard yet: the relative gate is open
        self._meter.fill(0.0)
        self._voice_state.fill(0.0)
        self._voice_ring.fill(0.0)

    def kernel(self):
        """Level a block (channels, frames) float32 in place."""
        return leveler, (self._consts, self._kw_coefs, self._kw_state, self._ms, self._fstate, self._meter, self._weights,
                         self._voice_coefs, self._voice_state, self._voice_ring)
