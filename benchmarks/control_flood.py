"""Control flood: 1,000 OSC messages/s and 1,000 MIDI CC/s into a running engine on JACK.

    python benchmarks/control_flood.py [--seconds 60] [--rounds 6] [--keep-cpus-busy]
                                       [--osc-rate 1000] [--midi-rate 1000]
                                       [--osc-receive both|thread|process] [--sink-round]

Starts its own ``jackd -d dummy -r 48000 -p 128`` (real-time, falling back to --no-realtime as
the test fixture does), runs the engine as a JACK client with the ``dialogue`` preset plus two
probe gains, the OSC server and a MIDI input (a JACK MIDI port through python-rtmidi). Two child
processes flood it (so their own Python work does not share the engine's GIL, as with a real
controller): one sends ``/hb/probe/gain_db`` over UDP at ``--osc-rate``, each value unique within
4 s; the other sends CC 7 (mapped to ``/hb/probe_midi/gain_db``) through a JACK MIDI port at
``--midi-rate``, the value stepping through 0..127.

Measured (JSON lines, DESIGN §7, also in benchmarks/results/control_flood.json):

- ``xruns``: reported by the server during the flood; baseline: the same engine for the same
  time without control traffic. ``late_clients`` in its settings: whom jackd named at each xrun,
  by ``client:state`` (:func:`hushbridge.io.jack.late_clients`); ``engine_overruns``: those at
  which the engine's own callback was still running (the rest waited for a thread the system
  had not woken yet, or for another client). Idle and flood alternate ``--rounds`` times (idle first, 6
  by default), so that a machine whose load drifts weighs on both alike; the per-round counts
  are in the row's settings. ``late_starts`` / ``late_blocks``: the engine's own counts of
  callbacks that began after half their period (woken late, or kept waiting for the GIL) and of
  ones whose processing overran it.
- ``osc_latency_p50/p90/p99/p999/max`` and ``midi_latency_...`` (ms): from the sender's
  ``time.perf_counter()`` just before sending to the moment the audio thread applied the
  change at a block start (the engine's optional :class:`~hushbridge.engine.ApplyProbe`; both
  clocks are CLOCK_MONOTONIC on Linux, shared between processes).
- ``cpu``: CPU time of the engine process (audio thread + OSC + MIDI threads) per wall
  second, during the flood and (baseline) idle; the OSC receive process's CPU time is added
  where there is one (Linux: /proc).
- ``wakeups``: context switches per second summed over the engine process's threads (Linux:
  /proc/self/task), during the flood and (baseline) idle: each is a wake-up that takes the GIL.

Where OSC is received (``--osc-receive``): ``thread`` in the engine process (the default of
:class:`~hushbridge.control.osc.OscServer`), ``process`` in a process of its own
(``OscServer(process=True)``, :mod:`hushbridge.control.osc_process`, the default of
``hushbridge run``), or ``both`` (the default here): one server of each kind on the same engine,
and every round floods the thread one, then the process one, after its idle segment. Each
mode's rows then carry ``@thread`` / ``@process`` in their names, and ``xruns_process_vs_thread``
and ``wakeups_process_vs_thread`` compare the two in the same run (``--seconds`` is the flood
time of each mode).

``--sink-round`` (with ``--midi-rate 0``) adds a segment per round whose OSC flood goes to a
process that only receives and drops it: the same traffic on the machine (the sender, a
receiving process, the kernel), none of it handled by the engine. ``xruns_process_vs_sink``
then says what the engine's handling adds to what the traffic costs a small machine anyway.
- counts: messages sent, applied, coalesced, dropped.

``--keep-cpus-busy`` runs one spinning process per CPU at SCHED_IDLE (it gets a CPU only when
no other thread wants it) for the whole run. On a virtual machine a CPU with nothing to do
halts, and waking it again goes through the hypervisor; a flood makes thousands of such
wake-ups a second. This mode shows what the engine does with that latency taken out, as a
machine tuned for audio (CPU idle states limited) would have it; report both runs.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import COUNT_RATIO_RULE, Recorder, count_ratio, lower_is_better  # noqa: E402

SR, BLOCK = 48000, 128
ENGINE_CLIENT = "hb-flood"
CYCLE = 4000  # OSC values repeat every CYCLE messages: -(k * 0.01) dB, k = seq % CYCLE
RT_REFUSED = ("cannot use real-time scheduling", "acquireselfrealtime error", "cannot lock down",
              "operation not permitted")


# == child processes ================================================================================
def send_paced(conn, send, rate: float, n: int) -> None:
    """For each round the parent starts with ``("go", target)``: call ``send(i, target)`` for
    i < n at ``rate`` per second and send back the send times; "stop" ends."""
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg == "stop":
            return
        target = msg[1]
        sent = np.zeros(n)
        t0 = time.perf_counter()
        for i in range(n):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # no spinning: the senders must not eat the cores the engine needs
            sent[i] = time.perf_counter()
            send(i, target)
        conn.send(sent)


def osc_sender(conn, rate: float, seconds: float) -> None:
    """Send ``/hb/probe/gain_db`` at ``rate`` per second, each round, to the UDP port it names."""
    import socket

    from pythonosc.osc_message_builder import OscMessageBuilder

    n = int(rate * seconds)
    packets = []
    for k in range(CYCLE):
        b = OscMessageBuilder("/hb/probe/gain_db")
        b.add_arg(-k * 0.01, "f")
        packets.append(b.build().dgram)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send_paced(conn, lambda i, port: sock.sendto(packets[i % CYCLE], ("127.0.0.1", port)), rate, n)


def midi_sender(conn, server: str, rate: float, seconds: float) -> None:
    """A virtual JACK MIDI output sending CC 7 (value i % 128) at ``rate`` per second, each round."""
    os.environ["JACK_DEFAULT_SERVER"] = server
    import mido

    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK")
    port = backend.open_output("out", client_name="hb-flood-midi")
    msgs = [mido.Message("control_change", channel=0, control=7, value=v) for v in range(128)]
    send_paced(conn, lambda i, _: port.send(msgs[i % 128]), rate, int(rate * seconds))
    time.sleep(0.2)
    port.close()


def udp_sink(conn) -> None:
    """Receive and drop UDP datagrams until "stop" (the --sink-round target: the same traffic on
    the machine, nothing of it handled by the engine)."""
    import select
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname()[1])
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN)
    while True:
        poller.poll()
        if conn.poll():
            return
        try:
            while True:
                sock.recvfrom(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass


def spin_idle() -> None:
    """Keep one CPU busy at the lowest priority there is (SCHED_IDLE: it runs only when no other
    thread wants the CPU), so that the CPU never halts (see --keep-cpus-busy)."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while True:
        pass


