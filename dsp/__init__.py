"""Pure DSP: numba kernels (``hushbridge.dsp.kernels``) and coefficient design.

Nothing here holds state between calls: kernels take input, output and explicit state arrays,
so the Effects in :mod:`hushbridge.effects` own all state and parameters. Buffers are
``(channels, frames)`` float32, C-contiguous, everywhere inside the engine.

Kernels keep the GIL (numba's default; no ``nogil``). A kernel that lets go of it must take it
back when it returns, and while a control thread is busy (an OSC server receiving a flood) that
wait is up to a switch interval each time: with a dozen kernel calls a cycle the audio thread
missed 128-frame periods. Holding it, the callback waits for the GIL once, when it starts.
Measured on JACK at 128 frames with 10,000 OSC packets/s parsed in the engine's process
(a 7-effect chain): the callback's finish within the period went from p99 40-80 and max up to
125 of 128 frames to p99 21-30, max 27-43 (together with the port copies in
:mod:`hushbridge.io.jack` and a 0.2 ms switch interval).
"""
from pathlib import Path as _Path

from hushbridge.dsp.jit_cache import watch as _watch

# before any kernel module is imported: a kernel's cache goes stale with any source here
SOURCES_DIGEST = _watch(_Path(__file__).parent)
