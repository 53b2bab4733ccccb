"""Quick held-out check of a denoise ONNX model against the noisy input and RNNoise (pyrnnoise).

Usage::

    python -m hushbridge.models.train.evaluate --model models/denoise.onnx [--json out.json]

Material (never used in training, never used to choose anything in training):

- ``synthetic``: 16 mixtures of 4 s from :func:`.split.eval_split` (held-out speakers, noises and
  rooms) at fixed SNRs 0/5/10/15 dB (4 each), half of them in a held-out room; reference = the
  early-reverberant speech (the training target definition), seed fixed here;
- ``vctk_denoiser``: the six real paired VCTK+DEMAND recordings (16 kHz, upsampled to 48 kHz to run);
- ``deepfilternet``: the real 48 kHz pair (0 dB).

Metrics at 16 kHz after aligning each output to its reference (integer lag search, the same method
for every system): SI-SDR (dB), PESQ wide band, STOI. This is the engineer's own check; the project's
benchmark is ``benchmarks/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .data import SR, _fftconv, active_rms, crop_48k, early_part, load_clip, prepare_rir
from .split import eval_split, paired_sets

EVAL_SEED = 987_654
SNRS = (0.0, 5.0, 10.0, 15.0)


def synthetic_set(n_per_snr: int = 4, seconds: float = 4.0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    ev = eval_split()
    rng = np.random.default_rng(EVAL_SEED)
    speech = [load_clip(p) for p in ev.speech]
    noise = [load_clip(p) for p in ev.noise]
    rirs = [prepare_rir(c.audio, c.sr) for c in (load_clip(p) for p in ev.rirs)]
    n = int(seconds * SR)
    out = []
    i = 0
    for snr in SNRS:
        for _ in range(n_per_snr):
            sp = speech[i % len(speech)]
            no = noise[i % len(noise)]
            s = crop_48k(rng, sp, n)
            if i % 2 and rirs:
                h = rirs[(i // 2) % len(rirs)]
                wet, ref = _fftconv(s, h), _fftconv(s, early_part(h))
            else:
                wet, ref = s, s.copy()
            nz = crop_48k(rng, no, n)
            nz = nz / (np.sqrt(np.mean(nz**2)) + 1e-9) * active_rms(wet) * 10 ** (-snr / 20)
            g = 10 ** (-26 / 20) / active_rms(wet)
            mix = (wet + nz) * g
            peak = np.max(np.abs(mix))
            if peak > 0.99:
                g *= 0.99 / peak
                mix *= 0.99 / peak
            out.append((f"{sp.name}+{no.name}@{snr:.0f}dB", mix.astype(np.float32), (ref * g).astype(np.float32)))
            i += 1
    return out


def paired_48k() -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    res: dict[str, list] = {}
    for name, pairs in paired_sets().items():
        items = []
        for noisy_p, clean_p in pairs:
            x, sr = sf.read(str(noisy_p), dtype="float32", always_2d=True)
            c, sr2 = sf.read(str(clean_p), dtype="float32", always_2d=True)
            x, c = x.mean(1), c.mean(1)
            if sr != SR:
                x = soxr.resample(x, sr, SR, quality="VHQ").astype(np.float32)
            if sr2 != SR:
                c = soxr.resample(c, sr2, SR, quality="VHQ").astype(np.float32)
            m = min(x.size, c.size)
            items.append((noisy_p.name, x[:m], c[:m]))
        res[name] = items
    return res


def align(y: np.ndarray, ref: np.ndarray, max_lag: int = 2400) -> np.ndarray:
    """Shift ``y`` earlier by the lag in [0, max_lag] that best correlates it with ``ref``."""
    n = ref.size
    nfft = 1 << (2 * (n + max_lag) - 1).bit_length()
    yy = np.pad(y, (0, max(0, n + max_lag - y.size)))[: n + max_lag]
    xc = np.fft.irfft(np.fft.rfft(yy, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)[: max_lag + 1]
    lag = int(np.argmax(xc))
    return yy[lag : lag + n]


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    ref = ref - ref.mean()
    est = est - est.mean()
    a = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    t = a * ref
    return float(10 * np.log10((np.dot(t, t) + 1e-12) / (np.dot(est - t, est - t) + 1e-12)))


ONSET_FLOOR_DB = -60.0


def word_starts(energy: np.ndarray, first: int = 20) -> list[int]:
    """Word starts in per-hop (5 ms) energies: where the level rises out of at least 20 hops
    (100 ms) 40 dB under its loudest hop to 30 dB under it, the first hop of that rise (it may take
    up to 20 hops; a rise straight from silence starts at the hop over -30 dB). From hop ``first``."""
    peak = energy.max()
    quiet, loud = energy < peak * 1e-4, energy > peak * 1e-3
    starts = []
    for k in range(max(1, first), energy.size):
        if not loud[k] or loud[k - 1]:
            continue
        j = k
        while j > k - 20 and j > 0 and not quiet[j - 1]:
            j -= 1  # back through the rise to the last quiet hop
        if j >= max(20, first) and quiet[j - 20:j].all():
            starts.append(j)
    return starts


def onset_level_db(est: np.ndarray, ref: np.ndarray, hop: int = 240, settle_s: float = 0.0) -> float:
    """The output's level against the target's over the first 30 ms of every word start that
    follows at least 100 ms of target silence (40 dB under its loudest 5 ms; :func:`word_starts`:
    from where the rise begins), mean in dB; NaN where the target has no such onset. A post-filter or gate that cuts word starts scores lower; noise
    left in the output raises it. ``hop``: 5 ms at the signals' rate (240 at 48 kHz, 80 at 16).
    ``settle_s``: only word starts after that much of the signal count (what a system does in its
    first moments, before it has heard the noise, is not what it does after a pause). A word start
    cut by more than 60 dB counts as 60 (gone: a gate closed to -90 dB is not worse for a listener
    than one closed to -60), so one such onset does not outweigh all the others."""
    n = min(est.size, ref.size) // hop

    def energy(a):
        return (a[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(1) + 1e-12

    et, ey = energy(ref), energy(est)
    first = max(20, int(round(settle_s * 200)))  # 200 hops of 5 ms per second
    onsets = [k for k in word_starts(et, first) if k < n - 6]
    if not onsets:
        return float("nan")
    return float(np.mean([max(ONSET_FLOOR_DB, 10.0 * np.log10(ey[k : k + 6].sum() / et[k : k + 6].sum()))
                          for k in onsets]))


def metrics(est48: np.ndarray, ref48: np.ndarray) -> dict[str, float]:
    from pesq import pesq
    from pystoi import stoi

    est = soxr.resample(align(est48, ref48), SR, 16000, quality="HQ")
    ref = soxr.resample(ref48, SR, 16000, quality="HQ")
    m = min(est.size, ref.size)
    est, ref = est[:m], ref[:m]
    out = {"si_sdr": si_sdr(est, ref), "stoi": float(stoi(ref, est, 16000, extended=False))}
    try:
        out["pesq"] = float(pesq(16000, ref, est, "wb"))
    except Exception as e:  # pesq raises on silent references; report it instead of hiding it
        out["pesq"] = float("nan")
        print(f"pesq failed: {e}", file=sys.stderr)
    return out


def run_rnnoise(x: np.ndarray) -> np.ndarray:
    """librnnoise frame by frame (480 samples, int16 scale), as benchmarks/baselines.py runs it."""
    import ctypes

    from pyrnnoise import rnnoise as rn

    st = rn.create()
    try:
        frame = rn.FRAME_SIZE
        buf = np.zeros(frame, np.float32)
        ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        y = np.zeros(x.size + 2 * frame, np.float32)
        xp = np.pad(x, (0, 2 * frame))
        for i in range(0, xp.size // frame * frame, frame):
            buf[:] = xp[i : i + frame] * 32768.0
            rn.lib.rnnoise_process_frame(st, ptr, ptr)
            y[i : i + frame] = buf / 32768.0
        return y
    finally:
        rn.destroy(st)


def run_ours(model: str, x: np.ndarray) -> np.ndarray:
    from .export import run_onnx

    n = -(-x.size // 240) * 240
    y, _ = run_onnx(model, np.pad(x, (0, n - x.size + 480)))
    return y


def evaluate(model: str) -> dict:
    sets = {"synthetic": synthetic_set(), **paired_48k()}
    systems = {"noisy": lambda x: x, "rnnoise": run_rnnoise, "hushbridge": lambda x: run_ours(model, x)}
    report: dict = {}
    for set_name, items in sets.items():
        agg: dict[str, dict[str, list[float]]] = {s: {} for s in systems}
        for _, x, ref in items:
            for sname, fn in systems.items():
                for k, v in metrics(fn(x), ref).items():
                    agg[sname].setdefault(k, []).append(v)
        report[set_name] = {s: {k: float(np.nanmean(v)) for k, v in m.items()} for s, m in agg.items()}
        report[set_name]["n"] = len(items)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Quick held-out check vs noisy and RNNoise")
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "denoise.onnx"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rep = evaluate(args.model)
    print("| set | system | PESQ-WB | STOI | SI-SDR dB |\n|---|---|---|---|---|")
    for set_name, r in rep.items():
        for s in ("noisy", "rnnoise", "hushbridge"):
            m = r[s]
            print(f"| {set_name} (n={r['n']}) | {s} | {m['pesq']:.2f} | {m['stoi']:.3f} | {m['si_sdr']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
