"""Block utilities used by the Chain and the engine: sanitising, delay lines, ramps."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# Below this magnitude a value is flushed to zero so filter and envelope state never
# goes subnormal (subnormals cost 10-100x on x86 and never recover by themselves).
DENORMAL_FLOOR = 1e-25
# Output samples a filter computes in float64 below this (-300 dBFS) are written as 0: the state
# is flushed at block ends, so without it a decay into silence came out differently (~1e-24)
# for different block sizes, and as float32 subnormals after a long decay.
OUTPUT_FLOOR = 1e-15


@njit(cache=True)
def to_output(y: float) -> np.float32:
    """``y`` as an output sample: float32, exactly 0 under :data:`OUTPUT_FLOOR`."""
    return np.float32(y) if abs(y) >= OUTPUT_FLOOR else np.float32(0.0)


@njit(cache=True)
def finite_sample(block: np.ndarray, c: int, i: int) -> float:
    """``block[c, i]`` as float64; a non-finite sample is zeroed in place and read as 0, so it
    enters a detector or filter state as silence."""
    x = np.float64(block[c, i])
    if not math.isfinite(x):
        block[c, i] = 0.0
        return 0.0
    return x


@njit(cache=True)
def flush_state(state: np.ndarray) -> None:
    """Zero every value of a float64 state array that is non-finite or below
    :data:`DENORMAL_FLOOR` in magnitude (kernels call it at the end of a block)."""
    for j in range(state.size):
        v = state.flat[j]
        if not math.isfinite(v) or abs(v) < DENORMAL_FLOOR:
            state.flat[j] = 0.0


@njit(cache=True)
def sanitize(block: np.ndarray) -> int:
    """Replace NaN/Inf samples of ``block`` (channels, frames) with 0 in place.

    Returns the number of samples replaced.
    """
    bad = 0
    ch, n = block.shape
    for c in range(ch):
        for i in range(n):
            x = block[c, i]
            if not np.isfinite(x):
                block[c, i] = 0.0
                bad += 1
    return bad


@njit(cache=True)
def sanitize_rows(block: np.ndarray, bad: np.ndarray) -> int:
    """:func:`sanitize` that also counts the samples replaced per channel into ``bad`` (int64,
    one per channel, overwritten). Returns the total."""
    total = 0
    ch, n = block.shape
    for c in range(ch):
        k = 0
        for i in range(n):
            if not np.isfinite(block[c, i]):
                block[c, i] = 0.0
                k += 1
        bad[c] = k
        total += k
    return total


@njit(cache=True)
def delay_through(block: np.ndarray, line: np.ndarray, pos: int, delay: int, out: np.ndarray) -> int:
    """Write ``block`` delayed by ``delay`` samples into ``out``; return the new write position.

    ``line`` is a (channels, L) ring with L > delay. ``block`` and ``out`` may not alias.
    """
    ch, n = block.shape
    size = line.shape[1]
    p = pos
    for i in range(n):
        r = p - delay
        if r < 0:
            r += size
        for c in range(ch):
            line[c, p] = block[c, i]
            out[c, i] = line[c, r]
        p += 1
        if p == size:
            p = 0
    return p


@njit(cache=True)
def ramp_mix(wet: np.ndarray, dry: np.ndarray, state: np.ndarray) -> None:
    """``wet = dry + g * (wet - dry)`` with ``g`` ramping linearly toward its target.

    ``state`` is float64 ``[g, target, step]``; ``step`` is the per-sample increment (>0).
    """
    ch, n = wet.shape
    g = state[0]
    target = state[1]
    step = state[2]
    for i in range(n):
        if g < target:
            g = min(g + step, target)
        elif g > target:
            g = max(g - step, target)
        for c in range(ch):
            d = dry[c, i]
            wet[c, i] = d + np.float32(g) * (wet[c, i] - d)
    state[0] = g


@njit(cache=True)
def crossfade_into(old: np.ndarray, new: np.ndarray, pos: int, length: int) -> int:
    """Equal-gain linear crossfade from ``old`` to ``new`` (result in ``new``).

    ``pos`` counts samples already faded; returns the updated count. After ``length`` samples
    ``new`` is left untouched.
    """
    ch, n = new.shape
    p = pos
    for i in range(n):
        if p >= length:
            break
        g = np.float32((p + 1) / length)
        for c in range(ch):
            new[c, i] = old[c, i] + g * (new[c, i] - old[c, i])
        p += 1
    return p


@njit(cache=True)
def swap_fade_into(old: np.ndarray, new: np.ndarray, pos: int, out_at: int, in_at: int, length: int) -> int:
    """Mix ``old`` out and ``new`` in (result in ``new``) on two linear ramps of ``length``
    samples: ``old`` falls from sample ``out_at`` of the swap on, ``new`` rises from ``in_at``.

    ``pos`` counts samples since the swap began; returns the updated count. With ``out_at ==
    in_at`` it is a crossfade (the gains sum to 1); with ``in_at >= out_at + length`` it is a
    fade out, then a fade in, so two signals that are not time-aligned never overlap.
    """
    ch, n = new.shape
    p = pos
    for i in range(n):
        g_out = min(max((p - out_at + 1) / length, 0.0), 1.0)
        g_in = min(max((p - in_at + 1) / length, 0.0), 1.0)
        a = np.float32(1.0 - g_out)
        b = np.float32(g_in)
        for c in range(ch):
            new[c, i] = a * old[c, i] + b * new[c, i]
        p += 1
    return p


@njit(cache=True)
def peak_and_square_sum(block: np.ndarray, peaks: np.ndarray, sums: np.ndarray) -> None:
    """Per-channel running peak (max |x|) and sum of squares, accumulated into the outputs."""
    ch, n = block.shape
    for c in range(ch):
        pk = peaks[c]
        s = 0.0
        for i in range(n):
            x = abs(block[c, i])
            if x > pk:
                pk = x
            s += x * x
        peaks[c] = pk
        sums[c] += s


# -- calling kernels without the dispatcher -------------------------------------------------------
F32 = np.dtype(np.float32)


def compiled(kernel, *arg_types):
    """The compiled entry point of the ``@njit`` ``kernel`` for exactly ``arg_types`` (numba types).

    Calling it skips the dispatcher's type resolution, about 0.1 µs per array argument, which
    is most of a small kernel's cost at 64..256 frames. It does **not** check its arguments:
    pass only arrays of exactly those dtypes, dimensions and layouts (guard with
    :func:`is_block`), or memory is misread.
    """
    return kernel.compile(tuple(arg_types))


def bind(kernel, *args):
    """``(entry, args)``: ``kernel``'s entry point for a (channels, frames) float32 C-contiguous
    block followed by exactly ``args``; call ``entry(block, *args)`` after :func:`is_block`."""
    from numba import typeof

    block_t = typeof(np.zeros((1, 1), dtype=np.float32))
    return compiled(kernel, block_t, *(typeof(a) for a in args)), tuple(args)


def is_block(block: np.ndarray) -> bool:
    """Whether ``block`` is a C-contiguous 2-D float32 array (the type the entry points take)."""
    return block.dtype is F32 and block.ndim == 2 and block.flags.c_contiguous
