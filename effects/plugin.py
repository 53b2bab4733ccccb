"""plugin: any pedalboard plugin inside a Chain, with its parameters as declared Params.

Wrap a built-in (``pedalboard.Reverb()``, ``Chorus``, ``Compressor``...) or an external plugin
(``pedalboard.load_plugin("/x.vst3")``, VST3 or Audio Unit)::

    >>> import pedalboard
    >>> from hushbridge.effects import Chain
    >>> from hushbridge.effects.plugin import PluginEffect
    >>> verb = PluginEffect(pedalboard.Reverb(), room_size=0.3)
    >>> [p.id for p in verb.params][:3]
    ['damping', 'dry_level', 'freeze_mode']
    >>> chain = Chain([verb])                 # OSC: /hb/plugin/room_size 0.5
    >>> PluginEffect.from_preset(plugin="Chorus").name
    'plugin'

Every wrapped plugin gets its own subclass of :class:`PluginEffect` (cached per built-in type,
one per external plugin instance) whose ``params`` tuple is derived from the plugin, so the
engine's parameter table, OSC and presets see them like any other effect's:

- external plugins: from pedalboard's ``plugin.parameters`` (:class:`pedalboard.AudioProcessorParameter`):
  range ``min_value..max_value``, step, default = the value at wrap time, unit from ``label``
  (``dB`` -> ``_db``, ``Hz`` -> ``_hz``, ``ms`` -> ``_ms`` added to the id when missing); boolean
  and choice parameters become ``step=1`` with ``choices``. Ids are OSC-safe (``[a-z][a-z0-9_]*``).
- built-ins: pedalboard exposes no ranges, so they come from :data:`BUILTIN_RANGES` (the ranges
  pedalboard and JUCE accept, narrowed to musical values), defaults from the plugin's constructor.
  Enum properties (``LadderFilter.mode``) become choices, booleans 0/1. Set-up properties that
  change the plugin's latency (``BrickwallLimiter.lookahead_ms``, ``true_peak``) are not
  live parameters: configure the plugin before wrapping it.

Processing calls ``plugin.process(block, sample_rate, buffer_size=max_block_size, reset=False)``,
so the plugin keeps its state across blocks. Pedalboard compensates latency itself by returning
fewer samples at the start of a stream; the wrapper right-aligns what comes back and pads the
head with silence, which restores the plugin's true (delayed) output, and reports that delay as
:attr:`PluginEffect.latency_samples`, measured in ``prepare`` (silence is fed to the freshly reset
plugin until output appears), so the Chain and hosts compensate it exactly. Pedalboard reads a
block of no more frames than channels as frames-first, which reconfigures a plugin with latency
mid-stream; such a multichannel plugin is fed through a hold of ``channels`` frames
(:attr:`PluginEffect.hold_samples`, part of the reported latency), so it only ever sees longer
blocks. ``PitchShift`` is refused: streamed block by block it returns only silence.

.. note::
   A plugin effect is **not allocation-free**: pedalboard allocates its output array (and may
   take a mutex) on every call. Its real-time safety is the plugin's own. Plugins that change
   their latency while running, or return short blocks mid-stream (``MP3Compressor``,
   ``GSMFullRateCompressor``), are padded with silence there and counted in
   :attr:`PluginEffect.short_blocks`.

Presets name it ``effect = "plugin"`` with ``plugin = "Reverb"`` (a pedalboard class name) or
``path = "/x.vst3"`` (``plugin_name = "..."`` picks one plugin of a multi-plugin bundle), and
``params = {...}`` as usual.
"""
from __future__ import annotations

import enum
import re
from typing import Any, ClassVar

import numpy as np

from hushbridge.effects.base import Effect, Param, ProcessSpec
from hushbridge.errors import ChainError

