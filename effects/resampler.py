"""Streaming resamplers for :class:`hushbridge.effects.model.ModelEffect`: ours and soxr's.

Both follow ``soxr.ResampleStream``'s small API (``resample_chunk(x, last=False)``, ``clear()``).
:class:`PolyphaseResampler` (quality ``"RT"``) is allocation-free for chunks up to the ``max_in`` it
was made for (the result is a view into its own buffer, valid until the next call) and adds about
0.5 ms each way; see :mod:`hushbridge.dsp.resample` for its response. soxr's streams allocate a
small array per call and add more delay, but offer higher-order filters.
"""
from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.kernels.resample import resample_stream
from hushbridge.dsp.resample import CUTOFF, polyphase_bank

RESAMPLE_QUALITIES = ("RT", "QQ", "LQ", "MQ", "HQ", "VHQ")


class PolyphaseResampler:
    """Mono streaming resampler ``rate_in`` -> ``rate_out`` (Kaiser-windowed sinc, polyphase).

    >>> r = PolyphaseResampler(44100, 48000, max_in=128)
    >>> y = r.resample_chunk(np.zeros(128, np.float32))   # a view: copy it to keep it
    """

    def __init__(self, rate_in: int, rate_out: int, max_in: int, delay: float = 0.0,
                 cutoff: float = CUTOFF) -> None:
        self.bank, self.up, self.down, self.lookahead = polyphase_bank(rate_in, rate_out, cutoff=cutoff,
                                                                       delay=delay)
        self.delay = float(delay)
        taps = self.bank.shape[1]
        self.ring = np.zeros(1 << int(math.ceil(math.log2(4 * taps + 4))), dtype=np.float32)
        self.state = np.zeros(2, dtype=np.int64)
        self.max_in = max(int(max_in), 1)
        self.out = np.zeros(int(math.ceil(self.max_in * self.up / self.down)) + 2, dtype=np.float32)
        self._flush = np.zeros(self.lookahead, dtype=np.float32)

    def resample_chunk(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next chunk ``x`` (1-D float32). Chunks up to ``max_in`` samples without
        ``last`` allocate nothing and return a view; ``last=True`` also flushes the lookahead."""
        if x.shape[0] <= self.max_in and not last:
            n = resample_stream(x, self.ring, self.state, self.bank, self.up, self.down, self.lookahead, self.out)
            return self.out[:n]
        parts = []  # long chunks and flushes: not on the audio path
        feed = np.concatenate([np.asarray(x, np.float32), self._flush]) if last else np.asarray(x, np.float32)
        for i in range(0, feed.shape[0], self.max_in):
            n = resample_stream(feed[i:i + self.max_in], self.ring, self.state, self.bank, self.up, self.down,
                                self.lookahead, self.out)
            parts.append(self.out[:n].copy())
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def clear(self) -> None:
        """Forget all input (a transport jump)."""
        self.ring.fill(0.0)
        self.state.fill(0)


def make_stream(rate_in: int, rate_out: int, quality: str, max_in: int, delay: float = 0.0,
                cutoff: float = CUTOFF):
    """A mono stream of ``quality``: ``"RT"`` ours (with an extra fractional ``delay`` in output
    samples and its low-pass at ``cutoff`` x the lower rate), the others soxr's (``delay`` must be
    0, ``cutoff`` is ignored)."""
    if quality == "RT":
        return PolyphaseResampler(rate_in, rate_out, max_in, delay, cutoff)
    if delay:
        raise ValueError("only the RT resampler takes a fractional delay")
    import soxr

    return soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality=quality)
