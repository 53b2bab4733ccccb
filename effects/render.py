"""Offline rendering: run any Effect or Chain over a whole signal, latency compensated.

The same ``process`` code runs live and offline; here the latency the processor reports is
trimmed from the head and its tail is flushed with silence, so the result lines up with the
input sample for sample and has the same length.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from hushbridge.effects.base import MAX_CHANNELS, Effect, ProcessSpec


class OfflineRenderer:
    """Feed chunks of any length; get back latency-compensated output.

    Parameters
    ----------
    processor : Effect
        Prepared here with ``ProcessSpec(sample_rate, block_size, channels, channel_mask)``.
    channels, sample_rate, block_size : int
        ``block_size`` is the size of the blocks the processor sees (the last may be shorter).
    channel_mask : int
        The speakers the channels feed, where known (0: not known).
    """

    def __init__(self, processor: Effect, channels: int, sample_rate: int, block_size: int = 4096,
                 channel_mask: int = 0) -> None:
        self.processor = processor
        self.spec = ProcessSpec(int(sample_rate), int(block_size), int(channels), int(channel_mask))
        from hushbridge.effects.chain import Chain

        processor.set_non_realtime(True)
        if isinstance(processor, Chain):
            # offline blocks are large, so per-call overhead is small: use fused runs from the
            # disk cache but do not spend seconds compiling new ones
            processor.compile_fused = False
            try:
                processor.prepare(self.spec)
            finally:
                processor.compile_fused = True
        else:
            processor.prepare(self.spec)
        self._block = np.zeros((channels, block_size), dtype=np.float32)
        self._to_skip = processor.latency_samples
        self.latency_samples = self._to_skip
        self.frames_in = 0
        self.frames_out = 0

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        bs = self.spec.max_block_size
        n = chunk.shape[1]
        out = np.empty((self.spec.channels, n), dtype=np.float32)
        for start in range(0, n, bs):
            m = min(bs, n - start)
            view = self._block[:, :m]
            view[...] = chunk[:, start : start + m]
            self.processor.process(view)
            out[:, start : start + m] = view
        skip = min(self._to_skip, n)
        self._to_skip -= skip
        return out[:, skip:]

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Process ``chunk`` (channels, frames); return the output that is ready (maybe shorter)."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] != self.spec.channels:
            raise ValueError(f"expected ({self.spec.channels}, frames), got shape {chunk.shape}")
        self.frames_in += chunk.shape[1]
        out = self._run(chunk)
        self.frames_out += out.shape[1]
        return out

    def flush(self) -> np.ndarray:
        """Push silence until every input frame has come out; return that tail."""
        missing = self.frames_in - self.frames_out
        if missing <= 0:
            return np.zeros((self.spec.channels, 0), dtype=np.float32)
        pad = np.zeros((self.spec.channels, missing + self._to_skip), dtype=np.float32)
        out = self._run(pad)[:, :missing]
        self.frames_out += out.shape[1]
        return out


def iter_render(
    processor: Effect,
    chunks: Iterable[np.ndarray],
    channels: int,
    sample_rate: int,
    block_size: int = 4096,
) -> Iterator[np.ndarray]:
    """Yield latency-compensated output for a stream of (channels, frames) chunks, then the tail."""
    r = OfflineRenderer(processor, channels, sample_rate, block_size)
    for chunk in chunks:
        out = r.push(chunk)
        if out.shape[1]:
            yield out
    tail = r.flush()
    if tail.shape[1]:
        yield tail


def render(
    processor: Effect,
    audio: np.ndarray,
    sample_rate: int,
    block_size: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Process a whole signal and return the aligned result, same shape and dtype float32.

    ``audio`` is ``(frames,)`` for mono or ``(channels, frames)``, floating point (full scale
    ±1.0; integer PCM is refused rather than guessed at: divide int16 by 32768).
    """
    kind = np.asarray(audio).dtype.kind
    if kind != "f":
        if kind in "iu":
            raise ValueError(f"audio is integer ({np.asarray(audio).dtype}); pass floats at full scale ±1.0, "
                             "e.g. int16 samples / 32768")
        raise ValueError(f"audio must be a float array, got dtype {np.asarray(audio).dtype}")
    x = np.asarray(audio, dtype=np.float32)
    mono = x.ndim == 1
    if mono:
        x = x[np.newaxis, :]
    if x.ndim != 2:
        raise ValueError(f"audio must be (frames,) or (channels, frames), got shape {np.shape(audio)}")
    if x.shape[0] > MAX_CHANNELS and x.shape[1] <= MAX_CHANNELS:
        raise ValueError(f"audio of shape {x.shape} looks like (frames, channels); hushbridge takes "
                         "(channels, frames): pass audio.T")
    r = OfflineRenderer(processor, x.shape[0], sample_rate, block_size)
    parts = []
    step = max(block_size, 1 << 16)
    for start in range(0, x.shape[1], step):
        parts.append(r.push(x[:, start : start + step]))
        if progress is not None:
            progress(min(step, x.shape[1] - start))
    parts.append(r.flush())
    y = np.concatenate(parts, axis=1) if parts else np.zeros_like(x)
    return y[0] if mono else y
