"""A declared parameter: range, default, scale for 0..1 faders, display string (:class:`Param`).

Kept apart from :mod:`hushbridge.effects` (which loads numba and every effect) because the OSC
receive process (:mod:`hushbridge.control.osc_process`) clamps and scales values with it.
Import it from :mod:`hushbridge.effects.base` or :mod:`hushbridge.effects` as before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from hushbridge.errors import ParamError

Scale = Literal["linear", "log", "db"]

_UNITS = {"_db": "dB", "_dbtp": "dBTP", "_ms": "ms", "_s": "s", "_hz": "Hz", "_lufs": "LUFS", "_pct": "%"}


@dataclass(frozen=True)
class Param:
    """A declared parameter.

    Parameters
    ----------
    id : str
        OSC-safe name ending in its unit (``_db``, ``_ms``, ``_hz``...); ``ratio`` and ``mix`` have none.
    min, max, default : float
        Range and default value, in the unit of the id.
    scale : {"linear", "log", "db"}
        How ``/norm`` (0..1 faders) maps onto the range. ``log`` needs ``min > 0``.
    smoothing_ms : float
        Ramp time for changes, so automation never zips or clicks.
    step : float, optional
        Quantisation for discrete parameters (``1`` for counts, switches).
    choices : tuple of str, optional
        Names for the integer values ``0..len-1`` of a discrete parameter (shown by ``display``).
    silent_at_min : bool
        The minimum of a dB parameter means no signal at all (a gain's -96 dB mutes): shown as
        ``-inf dB``.
    momentary : bool
        A button, not a switch: setting it does something once (e.g. a meter's reset); it reads
        as its default again afterwards and presets do not keep it.
    """

    id: str
    min: float
    max: float
    default: float
    scale: Scale = "linear"
    smoothing_ms: float = 20.0
    step: float | None = None
    choices: tuple[str, ...] = ()
    silent_at_min: bool = False
    momentary: bool = False

    def __post_init__(self) -> None:
        if not self.min <= self.default <= self.max:
            raise ValueError(f"{self.id}: default {self.default} outside [{self.min}, {self.max}]")
        if self.scale == "log" and self.min <= 0:
            raise ValueError(f"{self.id}: log scale needs min > 0")

    @property
    def unit(self) -> str:
        for suffix, unit in _UNITS.items():
            if self.id.endswith(suffix):
                return unit
        return ""

    def check(self, value: Any, owner: str = "") -> float:
        """Return ``value`` as float, or raise ParamError naming the range."""
        where = f"{owner}.{self.id}" if owner else self.id
        if isinstance(value, str) and self.choices:
            index = self.choice_index(value)
            if index is not None:
                return float(index)
            raise ParamError(f"{where} must be one of {', '.join(repr(c) for c in self.choices)} "
                             f"(or 0..{len(self.choices) - 1}), got {value!r}")
        try:
            v = float(value)
        except (TypeError, ValueError) as e:
            raise ParamError(f"{where} must be a number, got {value!r}") from e
        if not math.isfinite(v) or not self.min <= v <= self.max:
            unit = f" {self.unit}" if self.unit else ""
            raise ParamError(f"{where} must be in [{self.min:g}, {self.max:g}]{unit}, got {value!r}")
        return self.quantize(v)

    def choice_index(self, name: str) -> int | None:
        """The index of the choice called ``name`` (any case; its first word will do, such as
        "24" for "24 dB/oct"), or None."""
        key = name.strip().lower()
        for i, c in enumerate(self.choices):
            if key in (c.lower(), c.split()[0].lower()):
                return i
        return None

    def clamp(self, value: float) -> float:
        """Clamp to the range (NaN becomes the default). For controllers, which overshoot."""
        v = float(value)
        if math.isnan(v):
            return self.default
        return self.quantize(min(self.max, max(self.min, v)))

    def quantize(self, v: float) -> float:
        if self.step:
            # half a step goes up (round() goes to even: a bypass's /norm 0.5 was off, 0.5 of
            # a two-step slope the first)
            v = self.min + math.floor((v - self.min) / self.step + 0.5) * self.step
            v = min(self.max, max(self.min, v))
        return v

    def to_norm(self, value: float) -> float:
        """Map a value to 0..1 through the parameter's scale."""
        if self.max == self.min:
            return 0.0
        if self.scale == "log":
            return math.log(value / self.min) / math.log(self.max / self.min)
        return (value - self.min) / (self.max - self.min)

    def from_norm(self, norm: float) -> float:
        """Map 0..1 (clamped) to a value through the parameter's scale."""
        n = min(1.0, max(0.0, float(norm))) if math.isfinite(norm) else 0.0
        if self.scale == "log":
            return self.clamp(self.min * (self.max / self.min) ** n)
        return self.clamp(self.min + n * (self.max - self.min))

    def display(self, value: float) -> str:
        """Human string for a value, e.g. ``"-18.0 dB"``, ``"80 Hz"``, ``"3.00"``."""
        if self.choices:
            i = int(round(value - self.min))
            return self.choices[i] if 0 <= i < len(self.choices) else f"{value:g}"
        unit = self.unit
        value = float(value) + 0.0  # -0.0 reads as 0
        if unit in ("dB", "dBTP", "LUFS", "ms") and round(value, 1) == 0.0:
            value = 0.0  # and so does -0.04: "-0.0 dB" is not a level
        if unit == "Hz":
            text = f"{value / 1000:.2f} kHz" if value >= 1000 else f"{value:.1f} Hz"
            return text
        if unit in ("dB", "dBTP", "LUFS"):
            if self.silent_at_min and value <= self.min:
                return f"-inf {unit}"
            return f"{value:.1f} {unit}"
        if unit == "ms":
            return f"{value:.1f} ms"
        if unit == "s":
            return f"{value:.2f} s"
        if unit == "%":
            return f"{value:.3g} %"
        if self.step == 1:
            return f"{int(round(value))}"
        if self.id == "ratio":
            return f"{value:.1f}:1"
        if self.id == "mix":
            return f"{value * 100:.0f} %"
        return f"{value:.2f}"

__all__ = ["Param", "Scale"]
