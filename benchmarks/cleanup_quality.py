"""Quality of the dereverb and voice-isolation models on the evaluation split.

    python benchmarks/cleanup_quality.py --task dereverb [--n 16] [--seconds 4] [--systems ...]
    python benchmarks/cleanup_quality.py --task isolate [--n-per-snr 4] [--seconds 4] [--systems ...]
                                         [--model PATH] [--no-dnsmos] [--seed 0]

Metrics as ``benchmarks/quality.py`` computes them (16 kHz): PESQ wide band, STOI, SI-SDR against the
reference, DNSMOS P.835 (SIG/BAK/OVRL, no reference). Every system's output is time-aligned the same
way (its own latency trimmed; the residual lag is reported in ``settings``).

Sets (held-out speakers of ``hushbridge.models.train.split.eval_split``; nothing here is in training):

- ``dereverb``: speech in the held-out measured rooms (OpenAIR medium hall, the clap RIR) and in
  shoebox rooms simulated with pyroomacoustics from a seed no training run uses (RT60 0.15..1.0 s,
  the RT60 of each room measured from its response and named in the item), plus held-out noise at
  30 dB SNR. Reference: the speech through the first 20 ms of the room (direct sound and early
  reflections, faded out from 10 ms), the dereverb model's target. Systems: the reverberant input,
  hushbridge ``dereverb``, hushbridge ``denoise`` (it keeps 50 ms of the room), WPE (``nara_wpe``,
  offline: it sees the whole file).
- ``isolate``: dry held-out speech against music at SNR 0/5/10 dB: the held-out recording (a string
  orchestra) and pieces synthesized with FluidSynth from a seed no training run uses (when
  FluidSynth and a General MIDI SoundFont are installed). Reference: the clean speech. Systems: the
  mixture, hushbridge ``isolate``, hushbridge ``denoise``, RNNoise, DTLN and GTCRN (when the anchors
  are there), noisereduce.

Output: JSON lines in ``benchmarks/results/cleanup_<task>.json`` (``baseline`` = the named system,
``ratio`` / ``delta_db`` against the task's hushbridge model) and a Markdown table in
``benchmarks/results/cleanup_<task>.md``.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, Recorder  # noqa: E402
from baselines import DTLN, GTCRN, WPE, NoiseReduce, RNNoise, build  # noqa: E402
from quality import EVAL_SR, GEN_SR, METRICS, emit_means, load, score_items  # noqa: E402

# seeds of the evaluation rooms and music: no config in models/train uses them
EVAL_ROOM_SEED = 90_001
EVAL_MUSIC_SEED = 90_002
EARLY_MS = 20.0
ISOLATE_SNRS = (0, 5, 10)
TASKS = {
    "dereverb": "input,hushbridge,denoise,wpe",
    "isolate": "input,hushbridge,denoise,rnnoise,dtln,gtcrn,noisereduce",
}


class Input:
    name, sample_rate, latency = "input", GEN_SR, 0

    def process(self, x: np.ndarray) -> np.ndarray:
        return x


class OurEffect:
    """A hushbridge model effect rendered at 48 kHz in 128-frame blocks (``render`` trims its latency)."""

    sample_rate, latency = GEN_SR, 0

    def __init__(self, effect: str, name: str, model: Path | None = None) -> None:
        from hushbridge.effects import EFFECTS

        self.name = name
        self.effect = EFFECTS[effect](model_path=model)  # ModelNotFoundError when not shipped
        self.effect.overload_budget = 0.0  # offline: never fall back to dry
        self.model_name = f"{self.effect.model.info.name} {self.effect.model.info.version}"

    def process(self, x: np.ndarray) -> np.ndarray:
        from hushbridge.effects import render

        return render(self.effect, x, GEN_SR, block_size=128)


def build_systems(task: str, names: list[str], model: Path | None) -> list:
    makers = {"input": (Input,), "hushbridge": (OurEffect, task, "hushbridge", model),
              "denoise": (OurEffect, "denoise", "denoise"), "wpe": (WPE,), "rnnoise": (RNNoise,),
              "dtln": (DTLN,), "gtcrn": (GTCRN,), "noisereduce": (NoiseReduce, EVAL_SR)}
    return build(makers, names)


def rt60_of(h: np.ndarray, sr: int = GEN_SR) -> float:
    """RT60 from the Schroeder decay of ``h`` (T20: the -5..-25 dB slope, times 3)."""
    edc = np.cumsum((h.astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0] + 1e-30)
    i5, i25 = int(np.argmax(edc_db <= -5.0)), int(np.argmax(edc_db <= -25.0))
    return 3.0 * (i25 - i5) / sr if i25 > i5 else math.nan


def _crop(rng: np.random.Generator, x: np.ndarray, n: int) -> np.ndarray:
    if len(x) < n:
        x = np.tile(x, n // max(1, len(x)) + 1)
    a = int(rng.integers(0, len(x) - n + 1))
    return x[a:a + n].astype(np.float64)


def _speech(rng: np.random.Generator, held, cache: dict, n: int) -> tuple[str, np.ndarray]:
    p = held.speech[rng.integers(len(held.speech))]
    s = cache.setdefault(p, load(p, GEN_SR))
    s = np.pad(s, (0, max(0, n - len(s))))
    return p.stem, _crop(rng, s, n)


def dereverb_items(n_items: int, seconds: float, seed: int):
    """``(name, reference, input, sr)``: held-out speech in held-out rooms, light held-out noise."""
    from scipy.signal import fftconvolve

    from hushbridge.models.train import data, split

    held = split.eval_split()
    rooms = [(p.stem, data.prepare_rir(load(p, GEN_SR), GEN_SR)) for p in held.rirs]
    rooms += [(f"shoebox{i}", h) for i, h in enumerate(data.pra_rirs(12, seed=EVAL_ROOM_SEED))]
    rng = np.random.default_rng(seed)
    n = int(seconds * GEN_SR)
    cache: dict = {}
    for k in range(n_items):
        room, h = rooms[k % len(rooms)]
        spk, s = _speech(rng, held, cache, n)
        wet = fftconvolve(s, h)[:n]
        ref = fftconvolve(s, data.early_part(h, EARLY_MS))[:n]
        nz = held.noise[rng.integers(len(held.noise))]
        z = _crop(rng, cache.setdefault(nz, load(nz, GEN_SR)), n)
        z *= math.sqrt(np.mean(wet ** 2) / (np.mean(z ** 2) + 1e-20) / 10 ** 3.0)  # 30 dB SNR
        mix = wet + z
        g = 0.5 / max(np.abs(mix).max(), 1e-9)
        yield (f"{room}_rt{rt60_of(h):.2f}_{spk}", (ref * g).astype(np.float32), (mix * g).astype(np.float32), GEN_SR)


def isolate_items(n_per_snr: int, seconds: float, seed: int):
    """``(name, reference, input, sr)``: held-out speech over held-out or freshly synthesized music."""
    from hushbridge.models.train import data, split

    held = split.eval_split()
    music = [(p.stem[:24], load(p, GEN_SR)) for p in held.music]
    try:
        music += [(f"synth{i}", c.audio) for i, c in enumerate(data.synth_music(6, seed=EVAL_MUSIC_SEED))]
    except RuntimeError as e:  # no FluidSynth here: the recording alone
        print(f"# isolate: {e}; the held-out recording only", file=sys.stderr)
    if not music:
        print("# isolate: no held-out music (../shared/data/music missing?)", file=sys.stderr)
        return
    rng = np.random.default_rng(seed)
    n = int(seconds * GEN_SR)
    cache: dict = {}
    for snr in ISOLATE_SNRS:
        for k in range(n_per_snr):
            spk, s = _speech(rng, held, cache, n)
            label, m = music[(k + snr) % len(music)]
            z = _crop(rng, m, n)
            active = s[np.abs(s) > 1e-4]
            ps = float(np.mean(active ** 2)) if active.size else float(np.mean(s ** 2))
            z *= math.sqrt(ps / (np.mean(z ** 2) + 1e-20) / 10 ** (snr / 10))
            mix = s + z
            g = 0.5 / max(np.abs(mix).max(), 1e-9)
            yield f"snr{snr}_{label}_{spk}", (s * g).astype(np.float32), (mix * g).astype(np.float32), GEN_SR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), required=True)
    ap.add_argument("--systems", default=None, help="comma-separated (default: the task's list above)")
    ap.add_argument("--n", type=int, default=16, help="dereverb: items (rooms in turn)")
    ap.add_argument("--n-per-snr", type=int, default=4, help="isolate: items per SNR")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--model", type=Path, default=None, help="the task's model (default: the shipped one)")
    ap.add_argument("--no-dnsmos", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    systems = build_systems(args.task, [s.strip() for s in (args.systems or TASKS[args.task]).split(",")
                                        if s.strip()], args.model)
    items = (dereverb_items(args.n, args.seconds, args.seed) if args.task == "dereverb"
             else isolate_items(args.n_per_snr, args.seconds, args.seed))
    scores, lags, count = score_items(items, systems, not args.no_dnsmos, args.task)
    if not count:
        print(f"# {args.task}: no items (data missing?)", file=sys.stderr)
        return 1
    rec = Recorder(f"cleanup_{args.task}")
    means = emit_means(rec, args.task, scores, lags, count, systems, {"task": args.task})
    rec.save()
    title = {"dereverb": "De-reverberation", "isolate": "Voice isolation"}[args.task]
    md = [f"# {title} quality", "",
          f"`python benchmarks/cleanup_quality.py {' '.join(argv if argv is not None else sys.argv[1:])}`, "
          f"{time.strftime('%Y-%m-%d')}, {count} items. PESQ-WB, STOI, SI-SDR against the reference at 16 kHz; "
          "onset_db: word starts after pauses against the reference's level (blank where none); "
          "DNSMOS P.835 without reference.", "",
          "| system | " + " | ".join(METRICS) + " |", "| --- |" + " ---: |" * len(METRICS)]
    for s, ms in means.items():
        md.append(f"| {s} | " + " | ".join("" if math.isnan(ms[m]) else f"{ms[m]:.3f}" for m in METRICS) + " |")
    from hushbridge.atomic import write_text_atomic

    write_text_atomic(RESULTS / f"cleanup_{args.task}.md", "\n".join(md) + "\n")
    print(f"# wrote {RESULTS / f'cleanup_{args.task}.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
