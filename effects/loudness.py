"""loudness: a BS.1770-4 / EBU R128 meter that passes audio through unchanged (latency 0).

Reads, for the engine's meters and the control plane (all read-only, updated every 100 ms hop):

- :attr:`Loudness.momentary_lufs` (400 ms) and :attr:`Loudness.short_term_lufs` (3 s); until the
  first whole window has passed they read the window zero-padded, as libebur128 does;
- :attr:`Loudness.integrated_lufs` (gated: -70 LUFS absolute, -10 LU relative) and
  :attr:`Loudness.lra_lu` (EBU Tech 3342), from histograms, so memory stays constant for any duration;
- :attr:`Loudness.max_momentary_lufs`, :attr:`Loudness.max_short_term_lufs` (whole windows only);
- :attr:`Loudness.true_peak_dbtp`: the largest true peak (8x oversampled), updated every sample.

``reset()`` clears them all (a transport jump). The ``reset`` parameter is a meter's reset
button (``/hb/loudness/reset 1`` on a control surface, each time it is sent): at the next block
integrated loudness, LRA, the maxima and the true peak start again, counting only audio after the
press, while momentary and short-term read on over their windows. Channel weights follow the ``layout``
parameter (1.0 for L/R/C, LFE excluded, surrounds 1.41): ``auto`` (from the channel count: 1, 2,
5, 6, 8 channels are mono, stereo, 5.0, 5.1, 7.1; other counts weigh every channel 1.0),
``equal`` (every channel 1.0, e.g. six dialogue microphones), or a named layout, which must
have as many channels as the audio (``prepare`` refuses one that does not; set live, a layout
that does not fit is not applied and :attr:`Loudness.layout_in_use` keeps the one that is).
``channel_weights`` (a constructor argument) overrides the layout.

>>> from hushbridge.effects import Loudness, ProcessSpec
>>> import numpy as np
>>> meter = Loudness()
>>> meter.prepare(ProcessSpec(48000, 4800, 2))
>>> tone = (10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * np.arange(4800) / 48000)).astype(np.float32)
>>> for _ in range(50):                        # 5 s of a -23 dBFS stereo tone
...     meter.process(np.stack([tone, tone]))
>>> round(meter.integrated_lufs, 1), round(meter.short_term_lufs, 1)
(-23.0, -23.0)
"""
from __future__ import annotations

import numpy as np

from hushbridge.dsp import loudness as L
from hushbridge.dsp.kernels import loudness as K
from hushbridge.effects.base import Effect, Param, ProcessSpec
from hushbridge.errors import ParamError

LAYOUT_CHOICES = ("auto", "equal", *L.LAYOUTS)


