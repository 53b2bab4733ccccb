"""Real-time factor on one thread at 48 kHz: hushbridge denoise (the Effect a user gets, 128-frame
blocks, mono; and a stereo pair linked, against the same pair per channel), RNNoise (librnnoise frame by frame) and DTLN (standard 512/128 streaming loop at
16 kHz, soxr 48k->16k and 16k->48k counted), in the same run.

    python benchmarks/model_speed.py [--seconds 10] [--model PATH]

RTF = processing time / audio duration (lower is better); ratio = baseline RTF / ours (>1: we are
faster). Back to back, caches stay warm; an audio callback instead runs once per period and
finds them cold. ``paced_*`` rows therefore also time each call when calls come at the real-time
pace (a sleep until the next period, as a host would call), both driven by 128-frame host blocks
(RNNoise through a FIFO that runs one 480-sample frame when one is complete): p50 and p99 ms per
block, the p99 being what decides xruns (``--paced-seconds``, 0 to skip). Without the shipped ``models/denoise.onnx`` (and no ``--model``) it measures a stand-in
contract graph (a delay line, hop 240) and says so in ``settings.model``: that is runtime overhead
only, not the model.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Recorder, lower_is_better  # noqa: E402
from baselines import DTLN, RNNoise, available  # noqa: E402

SR = 48000
BLOCK = 128


def _one_thread() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def ours(x: np.ndarray, model: Path, link: str = "stereo") -> float:
    """RTF of the effect on ``x`` (1-D: mono; [channels, n]: that many channels, linked as ``link``)."""
    from hushbridge.effects import Denoise, ProcessSpec

    xs = np.atleast_2d(x)
    e = Denoise(model_path=model, overload_budget=0.0, link=link)  # the model, never the dry fallback
    e.prepare(ProcessSpec(SR, BLOCK, xs.shape[0]))
    buf = np.zeros((xs.shape[0], BLOCK), np.float32)
    n = xs.shape[1] // BLOCK * BLOCK
    t0 = time.perf_counter()
    for i in range(0, n, BLOCK):
        buf[...] = xs[:, i:i + BLOCK]
        e.process(buf)
    dt = time.perf_counter() - t0
    return dt / (n / SR)


def _paced(call, n_calls: int, period_s: float) -> np.ndarray:
    """Per-call seconds when ``call(i)`` runs once every ``period_s`` (sleeping in between)."""
    times = np.zeros(n_calls)
    nxt = time.perf_counter()
    for i in range(n_calls):
        t0 = time.perf_counter()
        call(i)
        times[i] = time.perf_counter() - t0
        nxt += period_s
        while True:
            left = nxt - time.perf_counter()
            if left <= 0:
                break
            time.sleep(min(left, 0.001))
    return times


def paced_ours(x: np.ndarray, model: Path) -> np.ndarray:
    from hushbridge.effects import Denoise, ProcessSpec

    e = Denoise(model_path=model, overload_budget=0.0)
    e.prepare(ProcessSpec(SR, BLOCK, 1))
    buf = np.zeros((1, BLOCK), np.float32)

    def call(i: int) -> None:
        buf[0] = x[i * BLOCK:(i + 1) * BLOCK]
        e.process(buf)

    return _paced(call, len(x) // BLOCK, BLOCK / SR)


def paced_rnnoise(x: np.ndarray, rn: RNNoise) -> np.ndarray:
    import ctypes

    lib = rn._rn
    st = lib.create()
    frame = rn.frame
    buf = np.zeros(frame, np.float32)
    ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    fill = [0]

    def call(i: int) -> None:  # one 128-frame host block: queue it, run a frame when one is full
        fill[0] += BLOCK
        if fill[0] >= frame:
            fill[0] -= frame
            start = (i + 1) * BLOCK - frame
            buf[:] = x[start:start + frame] * 32768.0
            lib.lib.rnnoise_process_frame(st, ptr, ptr)

    try:
        return _paced(call, len(x) // BLOCK, BLOCK / SR)
    finally:
        lib.destroy(st)


def rnnoise(x: np.ndarray, rn: RNNoise) -> float:
    t0 = time.perf_counter()
    rn.process(x)
    return (time.perf_counter() - t0) / (len(x) / SR)


def dtln(x: np.ndarray, d: DTLN) -> float:
    import soxr

    t0 = time.perf_counter()
    down = soxr.ResampleStream(SR, 16000, 1, dtype="float32", quality="HQ")
    up = soxr.ResampleStream(16000, SR, 1, dtype="float32", quality="HQ")
    y16 = d.process(down.resample_chunk(x, last=True))
    up.resample_chunk(y16, last=True)
    return (time.perf_counter() - t0) / (len(x) / SR)


def main(argv: list[str] | None = None) -> int:
    _one_thread()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs per system")
    ap.add_argument("--paced-seconds", type=float, default=5.0,
                    help="seconds of real-time-paced calls per system (0: skip)")
    args = ap.parse_args(argv)
    from hushbridge.models.runtime import default_model_path

    model = args.model or default_model_path("denoise.onnx")
    label = str(model)
    tmp = None
    if not model.is_file():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from onnx_graphs import contract_graph

        tmp = tempfile.TemporaryDirectory()
        model = contract_graph(Path(tmp.name) / "standin.onnx", sample_rate=SR, hop=240, delay=240, leaky=0.9)
        label = "STAND-IN delay-line contract graph (hop 240): models/denoise.onnx does not exist yet"
        print(f"# {label}", file=sys.stderr)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(int(args.seconds * SR)) * 0.1).astype(np.float32)
    rec = Recorder("model_speed")
    ours_rtf = min(ours(x, model) for _ in range(args.repeats))
    settings = {"sample_rate": SR, "block": BLOCK, "channels": 1, "threads": 1, "seconds": args.seconds,
                "model": label}
    rec.emit("rtf_denoise", ours_rtf, "x realtime", block=BLOCK, settings=settings)
    # stereo: a pair linked (the default: one network run on its mid) against each side on its own
    xs = np.stack([x, (rng.standard_normal(x.size) * 0.1).astype(np.float32)])
    per_channel, linked = (min(ours(xs, model, link) for _ in range(args.repeats)) for link in ("none", "stereo"))
    sset = {**settings, "channels": 2}
    rec.emit("rtf_denoise_stereo", linked, "x realtime", baseline="per_channel", baseline_value=per_channel,
             block=BLOCK, ratio=per_channel / linked, settings={**sset, "link": "stereo",
                                                               "baseline": "the same effect with link='none'"})
    rec.emit("stereo_cost_vs_mono", linked / ours_rtf, "x mono", block=BLOCK,
             settings={**sset, "link": "stereo", "per_channel_x_mono": per_channel / ours_rtf})
    rn, why = available(RNNoise)
    if rn is None:
        print(f"# skip RNNoise: {why}", file=sys.stderr)
    else:
        b = min(rnnoise(x, rn) for _ in range(args.repeats))
        rec.emit("rtf_denoise", ours_rtf, "x realtime", baseline="rnnoise", baseline_value=b, block=BLOCK,
                 ratio=b / ours_rtf, settings={**settings, "baseline": "librnnoise via ctypes, 480-sample frames"})
    d, why = available(DTLN)
    if d is None:
        print(f"# skip DTLN: {why}", file=sys.stderr)
    else:
        b = min(dtln(x, d) for _ in range(args.repeats))
        rec.emit("rtf_denoise", ours_rtf, "x realtime", baseline="dtln", baseline_value=b, block=BLOCK,
                 ratio=b / ours_rtf, settings={**settings, "baseline": "DTLN ONNX 512/128 at 16 kHz + soxr HQ both ways"})
    if args.paced_seconds > 0:
        xp = x[: int(args.paced_seconds * SR)]
        ours_t = paced_ours(xp, model)[50:] * 1e3
        base = {"rnnoise": paced_rnnoise(xp, rn)[50:] * 1e3} if rn is not None else {}
        # The median block is compared with no baseline: RNNoise's 480-sample frame runs in one
        # block of 3.75, our 240-sample hop in one of 1.9, so its median block is an idle one.
        # The mean (all work spread over the blocks) and the worst blocks compare fairly.
        for stat in ("p50", "mean", "p99"):
            pick = (lambda a: float(np.mean(a))) if stat == "mean" else (lambda a, q=int(stat[1:]): float(np.percentile(a, q)))
            v = pick(ours_t)
            pset = {**settings, "seconds": args.paced_seconds, "statistic": stat,
                    "pacing": "one call per period, sleeping in between (cold caches, as in a callback)"}
            rec.emit(f"paced_{stat}_ms", v, "ms per 128-frame block", block=BLOCK, settings=pset)
            if stat == "p50":
                continue
            for bname, bt in base.items():
                bv = pick(bt)
                rec.emit(f"paced_{stat}_ms", v, "ms per 128-frame block", baseline=bname, baseline_value=bv,
                         block=BLOCK, ratio=lower_is_better(v, bv),
                         settings={**pset, "baseline": "librnnoise via ctypes behind a 480-sample FIFO"})
    rec.save()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
