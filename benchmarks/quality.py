"""Denoising quality on the evaluation split: PESQ-WB, STOI, SI-SDR and DNSMOS P.835 (SIG/BAK/OVRL).

    python benchmarks/quality.py [--sets vctk,dfn,synthetic,pauses] [--n-per-snr 4] [--seconds 4]
                                 [--systems noisy,hushbridge,rnnoise,dtln,gtcrn,noisereduce]
                                 [--model PATH] [--no-dnsmos] [--seed 0]

Sets, reported apart:

- ``vctk``: real paired recordings ``../shared/data/paired_vctk_denoiser`` (16 kHz), evaluation only;
- ``dfn``: the real 48 kHz clean/noisy pair in ``../shared/data/deepfilternet``, evaluation only;
- ``synthetic``: mixtures of held-out speakers, noises and rooms (``hushbridge.models.train.split.
  eval_split``, owned by the training side; its ``eval_mixtures`` is used when it exists) at SNR
  0/5/10/15 dB, built at 48 kHz with a fixed seed. When a room is applied the reverberant speech is
  the reference (we measure denoising, not dereverberation).
- ``pauses``: word starts after pauses, the complaint users have about gate-like denoisers:
  held-out speakers and noises (no room) at SNR 0/5/10/15 dB, 1 s of noise alone, then three
  phrases of held-out speech separated by 0.4-0.9 s pauses (noise goes on); the other metrics are
  scored on it too.

Systems run at their own rates on the noisy signal (soxr HQ offline resampling to and from it):
the unprocessed input, hushbridge ``denoise`` (the Effect, rendered at 48 kHz in 128-frame blocks;
skipped when ``models/denoise.onnx`` is missing and no ``--model`` is given), RNNoise (48 kHz),
DTLN and GTCRN (16 kHz, ``../shared/anchors``; skipped with a message when absent), and
noisereduce spectral gating. Every output is time-aligned by trimming the system's own latency
(hushbridge: ``render`` trims ``latency_samples``); the residual lag against the reference is
checked by cross-correlation and reported (``lag`` in ``settings``; it should be 0).

Metrics at 16 kHz against the clean reference: PESQ wide band, STOI, SI-SDR (dB), word onsets (dB:
the output's level over the first 30 ms of each word that follows 100 ms of silence in the
reference, against the reference's; a gate that cuts word starts reads below 0, noise left in
raises it, so read it beside BAK; ``hushbridge.models.train.evaluate.onset_level_db``); DNSMOS P.835
(no reference) from ``speechmos``. Output: JSON lines (``benchmarks/results/quality.json``; rows
per set x system x metric, with ``baseline`` = the system and ``ratio``/delta against hushbridge
where it ran) and a Markdown table in ``benchmarks/results/quality.md``.
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
from baselines import DTLN, GTCRN, NoiseReduce, RNNoise, build  # noqa: E402

EVAL_SR = 16000
GEN_SR = 48000
SNRS = (0, 5, 10, 15)
METRICS = ("pesq_wb", "stoi", "si_sdr", "onset_db", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
UNITS = {"pesq_wb": "MOS-LQO", "stoi": "", "si_sdr": "dB", "onset_db": "dB", "dnsmos_sig": "MOS",
         "dnsmos_bak": "MOS", "dnsmos_ovrl": "MOS"}
DB_METRICS = ("si_sdr", "onset_db")  # compared as a difference in dB, not as a ratio
ONSET_HOP = EVAL_SR // 200  # 5 ms
ONSET_SETTLE_S = 0.5  # word starts in a system's first half second do not count


# == audio helpers ==============================================================================
def load(path: Path, sr: int) -> np.ndarray:
    """Mono float32 at ``sr`` (soundfile, librosa for what libsndfile cannot read)."""
    import soxr

    try:
        import soundfile as sf

        x, fs = sf.read(str(path), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
    except Exception:  # noqa: BLE001 - mp3 on old libsndfile: let librosa/audioread try
        import librosa

        x, fs = librosa.load(str(path), sr=None, mono=True)
    x = np.asarray(x, dtype=np.float32)
    return x if fs == sr else soxr.resample(x, fs, sr, quality="HQ").astype(np.float32)


def resample(x: np.ndarray, a: int, b: int) -> np.ndarray:
    import soxr

    return x if a == b else soxr.resample(x, a, b, quality="HQ").astype(np.float32)


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref.astype(np.float64) - ref.mean()
    est = est.astype(np.float64) - est.mean()
    a = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    t = a * ref
    return float(10 * np.log10((np.dot(t, t) + 1e-12) / (np.dot(est - t, est - t) + 1e-12)))


def lag_of(ref: np.ndarray, y: np.ndarray, max_lag: int = 64) -> int:
    """Lag of ``y`` against ``ref`` in ``-max_lag..max_lag`` by cross-correlation (0 = aligned)."""
    n = min(len(ref), len(y)) - 2 * max_lag
    if n <= 0:
        return 0
    r = ref[max_lag:max_lag + n].astype(np.float64)
    best, best_lag = -np.inf, 0
    for lag in range(-max_lag, max_lag + 1):
        s = y[max_lag + lag:max_lag + lag + n].astype(np.float64)
        c = np.dot(s, r) / (np.sqrt(np.dot(s, s) * np.dot(r, r)) + 1e-12)
        if c > best:
            best, best_lag = c, lag
    return best_lag


def metrics(clean: np.ndarray, out: np.ndarray, dnsmos: bool) -> dict[str, float]:
    """All metrics of ``out`` against ``clean`` (both 16 kHz, same length)."""
    from pesq import pesq
    from pystoi import stoi

    from hushbridge.models.train.evaluate import onset_level_db

    m: dict[str, float] = {}
    try:
        m["pesq_wb"] = float(pesq(EVAL_SR, clean, out, "wb"))
    except Exception as e:  # noqa: BLE001 - pesq raises on silent or too-short output
        print(f"# pesq failed: {e}", file=sys.stderr)
        m["pesq_wb"] = math.nan
    m["stoi"] = float(stoi(clean, out, EVAL_SR, extended=False))
    m["si_sdr"] = si_sdr(clean, out)
    m["onset_db"] = onset_level_db(out, clean, hop=ONSET_HOP, settle_s=ONSET_SETTLE_S)
    if dnsmos:
        from speechmos import dnsmos as dm

        peak = float(np.abs(out).max()) or 1.0
        r = dm.run(np.clip(out / max(peak, 1.0), -1, 1).astype(np.float32), sr=EVAL_SR)
        m["dnsmos_sig"], m["dnsmos_bak"], m["dnsmos_ovrl"] = (float(r["sig_mos"]), float(r["bak_mos"]),
                                                             float(r["ovrl_mos"]))
    return m


# == systems ====================================================================================
class Noisy:
    name, sample_rate, latency = "noisy", GEN_SR, 0

    def process(self, x: np.ndarray) -> np.ndarray:
        return x


class Hushbridge:
    name, sample_rate, latency = "hushbridge", GEN_SR, 0  # render() trims latency_samples itself

    def __init__(self, model: Path | None) -> None:
        from hushbridge.effects import Denoise

        self.effect = Denoise(model_path=model)  # ModelNotFoundError when not shipped yet
        self.effect.overload_budget = 0.0  # offline: never fall back to dry
        self.model_name = f"{self.effect.model.info.name} {self.effect.model.info.version}"

    def process(self, x: np.ndarray) -> np.ndarray:
        from hushbridge.effects import render

        return render(self.effect, x, GEN_SR, block_size=128)


def build_systems(names: list[str], model: Path | None) -> list:
    makers = {"noisy": (Noisy,), "hushbridge": (Hushbridge, model), "rnnoise": (RNNoise,), "dtln": (DTLN,),
              "gtcrn": (GTCRN,), "noisereduce": (NoiseReduce, EVAL_SR)}
    return build(makers, names)


def run_system(system, noisy: np.ndarray, sr: int) -> np.ndarray:
    """``noisy`` at ``sr`` through ``system`` at its own rate; aligned output at 16 kHz."""
    x = resample(noisy, sr, system.sample_rate)
    y = system.process(x)
    lat = system.latency
    if lat:
        y = np.concatenate([y[lat:], np.zeros(lat, np.float32)])
    y = resample(y[:len(x)], system.sample_rate, EVAL_SR)
    n = int(round(len(noisy) * EVAL_SR / sr))
    return np.pad(y, (0, max(0, n - len(y))))[:n].astype(np.float32)


# == evaluation sets ============================================================================
def paired_items(which: str, seconds_cap: float = 30.0):
    """``(name, clean, noisy, sr)`` for the real pairs (evaluation only)."""
    from hushbridge.models.train.split import paired_sets

    pairs = paired_sets()["vctk_denoiser" if which == "vctk" else "deepfilternet"]
    sr = EVAL_SR if which == "vctk" else GEN_SR
    for noisy_p, clean_p in pairs:
        c, y = load(clean_p, sr), load(noisy_p, sr)
        n = min(len(c), len(y), int(seconds_cap * sr))
        yield noisy_p.stem, c[:n], y[:n], sr


def synthetic_items(n_per_snr: int, seconds: float, seed: int):
    """``(name, clean, noisy, sr)`` mixtures of held-out speech, noise and rooms at fixed SNRs."""
    from hushbridge.models.train import split

    if hasattr(split, "eval_mixtures"):
        yield from ((f"{name}", c, y, sr) for name, c, y, sr, _snr in
                    split.eval_mixtures(snrs=SNRS, n_per_snr=n_per_snr, sample_rate=GEN_SR, seed=seed))
        return
    from scipy.signal import fftconvolve

    held = split.eval_split()
    rng = np.random.default_rng(seed)
    n = int(seconds * GEN_SR)
    decoded: dict[Path, np.ndarray] = {}
    for snr in SNRS:
        for k in range(n_per_snr):
            sp, nz = _draw(held, rng)
            s, z = _decoded(decoded, sp), _decoded(decoded, nz)
            s = np.pad(s, (0, max(0, n - len(s))))
            a = int(rng.integers(0, max(1, len(s) - n + 1)))
            s = s[a:a + n]
            z = _noise_segment(z, n, rng)
            room = ""
            if held.rirs and rng.random() < 0.5:
                rp = held.rirs[rng.integers(len(held.rirs))]
                h = load(rp, GEN_SR)
                h = h[int(np.argmax(np.abs(h))):][: GEN_SR]  # from the direct path: no added delay
                s = fftconvolve(s, h / (np.abs(h).max() + 1e-12))[:n]
                room = f"+{rp.stem}"
            clean, noisy = _mix_at_snr(s, z, snr, np.mean(s.astype(np.float64) ** 2))
            yield f"snr{snr}_{k}_{sp.stem}+{nz.stem}{room}", clean, noisy, GEN_SR


def _draw(held, rng: np.random.Generator) -> tuple[Path, Path]:
    """One held-out speech recording and one held-out noise recording, at random."""
    return held.speech[rng.integers(len(held.speech))], held.noise[rng.integers(len(held.noise))]


def _decoded(cache: dict[Path, np.ndarray], path: Path) -> np.ndarray:
    """``path`` at GEN_SR, decoded once per run of items."""
    if path not in cache:
        cache[path] = load(path, GEN_SR)
    return cache[path]


def _noise_segment(z: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of the noise recording ``z`` from a random point (tiled when shorter)."""
    if len(z) < n:
        z = np.tile(z, n // max(1, len(z)) + 1)
    b = int(rng.integers(0, len(z) - n + 1))
    return z[b:b + n].astype(np.float64)


def _mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr: float, speech_power: float):
    """``(clean, noisy)`` float32, the noise scaled to ``snr`` dB under ``speech_power``, both
    by the gain that puts the mixture's peak at -6 dBFS."""
    z = noise * math.sqrt(speech_power / (np.mean(noise ** 2) + 1e-20) / 10 ** (snr / 10))
    mix = speech + z
    g = 0.5 / max(np.abs(mix).max(), 1e-9)
    return (speech * g).astype(np.float32), (mix * g).astype(np.float32)


