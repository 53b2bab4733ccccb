"""hushbridge: low-latency speech cleanup and broadcast dynamics, live (JACK, PortAudio) or offline.

Scripting from Python::

    import hushbridge
    from hushbridge.effects import Chain, HighPass, Compressor, Limiter

    chain = Chain([HighPass(cutoff_hz=80), Compressor(threshold_db=-20), Limiter()])
    y = chain(x, 48000)                      # x: (frames,) or (channels, frames) float32
    hushbridge.process_file("in.wav", "out.wav", chain)
    chain = hushbridge.load_preset("dialogue")
"""
from __future__ import annotations

__version__ = "0.1.0"

from hushbridge.errors import (  # noqa: E402
    AudioError,
    AudioFileError,
    BackendError,
    ChainError,
    HushbridgeError,
    ParamError,
    PresetError,
)


def __getattr__(name: str):  # lazy: keep `import hushbridge` cheap for the CLI and host scripts
    if name == "process_file":
        from hushbridge.io.files import process_file

        return process_file
    if name == "load_preset":
        from hushbridge.presets import load_preset

        return load_preset
    if name == "Engine":
        from hushbridge.engine import Engine

        return Engine
    raise AttributeError(f"module 'hushbridge' has no attribute {name!r}")


__all__ = [
    "AudioError",
    "AudioFileError",
    "BackendError",
    "ChainError",
    "Engine",
    "HushbridgeError",
    "ParamError",
    "PresetError",
    "__version__",
    "load_preset",
    "process_file",
]
