"""JackBackend against a real JACK dummy server (the session's ``jack_server`` fixture).

Signals are fed by one JACK client (JackPlayer) and recorded by another (JackRecorder), both
addressing samples by absolute JACK frame time, so delays are measured to the sample.

Measured graph delay (player -> engine -> recorder, pass-through chain): 0 frames. JACK runs the
three clients in dependency order within one cycle, so the engine adds no period of its own;
any delay through the engine is exactly its chain's reported latency.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import JackRigProcess, db_to_gain, find_delay, wait_until, trivial_client_xruns

from hushbridge.effects import Chain, Effect, Gain, ProcessSpec
from hushbridge.engine import Engine
from hushbridge.errors import BackendError
from hushbridge.io.jack import JackBackend, get_latency_range, list_jack_ports

pytestmark = pytest.mark.jack

SR = 48000
GRAPH_DELAY = 0  # measured: see the module docstring and test_gain_and_latency_offsets


class Delay(Effect):
    """Test-only effect: delays every channel by ``samples`` and reports it as its latency."""

    name = "testdelay"
    params = ()

    def __init__(self, samples: int) -> None:
        super().__init__()
        self.samples = int(samples)
        self._buf = None

    @property
    def latency_samples(self) -> int:
        return self.samples

    def _prepare(self, spec: ProcessSpec) -> None:
        self._buf = np.zeros((spec.channels, self.samples + spec.max_block_size), dtype=np.float32)

    def reset(self) -> None:
        if self._buf is not None:
            self._buf.fill(0.0)

    def process(self, block: np.ndarray) -> None:
        d, n = self.samples, block.shape[1]
        buf = self._buf
        buf[:, d:d + n] = block
        block[...] = buf[:, :n]
        buf[:, :d] = buf[:, n:n + d].copy()


class Stall(Effect):
    """Test-only effect: sleeps ``stall_ms`` in one callback after :meth:`arm` (forces an xrun)."""

    name = "teststall"
    params = ()

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def arm(self) -> None:
        self.armed = True

    def process(self, block: np.ndarray) -> None:
        if self.armed:
            self.armed = False
            time.sleep(0.03)


@dataclass
class Rig:
    engine: Engine
    backend: JackBackend
    clients: JackRigProcess  # player and recorder, in their own process

    def take(self, signal: np.ndarray, extra: int = 1024, lead: int = 2400, during=None,
             require_complete: bool = True) -> tuple[np.ndarray, bool]:
        """Play ``signal`` into the engine and record its output.

        Returns (recording, clean): clean means no xrun during the take and every frame recorded.
        """
        x0 = self.engine.xruns
        data, complete = self.clients.take(signal, extra, lead, during, now=lambda: self.backend.client.frame_time)
        if require_complete:
            assert complete, f"{int(np.isnan(data).any(axis=0).sum())} frames never recorded (xruns skipped cycles)"
        return data, complete and self.engine.xruns == x0

    def clean_take(self, signal: np.ndarray, tries: int = 5, **kw) -> np.ndarray:
        """A take without xruns or skipped cycles, if the machine allows one in ``tries``
        (an xrun can skip or shift a block, which says nothing about the engine's signal path);
        the last try must at least be complete."""
        complete = False
        for _ in range(tries):
            data, clean = self.take(signal, require_complete=False, **kw)
            complete = not np.isnan(data).any()
            if clean:
                break
        if not complete:
            # every take lost cycles to xruns: the machine is too busy to judge the signal path
            pytest.skip(f"no complete JACK recording in {tries} takes (xruns: {self.engine.xruns}); machine too busy")
        return data


@pytest.fixture
def rig(jack_server):
    engine = Engine(Chain([]), channels=2)
    backend = JackBackend(engine, name="hb-engine")
    clients = None
    try:
        clients = JackRigProcess(2)
        backend.start()
        clients.connect([p.name for p in backend.inports], [p.name for p in backend.outports])
        time.sleep(0.3)  # let the graph settle (activation xruns)
        yield Rig(engine, backend, clients)
    finally:
        if clients is not None:
            clients.close()
        backend.close()


@pytest.fixture
def probe(jack_server):
    """A plain JACK client of the test server, for queries and for changing the server."""
    import jack

    client = jack.Client("hb-probe", no_start_server=True)
    yield client
    client.close()


def noise(n: int = 4800, seed: int = 1, amp: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((2, n)) * amp).astype(np.float32)


def swap(engine: Engine, chain: Chain) -> None:
    engine.load_chain(chain)
    assert engine.wait_for_swap(2.0)


# == signal path ================================================================================
def test_gain_and_latency_offsets(rig):
    """Output = input x gain, delayed by exactly graph delay + the chain's reported latency."""
    sig = noise()
    n = sig.shape[1]
    y = rig.clean_take(sig)
    d0 = find_delay(sig[0], y[0], 512)
    assert d0 == GRAPH_DELAY, f"pass-through delay {d0} frames (expected {GRAPH_DELAY})"
    np.testing.assert_array_equal(y[:, d0:d0 + n], sig)

    swap(rig.engine, Chain([Gain(gain_db=-6)]))
    assert rig.engine.latency_samples == 0
    y = rig.clean_take(sig)
    assert find_delay(sig[0], y[0], 512) == d0
    np.testing.assert_allclose(y[:, d0:d0 + n], sig * db_to_gain(-6), rtol=1e-6, atol=1e-9)
    assert np.all(y[:, :d0] == 0) and np.all(y[:, d0 + n:] == 0)

    swap(rig.engine, Chain([Delay(37), Gain(gain_db=-6)]))
    assert rig.engine.latency_samples == 37
    y = rig.clean_take(sig)
    d = find_delay(sig[0], y[0], 512)
    assert d == d0 + 37
    np.testing.assert_allclose(y[:, d:d + n], sig * db_to_gain(-6), rtol=1e-6, atol=1e-9)
    assert np.all(y[:, :d] == 0)


def test_nonfinite_input_never_reaches_outputs(rig):
    swap(rig.engine, Chain([Gain(gain_db=-6)]))
    t = np.arange(9600) / SR
    sig = np.vstack([0.5 * np.sin(2 * np.pi * 300 * t)] * 2).astype(np.float32)
    bad = np.zeros(sig.shape, dtype=bool)
    sig[0, 1000:1128] = np.nan  # a whole block of NaN
    sig[1, 3000] = np.inf
    sig[0, 5000:5003] = -np.inf
    sig[:, 7000:7300] = np.nan
    bad |= ~np.isfinite(sig)
    before = rig.engine.nonfinite_events
    y = rig.clean_take(sig)
    assert np.isfinite(y).all()
    d, n = GRAPH_DELAY, sig.shape[1]
    out = y[:, d:d + n]
    assert np.all(out[bad] == 0.0)
    np.testing.assert_allclose(out[~bad], sig[~bad] * db_to_gain(-6), rtol=1e-6, atol=1e-9)
    assert rig.engine.nonfinite_events > before


def test_live_chain_swap_has_no_discontinuity(rig):
    """Swap Gain(0 dB) -> Gain(-0.5 dB) mid-sine: no sample jump beyond the sine's own slope
    (an abrupt swap at a peak would jump 0.045, four times the slope 0.0105)."""
    n = 24000
    t = np.arange(n) / SR
    sig = np.vstack([0.8 * np.sin(2 * np.pi * 100 * t)] * 2).astype(np.float32)
    max_slope = float(np.abs(np.diff(sig[0])).max())

    g = db_to_gain(-0.5)
    for i in range(8):  # retake only if an xrun disturbed the take (see Rig.clean_take)
        swap(rig.engine, Chain([Gain(gain_db=0.0)]))
        y, clean = rig.take(sig, during=lambda: rig.engine.load_chain(Chain([Gain(gain_db=-0.5)])),
                            require_complete=False)
        if clean:
            break
    out = y[:, GRAPH_DELAY:GRAPH_DELAY + n]
    recorded = ~np.isnan(out).any(axis=0)
    # where the crossfade ran: samples whose gain is neither 0 dB nor -0.5 dB (judged away from
    # the sine's zero crossings, where the ratio says nothing)
    loud = np.abs(sig[0]) > 0.2
    ratio = np.where(loud & recorded, out[0] / np.where(loud, sig[0], 1.0), np.nan)
    before = np.flatnonzero(np.abs(ratio - 1.0) < 1e-5)
    after = np.flatnonzero(np.abs(ratio - g) < 1e-5)
    assert before.size and after.size, "the take holds no 0 dB or no -0.5 dB part: the swap did not happen in it"
    fade = slice(before[before < after[0]].max() if (before < after[0]).any() else 0, after[0] + 1)
    if not recorded[fade].all():
        pytest.skip(f"xruns hid the crossfade from the recorder in 8 takes ({rig.engine.xruns} xruns): machine too busy")
    # jumps between neighbouring recorded samples only: a skipped cycle says nothing about the engine
    steps = np.abs(np.diff(out, axis=1))[:, recorded[1:] & recorded[:-1]]
    jump = float(steps.max())
    assert jump <= max_slope * 1.02, f"max jump {jump:.4f} vs sine slope {max_slope:.4f}"
    # the swap happened inside the take: start at 0 dB, end at -0.5 dB
    head, tail = out[:, :4800], out[:, -4800:]
    keep_h, keep_t = recorded[:4800], recorded[-4800:]
    np.testing.assert_allclose(head[:, keep_h], sig[:, :4800][:, keep_h], atol=1e-6)
    np.testing.assert_allclose(tail[:, keep_t], sig[:, -4800:][:, keep_t] * g, rtol=1e-5, atol=1e-6)


class _CountingGain(Gain):
    """A Gain that counts its resets (a re-prepared chain resets every effect)."""

    name = "gain"
    resets = 0

    def reset(self) -> None:
        type(self).resets += 1
        super().reset()


def test_buffer_size_change_is_followed(rig, probe, jack_server):
    """A new JACK buffer size keeps the chain and its state: re-preparing reset every effect (a
    hole of 3-7 ms of silence in the output, every delay line and model restarted). The engine
    runs the longer blocks in pieces of the size it was prepared for."""
    sig = noise(6000, seed=3)
    swap(rig.engine, Chain([_CountingGain(gain_db=-6)]))
    prepared = rig.engine.spec
    resets = _CountingGain.resets
    try:
        probe.blocksize = 256
        assert wait_until(lambda: rig.engine.get("/hb/engine/block_size") == 256, 3.0), rig.engine.spec
        assert rig.backend.block_size == 256
        assert rig.engine.spec == prepared and _CountingGain.resets == resets  # not re-prepared
        time.sleep(0.2)
        y = rig.clean_take(sig)
        d = find_delay(sig[0], y[0], 512)
        assert d == GRAPH_DELAY
        np.testing.assert_allclose(y[:, d:d + sig.shape[1]], sig * db_to_gain(-6), rtol=1e-6, atol=1e-9)
        assert rig.engine.get("/hb/engine/block_size") == 256
    finally:
        probe.blocksize = jack_server.block_size
        wait_until(lambda: rig.engine.get("/hb/engine/block_size") == jack_server.block_size, 3.0)
    assert rig.engine.get("/hb/engine/block_size") == jack_server.block_size
    assert rig.engine.spec == prepared and _CountingGain.resets == resets
    assert rig.engine.callback_errors == 0, rig.engine.last_callback_error


def test_sample_rate_notification_reprepares_the_chain(rig):
    """jackd cannot change its rate while it runs (the dummy driver neither), so JACK's sample-rate
    notification is delivered here by calling the backend's registered callback, as libjack's
    notification thread would: the engine must re-prepare the chain at the new rate (rate-dependent
    latency follows) and keep running, and come back the same way."""
    from hushbridge.effects import Limiter

    swap(rig.engine, Chain([Limiter()]))
    sr = rig.backend.sample_rate
    heard = []
    rig.engine.add_latency_listener(heard.append)
    try:
        rig.backend._on_samplerate(44100)
        assert rig.engine.spec.sample_rate == 44100
        assert rig.engine.latency_samples == Limiter.latency_for(44100) != Limiter.latency_for(sr)
        assert rig.engine.get("/hb/engine/sample_rate") == 44100
        assert wait_until(lambda: Limiter.latency_for(44100) in heard, 2.0), heard
        rig.backend._on_samplerate(sr)
        assert rig.engine.spec.sample_rate == sr
        assert rig.engine.latency_samples == Limiter.latency_for(sr)
        sig = noise(6000, seed=4, amp=0.05)  # well under the ceiling: the limiter passes it
        y = rig.clean_take(sig)
        d = find_delay(sig[0], y[0], 2048)
        assert d == GRAPH_DELAY + Limiter.latency_for(sr)
        np.testing.assert_allclose(y[:, d:d + sig.shape[1]], sig, atol=1e-5)
    finally:
        rig.engine.remove_latency_listener(heard.append)
    assert rig.engine.callback_errors == 0, rig.engine.last_callback_error


# == latency ====================================================================================
def test_latency_published_on_ports(rig, probe):
    name = rig.backend.client_name
    # give out_1 a downstream playback latency (the dummy driver's playback port) to add to
    probe.connect(f"{name}:out_1", "system:playback_1")
    sys_play = get_latency_range(probe, "system:playback_1", "playback")
    assert sys_play[0] > 0
    # out_1 now feeds the recorder (0) and the driver: its playback range spans both
    assert wait_until(lambda: get_latency_range(probe, f"{name}:out_1", "playback") == (0, sys_play[1]), 2.0)
    base_play = (0, sys_play[1])

    def ranges():
        return (get_latency_range(probe, f"{name}:out_1", "capture"),
                get_latency_range(probe, f"{name}:in_1", "playback"),
                get_latency_range(probe, f"{name}:out_2", "capture"))

    assert wait_until(lambda: ranges() == ((0, 0), base_play, (0, 0)), 2.0), ranges()
    rig.engine.load_chain(Chain([Delay(37)]))  # housekeeping announces the new latency
    lat37 = ((37, 37), (base_play[0] + 37, base_play[1] + 37), (37, 37))
    assert wait_until(lambda: ranges() == lat37, 2.0), ranges()
    assert rig.backend.published_latency == 37
    rig.engine.load_chain(Chain([Gain()]))
    assert wait_until(lambda: ranges() == ((0, 0), base_play, (0, 0)), 2.0), ranges()


# == xruns ======================================================================================
def _baseline_xruns(seconds: float) -> int:
    return trivial_client_xruns(seconds, "hb-baseline")


def test_xruns_zero_after_settling(jack_server):
    """With a real-time server the engine runs xrun-free once the graph has settled (the first
    0.5 s of activation xruns is not counted): one of up to four 1 s windows must be clean.
    On a shared machine other programs cause stray xruns that are not the engine's, so when no
    window was clean a trivial client is measured on the same server, then the engine once more:
    the test fails if that client ran clean and the engine again had no clean window, and skips if
    the machine is too busy for the trivial client too."""
    if not jack_server.realtime:
        pytest.skip("the JACK server runs without real-time scheduling")
    engine = Engine(Chain([Gain(gain_db=-6), Gain(gain_db=3)]), channels=2)
    window = 1.0
    seen, baselines = [], []
    # two rounds: a burst of machine noise that ends just before the trivial client's window would
    # otherwise be blamed on the engine (seen once in CI: [2, 3, 6, 1] against a clean 1 s baseline)
    for _ in range(2):
        for _ in range(4):
            with JackBackend(engine, name="hb-xrun", connect_inputs="system:capture_.*",
                             connect_outputs="system:playback_.*") as backend:
                assert backend.realtime
                time.sleep(0.5)
                x0 = engine.get("/hb/engine/xruns")
                time.sleep(window)
                seen.append(int(engine.get("/hb/engine/xruns") - x0))
                assert engine.callback_errors == 0, engine.last_callback_error
            if seen[-1] == 0:
                return
        baselines.append(_baseline_xruns(window))
        if baselines[-1] > 0:
            pytest.skip(f"the machine is too busy to judge: engine xruns per window {seen}, "
                        f"trivial client {baselines}")
    pytest.fail(f"engine xruns per {window} s window after settling: {seen}; a trivial client: {baselines}")


def test_xruns_are_counted(rig):
    stall = Stall()
    swap(rig.engine, Chain([stall]))
    time.sleep(0.1)
    x0, late0 = rig.engine.xruns, rig.engine.late_blocks
    stall.arm()
    assert wait_until(lambda: rig.engine.xruns > x0, 2.0)  # the server's report, via note_xrun
    assert wait_until(lambda: rig.engine.late_blocks > late0, 2.0)  # the engine's own timing


def test_a_callback_kept_waiting_for_the_gil_is_counted_as_a_late_start(rig):
    """A control thread in a C call that holds the GIL for 10 ms (four periods): the audio
    callback waits for it, processes quickly and is late all the same. jackd names hushbridge at
    such an xrun ("not finished, state = Running"), and the engine's own timing (late_blocks, from
    where processing starts) saw nothing: late_starts counts it."""
    def hold(n):  # builtin sum over a range: one C loop that never lets the GIL go
        return sum(range(n))

    t0 = time.perf_counter()
    hold(1_000_000)
    n = int(1_000_000 * 0.01 / max(time.perf_counter() - t0, 1e-4))  # about 10 ms on this machine
    starts0, blocks0 = rig.engine.late_starts, rig.engine.late_blocks
    for _ in range(5):
        hold(n)
        time.sleep(0.05)
    assert wait_until(lambda: rig.engine.late_starts > starts0, 2.0), rig.engine.late_starts
    assert rig.engine.late_blocks - blocks0 <= rig.engine.late_starts - starts0
    assert "started late" in rig.engine.status_line()


# == set-up, connections, errors ================================================================
def test_ports_connections_and_clean_close(jack_server):
    engine = Engine(Chain([Gain()]), channels=2)
    backend = JackBackend(engine, name="hb-conn", connect_inputs="system:capture_.*",
                          connect_outputs=["system:playback_1", "system:playback_2"])
    try:
        name = backend.client_name
        ports = list_jack_ports()
        assert {f"{name}:in_1", f"{name}:in_2", f"{name}:out_1", f"{name}:out_2"} <= set(ports)
        backend.start()
        assert backend.sample_rate == jack_server.sample_rate
        assert engine.spec.sample_rate == jack_server.sample_rate
        assert engine.spec.max_block_size == jack_server.block_size
        conns = {p.name for p in backend.client.get_all_connections(f"{name}:in_1")}
        assert conns == {"system:capture_1"}
        conns = {p.name for p in backend.client.get_all_connections(f"{name}:in_2")}
        assert conns == {"system:capture_2"}
        conns = {p.name for p in backend.client.get_all_connections(f"{name}:out_2")}
        assert conns == {"system:playback_2"}
        assert wait_until(lambda: engine.blocks > 10, 2.0)
        backend.stop()
        backend.stop()
        blocks = engine.blocks
        time.sleep(0.1)
        assert engine.blocks == blocks  # no more callbacks once stopped
        backend.start()  # resumes
        assert wait_until(lambda: engine.blocks > blocks + 10, 2.0)
    finally:
        backend.close()
        backend.close()
    assert not any(p.startswith(f"{name}:") for p in list_jack_ports())


def test_missing_port_is_a_clear_error(jack_server):
    engine = Engine(Chain([Gain()]), channels=2)
    backend = JackBackend(engine, name="hb-missing", connect_inputs=["system:capture_1", "nosuch:port"])
    try:
        with pytest.raises(BackendError, match=r"connecting JACK inputs.*'nosuch:port'.*system:capture_1"):
            backend.start()
        assert not backend.active
        with pytest.raises(BackendError, match=r"no .*audio port matches 'nothing_.*'"):
            JackBackend.start(_with(backend, connect_inputs=None, connect_outputs="nothing_.*"))
    finally:
        backend.close()


def _with(backend: JackBackend, **attrs) -> JackBackend:
    for k, v in attrs.items():
        setattr(backend, k, v)
    return backend


def test_a_second_client_with_the_same_name_is_refused(jack_server):
    first = JackBackend(Engine(Chain([]), channels=1), name="hb-twice",
                        connect_inputs=["system:capture_1", "system:capture_2", "system:capture_1"])
    try:
        with pytest.raises(BackendError, match="'hb-twice' is already running.*--name"):
            JackBackend(Engine(Chain([]), channels=1), name="hb-twice")
        with pytest.raises(BackendError, match="3 ports to connect but only 1 channels"):
            first.start()
    finally:
        first.close()


def test_server_not_running_is_a_clear_error(jack_server):
    engine = Engine(Chain([Gain()]), channels=1)
    with pytest.raises(BackendError, match=r"Error opening JACK client: JACK server 'hb-no-such-server' is not running"):
        JackBackend(engine, server="hb-no-such-server")
    assert list_jack_ports(server="hb-no-such-server") == []
    assert "system:capture_1" in list_jack_ports(server=jack_server.name)


def test_a_removed_process_hook_stops_running(jack_server):
    """A bound method passed twice is two objects: removal matches by equality, not identity
    (a MIDI input's hook used to stay in every cycle after it closed)."""

    class Counter:
        n = 0

        def hook(self, frames: int) -> None:
            self.n += 1

    c = Counter()
    backend = JackBackend(Engine(Chain([]), channels=1), name="hb-hooks")
    try:
        backend.start()
        backend.add_process_hook(c.hook)
        deadline = time.monotonic() + 5
        while c.n == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.n > 0
        backend.remove_process_hook(c.hook)  # a new bound method object, equal to the added one
        assert backend._hooks == []
        time.sleep(0.05)  # a cycle that had begun before the removal may still call it once
        n = c.n
        time.sleep(0.2)
        assert c.n == n
    finally:
        backend.close()


def test_changes_that_wait_for_room_are_flushed_without_waiting_for_idle_housekeeping(jack_server):
    """A burst larger than the hand-off ring leaves its last change pending on the control side;
    the housekeeping thread, asleep for long stretches when idle, is woken to flush it."""
    from hushbridge.engine import effect_of

    engine = Engine(Chain([Gain()]), channels=1, ring_capacity=4)
    backend = JackBackend(engine, name="hb-flush")
    try:
        backend.start()
        backend._stop_housekeeping()
        backend._start_housekeeping(idle=30.0)  # asleep for the whole test unless woken
        time.sleep(0.2)
        for burst in range(5):
            for k in range(12):
                engine.set("/hb/gain/gain_db", -float(burst * 12 + k) / 2)
            assert engine.coalesced_changes > 0 or engine.control.pending
            last = engine.get("/hb/gain/gain_db")
            deadline = time.monotonic() + 2.0
            while effect_of(engine, "gain").get("gain_db") != last and time.monotonic() < deadline:
                time.sleep(0.005)
            assert effect_of(engine, "gain").get("gain_db") == last, f"burst {burst}: last change not flushed"
            assert engine.control.pending == 0
    finally:
        backend.close()



_START_WHILE_CPUS_BUSY = """
import multiprocessing, os, sys, threading
from hushbridge.engine import Engine
from hushbridge.io.jack import JackBackend
from hushbridge.presets import load_preset


def spin():
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while True:
        pass


if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    spinners = [ctx.Process(target=spin, daemon=True) for _ in range(os.cpu_count() or 1)]
    for p in spinners:
        p.start()
    for trial in range(int(sys.argv[1])):
        backend = JackBackend(Engine(load_preset("dialogue"), channels=2), name=f"hb-start{trial}",
                              connect_inputs="system:capture_.*", connect_outputs="system:playback_.*")
        done = threading.Event()
        threading.Thread(target=lambda: (backend.start(), done.set()), daemon=True).start()
        if not done.wait(20):
            print(f"start {trial} hung", flush=True)
            for p in spinners:  # they hold our stdout open
                p.kill()
            os._exit(1)
        backend.close()
    for p in spinners:
        p.kill()
    print("done", flush=True)
    os._exit(0)
"""


def test_start_does_not_deadlock_announcing_the_latency(jack_server, tmp_path):
    """start() announces the latency while the housekeeping thread it just started does the
    same: two threads of one client in jack_recompute_total_latencies at once deadlocked in
    libjack (seen with every CPU kept busy, as in ``control_flood.py --keep-cpus-busy``: one
    start in a few hung). A child process, so a deadlock fails the test instead of hanging it."""
    import subprocess
    import sys

    script = tmp_path / "starts.py"
    script.write_text(_START_WHILE_CPUS_BUSY)
    try:
        out = subprocess.run([sys.executable, str(script), "12"], capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("starting the JACK backend hung")
    assert "done" in out.stdout, (out.stdout, out.stderr[-2000:])
