"""Processors users see, the Effect contract and the Chain.

Every effect has one short name used by presets, ``--chain`` and OSC (``/hb/<id>/<param>``).
:data:`EFFECTS` maps those names to classes; :func:`create_effect` builds one with checked
parameters.
"""
from __future__ import annotations

from hushbridge.effects.automix import Automix
from hushbridge.effects.base import Effect, Param, ProcessSpec
from hushbridge.effects.chain import Chain
from hushbridge.effects.compressor import Compressor
from hushbridge.effects.deesser import DeEsser
from hushbridge.effects.denoise import Denoise
from hushbridge.effects.dereverb import Dereverb
from hushbridge.effects.duck import Duck
from hushbridge.effects.filters import HighPass, PeakingEQ
from hushbridge.effects.gain import Gain
from hushbridge.effects.gate import Gate
from hushbridge.effects.hum import HumRemover
from hushbridge.effects.isolate import VoiceIsolation
from hushbridge.effects.leveler import Leveler
from hushbridge.effects.limiter import Limiter
from hushbridge.effects.declip import Declip
from hushbridge.effects.loudness import Loudness
from hushbridge.effects.model import ModelEffect
from hushbridge.effects.render import OfflineRenderer, iter_render, render
from hushbridge.errors import ChainError

EFFECTS: dict[str, type[Effect]] = {}


def register(cls: type[Effect]) -> type[Effect]:
    """Make an Effect class available by its ``name`` to presets, ``--chain`` and OSC."""
    if not cls.name or cls.name in EFFECTS and EFFECTS[cls.name] is not cls:
        raise ValueError(f"effect name {cls.name!r} is empty or already registered")
    EFFECTS[cls.name] = cls
    return cls


def create_effect(name: str, **params: float) -> Effect:
    """Build the effect called ``name`` with ``params`` (range-checked)."""
    try:
        cls = EFFECTS[name]
    except KeyError:
        raise ChainError(f"unknown effect {name!r} (available: {', '.join(sorted(EFFECTS))})") from None
    effect = cls()
    for key, value in params.items():
        effect.set(key, value)
    return effect


def chain_from_names(names: str | list[str]) -> Chain:
    """``"highpass,compressor"`` -> a Chain of those effects with default parameters.

    ``plugin:<name>`` is a pedalboard plugin: a built-in class (``plugin:Reverb``) or, when the
    name is a path (it has a ``/`` or ``\\``, or ends in .vst3 / .component), a plugin file that
    ``pedalboard.load_plugin`` opens (``plugin:/usr/lib/vst3/x.vst3``)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ChainError("empty chain: name at least one effect")
    return Chain([_effect_from_name(n) for n in names])


def _effect_from_name(name: str) -> Effect:
    kind, sep, target = name.partition(":")
    if not sep:
        return create_effect(name)
    if kind.strip() != "plugin" or not target.strip():
        raise ChainError(f"{name!r}: only plugins take a ':' (plugin:Reverb or plugin:/path/x.vst3)")
    from hushbridge.effects.plugin import PluginEffect

    target = target.strip()
    if "/" in target or "\\" in target or target.lower().endswith((".vst3", ".component")):
        return PluginEffect.from_preset(path=target)
    return PluginEffect.from_preset(plugin=target)


register(Gain)

# further effects register themselves below as they land
from hushbridge.effects import _registry  # noqa: E402,F401

__all__ = [
    "EFFECTS",
    "Automix",
    "Duck",
    "Chain",
    "Compressor",
    "DeEsser",
    "Denoise",
    "Dereverb",
    "Effect",
    "Gain",
    "Gate",
    "HighPass",
    "HumRemover",
    "Leveler",
    "Limiter",
    "Declip",
    "Loudness",
    "ModelEffect",
    "OfflineRenderer",
    "Param",
    "PeakingEQ",
    "ProcessSpec",
    "VoiceIsolation",
    "chain_from_names",
    "create_effect",
    "iter_render",
    "register",
    "render",
]