# name -> (min, max) of the built-ins' float properties; per class where pedalboard differs.
BUILTIN_RANGES: dict[str, tuple[float, float]] = {
    "gain_db": (-60.0, 24.0),
    "threshold_db": (-60.0, 0.0),
    "ratio": (1.0, 20.0),
    "attack_ms": (0.1, 500.0),
    "release_ms": (1.0, 5000.0),
    "cutoff_frequency_hz": (10.0, 20000.0),
    "cutoff_hz": (10.0, 20000.0),
    "centre_frequency_hz": (20.0, 20000.0),
    "q": (0.1, 10.0),
    "room_size": (0.0, 1.0),
    "damping": (0.0, 1.0),
    "wet_level": (0.0, 1.0),
    "dry_level": (0.0, 1.0),
    "width": (0.0, 1.0),
    "freeze_mode": (0.0, 1.0),
    "centre_delay_ms": (1.0, 100.0),
    "depth": (0.0, 1.0),
    "feedback": (-0.95, 0.95),
    "mix": (0.0, 1.0),
    "rate_hz": (0.01, 99.0),
    "delay_seconds": (0.0, 5.0),
    "drive_db": (0.0, 60.0),
    "drive": (1.0, 10.0),
    "resonance": (0.0, 1.0),
    "bit_depth": (1.0, 32.0),
    "vbr_quality": (0.0, 10.0),
    "semitones": (-24.0, 24.0),
    "target_sample_rate": (1000.0, 192000.0),
    "ceiling_db": (-24.0, 0.0),
    "Gain.gain_db": (-60.0, 24.0),
    "PeakFilter.gain_db": (-24.0, 24.0),
    "LowShelfFilter.gain_db": (-24.0, 24.0),
    "HighShelfFilter.gain_db": (-24.0, 24.0),
    "NoiseGate.threshold_db": (-100.0, 0.0),
    "NoiseGate.ratio": (1.0, 100.0),
    "Delay.feedback": (0.0, 1.0),
}
# properties that are set-up choices changing the plugin's latency: not live parameters
_SETUP_ONLY = {"BrickwallLimiter.lookahead_ms", "BrickwallLimiter.true_peak"}
_UNIT_SUFFIX = {"db": "_db", "dbfs": "_db", "hz": "_hz", "ms": "_ms"}
_RESERVED = {"bypass", "norm"}
# a plugin that has returned nothing after this many seconds of silence is an error
_MAX_PROBE_SECONDS = 10.0


def _pedalboard() -> Any:
    try:
        import pedalboard
    except ImportError as e:  # pragma: no cover - pedalboard is a dependency
        raise ChainError("the plugin effect needs pedalboard (pip install pedalboard)") from e
    return pedalboard


def osc_id(name: str, unit: str | None = None, taken: set[str] | None = None) -> str:
    """An OSC-safe parameter id from a plugin's parameter name, with the unit suffix when known.

    >>> osc_id("Delay Time", "ms")
    'delay_time_ms'
    >>> osc_id("2nd Gain (dB)")
    'p_2nd_gain_db'
    """
    pid = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "param"
    if not pid[0].isalpha():
        pid = f"p_{pid}"
    suffix = _UNIT_SUFFIX.get((unit or "").strip().lower())
    if suffix and not pid.endswith(suffix):
        pid += suffix
    if pid in _RESERVED:
        pid = f"{pid}_param"
    if taken is not None:
        base, n = pid, 2
        while pid in taken:
            pid = f"{base}_{n}"
            n += 1
        taken.add(pid)
    return pid


class _Binding:
    """How one Param reaches the plugin: attribute name and value conversion."""

    __slots__ = ("attr", "kind", "options")

    def __init__(self, attr: str, kind: str, options: tuple[Any, ...] = ()) -> None:
        self.attr = attr
        self.kind = kind  # "float", "bool", "choice"
        self.options = options

    def to_plugin(self, value: float) -> Any:
        if self.kind == "bool":
            return value >= 0.5
        if self.kind == "choice":
            return self.options[int(round(value))]
        return float(value)

    def from_plugin(self, value: Any) -> float:
        if self.kind == "bool":
            return 1.0 if value else 0.0
        if self.kind == "choice":
            for i, opt in enumerate(self.options):
                if opt == value or str(opt) == str(value):
                    return float(i)
            return 0.0
        return float(value)