# == analysis =======================================================================================
def match_latency(sent: np.ndarray, period: int, applied_t: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each applied change (key, time): seconds since the latest send of that key before it
    (send ``i`` carries key ``i % period``)."""
    out = np.full(len(keys), np.nan)
    for k in np.unique(keys):
        if not 0 <= k < period:
            continue
        ts = sent[k::period]
        m = keys == k
        t = applied_t[m]
        idx = np.searchsorted(ts, t, side="right") - 1
        lat = np.full(len(t), np.nan)
        ok = idx >= 0
        lat[ok] = t[ok] - ts[idx[ok]]
        out[m] = lat
    return out[np.isfinite(out)]


def context_switches() -> dict[str, int]:
    """Context switches so far per thread of this process, by thread name (Python threads), or
    "audio (SCHED_FIFO)" for real-time threads (JACK's process thread), or "other"; {} where
    /proc is missing."""
    import threading

    names = {t.native_id: t.name.split(":")[0] for t in threading.enumerate()}
    out: dict[str, int] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                n = sum(int(line.split()[-1]) for line in f if "ctxt_switches:" in line)  # voluntary, not
            with open(f"/proc/self/task/{tid}/stat") as f:
                policy = int(f.read().rsplit(")", 1)[1].split()[38])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended
        name = names.get(int(tid)) or ("audio (SCHED_FIFO)" if policy == 1 else "other")
        out[name] = out.get(name, 0) + n
    return out


def switches_since(before: dict[str, int]) -> dict[str, int]:
    now = context_switches()
    return {k: v - before.get(k, 0) for k, v in now.items()}


def cpu_seconds(child_pid: int | None) -> float:
    """CPU time of this process, plus that of ``child_pid`` (Linux /proc) when given."""
    total = time.process_time()
    if child_pid is not None:
        try:
            with open(f"/proc/{child_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def percentiles(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {}
    ms = x * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "p999": float(np.percentile(ms, 99.9)), "max": float(ms.max())}


# == main ===========================================================================================
def start_jackd() -> tuple[subprocess.Popen, str, bool, str]:
    import jack

    name = f"hbflood-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    log_dir = tempfile.mkdtemp(prefix="hb-flood-jackd-")
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1", JACK_NO_START_SERVER="1")
    for realtime in (True, False):
        log_path = os.path.join(log_dir, "jackd.log")
        cmd = ["jackd", "-n", name] + (["-R", "-P", "70"] if realtime else ["--no-realtime"])
        cmd += ["-d", "dummy", "-r", str(SR), "-p", str(BLOCK)]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 10
        ok = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                jack.Client("hb-flood-probe", no_start_server=True, servername=name).close()
                ok = True
                break
            except jack.JackOpenError:
                time.sleep(0.05)
        refused = any(s in open(log_path, errors="replace").read().lower() for s in RT_REFUSED)
        if ok and not (realtime and refused):
            return proc, name, realtime, log_path
        proc.terminate()
        proc.wait(5)
    raise SystemExit(f"jackd did not start (logs in {log_dir})")


def _overruns(late: dict[str, int]) -> int:
    """Xruns at which jackd found the engine's own callback still running (or finishing late);
    the rest waited for another client or for a thread the system had not woken yet."""
    return sum(n for key, n in late.items() if key in (f"{ENGINE_CLIENT}:Running", f"{ENGINE_CLIENT}:late"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="flood time in all (default 60)")
    ap.add_argument("--rounds", type=int, default=6,
                    help="alternate idle and flood this many times, each --seconds / ROUNDS long (default 6)")
    ap.add_argument("--osc-rate", type=float, default=1000.0, help="OSC messages per second (default 1000)")
    ap.add_argument("--midi-rate", type=float, default=1000.0, help="MIDI CC per second (default 1000; 0: none)")
    ap.add_argument("--osc-receive", choices=("both", "thread", "process"), default="both",
                    help="receive OSC on a thread of the engine process, in a process of its own, or (default) "
                         "both: each round floods one server of each kind in turn, so they compare in one run")
    ap.add_argument("--sink-round", action="store_true",
                    help="add a flood segment per round whose OSC goes to a process that drops it (and no MIDI "
                         "is sent): what the traffic costs the machine without the engine handling any of it; "
                         "use with --midi-rate 0 so that every segment carries the same traffic")
    ap.add_argument("--keep-cpus-busy", action="store_true",
                    help="run one SCHED_IDLE spinning process per CPU throughout, so no CPU ever halts "
                         "(takes a virtual machine's halt/wake-up latency out of the measurement)")
    args = ap.parse_args()
    if shutil.which("jackd") is None:
        raise SystemExit("jackd is not installed (apt install jackd2)")
    rounds = max(1, args.rounds)
    seg = args.seconds / rounds

    from hushbridge.control.osc import OscServer
    from hushbridge.effects import Gain
    from hushbridge.engine import ApplyProbe, Engine
    from hushbridge.io.jack import JackBackend, late_clients
    from hushbridge.presets import load_preset

    jackd, server_name, realtime, jackd_log = start_jackd()

    def late_since(offset: int) -> tuple[dict[str, int], int]:
        """jackd's named late clients logged after ``offset`` and the log's new end."""
        with open(jackd_log, "rb") as f:
            f.seek(offset)
            text = f.read()
        return late_clients(text.decode(errors="replace")), offset + len(text)
    os.environ["JACK_DEFAULT_SERVER"] = server_name
    rec = Recorder("control_flood")
    ctx = multiprocessing.get_context("spawn")
    procs = []
    try:
        if args.keep_cpus_busy:
            for _ in range(os.cpu_count() or 1):
                procs.append(ctx.Process(target=spin_idle, daemon=True))
                procs[-1].start()
        chain = load_preset("dialogue")
        chain.append(Gain(), id="probe")
        chain.append(Gain(), id="probe_midi")
        engine = Engine(chain, channels=2)
        probe_slot, midi_slot = chain.index_of("probe"), chain.index_of("probe_midi")
        backend = JackBackend(engine, name=ENGINE_CLIENT, connect_inputs="system:capture_.*",
                              connect_outputs="system:playback_.*")
        backend.start()
        modes = ["thread", "process"] if args.osc_receive == "both" else [args.osc_receive]
        servers = {m: OscServer(engine, port=0, process=m == "process").start() for m in modes}
        ports = {m: server.port for m, server in servers.items()}
        if args.sink_round:
            a, b = ctx.Pipe()
            procs.append(ctx.Process(target=udp_sink, args=(b,), daemon=True))
            procs[-1].start()
            ports["sink"] = a.recv()
            sink_conn = a
            modes.append("sink")
        if "process" in servers and servers["process"].receiver is None:
            raise SystemExit("the OSC receive process did not start (see the log)")
        receiver_pid = servers["process"].receiver.proc.pid if "process" in servers else None
        midi = None
        have_midi = args.midi_rate > 0
        if have_midi:
            try:
                from hushbridge.control.midi import MidiInput, MidiMapper
            except ImportError:
                have_midi = False
                print("# bridge/control/midi.py not available: OSC flood only", file=sys.stderr)
        settings = {"sample_rate": SR, "frames": BLOCK, "seconds": args.seconds, "rounds": rounds,
                    "osc_rate": args.osc_rate, "midi_rate": args.midi_rate if have_midi else 0,
                    "realtime": realtime, "keep_cpus_busy": args.keep_cpus_busy,

                    "chain": " > ".join(chain.ids), "cores": os.cpu_count()}

        # the engine compiles new fused runs in a background process: measure what runs after it
        deadline = time.monotonic() + 300.0
        while engine.chain.uncompiled and time.monotonic() < deadline:
            time.sleep(0.2)
        settings["fused"] = not engine.chain.uncompiled

        conns = []
        a, b = ctx.Pipe()
        procs.append(ctx.Process(target=osc_sender, args=(b, args.osc_rate, seg), daemon=True))
        conns.append(a)
        if have_midi:
            a2, b2 = ctx.Pipe()
            procs.append(ctx.Process(target=midi_sender, args=(b2, server_name, args.midi_rate, seg), daemon=True))
            conns.append(a2)
        for p in procs[-len(conns):]:
            p.start()
        for c in conns:
            if not c.poll(60) or c.recv() != "ready":
                raise SystemExit("a flood sender did not start")
        if have_midi:
            mapper = MidiMapper(engine, {"cc": [{"cc": 7, "address": "/hb/probe_midi/gain_db"}]})
            midi = MidiInput(mapper, port="hb-flood-midi:out", api="jack", server=server_name, jack_host=backend,
                             port_name="midi_in").start()  # as `hushbridge run` does on JACK
            deadline = time.monotonic() + 10
            while not midi.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            if not midi.connected:
                raise SystemExit("the MIDI input did not connect to the flood sender")
        time.sleep(1.0)

        idle_x, idle_cpu, idle_wake, idle_late = [], 0.0, {}, {}
        idle_own = {"late_starts": 0, "late_blocks": 0}
        acc = {m: {"x": [], "cpu": 0.0, "wall": 0.0, "wake": {}, "osc_lat": [], "midi_lat": [], "osc_sent": 0,
                   "midi_sent": 0, "osc_applied": 0, "midi_applied": 0, "late": {},
                   "own": {"late_starts": 0, "late_blocks": 0}} for m in modes}

        def own_counts() -> dict[str, int]:  # the engine's own view of its late callbacks
            return {"late_starts": int(engine.late_starts), "late_blocks": int(engine.late_blocks)}

        def add_own(into: dict[str, int], before: dict[str, int]) -> None:
            for k, v in own_counts().items():
                into[k] += v - before[k]
        _, log_at = late_since(0)

        def add(into: dict[str, int], counts: dict[str, int]) -> None:
            for k, v in counts.items():
                into[k] = into.get(k, 0) + v
        d0, co0 = engine.dropped_messages, engine.coalesced_changes
        midi_param = engine.info("/hb/probe_midi/gain_db").param
        for _ in range(rounds):
            # idle: the same engine, no control traffic
            _, log_at = late_since(log_at)
            x0, c0, k0, own0 = engine.xruns, cpu_seconds(receiver_pid), context_switches(), own_counts()
            time.sleep(seg)
            idle_x.append(engine.xruns - x0)
            add_own(idle_own, own0)
            late, log_at = late_since(log_at)
            add(idle_late, late)
            idle_cpu += cpu_seconds(receiver_pid) - c0
            for name, n in switches_since(k0).items():
                idle_wake[name] = idle_wake.get(name, 0) + n
            for mode in modes:  # flood, OSC received each way in turn
                a = acc[mode]
                engine.apply_probe = probe = ApplyProbe(int((args.osc_rate + args.midi_rate) * seg * 1.2) + 1024)
                _, log_at = late_since(log_at)
                x0, c0, w0, k0 = engine.xruns, cpu_seconds(receiver_pid), time.perf_counter(), context_switches()
                own0 = own_counts()
                flooding = conns if mode != "sink" else conns[:1]  # the sink round sends OSC only
                for c in flooding:
                    c.send(("go", ports[mode]))
                results = [c.recv() if c.poll(seg + 60) else None for c in flooding]
                a["cpu"] += cpu_seconds(receiver_pid) - c0
                a["wall"] += time.perf_counter() - w0
                for name, n in switches_since(k0).items():
                    a["wake"][name] = a["wake"].get(name, 0) + n
                time.sleep(0.2)  # the last changes reach the audio thread
                a["x"].append(engine.xruns - x0)
                add_own(a["own"], own0)
                late, log_at = late_since(log_at)
                add(a["late"], late)
                engine.apply_probe = None
                if mode == "sink":
                    a["osc_sent"] += len(results[0])
                    continue
                n = probe.n
                slots, values, times = probe.slots[:n], probe.values[:n], probe.times[:n]
                sel = slots == probe_slot
                a["osc_lat"].append(match_latency(results[0], CYCLE, times[sel],
                                                  np.rint(-values[sel] / 0.01).astype(int)))
                a["osc_sent"] += len(results[0])
                a["osc_applied"] += int(sel.sum())
                if have_midi and results[1] is not None:
                    sel = slots == midi_slot
                    keys = np.rint((values[sel] - midi_param.min) / (midi_param.max - midi_param.min) * 127).astype(int)
                    a["midi_lat"].append(match_latency(results[1], 128, times[sel], keys))
                    a["midi_sent"] += len(results[1])
                    a["midi_applied"] += int(sel.sum())
        for c in conns:
            c.send("stop")
        if args.sink_round:
            sink_conn.send("stop")
        idle_s = seg * rounds
        for mode in modes:
            a = acc[mode]
            tag = f"@{mode}" if len(modes) > 1 else ""
            if mode == "sink":
                tag = "@sink"
            rows = [("xruns", float(sum(a["x"])), "count", "idle engine, same time", float(sum(idle_x))),
                    ("cpu", a["cpu"] / a["wall"], "cpu s / wall s", "idle engine, same time", idle_cpu / idle_s),
                    ("wakeups", sum(a["wake"].values()) / a["wall"], "context switches / s",
                     "idle engine, same time", sum(idle_wake.values()) / idle_s),
                    ("engine_overruns", float(_overruns(a["late"])), "count", "idle engine, same time",
                     float(_overruns(idle_late))),
                    # the engine's own count: callbacks that began after half their period (woken
                    # late, or kept waiting for the GIL) and ones whose processing overran it
                    ("late_starts", float(a["own"]["late_starts"]), "count", "idle engine, same time",
                     float(idle_own["late_starts"])),
                    ("late_blocks", float(a["own"]["late_blocks"]), "count", "idle engine, same time",
                     float(idle_own["late_blocks"])),
                    ("osc_sent", float(a["osc_sent"]), "messages", None, None)]
            if mode != "sink":
                rows.append(("osc_applied", float(a["osc_applied"]), "changes", None, None))
                for k, v in percentiles(np.concatenate(a["osc_lat"])).items():
                    rows.append((f"osc_latency_{k}", v, "ms", None, None))
            if a["midi_lat"]:
                rows += [("midi_sent", float(a["midi_sent"]), "messages", None, None),
                         ("midi_applied", float(a["midi_applied"]), "changes", None, None)]
                for k, v in percentiles(np.concatenate(a["midi_lat"])).items():
                    rows.append((f"midi_latency_{k}", v, "ms", None, None))
            for name, value, unit, base, base_value in rows:
                ratio, extra = None, {}
                if base_value is not None and name in ("cpu", "wakeups"):
                    ratio = lower_is_better(value, base_value)
                elif base_value is not None and name in ("late_starts", "late_blocks"):
                    ratio = count_ratio(value, base_value)
                    extra = {"ratio_rule": COUNT_RATIO_RULE}
                elif base_value is not None and name in ("xruns", "engine_overruns"):
                    ratio = count_ratio(value, base_value)
                    extra = {"ratio_rule": COUNT_RATIO_RULE, "per_round": a["x"], "per_round_baseline": idle_x,
                             "late_clients": a["late"], "late_clients_baseline": idle_late}
                if name == "wakeups":  # who wakes: per thread, per second
                    extra = {"by_thread": {k: round(v / a["wall"], 1) for k, v in sorted(a["wake"].items())},
                             "by_thread_baseline": {k: round(v / idle_s, 1) for k, v in sorted(idle_wake.items())}}
                rec.emit(name + tag, value, unit, baseline=base, baseline_value=base_value, block=BLOCK, ratio=ratio,
                         settings={**settings, "osc_receive": mode, **extra})
        if "sink" in modes and "process" in modes:  # what the engine adds to the traffic's own cost
            p, k = acc["process"], acc["sink"]
            rec.emit("xruns_process_vs_sink", float(sum(p["x"])), "count",
                     baseline="the same OSC traffic to a process that drops it", baseline_value=float(sum(k["x"])),
                     block=BLOCK, ratio=count_ratio(sum(p["x"]), sum(k["x"])),
                     settings={**settings, "osc_receive": "process vs sink", "ratio_rule": COUNT_RATIO_RULE,
                               "per_round": p["x"], "per_round_baseline": k["x"]})
        if "thread" in modes and "process" in modes:  # same run, rounds interleaved
            t, p = acc["thread"], acc["process"]
            same = {**settings, "osc_receive": "process vs thread"}
            rec.emit("xruns_process_vs_thread", float(sum(p["x"])), "count", baseline="OSC received on a thread",
                     baseline_value=float(sum(t["x"])), block=BLOCK, ratio=count_ratio(sum(p["x"]), sum(t["x"])),
                     settings={**same, "ratio_rule": COUNT_RATIO_RULE, "per_round": p["x"],
                               "per_round_baseline": t["x"]})
            pw, tw = sum(p["wake"].values()) / p["wall"], sum(t["wake"].values()) / t["wall"]
            rec.emit("wakeups_process_vs_thread", pw, "context switches / s", baseline="OSC received on a thread",
                     baseline_value=tw, block=BLOCK, ratio=lower_is_better(pw, tw), settings=same)
        rows = [("coalesced_changes", float(engine.coalesced_changes - co0), "count", None, None),
                ("dropped_messages", float(engine.dropped_messages - d0), "count", None, None)]
        for name, value, unit, base, base_value in rows:
            rec.emit(name, value, unit, baseline=base, baseline_value=base_value, block=BLOCK, settings=settings)
        rec.save()
        if midi is not None:
            midi.close()
        for server in servers.values():
            server.close()
        backend.close()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        jackd.terminate()
        jackd.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
