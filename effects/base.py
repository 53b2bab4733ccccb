"""The Effect contract: ProcessSpec, declared Params and the prepare / process / reset lifecycle.

Every processor a user sees (and the :class:`~hushbridge.effects.chain.Chain` itself) follows it:

``prepare(spec)``
    Validate the spec, allocate every buffer, compute coefficients, then ``reset()``.
    The only place that allocates. Idempotent for an equal spec.
``process(block)``
    ``block`` is ``(channels, frames)`` float32, C-contiguous, processed **in place**.
    Real-time safe: no allocation, no locks, no I/O. ``frames <= spec.max_block_size``.
``reset()``
    Clear delay lines, envelopes and smoothers (transport jump, seek); keep parameters.
``latency_samples``
    The delay the effect adds, reported so the Chain and hosts can compensate it.

Parameters are declared as :class:`Param` with their unit in the id (``threshold_db``,
``attack_ms``, ``cutoff_hz``). ``effect.threshold_db = -20`` or ``effect.set("threshold_db", -20)``
checks the range and raises :class:`~hushbridge.errors.ParamError` naming it; the engine's
real-time path uses :meth:`Effect.set_index`, which clamps instead (controllers overshoot).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np

from hushbridge.dsp.kernels.util import bind, is_block
from hushbridge.errors import ParamError

Scale = Literal["linear", "log", "db"]

SAMPLE_RATES = (8000, 768000)  # the range of rates every effect is designed and tested for
MAX_BLOCK = 1 << 16
MAX_CHANNELS = 64

_UNITS = {"_db": "dB", "_dbtp": "dBTP", "_ms": "ms", "_hz": "Hz", "_lufs": "LUFS", "_pct": "%"}


@dataclass(frozen=True)
class ProcessSpec:
    """What :meth:`Effect.prepare` gets: sample rate, largest block, channel count."""

    sample_rate: int
    max_block_size: int
    channels: int

    def __post_init__(self) -> None:
        lo, hi = SAMPLE_RATES
        if not (isinstance(self.sample_rate, (int, np.integer)) and lo <= self.sample_rate <= hi):
            raise ValueError(f"sample_rate must be an int in {lo}..{hi}, got {self.sample_rate!r}")
        if not (isinstance(self.max_block_size, (int, np.integer)) and 1 <= self.max_block_size <= MAX_BLOCK):
            raise ValueError(f"max_block_size must be an int in 1..{MAX_BLOCK}, got {self.max_block_size!r}")
        if not (isinstance(self.channels, (int, np.integer)) and 1 <= self.channels <= MAX_CHANNELS):
            raise ValueError(f"channels must be an int in 1..{MAX_CHANNELS}, got {self.channels!r}")


def check_block(block: np.ndarray, spec: ProcessSpec, who: str) -> None:
    """Raise ValueError unless ``block`` is a 2-D ``(spec.channels, frames)`` array."""
    shape = getattr(block, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{who}: process() takes a (channels, frames) float32 block, got shape {shape}")
    if shape[0] != spec.channels:
        hint = " (a (frames, channels) array? pass its .T)" if shape[1] == spec.channels else ""
        raise ValueError(f"{who}: block has {shape[0]} channels, prepared for {spec.channels}{hint}")


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
            v = self.min + round((v - self.min) / self.step) * self.step
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
        if unit == "Hz":
            text = f"{value / 1000:.2f} kHz" if value >= 1000 else f"{value:.1f} Hz"
            return text
        if unit in ("dB", "dBTP", "LUFS"):
            if self.silent_at_min and value <= self.min:
                return f"-inf {unit}"
            return f"{value:.1f} {unit}"
        if unit == "ms":
            return f"{value:.1f} ms"
        if unit == "%":
            return f"{value:.3g} %"
        if self.step == 1:
            return f"{int(round(value))}"
        if self.id == "ratio":
            return f"{value:.1f}:1"
        if self.id == "mix":
            return f"{value * 100:.0f} %"
        return f"{value:.2f}"


class Effect:
    """Base class of every processor. Subclasses declare ``name`` and ``params`` and implement
    ``_prepare``, ``process`` and ``reset`` (and ``_param_changed`` to react to parameter changes).

    An effect whose whole per-block work is one ``@njit`` kernel implements :meth:`kernel`
    instead of ``process``: the base class then calls the kernel through its compiled entry
    point, and a :class:`~hushbridge.effects.Chain` fuses runs of such effects into one
    compiled call per block (see :mod:`hushbridge.effects.fused`).

    Calling an effect renders a whole signal offline (see :func:`hushbridge.effects.render`):

    >>> from hushbridge.effects import Gain
    >>> import numpy as np
    >>> Gain(gain_db=-6.0)(np.ones(4, np.float32), 48000).round(3)
    array([0.501, 0.501, 0.501, 0.501], dtype=float32)
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    _index: ClassVar[dict[str, int]] = {}
    #: True while the next block needs :meth:`process` itself rather than the bare kernel (for
    #: instance during a crossfade that Python sets up); read by a Chain at every block.
    python_needed: bool = False
    #: Whether a Chain resets the effect when it comes back from bypass (its state went stale).
    #: A meter keeps its programme measurement instead.
    reset_on_enable: ClassVar[bool] = True

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._index = {p.id: i for i, p in enumerate(cls.params)}

    def __init__(self, **values: float) -> None:
        object.__setattr__(self, "_values", np.array([p.default for p in self.params], dtype=np.float64))
        object.__setattr__(self, "_spec", None)
        object.__setattr__(self, "_bound", None)
        for key, value in values.items():
            self.set(key, value)

    # -- parameters -------------------------------------------------------------------------
    def param(self, pid: str) -> Param:
        """The declared :class:`Param` called ``pid`` (ParamError lists the valid ones)."""
        try:
            return self.params[self._index[pid]]
        except KeyError:
            valid = ", ".join(p.id for p in self.params) or "none"
            raise ParamError(f"{self.name} has no parameter {pid!r} (parameters: {valid})") from None

    def get(self, pid: str) -> float:
        self.param(pid)
        return float(self._values[self._index[pid]])

    def set(self, pid: str, value: float) -> None:
        """Set a parameter, checking its range (raises ParamError)."""
        p = self.param(pid)
        self.set_index(self._index[pid], p.check(value, self.name))

    def set_index(self, index: int, value: float) -> None:
        """Set parameter ``index`` to ``value``, clamped. Real-time safe: called at block start."""
        self._values[index] = self.params[index].clamp(value)
        self._param_changed(index)

    def check_value(self, index: int, value: float) -> None:
        """Refuse (ParamError) a value of parameter ``index`` that is in its range but cannot
        apply to this instance as prepared (e.g. a channel layout for another channel count).
        Called on the control side before a change is handed to the audio thread."""

    def values(self) -> dict[str, float]:
        return {p.id: float(v) for p, v in zip(self.params, self._values)}

    def __getattr__(self, name: str) -> float:
        index = type(self)._index
        if name in index:
            return float(self._values[index[name]])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        index = type(self)._index
        if name in index:
            self.set(name, value)
            return
        if not name.startswith("_") and name not in self.__dict__ and not hasattr(type(self), name):
            # effect.makeup_Db = 6 would otherwise set nothing audible, silently
            near = [p for p in index if p.lower() == name.lower()] or difflib.get_close_matches(name, index, 1, 0.8)
            if near:
                raise AttributeError(f"{type(self).__name__} has no parameter {name!r}; did you mean {near[0]!r}?")
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        # the compiled entry point cannot be pickled (multiprocessing, joblib): bound again on load
        state = dict(self.__dict__)
        state["_bound"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if state.get("_spec") is not None and state.get("_bound", None) is None:
            binding = self.kernel()
            object.__setattr__(self, "_bound", bind(binding[0], *binding[1]) if binding is not None else None)

    def __repr__(self) -> str:
        vals = " ".join(f"{p.id}={v:g}" for p, v in zip(self.params, self._values))
        return f"<{type(self).__name__} {vals} at {id(self):#x}>".replace("  ", " ")

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def spec(self) -> ProcessSpec | None:
        return self._spec

    @property
    def latency_samples(self) -> int:
        return 0

    def prepare(self, spec: ProcessSpec) -> None:
        """Allocate for ``spec`` and reset. Cheap when called again with an equal spec."""
        if not isinstance(spec, ProcessSpec):
            raise TypeError(f"prepare() needs a ProcessSpec, got {spec!r}")
        if spec != self._spec:
            self._prepare(spec)
            object.__setattr__(self, "_spec", spec)
            binding = self.kernel()
            object.__setattr__(self, "_bound", bind(binding[0], *binding[1]) if binding is not None else None)
            for i in range(len(self.params)):
                self._param_changed(i)
        self.reset()

    def _prepare(self, spec: ProcessSpec) -> None:
        """Allocate buffers for ``spec``. Subclasses override."""

    @property
    def non_realtime(self) -> bool:
        """True while rendering offline (files, ``effect(audio, sr)``): there is no deadline, so
        effects must not trade quality for time (e.g. a model's overload fallback stays off)."""
        return bool(self.__dict__.get("_non_realtime", False))

    def set_non_realtime(self, non_realtime: bool) -> None:
        """Declare offline (True) or live (False) use, as JUCE's ``setNonRealtime``."""
        object.__setattr__(self, "_non_realtime", bool(non_realtime))

    def _param_changed(self, index: int) -> None:
        """React to a new value of parameter ``index`` (set new smoothing targets). RT-safe."""

    def kernel(self) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
        """``(kernel, args)`` when processing a block is exactly ``kernel(block, *args)``: an
        ``@njit`` function defined at module level and the state arrays (and constant scalars)
        it runs on. Asked right after ``_prepare`` (``spec`` is set); the arrays must stay the same objects until
        the next ``_prepare``. None (the default) when ``process`` does the work in Python.

        A class that overrides ``process`` is run through its ``process`` (never fused), unless
        that class also defines ``python_needed``, true for every block its ``process`` is not
        exactly the kernel."""
        return None

    def process(self, block: np.ndarray) -> None:
        """Process ``block`` (channels, frames) float32 in place. The default runs :meth:`kernel`."""
        bound = self._bound
        spec = self._spec
        if bound is not None and is_block(block) and block.shape[0] == spec.channels \
                and block.shape[1] <= spec.max_block_size:
            bound[0](block, *bound[1])  # compiled entry point: no dispatcher type resolution
            return
        self._require_prepared(block)
        binding = self.kernel()
        if binding is None:
            raise NotImplementedError(f"{type(self).__name__} implements neither kernel() nor process()")
        binding[0](block, *binding[1])

    def reset(self) -> None:
        """Clear state; parameters stay. Subclasses override."""

    def _require_prepared(self, block: np.ndarray | None = None) -> ProcessSpec:
        """The prepared spec; with ``block``, also check that it is a float (spec.channels, frames)
        block of at most spec.max_block_size frames: the kernels index state arrays by channel and
        fill buffers of max_block_size frames, so a wider or longer block would write past them,
        and an integer block would take the float results truncated."""
        spec = self._spec
        if spec is None:
            raise RuntimeError(f"{self.name}: call prepare(spec) before process()")
        if block is not None:
            check_block(block, spec, self.name)
            if not np.issubdtype(block.dtype, np.floating):
                raise TypeError(f"{self.name}: process() takes a float32 block, got {block.dtype}")
            if block.shape[1] > spec.max_block_size:
                raise ValueError(f"{self.name}: block of {block.shape[1]} frames exceeds the prepared max_block_size "
                                 f"{spec.max_block_size} (a Chain splits long blocks; a bare effect does not)")
        return spec

    # -- offline convenience ----------------------------------------------------------------
    def __call__(self, audio: np.ndarray, sample_rate: int, block_size: int = 4096) -> np.ndarray:
        """Render ``audio`` offline and return the latency-compensated result (same shape)."""
        from hushbridge.effects.render import render

        return render(self, audio, sample_rate, block_size=block_size)


def ramp_step(spec: ProcessSpec, smoothing_ms: float) -> float:
    """Per-sample step of a linear 0->1 ramp lasting ``smoothing_ms`` (at least one sample)."""
    return 1.0 / max(1.0, smoothing_ms * 1e-3 * spec.sample_rate)
