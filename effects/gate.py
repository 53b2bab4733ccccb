"""gate: noise gate / downward expander with hysteresis, hold, range and optional look-ahead.

Signal flow in :func:`hushbridge.dsp.kernels.gate.gate`: side-chain high-pass
(``sidechain_hpf_hz``, 12 dB/oct, detector only), a peak detector linked across channels
(an LFE channel not heard: :meth:`ProcessSpec.detector_keys`), open at ``threshold_db`` and close below ``threshold_db - hysteresis_db`` after ``hold_ms``;
when closed the gain is ``(level - threshold) * (ratio - 1)`` dB, never below ``-range_db``
(``ratio = 2``: gentle expander; ``ratio = 100``: hard gate). The gain moves in dB with
one-pole ballistics: 63 % of the way open ``attack_ms`` after the level crosses the threshold,
63 % of the way closed ``release_ms`` after the hold ends.

``lookahead_ms`` delays the audio (not the detector) so word starts are already open; it is a
set-up parameter: it is reported in :attr:`Gate.latency_samples` and takes effect at the next
``prepare()`` (the Chain re-prepares its effects when it is prepared, and the engine announces
the latency when it swaps the chain in). Thresholds and ratio change instantly: the gain
ballistics smooth the result. :attr:`Gate.gain_reduction_db` holds the block's deepest
attenuation, for meters.

``adaptive_db`` (0: off) lets the threshold follow the room: the noise floor is estimated as
the lowest RMS level (the side-chain's power over 50 ms) in the last 3 s, and the gate opens at
``adaptive_db`` above the floor wherever that is higher than ``threshold_db`` (hysteresis and the
expander curve move with it). A gate after a leveler needs it: a fixed threshold is crossed by the
room noise as soon as the leveler lifts a quiet take, and then the gate stays open in every
pause. The floor starts where the adaptive threshold equals the fixed one (a take cut at its
first word shows only speech, which is not the room) and rises toward the estimate 4 dB/s at
most, so unbroken speech cannot lift it into the words; at the end of a steady 0.5 s slot
(level within 5 dB: a fan, rain, most of a café; hardly ever speech) it takes the estimate at
once, so a noisy room is followed 0.5 s into a take, and a room that gets louder within 3.5 s
(once the quieter minima have left the window). It falls 4 dB/s at most, and only while the
level heard is under it (the filters before the gate ring down through an edit's digital
silence). Digital silence leaves the floor alone (a live engine idling on silence gates the take after it as an offline render of
the take does). The peak detector of steady noise reaches about 13 dB over its RMS (white noise:
median 8, max 13 dB in 6 s), so keep ``adaptive_db - hysteresis_db`` above 13 dB, or noise
peaks hold an open gate open.

``sidechain_lpf_hz`` (20 kHz: off) low-passes the detector too (12 dB/oct), a key filter as on a
hardware gate: a keyboard's clicks (most of their energy at 1-4 kHz, a voice's under 1 kHz) then
open the gate less. It is not on in the presets because what it keeps out it also keeps from a
word that starts with a fricative: over real speech with typing in the pauses, 2 kHz in
``podcast`` kept the typing 4 dB further under the voice on average but cut an "s" at a word's
start by 7 dB where it had been 0.6 (README, Presets).

>>> from hushbridge.effects import Gate
>>> gate = Gate(threshold_db=-50.0, ratio=4.0, range_db=18.0, hold_ms=100.0)
"""
from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.design import design_highpass, design_identity, design_lowpass
from hushbridge.dsp.kernels.gate import (
    DETECTOR_RELEASE_MS,
    F_FLOOR,
    F_PAST_MIN,
    F_SIZE,
    F_SLOT_MIN,
    FLOOR_MAX_FALL_DB_PER_S,
    FLOOR_MAX_RISE_DB_PER_S,
    FLOOR_SLOTS,
    FLOOR_SMOOTHING_MS,
    FLOOR_WINDOW_S,
    NO_FLOOR,
    G_ADAPT,
    G_ATT,
    G_CLOSE,
    G_CONSTS,
    G_DET,
    G_FALL,
    G_POW,
    G_HOLD,
    G_LOOK,
    G_RANGE,
    G_REL,
    G_RISE,
    G_SLOPE,
    G_SLOT,
    G_THR,
    I_SIZE,
    gate,
)
from hushbridge.effects.base import UNPREPARED_RATE, Effect, Param, ProcessSpec

