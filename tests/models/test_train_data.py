"""The training-data cache: several processes (an A/B run, the batch workers) that fill it at once
all get the clip, and none leaves or reads a half-written file.

Needs no torch: the cache is numpy and soundfile.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import soundfile as sf

from hushbridge.models.train import data

N_PROCS = 4


def _load_together(cache: str, wav: str, barrier, results) -> None:
    import os

    os.environ["HUSHBRIDGE_TRAIN_CACHE"] = cache
    barrier.wait()
    try:
        clip = data.load_clip(Path(wav))
        results.put(("ok", float(np.sum(clip.audio, dtype=np.float64)), clip.sr))
    except Exception as e:  # reported to the test, which fails on it
        results.put(("error", repr(e), 0))


def test_processes_filling_the_cache_at_once_all_get_the_clip(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal((48000 * 20, 2))).astype(np.float32)
    ctx = mp.get_context("fork")
    for round_ in range(3):
        wav = tmp_path / f"clip{round_}.wav"
        sf.write(wav, x, 48000, subtype="FLOAT")
        cache = tmp_path / f"cache{round_}"
        barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
        procs = [ctx.Process(target=_load_together, args=(str(cache), str(wav), barrier, results))
                 for _ in range(N_PROCS)]
        for p in procs:
            p.start()
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert all(g[0] == "ok" for g in got), got
        assert len({g[1] for g in got}) == 1 and got[0][2] == 48000
        files = sorted(p.name for p in (cache / "audio").iterdir())
        assert len(files) == 1 and files[0].endswith(".npz") and ".tmp" not in files[0], files
        # a later load reads the cached clip: the same samples, mono
        monkeypatch.setenv("HUSHBRIDGE_TRAIN_CACHE", str(cache))
        again = data.load_clip(wav)
        assert float(np.sum(again.audio, dtype=np.float64)) == got[0][1]
        np.testing.assert_allclose(again.audio, x.mean(axis=1), atol=1e-7)