class Loudness(Effect):
    """Loudness and true-peak meter; see the module docstring.

    Parameters
    ----------
    layout : {"auto", "equal", "mono", "stereo", "5.0", "5.1", "7.1"}, optional
        Channel layout giving the weights (the ``layout`` parameter); default ``auto``.
    channel_weights : sequence of float, optional
        Explicit weights, one per channel (overrides ``layout``).
    true_peak : bool
        Measure the true peak (the costliest part; 7 x 48 taps per sample and channel while the
        signal could set a new maximum).
    """

    name = "loudness"
    channel_coupling = "joint"  # the programme's loudness, all channels weighed together
    reset_on_enable = False  # bypass pauses the measurement (A/B), it does not restart it
    params = (
        Param("layout", 0.0, len(LAYOUT_CHOICES) - 1.0, 0.0, step=1.0, smoothing_ms=0.0, choices=LAYOUT_CHOICES),
        Param("reset", 0.0, 1.0, 0.0, step=1.0, smoothing_ms=0.0, choices=("off", "on"), momentary=True),
    )

    def __init__(self, layout: str | None = None, channel_weights=None, true_peak: bool = True,
                 reset: float = 0.0) -> None:
        if layout is not None and layout not in LAYOUT_CHOICES:
            raise ValueError(f"unknown layout {layout!r} (layouts: {', '.join(LAYOUT_CHOICES)})")
        object.__setattr__(self, "_weights_arg", None if channel_weights is None else tuple(channel_weights))
        object.__setattr__(self, "_with_tp", bool(true_peak))
        object.__setattr__(self, "_st", None)
        object.__setattr__(self, "_table", None)
        object.__setattr__(self, "_in_use", 0)
        object.__setattr__(self, "_reset_pending", False)
        super().__init__(layout=layout or "auto", reset=reset)

    @staticmethod
    def _layout_weights(channels: int, choice: str) -> np.ndarray | None:
        """Weights of layout ``choice`` for ``channels`` channels; None where it does not fit."""
        if choice == "equal":
            return np.ones(channels)
        try:
            return L.channel_weights(channels, None if choice == "auto" else choice)
        except ValueError:
            return None

    def _prepare(self, spec: ProcessSpec) -> None:
        ch = spec.channels
        # every layout's weights for this channel count, so that a live change copies a row
        table = np.full((len(LAYOUT_CHOICES), ch), np.nan)
        for i, choice in enumerate(LAYOUT_CHOICES):
            w = self._layout_weights(ch, choice)
            if w is not None:
                table[i] = w
        if spec.channel_mask:  # a file that names its speakers: auto weighs them as named
            table[LAYOUT_CHOICES.index("auto")] = L.channel_weights_from_mask(ch, spec.channel_mask)
        choice = int(self._values[0])
        if self._weights_arg is None and np.isnan(table[choice, 0]):
            raise ParamError(self._misfit(choice, ch))
        # a copy: the meter's weights are overwritten in place by later layout changes
        w = L.resolve_weights(ch, None, self._weights_arg) if self._weights_arg is not None else table[choice].copy()
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_in_use", choice)
        object.__setattr__(self, "_st", L.allocate(ch, spec.sample_rate, w, true_peak=self._with_tp))

    def _param_changed(self, index: int) -> None:
        if index == 1:
            if self._values[1] >= 0.5:
                object.__setattr__(self, "_reset_pending", True)
            return
        st, table = self._st, self._table
        if st is None or self._weights_arg is not None:
            return
        choice = int(self._values[0])
        if not np.isnan(table[choice, 0]):
            st.weights[:] = table[choice]
            object.__setattr__(self, "_in_use", choice)

    @staticmethod
    def _misfit(choice: int, channels: int) -> str:
        name = LAYOUT_CHOICES[choice]
        return (f"loudness: layout {name!r} has {len(L.LAYOUTS[name])} channels, the audio {channels} "
                f"(auto or equal fit any count)")

    def check_value(self, index: int, value: float) -> None:
        if index == 0 and self._table is not None and self._weights_arg is None:
            choice = int(round(value))
            if np.isnan(self._table[choice, 0]):
                raise ParamError(self._misfit(choice, self._table.shape[1]))

    @property
    def layout_in_use(self) -> str:
        """The layout whose weights apply (``custom`` with ``channel_weights``)."""
        return "custom" if self._weights_arg is not None else LAYOUT_CHOICES[self._in_use]

    def reset(self) -> None:
        """Clear every reading (momentary, short-term, integrated, LRA, maxima, true peak)."""
        if self._st is not None:
            L.reset(self._st)

    def process(self, block: np.ndarray) -> None:
        """Meter ``block`` (channels, frames); the audio is left untouched."""
        self._require_prepared(block)
        if self._reset_pending:
            object.__setattr__(self, "_reset_pending", False)
            self._values[1] = 0.0  # a button: done, reads off again
            L.restart(self._st)
        L.run(self._st, block)

    # -- readings ---------------------------------------------------------------------------
    def _f(self, index: int) -> float:
        return float(self._st.fstate[index]) if self._st is not None else 0.0

    @property
    def channel_weights(self) -> tuple[float, ...]:
        """The weights in use (known after ``prepare``)."""
        return tuple(float(v) for v in self._st.weights) if self._st is not None else ()

    @property
    def momentary_lufs(self) -> float:
        """Momentary loudness (400 ms), LUFS."""
        return L.lufs(self._f(K.F_M))

    @property
    def short_term_lufs(self) -> float:
        """Short-term loudness (3 s), LUFS."""
        return L.lufs(self._f(K.F_S))

    @property
    def integrated_lufs(self) -> float:
        """Gated integrated loudness since the last reset, LUFS (``-inf`` before a block passes the gates)."""
        return float(self._st.fstate[K.F_I]) if self._st is not None else float("-inf")

    @property
    def lra_lu(self) -> float:
        """Loudness range since the last reset, LU (EBU Tech 3342)."""
        return self._f(K.F_LRA)

    @property
    def max_momentary_lufs(self) -> float:
        """Largest momentary loudness of a whole 400 ms block since the last reset, LUFS."""
        return L.lufs(self._f(K.F_M_MAX))

    @property
    def max_short_term_lufs(self) -> float:
        """Largest short-term loudness of a whole 3 s block since the last reset, LUFS."""
        return L.lufs(self._f(K.F_S_MAX))

    @property
    def true_peak_dbtp(self) -> float:
        """Largest true peak since the last reset, dBTP (``-inf`` before any signal)."""
        tp = self._f(K.F_TP)
        return float(20.0 * np.log10(tp)) if tp > 0.0 else float("-inf")

    def readings(self) -> dict[str, float]:
        """All readings in one dict (keys as the attribute names)."""
        if self._st is None:
            return {}
        return L.results(self._st)
