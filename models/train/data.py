"""On-the-fly training mixtures at 48 kHz: speech (real + TTS) in rooms, plus real and synthesized noise.

Every batch is a pure function of ``(seed, step)``: :meth:`MixtureSampler.batch` builds its generator
from ``numpy.random.default_rng([seed, step])``, so a resumed run sees exactly the batches an
uninterrupted run would have seen.

Sources
-------
- clean speech: the training side of :func:`.split.train_split` (LibriSpeech 16 kHz, LJSpeech 22.05 kHz,
  four 48 kHz VCTK speakers), resampled crop by crop to 48 kHz with soxr; plus TTS speech rendered once
  with espeak-ng (many voices/variants, pitch 20..80, rate 130..210 wpm) and flite (kal, awb, rms, slt)
  and cached in ``$HUSHBRIDGE_TRAIN_CACHE`` (default ``~/.cache/hushbridge-train``), never in the repo;
- noise: the real training recordings of :func:`.split.train_split`, plus colored noise (-9..+3 dB/oct),
  mains hum (50/60 Hz with harmonics), fans, rumble, clicks (generators reused from
  :mod:`hushbridge.data.make_demo`) and babble (3..6 other training speakers summed);
- rooms: the measured training RIR plus a pool of image-source RIRs from
  :func:`hushbridge.data.make_demo.room_impulse_response` with varied source position and RT60
  (0.15..0.9 s), each also time-scaled by 0.6..1.6 (a smaller/larger room), plus (``pra_rir_count``)
  shoebox rooms simulated with pyroomacoustics (:func:`pra_rirs`).

Target
------
The *early-reverberant* clean speech: speech convolved with the first 50 ms of the RIR (direct path
and early reflections, faded out over 10 ms). The denoiser removes noise and the late tail that
smears words, but keeps the early room sound, which is part of the voice's timbre (full dereverb is a
separate effect).

Band limits
-----------
Most real speech here is 8 kHz (16 kHz files) or 11 kHz (LJSpeech, espeak-ng) band-limited. Each
mixture carries ``band_hz``, the highest frequency where its clean target is known to be complete.
The loss ignores bins above ``band_hz`` in frames where the clean speech is active, but keeps them in
frames where it is silent (there the target is silence at every frequency). So the high band learns
"remove noise in pauses" from all data and "keep speech" only from the full-band clips (VCTK 48 kHz),
instead of learning to cut everything above 8 kHz. Band-limit augmentation (low-passing noisy and clean
alike) teaches the model that band-limited input is normal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from hushbridge.data import make_demo as demo

from .split import train_split

SR = 48_000

_SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We recorded the whole episode in one take, without a single retake.",
    "Turn the gain down a little, the microphone is clipping on the loud parts.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "Our meeting starts at nine thirty sharp, so do not be late again tomorrow.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "The weather forecast says heavy rain in the north and sunshine in the south.",
    "Thank you all for joining the stream today, we have a great show for you.",
    "Six thick thistle sticks, six thick thistles stick.",
    "A large fawn jumped quickly over white zinc boxes.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "Is this the right way to the train station, or should I take the bus instead?",
    "Numbers like three hundred and forty two, or seven point five, are hard to hear in noise.",
    "Hello everyone, welcome back to the channel. Today we talk about audio.",
    "Shh, listen carefully: the faint hiss fades slowly into silence.",
    "Fricatives such as s, sh, f and th carry most of their energy at high frequencies.",
    "Zebras zigzag zealously across the zoo's fuzzy zone.",
    "Can you hear me now? Yes, loud and clear, but there is a fan in the background.",
    "The old clock on the wall ticked louder than the rain outside.",
)

_ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-029")
_ESPEAK_VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5",
                    "+croak", "+klatt", "+klatt2", "+klatt3")
_FLITE_VOICES = ("kal", "awb", "rms", "slt")


def cache_dir() -> Path:
    """``$HUSHBRIDGE_TRAIN_CACHE`` or ``~/.cache/hushbridge-train`` (outside the repository)."""
    d = Path(os.environ.get("HUSHBRIDGE_TRAIN_CACHE", Path.home() / ".cache" / "hushbridge-train"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass
class Clip:
    """Mono float32 audio at its native rate, with the frequency up to which it has real content."""

    audio: np.ndarray
    sr: int
    band_hz: float
    name: str = ""


def estimate_band_hz(x: np.ndarray, sr: int) -> float:
    """Highest frequency whose long-term level is within 60 dB of the spectrum's 1..4 kHz level."""
    n = 2048
    if x.size < n:
        return sr / 2.0
    frames = x[: (x.size // n) * n].reshape(-1, n) * np.hanning(n)
    p = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    f = np.fft.rfftfreq(n, 1.0 / sr)
    ref = np.median(p[(f > 1000) & (f < 4000)])
    # smooth over ~200 Hz, then take the highest bin above ref - 60 dB
    k = max(1, int(200 / (sr / n)))
    ps = np.convolve(p, np.ones(k) / k, mode="same")
    above = np.flatnonzero(ps > ref * 1e-6)
    top = float(f[above[-1]]) if above.size else sr / 2.0
    return min(top, sr / 2.0) * 0.97


def load_clip(path: Path) -> Clip:
    """Read ``path`` as mono float32 (cached as .npy in :func:`cache_dir`)."""
    st = path.stat()
    # the whole path: the paired sets hold a clean and a noisy file of one name, size and time
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    cpath = cache_dir() / "audio" / f"{path.stem}-{key}.npz"
    if cpath.exists():
        z = np.load(cpath)
        return Clip(z["audio"], int(z["sr"]), float(z["band_hz"]), path.name)
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1).astype(np.float32)
    band = estimate_band_hz(mono, sr)
    _save_npz(cpath, audio=mono, sr=sr, band_hz=band)
    return Clip(mono, sr, band, path.name)


def _save_npz(path: Path, **arrays) -> None:
    """``np.savez`` through a temp file of this process, then a rename: several training processes
    (an A/B, the batch workers) fill the cache at once, and none may read a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _run_tts(cmd: list[str], wav: str) -> tuple[np.ndarray, int]:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


def tts_clips(count: int = 160, seed: int = 1234) -> list[Clip]:
    """Render (once) and load ``count`` TTS utterances with varied voices, pitch and rate."""
    d = cache_dir() / f"tts-{count}-{seed}"
    done = d / "done"
    if not done.exists():
        d.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        espeak = shutil.which("espeak-ng")
        flite = shutil.which("flite")
        if espeak is None and flite is None:
            raise RuntimeError("neither espeak-ng nor flite is installed (apt-get install espeak-ng flite)")
        with tempfile.TemporaryDirectory() as tmp:
            wav = os.path.join(tmp, "t.wav")
            for i in range(count):
                k = rng.integers(2, 5)
                text = " ".join(_SENTENCES[j] for j in rng.choice(len(_SENTENCES), size=k, replace=False))
                use_flite = flite is not None and (espeak is None or rng.random() < 0.3)
                if use_flite:
                    voice = _FLITE_VOICES[rng.integers(len(_FLITE_VOICES))]
                    stretch = rng.uniform(0.8, 1.25)
                    x, sr = _run_tts([flite, "-voice", voice, "--setf", f"duration_stretch={stretch:.2f}",
                                      "--setf", f"int_f0_target_mean={rng.uniform(80, 220):.0f}",
                                      "-t", text, "-o", wav], wav)
                else:
                    voice = _ESPEAK_VOICES[rng.integers(len(_ESPEAK_VOICES))]
                    voice += _ESPEAK_VARIANTS[rng.integers(len(_ESPEAK_VARIANTS))]
                    x, sr = _run_tts([espeak, "-v", voice, "-p", str(rng.integers(20, 81)),
                                      "-s", str(rng.integers(130, 211)), "-a", "120", "-w", wav, text], wav)
                _save_npz(d / f"{i:04d}.npz", audio=x.astype(np.float32), sr=sr)
        done.write_text("ok\n")
    out = []
    for p in sorted(d.glob("*.npz")):
        z = np.load(p)
        sr = int(z["sr"])
        out.append(Clip(z["audio"], sr, 0.97 * sr / 2.0, p.name))
    return out


# --------------------------------------------------------------------------------------------------
# Signal helpers


# General MIDI programs (0-based) for synthesized music: pads, keys, guitars, strings, brass,
# reeds, pipes, and the voice-like ones (choir, voice oohs, synth voice) that a voice isolator must
# not take for speech
_GM_CHORDS = (0, 1, 4, 5, 16, 19, 24, 25, 26, 27, 46, 48, 49, 50, 52, 53, 54, 88, 89, 90, 91, 94)
_GM_MELODY = (0, 6, 11, 12, 13, 21, 22, 40, 41, 42, 56, 57, 60, 64, 65, 66, 68, 71, 73, 74, 75,
              80, 81, 85, 104, 105, 109)
_GM_BASS = (32, 33, 34, 35, 36, 38, 39, 43)
_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")


def random_midi(rng: np.random.Generator, seconds: float, version: int = 2):
    """A random piece as a ``mido.MidiFile``: chords, bass, a melody and (mostly) drums, in one key
    at one tempo, with human-ish velocities. ``version`` 1 is the first generator, which wrote the
    tempo into the chord part only, so a piece without chords (1 in 6) played at MIDI's default
    120 bpm and ran shorter or longer than ``seconds`` (the isolate model's first run trained on
    it); 2 writes it into a track of its own. Both draw the same random numbers."""
    import mido  # a runtime dependency already

    bpm = float(rng.uniform(60, 170))
    tpb = 480
    mid = mido.MidiFile(ticks_per_beat=tpb)
    if version >= 2:
        mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))]))
    beats = int(seconds * bpm / 60) + 1
    root = int(rng.integers(40, 52))
    scale = np.array((0, 2, 4, 5, 7, 9, 11) if rng.random() < 0.6 else (0, 2, 3, 5, 7, 8, 10))
    degrees = rng.integers(0, 7, size=beats // 4 + 2)  # one chord per bar

    def track(channel: int, program: int | None, notes: list[tuple[float, float, int, int]]):
        t = mido.MidiTrack()
        mid.tracks.append(t)
        if channel == 0 and version < 2:
            t.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
        if program is not None:
            t.append(mido.Message("program_change", channel=channel, program=program))
        t.append(mido.Message("control_change", channel=channel, control=10, value=int(rng.integers(20, 108))))
        events = []
        for start, dur, note, vel in notes:
            events.append((int(start * tpb), 1, note, vel))
            events.append((int((start + dur) * tpb), 0, note, 0))
        now = 0
        for tick, on, note, vel in sorted(events):
            kind = "note_on" if on else "note_off"
            t.append(mido.Message(kind, channel=channel, note=int(np.clip(note, 0, 127)), velocity=int(vel),
                                  time=tick - now))
            now = tick

    def chord_notes(bar: int) -> list[int]:
        d = int(degrees[bar])
        return [root + 12 + int(scale[(d + k) % 7]) + 12 * ((d + k) // 7) for k in (0, 2, 4)]

    parts = 0
    if rng.random() < 0.85:  # chords
        style = rng.integers(3)
        notes = []
        for bar in range(beats // 4 + 1):
            for n in chord_notes(bar):
                if style == 0:  # held
                    notes.append((bar * 4.0, 3.9, n, int(rng.integers(50, 90))))
                else:  # struck on beats / off-beats
                    for b in range(4):
                        notes.append((bar * 4 + b + (0.5 if style == 2 else 0.0), 0.45, n, int(rng.integers(45, 100))))
        track(0, int(rng.choice(_GM_CHORDS)), notes)
        parts += 1
    if rng.random() < 0.75:  # bass on the chord roots
        notes = [(bar * 4.0 + b, 0.9, chord_notes(bar)[0] - 24, int(rng.integers(60, 110)))
                 for bar in range(beats // 4 + 1) for b in range(0, 4, int(rng.choice((1, 2))))]
        track(1, int(rng.choice(_GM_BASS)), notes)
        parts += 1
    if rng.random() < 0.8 or parts == 0:  # a melody: a random walk on the scale
        notes, t, pos = [], 0.0, int(rng.integers(7, 14))
        while t < beats:
            dur = float(rng.choice((0.25, 0.5, 0.5, 1.0, 1.0, 1.5, 2.0)))
            pos = int(np.clip(pos + rng.integers(-2, 3), 0, 20))
            if rng.random() > 0.15:  # rests
                notes.append((t, dur * 0.95, root + 12 + int(scale[pos % 7]) + 12 * (pos // 7), int(rng.integers(60, 115))))
            t += dur
        track(2, int(rng.choice(_GM_MELODY)), notes)
    if rng.random() < 0.7:  # drums (channel 10): kick, snare, hats
        notes = []
        for b in range(beats):
            if b % 2 == 0 or rng.random() < 0.15:
                notes.append((float(b), 0.2, 36, int(rng.integers(80, 120))))
            if b % 2 == 1:
                notes.append((float(b), 0.2, int(rng.choice((38, 40, 39))), int(rng.integers(70, 115))))
            for h in (0.0, 0.5):
                notes.append((b + h, 0.1, int(rng.choice((42, 42, 44, 46))), int(rng.integers(40, 90))))
        track(9, None, notes)
    return mid


def synth_music(count: int, seed: int, seconds: float = 20.0, version: int = 2) -> list[Clip]:
    """``count`` random pieces (:func:`random_midi` of ``version``) rendered at 48 kHz by FluidSynth
    with a General MIDI SoundFont (apt ``fluidsynth fluid-soundfont-gm``), cached like the TTS clips
    under a name that holds the SoundFont's (real path and size: another font is other music)."""
    if count <= 0:
        return []
    sf2 = next((f for f in _SOUNDFONTS if os.path.exists(f)), None)
    font = hashlib.sha1(f"{os.path.realpath(sf2)}:{os.path.getsize(sf2)}".encode()).hexdigest()[:8] if sf2 else "none"
    path = cache_dir() / f"music-v{version}-{count}-{seed}-{seconds:g}-{font}.npz"
    if path.exists():
        z = np.load(path)
        return [Clip(z[k], SR, SR / 2, k) for k in sorted(z.files)]
    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth is None or sf2 is None:
        raise RuntimeError("data.synth_music_count > 0 needs FluidSynth and a General MIDI SoundFont "
                           "(apt install fluidsynth fluid-soundfont-gm); with 0 only the real music plays")
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as td:
        for i in range(count):
            mid_p, wav_p = os.path.join(td, "m.mid"), os.path.join(td, "m.wav")
            random_midi(rng, seconds, version).save(mid_p)
            subprocess.run([fluidsynth, "-ni", "-q", "-g", "0.5", "-r", str(SR), "-F", wav_p, sf2, mid_p],
                           check=True, capture_output=True, timeout=300)
            x, sr = sf.read(wav_p, dtype="float32", always_2d=True)
            x = x.mean(axis=1)[: int(seconds * sr)]
            if sr != SR:
                x = soxr.resample(x, sr, SR, quality="HQ")
            out[f"m{i:03d}"] = (x / (np.sqrt(np.mean(x**2)) + 1e-9) * 0.05).astype(np.float32)
    _save_npz(path, **out)
    return [Clip(out[k], SR, SR / 2, k) for k in sorted(out)]


def active_rms(x: np.ndarray, rel_db: float = -35.0) -> float:
    """RMS over 20 ms frames within ``rel_db`` of the loudest frame."""
    w = SR // 50
    n = x.size // w
    if n == 0:
        return float(np.sqrt(np.mean(x**2) + 1e-20))
    p = (x[: n * w] ** 2).reshape(n, w).mean(axis=1)
    keep = p > p.max() * 10.0 ** (rel_db / 10.0)
    if not keep.any():  # digital silence: no frame is "active" (the mean of none is NaN)
        return float(np.sqrt(np.mean(x**2) + 1e-20))
    return float(np.sqrt(p[keep].mean() + 1e-20))


def random_eq(rng: np.random.Generator, x: np.ndarray, max_db: float = 6.0) -> np.ndarray:
    """A smooth random EQ curve (a few log-frequency bumps/shelves, within +-max_db), FFT domain."""
    n = x.size
    f = np.fft.rfftfreq(n, 1.0 / SR)
    lf = np.log2(np.maximum(f, 20.0) / 1000.0)
    curve = np.zeros_like(f)
    for _ in range(rng.integers(1, 4)):
        c = rng.uniform(-4.0, 3.5)  # 60 Hz .. 11 kHz
        wdt = rng.uniform(0.5, 2.5)
        curve += rng.uniform(-max_db, max_db) * np.exp(-0.5 * ((lf - c) / wdt) ** 2)
    if rng.random() < 0.5:  # shelf
        curve += rng.uniform(-max_db, max_db) / (1.0 + np.exp(-(lf - rng.uniform(0.0, 3.0)) * 3.0))
    return np.fft.irfft(np.fft.rfft(x) * 10.0 ** (curve / 20.0), n).astype(np.float32)


def lowpass(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """Steep FFT low-pass with a 5 % raised-cosine transition."""
    n = x.size
    f = np.fft.rfftfreq(n, 1.0 / SR)
    lo, hi = cutoff_hz * 0.95, cutoff_hz
    m = np.clip((hi - f) / (hi - lo), 0.0, 1.0)
    m = 0.5 - 0.5 * np.cos(np.pi * m)
    return np.fft.irfft(np.fft.rfft(x) * m, n).astype(np.float32)


def fast_fft_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= ``n`` (pocketfft is fastest on such sizes; often far below the next
    power of two)."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _fftconv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = x.size + h.size - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[: x.size].astype(np.float32)


def crop_48k(rng: np.random.Generator, clip: Clip, n: int, speed: float = 1.0) -> np.ndarray:
    """A random ``n``-sample crop of ``clip`` at 48 kHz (looped when the clip is shorter).

    ``speed`` plays the clip that much faster (tempo and pitch together, as a tape would: the
    Kaldi-style speed perturbation that makes new voices out of few speakers); its content's band
    scales with it."""
    sr = clip.sr * float(speed)
    need = int(np.ceil(n * sr / SR)) + 64
    a = clip.audio
    if a.size < need:
        a = np.tile(a, int(np.ceil(need / max(a.size, 1))) + 1)
    start = int(rng.integers(0, a.size - need + 1))
    seg = a[start : start + need]
    y = seg if sr == SR else soxr.resample(seg, sr, SR, quality="HQ")
    if y.size < n:
        y = np.pad(y, (0, n - y.size))
    return np.ascontiguousarray(y[:n], dtype=np.float32)


def prepare_rir(h: np.ndarray, sr: int) -> np.ndarray:
    """Mono RIR at 48 kHz, cut so the direct path (the peak) sits at sample 0, peak-normalized."""
    if sr != SR:
        h = soxr.resample(h.astype(np.float64), sr, SR, quality="HQ")
    peak = int(np.argmax(np.abs(h)))
    h = h[max(0, peak - 2) :]
    h = h[: int(1.5 * SR)]
    return (h / (np.max(np.abs(h)) + 1e-12)).astype(np.float32)


def early_part(h: np.ndarray, ms: float = 50.0, fade_ms: float = 10.0) -> np.ndarray:
    """The first ``ms`` of an RIR, faded out over ``fade_ms``."""
    n = int(ms * SR / 1000)
    nf = int(fade_ms * SR / 1000)
    e = h[:n].copy()
    if e.size > nf:
        e[-nf:] *= 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, nf))
    return e


