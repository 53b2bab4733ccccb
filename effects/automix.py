"""automix: gain-sharing automixer for separate microphones (several speakers, one mic each).

Each channel's gain follows its share of the total power (Dugan's method,
:func:`hushbridge.dsp.kernels.automix.automix`): the microphone of whoever talks stays at 0 dB,
the others fall by as much as their bleed of that talker lies under it (a -20 dB bleed: -20 dB),
and with nobody talking every one of N microphones sits at -10·log10(N) dB, so the room noise of
all of them together stays the same as talkers take turns (a gate would pump it). The power
envelopes rise with ``attack_ms`` and fall with ``release_ms`` (a talker's mic stays open
between syllables); ``range_db`` is the deepest a channel goes. ``weight_db`` per channel
(``/hb/automix@2/weight_db``, :meth:`~hushbridge.effects.Effect.set_channel`; Dugan's weight)
weighs a microphone up or down in the sharing: a host's +6 dB keeps more of the gain when both
talk (equal talkers: -1.0 dB for it, -7.0 for the other, instead of -3.0 each) and its talking
cuts the others that much deeper; the effect's own ``weight_db`` sets every channel's again.
``priority_channel`` (1..N; 0: none) with ``priority_db`` weighs one microphone up as well (the
two add). ``mics`` (0: every channel) makes only the first that many channels the microphones:
the channels after them (a music bed under the voices, ``hushbridge run --automix --duck N``)
pass untouched and take no part in the sharing (a loud bed took the gain of a quiet voice's
mic, and the bed pumped with the syllables). ``match_db`` (12; 0: off) matches the microphones'
levels as it goes: Dugan's sharing assumes every talker reads the same on their own mic, and a
mic whose preamp is 12 dB hotter took the gain in double talk (a quiet mic's talker was cut 15 dB
on average where two talked at once) and its bleed weighed as a quiet mic's speech; each mic's
speech level is learnt while it holds the talk (2 s of it) and weighs it toward the others', by
at most ``match_db`` either way (on top of ``weight_db``, which stays the deliberate choice). A
single channel passes untouched. It belongs before the per-speaker processing, so that a speaker's leveler does not
lift the others' bleed in their pauses (``hushbridge process --automix --per-channel``).

>>> from hushbridge.effects import Automix
>>> mix = Automix(range_db=24.0)
"""
from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.kernels.automix import (
    A_ATTACK,
    A_CONSTS,
    A_FLOOR,
    A_MATCH_COEF,
    A_MATCH_DB,
    A_MATCH_ENOUGH,
    A_MATCH_HOLD,
    A_MICS,
    A_RELEASE,
    MATCH_ENOUGH_S,
    MATCH_HOLD_S,
    MATCH_TIME_S,
    automix,
)
from hushbridge.effects.base import Effect, Param, ProcessSpec
from hushbridge.errors import ParamError


