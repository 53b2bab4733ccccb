"""OSC control (hushbridge.control.osc) over real UDP on 127.0.0.1, with the engine running audio.

A background thread plays the audio driver: every 2.67 ms (128 frames at 48 kHz) it runs
``engine.process`` on a sine and checks the output stays finite and audible.

Most tests use ``Chain([Gain(), Gain()])`` (ids ``gain``, ``gain_2``), whose output level is
exactly predictable (HighPass and Compressor were still being written when this was);
:func:`test_broadcast_chain` runs ``Chain([HighPass(), Compressor(), Gain()])`` when they exist.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from hushbridge.control.osc import MAX_REGISTERED, OscController, OscServer, Reply, encode
from hushbridge.effects import Chain, Gain
from hushbridge.engine import Engine, effect_of

SR = 48000
BLOCK = 128
AMP = 0.5
TIMEOUT = 3.0


class FakeDriver(threading.Thread):
    """Calls ``engine.process`` on a 1 kHz sine every block period, like an audio callback."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="fake-audio", daemon=True)
        self.engine = engine
        self.stop_event = threading.Event()
        self.nonfinite_blocks = 0
        self.last_peak = 0.0
        self.blocks = 0

    def run(self) -> None:
        t = np.arange(BLOCK)
        inp = np.empty((2, BLOCK), dtype=np.float32)
        out = np.empty((2, BLOCK), dtype=np.float32)
        period = BLOCK / SR
        phase = 0
        next_t = time.perf_counter()
        while not self.stop_event.is_set():
            inp[:] = (AMP * np.sin(2 * np.pi * 1000.0 * (t + phase) / SR)).astype(np.float32)
            phase += BLOCK
            self.engine.process(inp, out)
            if not np.isfinite(out).all():
                self.nonfinite_blocks += 1
            self.last_peak = float(np.abs(out).max())
            self.blocks += 1
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.perf_counter()

    def wait_blocks(self, n: int) -> None:
        target = self.blocks + n
        deadline = time.monotonic() + TIMEOUT
        while self.blocks < target:
            assert time.monotonic() < deadline, "audio thread stalled"
            time.sleep(0.002)

    def assert_running(self, min_peak: float = 0.05) -> None:
        """Audio keeps flowing, finite and non-silent."""
        self.wait_blocks(12)  # > the 20 ms smoothing ramps
        assert self.nonfinite_blocks == 0
        assert self.engine.callback_errors == 0, self.engine.last_callback_error
        assert self.last_peak > min_peak