def _cached_rooms(name: str, make) -> list[np.ndarray]:
    """The rooms in ``cache_dir() / name`` (npz), made by ``make()`` -> {key: rir} the first time."""
    path = cache_dir() / name
    if path.exists():
        z = np.load(path)
        return [z[k] for k in sorted(z.files)]
    out = make()
    _save_npz(path, **out)
    return [out[k] for k in sorted(out)]


def synth_rirs(count: int, seed: int) -> list[np.ndarray]:
    """Image-source rooms (make_demo's generator), varied source position, RT60 and room scale."""
    def make() -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        out = {}
        for i in range(count):
            src = (rng.uniform(0.4, 4.8), rng.uniform(0.4, 3.7), rng.uniform(1.0, 2.0))
            h = demo.room_impulse_response(rng, src, rt60=float(rng.uniform(0.15, 0.9)))
            scale = rng.uniform(0.6, 1.6)  # resampling the response in time scales the room
            h = soxr.resample(h, SR, int(SR * scale), quality="HQ")
            out[f"r{i:03d}"] = prepare_rir(h, SR)
        return out

    return _cached_rooms(f"rirs-{count}-{seed}.npz", make)


def pra_rirs(count: int, seed: int) -> list[np.ndarray]:
    """Shoebox rooms simulated with pyroomacoustics (image source method, wall absorption from
    Sabine's formula for the drawn RT60, air absorption): 2.5..12 m rooms, RT60 0.15..1.0 s,
    source and microphone at least 0.5 m from the walls and 0.3..4 m apart. Cached like
    :func:`synth_rirs`."""
    def make() -> dict[str, np.ndarray]:
        import pyroomacoustics as pra  # the [train] extra

        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        while len(out) < count:
            dims = np.array([rng.uniform(2.5, 12.0), rng.uniform(2.5, 9.0), rng.uniform(2.3, 4.5)])
            rt60 = float(rng.uniform(0.15, 1.0))
            try:
                absorption, order = pra.inverse_sabine(rt60, dims)
            except ValueError:  # the room is too small for that RT60
                continue
            src = rng.uniform(0.5, dims - 0.5)
            mic = rng.uniform(0.5, dims - 0.5)
            if not 0.3 <= np.linalg.norm(src - mic) <= 4.0:
                continue
            room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(absorption), max_order=min(order, 40),
                               air_absorption=True)
            room.add_source(src)
            room.add_microphone(mic)
            room.compute_rir()
            out[f"p{len(out):03d}"] = prepare_rir(np.asarray(room.rir[0][0], dtype=np.float64), SR)
        return out

    return _cached_rooms(f"pra-rirs-{count}-{seed}.npz", make)


