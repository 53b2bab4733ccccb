"""Build the demo clip shipped as ``hushbridge/data/demo.flac``.

Everything in the clip is made here, from nothing but two speech synthesizers and numpy:

- speech: two "speakers" taking turns, speaker A from espeak-ng (en-us, pitch and rate varied per
  sentence with ``-p``/``-s``), speaker B from flite (voice ``slt``, else ``rms``/``kal``); each
  sentence resampled to 48 kHz with soxr;
- room: a synthesized impulse response per speaker (shoebox image-source early reflections up to third
  order + exponentially decaying, frequency-dependent noise tail, RT60 ~0.4 s); speaker B sits farther
  from the microphone, so it is both more reverberant and 6 dB quieter than speaker A;
- noise: 50 Hz mains hum with harmonics, pink fan noise with a faint blade tone, a low rumble, and a
  few clicks; the steady noise bed sits ~12 dB below the active speech (unweighted RMS);
- peaks: the mix is scaled so speech peaks reach about -1.5 dBFS and the loudest click about
  -0.5 dBFS: hot, never clipped.

The result is deterministic for a seed (espeak-ng and flite are deterministic; all randomness comes
from ``numpy.random.default_rng(seed)``). Written as 24-bit FLAC, 48 kHz mono. ``--clean`` also writes
the dry speech (before room and noise), sample-aligned with the mix and at the level of its direct path
in the mix, for quality measurements.

Usage::

    python -m hushbridge.data.make_demo [--out PATH] [--seed N] [--seconds S] [--clean PATH]

Needs the ``espeak-ng`` and ``flite`` programs, numpy, soxr and soundfile. Not used at run time.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 48_000
DEFAULT_SECONDS = 12.0
DEFAULT_SEED = 0
DEFAULT_OUT = Path(__file__).resolve().parent / "demo.flac"

# (speaker, text). Speaker "A" = espeak-ng, "B" = flite.
SCRIPT: tuple[tuple[str, str], ...] = (
    ("A", "Welcome back. Today we clean up a podcast recording."),
    ("B", "This one has mains hum, and a noisy fan."),
    ("A", "First we remove the noise, then we tame the room."),
    ("B", "Then we even out the levels."),
)

SPEAKER_LEVEL_DBFS = {"A": -20.0, "B": -26.0}  # active-speech RMS of the reverberant speech
SNR_DB = 12.0  # active speech (power mean of both speakers) over the steady noise bed, unweighted RMS
SPEECH_PEAK_DBFS = -1.5
CLICK_PEAK_DBFS = -0.5
RT60_S = 0.44  # nominal mid-band decay; the broadband T20 of the result is ~0.4 s
ROOM_M = (5.2, 4.1, 2.7)
MIC_M = (2.1, 1.7, 1.2)
SOURCE_M = {"A": (2.55, 1.95, 1.3), "B": (3.3, 2.6, 1.35)}  # A ~0.5 m, B ~1.5 m from the mic
SPEED_OF_SOUND = 343.0
FLITE_VOICES = ("slt", "rms", "kal")


@dataclass
class Utterance:
    speaker: str
    audio: np.ndarray  # dry, 48 kHz, float64


# --------------------------------------------------------------------------------------------------
# Speech


def _read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    return audio.mean(axis=1), sr


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(f"{program} is not installed (apt-get install {program})")
    return path


def _espeak(text: str, pitch: int, rate: int) -> tuple[np.ndarray, int]:
    exe = _need("espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "a.wav")
        subprocess.run(
            [exe, "-v", "en-us", "-p", str(pitch), "-s", str(rate), "-w", wav, text],
            check=True,
            capture_output=True,
        )
        return _read_wav_bytes(Path(wav).read_bytes())


def _flite_voice() -> str:
    exe = _need("flite")
    out = subprocess.run([exe, "-lv"], check=True, capture_output=True, text=True).stdout.split()
    for voice in FLITE_VOICES:
        if voice in out:
            return voice
    return "kal"


def _flite(text: str, voice: str) -> tuple[np.ndarray, int]:
    exe = _need("flite")
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "b.wav")
        subprocess.run([exe, "-voice", voice, "-t", text, "-o", wav], check=True, capture_output=True)
        return _read_wav_bytes(Path(wav).read_bytes())


def _trim(x: np.ndarray, sr: int, threshold_db: float = -50.0, pad_s: float = 0.03) -> np.ndarray:
    """Cut leading and trailing near-silence from a TTS rendering."""
    env = np.abs(x)
    thr = np.max(env) * 10.0 ** (threshold_db / 20.0)
    idx = np.flatnonzero(env > thr)
    if idx.size == 0:
        return x
    pad = int(pad_s * sr)
    return x[max(0, idx[0] - pad) : idx[-1] + pad]


def synthesize_speech(rng: np.random.Generator) -> list[Utterance]:
    voice = _flite_voice()
    out: list[Utterance] = []
    for speaker, text in SCRIPT:
        if speaker == "A":
            pitch = int(rng.integers(32, 48))
            rate = int(rng.integers(168, 182))
            x, sr = _espeak(text, pitch, rate)
        else:
            x, sr = _flite(text, voice)
        x = _trim(x, sr)
        y = soxr.resample(x, sr, SR, quality="VHQ")
        # gentle 5 ms fades so trimmed edges never click
        n = min(int(0.005 * SR), y.size // 2)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
        y[:n] *= ramp
        y[-n:] *= ramp[::-1]
        out.append(Utterance(speaker, y.astype(np.float64)))
    return out


# --------------------------------------------------------------------------------------------------
# Room


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = x.size + h.size - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[:n]


def _band_split(x: np.ndarray, edges_hz: tuple[float, ...]) -> list[np.ndarray]:
    """Split ``x`` into bands with complementary raised-cosine FFT masks (they sum back to ``x``)."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1.0 / SR)
    masks = []
    lower = np.ones_like(f)
    for edge in edges_hz:
        # crossover one octave wide centred (in log frequency) on the edge
        lo, hi = edge / np.sqrt(2.0), edge * np.sqrt(2.0)
        t = np.clip((np.log(np.maximum(f, 1e-9)) - np.log(lo)) / (np.log(hi) - np.log(lo)), 0.0, 1.0)
        below = 0.5 + 0.5 * np.cos(np.pi * t)  # 1 below lo, 0 above hi
        masks.append(lower * below)
        lower = lower * (1.0 - below)
    masks.append(lower)
    return [np.fft.irfft(spec * m, x.size) for m in masks]