MAX_LOOKAHEAD_MS = 10.0
LPF_OFF_HZ = 20000.0  # sidechain_lpf_hz at its maximum: no low-pass
_SC_Q = 2.0**-0.5


class Gate(Effect):
    """Gate / expander; see the module docstring."""

    name = "gate"
    shared_params = frozenset({"lookahead_ms"})  # the latency every channel shares
    params = (
        Param("threshold_db", -90.0, 0.0, -50.0, scale="db", smoothing_ms=0.0),
        Param("hysteresis_db", 0.0, 24.0, 6.0, smoothing_ms=0.0),
        Param("ratio", 1.0, 100.0, 4.0, scale="log", smoothing_ms=0.0),
        Param("range_db", 0.0, 90.0, 24.0, smoothing_ms=0.0),
        Param("attack_ms", 0.05, 100.0, 1.0, scale="log", smoothing_ms=0.0),
        Param("hold_ms", 0.0, 2000.0, 80.0, smoothing_ms=0.0),
        Param("release_ms", 5.0, 5000.0, 150.0, scale="log", smoothing_ms=0.0),
        Param("sidechain_hpf_hz", 20.0, 2000.0, 20.0, scale="log", smoothing_ms=0.0),
        Param("lookahead_ms", 0.0, MAX_LOOKAHEAD_MS, 0.0, smoothing_ms=0.0),
        Param("adaptive_db", 0.0, 40.0, 0.0, smoothing_ms=0.0),
        Param("sidechain_lpf_hz", 500.0, 20000.0, 20000.0, scale="log", smoothing_ms=0.0),
    )

    def __init__(self, **values: float) -> None:
        object.__setattr__(self, "_consts", np.zeros(G_CONSTS, dtype=np.float64))
        object.__setattr__(self, "_sc_coefs", np.array([1.0, 0.0, 0.0, 0.0, 0.0] * 2))
        object.__setattr__(self, "_sc_state", np.zeros((1, 4), dtype=np.float64))
        object.__setattr__(self, "_keys", np.ones(1, dtype=np.float64))
        object.__setattr__(self, "_dline", np.zeros((1, 1), dtype=np.float32))
        object.__setattr__(self, "_fstate", np.zeros(F_SIZE, dtype=np.float64))
        object.__setattr__(self, "_istate", np.zeros(I_SIZE, dtype=np.int64))
        object.__setattr__(self, "_floor_slots", np.full(FLOOR_SLOTS, NO_FLOOR, dtype=np.float64))
        object.__setattr__(self, "_meter", np.zeros(1, dtype=np.float64))
        object.__setattr__(self, "_look", 0)
        super().__init__(**values)

    @property
    def latency_samples(self) -> int:
        """Look-ahead in samples as prepared (before ``prepare``, ``lookahead_ms`` at 48 kHz)."""
        return self._look if self._spec is not None else self._look_at(UNPREPARED_RATE)

    @property
    def gain_reduction_db(self) -> float:
        """Deepest attenuation (dB, >= 0) during the latest processed block."""
        return float(self._meter[0])

    def _wanted_look(self, spec: ProcessSpec) -> int:
        return self._look_at(spec.sample_rate)

    def _look_at(self, sample_rate: int) -> int:
        return int(round(self._values[8] * 1e-3 * sample_rate))

    def prepare(self, spec: ProcessSpec) -> None:
        if self._spec is not None and self._wanted_look(spec) != self._look:
            object.__setattr__(self, "_spec", None)  # a new look-ahead: re-prepare
        super().prepare(spec)

    def _param_changed(self, index: int) -> None:
        spec = self._spec
        if spec is None:
            return
        v = self._values
        sr = float(spec.sample_rate)
        k = self._consts
        if index in (0, 1):
            k[G_THR] = v[0]
            k[G_CLOSE] = v[0] - v[1]
        elif index == 2:
            k[G_SLOPE] = v[2] - 1.0
        elif index == 3:
            k[G_RANGE] = v[3]
        elif index == 4:
            k[G_ATT] = math.exp(-1.0 / (v[4] * 1e-3 * sr))
        elif index == 5:
            k[G_HOLD] = round(v[5] * 1e-3 * sr)
        elif index == 6:
            k[G_REL] = math.exp(-1.0 / (v[6] * 1e-3 * sr))
        elif index == 7:
            design_highpass(sr, float(v[7]), _SC_Q, self._sc_coefs)
        elif index == 9:
            k[G_ADAPT] = v[9]
        elif index == 10:
            if v[10] >= LPF_OFF_HZ or v[10] >= 0.45 * sr:  # off: the identity, which the kernel skips
                design_identity(self._sc_coefs[5:])
            else:
                design_lowpass(sr, float(v[10]), _SC_Q, self._sc_coefs[5:])

    def _prepare(self, spec: ProcessSpec) -> None:
        look = self._wanted_look(spec)
        object.__setattr__(self, "_look", look)
        object.__setattr__(self, "_sc_state", np.zeros((spec.channels, 4), dtype=np.float64))
        object.__setattr__(self, "_keys", spec.detector_keys())
        object.__setattr__(self, "_dline", np.zeros((spec.channels, look + 1), dtype=np.float32))
        self._consts[G_DET] = math.exp(-1.0 / (DETECTOR_RELEASE_MS * 1e-3 * spec.sample_rate))
        self._consts[G_LOOK] = look
        self._consts[G_SLOT] = max(1, round(FLOOR_WINDOW_S / FLOOR_SLOTS * spec.sample_rate))
        self._consts[G_POW] = math.exp(-1.0 / (FLOOR_SMOOTHING_MS * 1e-3 * spec.sample_rate))
        self._consts[G_RISE] = 10.0 ** (FLOOR_MAX_RISE_DB_PER_S / 10.0 / spec.sample_rate)
        self._consts[G_FALL] = 10.0 ** (-FLOOR_MAX_FALL_DB_PER_S / 10.0 / spec.sample_rate)

    def reset(self) -> None:
        """Clear detector and look-ahead state. The gate starts closed, at ``-range_db``: a file
        (or a stream) that starts in a pause starts quiet. At unity it faded the leading room
        noise down over a quarter second, 14 dB louder than the pauses after it (dialogue preset);
        a first word opens it within ``attack_ms`` (the time to 63 %); heard through a
        ``lookahead_ms`` of 3-5 times that, its start is whole (with the look-ahead equal to the
        attack, its first 5 ms lose about 2 dB; 0.05 dB at five times)."""
        self._sc_state.fill(0.0)
        self._dline.fill(0.0)
        self._fstate.fill(0.0)
        self._fstate[1] = -float(self._values[3])
        for k in (F_SLOT_MIN, F_PAST_MIN, F_FLOOR):  # none heard yet
            self._fstate[k] = NO_FLOOR
        self._floor_slots.fill(NO_FLOOR)
        self._istate.fill(0)
        self._meter[0] = float(self._values[3])

    def kernel(self):
        """Gate a block (channels, frames) float32 in place."""
        return gate, (self._consts, self._sc_coefs, self._sc_state, self._dline, self._fstate, self._istate,
                      self._meter, self._floor_slots, self._keys)