# --------------------------------------------------------------------------------------------------
# Mixtures


@dataclass
class MixConfig:
    """Mixture settings (the ``[data]`` table of the training config)."""

    seconds: float = 2.0
    snr_db: tuple[float, float] = (-5.0, 25.0)
    level_dbfs: tuple[float, float] = (-45.0, -12.0)
    p_tts: float = 0.25
    p_reverb: float = 0.5
    p_real_noise: float = 0.6
    p_second_noise: float = 0.35
    p_no_speech: float = 0.05
    p_eq: float = 0.5
    p_bandlimit: float = 0.15
    # speed perturbation of the clean speech (all sources): with probability ``p_speed`` a factor
    # drawn uniformly from ``speed_range`` (0 keeps the random draws of older configs unchanged)
    p_speed: float = 0.0
    speed_range: tuple[float, float] = (0.9, 1.1)
    # the real noise recordings are few (30 on the training side): with probability ``p_noise_aug``
    # one plays at a speed from ``noise_speed_range`` (its spectrum and rhythm shift) through a random
    # EQ of up to ``noise_eq_db`` (0 keeps the random draws of older configs unchanged)
    p_noise_aug: float = 0.0
    noise_speed_range: tuple[float, float] = (0.8, 1.25)
    noise_eq_db: float = 9.0
    # every ``dev_noise_every``-th training-side noise recording (by sorted name, from the middle of
    # each group) stays out of the training pool: select --dev-noises N scores on mixtures of them, noise
    # the model never heard, without touching the evaluation split (0: all train)
    dev_noise_every: int = 0
    tts_count: int = 160
    synth_rir_count: int = 60
    pra_rir_count: int = 0
    pra_from_step: int = 0
    early_ms: float = 50.0
    # music as the noise (voice isolation): with probability ``p_music`` a noise is music, a real
    # training-side recording with probability ``p_real_music``, else one of ``synth_music_count``
    # synthesized pieces (:func:`synth_music`); 0 keeps the random draws of older configs unchanged
    p_music: float = 0.0
    p_real_music: float = 0.3
    synth_music_count: int = 0
    synth_music_version: int = 2  # :func:`random_midi`'s; 1 reproduces the isolate model's first run
    extra: dict = field(default_factory=dict)