def room_impulse_response(
    rng: np.random.Generator, source: tuple[float, float, float], rt60: float = RT60_S
) -> np.ndarray:
    """Synthesized room impulse response, direct path at sample 0 with gain 1.

    Early part: shoebox image sources up to third order (1/r spreading, wall reflection coefficient from
    Sabine's formula for ``rt60``, fractional delays by linear interpolation). Late part: Gaussian noise
    in three bands with RT60s of 1.15x, 1x and 0.85x ``rt60`` (low, mid, high), faded in over the first
    ~25 ms after the direct sound, scaled to continue the energy decay of the early reflections.
    """
    lx, ly, lz = ROOM_M
    mic = np.array(MIC_M)
    src = np.array(source)
    volume = lx * ly * lz
    surface = 2.0 * (lx * ly + lx * lz + ly * lz)
    alpha = min(0.95, 0.161 * volume / (surface * rt60))  # Sabine absorption
    beta = np.sqrt(1.0 - alpha)

    length = int(1.5 * rt60 * SR)
    h = np.zeros(length)
    d0 = float(np.linalg.norm(src - mic))
    order = 3
    rng_i = np.arange(-order, order + 1)
    for nx in rng_i:
        for ny in rng_i:
            for nz in rng_i:
                for px in (0, 1):
                    for py in (0, 1):
                        for pz in (0, 1):
                            refl = abs(2 * nx - px) + abs(2 * ny - py) + abs(2 * nz - pz)
                            if refl > order:
                                continue
                            img = np.array(
                                [
                                    (1 - 2 * px) * src[0] + 2 * nx * lx,
                                    (1 - 2 * py) * src[1] + 2 * ny * ly,
                                    (1 - 2 * pz) * src[2] + 2 * nz * lz,
                                ]
                            )
                            d = float(np.linalg.norm(img - mic))
                            t = (d - d0) / SPEED_OF_SOUND * SR  # relative to the direct path
                            i = int(np.floor(t))
                            if i + 1 >= length:
                                continue
                            frac = t - i
                            # small random sign/gain jitter models non-rigid walls and furniture
                            jitter = 1.0 + 0.1 * rng.standard_normal() if refl else 1.0
                            g = (d0 / d) * beta**refl * jitter
                            h[i] += g * (1.0 - frac)
                            h[i + 1] += g * frac

    # late tail
    t = np.arange(length) / SR
    mix_start = 0.003  # s after the direct sound
    fade = np.clip((t - mix_start) / 0.025, 0.0, 1.0) ** 2
    noise = rng.standard_normal(length)
    bands = _band_split(noise, (500.0, 4000.0))
    tail = np.zeros(length)
    for band, scale in zip(bands, (1.15, 1.0, 0.85)):
        tail += band * np.exp(-6.9078 * t / (rt60 * scale))
    tail *= fade
    # level the tail so the early reflections' energy decay (1 ms .. 25 ms) continues into it
    early = h.copy()
    early[:3] = 0.0  # exclude the direct path
    n25 = int(0.025 * SR)
    e_early = float(np.sum(early[:n25] ** 2))
    decay = np.exp(-2 * 6.9078 * t / rt60)
    e_model = float(np.sum(decay[3:n25] * fade[3:n25]))
    density = e_early / max(e_model, 1e-12)
    tail *= np.sqrt(density * np.sum(decay * fade) / max(np.sum(tail**2), 1e-12))
    tail[:3] = 0.0
    h += tail
    # final fade of the last 10 %
    n = length // 10
    h[-n:] *= np.linspace(1.0, 0.0, n)
    return h


