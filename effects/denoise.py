"""denoise: our streaming speech-denoising model (``hushbridge/models/denoise.onnx``) as an Effect.

Everything real-time lives in :class:`~hushbridge.effects.model.ModelEffect` (any block size,
internal allocation-free resampling, exact latency, linked or per-channel state, overload fallback to the
latency-matched dry path); this class names the shipped model and the effect.

Parameters: ``reduction_db`` (0..100 dB, default 40: how far noise may be turned down; 100 = no
limit) and ``mix`` (0..1, dry/wet). A stereo pair is linked by default: the network hears the pair
once per hop and treats both sides alike, so the image holds (``link="none"``: each channel on its
own, all channels in one batched inference per hop; ``link="all"``: any number of channels as one).
Meters: :attr:`activity` (speech probability, when the model outputs one), :attr:`overloaded`.

>>> from hushbridge.effects import Denoise                          # doctest: +SKIP
>>> dn = Denoise(reduction_db=24.0)                                 # doctest: +SKIP
>>> dn.latency_samples                                              # doctest: +SKIP
"""
from __future__ import annotations

from hushbridge.effects.model import ModelEffect


class Denoise(ModelEffect):
    """Speech denoiser; see the module docstring. ``model_path=`` runs another contract graph."""

    name = "denoise"
    model_file = "denoise.onnx"
