"""filters: a high-pass (12 or 24 dB/oct) and a four-band parametric EQ with band types, RBJ biquads.

Both run :func:`hushbridge.dsp.kernels.biquad.biquad_cascade`: frequency and Q ramp in the log
domain and gain in dB over each parameter's ``smoothing_ms``, with coefficients recomputed every
16 samples while ramping, so automation never zips. With constant parameters the output is
bit-identical whatever the host block size.

>>> from hushbridge.effects import HighPass, PeakingEQ
>>> hp = HighPass(cutoff_hz=100.0, slope=1)          # 24 dB/oct Butterworth
>>> eq = PeakingEQ(band2_gain_db=-3.0, band2_freq_hz=300.0, band2_q=2.0)
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from hushbridge.dsp.design import (
    KIND_BANDPASS,
    KIND_HIGHPASS,
    KIND_HIGHSHELF,
    KIND_IDENTITY,
    KIND_LOWPASS,
    KIND_LOWSHELF,
    KIND_NOTCH,
    KIND_PEAKING,
    design_stage,
)
from hushbridge.dsp.kernels.biquad import biquad_cascade, design_current
from hushbridge.dsp.kernels.util import crossfade_into
from hushbridge.effects.base import Effect, Param, ProcessSpec

# Butterworth 4th order as two biquads: Q = 1 / (2 cos(pi/8)) and 1 / (2 cos(3 pi/8)).
_BW4_Q = (1.0 / (2.0 * math.cos(math.pi / 8.0)), 1.0 / (2.0 * math.cos(3.0 * math.pi / 8.0)))
_BW2_Q = 2.0**-0.5


class BiquadEffect(Effect):
    """Base of effects made of a fixed number of biquad stages.

    Subclasses set ``stages`` and implement :meth:`_stage_targets`, which gives each stage's
    ``(kind, freq_hz, q, gain_db)`` from the current parameter values.
    """

    stages: ClassVar[int] = 1
    # each channel filtered on its own
    channel_coupling = "independent"

    def __init__(self, **values: float) -> None:
        n = self.stages
        object.__setattr__(self, "_kinds", np.zeros(n, dtype=np.int64))
        object.__setattr__(self, "_ramp", np.zeros((n, 9), dtype=np.float64))
        object.__setattr__(self, "_coefs", np.zeros((n, 5), dtype=np.float64))
        # [samples modulo the ramp interval, start flags...]: see hushbridge.dsp.kernels.biquad
        object.__setattr__(self, "_clock", np.zeros(2, dtype=np.int64))
        object.__setattr__(self, "_state", np.zeros((1, n, 2), dtype=np.float64))
        object.__setattr__(self, "_work", np.zeros(1, dtype=np.float64))
        self._coefs[:, 0] = 1.0
        super().__init__(**values)

    def _stage_targets(self, stage: int) -> tuple[int, float, float, float]:
        raise NotImplementedError

    def _param_changed(self, index: int) -> None:
        spec = self._spec
        ramp_samples = max(1.0, self.params[index].smoothing_ms * 1e-3 * spec.sample_rate) if spec else 1.0
        r = self._ramp
        for s in range(self.stages):
            kind, f, q, g = self._stage_targets(s)
            old = (r[s, 3], r[s, 4], r[s, 5])
            r[s, 3] = math.log(f)
            r[s, 4] = math.log(q)
            r[s, 5] = g
            if spec is None or kind != self._kinds[s]:
                # nothing to ramp from: before prepare, or the stage changes type
                self._kinds[s] = kind
                r[s, 0:3] = r[s, 3:6]
                if spec is not None:
                    design_stage(kind, float(spec.sample_rate), f, q, g, self._coefs[s])
                continue
            for k in range(3):
                if r[s, 3 + k] != old[k] or r[s, 6 + k] <= 0.0:
                    r[s, 6 + k] = max(abs(r[s, 3 + k] - r[s, k]) / ramp_samples, 1e-12)

    def _prepare(self, spec: ProcessSpec) -> None:
        object.__setattr__(self, "_state", np.zeros((spec.channels, self.stages, 2), dtype=np.float64))
        object.__setattr__(self, "_clock", np.zeros(2 + spec.channels, dtype=np.int64))
        object.__setattr__(self, "_work", np.zeros(spec.max_block_size, dtype=np.float64))

    def reset(self) -> None:
        """Clear filter state; ramps jump to their targets; the next block starts the filters
        in the steady state of its first nonzero sample (a DC offset passes without a step)."""
        self._ramp[:, 0:3] = self._ramp[:, 3:6]
        self._state.fill(0.0)
        self._clock[0] = 0
        self._clock[1:] = 1
        if self._spec is not None:
            design_current(self._kinds, self._ramp, self._coefs, float(self._spec.sample_rate))

    def kernel(self):
        """The stages over a block (channels, frames) float32, in place."""
        return biquad_cascade, (self._work, self._kinds, self._ramp, self._coefs, self._state, self._clock,
                                float(self._require_prepared().sample_rate))


class HighPass(BiquadEffect):
    """Butterworth-style high-pass: 12 dB/oct (one biquad) or 24 dB/oct (two, ``slope=1``).

    ``q`` is the resonance of the 12 dB/oct filter (0.707 = Butterworth); at 24 dB/oct it scales
    both stages of the 4th-order Butterworth, so 0.707 gives a maximally flat 24 dB/oct slope.
    ``slope`` switches instantly (it is a set-up choice, not meant for automation).
    """

    name = "highpass"
    params = (
        Param("cutoff_hz", 10.0, 1000.0, 80.0, scale="log", smoothing_ms=20.0),
        Param("q", 0.1, 10.0, _BW2_Q, scale="log", smoothing_ms=20.0),
        Param("slope", 0.0, 1.0, 0.0, step=1.0, choices=("12 dB/oct", "24 dB/oct")),
    )
    stages = 2

    def __init__(self, cutoff_hz: float = 80.0, q: float = _BW2_Q, slope: float = 0.0) -> None:
        super().__init__(cutoff_hz=cutoff_hz, q=q, slope=slope)

    def _stage_targets(self, stage: int) -> tuple[int, float, float, float]:
        f, q, slope = self._values[0], self._values[1], self._values[2]
        if slope < 0.5:
            if stage == 0:
                return KIND_HIGHPASS, f, q, 0.0
            return KIND_IDENTITY, f, q, 0.0
        return KIND_HIGHPASS, f, _BW4_Q[stage] * q / _BW2_Q, 0.0


#: ``band<i>_type`` choices, in order, and the biquad kind each one designs
BAND_TYPES = ("peak", "lowshelf", "highshelf", "lowpass", "highpass", "notch", "bandpass")
_TYPE_KINDS = (KIND_PEAKING, KIND_LOWSHELF, KIND_HIGHSHELF, KIND_LOWPASS, KIND_HIGHPASS, KIND_NOTCH, KIND_BANDPASS)
#: length of the crossfade when a band changes type
TYPE_FADE_MS = 20.0


def _warm_up_fade(channels: int) -> None:
    """Compile the crossfade path for contiguous and strided blocks now, not in the first fade."""
    buf = np.zeros((channels, 4), dtype=np.float32)
    kinds = np.zeros(1, dtype=np.int64)
    ramp = np.zeros((1, 9), dtype=np.float64)
    coefs = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]])
    state = np.zeros((channels, 1, 2), dtype=np.float64)
    for a in (buf[:, :2], buf):
        biquad_cascade(a, np.zeros(4), kinds, ramp, coefs, state, np.zeros(1, dtype=np.int64), 48000.0)
        for b in (buf[:, 2:], buf.copy()):
            crossfade_into(a, b, 0, 2)


class PeakingEQ(BiquadEffect):
    """Parametric EQ: four bands, ``band<i>_freq_hz``, ``band<i>_gain_db``, ``band<i>_q``, ``band<i>_type``.

    ``band<i>_type`` is one of :data:`BAND_TYPES` (default ``peak``); ``gain_db`` applies to
    peak and shelves and is ignored by the pass and notch types. A peak band at 0 dB is exactly
    transparent and costs nothing once its state has decayed.

    Changing a band's type cannot ramp its coefficients (the filters differ in kind), so it
    crossfades instead: the whole EQ as it was keeps running, frozen, on a copy of the input
    while the new one starts from clean state in the changed band, and the output fades
    linearly from old to new over :data:`TYPE_FADE_MS`. The fade is counted in samples, so it
    is block-size invariant. A second type change during a fade restarts it from the new EQ.
    The type ids were appended after the original twelve, so older presets load unchanged.
    """

    name = "eq"
    BANDS: ClassVar[int] = 4
    DEFAULT_FREQS: ClassVar[tuple[float, ...]] = (100.0, 400.0, 2500.0, 8000.0)
    params = tuple(
        p
        for i, f0 in enumerate(DEFAULT_FREQS, start=1)
        for p in (
            Param(f"band{i}_freq_hz", 20.0, 20000.0, f0, scale="log", smoothing_ms=20.0),
            Param(f"band{i}_gain_db", -24.0, 24.0, 0.0, smoothing_ms=20.0),
            Param(f"band{i}_q", 0.1, 10.0, 1.0, scale="log", smoothing_ms=20.0),
        )
    ) + tuple(
        Param(f"band{i}_type", 0.0, len(BAND_TYPES) - 1.0, 0.0, step=1.0, smoothing_ms=TYPE_FADE_MS,
              choices=BAND_TYPES)
        for i in range(1, len(DEFAULT_FREQS) + 1)
    )
    stages = 4

    def __init__(self, **values: float) -> None:
        n = self.stages
        object.__setattr__(self, "_old_kinds", np.zeros(n, dtype=np.int64))
        object.__setattr__(self, "_old_ramp", np.zeros((n, 9), dtype=np.float64))
        object.__setattr__(self, "_old_coefs", np.zeros((n, 5), dtype=np.float64))
        object.__setattr__(self, "_old_state", np.zeros((1, n, 2), dtype=np.float64))
        object.__setattr__(self, "_old_clock", np.zeros(1, dtype=np.int64))
        object.__setattr__(self, "_old_block", np.zeros((1, 1), dtype=np.float32))
        object.__setattr__(self, "_fade", np.zeros(2, dtype=np.int64))  # [position, length]
        super().__init__(**values)

    def _stage_targets(self, stage: int) -> tuple[int, float, float, float]:
        v = self._values
        kind = _TYPE_KINDS[int(v[3 * self.stages + stage])]
        return kind, v[3 * stage], v[3 * stage + 2], v[3 * stage + 1]

    def _param_changed(self, index: int) -> None:
        spec = self._spec
        stage = index - 3 * self.stages
        if spec is not None and stage >= 0:
            kind = _TYPE_KINDS[int(self._values[index])]
            if kind != self._kinds[stage]:
                # freeze the EQ as it is (ramps at their current values) to fade out of
                self._old_kinds[:] = self._kinds
                self._old_ramp[:] = self._ramp
                self._old_ramp[:, 3:6] = self._ramp[:, 0:3]
                self._old_coefs[:] = self._coefs
                self._old_state[:] = self._state
                self._old_clock[:] = self._clock  # a channel still waiting for sound primes there too
                self._old_clock[0] = 0
                super()._param_changed(index)
                self._state[:, stage, :] = 0.0
                self._fade[0] = 0
                return
        super()._param_changed(index)

    def _prepare(self, spec: ProcessSpec) -> None:
        super()._prepare(spec)
        object.__setattr__(self, "_old_state", np.zeros_like(self._state))
        object.__setattr__(self, "_old_clock", np.zeros_like(self._clock))
        object.__setattr__(self, "_old_block", np.zeros((spec.channels, spec.max_block_size), dtype=np.float32))
        self._fade[1] = max(1, int(round(TYPE_FADE_MS * 1e-3 * spec.sample_rate)))
        _warm_up_fade(spec.channels)

    def reset(self) -> None:
        """Clear filter state; ramps jump to their targets; a type crossfade in progress ends."""
        super().reset()
        self._old_state.fill(0.0)
        self._fade[0] = self._fade[1]

    def process(self, block: np.ndarray) -> None:
        """Filter ``block`` (channels, frames) float32 in place (crossfading after a type change)."""
        spec = self._require_prepared(block)
        fade = self._fade
        if fade[0] < fade[1]:
            old = self._old_block[:, : block.shape[1]]
            old[...] = block
            biquad_cascade(old, self._work, self._old_kinds, self._old_ramp, self._old_coefs, self._old_state,
                           self._old_clock, float(spec.sample_rate))
            biquad_cascade(block, self._work, self._kinds, self._ramp, self._coefs, self._state, self._clock,
                           float(spec.sample_rate))
            fade[0] = crossfade_into(old, block, int(fade[0]), int(fade[1]))
            return
        super().process(block)

    @property
    def python_needed(self) -> bool:  # type: ignore[override]
        """True during a band-type crossfade, which runs two cascades from Python."""
        return bool(self._fade[0] < self._fade[1])
