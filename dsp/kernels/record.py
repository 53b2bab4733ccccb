"""The audio thread's side of recording: a single-producer, single-consumer ring of frames.

A row of ``ring`` (frames, input columns + output columns) float32 is one instant of a take: what
came in and what went out in the same sample of the same callback. The audio thread writes the
input columns before the chain runs (:func:`tap_input`, which also decides whether this block
fits) and the output columns after it (:func:`tap_output`, which publishes the rows); a writer
thread copies published rows to files and advances the read count. Counts only grow, so
``written - read`` is the fill, and row ``k`` lives at ``k % capacity``.

``state`` (int64) holds everything both sides share; the control side changes ``STATE`` and
``REMAIN`` only between callbacks (kernels keep the GIL, :mod:`hushbridge.dsp`).

When the writer falls behind and a block does not fit, the block is not written and counted as
lost; once there is room again, as many rows of silence go in first (as many as fit each
callback, until the gap is made up), so every later row stays at its true time. A lost row holds
an input and the output of the same instant, which belongs ``latency`` earlier in the aligned
output file: the silence there comes that much earlier than in the raw file.
"""
from __future__ import annotations

import numpy as np
from numba import njit

WRITTEN = 0  # rows published (the writer may copy rows below this)
READ = 1  # rows the writer has consumed
STATE = 2  # one of IDLE, ROLLING, STOPPING, DONE
REMAIN = 3  # STOPPING: rows still to take
GAP = 4  # rows lost and not yet made up with silence
LOST = 5  # rows lost in this take (silence in the files)
TAKEN = 6  # rows this callback writes (tap_input decides, tap_output publishes)
STATE_SIZE = 8

IDLE = 0  # no take: the taps do nothing
ROLLING = 1
STOPPING = 2  # taking REMAIN more rows (the chain's latency: the output of the last input)
DONE = 3  # the audio side is finished with the take; the writer drains and closes it


@njit(cache=True)
def tap_input(ring: np.ndarray, state: np.ndarray, inp: np.ndarray, cols: int) -> None:
    """Write the first ``cols`` channels of the block ``inp`` (channels, frames) to the first
    ``cols`` columns of the next rows, if the take is rolling and the rows fit; else count them
    lost. Call before the chain changes the block (``cols`` 0: the input is not recorded)."""
    s = state[STATE]
    if s != ROLLING and s != STOPPING:
        state[TAKEN] = 0
        return
    n = inp.shape[1]
    if s == STOPPING and state[REMAIN] < n:
        n = state[REMAIN]
    cap = ring.shape[0]
    w = state[WRITTEN]
    free = cap - (w - state[READ])
    gap = min(state[GAP], free)  # silence for what was lost, as much as fits (a gap may outgrow the ring)
    if gap > 0:
        for k in range(gap):
            row = (w + k) % cap
            for c in range(ring.shape[1]):
                ring[row, c] = 0.0
        w += gap
        free -= gap
        state[GAP] -= gap
        state[WRITTEN] = w
    if state[GAP] == 0 and free >= n:
        for i in range(n):
            row = (w + i) % cap
            for c in range(cols):
                ring[row, c] = inp[c, i]
        state[TAKEN] = n
    else:
        state[TAKEN] = 0
        state[GAP] += n
        state[LOST] += n
    if s == STOPPING:
        state[REMAIN] -= n


@njit(cache=True)
def tap_output(ring: np.ndarray, state: np.ndarray, out: np.ndarray, col: int, cols: int) -> None:
    """Write the first ``cols`` channels of the block ``out`` (channels, frames) to the columns
    from ``col`` of the rows :func:`tap_input` took for this callback and publish them; end a
    stopping take when its last row is in."""
    s = state[STATE]
    if s != ROLLING and s != STOPPING:
        return
    n = state[TAKEN]
    if n > 0:
        cap = ring.shape[0]
        w = state[WRITTEN]
        for i in range(n):
            row = (w + i) % cap
            for c in range(cols):
                ring[row, col + c] = out[c, i]
        state[WRITTEN] = w + n
        state[TAKEN] = 0
    if s == STOPPING and state[REMAIN] <= 0:
        state[STATE] = DONE
