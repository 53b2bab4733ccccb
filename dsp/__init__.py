"""Pure DSP: numba kernels (``hushbridge.dsp.kernels``) and coefficient design.

Nothing here holds state between calls: kernels take input, output and explicit state arrays,
so the Effects in :mod:`hushbridge.effects` own all state and parameters. Buffers are
``(channels, frames)`` float32, C-contiguous, everywhere inside the engine.
"""
