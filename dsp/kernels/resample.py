"""Streaming polyphase resampling kernel (rational ratio ``up / down``), allocation-free.

Output sample ``j`` is the input signal at time ``j * down / up`` (input samples), computed from the
``taps`` input samples around it with the filter phase ``(j * down) mod up`` of a bank made by
:func:`hushbridge.dsp.resample.polyphase_bank`. It is written as soon as the input ``lookahead``
samples past its centre has arrived, so the signal itself is not delayed: the lookahead shows up
as output that is released later (the caller's FIFO plan accounts for it).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def resample_stream(x: np.ndarray, ring: np.ndarray, state: np.ndarray, bank: np.ndarray, up: int,
                    down: int, lookahead: int, out: np.ndarray) -> int:
    """Push ``x`` (1-D float32) through the resampler; write the new output samples to ``out``
    and return how many. ``ring``: float32, a power of two longer than ``2 * taps`` (input
    history, zeros at start); ``state``: int64 ``[inputs taken, outputs made]``; ``out`` must
    hold ``ceil(len(x) * up / down) + 1``."""
    mask = ring.shape[0] - 1
    taps = bank.shape[1]
    n_in = state[0]
    j = state[1]
    n = 0
    for i in range(x.shape[0]):
        ring[n_in & mask] = x[i]
        n_in += 1
        while True:
            pos = j * down
            base = pos // up
            top = base + lookahead
            if top >= n_in:
                break
            row = bank[pos - base * up]
            acc = np.float32(0.0)
            for k in range(taps):
                acc += ring[(top - k) & mask] * row[k]
            out[n] = acc
            n += 1
            j += 1
    state[0] = n_in
    state[1] = j
    return n
