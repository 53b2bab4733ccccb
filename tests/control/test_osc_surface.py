"""The control-surface part of OSC over real UDP: meters, time-tagged bundles, address patterns,
published (transport) values, latency feedback, the learn hook, preset save, dropped counting.

The audio thread is played by ``test_osc.FakeDriver`` (engine.process on a 1 kHz sine, amplitude
0.5, every 2.67 ms): peak -6.02 dBFS, RMS -9.03 dBFS per channel.
"""
from __future__ import annotations

import math
import socket
import threading
import time

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from test_osc import AMP, BLOCK, SR, TIMEOUT, Client, FakeDriver

from hushbridge.control.meters import MAX_PER_CLIENT, MeterHub
from hushbridge.control.osc import OscController, OscServer, encode, pattern_regex
from hushbridge.effects import Chain, Effect, Gain
from hushbridge.engine import Engine, effect_of
from hushbridge.errors import ParamError

PEAK_DB = 20 * math.log10(AMP)
RMS_DB = 20 * math.log10(AMP / math.sqrt(2))


def running(chain: Chain):
    engine = Engine(chain, channels=2)
    engine.prepare(SR, BLOCK)
    driver = FakeDriver(engine)
    driver.start()
    driver.wait_blocks(5)
    return engine, driver


@pytest.fixture(params=["thread", "process"])
def rig(request):
    engine, driver = running(Chain([Gain(), Gain()]))
    server = OscServer(engine, port=0, process=request.param == "process").start()
    client = Client(server.port)
    yield engine, driver, server, client
    client.close()
    server.close()
    driver.stop_event.set()
    driver.join()


