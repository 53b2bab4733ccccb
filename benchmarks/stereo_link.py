"""Stereo: the ML denoiser with a pair linked (the default) against the same pair per channel,
and RNNoise (which has no link: one instance per side), on held-out speech and noise.

    python benchmarks/stereo_link.py [--n-per-case 4] [--seconds 6] [--seed 7]

Cases (48 kHz, a held-out VCTK/LibriSpeech voice at 5 and 10 dB SNR in held-out noise; each side
its own stretch of the noise recording):

- ``centred``: the voice in the middle, each side's noise its own at the same level (a
  coincident pair, a voice panned centre in a mix);
- ``bursts``: as ``centred``, the left side's noise 4x louder in half-second bursts and the
  right's 10 dB lower (a fan switching on near one microphone);
- ``spaced``: the right side's voice 1 ms late (a spaced pair, 34 cm);
- ``polarity``: the right side is the left inverted (a cable wired the wrong way round);
- ``talkers``: two voices, one on each side, taking turns, each side with its own noise (two
  people on two microphones: the case linking is not for; ``--per-channel`` is).

Rows (JSON lines, also in benchmarks/results/stereo_link.json), per case, with ``baseline`` the
same effect per channel (``link="none"``) and, in a second row, RNNoise per channel:

- ``image_spread_db`` (centred cases): the standard deviation of the sides' level difference over
  20 ms frames where the clean voice is within 25 dB of its loudest; lower is a steadier image
  (ratio = baseline / value, >1: linked steadier);
- ``si_sdr_db``: SI-SDR of each side against its clean side, mean of the two (higher better;
  ``delta_db`` in the settings, no ratio);
- ``idle_side_noise_db`` (``talkers``): the level of a side while only the other side's voice
  talks, against that side's input level then (lower: more of the idle side's noise removed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Recorder, lower_is_better  # noqa: E402
from baselines import RNNoise, available  # noqa: E402
from quality import _noise_segment, load, si_sdr  # noqa: E402

SR = 48000
FRAME = 960  # 20 ms
CASES = ("centred", "bursts", "spaced", "polarity", "talkers")
SNRS = (5, 10)


def _scale_noise(speech: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    p = np.mean(speech.astype(np.float64) ** 2)
    return noise * np.sqrt(p / (np.mean(noise ** 2) + 1e-20) / 10 ** (snr / 10))


def make_case(case: str, voices: list[np.ndarray], noises: list[np.ndarray], snr: float, n: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy [2, n], clean [2, n])`` float32 for ``case``, peak of the mix at -6 dBFS."""
    s = voices[0][:n].astype(np.float64)
    z = np.stack([_noise_segment(noises[0], n, rng), _noise_segment(noises[1], n, rng)])
    t = np.arange(n) / SR
    if case == "talkers":  # turns of 1.5 s: the left talks, then the right
        turn = (t % 3.0) < 1.5
        clean = np.stack([s * turn, voices[1][:n].astype(np.float64) * ~turn])
    elif case == "spaced":
        d = SR // 1000
        clean = np.stack([s, np.concatenate([np.zeros(d), s[:-d]])])
    else:
        clean = np.stack([s, s])
    z = np.stack([_scale_noise(clean[c] if case == "talkers" else s, z[c], snr) for c in range(2)])
    if case == "bursts":
        z[0] *= 1.0 + 3.0 * (np.sin(2 * np.pi * 1.0 * t + rng.uniform(0, 2 * np.pi)) > 0.0)
        z[1] *= 10 ** (-10 / 20)
    noisy = clean + z
    if case == "polarity":
        noisy[1], clean[1] = -noisy[0], -clean[0]
    g = 0.5 / max(np.abs(noisy).max(), 1e-9)
    return (noisy * g).astype(np.float32), (clean * g).astype(np.float32)


def run_ours(x: np.ndarray, link: str) -> np.ndarray:
    from hushbridge.effects import Denoise, render

    return render(Denoise(overload_budget=0.0, link=link), x, SR, block_size=128)  # aligned


def run_rnnoise(x: np.ndarray, rn) -> np.ndarray:
    lat = rn.latency
    return np.stack([np.concatenate([rn.process(x[c])[lat:], np.zeros(lat, np.float32)]) for c in range(2)])


def image_spread(y: np.ndarray, voice: np.ndarray) -> float:
    n = min(y.shape[1], voice.size) // FRAME * FRAME
    e = (voice[:n].astype(np.float64).reshape(-1, FRAME) ** 2).mean(1)
    on = e > e.max() * 10 ** -2.5
    lv = 10 * np.log10((y[:, :n].astype(np.float64).reshape(2, -1, FRAME) ** 2).mean(2) + 1e-20)
    return float(np.std(lv[0, on] - lv[1, on]))


