"""The OSC receive process (hushbridge.control.osc_process): its routing without sockets, and the
real child over real UDP on 127.0.0.1 with an engine driven block by block.

What every OSC client sees is the same in both modes: tests/control/test_osc.py and
test_osc_surface.py run each server test with ``process=True`` too. Here: what only this mode
has (changes that never wake the engine process, the shared ring, table updates after a chain
change from elsewhere, the child's death and the engine process's death).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage

from hushbridge.control.osc import OscServer, encode
from hushbridge.control.osc_process import BYPASS_SET, NORM, SET, FastPath, table_entries
from hushbridge.control.params import BYPASS, ParamRing
from hushbridge.effects import Chain, Gain, HighPass, Loudness
from hushbridge.engine import Engine

SR, BLOCK = 48000, 128
TIMEOUT = 5.0


def wait_for(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def drained(ring: ParamRing, orders: list[float] | None = None) -> list[tuple[int, int, int, float, float]]:
    """``(generation, slot, param, value, stamp)`` of each waiting change; their orders are
    appended to ``orders``."""
    out: list[tuple[int, int, int, float, float]] = []

    def take(*change: float) -> None:
        out.append(change[:5])
        if orders is not None:
            orders.append(change[5])

    ring.drain(take)
    return out


# -- routing (no sockets) -----------------------------------------------------------------------
@pytest.fixture
def fast():
    engine = Engine(Chain([Gain(), HighPass(), Loudness()]), channels=2)
    path = FastPath(ParamRing(4))
    path.set_table(*table_entries(engine))
    return engine, path


def test_table_rows_cover_sets_norms_and_bypass_but_not_values_checked_by_the_effect(fast):
    engine, _ = fast
    generation, rows = table_entries(engine)
    assert generation == engine.table_generation == 0
    kinds = {address: (slot, index, kind) for address, slot, index, _param, kind in rows}
    assert kinds["/hb/gain/gain_db"] == (0, 0, SET)
    assert kinds["/hb/gain/gain_db/norm"] == (0, 0, NORM)
    assert kinds["/hb/highpass/bypass"] == (1, BYPASS, BYPASS_SET)
    assert kinds["/hb/highpass/bypass/norm"] == (1, BYPASS, NORM)
    # Loudness.check_value refuses layouts that do not fit the prepared channel count: the
    # engine process must see those, so no Loudness parameter is on the fast path
    assert not [a for a in kinds if a.startswith("/hb/loudness/") and not a.endswith(("/bypass", "/bypass/norm"))]
    assert "/hb/loudness/bypass" in kinds


def test_fast_sets_clamp_scale_and_reach_the_ring_in_order(fast):
    engine, path = fast
    me = ("127.0.0.1", 5000)
    p = engine.info("/hb/highpass/cutoff_hz").param
    assert path.route(encode("/hb/gain/gain_db", [100.0]), me)         # clamped, as engine.set(clamp=True)
    assert path.route(encode("/hb/highpass/cutoff_hz/norm", [0.25]), me)
    assert path.route(encode("/hb/highpass/bypass", [1]), me)         # ,i
    assert path.route(encode("/hb/gain/bypass/norm", [0.5]), me)      # a bypass's /norm: on from 0.5
    orders: list[float] = []
    assert drained(path.ring, orders) == [(0, 0, 0, 24.0, 0.0), (0, 1, 0, p.from_norm(0.25), 0.0),
                                          (0, 1, BYPASS, 1.0, 0.0), (0, 0, BYPASS, 1.0, 0.0)]
    assert orders == sorted(orders) and orders[-1] <= time.monotonic()  # when each was accepted
    generation, changes, coalesced = path.take_batch()
    assert generation == 0 and coalesced == 0
    assert changes == [("/hb/gain/gain_db", 24.0, me, orders[0]),
                       ("/hb/highpass/cutoff_hz", p.from_norm(0.25), me, orders[1]),
                       ("/hb/highpass/bypass", 1.0, me, orders[2]),
                       ("/hb/gain/bypass", 1.0, me, orders[3])]
    assert path.take_batch() is None


@pytest.mark.parametrize("data", [
    encode("/hb/gain/gain_db", [float("nan")]),           # the engine process answers /hb/error
    encode("/hb/gain/gain_db", [float("inf")]),
    encode("/hb/gain/gain_db", ["-6"]),                    # a string
    encode("/hb/gain/gain_db", [-6.0, 1.0]),               # two arguments
    encode("/hb/gain/bypass", [0.5]),                      # neither 0 nor 1
    encode("/hb/*/gain_db", [-6.0]),                       # a pattern
    encode("/hb/nope/gain_db", [-6.0]),                    # unknown
    encode("/hb/loudness/layout", [1.0]),                  # checked against the prepared instance
    encode("/hb/get", ["/hb/gain/gain_db"]),
    b"/hb/gain/gain_db\0\0\0\0,f\0\0\0\0",                  # truncated
    b"#bundle\0" + bytes(8),
])
def test_anything_else_is_forwarded_untouched(fast, data):
    _, path = fast
    assert not path.route(data, ("127.0.0.1", 5000))
    assert len(path.ring) == 0 and path.take_batch() is None


def test_while_a_forwarded_message_is_unanswered_everything_is_forwarded(fast):
    _, path = fast
    set_gain = encode("/hb/gain/gain_db", [-6.0])
    path.forwarded = 1  # e.g. a /hb/preset/load on its way
    assert not path.route(set_gain, ("127.0.0.1", 5000))
    path.acked = 1
    assert path.route(set_gain, ("127.0.0.1", 5000))
    assert not FastPath(ParamRing(4)).route(set_gain, ("127.0.0.1", 5000))  # no table yet


def test_a_full_ring_coalesces_latest_value_wins_and_counts(fast):
    _, path = fast
    me = ("127.0.0.1", 5000)
    for k in range(10):  # ring of 4
        assert path.route(encode("/hb/gain/gain_db", [-float(k)]), me)
    assert path.route(encode("/hb/highpass/bypass", [1]), me)
    assert path.waiting == 2  # gain (latest) and bypass wait for room
    first = drained(path.ring)
    assert [c[3] for c in first] == [0.0, -1.0, -2.0, -3.0]
    assert path.flush_ring() == 0
    assert [(c[1], c[2], c[3]) for c in drained(path.ring)] == [(0, 0, -9.0), (1, BYPASS, 1.0)]
    generation, changes, coalesced = path.take_batch()
    assert coalesced == 5  # -4 .. -8 were replaced while waiting
    assert {a: v for a, v, _, _ in changes} == {"/hb/gain/gain_db": -9.0, "/hb/highpass/bypass": 1.0}


def test_a_new_table_drops_what_was_made_against_the_old_one(fast):
    engine, path = fast
    path.route(encode("/hb/gain/gain_db", [-6.0]), ("127.0.0.1", 5000))
    engine.load_chain(Chain([HighPass(), Gain()]))
    path.set_table(*table_entries(engine))
    assert path.take_batch() is None
    assert path.route(encode("/hb/gain/gain_db", [-3.0]), ("127.0.0.1", 5000))
    assert drained(path.ring)[-1][:3] == (1, 1, 0)  # generation 1, gain now in slot 1


# -- the real child over UDP --------------------------------------------------------------------
class Rig:
    def __init__(self, chain: Chain) -> None:
        self.engine = Engine(chain, channels=2)
        self.engine.prepare(SR, BLOCK)
        self.server = OscServer(self.engine, port=0, process=True).start()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.inp = np.zeros((2, BLOCK), np.float32)
        self.out = np.zeros((2, BLOCK), np.float32)

    def send(self, address: str, *args) -> None:
        self.sock.sendto(encode(address, args), ("127.0.0.1", self.server.port))

    def recv(self) -> OscMessage:
        return OscMessage(self.sock.recv(65536))

    def get(self, address: str) -> float:
        self.send("/hb/get", address)
        msg = self.recv()
        assert msg.address == "/hb/value", msg.params
        return msg.params[1]

    def block(self) -> None:
        self.engine.process(self.inp, self.out)

    def close(self) -> None:
        self.sock.close()
        self.server.close()


@pytest.fixture
def rig():
    r = Rig(Chain([Gain(), HighPass()]))
    yield r
    r.close()


def test_sets_reach_the_audio_thread_without_the_engine_process_handling_them(rig):
    handled = []
    controller = rig.server.controller
    original = controller.handle_datagram
    controller.handle_datagram = lambda data, client: handled.append(data) or original(data, client)
    for k in range(50):
        rig.send("/hb/gain/gain_db", -0.5 * k)
    rig.send("/hb/highpass/cutoff_hz/norm", 1.0)
    wait_for(lambda: len(rig.server.receiver.ring) == 51)
    assert handled == []  # nothing woke the engine process's OSC handling
    rig.block()
    assert rig.engine.chain[0].gain_db == -24.5
    assert rig.engine.chain[1].cutoff_hz == rig.engine.info("/hb/highpass/cutoff_hz").param.max
    # /hb/get is forwarded behind the batch of those sets, so it reads them
    assert rig.get("/hb/gain/gain_db") == -24.5
    assert len(handled) == 1
    assert rig.engine.dropped_messages == 0


def test_feedback_and_get_follow_fast_sets_within_a_batch(rig):
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    try:
        listener.sendto(encode("/hb/register", []), ("127.0.0.1", rig.server.port))
        wait_for(lambda: len(rig.server.controller.registered) == 1)
        rig.send("/hb/gain/gain_db", -7.0)
        msg = OscMessage(listener.recv(65536))  # from the engine process, within a batch
        assert (msg.address, msg.params) == ("/hb/gain/gain_db", [-7.0])
        assert rig.engine.get("/hb/gain/gain_db") == -7.0
        with pytest.raises(TimeoutError):  # never back to the sender of the change
            rig.sock.settimeout(0.1)
            rig.sock.recv(65536)
    finally:
        listener.close()


def test_a_chain_loaded_from_elsewhere_sends_the_child_its_new_table(rig):
    rig.send("/hb/gain/gain_db", -3.0)
    wait_for(lambda: len(rig.server.receiver.ring) == 1)
    rig.block()
    rig.engine.load_chain(Chain([HighPass(), Gain(), Gain()]))  # e.g. from the CLI or MIDI
    for _ in range(20):  # the swap and its crossfade
        rig.block()
    assert rig.engine.wait_for_swap(0)
    rig.send("/hb/gain/gain_db", -4.0)  # slot 0 before, slot 1 now: on the fast path
    wait_for(lambda: len(rig.server.receiver.ring) == 1)
    rig.block()
    chain = rig.engine.chain
    assert chain.ids == ["highpass", "gain", "gain_2"]
    assert (chain[1].gain_db, chain[2].gain_db) == (-4.0, 0.0)
    assert chain[0].cutoff_hz == chain[0].param("cutoff_hz").default
    rig.send("/hb/gain_2/gain_db", -9.0)  # only in the new chain
    assert rig.get("/hb/gain_2/gain_db") == -9.0
    assert rig.get("/hb/gain/gain_db") == -4.0


def test_if_the_child_dies_the_server_goes_on_in_process(rig):
    receiver = rig.server.receiver
    os.kill(receiver.proc.pid, signal.SIGKILL)
    receiver.proc.wait(TIMEOUT)
    wait_for(lambda: rig.server._thread.is_alive())
    rig.send("/hb/gain/gain_db", -5.0)
    assert rig.get("/hb/gain/gain_db") == -5.0
    rig.block()
    assert rig.engine.chain[0].gain_db == -5.0
    assert receiver.ring not in rig.engine._remote_rings


def test_close_ends_the_child_and_frees_the_shared_ring():
    r = Rig(Chain([Gain()]))
    proc, name = r.server.receiver.proc, r.server.receiver._shm.name
    assert os.path.exists(f"/dev/shm/{name}") or sys.platform != "linux"
    r.close()
    assert proc.poll() == 0
    assert not os.path.exists(f"/dev/shm/{name}")
    assert r.engine._remote_rings == ()
    r.server.close()  # idempotent


def exited(pid: int) -> bool:
    """Whether process ``pid`` has exited (gone, or a zombie waiting for whoever adopted it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and /dev/shm")
def test_the_child_exits_when_the_engine_process_is_killed(tmp_path):
    script = tmp_path / "engine.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from hushbridge.control.osc import OscServer
        from hushbridge.effects import Chain, Gain
        from hushbridge.engine import Engine
        engine = Engine(Chain([Gain()]), channels=2)
        server = OscServer(engine, port=0, process=True).start()
        print(server.receiver.proc.pid, server.port, flush=True)
        time.sleep(60)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child_pid, port = map(int, parent.stdout.readline().split())
        # the process group's Ctrl-C or SIGTERM (`timeout`, systemd) is the engine process's to
        # act on: the child reported as lost while the engine stopped cleanly (QA, session 30)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(child_pid, sig)
        time.sleep(0.3)
        assert not exited(child_pid)
        parent.kill()  # kill -9: no clean-up runs in the engine process
        parent.wait(TIMEOUT)
        wait_for(lambda: exited(child_pid))
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", port))  # nobody holds the port any more
        finally:
            probe.close()
    finally:
        if parent.poll() is None:
            parent.kill()


# -- order across the two ways into the audio thread -------------------------------------------
def bundle_of(address: str, value: float) -> bytes:
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    b = OscBundleBuilder(IMMEDIATELY)
    m = OscMessageBuilder(address=address)
    m.add_arg(value)
    b.add_content(m.build())
    return b.build().dgram


def test_a_forwarded_set_behind_fast_sets_waiting_for_ring_room_is_the_one_that_stays(rig):
    """Audio stopped (ring full, sets coalesce in the child), then the client's last word is a set
    the engine process handles (in a bundle). Once audio runs, the held fast-path value must not
    land after it: every way into the audio thread keeps the latest change per parameter."""
    for k in range(1500):
        rig.send("/hb/gain/gain_db", -20.0 - (k % 50))
        if k % 200 == 0:
            time.sleep(0.01)  # the child keeps up; the kernel's buffer never overflows
    wait_for(lambda: rig.server.receiver.ring.free() == 0)
    rig.sock.sendto(bundle_of("/hb/gain/gain_db", -3.0), ("127.0.0.1", rig.server.port))
    assert rig.get("/hb/gain/gain_db") == -3.0
    for _ in range(20):  # the ring drains, the child flushes what it held, the ring drains again
        rig.block()
        time.sleep(0.005)
    assert rig.engine.chain[0].gain_db == -3.0
    assert rig.get("/hb/gain/gain_db") == -3.0
    assert rig.engine.coalesced_changes > 0


def test_a_change_from_elsewhere_made_after_a_fast_set_wins_in_audio_and_in_reports(rig):
    heard: list[float] = []
    rig.engine.add_listener(lambda address, value, source: heard.append(value))
    rig.send("/hb/gain/gain_db", -9.0)  # reported at once (the child's first report is due) ...
    wait_for(lambda: len(rig.server.receiver.ring) == 1)
    rig.send("/hb/gain/gain_db", -10.0)  # ... this one within the next BATCH_S
    wait_for(lambda: len(rig.server.receiver.ring) == 2)
    rig.engine.set("/hb/gain/gain_db", -3.0, source="midi")  # e.g. a knob, a moment later
    rig.block()  # the engine's own ring is drained first, the child's older changes after it
    assert rig.engine.chain[0].gain_db == -3.0
    time.sleep(0.1)  # the child's report of -10 arrives meanwhile: older, so not reported
    assert rig.engine.get("/hb/gain/gain_db") == -3.0
    assert rig.get("/hb/gain/gain_db") == -3.0
    assert -10.0 not in heard[heard.index(-3.0):]  # no feedback of the stale value either


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_child_waits_calmly_while_a_stopped_audio_thread_leaves_its_ring_full(rig):
    def cpu_s(pid: int) -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    for k in range(1200):  # more than the ring holds; no block runs
        rig.send("/hb/gain/gain_db", -float(k % 90))
        if k % 200 == 0:
            time.sleep(0.01)
    pid = rig.server.receiver.proc.pid
    wait_for(lambda: rig.server.receiver.ring.free() == 0)
    time.sleep(0.2)
    before = cpu_s(pid)
    time.sleep(1.0)
    assert cpu_s(pid) - before < 0.2  # a retry loop that spins would take the whole second
    wait_for(lambda: run_block(rig) == -float(1199 % 90))  # the child flushes as room appears


def run_block(rig: Rig) -> float:
    """Run one block; the first gain's value after it."""
    rig.block()
    return rig.engine.chain[0].gain_db


def test_a_child_that_cannot_start_leaves_osc_on_a_thread(monkeypatch, caplog):
    monkeypatch.setattr(sys, "executable", "/bin/false")  # e.g. a broken interpreter path
    engine = Engine(Chain([Gain()]), channels=2)
    engine.prepare(SR, BLOCK)
    with caplog.at_level("WARNING", logger="hushbridge.control.osc"):
        server = OscServer(engine, port=0, process=True).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    try:
        assert server.receiver is None and server._thread.is_alive()
        assert "receive process did not start" in caplog.text
        assert engine._remote_rings == ()
        sock.sendto(encode("/hb/gain/gain_db", [-8.0]), ("127.0.0.1", server.port))
        sock.sendto(encode("/hb/get", ["/hb/gain/gain_db"]), ("127.0.0.1", server.port))
        assert OscMessage(sock.recv(65536)).params[1] == -8.0
    finally:
        sock.close()
        server.close()