def collect(client: Client, seconds: float) -> list[OscMessage]:
    """Every message that arrives within ``seconds``."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        client.sock.settimeout(left)
        try:
            data, _ = client.sock.recvfrom(65536)
        except TimeoutError:
            break
        out.append(OscMessage(data))
    return out


def bundle(timetag: float, *messages: tuple[str, list]) -> bytes:
    b = OscBundleBuilder(timetag)
    for address, args in messages:
        m = OscMessageBuilder(address)
        for a in args:
            m.add_arg(a)
        b.add_content(m.build())
    return b.build().dgram


# == meters ======================================================================================
def test_peak_and_rms_at_the_requested_rate(rig):
    engine, driver, server, client = rig
    client.send("/hb/subscribe", "/hb/meter/peak", 20.0)
    client.send("/hb/subscribe", "rms", 10)  # short name, int rate
    msgs = collect(client, 1.5)
    peaks = [m.params for m in msgs if m.address == "/hb/meter/peak"]
    rms = [m.params for m in msgs if m.address == "/hb/meter/rms"]
    assert 20 <= len(peaks) <= 32, len(peaks)  # 30 expected in 1.5 s
    assert 10 <= len(rms) <= 17, len(rms)
    for row in peaks[1:]:
        assert len(row) == 4  # in_1 in_2 out_1 out_2
        np.testing.assert_allclose(row, PEAK_DB, atol=0.05)
    for row in rms[1:]:
        np.testing.assert_allclose(row, RMS_DB, atol=0.05)
    assert b",ffff\0" in encode("/hb/meter/peak", [float(v) for v in peaks[0]])
    # the output follows the gain, the input does not
    client.send("/hb/gain/gain_db", -12.0)
    time.sleep(0.15)
    collect(client, 0.2)
    row = [m.params for m in collect(client, 0.3) if m.address == "/hb/meter/peak"][-1]
    np.testing.assert_allclose(row[:2], PEAK_DB, atol=0.05)
    np.testing.assert_allclose(row[2:], PEAK_DB - 12, atol=0.05)
    # unsubscribe one, then all
    client.send("/hb/unsubscribe", "/hb/meter/peak")
    time.sleep(0.1)
    later = collect(client, 0.4)
    assert not [m for m in later if m.address == "/hb/meter/peak"]
    assert [m for m in later if m.address == "/hb/meter/rms"]
    client.send("/hb/unsubscribe")
    time.sleep(0.15)
    assert collect(client, 0.3) == []
    assert engine.dropped_messages == 0
    driver.assert_running(min_peak=0.1)


def test_subscribe_to_another_port(rig):
    """One-shot senders (oscsend) name the port that should receive the meters."""
    engine, driver, server, client = rig
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]
    try:
        client.send("/hb/subscribe", "/hb/meter/rms", 20.0, port)
        m = OscMessage(listener.recvfrom(65536)[0])
        assert m.address == "/hb/meter/rms" and len(m.params) == 4
        client.send("/hb/unsubscribe", "", port)  # all meters of that port
        client.get("/hb/gain/gain_db")
        assert server.controller.meters.subscriptions == []
        client.send("/hb/subscribe", "/hb/meter/rms", 20.0, 70000)
        assert "port" in client.error()
    finally:
        listener.close()


def test_meters_sent_elsewhere_count_against_the_sender_and_stop_with_it(rig):
    engine, driver, server, client = rig
    ports = list(range(40000, 40000 + MAX_PER_CLIENT))  # nobody listens there: UDP does not mind
    for p in ports:
        client.send("/hb/subscribe", "/hb/meter/rms", 1.0, p)
    client.send("/hb/subscribe", "/hb/meter/rms", 1.0, 40999)
    assert f"at most {MAX_PER_CLIENT} meters per client" in client.error()
    client.send("/hb/unsubscribe", "", ports[0])  # with a port: only that port's
    client.get("/hb/gain/gain_db")
    assert len(server.controller.meters.subscriptions) == MAX_PER_CLIENT - 1
    other = Client(server.port)
    try:
        other.send("/hb/subscribe", "/hb/meter/peak", 1.0)  # another client has its own budget
        other.get("/hb/gain/gain_db")
        client.send("/hb/unsubscribe")  # bare: all of this client's, wherever they go
        client.get("/hb/gain/gain_db")
        assert [s.dest for s in server.controller.meters.subscriptions] == [other.sock.getsockname()]
    finally:
        other.close()


def test_clients_that_went_away_make_room_when_every_subscription_is_taken():
    """UDP never says a client left: 16 apps that restarted on new ports hold all 256
    subscriptions. A new client gets room from the one heard from least recently, once it has
    been silent IDLE_EVICT_S; a client still talking keeps its meters; when every holder is
    recent, the new one is refused with a reason."""
    from hushbridge.control.meters import IDLE_EVICT_S, MAX_SUBSCRIPTIONS, MeterError

    engine = Engine(Chain([Gain()]), channels=1)
    engine.prepare(SR, BLOCK)
    hub = MeterHub(engine)
    t0 = time.monotonic()
    ghosts = [("127.0.0.1", 41000 + k) for k in range(MAX_SUBSCRIPTIONS // MAX_PER_CLIENT)]
    for k, ghost in enumerate(ghosts):
        hub.heard(ghost, t0 - 100.0 + k)  # ghost 0 was heard from first
        for j in range(MAX_PER_CLIENT):  # meters sent to other ports of its host count as its own
            hub.subscribe((ghost[0], 50000 + k * MAX_PER_CLIENT + j), "peak", 1.0, owner=ghost)
    assert len(hub.subscriptions) == MAX_SUBSCRIPTIONS
    hub.heard(ghosts[0])  # ghost 0 speaks again: it is not the one to go
    newcomer = ("127.0.0.1", 42000)
    hub.heard(newcomer)
    hub.subscribe(newcomer, "rms", 10.0)
    owners = [s.owner for s in hub.subscriptions]
    assert ghosts[1] not in owners and owners.count(ghosts[0]) == MAX_PER_CLIENT
    assert owners.count(newcomer) == 1 and len(owners) == MAX_SUBSCRIPTIONS - MAX_PER_CLIENT + 1

    busy = MeterHub(engine)
    for k, client in enumerate(ghosts):
        busy.heard(client, time.monotonic() - IDLE_EVICT_S / 2)  # all heard from recently
        for j in range(MAX_PER_CLIENT):
            busy.subscribe((client[0], 50000 + k * MAX_PER_CLIENT + j), "peak", 1.0, owner=client)
    with pytest.raises(MeterError, match=r"at most 256 subscriptions in all, every client heard from in the last 60 s"):
        busy.subscribe(newcomer, "rms", 10.0)


def test_readers_do_not_disturb_each_other(rig):
    """A 60 Hz and a 2 Hz subscriber (and take_meter polled in a loop) all see the full level:
    reads are non-destructive, each reader has its own cursor."""
    engine, driver, server, client = rig
    slow = Client(server.port)
    stop = threading.Event()

    def taker():
        while not stop.is_set():
            engine.take_meter()
            time.sleep(0.001)

    t = threading.Thread(target=taker, daemon=True)
    t.start()
    try:
        client.send("/hb/subscribe", "/hb/meter/peak", 100.0)  # clamped to 60
        slow.send("/hb/subscribe", "/hb/meter/peak", 2.0)
        fast_msgs = collect(client, 1.2)
        slow_msgs = collect(slow, 0.1)
        assert 45 <= len(fast_msgs) <= 75, len(fast_msgs)
        assert 2 <= len(slow_msgs) <= 4, len(slow_msgs)
        for m in fast_msgs[1:] + slow_msgs[1:]:
            np.testing.assert_allclose(m.params, PEAK_DB, atol=0.05)
    finally:
        stop.set()
        t.join()
        slow.close()


def test_meter_ring_read_discards_overwritten_rows():
    engine = Engine(Chain([Gain()]), channels=1)
    engine.prepare(SR, BLOCK)
    tap = engine.meter
    x = np.full((1, BLOCK), 0.25, np.float32)
    y = np.zeros_like(x)
    for _ in range(tap.slots + 10):  # a reader at cursor 0 has fallen a whole ring behind
        engine.process(x, y)
    cursor, rows = tap.read(0)
    assert cursor == tap.slots + 10
    assert len(rows["level"]) == tap.slots - 1
    np.testing.assert_allclose(rows["level"][:, 0], 0.25)
    cursor, rows = tap.read(cursor)
    assert len(rows["level"]) == 0


def test_a_slow_meter_covers_its_whole_interval_beyond_the_ring():
    """A 0.1 Hz subscription spans 10 s, ~3,750 blocks of 128 frames, where the ring holds 1,024:
    a 50 ms over early in the interval, the gain reduction it causes and the whole interval's
    RMS reach the next message (the hub folds the ring in every FOLD_S as the meter thread polls)."""
    from hushbridge.control.meters import FOLD_S
    from hushbridge.effects import Compressor

    engine = Engine(Chain([Compressor(threshold_db=-20.0, ratio=4.0, attack_ms=1.0)]), channels=1)
    engine.prepare(SR, BLOCK)
    hub = MeterHub(engine)
    dest = ("127.0.0.1", 9)
    for name in ("peak", "rms", "gain_reduction/compressor"):
        hub.subscribe(dest, name, 0.1)
    t0 = time.monotonic()
    assert hub.poll(t0) == []  # due, nothing published yet
    quiet = np.full((1, BLOCK), 0.01, np.float32)  # -40 dBFS
    loud = np.full((1, BLOCK), 0.5, np.float32)  # -6 dBFS
    y = np.zeros_like(quiet)
    per_fold = int(FOLD_S * SR / BLOCK)
    blocks = int(10.0 * SR / BLOCK)
    assert blocks > 3 * engine.meter.slots
    now = t0
    sumsq = 0.0
    for k in range(blocks):
        x = loud if 100 <= k < 119 else quiet  # 50 ms over, 9.7 s before the message
        engine.process(x, y)
        sumsq += float(np.sum(x.astype(np.float64) ** 2))
        if k % per_fold == per_fold - 1 and k < blocks - per_fold:
            now += FOLD_S
            assert hub.next_due() <= now + 1e-9
            assert hub.poll(now) == []  # folding, not sending: the interval is not over
    msgs = {address: args for address, args, _ in hub.poll(t0 + 10.0)}
    assert msgs["/hb/meter/peak"][0] == pytest.approx(20 * math.log10(0.5), abs=0.01)  # input peak
    rms_db = 10 * math.log10(sumsq / (blocks * BLOCK))
    assert msgs["/hb/meter/rms"][0] == pytest.approx(rms_db, abs=0.05)
    assert msgs["/hb/meter/gain_reduction/compressor"][0] > 5.0  # the over's, not the quiet end's 0
    engine.process(quiet, y)
    after = {address: args for address, args, _ in hub.poll(t0 + 20.0)}
    assert after["/hb/meter/peak"][0] == pytest.approx(-40.0, abs=0.01)  # a new interval


def test_a_meter_whose_effect_a_preset_load_took_away_says_so_once_and_resumes():
    from hushbridge.effects import Compressor

    engine = Engine(Chain([Compressor(threshold_db=-30.0)]), channels=1)
    engine.prepare(SR, BLOCK)
    engine.attach(False)  # no callbacks: a load swaps at once
    hub = MeterHub(engine)
    owner = ("127.0.0.1", 9)
    hub.subscribe(owner, "gain_reduction/compressor", 10.0)
    x = np.full((1, BLOCK), 0.5, np.float32)
    y = np.zeros_like(x)

    def poll_after_blocks(t):
        for _ in range(10):
            engine.process(x, y)
        return hub.poll(t)

    t = time.monotonic()
    assert [a for a, _, _ in poll_after_blocks(t)] == ["/hb/meter/gain_reduction/compressor"]
    engine.load_chain(Chain([Gain()]))
    errors = poll_after_blocks(t + 1.0) + poll_after_blocks(t + 2.0)
    assert len(errors) == 1
    address, args, dest = errors[0]
    assert address == "/hb/error" and dest == owner
    assert "no effect 'compressor' with gain_reduction_db in the chain" in args[0] and "resumes" in args[0]
    engine.load_chain(Chain([Compressor(threshold_db=-30.0)]))
    back = poll_after_blocks(t + 3.0)
    assert [a for a, _, _ in back] == ["/hb/meter/gain_reduction/compressor"] and back[0][1][0] > 5.0


def test_a_bypassed_compressor_meters_no_gain_reduction():
    """A bypassed effect is not run: the reduction it last measured is not happening (it read
    12.8 dB while the output peaked as the input; QA, session 23). Back in, it meters again."""
    from hushbridge.effects import Compressor

    engine = Engine(Chain([Compressor(threshold_db=-30.0)]), channels=1)
    engine.prepare(SR, BLOCK)
    hub = MeterHub(engine)
    owner = ("127.0.0.1", 9)
    hub.subscribe(owner, "gain_reduction/compressor", 10.0)
    x = np.full((1, BLOCK), 0.5, np.float32)
    y = np.zeros_like(x)
    t = time.monotonic()
    readings = []
    for step, bypassed in enumerate((False, True, False)):
        engine.chain.set_bypass("compressor", bypassed)
        for _ in range(40):  # past the bypass crossfade
            engine.process(x, y)
        hub.poll(t + 2 * step + 0.5)  # the interval with the crossfade in it
        for _ in range(10):
            engine.process(x, y)
        (address, args, _), = hub.poll(t + 2 * step + 1.0)
        readings.append(args[0])
    assert readings[0] > 5.0 and readings[1] == 0.0 and readings[2] > 5.0


def test_a_bypassed_loudness_meter_sends_no_stale_readings():
    from hushbridge.effects import Loudness

    engine = Engine(Chain([Loudness()]), channels=1)
    engine.prepare(SR, BLOCK)
    hub = MeterHub(engine)
    owner = ("127.0.0.1", 9)
    hub.subscribe(owner, "lufs", 10.0)
    x = (0.1 * np.sin(2 * np.pi * np.arange(BLOCK) / BLOCK)).astype(np.float32)[None]  # 375 Hz, whole cycles
    y = np.zeros_like(x)
    for _ in range(200):
        engine.process(x, y)
    assert math.isfinite(engine.chain["loudness"].integrated_lufs)
    t = time.monotonic()
    assert [a for a, _, _ in hub.poll(t)] == ["/hb/meter/lufs"]
    engine.chain.set_bypass("loudness", True)
    notices = hub.poll(t + 1.0) + hub.poll(t + 2.0)
    assert [(a, d) for a, _, d in notices] == [("/hb/error", owner)]
    assert "'loudness' is bypassed" in notices[0][1][0]
    before = engine.chain["loudness"].integrated_lufs
    engine.chain.set_bypass("loudness", False)
    assert engine.chain["loudness"].integrated_lufs == before  # bypass paused it; A/B keeps the programme
    assert [a for a, _, _ in hub.poll(t + 3.0)] == ["/hb/meter/lufs"]


def test_engine_meter(rig):
    engine, driver, server, client = rig
    client.send("/hb/subscribe", "/hb/meter/engine", 20.0)
    first = collect(client, 0.3)
    engine.note_xrun()
    t_xrun = time.time()
    msgs = [m for m in collect(client, 0.5) if m.address == "/hb/meter/engine"]
    assert msgs and first
    opening = [m for m in first if m.address == "/hb/meter/engine"][0]
    assert opening.params[5::2] == ["gain", "gain_2"]  # the same layout from the first message on
    m = msgs[-1]
    assert m.dgram[m.dgram.index(b","):].startswith(b",idfii")  # xruns, last xrun time (double), ...
    xruns, last, cpu, late, dropped = m.params[:5]
    assert xruns == 1 and abs(last - t_xrun) < 0.05 and 0.0 <= cpu < 1.0 and dropped == 0
    pairs = m.params[5:]
    assert pairs[0::2] == ["gain", "gain_2"]  # per-effect load, timing on while subscribed
    assert all(0.0 <= v < 0.5 for v in pairs[1::2])
    assert engine.chain.effect_seconds is not None
    client.send("/hb/unsubscribe", "/hb/meter/engine")
    client.get("/hb/gain/gain_db")
    assert engine.chain.effect_seconds is None  # timing off again: free


def test_gain_reduction_meter():
    from hushbridge.effects import Compressor

    engine, driver = running(Chain([Compressor(threshold_db=-30.0, ratio=4.0, attack_ms=1.0), Gain()]))
    try:
        with OscServer(engine, port=0) as server:
            c = Client(server.port)
            c.send("/hb/subscribe", "/hb/meter/gain_reduction/compressor", 20.0)
            msgs = [m for m in collect(c, 0.6) if m.address == "/hb/meter/gain_reduction/compressor"]
            assert len(msgs) >= 6
            # -6 dBFS sine, threshold -30, ratio 4: about 18 dB (the knee and detector move it a little)
            assert 10.0 < msgs[-1].params[0] < 24.0, msgs[-1].params
            c.send("/hb/compressor/threshold_db", 0.0)
            time.sleep(0.5)
            msgs = [m for m in collect(c, 0.3) if m.address == "/hb/meter/gain_reduction/compressor"]
            assert msgs[-1].params[0] < 0.5
            c.close()
    finally:
        driver.stop_event.set()
        driver.join()


class Activity(Effect):
    """Test-only model stand-in: exposes ``activity`` = 0.25 in every block."""

    name = "vad"
    params = ()
    activity = 0.25

    def process(self, block: np.ndarray) -> None:
        pass


def test_activity_meter_and_loudness_meters():
    from hushbridge.effects import Loudness

    engine, driver = running(Chain([Activity(), Loudness()]))
    try:
        with OscServer(engine, port=0) as server:
            c = Client(server.port)
            c.send("/hb/subscribe", "/hb/meter/activity/vad", 20.0)
            c.send("/hb/subscribe", "/hb/meter/lufs", 10.0)
            c.send("/hb/subscribe", "/hb/meter/true_peak", 10.0)
            msgs = collect(c, 1.0)
            act = [m.params for m in msgs if m.address == "/hb/meter/activity/vad"]
            lufs = [m.params for m in msgs if m.address == "/hb/meter/lufs"]
            tp = [m.params for m in msgs if m.address == "/hb/meter/true_peak"]
            assert act and all(p == [0.25] for p in act)
            assert lufs and len(lufs[-1]) == 3
            # stereo 1 kHz sine at -6.02 dBFS: about -6 LUFS momentary (K-weighting ~ +0.7 dB at 1 kHz)
            assert -7.5 < lufs[-1][0] < -4.5, lufs[-1]
            assert tp and abs(tp[-1][0] - PEAK_DB) < 0.3, tp[-1]
            c.close()
    finally:
        driver.stop_event.set()
        driver.join()


class BrokenMeter(Effect):
    """Test-only: its ``activity`` raises (a bug in a model's meter)."""

    name = "broken"
    params = ()

    @property
    def activity(self) -> float:
        raise RuntimeError("meter bug")

    def process(self, block: np.ndarray) -> None:
        pass


def test_failing_meter_attribute_does_not_silence_audio():
    engine = Engine(Chain([BrokenMeter(), Gain(gain_db=-6.0)]), channels=1)
    engine.prepare(SR, BLOCK)
    x = np.full((1, BLOCK), 0.5, np.float32)
    y = np.zeros_like(x)
    engine.process(x, y)
    np.testing.assert_allclose(y, 0.5 * 10 ** (-6 / 20), rtol=1e-6)
    assert engine.callback_errors == 1 and "meter bug" in engine.last_callback_error
    assert engine.meter.seq == 1  # the levels row is still published


def test_subscription_limits():
    engine = Engine(Chain([Gain()]), channels=2)
    hub = MeterHub(engine)
    me = ("127.0.0.1", 5000)
    for rate in range(1, MAX_PER_CLIENT):
        hub.subscribe(me, "peak", rate)  # the same meter again replaces, never accumulates
    assert len(hub.subscriptions) == 1
    names = ["peak", "rms", "engine", "transport"]
    for n in names:
        hub.subscribe(me, n, 10)
    assert len(hub.subscriptions) == 4
    assert hub.unsubscribe(me) == 4


# == time-tagged bundles =========================================================================
class TimeLog(FakeDriver):
    """FakeDriver that logs (block start time as the engine saw it, gain_db in force) per block."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.log: list[tuple[float, float]] = []

    def run(self) -> None:
        orig = self.engine.process

        def process(inp, out):
            orig(inp, out)
            self.log.append((self.engine._callback_time, effect_of(self.engine, "gain").gain_db))

        self.engine.process = process
        super().run()


def test_bundle_with_future_time_tag_applies_at_its_block():
    engine = Engine(Chain([Gain(), Gain()]), channels=2)
    engine.prepare(SR, BLOCK)
    driver = TimeLog(engine)
    driver.start()
    try:
        with OscServer(engine, port=0) as server:
            c = Client(server.port)
            results = []
            heard = 0.0
            for k, delay in enumerate((0.25, 0.1, 0.4)):
                target = time.time() + delay
                value = -10.0 - k
                c.send_raw(bundle(target, ("/hb/gain/gain_db", [value]), ("/hb/get", ["/hb/gain/gain_db"])))
                assert c.recv().params[1] == heard  # /hb/get reports what is audible, not what waits
                assert effect_of(engine, "gain").gain_db != value  # not applied yet
                time.sleep(delay + 0.1)
                assert c.get("/hb/gain/gain_db")[1] == value
                heard = value
                log = list(driver.log)
                first = next(i for i, (_, v) in enumerate(log) if v == value)
                results.append((log[first - 1][0], target, log[first][0]))
            for before, target, applied in results:
                # applied in the first block whose start time reached the tag: block accuracy
                assert before < target <= applied, (before, target, applied)
                assert applied - target < 0.05  # one block, plus the fake driver being late on a busy machine
            assert engine.dropped_messages == 0
            c.close()
    finally:
        driver.stop_event.set()
        driver.join()


def test_feedback_and_presets_follow_a_timed_change_when_it_is_audible(rig):
    engine, driver, server, client = rig
    other = Client(server.port)
    try:
        other.send("/hb/register")
        time.sleep(0.1)
        collect(other, 0.1)
        target = time.time() + 0.5
        client.send_raw(bundle(target, ("/hb/gain/gain_db", [-20.0])))
        assert client.get("/hb/engine/timed_pending")[1] == 1.0
        saved = dict(engine.snapshot().items())["gain"].values()
        assert saved["gain_db"] == 0.0  # a preset saved now keeps what is heard
        echo = [m for m in collect(other, 1.0) if m.address == "/hb/gain/gain_db"]
        assert [m.params[0] for m in echo] == [-20.0]
        arrived = time.time()
        assert target <= arrived  # not before it is audible (collect returns after 1 s; see below)
        assert effect_of(engine, "gain").gain_db == -20.0 and engine.timed_pending == 0
        # the echo went out within a few ms of the tag: time it with a second change
        target = time.time() + 0.3
        client.send_raw(bundle(target, ("/hb/gain/gain_db", [-21.0])))
        other.sock.settimeout(2.0)
        m = OscMessage(other.sock.recvfrom(65536)[0])
        late = time.time() - target
        assert m.address == "/hb/gain/gain_db" and m.params[0] == -21.0
        assert 0.0 <= late < 0.1, late
        assert engine.get("/hb/gain/gain_db") == -21.0
    finally:
        other.close()


def test_timed_changes_beyond_capacity_are_refused_not_lost():
    from hushbridge.engine import TIMED_CAPACITY

    engine = Engine(Chain([Gain()]), channels=1)
    engine.prepare(SR, BLOCK)
    far = time.time() + 3600
    for k in range(TIMED_CAPACITY):
        engine.set("/hb/gain/gain_db", -1.0 - k % 10, stamp=far + k)
    assert engine.get("/hb/engine/timed_pending") == TIMED_CAPACITY
    with pytest.raises(ParamError, match="timed changes are already waiting"):
        engine.set("/hb/gain/gain_db", -3.0, stamp=far)
    assert engine.get("/hb/gain/gain_db") == 0.0
    engine.set("/hb/gain/gain_db", -6.0)  # an immediate change is never refused
    assert engine.get("/hb/gain/gain_db") == -6.0
    x = np.ones((1, BLOCK), np.float32)
    y = np.zeros_like(x)
    engine.process(x, y)
    assert engine._timed_n == TIMED_CAPACITY  # the audio side holds them too
    engine.load_chain(Chain([Gain()]))  # a new chain: what was timed for the old one is dropped
    assert engine.get("/hb/gain/gain_db") == 0.0 and engine.timed_pending == 0
    engine.process(x, y)
    assert engine._timed_n == 0 and engine.timed_overflows == 0
    # the block that swapped the chain in and dropped them played (it was silenced: the count of
    # timed changes kept stood in for the block's length; QA, session 23)
    assert engine.callback_errors == 0 and np.all(y != 0.0)
    engine.set("/hb/gain/gain_db", -2.0, stamp=far)  # room again


def test_immediate_and_past_time_tags_apply_at_once(rig):
    engine, driver, server, client = rig
    client.send_raw(bundle(IMMEDIATELY, ("/hb/gain/gain_db", [-3.0])))
    client.send_raw(bundle(time.time() - 10.0, ("/hb/gain_2/gain_db", [-4.0])))
    client.get("/hb/gain/gain_db")
    driver.wait_blocks(2)
    assert effect_of(engine, "gain").gain_db == -3.0
    assert effect_of(engine, "gain_2").gain_db == -4.0


def test_timed_changes_apply_in_time_order_in_the_engine():
    """Stamps given out of order: each applies at its own block, the latest stamp wins."""
    engine = Engine(Chain([Gain()]), channels=1)
    engine.prepare(SR, BLOCK)
    x = np.ones((1, BLOCK), np.float32)
    y = np.zeros_like(x)
    t = time.time()
    engine.set("/hb/gain/gain_db", -2.0, stamp=t + 0.06)
    engine.set("/hb/gain/gain_db", -1.0, stamp=t + 0.03)
    engine.set("/hb/gain/gain_db", -3.0, stamp=t + 0.09)
    seen = []
    while not seen or seen[-1][0] < t + 0.1:  # until a block has started past every stamp
        engine.process(x, y)
        seen.append((engine._callback_time, engine.chain["gain"].gain_db))
        time.sleep(0.002)
    for when, value in seen:
        expected = -3.0 if when >= t + 0.09 else -2.0 if when >= t + 0.06 else -1.0 if when >= t + 0.03 else 0.0
        assert value == expected, (when - t, value)
    assert engine._timed_n == 0 and engine.timed_overflows == 0


# == patterns ====================================================================================
@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("/hb/*/bypass", ["/hb/gain/bypass", "/hb/gain_2/bypass"], ["/hb/gain/gain_db", "/hb/a/b/bypass"]),
    ("/hb/{gain,gain_2}/gain_db", ["/hb/gain/gain_db", "/hb/gain_2/gain_db"], ["/hb/gain_3/gain_db"]),
    ("/hb/gain_?/gain_db", ["/hb/gain_2/gain_db"], ["/hb/gain/gain_db", "/hb/gain_//gain_db"]),
    ("/hb/gain_[2-4]/*", ["/hb/gain_3/bypass"], ["/hb/gain_5/bypass", "/hb/gain_3/gain_db/norm"]),
    ("/hb/gain[!_]*/x", ["/hb/gainX/x"], ["/hb/gain_2/x"]),
    ("/hb/a.b", ["/hb/a.b"], ["/hb/aXb"]),
])
def test_pattern_regex(pattern, yes, no):
    rx = pattern_regex(pattern)
    assert all(rx.match(a) for a in yes)
    assert not any(rx.match(a) for a in no)


def test_patterns_set_parameters_over_udp(rig):
    engine, driver, server, client = rig
    client.send("/hb/{gain,gain_2}/gain_db", -6.0)
    client.send("/hb/gain_?/bypass", 1)
    client.send("/hb/*/gain_db/norm", 1.0)  # /norm routes are parameters too
    client.get("/hb/gain/gain_db")
    assert engine.get("/hb/gain_2/bypass") == 1.0 and engine.get("/hb/gain/bypass") == 0.0
    assert engine.get("/hb/gain/gain_db") == engine.get("/hb/gain_2/gain_db") == 24.0
    client.send("/hb/*", "x")  # never reaches /hb/get, /hb/list, /hb/register...
    assert "matches no parameter" in client.error()
    assert engine.dropped_messages == 1


# == published values, latency feedback, learn hook, preset save =================================
def test_published_transport_values(rig):
    engine, driver, server, client = rig
    client.send("/hb/register")
    client.get("/hb/gain/gain_db")
    engine.publish("/hb/transport/tempo_bpm", 120.0)
    engine.publish("/hb/transport/tempo_bpm", 120.0)  # unchanged: no second echo
    engine.publish("/hb/transport/playing", 1.0)
    m1, m2 = client.recv(), client.recv()
    assert (m1.address, m1.params, m2.address, m2.params) == (
        "/hb/transport/tempo_bpm", [120.0], "/hb/transport/playing", [1.0])
    assert client.get("/hb/transport/tempo_bpm") == ("/hb/transport/tempo_bpm", 120.0, "120")
    client.send("/hb/subscribe", "/hb/meter/transport", 20.0)
    m = next(m for m in collect(client, 0.6) if m.address == "/hb/meter/transport")
    assert m.params == ["playing", 1.0, "tempo_bpm", 120.0]
    with pytest.raises(Exception, match="cannot publish"):
        engine.publish("/hb/gain/gain_db", 1.0)
    client.send("/hb/unsubscribe")
    client.send("/hb/gain/gain_db", 1.0)  # routes are not disturbed by published addresses
    assert client.get("/hb/gain/gain_db")[1] == 1.0


def test_latency_change_is_announced(rig):
    from hushbridge.effects import Limiter

    engine, driver, server, client = rig
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    try:
        client.send("/hb/register", listener.getsockname()[1])
        client.get("/hb/gain/gain_db")
        engine.load_chain(Chain([Limiter(), Gain()]))
        assert engine.wait_for_swap()
        engine.housekeeping()  # a backend's housekeeping thread does this every 5 ms
        msgs = []
        while not msgs or msgs[-1].address != "/hb/engine/latency_samples":
            msgs.append(OscMessage(listener.recvfrom(65536)[0]))
        assert msgs[-1].params == [float(engine.latency_samples)] and engine.latency_samples > 0
    finally:
        listener.close()


def test_learn_hook(engine_and_controller=None):
    engine = Engine(Chain([Gain()]), channels=2)
    ctl = OscController(engine)
    me = ("127.0.0.1", 5555)
    calls = []
    ctl.set_learn_handler(lambda address, client: calls.append((address, client)))
    assert ctl.handle_datagram(encode("/hb/learn", ["/hb/gain/gain_db"]), me) == []
    assert ctl.handle_datagram(encode("/hb/learn/cancel", []), me) == []
    assert calls == [("/hb/gain/gain_db", me), (None, me)]
    [err] = ctl.handle_datagram(encode("/hb/learn", ["/hb/*/gain_db"]), me)
    assert "unknown address" in err.args[0]

    def refuse(address, client):
        from hushbridge.errors import HushbridgeError
        raise HushbridgeError("no MIDI port open")

    ctl.set_learn_handler(refuse)
    [err] = ctl.handle_datagram(encode("/hb/learn", ["/hb/gain/bypass"]), me)
    assert err.args == ("no MIDI port open",)
    # a learn result announced to registered clients and the requester
    ctl.handle_datagram(encode("/hb/register", []), ("127.0.0.1", 7777))
    sent = []
    ctl.send = lambda address, args, dest: sent.append((address, tuple(args), dest))
    ctl.notify("/hb/learn/done", ("/hb/gain/gain_db", "cc 1/7"), also=me)
    assert sorted(d for *_, d in sent) == [me, ("127.0.0.1", 7777)]
    assert engine.dropped_messages == 2
    ctl.close()


def test_preset_save(rig, tmp_path, monkeypatch):
    import hushbridge.presets as presets

    engine, driver, server, client = rig
    monkeypatch.setattr(presets, "user_preset_dir", lambda: tmp_path)
    server.controller.set_preset_midi(lambda: {"cc": [{"channel": 1, "cc": 7, "address": "/hb/gain/gain_db"}]})
    client.send("/hb/gain/gain_db", -7.5)
    client.send("/hb/preset/save", "my show")
    m = client.recv()
    assert (m.address, m.params) == ("/hb/preset/saved", ["my show"])
    text = (tmp_path / "my show.toml").read_text()
    assert "gain_db = -7.5" in text and "[midi" in text
    chain = presets.load_preset("my show")
    assert chain["gain"].gain_db == -7.5
    # what else a save did is said: it replaced one, or a built-in is now hidden (QA, session 23)
    client.send("/hb/preset/save", "my show")
    m = client.recv()
    assert m.params[0] == "my show" and m.params[1].startswith("replaced the earlier 'my show'")
    client.send("/hb/preset/save", "podcast")
    m = client.recv()
    assert m.params[0] == "podcast" and "shadows the built-in preset 'podcast'" in m.params[1]
    # a name refused says why
    for name, why in (("mine.toml", "give it without .toml ('mine')"), ("we ird ünï", "has 'ü'"),
                      ("../x", "has a path separator"), ("-x", "starts with '-'"), ("", "is empty")):
        client.send("/hb/preset/save", name)
        assert why in client.error(), name


# == dropped counting ============================================================================
def test_count_dropped_is_exact_under_concurrency():
    engine = Engine(Chain([Gain()]), channels=2)
    ctl = OscController(engine)
    n_threads, n_each = 8, 5000

    def bump():
        for _ in range(n_each):
            engine.count_dropped()

    def reject():
        for _ in range(200):
            ctl.handle_datagram(b"\x00\x01", ("127.0.0.1", 1))

    threads = [threading.Thread(target=bump) for _ in range(n_threads)]
    threads += [threading.Thread(target=reject) for _ in range(4)]
    old = __import__("sys").getswitchinterval()
    __import__("sys").setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        __import__("sys").setswitchinterval(old)
    assert engine.dropped_messages == n_threads * n_each + 4 * 200
    engine.count_dropped(5)
    assert engine.get("/hb/engine/dropped_messages") == n_threads * n_each + 805
    ctl.close()


@pytest.mark.skipif(__import__("shutil").which("oscdump") is None, reason="liblo-tools not installed")
def test_liblo_meters(rig):
    """liblo's oscsend subscribes for another port, liblo's oscdump receives the meters."""
    import subprocess

    engine, driver, server, client = rig
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.3)
        subprocess.run(["oscsend", "127.0.0.1", str(server.port), "/hb/subscribe", "sfi", "/hb/meter/peak", "10",
                        str(port)], check=True, timeout=10)
        time.sleep(0.8)
        subprocess.run(["oscsend", "127.0.0.1", str(server.port), "/hb/unsubscribe", "si", "", str(port)],
                       check=True, timeout=10)
    finally:
        time.sleep(0.2)
        dump.terminate()
        out = dump.communicate(timeout=5)[0]
    lines = [ln for ln in out.splitlines() if "/hb/meter/peak ffff" in ln]
    assert len(lines) >= 4, out
    assert all(abs(float(v) - PEAK_DB) < 0.05 for v in lines[-1].split()[-4:])


def test_a_mode_or_switch_is_set_by_name_too():
    """TouchOSC buttons and scripts send names: `/hb/loudness/layout equal`, `/hb/declip/soft_repair
    on`; a name the parameter does not have is an error naming the ones it has; a number
    parameter still wants a number."""
    from hushbridge.effects import Declip, Loudness
    from hushbridge.effects.loudness import LAYOUT_CHOICES

    engine = Engine(Chain([Loudness(), Declip(), Gain()]), channels=6)
    engine.prepare(SR, BLOCK)
    ctl = OscController(engine)
    me = ("127.0.0.1", 9)
    assert ctl.handle_datagram(encode("/hb/loudness/layout", ["equal"]), me) == []
    assert ctl.handle_datagram(encode("/hb/declip/soft_repair", ["on"]), me) == []
    assert engine.get("/hb/loudness/layout") == LAYOUT_CHOICES.index("equal")
    assert engine.get("/hb/declip/soft_repair") == 1.0
    (err,) = ctl.handle_datagram(encode("/hb/loudness/layout", ["quad"]), me)
    assert err.address == "/hb/error" and "'auto'" in err.args[0] and "'7.1'" in err.args[0]
    (err,) = ctl.handle_datagram(encode("/hb/loudness/layout", ["7.1"]), me)
    assert "has 8 channels, the audio 6" in err.args[0]
    (err,) = ctl.handle_datagram(encode("/hb/gain/gain_db", ["loud"]), me)
    assert "needs a number" in err.args[0]


def test_an_idle_meter_thread_sleeps_until_a_subscription_wakes_it():
    """With nothing subscribed the meter thread sleeps (it woke 20 times a second before, each
    time taking the GIL the audio callback needs); a subscription still gets its first message
    at once."""
    engine, driver = running(Chain([Gain()]))
    server = OscServer(engine, port=0).start()
    client = Client(server.port)
    try:
        tid = server._meter_thread.native_id
        time.sleep(0.2)

        def switches() -> int:
            with open(f"/proc/self/task/{tid}/status") as f:
                return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)

        s0 = switches()
        time.sleep(1.0)
        assert switches() - s0 < 8
        t0 = time.monotonic()
        client.send("/hb/subscribe", "/hb/meter/peak", 0.5)  # slow: only the wake-up makes it quick
        msg = client.recv()
        assert msg.address == "/hb/meter/peak" and time.monotonic() - t0 < 0.5
    finally:
        client.close()
        server.close()
        driver.stop_event.set()
        driver.join()


def test_a_per_channel_engine_meters_each_channels_gain_reduction_and_activity():
    """Two microphones through a chain each: the gain-reduction meter sends the largest, then
    each channel's (a streamer sees which mic the compressor works on); activity the mean of
    the largest, then each channel's mean."""
    from hushbridge.effects import Compressor, Denoise

    engine = Engine(Chain([Compressor(threshold_db=-30.0, ratio=4.0), Denoise()]), channels=2, per_channel=True)
    engine.prepare(SR, BLOCK)
    hub = MeterHub(engine)
    dest = ("127.0.0.1", 9)
    hub.subscribe(dest, "gain_reduction/compressor", 10.0)
    hub.subscribe(dest, "activity/denoise", 10.0)
    t = np.arange(BLOCK * 200) / SR
    x = np.stack([0.5 * np.sin(2 * np.pi * 300 * t), 0.001 * np.sin(2 * np.pi * 300 * t)]).astype(np.float32)
    y = np.zeros((2, BLOCK), np.float32)
    for k in range(200):
        engine.process(np.ascontiguousarray(x[:, k * BLOCK:(k + 1) * BLOCK]), y)
    msgs = {address: args for address, args, _ in hub.poll(time.monotonic() + 1.0)}
    gr = msgs["/hb/meter/gain_reduction/compressor"]
    assert len(gr) == 3 and gr[0] == max(gr[1:]) and gr[1] > 10.0 and gr[2] == 0.0
    act = msgs["/hb/meter/activity/denoise"]
    assert len(act) == 3 and all(0.0 <= a <= 1.0 for a in act)
    linked = Engine(Chain([Compressor(threshold_db=-30.0)]), channels=2)
    linked.prepare(SR, BLOCK)
    hub = MeterHub(linked)
    hub.subscribe(dest, "gain_reduction/compressor", 10.0)
    linked.process(np.ascontiguousarray(x[:, :BLOCK]), y)
    assert len(hub.poll(time.monotonic() + 1.0)[0][1]) == 1  # linked: one value, as before


def test_meters_per_channel_bypassed_and_with_a_channel_not_yet_reading():
    """Review, session 24: a bypassed effect of a plain engine sent one value per channel too
    (zeros; the message's length followed bypass), and one channel's NaN reading (a model after
    a restart) in one row dropped every channel's values from the message."""
    from hushbridge.effects import Compressor, Effect

    class Activity(Effect):
        name = "act"
        activity = 0.5

        def process(self, block):
            pass

    engine = Engine(Chain([Compressor(threshold_db=-30.0)]), channels=2)
    engine.prepare(SR, BLOCK)
    hub = MeterHub(engine)
    dest = ("127.0.0.1", 9)
    hub.subscribe(dest, "gain_reduction/compressor", 10.0)
    x = np.full((2, BLOCK), 0.5, np.float32)
    y = np.zeros_like(x)
    engine.set_bypass("compressor", True)
    for _ in range(40):  # the bypass fades in over 20 ms
        engine.process(x, y)
    hub.poll(time.monotonic() + 1.0)
    for _ in range(40):
        engine.process(x, y)
    assert hub.poll(time.monotonic() + 2.0)[0][1] == (0.0,)
    split = Engine(Chain([Activity()]), channels=2, per_channel=True)
    split.prepare(SR, BLOCK)
    hub = MeterHub(split)
    hub.subscribe(dest, "activity/act", 10.0)
    one, two = split.chain.instances("act")
    one.__dict__["activity"], two.__dict__["activity"] = 0.9, float("nan")
    split.process(x, y)
    two.__dict__["activity"] = 0.2
    for _ in range(3):
        split.process(x, y)
    args = hub.poll(time.monotonic() + 1.0)[0][1]
    assert len(args) == 3 and args[1] == pytest.approx(0.9) and args[2] == pytest.approx(0.2)
    assert args[0] == pytest.approx(0.9)


@pytest.mark.parametrize("receive", ["thread", "process"])
def test_a_channel_s_own_setting_over_udp_with_feedback_list_and_patterns(receive):
    """Separate microphones: /hb/<id>@<n>/<param> (and /norm, /hb/get, /hb/list, patterns)
    over real UDP, in both receive modes; a change to the effect's own address is echoed to a
    registered client for every channel's address too, so a tablet's per-mic faders follow."""
    from hushbridge.effects import Gate

    engine = Engine(Chain([Gate(threshold_db=-40.0)]), channels=2, per_channel=True)
    engine.prepare(SR, BLOCK)
    driver = FakeDriver(engine)
    driver.start()
    driver.wait_blocks(5)
    server = OscServer(engine, port=0, process=receive == "process").start()
    client, tablet = Client(server.port), Client(server.port)
    try:
        tablet.send("/hb/register")
        tablet.get("/hb/engine/xruns")
        client.send("/hb/gate@2/threshold_db", -55.0)
        assert client.get("/hb/gate@2/threshold_db") == ("/hb/gate@2/threshold_db", -55.0, "-55.0 dB")
        driver.wait_blocks(3)
        assert [g.threshold_db for g in engine.chain.instances("gate")] == [-40.0, -55.0]
        echoed = [m for m in collect(tablet, 0.3) if m.address.startswith("/hb/gate")]
        assert [(m.address, m.params) for m in echoed] == [("/hb/gate@2/threshold_db", [-55.0])]
        client.send("/hb/gate@1/threshold_db/norm", 0.0)
        client.send("/hb/gate@{1,2}/range_db", 30.0)
        client.get("/hb/engine/xruns")
        driver.wait_blocks(3)
        one, two = engine.chain.instances("gate")
        assert (one.threshold_db, one.range_db, two.range_db) == (-90.0, 30.0, 30.0)
        client.send("/hb/gate/threshold_db", -30.0)  # every channel again
        client.get("/hb/engine/xruns")
        driver.wait_blocks(3)
        assert [g.threshold_db for g in engine.chain.instances("gate")] == [-30.0, -30.0]
        echoed = {m.address: m.params for m in collect(tablet, 0.3) if "threshold_db" in m.address}
        assert echoed == {"/hb/gate/threshold_db": [-30.0], "/hb/gate@1/threshold_db": [-30.0],
                          "/hb/gate@2/threshold_db": [-30.0]}
        # a pattern over the effect's address and its channels': each channel's echoed once
        client.send("/hb/gate*/threshold_db", -35.0)
        client.get("/hb/engine/xruns")
        echoed = [m.address for m in collect(tablet, 0.3) if "threshold_db" in m.address]
        assert sorted(echoed) == ["/hb/gate/threshold_db", "/hb/gate@1/threshold_db", "/hb/gate@2/threshold_db"]
        client.send("/hb/list")
        listed = [m.params[0] for m in collect(client, 0.5) if m.address == "/hb/param"]
        assert "/hb/gate@2/threshold_db" in listed and "/hb/gate@1/range_db" in listed
        client.send("/hb/gate@2/bypass", 1)  # the gate off on mic 2 alone
        client.send("/hb/gate@1/bypass", 0.5)  # a bypass is 0 or 1
        error = client.error()
        assert "0 or 1" in error or "bypass" in error, error
        assert client.get("/hb/gate@2/bypass") == ("/hb/gate@2/bypass", 1.0, "on")
        driver.wait_blocks(3)
        assert engine.chain.is_channel_bypassed("gate", 2) and not engine.chain.is_channel_bypassed("gate", 1)
        client.send("/hb/gate@3/threshold_db", -50.0)  # a stereo stream has no channel 3: it says so
        error = client.error()
        assert "gate@3" in error and "channels are 1 to 2 here" in error
    finally:
        client.close()
        tablet.close()
        server.close()
        driver.stop_event.set()
        driver.join()


def test_the_automixer_meters_each_microphone_s_cut():
    """/hb/meter/gain_reduction/automix: the deepest cut, then each microphone's, so a surface
    shows which mic is open (a Dugan's meters), in a plain engine too."""
    from hushbridge.effects import Automix

    engine = Engine(Chain([Automix()]), channels=2)
    engine.prepare(SR, BLOCK)
    hub = MeterHub(engine)
    hub.subscribe(("127.0.0.1", 9), "gain_reduction/automix", 10.0)
    t = np.arange(BLOCK * 200) / SR
    x = np.stack([0.3 * np.sin(2 * np.pi * 200 * t), 0.03 * np.sin(2 * np.pi * 300 * t)]).astype(np.float32)
    y = np.zeros_like(x)
    for i in range(0, x.shape[1], BLOCK):
        engine.process(x[:, i:i + BLOCK], y[:, i:i + BLOCK])
    hub.poll(time.monotonic() + 1.0)
    for i in range(0, x.shape[1], BLOCK):  # the talker on mic 1: mic 2 down by its 20 dB under
        engine.process(x[:, i:i + BLOCK], y[:, i:i + BLOCK])
    args = hub.poll(time.monotonic() + 2.0)[0][1]
    assert len(args) == 3 and args[0] == pytest.approx(20.0, abs=0.2) and args[2] == args[0]
    assert args[1] < 0.1