# --------------------------------------------------------------------------------------------------
# Noise


def _shaped_noise(rng: np.random.Generator, n: int, slope_db_per_oct: float, lo: float, hi: float) -> np.ndarray:
    """Gaussian noise with a power slope (dB/octave) between ``lo`` and ``hi`` Hz, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / SR)
    fm = np.maximum(f, 1.0)
    shape = (fm / 1000.0) ** (slope_db_per_oct / (20.0 * np.log10(2.0)))
    # soft band limits: 2nd-order-like roll-offs
    shape /= np.sqrt(1.0 + (lo / fm) ** 4)
    shape /= np.sqrt(1.0 + (f / hi) ** 4)
    shape[0] = 0.0
    y = np.fft.irfft(spec * shape, n)
    return y / np.sqrt(np.mean(y**2))


def mains_hum(rng: np.random.Generator, n: int, f0: float = 50.0) -> np.ndarray:
    """50 Hz hum with harmonics (odd ones stronger, like a ground-loop buzz), unit RMS."""
    t = np.arange(n) / SR
    y = np.zeros(n)
    # slow, tiny frequency wander (+-0.05 Hz) shared by all harmonics
    wander = 0.05 * np.sin(2 * np.pi * 0.13 * t + rng.uniform(0, 2 * np.pi))
    phase0 = 2 * np.pi * np.cumsum(f0 + wander) / SR
    # sin(k phase0 + phi) = Im(z^k e^(i phi)) with z = e^(i phase0): one complex product per
    # harmonic instead of a sine of n samples (training builds these by the thousand)
    z = np.exp(1j * phase0)
    zk = np.ones(n, dtype=np.complex128)
    for k in range(1, 16):
        amp = (1.0 if k == 1 else 0.55 / k**0.7) * (1.0 if k % 2 else 0.45)
        zk *= z
        y += amp * (zk * np.exp(1j * rng.uniform(0, 2 * np.pi))).imag
    return y / np.sqrt(np.mean(y**2))


def fan_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pink-ish broadband fan noise with a faint, wobbling blade-pass tone, unit RMS."""
    broadband = _shaped_noise(rng, n, -3.0, 60.0, 6000.0)
    t = np.arange(n) / SR
    blade = 0.08 * np.sin(2 * np.pi * 118.0 * t + 0.3 * np.sin(2 * np.pi * 0.7 * t))
    am = 1.0 + 0.05 * np.sin(2 * np.pi * 0.37 * t + rng.uniform(0, 2 * np.pi))
    y = broadband * am + blade
    return y / np.sqrt(np.mean(y**2))


