"""Engine overhead: per-block cost of the callback with the `dialogue` preset at 64/128/256
frames next to an empty pass-through callback, and cold/warm start times to first audio.

    python benchmarks/engine.py [--seconds 5]

Baseline: `passthrough`, an Engine running an empty Chain (the same callback plumbing, no DSP).
`ratio` is omitted for the per-block rows (the preset necessarily costs more than nothing); the
share of the block period is what matters for real time. Cold start compiles every numba kernel
(empty NUMBA_CACHE_DIR); warm start loads them from the cache.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import Recorder, lower_is_better  # noqa: E402

from hushbridge.engine import Engine  # noqa: E402
from hushbridge.effects import Chain  # noqa: E402
from hushbridge.presets import load_preset  # noqa: E402

SR = 48000
FIRST_AUDIO = """
import time, numpy as np
t0 = time.perf_counter()
from hushbridge.engine import Engine
from hushbridge.presets import load_preset
e = Engine(load_preset("dialogue"), channels=2)
e.prepare(48000, 128)
x = np.zeros((2, 128), np.float32); y = np.zeros_like(x)
e.process(x, y)
print(time.perf_counter() - t0)
"""


def per_block(engine: Engine, block: int, seconds: float) -> float:
    engine.prepare(SR, block)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((engine.channels, SR)) * 0.1).astype(np.float32)
    y = np.zeros((engine.channels, block), np.float32)
    n_blocks = int(seconds * SR / block)
    times = np.empty(n_blocks)
    for i in range(n_blocks):
        j = (i * block) % (SR - block)
        t0 = time.perf_counter()
        engine.process(x[:, j : j + block], y)
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e6)


def start_time(cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    r = subprocess.run([sys.executable, "-c", FIRST_AUDIO], capture_output=True, text=True, env=env, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="audio seconds timed per setting")
    args = ap.parse_args()
    rec = Recorder("engine")
    for block in (64, 128, 256):
        period_us = block / SR * 1e6
        empty = per_block(Engine(Chain(), channels=2), block, args.seconds)
        full = per_block(Engine(load_preset("dialogue"), channels=2), block, args.seconds)
        settings = {"preset": "dialogue", "channels": 2, "sample_rate": SR, "statistic": "median",
                    "period_us": round(period_us, 1)}
        ratio = lower_is_better(full, empty)  # < 1: what the chain costs over an empty engine
        rec.emit("engine_callback_dialogue", round(full, 2), "us/block", baseline="passthrough",
                 baseline_value=round(empty, 2), block=block, ratio=ratio, settings=settings)
        rec.emit("engine_callback_share_of_period", round(full / period_us, 4), "fraction", baseline="passthrough",
                 baseline_value=round(empty / period_us, 4), block=block, ratio=ratio, settings=settings)
    with tempfile.TemporaryDirectory() as cache:
        cold = start_time(cache)
        warm = start_time(cache)
    rec.emit("start_to_first_audio", round(warm, 3), "s", baseline="cold_start_numba_compile",
             baseline_value=round(cold, 3), ratio=round(cold / warm, 2),
             settings={"preset": "dialogue", "block": 128, "note": "value = warm (cache hit); baseline = cold (compiling)"})
    print(f"# wrote {rec.save()}", file=sys.stderr)


if __name__ == "__main__":
    main()
