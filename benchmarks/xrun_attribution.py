"""Where xruns come from: an engine chain on JACK against a trivial ``gain`` chain, per cycle.

    python benchmarks/xrun_attribution.py [--chain denoise] [--seconds 60] [--rounds 1] [--channels 1]
                                          [--keep-cpus-busy]

Starts its own ``jackd -R -d dummy -r 48000 -p 128`` (as ``control_flood.py``), then runs each
system in a fresh child process, the baseline (``gain``) first, alternating for ``--rounds``. In
every process cycle the child notes, in frames of JACK's clock since the cycle began, when our
callback **started** (scheduling and GIL wait before any of our code runs) and how long its
**body** took (our processing, plus any preemption inside it). A cycle ends late when start +
body passes the period; each late cycle is put down to a late start (start > half a period), a
long body (body > half a period), both, or neither.

JSON lines (DESIGN §7, also in ``benchmarks/results/xrun_attribution.json``): ``xruns``,
``late_cycles`` and their causes, ``start_p99``/``start_max``/``body_p99``/``body_p999``/``body_max``
(frames), for the chain with the ``gain`` numbers as baseline of the same run.

``--keep-cpus-busy``: one SCHED_IDLE spinning process per CPU throughout (as in
``control_flood.py``), which takes a virtual machine's CPU halt/wake-up latency out of the
measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import COUNT_RATIO_RULE, Recorder, count_ratio, lower_is_better  # noqa: E402
from control_flood import BLOCK, SR, spin_idle, start_jackd  # noqa: E402


def child(server: str, chain: str, seconds: float, channels: int) -> dict:
    """One measurement in this process: returns the per-cycle statistics."""
    os.environ["JACK_DEFAULT_SERVER"] = server
    from hushbridge.effects import chain_from_names
    from hushbridge.engine import Engine
    from hushbridge.io.jack import JackBackend

    engine = Engine(chain_from_names(chain), channels=channels)
    backend = JackBackend(engine, name="hb-xrun-attrib", server=server,
                          connect_inputs="system:capture_.*", connect_outputs="system:playback_.*")
    n = int(seconds * SR / BLOCK) + 4000
    start = np.zeros(n, np.int64)
    end = np.zeros(n, np.int64)
    k = [0]
    process = backend._process
    client = backend.client

    def measured(frames: int) -> None:
        began = client.last_frame_time
        t0 = client.frame_time
        process(frames)
        i = k[0]
        if i < n:
            start[i] = t0 - began
            end[i] = client.frame_time - began
            k[0] = i + 1

    client.set_process_callback(measured)  # before activation, replacing the backend's own
    with backend:
        engine.freeze_gc()
        time.sleep(1.0)
        k0, x0 = k[0], engine.xruns
        time.sleep(seconds)
        k1, xruns = k[0], engine.xruns - x0
    s, e = start[k0:k1], end[k0:k1]
    b = e - s
    late = e > BLOCK
    half = BLOCK // 2
    pct = lambda a, q: float(np.percentile(a, q)) if a.size else 0.0  # noqa: E731
    return {
        "cycles": int(k1 - k0), "xruns": int(xruns), "late_cycles": int(late.sum()),
        "late_start": int((late & (s > half) & (b <= half)).sum()),
        "long_body": int((late & (b > half) & (s <= half)).sum()),
        "both": int((late & (b > half) & (s > half)).sum()),
        "start_p99": pct(s, 99), "start_max": int(s.max()) if s.size else 0,
        "body_p50": pct(b, 50), "body_p99": pct(b, 99), "body_p999": pct(b, 99.9), "body_max": int(b.max()) if b.size else 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chain", default="denoise", help="the chain measured (names as in --chain of the CLI)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--keep-cpus-busy", action="store_true",
                    help="one SCHED_IDLE spinning process per CPU throughout (no CPU ever halts)")
    ap.add_argument("--child", nargs=2, metavar=("SERVER", "CHAIN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.seconds, args.channels)), flush=True)
        return 0

    jackd, server, realtime = start_jackd()
    results: dict[str, list[dict]] = {"gain": [], args.chain: []}
    spinners = []
    try:
        if args.keep_cpus_busy:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            spinners = [ctx.Process(target=spin_idle, daemon=True) for _ in range(os.cpu_count() or 1)]
            for p in spinners:
                p.start()
        for _ in range(args.rounds):
            for chain in ("gain", args.chain):
                out = subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--channels",
                                      str(args.channels), "--child", server, chain],
                                     capture_output=True, text=True, timeout=args.seconds + 120)
                if out.returncode != 0:
                    raise SystemExit(f"{chain}: child failed:\n{out.stderr[-3000:]}")
                results[chain].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        for p in spinners:
            p.kill()
        jackd.terminate()
        jackd.wait(10)

    rec = Recorder("xrun_attribution")
    settings = {"chain": args.chain, "channels": args.channels, "seconds": args.seconds, "rounds": args.rounds,
                "realtime": realtime, "keep_cpus_busy": args.keep_cpus_busy, "server": f"jackd dummy {SR} Hz, {BLOCK} frames"}
    for key in results["gain"][0]:
        ours = [r[key] for r in results[args.chain]]
        base = [r[key] for r in results["gain"]]
        summed = key in ("cycles", "xruns", "late_cycles", "late_start", "long_body", "both")
        v = float(np.sum(ours) if summed else np.max(ours))
        bv = float(np.sum(base) if summed else np.max(base))
        unit = "count" if summed else "frames"
        extra = {}
        if key == "cycles":  # how many cycles were measured: not better or worse
            ratio = None
        elif summed:
            ratio, extra = count_ratio(v, bv), {"ratio_rule": COUNT_RATIO_RULE}
        else:
            ratio = lower_is_better(v, bv)
        rec.emit(key, v, unit, baseline="gain", baseline_value=bv, block=BLOCK, ratio=ratio,
                 settings=dict(settings, per_round=ours, baseline_per_round=base, **extra))
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