def idle_side_noise(y: np.ndarray, x: np.ndarray, clean: np.ndarray) -> float:
    """Output level against input level of each side while it is silent and the other talks, dB."""
    out = []
    for c in range(2):
        n = y.shape[1] // FRAME * FRAME
        own = (clean[c, :n].astype(np.float64).reshape(-1, FRAME) ** 2).mean(1)
        other = (clean[1 - c, :n].astype(np.float64).reshape(-1, FRAME) ** 2).mean(1)
        idle = (own < 1e-12) & (other > other.max() * 10 ** -2.5)
        py = (y[c, :n].astype(np.float64).reshape(-1, FRAME) ** 2).mean(1)[idle].mean()
        px = (x[c, :n].astype(np.float64).reshape(-1, FRAME) ** 2).mean(1)[idle].mean()
        out.append(10 * np.log10((py + 1e-20) / (px + 1e-20)))
    return float(np.mean(out))


def score(case: str, y: np.ndarray, x: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    m = min(y.shape[1], clean.shape[1])
    if case == "talkers":
        return {"si_sdr_db": float(np.mean([si_sdr(clean[c, :m], y[c, :m]) for c in range(2)])),
                "idle_side_noise_db": idle_side_noise(y, x, clean)}
    r = {"si_sdr_db": float(np.mean([si_sdr(clean[c, :m], y[c, :m]) for c in range(2)]))}
    if case in ("centred", "bursts"):
        r["image_spread_db"] = image_spread(y, clean[0])
    return r


UNITS = {"image_spread_db": "dB (std)", "si_sdr_db": "dB", "idle_side_noise_db": "dB"}
LOWER_BETTER = {"image_spread_db", "idle_side_noise_db"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-per-case", type=int, default=4, help="items per case and SNR")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    from hushbridge.models.train import split

    held = split.eval_split()
    if not held.speech or not held.noise:
        print("# skip: no held-out speech or noise (../shared/data; HUSHBRIDGE_SHARED_DATA)", file=sys.stderr)
        return 0
    rng = np.random.default_rng(args.seed)
    n = int(args.seconds * SR)
    rn, why = available(RNNoise)
    if rn is None:
        print(f"# skip RNNoise: {why}", file=sys.stderr)
    cache: dict[Path, np.ndarray] = {}

    def voice() -> np.ndarray:
        for _ in range(50):
            p = held.speech[rng.integers(len(held.speech))]
            s = cache.setdefault(p, load(p, SR))
            if s.size >= n:
                return s
        return np.pad(s, (0, n - s.size))

    def noise() -> np.ndarray:
        p = held.noise[rng.integers(len(held.noise))]
        return cache.setdefault(p, load(p, SR)).astype(np.float64)

    rec = Recorder("stereo_link")
    for case in CASES:
        scores: dict[str, dict[str, list[float]]] = {"linked": {}, "per_channel": {}, "rnnoise": {}}
        for snr in SNRS:
            for _ in range(args.n_per_case):
                x, clean = make_case(case, [voice(), voice()], [noise(), noise()], snr, n, rng)
                outs = {"linked": run_ours(x, "stereo"), "per_channel": run_ours(x, "none")}
                if rn is not None:
                    outs["rnnoise"] = run_rnnoise(x, rn)
                for system, y in outs.items():
                    for k, v in score(case, y, x, clean).items():
                        scores[system].setdefault(k, []).append(v)
        settings = {"case": case, "snrs_db": list(SNRS), "items": args.n_per_case * len(SNRS),
                    "seconds": args.seconds, "seed": args.seed, "block": 128,
                    "system": "the denoise effect, link='stereo' (default)"}
        for metric, values in scores["linked"].items():
            v = float(np.mean(values))
            for base in ("per_channel", "rnnoise"):
                if metric not in scores[base]:
                    continue
                b = float(np.mean(scores[base][metric]))
                if metric in LOWER_BETTER and metric != "idle_side_noise_db":
                    ratio = lower_is_better(v, b)
                else:
                    ratio = None  # dB against dB: the difference says it (delta_db)
                rec.emit(f"{metric}@{case}", v, UNITS[metric], baseline=base, baseline_value=b, ratio=ratio,
                         settings={**settings, "delta_db": v - b,
                                   "baseline_system": "the same effect, link='none'" if base == "per_channel"
                                   else "librnnoise, one instance per side"})
    rec.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