def _builtin_params(plugin: Any) -> tuple[tuple[Param, ...], tuple[_Binding, ...]]:
    """Params of a pedalboard built-in, from its properties and :data:`BUILTIN_RANGES`."""
    cls = type(plugin)
    cname = cls.__name__
    try:
        defaults = cls()
    except (TypeError, ValueError, RuntimeError):  # e.g. Convolution needs an impulse response
        defaults = plugin
    params: list[Param] = []
    binds: list[_Binding] = []
    taken: set[str] = set()
    for attr in sorted(dir(cls)):
        if attr.startswith("_") or attr in ("is_effect", "is_instrument") or f"{cname}.{attr}" in _SETUP_ONLY:
            continue
        if not isinstance(getattr(cls, attr, None), property):
            continue
        default = getattr(defaults, attr)
        pid = osc_id(attr, taken=taken)
        if isinstance(default, bool):
            params.append(Param(pid, 0.0, 1.0, float(default), step=1.0, smoothing_ms=0.0, choices=("off", "on")))
            binds.append(_Binding(attr, "bool"))
        elif isinstance(default, (int, float)) and not isinstance(default, enum.Enum) and not hasattr(default, "__members__"):
            lo, hi = BUILTIN_RANGES.get(f"{cname}.{attr}", BUILTIN_RANGES.get(attr, _guess_range(attr, float(default))))
            for v in (float(default), float(getattr(plugin, attr))):  # an instance set beyond: widened
                lo, hi = min(lo, v), max(hi, v)
            params.append(Param(pid, lo, hi, float(default), smoothing_ms=0.0))
            binds.append(_Binding(attr, "float"))
        elif hasattr(type(default), "__members__"):  # pybind11 or Python enum
            members = sorted(type(default).__members__.values(), key=int)
            options = tuple(members)
            names = tuple(m.name for m in members)
            b = _Binding(attr, "choice", options)
            params.append(Param(pid, 0.0, float(len(options) - 1), b.from_plugin(default), step=1.0,
                                smoothing_ms=0.0, choices=names))
            binds.append(b)
    return tuple(params), tuple(binds)


def _guess_range(attr: str, value: float) -> tuple[float, float]:
    """A range for a built-in property missing from :data:`BUILTIN_RANGES`, from its unit."""
    if attr.endswith("_db"):
        return (-60.0, 24.0)
    if attr.endswith("_hz"):
        return (1.0, 20000.0)
    if attr.endswith("_ms"):
        return (0.0, 5000.0)
    return (min(0.0, value), max(1.0, 2.0 * abs(value)))


def _external_params(plugin: Any) -> tuple[tuple[Param, ...], tuple[_Binding, ...]]:
    """Params of an external (VST3/AU) plugin, from ``plugin.parameters``."""
    params: list[Param] = []
    binds: list[_Binding] = []
    taken: set[str] = set()
    for python_name, ap in plugin.parameters.items():
        label = getattr(ap, "label", None)
        current = getattr(plugin, python_name)
        kind = getattr(ap, "type", float)
        if kind is bool:
            pid = osc_id(python_name, taken=taken)
            names = tuple(str(v) for v in ap.valid_values) if len(ap.valid_values) == 2 else ("off", "on")
            params.append(Param(pid, 0.0, 1.0, 1.0 if current else 0.0, step=1.0, smoothing_ms=0.0, choices=names))
            binds.append(_Binding(python_name, "bool"))
        elif kind is float and ap.min_value is not None and ap.max_value is not None:
            pid = osc_id(python_name, label, taken=taken)
            lo, hi = float(ap.min_value), float(ap.max_value)
            value = min(hi, max(lo, float(current)))
            step = getattr(ap, "step_size", None)
            params.append(Param(pid, lo, hi, value, smoothing_ms=0.0, step=float(step) if step else None))
            binds.append(_Binding(python_name, "float"))
        else:  # a list of strings (or anything else pedalboard can only name)
            options = tuple(ap.valid_values)
            if not options:
                continue
            b = _Binding(python_name, "choice", options)
            pid = osc_id(python_name, taken=taken)
            params.append(Param(pid, 0.0, float(len(options) - 1), b.from_plugin(current), step=1.0,
                                smoothing_ms=0.0, choices=tuple(str(o) for o in options)))
            binds.append(b)
    return tuple(params), tuple(binds)


def _is_external(plugin: Any) -> bool:
    pb = _pedalboard()
    return isinstance(plugin, pb.ExternalPlugin) or (
        not isinstance(plugin, pb.Plugin) and hasattr(plugin, "parameters"))


