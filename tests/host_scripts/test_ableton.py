"""The HushBridge Remote Script (host_scripts/ableton/HushBridge) in a fake Live
(tests/fakes/live.py), talking real OSC over UDP to a real engine with a duck effect."""
from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes.live import NOTIFICATION_ERROR, LiveHost, Song

from hushbridge.control.osc import OscServer
from hushbridge.effects import Chain, Duck
from hushbridge.engine import Engine

SR = 48000
PACKAGE = Path(__file__).resolve().parents[2] / "host_scripts" / "ableton" / "HushBridge"


class Voice(threading.Thread):
    """Plays a microphone into the engine in real time: talking while ``talking`` is set."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.talking = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        t = np.arange(128) / SR
        out = np.zeros((1, 128), np.float32)
        n = 0
        while not self.stop.is_set():
            amp = 0.2 if self.talking.is_set() else 0.0
            block = (amp * np.sin(2 * np.pi * 200 * (t + n * 128 / SR))).astype(np.float32)[None, :]
            self.engine.process(block, out)
            n += 1
            time.sleep(128 / SR)


@pytest.fixture
def rig(tmp_path):
    engine = Engine(Chain([Duck(depth_db=12.0, attack_ms=20.0, hold_ms=100.0, release_ms=150.0)]), channels=1)
    engine.prepare(SR, 128)
    server = OscServer(engine, port=0)
    server.start()
    voice = Voice(engine)
    voice.start()
    r = subprocess.run([sys.executable, "-m", "hushbridge", "install-host-scripts", "ableton", "--dest",
                        str(tmp_path / "Remote Scripts"), "--osc-port", str(server.port)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    yield engine, server, voice, tmp_path / "Remote Scripts"
    voice.stop.set()
    voice.join()
    server.close()


def until(host: LiveHost, predicate, ticks: int = 60) -> bool:
    for _ in range(ticks):
        host.tick()
        if predicate():
            return True
    return False


def test_a_track_tagged_duck_falls_under_the_voice_and_comes_back(rig):
    engine, server, voice, scripts = rig
    song = Song(["Voice", "Music [duck]", "FX"])
    host = LiveHost(scripts, song)
    db_to_value = sys.modules["HushBridge.surface"].db_to_value  # the installed copy, as Live imported it
    try:
        music = song.fake_track("Music [duck]").mixer_device.volume
        fx = song.fake_track("FX").mixer_device.volume
        host.tick(5)
        assert music.value == 0.85 and music.writes == 0  # nobody talks: untouched
        voice.talking.set()
        ducked = db_to_value(-12.0)  # 0 dB (0.85) less the duck's 12 dB
        assert until(host, lambda: abs(music.value - ducked) < 0.01), music.value
        assert fx.value == 0.85 and fx.writes == 0
        music.fake_user_set(0.7)  # the user pulls the music down to about -6 dB during the duck
        assert until(host, lambda: abs(music.value - db_to_value(-6.0 - 12.0)) < 0.01), music.value
        voice.talking.clear()
        assert until(host, lambda: abs(music.value - 0.7) < 0.005), music.value  # back to where the user put it
    finally:
        host.close()
    assert not any(NOTIFICATION_ERROR in line for line in host.c_instance.log)
    assert host.script.errors == 0


def test_a_tagged_track_whose_fader_follows_automation_is_left_alone_and_said_so(rig):
    """Writing an automated fader switches its automation off in Live ("overridden") until the
    user re-enables it, and the script then took automation's moves for the user's (QA, session
    30): such a track is not ducked, and the status bar says so once."""
    engine, server, voice, scripts = rig
    song = Song(["Voice", "Bed [duck]", "Music [duck]"])
    host = LiveHost(scripts, song)
    db_to_value = sys.modules["HushBridge.surface"].db_to_value
    try:
        bed = song.fake_track("Bed [duck]").mixer_device.volume
        bed.automation_state = 1  # a fade drawn in the arrangement
        music = song.fake_track("Music [duck]").mixer_device.volume
        voice.talking.set()
        assert until(host, lambda: abs(music.value - db_to_value(-12.0)) < 0.01), music.value
        host.tick(10)
        assert bed.writes == 0 and bed.automation_state == 1
        voice.talking.clear()
        assert until(host, lambda: abs(music.value - 0.85) < 0.005)
    finally:
        host.close()
    assert sum("Bed [duck] has volume automation: not ducked" in m for m in host.c_instance.messages) == 1


def test_lives_tempo_and_transport_reach_the_engine(rig):
    engine, server, voice, scripts = rig
    song = Song(["Voice"])
    host = LiveHost(scripts, song)
    try:
        assert until(host, lambda: engine.is_published("/hb/transport/tempo_bpm"))
        assert engine.get("/hb/transport/tempo_bpm") == 120.0 and engine.get("/hb/transport/playing") == 0.0
        song.fake_user_tempo(128.5)
        song.start_playing()
        assert until(host, lambda: engine.get("/hb/transport/playing") == 1.0 and
                     engine.get("/hb/transport/beat") > 1.0)
        assert engine.get("/hb/transport/tempo_bpm") == 128.5
        song.stop_playing()
        assert until(host, lambda: engine.get("/hb/transport/playing") == 0.0)
    finally:
        host.close()


def test_the_engine_going_away_gives_the_tracks_back_and_switching_off_leaves_nothing_behind(rig):
    engine, server, voice, scripts = rig
    song = Song(["Music [duck]"])
    host = LiveHost(scripts, song)
    music = song.fake_track("Music [duck]").mixer_device.volume
    voice.talking.set()
    assert until(host, lambda: music.value < 0.6)
    server.close()  # hushbridge stopped (or crashed) while ducking
    assert until(host, lambda: music.value == 0.85, ticks=30)  # within about a second
    host.tick(5)  # and the script goes on without it
    assert host.script.errors == 0
    host.close()
    assert song.fake_listeners("tempo") == 0 and song.fake_listeners("is_playing") == 0
    assert host.script._sock is None
    again = LiveHost(scripts, song)  # Live creates it again (a set loaded)
    again.tick(3)
    again.close()


def test_switching_off_mid_duck_restores_the_fader(rig):
    engine, server, voice, scripts = rig
    song = Song(["Bed [duck]"])
    host = LiveHost(scripts, song)
    bed = song.fake_track("Bed [duck]").mixer_device.volume
    voice.talking.set()
    assert until(host, lambda: bed.value < 0.6)
    host.close()
    assert bed.value == 0.85


def test_the_volume_law_round_trips_and_matches_lives_marks():
    sys.path.insert(0, str(PACKAGE.parent))
    try:
        from HushBridge.surface import db_to_value, value_to_db
    finally:
        sys.path.remove(str(PACKAGE.parent))
    for v, db in ((1.0, 6.0), (0.85, 0.0), (0.7, -6.0), (0.55, -12.0), (0.4, -18.0), (0.15, -41.0)):
        assert value_to_db(v) == pytest.approx(db, abs=0.05)
    for v in np.linspace(0.01, 1.0, 100):
        assert db_to_value(value_to_db(v)) == pytest.approx(v, abs=1e-9)


def test_the_remote_script_is_python_37_and_standard_library_only():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(), feature_version=(3, 7))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module.split(".")[0]]
            else:
                continue
            assert set(names) <= set(sys.stdlib_module_names), (path.name, names)


def test_a_track_renamed_out_of_the_duck_or_deleted_mid_duck_and_a_second_surface(rig):
    engine, server, voice, scripts = rig
    song = Song(["Music [duck]", "Jingle [duck]", "Beds [duck]"])
    host = LiveHost(scripts, song)
    music, jingle = song.fake_track("Music [duck]"), song.fake_track("Jingle [duck]")
    beds = song.fake_track("Beds [duck]")
    voice.talking.set()
    assert until(host, lambda: music.mixer_device.volume.value < 0.6)
    music.fake_user_rename("Music")  # out of the duck while ducked: its level comes back at once
    song.fake_delete_track(jingle)  # gone while ducked: nothing to give back, no error
    host.tick(2)
    assert music.mixer_device.volume.value == 0.85
    assert beds.mixer_device.volume.value < 0.6 and host.script.errors == 0
    voice.talking.clear()
    assert until(host, lambda: beds.mixer_device.volume.value == 0.85)
    # chosen twice as a Control Surface: the second one only sends, so the cut is not applied twice
    second = LiveHost(scripts, song)
    second.script.connect_script_instances([host.script, second.script])
    assert any("chosen twice" in m for m in second.c_instance.messages)
    voice.talking.set()
    ducked = sys.modules["HushBridge.surface"].db_to_value(-12.0)
    assert until(host, lambda: abs(beds.mixer_device.volume.value - ducked) < 0.01)
    host.tick(10)
    second.tick(10)
    assert abs(beds.mixer_device.volume.value - ducked) < 0.01  # -12 dB, not -24
    second.close()
    host.close()
    assert beds.mixer_device.volume.value == 0.85


def test_no_duck_effect_is_said_once_and_asked_again_only_now_and_then(tmp_path):
    engine = Engine(Chain([Duck()]), channels=1)
    engine.load_chain(Chain([]))  # a chain without the duck
    engine.prepare(SR, 128)
    server = OscServer(engine, port=0)
    server.start()
    try:
        r = subprocess.run([sys.executable, "-m", "hushbridge", "install-host-scripts", "ableton", "--dest",
                            str(tmp_path), "--osc-port", str(server.port)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        host = LiveHost(tmp_path, Song(["Music [duck]"]))
        host.tick(70)  # 7 s: without a back-off it would have asked three times
        host.close()
    finally:
        server.close()
    assert sum("no duck effect" in m for m in host.c_instance.messages) == 1
    assert engine.dropped_messages == 1


def test_a_malformed_bundle_never_hangs_the_script():
    import struct

    sys.path.insert(0, str(PACKAGE.parent))
    try:
        from HushBridge import oscmini
    finally:
        sys.path.remove(str(PACKAGE.parent))
    bad = b"#bundle\0" + b"\0" * 8 + struct.pack(">i", -4) + b"\0" * 8
    assert oscmini.decode(bad) == []
    msg = oscmini.encode("/hb/meter/gain_reduction/duck", [3.5])
    good = b"#bundle\0" + b"\0" * 8 + struct.pack(">i", len(msg)) + msg
    assert oscmini.decode(good) == [("/hb/meter/gain_reduction/duck", [3.5])]


def test_lives_track_names_and_faders_reach_hushbridges_clients(rig):
    """/hb/host/track for each track as it changes (a ducked one at the user's level), kept by the
    engine for /hb/host/tracks and sent on to registered clients (a tablet shows Live's mixer)."""
    import socket

    from pythonosc.osc_message import OscMessage

    from hushbridge.control.osc import encode

    engine, server, voice, scripts = rig
    tablet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tablet.bind(("127.0.0.1", 0))
    tablet.settimeout(0.02)
    tablet.sendto(encode("/hb/register", []), ("127.0.0.1", server.port))
    song = Song(["Voice", "Music [duck]"])
    host = LiveHost(scripts, song)
    heard = {}

    def listen():
        while True:
            try:
                msg = OscMessage(tablet.recvfrom(65536)[0])
            except socket.timeout:
                return
            if msg.address == "/hb/host/track":
                heard[msg.params[0]] = (msg.params[1], round(msg.params[2], 1))
            elif msg.address == "/hb/host/track_count":
                heard["count"] = msg.params[0]

    try:
        assert until(host, lambda: (listen(), heard == {"count": 2, 1: ("Voice", 0.0), 2: ("Music [duck]", 0.0)})[1])
        song.fake_track("Voice").mixer_device.volume.fake_user_set(0.7)
        song.fake_track("Voice").fake_user_rename("Host")
        voice.talking.set()  # the music ducks: still reported at the user's 0 dB
        assert until(host, lambda: (listen(), heard.get(1) == ("Host", -6.0))[1])
        host.tick(10)
        listen()
        assert heard[2] == ("Music [duck]", 0.0)
        song.fake_delete_track(song.fake_track("Music [duck]"))
        assert until(host, lambda: (listen(), heard.get("count") == 1)[1])  # the tablet forgets the deleted track
        tablet.sendto(encode("/hb/host/tracks", []), ("127.0.0.1", server.port))
        replies = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(r.address == "/hb/host/tracks/end" for r in replies):
            try:
                replies.append(OscMessage(tablet.recvfrom(65536)[0]))
            except socket.timeout:
                pass
        listed = [(r.params[0], r.params[1], round(r.params[2], 1)) for r in replies if r.address == "/hb/host/track"]
        assert listed[-1:] == [(1, "Host", -6.0)]  # the deleted track forgotten (after the live updates)
        assert [r.params for r in replies if r.address == "/hb/host/tracks/end"] == [[1]]
    finally:
        host.close()
        tablet.close()


def _installed_for_a_free_port(tmp_path) -> int:
    """Install the script into ``tmp_path`` for a port nobody listens on yet; returns the port."""
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    r = subprocess.run([sys.executable, "-m", "hushbridge", "install-host-scripts", "ableton", "--dest", str(tmp_path),
                        "--osc-port", str(port)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return port


def test_an_engine_started_after_live_learns_every_track_while_busy_faders_move(tmp_path):
    """Live first, hushbridge later (or restarted): once hushbridge answers, the script tells it
    every track again; automation moving tracks 1-16 every tick does not keep 17-20 from it."""
    port = _installed_for_a_free_port(tmp_path)
    song = Song([f"T{i}" for i in range(1, 21)])
    host = LiveHost(tmp_path, song)
    host.tick(5)  # nobody listens yet
    engine = Engine(Chain([Duck()]), channels=1)
    engine.prepare(SR, 128)
    server = OscServer(engine, port=port)
    server.start()
    audio = Voice(engine)  # meters go out while audio runs
    audio.start()
    try:
        for tick in range(80):
            for i in range(1, 17):  # automation on the first sixteen faders
                song.fake_track(f"T{i}").mixer_device.volume.fake_user_set(0.5 + 0.02 * ((tick + i) % 10))
            host.tick()
            if len(server.controller.host_tracks) == 20:
                break
        assert sorted(server.controller.host_tracks) == list(range(1, 21))
        assert server.controller.host_tracks[20][0] == "T20"
    finally:
        host.close()
        audio.stop.set()
        audio.join()
        server.close()


def _engine_without_duck(port: int) -> OscServer:
    """A running engine with no duck effect, listening on ``port``."""
    engine = Engine(Chain([]), channels=1)
    engine.prepare(SR, 128)
    server = OscServer(engine, port=port)
    server.start()
    return server


def test_an_engine_without_a_duck_effect_restarted_hears_the_tracks_within_seconds(tmp_path):
    """With no duck effect the script asks for the meter only every 30 s, and it re-sent the
    tracks and transport only once it heard from the engine: after a restart that took up to
    30 s (QA, session 30). Meanwhile it now asks a question any engine answers, every 3 s."""
    port = _installed_for_a_free_port(tmp_path)
    host = LiveHost(tmp_path, Song(["Voice", "Guest"]))

    server = _engine_without_duck(port)
    try:
        assert until(host, lambda: len(server.controller.host_tracks) == 2, 60)
        host.tick(20)
        server.close()
        host.tick(50)  # 5 s without an engine (a restart)
        server = _engine_without_duck(port)
        assert until(host, lambda: len(server.controller.host_tracks) == 2, 80), "tracks not re-sent within 8 s"
        assert server.controller.engine.is_published("/hb/transport/tempo_bpm")
    finally:
        host.close()
        server.close()


def test_a_quick_restart_between_two_questions_is_noticed(tmp_path):
    """(Review, session 30.) A restart of about 1 s between two of the 3 s questions left no
    gap to notice: the script now asks for the tempo it told the engine, which a new engine
    does not know."""
    port = _installed_for_a_free_port(tmp_path)
    host = LiveHost(tmp_path, Song(["Voice", "Guest"]))

    server = _engine_without_duck(port)
    try:
        assert until(host, lambda: len(server.controller.host_tracks) == 2, 60)
        assert until(host, lambda: host.script._refused, 60)
        assert until(host, lambda: host.script._next_hello - host.script._ticks == 29, 40)  # just asked
        host.tick(3)
        server.close()
        host.tick(10)  # a 1 s restart, between two questions
        server = _engine_without_duck(port)
        assert until(host, lambda: len(server.controller.host_tracks) == 2, 80), "tracks not re-sent within 8 s"
    finally:
        host.close()
        server.close()


def test_automation_drawn_while_the_script_runs_is_not_overridden(rig):
    """Every tagged track is followed from the first tick; automation drawn later must still
    keep the script's hands off the fader (review, session 30)."""
    engine, server, voice, scripts = rig
    song = Song(["Voice", "Bed [duck]"])
    host = LiveHost(scripts, song)
    try:
        host.tick(10)
        bed = song.fake_track("Bed [duck]").mixer_device.volume
        bed.automation_state = 1  # the user draws a fade now
        voice.talking.set()
        host.tick(30)
        voice.talking.clear()
        host.tick(20)
        assert bed.writes == 0 and bed.automation_state == 1, (bed.writes, bed.automation_state)
    finally:
        host.close()