def rumble(rng: np.random.Generator, n: int) -> np.ndarray:
    """Low rumble (traffic / building), energy mostly below 60 Hz, unit RMS."""
    return _shaped_noise(rng, n, -9.0, 12.0, 70.0)


def clicks(rng: np.random.Generator, n: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """A few short clicks (decaying, slightly ringing bursts), each peaking at 1.0; returns (signal, times)."""
    y = np.zeros(n)
    if n < SR // 2 or count == 0:
        return y, np.zeros(0, dtype=np.int64)
    margin = int(0.2 * SR)
    pos = np.sort(rng.choice(np.arange(margin, n - margin), size=count, replace=False))
    for p in pos:
        length = int(rng.integers(24, 96))
        k = np.arange(length)
        ring = np.sin(2 * np.pi * rng.uniform(2500, 7000) / SR * k + rng.uniform(0, 2 * np.pi))
        burst = np.exp(-k / (length / 5.0)) * (0.6 * ring + 0.4 * rng.standard_normal(length))
        burst *= rng.choice((-1.0, 1.0)) / np.max(np.abs(burst))
        y[p : p + length] += burst * rng.uniform(0.7, 1.0)
    return y, pos


# --------------------------------------------------------------------------------------------------
# Assembly


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


def _active_rms(x: np.ndarray, window_s: float = 0.02, rel_db: float = -35.0) -> float:
    """RMS over the active part of a speech signal (20 ms frames within 35 dB of the loudest frame)."""
    w = max(1, int(window_s * SR))
    n = x.size // w
    if n == 0:
        return _rms(x)
    p = (x[: n * w] ** 2).reshape(n, w).mean(axis=1)
    keep = p > p.max() * 10.0 ** (rel_db / 10.0)
    return float(np.sqrt(p[keep].mean()))


def build(seed: int = DEFAULT_SEED, seconds: float = DEFAULT_SECONDS) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(mix, clean)`` as float64 mono at 48 kHz, ``seconds`` long."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    utterances = synthesize_speech(rng)
    irs = {spk: room_impulse_response(rng, SOURCE_M[spk]) for spk in ("A", "B")}

    # lay the turns out with short, slightly random pauses; head and tail of room tone
    head = int(0.25 * SR)
    speech = np.zeros(n + SR)
    dry = np.zeros(n + SR)
    pos = head
    for i, utt in enumerate(utterances):
        wet = _fft_convolve(utt.audio, irs[utt.speaker])
        gain = 10.0 ** (SPEAKER_LEVEL_DBFS[utt.speaker] / 20.0) / _active_rms(wet)
        end = min(pos + wet.size, speech.size)
        if pos < end:
            speech[pos:end] += gain * wet[: end - pos]
            dend = min(pos + utt.audio.size, dry.size)
            dry[pos:dend] += gain * utt.audio[: dend - pos]
        pos += utt.audio.size + int(rng.uniform(0.2, 0.3) * SR)
        if i == len(utterances) - 1:
            break
    speech = speech[:n]
    dry = dry[:n]

    # steady noise bed at the target SNR against the mean active speech power of the two speakers
    speech_power = np.mean([10.0 ** (v / 10.0) for v in SPEAKER_LEVEL_DBFS.values()])
    bed = 0.55 * mains_hum(rng, n) + 1.0 * fan_noise(rng, n) + 0.6 * rumble(rng, n)
    bed *= np.sqrt(speech_power) * 10.0 ** (-SNR_DB / 20.0) / _rms(bed)
    mix = speech + bed

    # hot peaks: speech+bed peaking at SPEECH_PEAK_DBFS, then clicks up to CLICK_PEAK_DBFS
    g = 10.0 ** (SPEECH_PEAK_DBFS / 20.0) / max(np.max(np.abs(mix)), 1e-12)
    mix *= g
    dry *= g
    click_sig, click_pos = clicks(rng, n, count=max(1, int(round(seconds / 3.0))) if seconds >= 1.0 else 0)
    mix += 10.0 ** (CLICK_PEAK_DBFS / 20.0) * click_sig
    peak = np.max(np.abs(mix))
    if peak > 10.0 ** (CLICK_PEAK_DBFS / 20.0):  # a click landed on a speech peak: keep it unclipped
        s = 10.0 ** (CLICK_PEAK_DBFS / 20.0) / peak
        mix *= s
        dry *= s

    # fade the very ends (the noise bed starts and stops cleanly)
    nf = min(int(0.02 * SR), n // 4)
    ramp = np.linspace(0.0, 1.0, nf)
    mix[:nf] *= ramp
    mix[n - nf :] *= ramp[::-1]
    return mix, dry


STORED_BITS = 20  # resolution kept in the 24-bit FLAC (-120 dBFS, far below the noise bed)


def quantize(audio: np.ndarray, seed: int, bits: int = STORED_BITS) -> np.ndarray:
    """Round to ``bits`` of resolution with TPDF dither (deterministic for ``seed``).

    The low 24 - ``bits`` bits of every sample are then zero, which FLAC stores for free ("wasted
    bits"); this keeps the shipped 24-bit file under 1 MB.
    """
    rng = np.random.default_rng([seed, 0xD17])
    q = 2.0 ** (bits - 1)
    tpdf = rng.uniform(-0.5, 0.5, audio.shape) + rng.uniform(-0.5, 0.5, audio.shape)
    return np.clip(np.round(audio * q + tpdf), -q, q - 1) / q


def write_flac(path: str | os.PathLike, audio: np.ndarray) -> None:
    from hushbridge.atomic import temp_beside, through_links

    final = through_links(path)
    tmp = temp_beside(final)  # the packaged clip is never left half-written
    try:
        sf.write(str(tmp), np.clip(audio, -1.0, 1.0 - 2.0**-23), SR, subtype="PCM_24", format="FLAC")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= v <= 3600.0:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text} s: the clip must last 0.1 to 3600 s")
    return v


def _flac_path(text: str) -> str:
    if not text.lower().endswith(".flac"):
        raise argparse.ArgumentTypeError(f"{text}: the clip is written as FLAC; give a .flac name")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hushbridge.data.make_demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=_flac_path, default=str(DEFAULT_OUT),
                    help="output FLAC (default: the packaged demo.flac)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--seconds", type=_seconds, default=DEFAULT_SECONDS, help="clip length, 0.1-3600 s (default 12)")
    ap.add_argument("--clean", type=_flac_path, default=None, help="also write the dry speech, aligned, to this FLAC")
    args = ap.parse_args(argv)
    mix, dry = build(args.seed, args.seconds)
    write_flac(args.out, quantize(mix, args.seed))
    if args.clean:
        write_flac(args.clean, quantize(dry, args.seed + 1))
    print(f"wrote {args.out} ({mix.size / SR:.2f} s, {SR} Hz, seed {args.seed})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