class PluginEffect(Effect):
    """A pedalboard plugin as an Effect; see the module docstring.

    Parameters
    ----------
    plugin : pedalboard.Plugin
        A built-in or a loaded VST3/AU. Not shared with another Chain while processing.
    **values : float
        Initial parameter values by id (range-checked).
    """

    name = "plugin"
    # a plugin is loaded once, for every channel; how it treats them (a plugin compressor's link)
    # is the plugin's own setting
    channel_coupling = "joint"
    _bindings: ClassVar[tuple[_Binding, ...]] = ()
    _builtin_cache: ClassVar[dict[type, type[PluginEffect]]] = {}

    def __new__(cls, plugin: Any = None, **values: float) -> PluginEffect:
        if plugin is None:
            raise ChainError("the plugin effect wraps a pedalboard plugin: PluginEffect(pedalboard.Reverb()), "
                             "in --chain plugin:Reverb or plugin:/path/x.vst3, "
                             "or in a preset effect = \"plugin\" with plugin = \"Reverb\" or path = \"/x.vst3\"")
        if cls is PluginEffect:
            cls = _subclass_for(plugin)
        return object.__new__(cls)

    def __init__(self, plugin: Any = None, **values: float) -> None:
        object.__setattr__(self, "_plugin", plugin)
        object.__setattr__(self, "_latency", 0)
        object.__setattr__(self, "_hold", 0)
        object.__setattr__(self, "_buffer_size", 0)
        object.__setattr__(self, "_sample_rate", 0.0)
        object.__setattr__(self, "short_blocks", 0)
        object.__setattr__(self, "_fed", 0)
        object.__setattr__(self, "_source", {})
        super().__init__()
        # start from the plugin's own current settings, then apply the overrides
        for i, b in enumerate(self._bindings):
            p = self.params[i]
            self._values[i] = min(p.max, max(p.min, b.from_plugin(getattr(plugin, b.attr))))
        for key, value in values.items():
            self.set(key, value)

    # -- construction from presets ------------------------------------------------------------
    @classmethod
    def from_preset(cls, plugin: str | None = None, path: str | None = None,
                    plugin_name: str | None = None) -> PluginEffect:
        """Build from a preset's keys: ``plugin = "Reverb"`` (a pedalboard built-in class) or
        ``path = "/x.vst3"`` (``pedalboard.load_plugin``; ``plugin_name`` picks one in a bundle)."""
        pb = _pedalboard()
        if (plugin is None) == (path is None):
            raise ChainError("the plugin effect needs exactly one of plugin = \"<pedalboard class>\" or path = \"<file>\"")
        if plugin is not None:
            target = getattr(pb, str(plugin), None)
            if not (isinstance(target, type) and issubclass(target, pb.Plugin)) or issubclass(
                    target, (pb.ExternalPlugin, pb.PluginContainer)):
                names = sorted(n for n in dir(pb) if isinstance(getattr(pb, n), type)
                               and issubclass(getattr(pb, n), pb.Plugin)
                               and not issubclass(getattr(pb, n), (pb.ExternalPlugin, pb.PluginContainer))
                               and n not in ("Plugin", "IIRFilter"))
                raise ChainError(f"unknown pedalboard plugin {plugin!r} (built-ins: {', '.join(names)})")
            try:
                instance = target()
            except (TypeError, ValueError, RuntimeError) as e:
                why = " ".join(str(e).replace("Invoked with:", "").split())  # pybind's message spans lines
                raise ChainError(f"pedalboard.{plugin}() cannot be built without arguments: {why}") from e
            effect = cls(instance)
            effect._source.update(plugin=str(plugin))
            return effect
        try:
            instance = pb.load_plugin(str(path), plugin_name=plugin_name) if plugin_name else pb.load_plugin(str(path))
        except (ImportError, ValueError, RuntimeError, OSError) as e:
            raise ChainError(f"cannot load plugin {path!r}: {e}") from e
        effect = cls(instance)
        effect._source.update(path=str(path), **({"plugin_name": plugin_name} if plugin_name else {}))
        return effect

    def __reduce__(self):
        # pedalboard plugins do not pickle: a copy is built again as a preset builds it (the same
        # plugin class or file), with the same parameter values, unprepared
        keys = self.preset_keys()
        if not keys or ("plugin" in keys and not hasattr(_pedalboard(), keys["plugin"])):
            raise TypeError(f"cannot copy a PluginEffect of {type(self._plugin).__name__}: it is not a pedalboard "
                            "built-in or a plugin file")
        attrs = {} if "path" in keys else {b.attr: getattr(self._plugin, b.attr) for b in self._bindings}
        return (_rebuild, (keys, attrs, self.values()))

    def preset_keys(self) -> dict[str, str]:
        """The keys a preset needs to rebuild this effect (``plugin`` or ``path``)."""
        if self._source:
            return dict(self._source)
        if not _is_external(self._plugin):
            return {"plugin": type(self._plugin).__name__}
        path = getattr(self._plugin, "path_to_plugin_file", None)
        return {"path": str(path)} if path else {}

    # -- parameters ---------------------------------------------------------------------------
    @property
    def plugin(self) -> Any:
        """The wrapped pedalboard plugin."""
        return self._plugin

    def _param_changed(self, index: int) -> None:
        b = self._bindings[index]
        setattr(self._plugin, b.attr, b.to_plugin(float(self._values[index])))

    def __repr__(self) -> str:
        vals = " ".join(f"{p.id}={v:g}" for p, v in zip(self.params, self._values))
        return f"<PluginEffect {type(self._plugin).__name__} {vals} latency={self._latency} at {id(self):#x}>"

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def latency_samples(self) -> int:
        """The plugin's latency in samples, measured in ``prepare`` (plus :attr:`hold_samples`)."""
        return self._latency + self._hold

    @property
    def hold_samples(self) -> int:
        """Frames held back before the plugin (the channel count, for a multichannel plugin with
        latency): pedalboard reads a block of no more frames than channels as frames-first, which
        reconfigures such a plugin mid-stream, so it only ever gets longer blocks."""
        return self._hold

    def _prepare(self, spec: ProcessSpec) -> None:
        object.__setattr__(self, "_sample_rate", float(spec.sample_rate))
        object.__setattr__(self, "_buffer_size", int(spec.max_block_size))
        object.__setattr__(self, "_prime", np.zeros((spec.channels, 0), dtype=np.float32))
        object.__setattr__(self, "_latency", self._measure_latency(spec))
        hold = spec.channels if self._latency > 0 and spec.channels > 1 else 0
        object.__setattr__(self, "_hold", hold)
        object.__setattr__(self, "_pending", np.zeros((spec.channels, hold + spec.max_block_size), np.float32))
        object.__setattr__(self, "_queue", np.zeros((spec.channels, 2 * hold + spec.max_block_size), np.float32))
        object.__setattr__(self, "_npending", 0)
        object.__setattr__(self, "_nqueue", hold)

    def _measure_latency(self, spec: ProcessSpec) -> int:
        """Feed silence to the reset plugin until it returns audio: the samples it held back."""
        self._plugin.reset()
        # a long first call fixes the channel layout for pedalboard (channels < frames)
        probe = np.zeros((spec.channels, max(spec.max_block_size, spec.channels + 1)), dtype=np.float32)
        fed = returned = 0
        limit = int(_MAX_PROBE_SECONDS * spec.sample_rate)
        while returned == 0:
            if fed > limit:
                raise ChainError(f"{type(self._plugin).__name__}: no output after {_MAX_PROBE_SECONDS:g} s of input")
            out = self._plugin.process(probe, float(spec.sample_rate), buffer_size=spec.max_block_size, reset=False)
            fed += probe.shape[1]
            returned += out.shape[-1]
        self._plugin.reset()
        return fed - returned

    def reset(self) -> None:
        """Reset the plugin's internal state (delay lines, envelopes); parameters stay."""
        self._plugin.reset()
        object.__setattr__(self, "_fed", 0)
        if self._hold:
            self._queue.fill(0.0)
            object.__setattr__(self, "_npending", 0)
            object.__setattr__(self, "_nqueue", self._hold)
        if self._spec is not None:
            # pedalboard forgets the channel layout on reset; a (channels, 0) call fixes it again,
            # so a first block of ``channels`` frames or fewer is not read as interleaved
            self._plugin.process(self._prime, self._sample_rate, buffer_size=self._buffer_size, reset=False)

    def process(self, block: np.ndarray) -> None:
        """Run ``block`` (channels, frames) float32 through the plugin in place (allocates; see note)."""
        if self._buffer_size == 0:
            self._require_prepared(block)
        if not self._hold:
            self._through(block)
            return
        # hold frames back until more than `channels` are pending (see hold_samples); the queue
        # starts with `hold` frames of silence, so every call can deliver its block
        n, k = block.shape[1], self._npending
        self._pending[:, k:k + n] = block
        k += n
        if k > self._hold:
            chunk = self._pending[:, :k].copy()
            self._through(chunk)
            q = self._nqueue
            self._queue[:, q:q + k] = chunk
            object.__setattr__(self, "_nqueue", q + k)
            k = 0
        object.__setattr__(self, "_npending", k)
        q = self._nqueue
        block[...] = self._queue[:, :n]
        self._queue[:, : q - n] = self._queue[:, n:q]
        object.__setattr__(self, "_nqueue", q - n)

    def _through(self, block: np.ndarray) -> None:
        """The plugin on ``block`` in place, delayed by exactly its latency."""
        out = self._plugin.process(block, self._sample_rate, buffer_size=self._buffer_size, reset=False)
        n = block.shape[1]
        object.__setattr__(self, "_fed", self._fed + n)
        m = out.shape[-1]
        if m == n:
            block[...] = out
            return
        # the plugin held samples back: right-align (pedalboard's convention), silence before
        if m > 0:
            block[:, n - m:] = out
        block[:, : n - m] = 0.0
        if m < min(n, self._fed - self._latency):
            object.__setattr__(self, "short_blocks", self.short_blocks + 1)