class Automix(Effect):
    """Gain-sharing automixer; see the module docstring."""

    name = "automix"
    channel_coupling = "joint"  # shares the gain across the channels: never one instance per channel
    params = (
        Param("range_db", 0.0, 60.0, 24.0, smoothing_ms=0.0),
        Param("attack_ms", 0.1, 100.0, 2.0, scale="log", smoothing_ms=0.0),
        Param("release_ms", 5.0, 2000.0, 40.0, scale="log", smoothing_ms=0.0),
        Param("priority_channel", 0.0, 64.0, 0.0, step=1.0, smoothing_ms=0.0),
        Param("priority_db", 0.0, 24.0, 6.0, smoothing_ms=0.0),
        Param("weight_db", -24.0, 24.0, 0.0, smoothing_ms=0.0),
        Param("mics", 0.0, 64.0, 0.0, step=1.0, smoothing_ms=0.0),
        Param("match_db", 0.0, 24.0, 12.0, smoothing_ms=0.0),
    )
    channel_params = frozenset({"weight_db"})

    def __init__(self, **values: float) -> None:
        object.__setattr__(self, "_consts", np.zeros(A_CONSTS, dtype=np.float64))
        object.__setattr__(self, "_env", np.zeros(1, dtype=np.float64))
        object.__setattr__(self, "_meter", np.zeros(1, dtype=np.float64))
        object.__setattr__(self, "_weights", np.ones(1, dtype=np.float64))
        object.__setattr__(self, "_speech", np.zeros((3, 1), dtype=np.float64))
        object.__setattr__(self, "_auto", np.ones(1, dtype=np.float64))
        object.__setattr__(self, "_tick", np.zeros(1, dtype=np.float64))
        super().__init__(**values)

    @property
    def gains_db(self) -> tuple[float, ...]:
        """Each channel's gain (dB, <= 0) at the end of the latest block."""
        return tuple(float(g) for g in self._meter)

    @property
    def gain_reduction_db(self) -> float:
        """The deepest cut of any channel (dB, >= 0) at the end of the latest block; each
        channel's in the meters (``/hb/meter/gain_reduction/automix``: which mic is open)."""
        m = self._meter
        low = 0.0
        for c in range(m.shape[0]):  # no array made: read by the audio thread's meters
            if m[c] < low:
                low = m[c]
        return 0.0 - low  # never -0.0

    def channel_readings(self, attr: str, out: np.ndarray) -> None:
        if attr == "gain_reduction_db":
            m = self._meter
            for c in range(min(m.shape[0], out.shape[0] - 1)):
                out[1 + c] = 0.0 - m[c]

    def _param_changed(self, index: int) -> None:
        v = self._values
        self._consts[A_FLOOR] = 10.0 ** (-v[0] / 10.0)
        self._consts[A_MICS] = int(round(v[6]))
        self._consts[A_MATCH_DB] = v[7]
        if index in (3, 4, 5):
            for c in range(len(self._weights)):
                self._channel_changed(c, 5)
        spec = self._spec
        if spec is not None:
            sr = float(spec.sample_rate)
            self._consts[A_ATTACK] = math.exp(-1.0 / (v[1] * 1e-3 * sr))
            self._consts[A_RELEASE] = math.exp(-1.0 / (v[2] * 1e-3 * sr))
            self._consts[A_MATCH_COEF] = math.exp(-1.0 / (MATCH_TIME_S * sr))
            self._consts[A_MATCH_HOLD] = round(MATCH_HOLD_S * sr)
            self._consts[A_MATCH_ENOUGH] = round(MATCH_ENOUGH_S * sr)

    def _channel_changed(self, channel: int, index: int) -> None:
        # one channel's weight: O(1), so that a bundle of every mic's weight costs O(channels)
        if index == 5 and channel < len(self._weights):
            v = self._values
            prio = v[4] if channel == int(round(v[3])) - 1 else 0.0  # one beyond is refused on the control side
            self._weights[channel] = 10.0 ** ((self.channel_value(channel, 5) + prio) / 10.0)

    def check_value(self, index: int, value: float) -> None:
        spec = self._spec
        if index == 3 and spec is not None and int(round(value)) > spec.channels:
            raise ParamError(f"automix: priority_channel {int(round(value))} is beyond the {spec.channels} channels "
                             "(1..N, 0: none)")

    def _prepare(self, spec: ProcessSpec) -> None:
        if int(round(self._values[3])) > spec.channels:
            raise ParamError(f"automix: priority_channel {int(round(self._values[3]))} is beyond the "
                             f"{spec.channels} channels (1..N, 0: none)")
        object.__setattr__(self, "_env", np.zeros(spec.channels, dtype=np.float64))
        object.__setattr__(self, "_meter", np.zeros(spec.channels, dtype=np.float64))
        object.__setattr__(self, "_weights", np.ones(spec.channels, dtype=np.float64))
        object.__setattr__(self, "_speech", np.zeros((3, spec.channels), dtype=np.float64))
        object.__setattr__(self, "_auto", np.ones(spec.channels, dtype=np.float64))

    def reset(self) -> None:
        """Forget the envelopes and the microphones' speech levels: every channel starts from an
        even share, unmatched."""
        self._env.fill(0.0)
        self._meter.fill(0.0)
        self._speech.fill(0.0)
        self._auto.fill(1.0)
        self._tick.fill(0.0)

    def kernel(self):
        """Share the gain of a block (channels, frames) float32 in place."""
        return automix, (self._consts, self._env, self._meter, self._weights, self._speech, self._auto, self._tick)
