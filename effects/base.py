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
    The delay the effect adds, reported so the Chain and hosts can compensate it. Where it
    depends on the rate (look-ahead in milliseconds) it is exact once prepared; before that it is
    given at :data:`UNPREPARED_RATE` (48 kHz), so a host sizing its compensation early gets the
    delay it will see at the common rate rather than 0.

Parameters are declared as :class:`Param` with their unit in the id (``threshold_db``,
``attack_ms``, ``cutoff_hz``). ``effect.threshold_db = -20`` or ``effect.set("threshold_db", -20)``
checks the range and raises :class:`~hushbridge.errors.ParamError` naming it; the engine's
real-time path uses :meth:`Effect.set_index`, which clamps instead (controllers overshoot).
"""
from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

UNPREPARED_RATE = 48000  # the rate a rate-dependent latency is reported at before prepare

from hushbridge.dsp.kernels.util import bind, is_block
from hushbridge.errors import ParamError
from hushbridge.param import Param, Scale  # noqa: F401 - re-exported: Param is part of this contract

SAMPLE_RATES = (8000, 768000)  # the range of rates every effect is designed and tested for
MAX_BLOCK = 1 << 16
MAX_CHANNELS = 64


@dataclass(frozen=True)
class ProcessSpec:
    """What :meth:`Effect.prepare` gets: sample rate, largest block, channel count, and the
    speakers the channels feed where known (``channel_mask``, a WAV ``dwChannelMask``, from a
    file that names them; 0: not known, e.g. live input or a WAV without a mask, which may as
    well be six microphones as a 5.1 mix)."""

    sample_rate: int
    max_block_size: int
    channels: int
    channel_mask: int = 0

    def __post_init__(self) -> None:
        lo, hi = SAMPLE_RATES
        if not (isinstance(self.sample_rate, (int, np.integer)) and lo <= self.sample_rate <= hi):
            raise ValueError(f"sample_rate must be an int in {lo}..{hi}, got {self.sample_rate!r}")
        if not (isinstance(self.max_block_size, (int, np.integer)) and 1 <= self.max_block_size <= MAX_BLOCK):
            raise ValueError(f"max_block_size must be an int in 1..{MAX_BLOCK}, got {self.max_block_size!r}")
        if not (isinstance(self.channels, (int, np.integer)) and 1 <= self.channels <= MAX_CHANNELS):
            raise ValueError(f"channels must be an int in 1..{MAX_CHANNELS}, got {self.channels!r}")
        if not (isinstance(self.channel_mask, (int, np.integer)) and 0 <= self.channel_mask < 1 << 64):
            raise ValueError(f"channel_mask must be an int in 0..2**64-1, got {self.channel_mask!r}")

    def loudness_weights(self) -> np.ndarray:
        """BS.1770 weight of each channel (1.0 front, 1.41 surround, 0.0 LFE) of the layout the
        mask names; every channel 1.0 where no mask is known or the weights would leave none."""
        from hushbridge.dsp import loudness as L

        if not self.channel_mask:
            return np.ones(self.channels)  # never ignore a channel nobody said is an LFE
        w = L.channel_weights_from_mask(self.channels, self.channel_mask)
        return w if np.any(w > 0.0) else np.ones(self.channels)

    def detector_keys(self) -> np.ndarray:
        """1.0 for each channel a linked dynamics detector listens to, 0.0 for a channel the
        mask names as the LFE: its rumble and explosions would pump the dialogue the gain also
        applies to."""
        return (self.loudness_weights() > 0.0).astype(np.float64)


def check_block(block: np.ndarray, spec: ProcessSpec, who: str) -> None:
    """Raise ValueError unless ``block`` is a 2-D ``(spec.channels, frames)`` array."""
    shape = getattr(block, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"{who}: process() takes a (channels, frames) float32 block, got shape {shape}")
    if shape[0] != spec.channels:
        hint = " (a (frames, channels) array? pass its .T)" if shape[1] == spec.channels else ""
        raise ValueError(f"{who}: block has {shape[0]} channels, prepared for {spec.channels}{hint}")



@functools.lru_cache(maxsize=None)
def _init_options(cls: type) -> frozenset[str]:
    """The keyword options ``cls(...)`` takes besides its parameters (denoise's ``resample_quality``)."""
    import inspect

    try:
        names = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return frozenset()
    params = {p.id for p in getattr(cls, "params", ())}
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(n for n, p in names.items()
                     if p.kind in named and n != "self" and n not in params and not n.startswith("_"))


def _constructing(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap an effect class's ``__init__`` so that :meth:`Effect.__setattr__` knows the
    constructor is running: it may create attributes of its own (counters, options)."""
    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kw: Any) -> None:
        depth = self.__dict__.get("_init_depth", 0)
        object.__setattr__(self, "_init_depth", depth + 1)
        try:
            init(self, *args, **kw)
        finally:
            object.__setattr__(self, "_init_depth", depth)

    wrapped._constructing = True  # type: ignore[attr-defined]
    return wrapped


def _did_you_mean(name: str, params: Any) -> str:
    """The hint for a parameter name that does not exist: the likeliest one meant, else them all."""
    if name == "bypass":
        return "; bypass is the chain's: chain.set_bypass(effect_id, True)"
    low = name.lower()
    near = ([p for p in params if p.lower() == low] or [p for p in params if p.lower().startswith(low + "_")]
            or difflib.get_close_matches(name, list(params), 1, 0.6))
    if near:
        return f"; did you mean {near[0]!r}?"
    return f" (parameters: {', '.join(params)})"


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
    #: How the effect's channels depend on each other, for a Chain run per channel (separate
    #: microphones): ``"linked"`` (the channels share state, such as a dynamics detector that
    #: hears the loudest: each channel gets an instance of its own), ``"independent"`` (each
    #: channel is processed on its own already: it runs on all channels as it is) or ``"joint"``
    #: (it works on the channels together by nature, as an automixer or a programme meter: it runs
    #: on all channels as it is). An effect that does not say is split, which is never wrong.
    channel_coupling: ClassVar[str] = "linked"
    #: parameters that every channel of a per-channel Chain must share: set-up parameters that
    #: size the effect or set its latency at ``prepare`` (a look-ahead): no values per channel
    shared_params: ClassVar[frozenset[str]] = frozenset()
    #: of a ``"joint"`` effect (one instance for all channels), the parameters that have a value
    #: per channel inside it (the automixer's ``weight_db``): its ``_param_changed`` reads
    #: :meth:`channel_value` (``/hb/<id>@<n>/<param>``, :meth:`set_channel`)
    channel_params: ClassVar[frozenset[str]] = frozenset()
    #: instances that take every parameter change this one takes (a per-channel Chain's copies)
    _followers: tuple[Effect, ...] = ()
    #: (channels, params) each channel's own values in a per-channel Chain (NaN: none), which a
    #: change to this effect's parameter clears; the Chain's array, None elsewhere
    _own: np.ndarray | None = None
    #: the share of the chain's channels this instance runs (a per-channel Chain's instances run
    #: 1 of N): what a per-block time budget divides by (the denoiser's overload fallback)
    _channel_share: float = 1.0
    _strict_attributes: ClassVar[bool] = True

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._index = {p.id: i for i, p in enumerate(cls.params)}
        # hushbridge's own effects refuse, once constructed, an attribute that is not theirs
        # (limiter.ceiling = -6 would set nothing audible); a user's subclass may keep attributes
        # of its own (set in _prepare, say), so there only a near miss of a parameter is refused
        cls._strict_attributes = cls.__module__.startswith("hushbridge.")
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_constructing", False):
            cls.__init__ = _constructing(init)  # type: ignore[method-assign]

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
            option = ""
            if isinstance(pid, str) and not pid.startswith("_") and pid in _init_options(type(self)):
                # a constructor option (denoise's resample_quality): fixed when the effect is made
                option = (f"; {pid} is an option of the effect, given when it is made in Python "
                          f"({type(self).__name__}({pid}=...)), not a parameter a preset, --set or OSC changes")
                if callable(getattr(self, f"set_{pid}", None)):  # one a preset sets up (denoise's link)
                    option = (f"; {pid} is a set-up option of the effect: a preset's {pid} = \"...\" or "
                              f"--set {self.name}.{pid}=... before the stream starts, not a parameter changed live")
            raise ParamError(f"{self.name} has no parameter {pid!r} (parameters: {valid}){option}") from None

    def get(self, pid: str) -> float:
        self.param(pid)
        return float(self._values[self._index[pid]])

    def set(self, pid: str, value: float) -> None:
        """Set a parameter, checking its range (raises ParamError)."""
        channel = self.__dict__.get("_channel_instance")
        if channel is not None:  # set through its chain's effect, it would be undone at the next prepare
            raise ParamError(f"{self.name}: this is channel {channel + 1}'s instance of a per-channel chain's {self.name}, "
                             "made again at every prepare: set the chain's effect (chain[id]) for every channel, "
                             f"or chain.set_channel(id, {channel + 1}, {pid!r}, value) for this one")
        p = self.param(pid)
        self.set_index(self._index[pid], p.check(value, self.name))

    def set_index(self, index: int, value: float) -> None:
        """Set parameter ``index`` to ``value``, clamped. Real-time safe: called at block start."""
        self._values[index] = self.params[index].clamp(value)
        own = self._own
        if own is not None:  # every channel takes it again
            for c in range(own.shape[0]):
                own[c, index] = np.nan
        self._param_changed(index)
        for follower in self._followers:
            follower.set_index(index, value)

    def channel_value(self, channel: int, index: int) -> float:
        """Parameter ``index``'s value for ``channel`` (0-based): its own, else the effect's.
        Real-time safe."""
        own = self._own
        if own is not None and channel < own.shape[0]:
            v = own[channel, index]
            if v == v:
                return float(v)
        return float(self._values[index])

    def set_channel(self, channel: int, pid: str, value: float | str) -> None:
        """Channel ``channel``'s (1, 2, ...) own value of ``pid``, one of :attr:`channel_params`
        of an effect that works on all channels together (the automixer's ``weight_db``). In a
        Chain use :meth:`Chain.set_channel`, which also gives split effects values per channel."""
        p = self.param(pid)
        if pid not in self.channel_params:
            if self.channel_coupling == "joint":
                per = ", ".join(sorted(self.channel_params))
                raise ParamError(f"{self.name} works on all channels together; it has no settings per channel"
                                 + (f" but {per}" if per else ""))
            raise ParamError(f"{self.name}: a value of {pid} per channel needs a Chain run per channel "
                             f"(Chain(..., per_channel=True).set_channel(id, channel, {pid!r}, value))")
        if isinstance(channel, (bool, np.bool_)) or not isinstance(channel, (int, np.integer)) or channel < 1:
            raise ParamError(f"{self.name}: channels are whole numbers from 1, got {channel!r}")
        spec = self._spec
        if spec is not None and channel > spec.channels:
            raise ParamError(f"{self.name}: channel {channel} is not in the stream ({spec.channels} channels)")
        v = p.check(value, f"{self.name}@{channel}")
        own = self._own
        if own is None or own.shape[0] < channel:
            grown = np.full((max(channel, spec.channels if spec else 0), len(self.params)), np.nan)
            if own is not None:
                grown[: own.shape[0]] = own
            object.__setattr__(self, "_own", grown)
        self._own[channel - 1, self._index[pid]] = v
        self._channel_changed(channel - 1, self._index[pid])

    def _channel_changed(self, channel: int, index: int) -> None:
        """Channel ``channel``'s (0-based) own value of parameter ``index`` (one of
        :attr:`channel_params`) changed. RT-safe. The default reacts as to any change."""
        self._param_changed(index)

    def channel_readings(self, attr: str, out: np.ndarray) -> None:
        """Write each channel's meter ``attr`` into ``out[1 + c]``, where one instance measures
        every channel apart (the automixer's gain per microphone); leave ``out`` as it is
        otherwise. Real-time safe (the audio thread's meters)."""

    def _carry_counters(self, previous: Effect) -> None:
        """Take over what ``previous`` counted (an instance a per-channel Chain's ``prepare``
        replaces with this one), so that counters read by meters never go back."""

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
            # (in a user's own subclass only a near miss: it may keep attributes of its own)
            strict = self._strict_attributes and not self.__dict__.get("_init_depth", 0)
            if strict or ([p for p in index if p.lower() == name.lower()]
                          or difflib.get_close_matches(name, index, 1, 0.8)):
                raise AttributeError(f"{type(self).__name__} has no parameter {name!r}{_did_you_mean(name, index)}")
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        # the compiled entry point cannot be pickled (multiprocessing, joblib): bound again on load
        state = dict(self.__dict__)
        state["_bound"] = None
        state.pop("_followers", None)  # a copy follows nobody
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
