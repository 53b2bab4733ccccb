"""Test material for the speech models, made here and never in any training or evaluation set:
espeak-ng speech, a synthesized room from a seed no training run uses, synthesized music."""
from __future__ import annotations

import io
import subprocess

import numpy as np

SR = 48000


def tts(text: str, voice: str = "en-us") -> np.ndarray:
    """``text`` spoken by espeak-ng, at 48 kHz, peak 0.5."""
    import soundfile as sf
    import soxr

    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    s, sr = sf.read(io.BytesIO(wav), dtype="float32")
    s = soxr.resample(s, sr, SR).astype(np.float32)
    return (0.5 * s / np.abs(s).max()).astype(np.float32)


def room(rt60: float = 0.7, seed: int = 4242) -> np.ndarray:
    """A room response (make_demo's image-source generator), direct path at sample 0."""
    from hushbridge.data import make_demo

    return make_demo.room_impulse_response(np.random.default_rng(seed), (3.6, 2.4, 1.5), rt60=rt60)


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    from scipy.signal import fftconvolve

    return fftconvolve(x, h)[: x.size].astype(np.float32)


def music(seconds: float, seed: int = 7) -> np.ndarray:
    """Chords of harmonic tones (eight harmonics, 1/k) with note envelopes, a bass line and
    drum-like noise bursts, at RMS 0.1."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    y = np.zeros(n)
    beat = 60.0 / 110.0
    roots = (220.0, 174.6, 196.0, 261.6)
    for k in range(int(seconds / beat) + 1):
        a, b = int(k * beat * SR), min(n, int((k + 1) * beat * SR))
        if a >= n:
            break
        f0 = roots[(k // 4) % len(roots)]
        env = np.exp(-np.arange(b - a) / (0.25 * SR))
        for ratio in (1.0, 1.26, 1.5, 0.5):  # triad and bass
            for h in range(1, 9):
                y[a:b] += env * np.sin(2 * np.pi * f0 * ratio * h * t[a:b] + rng.uniform(0, 6.3)) / h
        hit = min(b - a, 2400)  # a drum hit on every beat
        y[a:a + hit] += 0.8 * rng.standard_normal(hit) * np.exp(-np.arange(hit) / 300.0)
    return (0.1 * y / np.sqrt(np.mean(y**2))).astype(np.float32)


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """SI-SDR (dB) of ``est`` against ``ref`` (the training side's measure, in float64)."""
    from hushbridge.models.train.evaluate import si_sdr as measure

    return measure(est.astype(np.float64), ref.astype(np.float64))


def stream(effect, x: np.ndarray, block: int) -> np.ndarray:
    """``x`` (mono) through ``effect`` as a live stream in ``block``-frame blocks: not trimmed."""
    from hushbridge.effects import ProcessSpec

    effect.prepare(ProcessSpec(SR, block, 1))
    y = np.zeros(x.size, np.float32)
    buf = np.zeros((1, block), np.float32)
    for i in range(0, x.size, block):
        m = min(block, x.size - i)
        v = buf[:, :m]
        v[0] = x[i:i + m]
        effect.process(v)
        y[i:i + m] = v[0]
    return y


def through(effect, x: np.ndarray, block: int = 128) -> np.ndarray:
    """``x`` (mono) through ``effect`` at 48 kHz in ``block``-frame blocks, its latency trimmed."""
    from hushbridge.effects import render

    effect.overload_budget = 0.0
    return render(effect, x.astype(np.float32), SR, block_size=block)
