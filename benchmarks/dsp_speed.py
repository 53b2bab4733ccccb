"""DSP speed: the 5-effect dialogue chain (high-pass, gate, compressor, peaking EQ, true-peak
limiter) as a hushbridge ``Chain`` of the public effects and as a pedalboard ``Pedalboard``, per
block at 64/128/256/1024 frames, mono and stereo, one thread.

    NUMBA_NUM_THREADS=1 python benchmarks/dsp_speed.py [--seconds 4] [--rounds 3] [--per-effect]

Both sides get the same signal (real speech from ../shared/data resampled to 48 kHz, or a
deterministic speech-like synthetic signal when the data is absent) copied into the same
contiguous block buffer, and are called the way a streaming host calls them: ``chain.process(block)``
in place, ``board.process(block, sr, buffer_size=block, reset=False)``. Timings interleave the two
(alternating which goes first) block by block; the value is the median over all blocks of all
rounds. ``ratio`` = pedalboard µs / hushbridge µs (>1: hushbridge is faster). The main baseline uses
pedalboard's ``BrickwallLimiter(true_peak=True)``, the closest match to our true-peak look-ahead
limiter; the ``pedalboard_limiter`` rows use its plain ``Limiter`` (sample-peak, no look-ahead).
Settings and the differences between the two chains are in each row's ``settings``.

The Chain fuses its five kernels into one compiled call per block (``hushbridge.effects.fused``;
compiled or loaded from the disk cache in ``prepare``, outside the timing). The
``dsp_chain_unfused`` rows time ``Chain(fuse=False)``, every effect called on its own, in the
same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import Recorder  # noqa: E402

import pedalboard as pb  # noqa: E402

from hushbridge.effects import EFFECTS, Chain, ProcessSpec, create_effect  # noqa: E402

SR = 48000
BLOCKS = (64, 128, 256, 1024)

# matched settings, hushbridge id -> (our params, pedalboard plugin, pedalboard args)
HP = {"cutoff_hz": 80.0}
GATE = {"threshold_db": -50.0, "ratio": 10.0, "attack_ms": 1.0, "release_ms": 100.0, "hold_ms": 0.0,
        "hysteresis_db": 0.0, "range_db": 90.0}
COMP = {"threshold_db": -20.0, "ratio": 3.0, "attack_ms": 10.0, "release_ms": 120.0, "knee_db": 0.0}
EQ = {"band3_freq_hz": 3000.0, "band3_gain_db": 3.0, "band3_q": 1.0}
LIM = {"ceiling_dbtp": -1.0, "release_ms": 80.0}
DIFFERENCES = [
    "highpass: ours 12 dB/oct RBJ Butterworth biquad (float64 state); pedalboard HighpassFilter is 1st order (6 dB/oct)",
    "gate: ours downward expander with hysteresis 0, hold 0, range 90 dB, side-chain HPF 20 Hz; pedalboard NoiseGate (juce::dsp::NoiseGate, RMS-ish detector)",
    "compressor: ours peak detector with side-chain HPF at 20 Hz, dB-domain ballistics, knee 0; pedalboard juce::dsp::Compressor",
    "eq: ours a 4-band PeakingEQ with bands 1, 2, 4 at 0 dB (exact identity, skipped); pedalboard one PeakFilter",
    "limiter: ours 1.5 ms look-ahead, true peak from 8x polyphase interpolation (the larger of 48 and 24 taps/phase), attack ramp, "
    "-1 dBTP ceiling; baseline BrickwallLimiter(true_peak=True) 4x oversampled detection, 1.5 ms look-ahead, "
    "hard clip safety; pedalboard_limiter rows: plain Limiter (sample peak, no look-ahead)",
    "both called from Python once per block; pedalboard allocates its output array per call, ours runs in place",
]


def speech_signal(seconds: float) -> tuple[np.ndarray, str]:
    """(2, n) float32 at 48 kHz, peak 0.98: real speech, or a speech-like synthetic fallback."""
    n = int(seconds * SR)
    try:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
        from helpers import shared_data_dir

        import soundfile as sf
        from scipy.signal import resample_poly

        folder = shared_data_dir()
        files = sorted((folder / "speech").glob("*.flac")) if folder else []
        parts, used = [], []
        for f in files:
            y, sr = sf.read(f, dtype="float64", always_2d=True)
            y = resample_poly(y[:, 0], SR // np.gcd(SR, sr), sr // np.gcd(SR, sr))
            parts.append(y)
            used.append(f.name)
            if sum(len(p) for p in parts) >= 2 * n + SR:
                break
        if parts:
            y = np.concatenate(parts)
            if len(y) < 2 * n:
                y = np.tile(y, 2 * n // len(y) + 1)
            x = np.stack([y[:n], y[n // 3 : n // 3 + n] if len(y) >= n // 3 + n else y[:n]])
            x = x / np.abs(x).max() * 0.98
            return x.astype(np.float32), "speech: " + ", ".join(used[:3]) + (" ..." if len(used) > 3 else "")
    except (ImportError, OSError, RuntimeError):
        pass
    rng = np.random.default_rng(0)
    t = np.arange(n) / SR
    f0 = 130 + 30 * np.sin(2 * np.pi * 0.7 * t)
    ph = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * ph) / k for k in range(1, 12))
    syll = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2
    x = voiced * syll + 0.05 * rng.standard_normal(n) * (syll > 0.1)
    x = np.stack([x, np.roll(x, 977)])
    return (x / np.abs(x).max() * 0.98).astype(np.float32), "synthetic speech-like (data absent)"


def has_gate() -> bool:
    return "gate" in EFFECTS


def ours_chain(only: str | None = None, fuse: bool = True) -> Chain:
    effects = []
    for name, params in (("highpass", HP), ("gate", GATE), ("compressor", COMP), ("eq", EQ), ("limiter", LIM)):
        if name == "gate" and not has_gate():
            continue
        if only and name != only:
            continue
        fx = create_effect(name)
        known = {p.id for p in fx.params}
        for k, v in params.items():
            if k in known:
                fx.set(k, v)
        effects.append(fx)
    return Chain(effects, fuse=fuse)


def pb_board(limiter: str = "brickwall", only: str | None = None) -> pb.Pedalboard:
    plugins = {
        "highpass": pb.HighpassFilter(cutoff_frequency_hz=HP["cutoff_hz"]),
        "gate": pb.NoiseGate(threshold_db=GATE["threshold_db"], ratio=GATE["ratio"], attack_ms=GATE["attack_ms"],
                             release_ms=GATE["release_ms"]),
        "compressor": pb.Compressor(threshold_db=COMP["threshold_db"], ratio=COMP["ratio"],
                                    attack_ms=COMP["attack_ms"], release_ms=COMP["release_ms"]),
        "eq": pb.PeakFilter(cutoff_frequency_hz=EQ["band3_freq_hz"], gain_db=EQ["band3_gain_db"], q=EQ["band3_q"]),
        "limiter": (pb.BrickwallLimiter(ceiling_db=LIM["ceiling_dbtp"], release_ms=LIM["release_ms"],
                                        lookahead_ms=1.5, true_peak=True) if limiter == "brickwall"
                    else pb.Limiter(threshold_db=LIM["ceiling_dbtp"], release_ms=LIM["release_ms"])),
    }
    names = [n for n in plugins if (n != "gate" or has_gate()) and (only is None or n == only)]
    return pb.Pedalboard([plugins[n] for n in names])


def time_pair(chain: Chain, board: pb.Pedalboard, x: np.ndarray, block: int, channels: int,
              seconds: float, rounds: int) -> tuple[float, float]:
    """Median µs per block for (hushbridge, pedalboard), interleaved block by block."""
    src = np.ascontiguousarray(x[:channels])
    chain.prepare(ProcessSpec(SR, block, channels))
    buf_a = np.zeros((channels, block), np.float32)
    buf_b = np.zeros((channels, block), np.float32)
    # warm up both (numba cache load, pedalboard prepare) outside the timing
    for j in range(0, 8 * block, block):
        buf_a[...] = src[:, j : j + block]
        chain.process(buf_a)
        buf_b[...] = src[:, j : j + block]
        board.process(buf_b, SR, buffer_size=block, reset=False)
    chain.reset()
    board.reset()
    n_blocks = int(seconds * SR) // block
    ta, tb = [], []
    clock = time.perf_counter
    for r in range(rounds):
        for i in range(n_blocks):
            j = i * block
            buf_a[...] = src[:, j : j + block]
            buf_b[...] = src[:, j : j + block]
            if (i + r) % 2 == 0:
                t0 = clock(); chain.process(buf_a); t1 = clock()  # noqa: E702
                board.process(buf_b, SR, buffer_size=block, reset=False); t2 = clock()  # noqa: E702
                ta.append(t1 - t0)
                tb.append(t2 - t1)
            else:
                t0 = clock(); board.process(buf_b, SR, buffer_size=block, reset=False); t1 = clock()  # noqa: E702
                chain.process(buf_a); t2 = clock()  # noqa: E702
                tb.append(t1 - t0)
                ta.append(t2 - t1)
    return float(np.median(ta) * 1e6), float(np.median(tb) * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="audio seconds per round and setting")
    ap.add_argument("--rounds", type=int, default=3, help="passes over the signal (medians pool all)")
    ap.add_argument("--per-effect", action="store_true", help="also time each effect alone (128 frames)")
    ap.add_argument("--blocks", default=",".join(map(str, BLOCKS)))
    args = ap.parse_args()
    x, source = speech_signal(args.seconds)
    rec = Recorder("dsp_speed")
    gate = has_gate()
    chain_names = [n for n in ("highpass", "gate", "compressor", "eq", "limiter") if n != "gate" or gate]
    base = {
        "sample_rate": SR, "signal": source, "signal_peak_dbfs": round(float(20 * np.log10(np.abs(x).max())), 2),
        "threads": "one (NUMBA_NUM_THREADS=%s; pedalboard plugins are single-threaded)" % os.environ["NUMBA_NUM_THREADS"],
        "statistic": f"median over {args.rounds} x {args.seconds:g} s of blocks, interleaved, alternating order",
        "chain": chain_names,
        "gate": "included" if gate else "the gate effect is not registered yet: both chains run without a gate",
        "ours": {"highpass": HP, "gate": GATE if gate else None, "compressor": COMP, "eq": EQ, "limiter": LIM},
        "pedalboard": str(pb_board()), "pedalboard_version": pb.__version__,
        "differences": DIFFERENCES,
        "load": f"shared 2-core machine, loadavg {os.getloadavg()[0]:.2f} at start: timings are noisy",
    }
    for block in (int(b) for b in args.blocks.split(",")):
        for channels in (1, 2):
            settings = dict(base, channels=channels)
            ours, theirs = time_pair(ours_chain(), pb_board("brickwall"), x, block, channels, args.seconds, args.rounds)
            rec.emit("dsp_chain", round(ours, 2), "us/block", baseline="pedalboard", baseline_value=round(theirs, 2),
                     block=block, ratio=round(theirs / ours, 2), settings=settings)
            slow, theirs3 = time_pair(ours_chain(fuse=False), pb_board("brickwall"), x, block, channels,
                                      args.seconds / 2, args.rounds)
            rec.emit("dsp_chain_unfused", round(slow, 2), "us/block", baseline="pedalboard",
                     baseline_value=round(theirs3, 2), block=block, ratio=round(theirs3 / slow, 2),
                     settings=dict(settings, note="Chain(fuse=False): every effect called on its own, as before "
                                                  "fused runs; the output is identical"))
            ours2, theirs2 = time_pair(ours_chain(), pb_board("limiter"), x, block, channels, args.seconds / 2,
                                       args.rounds)
            rec.emit("dsp_chain", round(ours2, 2), "us/block", baseline="pedalboard_limiter",
                     baseline_value=round(theirs2, 2), block=block, ratio=round(theirs2 / ours2, 2),
                     settings=dict(settings, note="pedalboard side uses Limiter instead of BrickwallLimiter"))
    if args.per_effect:
        for name in chain_names:
            for channels in (1, 2):
                ours, theirs = time_pair(ours_chain(only=name), pb_board("brickwall", only=name), x, 128, channels,
                                         args.seconds / 2, args.rounds)
                rec.emit(f"dsp_effect_{name}", round(ours, 2), "us/block", baseline="pedalboard",
                         baseline_value=round(theirs, 2), block=128, ratio=round(theirs / ours, 2),
                         settings=dict(base, channels=channels, note="the effect alone in a Chain / Pedalboard"))
    print(f"# wrote {rec.save()}", file=sys.stderr)


if __name__ == "__main__":
    main()
