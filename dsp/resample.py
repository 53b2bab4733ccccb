"""Design of the polyphase filter bank for :mod:`hushbridge.dsp.kernels.resample`.

A Kaiser-windowed sinc low-pass at ``cutoff`` times the lower of the two rates, ``zero_crossings``
sinc lobes on each side at that rate: with the defaults (24, beta 8, 0.45) the pass band is flat
(+-0.05 dB) to 0.40 x the lower rate (17.6 kHz between 44.1 and 48 kHz), images and aliases from
0.53 x the lower rate on are down by more than 70 dB (tests/effects/test_resampler.py), and the
lookahead is 24 samples of the lower rate each way (0.5 ms at 44.1 kHz): a round trip 44.1 -> 48 -> 44.1 kHz costs about 1.1 ms, against
about 10.7 ms for soxr's "LQ" (which is also not allocation-free in a stream).

:data:`ROUND_TRIP_CUTOFF` (0.5) is for a round trip through a higher rate and back (engine rate ->
model rate -> engine rate, the engine rate the lower): flat to 0.45 x the lower rate (-0.05 dB at
0.457, -6 dB at its Nyquist, so -1 dB at 0.45 and -5 dB at 0.49 for the trip), and whatever images
the way up leaves below the higher rate's Nyquist fold back onto their own frequency on the way
down: everything else stays 64 dB or more below a tone (tests/effects/test_resampler.py). Not for
a one-way conversion: there, content just above the lower Nyquist would fold into the band.
"""
from __future__ import annotations

import math

import numpy as np

ZERO_CROSSINGS = 24
KAISER_BETA = 8.0
CUTOFF = 0.45
ROUND_TRIP_CUTOFF = 0.5


def polyphase_bank(rate_in: int, rate_out: int, zero_crossings: int = ZERO_CROSSINGS,
                   beta: float = KAISER_BETA, cutoff: float = CUTOFF,
                   delay: float = 0.0) -> tuple[np.ndarray, int, int, int]:
    """``(bank [up, taps] float32, up, down, lookahead)`` for resampling ``rate_in`` -> ``rate_out``.

    Row ``p`` holds the filter for output times ``p / up`` of an input sample past the newest
    input it is centred on; every row sums to 1 (DC passes exactly). ``delay`` (output samples,
    0 <= delay < 1) delays the signal by that fraction, so that a chain of delays can add up to a
    whole number of samples.
    """
    if not 0.0 <= delay < 1.0:
        raise ValueError(f"delay must be in [0, 1) output samples, got {delay}")
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} and {rate_out}")
    g = math.gcd(int(rate_in), int(rate_out))
    up, down = int(rate_out) // g, int(rate_in) // g
    low = min(rate_in, rate_out)
    fc = cutoff * low / rate_in                 # cycles per input sample
    half = zero_crossings * rate_in / low       # kernel half-width in input samples
    lookahead = int(math.ceil(half))
    shift = delay * rate_in / rate_out          # the delay in input samples
    taps = 2 * lookahead + int(math.ceil(shift))
    # tap k of row p reads input (centre + lookahead - k), at distance p / up + k - lookahead from
    # the output time (the kernel is symmetric, so the sign does not matter)
    t = (np.arange(up)[:, None] / up) + np.arange(taps)[None, :] - lookahead - shift  # [up, taps]
    w = np.where(np.abs(t) < half, np.i0(beta * np.sqrt(np.clip(1.0 - (t / half) ** 2, 0.0, 1.0))) / np.i0(beta), 0.0)
    h = 2.0 * fc * np.sinc(2.0 * fc * t) * w
    h /= h.sum(axis=1, keepdims=True)
    return h.astype(np.float32), up, down, lookahead