class Client:
    """A raw UDP socket on 127.0.0.1:0 that sends requests and parses the replies."""

    def __init__(self, server_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.server = ("127.0.0.1", server_port)
        self.port = self.sock.getsockname()[1]

    def send(self, address: str, *args: object) -> None:
        self.sock.sendto(encode(address, args), self.server)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def recv(self, timeout: float = TIMEOUT) -> OscMessage:
        self.sock.settimeout(timeout)
        data, addr = self.sock.recvfrom(65536)
        assert addr == self.server, "replies come from the server's socket"
        return OscMessage(data)

    def expect_nothing(self, wait: float = 0.15) -> None:
        self.sock.settimeout(wait)
        with pytest.raises(TimeoutError):
            data, _ = self.sock.recvfrom(65536)
            pytest.fail(f"unexpected message {OscMessage(data).address} {OscMessage(data).params}")

    def get(self, address: str) -> tuple[str, float, str]:
        """``/hb/get`` round trip; also a barrier: every earlier message has been handled."""
        self.send("/hb/get", address)
        msg = self.recv()
        while msg.address.startswith("/hb/meter/"):  # a meter sent before the request arrived
            msg = self.recv()
        assert msg.address == "/hb/value", (msg.address, msg.params)
        return tuple(msg.params)  # type: ignore[return-value]

    def error(self) -> str:
        msg = self.recv()
        assert msg.address == "/hb/error", (msg.address, msg.params)
        assert len(msg.params) == 1 and isinstance(msg.params[0], str)
        return msg.params[0]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def engine():
    eng = Engine(Chain([Gain(), Gain()]), channels=2)
    eng.prepare(SR, BLOCK)
    return eng


@pytest.fixture
def driver(engine):
    d = FakeDriver(engine)
    d.start()
    d.wait_blocks(5)
    yield d
    d.stop_event.set()
    d.join()


@pytest.fixture(params=["thread", "process"])
def server(request, engine, driver):
    """Every test of the server runs with OSC received on a thread and in a receive process
    (hushbridge.control.osc_process): the two must be indistinguishable to a client."""
    with OscServer(engine, port=0, process=request.param == "process") as srv:
        assert (srv.receiver is not None) == (request.param == "process")
        yield srv


@pytest.fixture
def client(server):
    c = Client(server.port)
    yield c
    c.close()


def wait_for(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


# -- set, clamp, norm, bypass -----------------------------------------------------------------
def test_set_changes_value_and_audio(engine, driver, client):
    client.send("/hb/gain/gain_db", -12.0)
    assert client.get("/hb/gain/gain_db")[1] == -12.0
    assert engine.get("/hb/gain/gain_db") == -12.0
    driver.wait_blocks(12)  # applied at a block start, then ramped over 20 ms
    assert effect_of(engine, "gain").gain_db == -12.0
    expected = AMP * 10 ** (-12 / 20)
    assert driver.last_peak == pytest.approx(expected, rel=0.02)
    driver.assert_running(min_peak=0.5 * expected)


def test_int_argument_is_a_number(engine, driver, client):
    SimpleUDPClient("127.0.0.1", client.server[1]).send_message("/hb/gain_2/gain_db", -6)  # ",i"
    assert client.get("/hb/gain_2/gain_db")[1] == -6.0
    driver.wait_blocks(2)
    assert effect_of(engine, "gain_2").gain_db == -6.0


@pytest.mark.parametrize(("sent", "applied"), [(100.0, 24.0), (-1000.0, -96.0), (24.0, 24.0)])
def test_out_of_range_is_clamped(engine, driver, client, sent, applied):
    client.send("/hb/gain/gain_db", sent)
    assert client.get("/hb/gain/gain_db")[1] == applied
    driver.wait_blocks(2)
    assert effect_of(engine, "gain").gain_db == applied
    assert engine.dropped_messages == 0
    client.send("/hb/gain/gain_db", 0.0)
    assert client.get("/hb/gain/gain_db")[1] == 0.0
    driver.assert_running()


def test_norm_goes_through_the_scale(engine, driver, client):
    p = engine.info("/hb/gain/gain_db").param
    client.send("/hb/gain/gain_db/norm", 0.75)
    assert client.get("/hb/gain/gain_db")[1] == pytest.approx(p.from_norm(0.75))
    client.send("/hb/gain/gain_db/norm", 1.5)  # clamped to the top
    assert client.get("/hb/gain/gain_db")[1] == p.max
    client.send("/hb/gain/gain_db/norm", p.to_norm(0.0))
    assert client.get("/hb/gain/gain_db")[1] == pytest.approx(0.0, abs=1e-4)  # norm travels as float32
    assert engine.dropped_messages == 0


def test_bypass_accepts_int_float_and_bool(engine, driver, client):
    for sent, expected in [(1, True), (0.0, False), (True, True), (False, False), (1.0, True)]:
        client.send("/hb/gain_2/bypass", sent)
        assert client.get("/hb/gain_2/bypass")[1:] == (1.0 if expected else 0.0, "on" if expected else "off")
        driver.wait_blocks(2)
        assert engine.chain.is_bypassed("gain_2") is expected
    client.send("/hb/gain_2/bypass", 0.5)
    assert "0 or 1" in client.error()
    assert engine.dropped_messages == 1


def test_bypassed_gain_passes_audio_through(engine, driver, client):
    client.send("/hb/gain/gain_db", -20.0)
    client.send("/hb/gain/bypass", 1)
    client.get("/hb/gain/bypass")
    driver.wait_blocks(15)
    assert driver.last_peak == pytest.approx(AMP, rel=0.02)


# -- get / list ---------------------------------------------------------------------------------
def test_get_reply_format(engine, client):
    client.send("/hb/gain/gain_db", -18)
    client.send("/hb/get", "/hb/gain/gain_db")
    msg = client.recv()
    while msg.address != "/hb/value":
        msg = client.recv()
    assert msg.address == "/hb/value"
    assert msg.dgram[: msg.dgram.index(b",")].rstrip(b"\0") == b"/hb/value"
    assert b",sfs\0" in msg.dgram  # address string, float32 value, display string
    assert msg.params == ["/hb/gain/gain_db", -18.0, "-18.0 dB"]


@pytest.mark.parametrize(
    ("stat", "value", "display"),
    [("xruns", 0.0, "0"), ("sample_rate", 48000.0, "48000 Hz"), ("block_size", 128.0, "128"),
     ("dropped_messages", 0.0, "0"), ("coalesced_changes", 0.0, "0")],
)
def test_get_engine_stats(client, stat, value, display):
    assert client.get(f"/hb/engine/{stat}") == (f"/hb/engine/{stat}", value, display)


def test_get_engine_cpu_and_latency(client):
    address, value, display = client.get("/hb/engine/cpu_load")
    assert 0.0 <= value < 1.0 and display.endswith("%")
    assert client.get("/hb/engine/latency_samples")[1] == 0.0


def test_xruns_reported(engine, client):
    engine.note_xrun()
    assert client.get("/hb/engine/xruns")[1:] == (1.0, "1")


def test_list(engine, client):
    client.send("/hb/list")
    params = []
    msg = client.recv()
    while msg.address == "/hb/param":
        params.append(msg)
        msg = client.recv()
    assert msg.address == "/hb/list/end"
    assert msg.params == [len(params)] and b",i\0" in msg.dgram
    assert len(params) == len(engine.parameters()) == 4
    rows = {m.params[0]: m.params for m in params}
    assert list(rows) == ["/hb/gain/gain_db", "/hb/gain/bypass", "/hb/gain_2/gain_db", "/hb/gain_2/bypass"]
    assert rows["/hb/gain/gain_db"] == ["/hb/gain/gain_db", -96.0, 24.0, 0.0, 0.0, "dB", "0.0 dB"]
    assert rows["/hb/gain_2/bypass"] == ["/hb/gain_2/bypass", 0.0, 1.0, 0.0, 0.0, "", "off"]
    for m in params:
        assert b",sffffss\0" in m.dgram


# -- rejected messages ---------------------------------------------------------------------------
def _truncated() -> bytes:
    data = encode("/hb/gain/gain_db", [-6.0])
    return data[:-2]


def _bad_typetag() -> bytes:
    return b"/hb/gain/gain_db\0\0\0\0,f\0\0"  # says float, carries nothing


def _bad_bundle() -> bytes:
    msg = encode("/hb/gain/gain_db", [-6.0])
    return b"#bundle\0" + struct.pack(">Q", 1) + struct.pack(">i", len(msg) + 40) + msg


@pytest.mark.parametrize(
    "data",
    [os.urandom(37), b"\x00\x01\x02", b"", _truncated(), _bad_typetag(), _bad_bundle(), b"/hb/gain",
     b"/hb/gain/gain_db\0\0\0\0,c\0\0\0\0\0A",
     # an RGBA colour: python-osc reads it as an int, and a set took it as a number
     b"/hb/gain/gain_db\0\0\0\0,r\0\0\xff\0\0\xff"],
    ids=["random", "binary", "empty", "truncated", "bad-typetag", "bad-bundle", "unpadded", "unknown-tag", "rgba"],
)
def test_malformed_packet(engine, driver, client, data):
    client.send_raw(data)
    text = client.error()
    assert "malformed" in text
    assert engine.dropped_messages == 1
    assert client.get("/hb/gain/gain_db")[1] == 0.0  # server still serves
    driver.assert_running()


@pytest.mark.parametrize(
    ("address", "args", "words"),
    [
        ("/hb/nosuch/gain_db", [1.0], "unknown address"),
        ("/hb/gain/nosuch", [1.0], "unknown address"),
        ("/other/thing", [], "unknown address"),
        ("/hb/engine/xruns", [5.0], "is read-only: ask with /hb/get /hb/engine/xruns"),
        ("/hb/gain/gain_db", ["loud"], "needs a number"),
        ("/hb/gain/gain_db", [], "needs one number"),
        ("/hb/gain/gain_db", [1.0, 2.0], "needs one number"),
        ("/hb/gain/gain_db", [b"\x01\x02"], "needs a number"),
        ("/hb/gain/gain_db", [float("nan")], "finite"),
        ("/hb/gain/gain_db", [True], "true/false is for switches and bypass"),  # T: not 1 dB
        ("/hb/gain/gain_db/norm", [False], "true/false is for switches and bypass"),
        ("/hb/gain/gain_db/norm", ["x"], "needs a number"),
        ("/hb/gain/bypass", ["maybe"], "the word on, off, true or false, got 'maybe'"),
        ("/hb/get", [], "string"),
        ("/hb/get", ["/hb/nosuch/x"], "unknown address"),
        ("/hb/get", ["/hb/engine/nosuch"], "unknown engine stat"),
        ("/hb/list", [1], "no arguments"),
        ("/hb/register", ["x"], "port"),
        ("/hb/subscribe", ["/hb/meter/nosuch", 10.0], "unknown meter"),
        ("/hb/subscribe", ["/hb/meter/lufs", 10.0], "loudness"),
        ("/hb/subscribe", ["/hb/meter/gain_reduction/gain", 10.0], "no effect 'gain'"),
        ("/hb/subscribe", ["/hb/meter/peak"], "rate in Hz"),
        ("/hb/subscribe", ["/hb/meter/peak", 0.0], "positive"),
        ("/hb/unsubscribe", [1], "optional meter address"),
        ("/hb/preset/save", ["../evil"], "preset name"),
        ("/hb/learn", ["/hb/gain/gain_db"], "MIDI learn needs a MIDI input"),
        ("/hb/learn", ["/hb/gain/nosuch"], "unknown address"),
        ("/hb/*", [1.0], "matches no parameter"),
        ("/hb/*/nosuch", [1.0], "matches no parameter"),
        ("/hb/{gain/gain_db", [1.0], "malformed"),
        ("/hb/[/gain_db", [1.0], "malformed"),
        ("/hb/*/gain_db", ["loud"], "2 of 2 matches failed"),
    ],
)
def test_rejected_message(engine, driver, client, address, args, words):
    builder = OscMessageBuilder(address)
    for a in args:
        builder.add_arg(a)
    client.send_raw(builder.build().dgram)
    assert words in client.error()
    assert engine.dropped_messages == 1
    assert client.get("/hb/engine/dropped_messages")[1] == 1.0
    assert engine.get("/hb/gain/gain_db") == 0.0
    driver.assert_running()


def test_unknown_preset(engine, driver, client):
    client.send("/hb/preset/load", "no-such-preset")
    assert "unknown preset" in client.error()
    assert engine.dropped_messages == 1
    client.send("/hb/preset/load", "/etc/passwd.toml")  # names only, no paths over OSC
    assert "preset name" in client.error()
    assert engine.dropped_messages == 2
    assert engine.chain.ids == ["gain", "gain_2"]
    driver.assert_running()


def test_preset_load_swaps_chain_and_feeds_back(engine, driver, server, client, tmp_path, monkeypatch):
    import hushbridge.presets as presets

    monkeypatch.setattr(presets, "user_preset_dir", lambda: tmp_path)
    (tmp_path / "voice-test.toml").write_text(
        'version = 1\nname = "voice-test"\n[[chain]]\neffect = "gain"\nid = "voice"\n'
        "params = { gain_db = -6.0 }\n",
        encoding="utf-8",
    )
    client.send("/hb/register")
    client.send("/hb/preset/load", "voice-test")
    # the requester gets the new values too (a preset load is not "its" change)
    msg = client.recv()
    assert (msg.address, msg.params) == ("/hb/voice/gain_db", [-6.0])
    assert client.recv().address == "/hb/voice/bypass"
    msg = client.recv()  # and a confirmation, as /hb/preset/save sends one
    assert (msg.address, msg.params) == ("/hb/preset/loaded", ["voice-test"])
    assert engine.wait_for_swap()  # handed over; the audio thread swaps it in at a block start
    client.expect_nothing()  # once, though it is also a registered client
    # a load from elsewhere (a MIDI program change, the CLI): registered clients hear of it, so a
    # surface built for the old chain knows to rebuild (QA, session 23: only new values came)
    engine.load_preset("voice-test")
    got = [client.recv() for _ in range(3)]
    assert [m.address for m in got] == ["/hb/voice/gain_db", "/hb/voice/bypass", "/hb/preset/loaded"]
    assert got[-1].params == ["voice-test"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "voice-test.toml").write_text((tmp_path / "voice-test.toml").read_text(), encoding="utf-8")
    engine.load_preset(str(elsewhere / "voice-test.toml"))  # a file outside the preset folder: its path
    got = [client.recv() for _ in range(3)]
    assert got[-1].address == "/hb/preset/loaded" and got[-1].params == [str(elsewhere / "voice-test.toml")]
    assert engine.chain.ids == ["voice"]
    client.send("/hb/voice/gain_db", -3.0)  # new addresses are routed
    assert client.get("/hb/voice/gain_db")[1] == -3.0
    client.send("/hb/gain/gain_db", -3.0)  # old ones are gone
    assert "unknown address" in client.error()
    driver.wait_blocks(12)
    assert driver.last_peak == pytest.approx(AMP * 10 ** (-3 / 20), rel=0.02)
    driver.assert_running()


def test_messages_after_a_preset_load_reach_the_loaded_chain(engine, driver, server, client, tmp_path, monkeypatch):
    """A change sent right behind /hb/preset/load (its own datagram, or the same bundle) waits
    for the load and reaches the new chain; a timed load is refused, not run early."""
    import hushbridge.presets as presets
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    monkeypatch.setattr(presets, "user_preset_dir", lambda: tmp_path)
    for name, gain in (("p-a", -6.0), ("p-b", -9.0)):
        (tmp_path / f"{name}.toml").write_text(
            f'version = 1\n[[chain]]\neffect = "gain"\nid = "{name[-1]}"\nparams = {{ gain_db = {gain} }}\n',
            encoding="utf-8")

    def message(address, *args):
        m = OscMessageBuilder(address=address)
        for a in args:
            m.add_arg(a)
        return m.build()

    client.send("/hb/preset/load", "p-a")
    client.send("/hb/a/gain_db", -12.0)  # exists only in p-a: must not be refused or lost
    assert client.recv().params == ["p-a"]
    assert client.get("/hb/a/gain_db")[1] == -12.0
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(message("/hb/preset/load", "p-b"))
    bundle.add_content(message("/hb/b/gain_db", -20.0))
    client.send_raw(bundle.build().dgram)
    assert client.recv().params == ["p-b"]
    assert client.get("/hb/b/gain_db")[1] == -20.0
    assert engine.wait_for_swap() and engine.chain["b"].gain_db == -20.0
    timed = OscBundleBuilder(time.time() + 5.0)
    timed.add_content(message("/hb/preset/load", "p-a"))
    client.send_raw(timed.build().dgram)
    assert "cannot be timed" in client.error()
    assert engine.chain.ids == ["b"]
    driver.assert_running()


def test_broadcast_chain():
    try:
        from hushbridge.effects import Compressor, HighPass
    except ImportError:
        pytest.skip("HighPass / Compressor not in hushbridge.effects yet")
    engine = Engine(Chain([HighPass(), Compressor(), Gain()]), channels=2)
    engine.prepare(SR, BLOCK)
    driver = FakeDriver(engine)
    driver.start()
    try:
        with OscServer(engine, port=0) as srv:
            c = Client(srv.port)
            try:
                assert c.get("/hb/compressor/threshold_db") == ("/hb/compressor/threshold_db", -18.0, "-18.0 dB")
                c.send("/hb/compressor/threshold_db", -30)
                c.send("/hb/compressor/ratio/norm", 1.0)
                c.send("/hb/highpass/cutoff_hz", 5000.0)  # overshoot: clamped to the top
                c.send("/hb/compressor/detector", 1)
                assert c.get("/hb/compressor/threshold_db")[1:] == (-30.0, "-30.0 dB")
                assert c.get("/hb/compressor/ratio")[1] == pytest.approx(20.0)
                assert c.get("/hb/highpass/cutoff_hz")[1:] == (1000.0, "1.00 kHz")
                assert c.get("/hb/compressor/detector")[1:] == (1.0, "rms")
                driver.wait_blocks(4)
                comp = effect_of(engine, "compressor")
                assert (comp.threshold_db, comp.detector) == (-30.0, 1.0)
                assert effect_of(engine, "highpass").cutoff_hz == 1000.0
                c.send("/hb/list")
                rows = []
                msg = c.recv()
                while msg.address == "/hb/param":
                    rows.append(msg.params)
                    msg = c.recv()
                assert msg.params == [len(engine.parameters())] == [len(rows)]
                assert ["/hb/compressor/ratio", 1.0, 20.0, 3.0, pytest.approx(20.0), "", "20.0:1"] in rows
                c.send("/hb/highpass/cutoff_hz", 80.0)
                driver.assert_running(min_peak=0.02)
                assert engine.dropped_messages == 0
            finally:
                c.close()
    finally:
        driver.stop_event.set()
        driver.join()


# -- bundles --------------------------------------------------------------------------------------
def test_bundle_messages_run_in_order(engine, driver, client):
    b = OscBundleBuilder(IMMEDIATELY)
    for address, args in [("/hb/gain/gain_db", [-6.0]), ("/hb/nosuch", [1.0]), ("/hb/gain/gain_db", [-3.0]),
                          ("/hb/get", ["/hb/gain/gain_db"])]:
        m = OscMessageBuilder(address)
        for a in args:
            m.add_arg(a)
        b.add_content(m.build())
    client.send_raw(b.build().dgram)
    assert "unknown address" in client.error()
    assert client.recv().params == ["/hb/gain/gain_db", -3.0, "-3.0 dB"]
    assert engine.dropped_messages == 1


# -- feedback ----------------------------------------------------------------------------------
def test_register_feedback(engine, server, client):
    other = Client(server.port)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # another port on the same host
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    try:
        client.send("/hb/register")
        other.send("/hb/register", listener.getsockname()[1])
        client.get("/hb/gain/gain_db")
        other.get("/hb/gain/gain_db")
        # a change from `client`: echoed to `other`'s listener port, not back to `client`
        client.send("/hb/gain/gain_db", -6.5)
        msg = OscMessage(listener.recvfrom(65536)[0])
        assert (msg.address, msg.params) == ("/hb/gain/gain_db", [-6.5])
        assert b",f\0" in msg.dgram
        assert client.get("/hb/gain/gain_db")[1] == -6.5  # the next thing `client` gets is the reply
        # a change from elsewhere (CLI, MIDI): everyone registered
        engine.set("/hb/gain_2/bypass", 1.0)
        assert client.recv().params == [1.0]
        assert OscMessage(listener.recvfrom(65536)[0]).address == "/hb/gain_2/bypass"
        # unregister stops it
        client.send("/hb/unregister")
        client.get("/hb/gain/gain_db")
        engine.set("/hb/gain_2/bypass", 0.0)
        client.expect_nothing()
        assert OscMessage(listener.recvfrom(65536)[0]).params == [0.0]
        assert engine.dropped_messages == 0
    finally:
        other.close()
        listener.close()


def test_a_fader_that_knows_only_0_to_1_gets_norm_feedback_and_can_ask_for_it(engine, server, client):
    """TouchOSC's faders send and show 0..1: `/hb/register norm` adds `<address>/norm` to the
    feedback and `/hb/get <address>/norm` reads the position (QA, session 23: it could set a
    `/norm` address but never follow one). Bypass goes by its displayed name too, and has its
    `/norm` (QA, session 30: a surface bound to /norm throughout had dead bypass buttons)."""
    other = Client(server.port)
    try:
        other.send("/hb/register", "norm")
        other.get("/hb/gain/gain_db")
        param = engine.info("/hb/gain/gain_db").param
        client.send("/hb/gain/gain_db", -6.5)
        units, norm = other.recv(), other.recv()
        assert (units.address, units.params) == ("/hb/gain/gain_db", [-6.5])
        assert norm.address == "/hb/gain/gain_db/norm" and norm.params[0] == pytest.approx(param.to_norm(-6.5))
        client.send("/hb/gain/gain_db/norm", 0.25)  # a fader moved on another surface
        units, norm = other.recv(), other.recv()
        assert norm.params[0] == pytest.approx(0.25, abs=1e-6) and units.params[0] == pytest.approx(param.from_norm(0.25))
        address, value, display = client.get("/hb/gain/gain_db/norm")
        assert address == "/hb/gain/gain_db/norm" and value == pytest.approx(0.25, abs=1e-6) and display.endswith(" dB")
        client.send("/hb/gain_2/bypass", "on")  # as /hb/get shows it
        assert (other.recv().params, engine.get("/hb/gain_2/bypass")) == ([1.0], 1.0)
        assert (lambda m: (m.address, m.params))(other.recv()) == ("/hb/gain_2/bypass/norm", [1.0])
        client.send("/hb/gain_2/bypass", "off")
        assert other.recv().params == [0.0] and other.recv().params == [0.0]
        client.send("/hb/gain_2/bypass/norm", 0.7)  # a TouchOSC button or fader: on from 0.5
        assert [(m.address, m.params) for m in (other.recv(), other.recv())] == \
            [("/hb/gain_2/bypass", [1.0]), ("/hb/gain_2/bypass/norm", [1.0])]
        client.send("/hb/gain_2/bypass/norm", 0.0)
        assert other.recv().params == [0.0] and other.recv().params == [0.0]
        client.send("/hb/gain_2/bypass/norm", 0.5)  # on from 0.5, as documented (round() made it off)
        assert other.recv().params == [1.0] and other.recv().params == [1.0]
        client.send("/hb/gain_2/bypass/norm", False)
        assert other.recv().params == [0.0] and other.recv().params == [0.0]
        assert engine.get("/hb/gain_2/bypass") == 0.0 and client.get("/hb/gain_2/bypass/norm")[1:] == (0.0, "off")
        # another sender registering the same port without it (a debug oscsend) leaves it on: it
        # belongs to the sender that asked (QA: it turned the TouchOSC faders' feedback off)
        third = Client(server.port)
        third.send("/hb/register", other.port)
        third.get("/hb/gain/gain_db")
        client.send("/hb/gain/gain_db", -4.0)
        assert [m.address for m in (other.recv(), other.recv())] == ["/hb/gain/gain_db", "/hb/gain/gain_db/norm"]
        third.send("/hb/unregister", other.port, "norm")  # the register message, un-: accepted
        assert third.get("/hb/gain/gain_db")[1] == -4.0
        third.close()
        client.send("/hb/gain/gain_db", -5.0)
        other.expect_nothing()  # that unregistered the port, whoever had registered it
        other.send("/hb/register")  # registered again without it: units only
        other.get("/hb/gain/gain_db")
        client.send("/hb/gain/gain_db", -3.0)
        assert other.recv().params == [-3.0]
        other.expect_nothing()
        client.send("/hb/register", "loud")
        assert 'port 1..65535 (and "norm")' in client.error()
        client.send("/hb/get", "/hb/nope/x/norm")
        assert "unknown address" in client.error()
    finally:
        other.close()


def test_one_feedback_port_registered_from_several_senders_is_one_client(engine, server):
    """An app restarted on a new send port, or ``oscsend /hb/register i PORT`` run twice, registers
    the same feedback port from another sender: it got every change once per registration, its
    own changes back through the other one, and 32 such runs filled every place."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    s1, s2 = Client(server.port), Client(server.port)

    def heard(wait: float = 0.3) -> list:
        got = []
        listener.settimeout(wait)
        try:
            while True:
                m = OscMessage(listener.recvfrom(65536)[0])
                got.append((m.address, m.params))
        except TimeoutError:
            return got

    try:
        for s in (s1, s2):
            s.send("/hb/register", port)
            s.get("/hb/gain/gain_db")
        engine.set("/hb/gain/gain_db", -3.0)  # from elsewhere: once
        assert heard() == [("/hb/gain/gain_db", [-3.0])]
        for s, v in ((s2, -4.0), (s1, -5.0)):  # from either of its senders: never back to it
            s.send("/hb/gain/gain_db", v)
            assert s.get("/hb/gain/gain_db")[1] == v
            assert heard() == []
        for _ in range(2 * MAX_REGISTERED):  # oscsend again and again: one client still
            c = Client(server.port)
            c.send("/hb/register", port)
            c.get("/hb/gain/gain_db")
            c.close()
        assert len(set(server.controller.registered.values())) == 1
        fresh = Client(server.port)
        try:
            fresh.send("/hb/register")
            fresh.get("/hb/gain/gain_db")  # a /hb/value, not "too many registered clients"
            engine.set("/hb/gain/gain_db", -7.0)
            assert heard() == [("/hb/gain/gain_db", [-7.0])]
            assert fresh.recv().params == [-7.0]
        finally:
            fresh.close()
        assert engine.dropped_messages == 0
    finally:
        s1.close()
        s2.close()
        listener.close()


# -- socket-free controller --------------------------------------------------------------------
def test_controller_without_sockets(engine):
    ctl = OscController(engine)
    me = ("127.0.0.1", 5555)
    assert ctl.handle_datagram(encode("/hb/gain/gain_db", [-9.0]), me) == []
    assert ctl.handle_datagram(encode("/hb/get", ["/hb/gain/gain_db"]), me) == [
        Reply("/hb/value", ("/hb/gain/gain_db", -9.0, "-9.0 dB"), me)
    ]
    [err] = ctl.handle_datagram(b"garbage", me)
    assert err.address == "/hb/error" and err.dest == me
    assert engine.dropped_messages == 1
    # wildcard patterns go through the python-osc Dispatcher
    assert ctl.handle_datagram(encode("/hb/*/bypass", [1]), me) == []
    assert engine.get("/hb/gain/bypass") == engine.get("/hb/gain_2/bypass") == 1.0
    # feedback of a datagram's changes is part of its replies
    ctl.handle_datagram(encode("/hb/register", []), ("127.0.0.1", 7777))
    assert ctl.handle_datagram(encode("/hb/gain_2/gain_db", [3.0]), me) == [
        Reply("/hb/gain_2/gain_db", (3.0,), ("127.0.0.1", 7777))
    ]
    ctl.close()
    ctl.close()


def test_true_and_false_set_switches_and_nothing_else():
    from hushbridge.effects import HumRemover

    eng = Engine(Chain([HumRemover(), Gain()]), channels=1)
    eng.prepare(SR, BLOCK)
    ctl = OscController(eng)
    me = ("127.0.0.1", 5555)
    assert ctl.handle_datagram(encode("/hb/humremove/auto", [True]), me) == []
    assert eng.get("/hb/humremove/auto") == 1.0
    assert ctl.handle_datagram(encode("/hb/humremove/auto/norm", [False]), me) == []
    assert eng.get("/hb/humremove/auto") == 0.0
    [err] = ctl.handle_datagram(encode("/hb/humremove/mains_hz", [True]), me)
    assert err.address == "/hb/error" and "true/false is for switches" in err.args[0]
    assert eng.get("/hb/humremove/mains_hz") == eng.info("/hb/humremove/mains_hz").param.default
    ctl.close()


def test_chain_swap_remaps_addresses(engine):
    ctl = OscController(engine)
    me = ("127.0.0.1", 5555)
    engine.load_chain(Chain([Gain()], ids=["voice"]))
    assert ctl.handle_datagram(encode("/hb/voice/gain_db", [-4.0]), me) == []
    assert engine.get("/hb/voice/gain_db") == -4.0
    [err] = ctl.handle_datagram(encode("/hb/gain_2/gain_db", [-4.0]), me)
    assert err.address == "/hb/error"
    ctl.close()


def test_server_close_is_idempotent(engine):
    srv = OscServer(engine, port=0)
    srv.start()
    srv.start()
    srv.stop()
    srv.close()
    assert not srv._thread.is_alive()
    with pytest.raises(RuntimeError):
        srv.start()
    OscServer(engine, port=0).close()  # never started


def test_a_taken_port_or_foreign_address_is_a_clear_error(engine):
    from hushbridge.errors import ControlError

    with OscServer(engine, port=0) as first:
        with pytest.raises(ControlError, match="Address already in use.*--osc-port 0"):
            OscServer(engine, port=first.port)
    with pytest.raises(ControlError, match="cannot listen for OSC on 'no-such-host.invalid'"):
        OscServer(engine, host="no-such-host.invalid", port=0)


def test_ipv6_loopback(engine):
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with OscServer(engine, host="::1", port=0) as srv:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.settimeout(TIMEOUT)
        try:
            sock.sendto(encode("/hb/get", ["/hb/gain/gain_db"]), ("::1", srv.port))
            reply = OscMessage(sock.recvfrom(65536)[0])
        finally:
            sock.close()
    assert reply.address == "/hb/value" and reply.params[0] == "/hb/gain/gain_db"


# -- independent OSC implementation (liblo) ------------------------------------------------------
@pytest.mark.skipif(shutil.which("oscsend") is None, reason="liblo-tools not installed")
def test_liblo_oscsend(engine, driver, client):
    subprocess.run(["oscsend", "127.0.0.1", str(client.server[1]), "/hb/gain/gain_db", "f", "-12"],
                   check=True, timeout=10)
    wait_for(lambda: engine.get("/hb/gain/gain_db") == -12.0)
    subprocess.run(["oscsend", "127.0.0.1", str(client.server[1]), "/hb/gain_2/bypass", "T"],
                   check=True, timeout=10)
    wait_for(lambda: engine.get("/hb/gain_2/bypass") == 1.0)
    subprocess.run(["oscsend", "127.0.0.1", str(client.server[1]), "/hb/gain/gain_db", "s", "loud"],
                   check=True, timeout=10)
    wait_for(lambda: engine.dropped_messages == 1)
    driver.wait_blocks(12)
    assert effect_of(engine, "gain").gain_db == -12.0
    driver.assert_running(min_peak=0.1)


@pytest.mark.skipif(shutil.which("oscdump") is None, reason="liblo-tools not installed")
def test_liblo_oscdump_receives_feedback(engine, client):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killer = threading.Timer(TIMEOUT + 1.0, dump.terminate)  # readline() below cannot hang
    killer.start()
    try:
        time.sleep(0.3)  # let oscdump bind
        client.send("/hb/register", port)
        client.get("/hb/gain/gain_db")
        engine.set("/hb/gain/gain_db", -6.0)
        line = ""
        deadline = time.monotonic() + TIMEOUT
        while "/hb/gain/gain_db" not in line and time.monotonic() < deadline:
            line = dump.stdout.readline()
        assert "/hb/gain/gain_db f -6" in line, line
    finally:
        killer.cancel()
        dump.terminate()
        dump.wait(timeout=5)


# -- JACK: a parameter changed over UDP while the engine runs as a JACK client ------------------
def test_osc_on_jack(jack_server):
    jack = pytest.importorskip("jack")
    jack_io = pytest.importorskip("hushbridge.io.jack")
    engine = Engine(Chain([Gain(), Gain()]), channels=2)
    player = jack.Client("hb-osc-player", no_start_server=True, servername=jack_server.name)
    recorder = jack.Client("hb-osc-recorder", no_start_server=True, servername=jack_server.name)
    src = player.outports.register("sine")
    dst = recorder.inports.register("meas")
    state = {"phase": 0, "peak": 0.0, "cycles": 0}

    @player.set_process_callback
    def _play(frames: int) -> None:
        n = np.arange(state["phase"], state["phase"] + frames)
        src.get_array()[:] = AMP * np.sin(2 * np.pi * 1000.0 * n / player.samplerate)
        state["phase"] += frames

    @recorder.set_process_callback
    def _record(frames: int) -> None:
        state["peak"] = float(np.abs(dst.get_array()).max())
        state["cycles"] += 1

    def settled_peak() -> float:
        start = state["cycles"]
        wait_for(lambda: state["cycles"] >= start + 40)  # > 20 ms ramps at 128 frames
        return state["peak"]

    backend = jack_io.JackBackend(engine, name="hb-osc-test")
    try:
        with player, recorder, backend, OscServer(engine, port=0) as server:
            player.connect(src, f"{backend.client_name}:in_1")
            recorder.connect(f"{backend.client_name}:out_1", dst)
            c = Client(server.port)
            try:
                assert settled_peak() == pytest.approx(AMP, rel=0.05)
                client_blocks = engine.blocks
                c.send("/hb/gain/gain_db", -12.0)
                assert c.get("/hb/gain/gain_db")[1:] == (-12.0, "-12.0 dB")
                assert settled_peak() == pytest.approx(AMP * 10 ** (-12 / 20), rel=0.05)
                assert effect_of(engine, "gain").gain_db == -12.0
                c.send_raw(os.urandom(21))
                assert "malformed" in c.error()
                assert settled_peak() == pytest.approx(AMP * 10 ** (-12 / 20), rel=0.05)
                assert engine.blocks > client_blocks
                assert c.get("/hb/engine/sample_rate")[1] == float(jack_server.sample_rate)
                assert engine.callback_errors == 0, engine.last_callback_error
            finally:
                c.close()
    finally:
        backend.close()