#: built-ins that do not work block by block (pedalboard 0.9: checked by streaming a tone)
_NOT_STREAMABLE = {"PitchShift": "returns only silence when streamed block by block (its look-ahead is about 1 s)"}


def _subclass_for(plugin: Any) -> type[PluginEffect]:
    """The PluginEffect subclass declaring ``plugin``'s parameters. For a built-in, one subclass
    per class (cached), with the class's ranges; an instance set beyond them gets its own,
    widened, so it never changes the ranges of later instances."""
    pb = _pedalboard()
    if isinstance(plugin, PluginEffect) or not (isinstance(plugin, pb.Plugin) or hasattr(plugin, "process")):
        raise TypeError(f"PluginEffect wraps a pedalboard plugin, got {plugin!r}")
    if isinstance(plugin, pb.PluginContainer):
        raise TypeError("wrap single plugins; put several in a hushbridge Chain instead of a pedalboard.Pedalboard")
    if type(plugin).__name__ in _NOT_STREAMABLE:
        raise ChainError(f"pedalboard's {type(plugin).__name__} {_NOT_STREAMABLE[type(plugin).__name__]}; "
                         "run it on whole files through pedalboard itself")
    if _is_external(plugin):
        return _make_subclass(plugin, *_external_params(plugin))
    cls = type(plugin)
    shared = PluginEffect._builtin_cache.get(cls)
    if shared is None:
        try:
            shared = _make_subclass(plugin, *_builtin_params(cls()))
            PluginEffect._builtin_cache[cls] = shared
        except (TypeError, ValueError, RuntimeError):  # no default instance (e.g. Convolution)
            shared = None
    if shared is not None and all(p.min <= b.from_plugin(getattr(plugin, b.attr)) <= p.max
                                  for p, b in zip(shared.params, shared._bindings)):
        return shared
    return _make_subclass(plugin, *_builtin_params(plugin))


def _make_subclass(plugin: Any, params: tuple[Param, ...], binds: tuple[_Binding, ...]) -> type[PluginEffect]:
    return type(f"PluginEffect_{type(plugin).__name__}", (PluginEffect,),
                {"params": params, "_bindings": binds, "__module__": __name__,
                 "__doc__": f"pedalboard {type(plugin).__name__} as an Effect."})


def _rebuild(keys: dict[str, str], attrs: dict[str, Any], values: dict[str, float]) -> PluginEffect:
    if "path" in keys:
        effect = PluginEffect.from_preset(**keys)
        for pid, v in values.items():
            effect.set(pid, v)
        return effect
    plugin = getattr(_pedalboard(), keys["plugin"])()
    for attr, v in attrs.items():  # the plugin's own settings first: they decide the declared ranges
        setattr(plugin, attr, v)
    effect = PluginEffect(plugin)
    effect._source.update(keys)
    return effect
