"""isolate: voice isolation, our streaming model (``hushbridge/models/isolate.onnx``) as an Effect.

Keeps the voice and takes away everything else: music (instruments, drums, choirs) as well as the
noises the denoiser knows. The same network and runtime as :mod:`~hushbridge.effects.denoise`
(any block size, exact latency of 479 samples at 48 kHz, a stereo pair linked by default
(``link``), overload fallback to the latency-matched dry path). Singing is not a target either way: songs with vocals were in
neither side of its training. See models/isolate.md.

Parameters: ``reduction_db`` (0..100 dB, default 40: how far what is not voice may be turned
down; 100 = no limit) and ``mix`` (0..1, dry/wet).

>>> from hushbridge.effects import VoiceIsolation                   # doctest: +SKIP
>>> VoiceIsolation(reduction_db=30.0).latency_samples               # doctest: +SKIP
479
"""
from __future__ import annotations

from hushbridge.effects.model import ModelEffect


class VoiceIsolation(ModelEffect):
    """Voice isolation; see the module docstring. ``model_path=`` runs another contract graph."""

    name = "isolate"
    model_file = "isolate.onnx"