PHRASE_FADE = GEN_SR // 200  # 5 ms: no click where a phrase is cut from its recording


def _phrases(s: np.ndarray, count: int, seconds: float) -> list[np.ndarray]:
    """Up to ``count`` stretches of ``seconds`` from ``s`` (48 kHz) that do not overlap and lie
    whole in it, each from a word's own lead-in: a 5 ms hop within 30 dB of the loudest after 50 ms
    under that, taken from the last hop 50 dB under the loudest in the 100 ms before it (else 50 ms
    before it), with a 5 ms fade-in; so a phrase starts as the word does, not with a cut."""
    hop = GEN_SR // 200
    n = len(s) // hop
    span = int(seconds * GEN_SR)
    if n < 2 or len(s) < span:
        return []
    e = (s[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(1) + 1e-20
    loud, silent = e > e.max() * 1e-3, e < e.max() * 1e-5
    out: list[tuple[int, int]] = []
    for k in range(1, n):
        if not loud[k] or loud[max(0, k - 10):k].any():
            continue
        back = [j for j in range(max(0, k - 20), k) if silent[j]]
        a = (back[-1] if back else max(0, k - 10)) * hop
        if a + span > len(s) or (out and a < out[-1][1]):
            continue  # runs past the end, or overlaps the stretch before
        out.append((a, a + span))
        if len(out) == count:
            break
    fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(PHRASE_FADE) / PHRASE_FADE)
    phrases = []
    for a, b in out:
        p = s[a:b].astype(np.float32).copy()
        p[:PHRASE_FADE] *= fade
        phrases.append(p)
    return phrases


def pause_items(n_per_snr: int, seed: int):
    """``(name, clean, noisy, sr)``: noise alone for 1 s, then three phrases of held-out speech
    (1.2 s each, from word starts) with pauses of 0.4-0.9 s between them, in held-out noise."""
    from hushbridge.models.train import split

    held = split.eval_split()
    rng = np.random.default_rng(seed + 1000)
    decoded: dict[Path, np.ndarray] = {}
    for snr in SNRS:
        for k in range(n_per_snr):
            sp, nz = _draw(held, rng)
            parts: list[np.ndarray] = []
            other = sp
            for _ in range(50):  # a short recording has fewer phrases: go on with others
                s = _decoded(decoded, other)
                parts += _phrases(s, 3 - len(parts), 1.2)
                if len(parts) == 3:
                    break
                other = held.speech[rng.integers(len(held.speech))]
            if not parts:
                raise RuntimeError(f"no phrase of 1.2 s in 50 held-out recordings (from {sp.name})")
            pauses = rng.uniform(0.4, 0.9, len(parts))
            clean = [np.zeros(GEN_SR, np.float32)]
            for part, pause in zip(parts, pauses):
                clean += [part, np.zeros(int(pause * GEN_SR), np.float32)]
            c = np.concatenate(clean).astype(np.float64)
            z = _noise_segment(_decoded(decoded, nz), len(c), rng)
            # the speech's power while it speaks
            clean_out, noisy = _mix_at_snr(c, z, snr, np.mean(np.concatenate(parts).astype(np.float64) ** 2))
            yield f"pauses_snr{snr}_{k}_{sp.stem}+{nz.stem}", clean_out, noisy, GEN_SR


# == scoring ====================================================================================
def score_items(items, systems: list, dnsmos: bool, label: str):
    """Every system on every ``(name, reference, input, sr)`` item: ``(scores, lags, count)``,
    scores ``{system: {metric: [per item]}}``, lags ``{system: [per item]}``."""
    scores: dict[str, dict[str, list[float]]] = {s.name: {m: [] for m in METRICS} for s in systems}
    lags: dict[str, list[int]] = {s.name: [] for s in systems}
    t0, count = time.perf_counter(), 0
    for name, clean, noisy, sr in items:
        clean16 = resample(clean, sr, EVAL_SR)
        for system in systems:
            out = run_system(system, noisy, sr)[:len(clean16)]
            lags[system.name].append(lag_of(clean16, out))
            for m, v in metrics(clean16, out, dnsmos).items():
                scores[system.name][m].append(v)
        count += 1
        print(f"# {label}: {count} items, {time.perf_counter() - t0:.0f} s ({name})", file=sys.stderr)
    return scores, lags, count


def emit_means(rec: Recorder, prefix: str, scores: dict, lags: dict, count: int, systems: list,
               settings: dict) -> dict[str, dict[str, float]]:
    """Each system's mean per metric as JSON rows (the others against ``hushbridge``: ``ratio``,
    and ``delta_db`` for the dB metrics); returns the means. A metric no item could be scored on
    (word onsets in a set without pauses) gets no row; ``items_scored`` says how many items a
    mean is over where that is fewer than ``items``."""
    def mean(v: list[float]) -> float:
        finite = [a for a in v if math.isfinite(a)]
        return float(np.mean(finite)) if finite else math.nan

    means = {s: {m: mean(v) for m, v in ms.items()} for s, ms in scores.items()}
    ours = means.get("hushbridge")
    for s, ms in means.items():
        for m, v in ms.items():
            if not scores[s][m] or math.isnan(v):
                continue
            row = {**settings, "items": count, "lag": sorted(set(lags[s])), "system": s}
            scored = sum(math.isfinite(a) for a in scores[s][m])
            if scored < count:
                row["items_scored"] = scored
            for x in systems:
                if x.name == s and hasattr(x, "model_name"):
                    row["model"] = x.model_name
            if ours is not None and s != "hushbridge" and not math.isnan(ours[m]):
                o = ours[m]
                if m == "onset_db":  # 0 dB is right: under it word starts are cut, over it noise is left
                    row["delta_db"] = o - v
                    row["ratio_rule"] = "none: read with dnsmos_bak (0 dB is the reference's level)"
                    ratio = None
                elif m in DB_METRICS:  # dB: the ratio of the two power ratios
                    row["delta_db"] = o - v
                    row["ratio_rule"] = "10 ** ((value - baseline_value) / 10)"
                    ratio = 10.0 ** ((o - v) / 10.0)
                else:
                    ratio = (o / v) if (v > 0 and o > 0) else None
                rec.emit(f"{prefix}/{m}", o, UNITS[m], baseline=s, baseline_value=v, ratio=ratio, settings=row)
            else:
                rec.emit(f"{prefix}/{m}/{s}", v, UNITS[m], settings=row)
    return means


# == main =======================================================================================
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="vctk,dfn,synthetic,pauses")
    ap.add_argument("--systems", default="noisy,hushbridge,rnnoise,dtln,gtcrn,noisereduce")
    ap.add_argument("--n-per-snr", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--no-dnsmos", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    systems = build_systems([s.strip() for s in args.systems.split(",") if s.strip()], args.model)
    dnsmos = not args.no_dnsmos
    rec = Recorder("quality")
    table: dict[str, dict[str, dict[str, float]]] = {}
    for set_name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        if set_name == "synthetic":
            items = synthetic_items(args.n_per_snr, args.seconds, args.seed)
        elif set_name == "pauses":
            items = pause_items(args.n_per_snr, args.seed)
        else:
            items = paired_items(set_name)
        scores, lags, count = score_items(items, systems, dnsmos, set_name)
        if not count:
            print(f"# {set_name}: no items (data missing?)", file=sys.stderr)
            continue
        table[set_name] = emit_means(rec, set_name, scores, lags, count, systems, {"set": set_name})
    rec.save()
    md = ["# Denoising quality", "",
          f"`python benchmarks/quality.py {' '.join(argv or sys.argv[1:])}`, {time.strftime('%Y-%m-%d')}. "
          "PESQ-WB, STOI, SI-SDR against the clean reference at 16 kHz; onset_db: the output's level over "
          "the first 30 ms of each word after a pause against the reference's (0 dB right, lower: word "
          "starts cut, higher: noise left; blank where a set has no such pause); DNSMOS P.835 without reference. "
          "Real pairs are reported apart from synthetic mixtures.", ""]
    for set_name, means in table.items():
        md += [f"## {set_name}", "", "| system | " + " | ".join(METRICS) + " |",
               "| --- |" + " ---: |" * len(METRICS)]
        for s, ms in means.items():
            md.append(f"| {s} | " + " | ".join("" if math.isnan(ms[m]) else f"{ms[m]:.3f}" for m in METRICS) + " |")
        md.append("")
    from hushbridge.atomic import write_text_atomic

    write_text_atomic(RESULTS / "quality.md", "\n".join(md))
    print(f"# wrote {RESULTS / 'quality.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