def split_dev_noise(noise: list[Clip], every: int) -> tuple[list[Clip], list[Clip]]:
    """``(training pool, dev pool)``: every ``every``-th clip (index ``every // 2``, ``every // 2 +
    every``, ... of the sorted list) goes to the dev pool; ``every`` 0 keeps them all for training."""
    if every <= 0:
        return list(noise), []
    dev = [c for i, c in enumerate(noise) if i % every == every // 2]
    return [c for i, c in enumerate(noise) if i % every != every // 2], dev


class MixtureSampler:
    """Builds (noisy, target, band_hz) mixtures from the training split and synthesized material."""

    def __init__(self, cfg: MixConfig, seed: int, root: str | os.PathLike | None = None, verbose: bool = True,
                 pack: str | os.PathLike | None = None):
        self.cfg = cfg
        self.seed = seed
        self._rir_spectra: dict[tuple[int, int], np.ndarray] = {}
        if pack is not None:  # the pools as :mod:`.pack` wrote them (a machine without ../shared)
            from .pack import load_pack

            load_pack(self, Path(pack), verbose)
            return
        split = train_split(root)
        if verbose:
            print(f"data: {len(split.speech)} speech, {len(split.noise)} noise, {len(split.rirs)} RIR files "
                  f"(training side of the fixed split); loading/caching ...", flush=True)
        self.speech = [load_clip(p) for p in split.speech]
        self.tts = tts_clips(cfg.tts_count) if cfg.p_tts > 0 else []
        self.noise = [load_clip(p) for p in split.noise]
        for c in self.noise:  # some recordings are very quiet (running tap): normalise once
            c.audio = (c.audio / (np.sqrt(np.mean(c.audio**2)) + 1e-9) * 0.05).astype(np.float32)
        self.real_music = [load_clip(p) for p in split.music] if cfg.p_music > 0 else []
        for c in self.real_music:
            c.audio = (c.audio / (np.sqrt(np.mean(c.audio**2)) + 1e-9) * 0.05).astype(np.float32)
        self.synth_music = (synth_music(cfg.synth_music_count, seed=seed + 13, version=cfg.synth_music_version)
                            if cfg.p_music > 0 else [])
        if cfg.p_music > 0 and not (self.real_music or self.synth_music):
            raise ValueError("data.p_music > 0 but there is no music (no music/ files, synth_music_count 0)")
        self.rirs = [prepare_rir(load_clip(p).audio, load_clip(p).sr) for p in split.rirs]
        self.rirs += synth_rirs(cfg.synth_rir_count, seed=seed + 7)
        # pyroomacoustics rooms join the pool from ``pra_from_step`` on (added to a run in progress)
        self.rirs_from_step = len(self.rirs), cfg.pra_from_step
        if cfg.pra_rir_count:
            self.rirs += pra_rirs(cfg.pra_rir_count, seed=seed + 11)
        # full-band speech (48 kHz VCTK) is rare: sample it more often so the high band learns speech
        self.wide = [c for c in self.speech if c.band_hz > 15000]
        self.noise, self.dev_noise = split_dev_noise(self.noise, cfg.dev_noise_every)
        if verbose:
            total = sum(c.audio.size / c.sr for c in self.speech)
            print(f"data: {total / 60:.1f} min real speech ({len(self.wide)} full-band clips), "
                  f"{len(self.tts)} TTS clips, {sum(c.audio.size / c.sr for c in self.noise) / 60:.1f} min "
                  f"real noise, {len(self.rirs)} RIRs"
                  + (f", {len(self.real_music)} real + {len(self.synth_music)} synthesized music pieces"
                     if cfg.p_music > 0 else ""), flush=True)

    # ---- pieces

    def _speech(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
        r = rng.random()
        if self.wide and r < 0.15:
            clip = self.wide[rng.integers(len(self.wide))]
        elif self.tts and r < 0.15 + self.cfg.p_tts:
            clip = self.tts[rng.integers(len(self.tts))]
        else:
            clip = self.speech[rng.integers(len(self.speech))]
        speed = 1.0
        if self.cfg.p_speed > 0 and rng.random() < self.cfg.p_speed:
            speed = float(rng.uniform(*self.cfg.speed_range))
        x = crop_48k(rng, clip, n, speed)
        return x, min(clip.band_hz * speed, SR / 2)

    def _synth_noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        kind = rng.integers(6)
        if kind == 0:  # colored noise, slope -9..+3 dB/oct, random band
            x = demo._shaped_noise(rng, n, rng.uniform(-9.0, 3.0), rng.uniform(20, 300), rng.uniform(3000, 23000))
        elif kind == 1:  # mains hum 50/60 Hz with harmonics, plus a little hiss
            x = demo.mains_hum(rng, n, f0=float(rng.choice((50.0, 60.0))) * rng.uniform(0.995, 1.005))
            x = x + 0.05 * rng.standard_normal(n)
        elif kind == 2:
            x = demo.fan_noise(rng, n)
        elif kind == 3:
            x = demo.rumble(rng, n) + 0.3 * demo._shaped_noise(rng, n, -3.0, 50.0, 8000.0)
        elif kind == 4:  # clicks over a faint bed
            c, _ = demo.clicks(rng, n, count=int(rng.integers(1, 6)))
            x = c + 0.02 * rng.standard_normal(n)
        else:  # babble: 3..6 other speakers
            x = np.zeros(n, dtype=np.float32)
            for _ in range(rng.integers(3, 7)):
                s, _ = self._speech(rng, n)
                x += s / (active_rms(s) + 1e-6)
        return x.astype(np.float32)

    def _music(self, rng: np.random.Generator, n: int) -> np.ndarray:
        real = self.real_music and (not self.synth_music or rng.random() < self.cfg.p_real_music)
        pool = self.real_music if real else self.synth_music
        x = crop_48k(rng, pool[rng.integers(len(pool))], n)
        return random_eq(rng, x) if rng.random() < 0.5 else x

    def _noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        cfg = self.cfg
        if cfg.p_music > 0 and rng.random() < cfg.p_music:
            x = self._music(rng, n)
        elif self.noise and rng.random() < cfg.p_real_noise:
            clip = self.noise[rng.integers(len(self.noise))]
            if cfg.p_noise_aug > 0 and rng.random() < cfg.p_noise_aug:
                x = crop_48k(rng, clip, n, float(rng.uniform(*cfg.noise_speed_range)))
                x = random_eq(rng, x, cfg.noise_eq_db)
            else:
                x = crop_48k(rng, clip, n)
        else:
            x = self._synth_noise(rng, n)
        return x / (np.sqrt(np.mean(x**2)) + 1e-9)

    def _reverb(self, x: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``x`` in room ``index``: (whole response, early part) convolutions, one FFT of ``x`` for
        both, the room's two spectra cached (per process: about 1.4 MB per room at 2 s mixtures)."""
        h = self.rirs[index]
        nfft = fast_fft_len(x.size + h.size - 1)
        key = (index, nfft)
        spectra = self._rir_spectra.get(key)
        if spectra is None:
            spectra = np.stack([np.fft.rfft(h, nfft), np.fft.rfft(early_part(h, self.cfg.early_ms), nfft)])
            self._rir_spectra[key] = spectra
        y = np.fft.irfft(np.fft.rfft(x, nfft)[None, :] * spectra, nfft, axis=-1)[:, : x.size]
        return y[0].astype(np.float32), y[1].astype(np.float32)

    # ---- one mixture

    def mixture(self, rng: np.random.Generator, step: int | None = None, parts: bool = False) -> tuple:
        """One ``(noisy, target, band_hz)``; arrays float32 of ``seconds * 48000`` samples.

        ``parts`` adds the speech part of ``noisy`` (``noisy - speech`` is its noise) and the level that
        the SNR refers to (active speech RMS; the noise RMS in a noise-only mixture), for :func:`remix`.
        The random draws are the same either way."""
        cfg = self.cfg
        base, from_step = self.rirs_from_step
        rirs = self.rirs[:base] if step is not None and step < from_step else self.rirs
        n = int(round(cfg.seconds * SR))
        speech, band = self._speech(rng, n)
        if rng.random() < cfg.p_eq:
            speech = random_eq(rng, speech)
        if rng.random() < cfg.p_reverb:
            wet, target = self._reverb(speech, int(rng.integers(len(rirs))))
        else:
            wet = speech
            target = speech.copy()
        noise = self._noise(rng, n)
        if rng.random() < cfg.p_second_noise:
            noise = noise + rng.uniform(0.2, 1.0) * self._noise(rng, n)
            noise /= np.sqrt(np.mean(noise**2)) + 1e-9
        snr = rng.uniform(*cfg.snr_db)
        s_rms = active_rms(wet)
        if s_rms < 1e-6:  # a crop of digital silence (a short crop of a padded file): noise alone, at level
            s_rms = 1.0
        noise = noise * (s_rms * 10.0 ** (-snr / 20.0))
        if rng.random() < cfg.p_no_speech:
            wet = wet * 0.0
            target = target * 0.0
            s_rms = float(np.sqrt(np.mean(noise**2)))
        noisy = wet + noise
        if rng.random() < cfg.p_bandlimit:
            fc = float(rng.choice((4000.0, 6000.0, 8000.0, 11025.0, 16000.0)))
            noisy = lowpass(noisy, fc)
            target = lowpass(target, fc)
            band = min(band, fc)
            if parts:
                wet = lowpass(wet, fc)
        g = 10.0 ** (rng.uniform(*cfg.level_dbfs) / 20.0) / (s_rms + 1e-9)
        noisy = noisy * g
        target = target * g
        peak = float(np.max(np.abs(noisy)))
        if peak > 0.99:
            noisy *= 0.99 / peak
            target *= 0.99 / peak
            g *= 0.99 / peak
        if parts:
            return (noisy.astype(np.float32), target.astype(np.float32), float(band),
                    (wet * g).astype(np.float32), float(s_rms * g))
        return noisy.astype(np.float32), target.astype(np.float32), float(band)

    def batch(self, step: int, batch_size: int, stream: int = 0, parts: bool = False) -> tuple[np.ndarray, ...]:
        """Batch ``step`` (deterministic in seed, stream and step): noisy, target [B, n], band_hz [B]
        (``parts``: + speech part [B, n] and level [B], see :meth:`mixture`)."""
        rng = np.random.default_rng([self.seed, stream, step])
        items = [self.mixture(rng, step, parts) for _ in range(batch_size)]
        out = (np.stack([i[0] for i in items]), np.stack([i[1] for i in items]),
               np.array([i[2] for i in items], dtype=np.float32))
        if parts:
            out += (np.stack([i[3] for i in items]), np.array([i[4] for i in items], dtype=np.float32))
        return out

