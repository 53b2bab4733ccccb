"""dereverb: our streaming de-reverberation model (``hushbridge/models/dereverb.onnx``) as an Effect.

The same network and runtime as :mod:`~hushbridge.effects.denoise` (any block size, exact latency
of 479 samples at 48 kHz, a stereo pair linked by default (``link``), overload fallback to the latency-matched dry path),
trained to a drier target: the direct sound and the first 10 ms of reflections (faded out by
20 ms), where the denoiser keeps 50 ms of the room. Light noise goes too; for real noise put
``denoise`` first. See models/dereverb.md for what it was trained on and how it scores.

Parameters: ``reduction_db`` (0..100 dB, default 18: how far the room may be turned down; 100 = no
limit) and ``mix`` (0..1, dry/wet).

>>> from hushbridge.effects import Dereverb                         # doctest: +SKIP
>>> Dereverb(reduction_db=18.0).latency_samples                     # doctest: +SKIP
479
"""
from __future__ import annotations

from hushbridge.effects.base import Param
from hushbridge.effects.model import ModelEffect


class Dereverb(ModelEffect):
    """Speech de-reverberation; see the module docstring. ``model_path=`` runs another contract graph."""

    name = "dereverb"
    model_file = "dereverb.onnx"
    # 18 dB by default, not the denoiser's 40: the first 30 ms of a word after a pause come out
    # 6 dB under the target at 18 dB but 20 dB under at 40 (the model takes them for the last
    # word's tail), for a little less room taken away (models/dereverb.md)
    params = (
        Param("reduction_db", 0.0, 100.0, 18.0, smoothing_ms=50.0),
        ModelEffect.params[1],
    )
