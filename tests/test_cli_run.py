"""`hushbridge run` as a user starts it: JACK ports appear, OSC answers, SIGTERM stops it cleanly."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jack
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def osc(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


@pytest.mark.jack
def test_run_on_jack_serves_osc_and_stops_on_sigterm(jack_server):
    port = free_udp_port()
    env = dict(os.environ, JACK_DEFAULT_SERVER=jack_server.name, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hushbridge", "run", "--backend", "jack", "--name", "hbrun", "--preset", "podcast",
         "--channels", "1", "--osc-port", str(port), "--status-every", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        client = jack.Client("hbrun-probe", no_start_server=True, servername=jack_server.name)
        deadline = time.monotonic() + 60
        names = []
        while time.monotonic() < deadline and proc.poll() is None:
            names = [p.name for p in client.get_ports("hbrun:")]
            if {"hbrun:in_1", "hbrun:out_1"} <= set(names):
                break
            time.sleep(0.2)
        assert {"hbrun:in_1", "hbrun:out_1"} <= set(names), proc.stderr.read() if proc.poll() is not None else names
        client.close()

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        reply = None
        for _ in range(40):  # the OSC server starts right after the JACK client
            sock.sendto(osc("/hb/compressor/ratio", 6.0), ("127.0.0.1", port))
            sock.sendto(osc("/hb/get", "/hb/compressor/ratio"), ("127.0.0.1", port))
            try:
                reply = OscMessage(sock.recvfrom(65536)[0])
                break
            except socket.timeout:
                continue
        assert reply is not None and reply.address == "/hb/value"
        assert reply.params[:3] == ["/hb/compressor/ratio", 6.0, "6.0:1"]
        sock.sendto(osc("/hb/get", "/hb/engine/latency_samples"), ("127.0.0.1", port))
        lat = OscMessage(sock.recvfrom(65536)[0])
        assert lat.params[1] == 168.0  # the podcast preset's limiter (72) and expander (96) look-ahead at 48 kHz
        sock.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "hushbridge running on jack" in err and "OSC on 127.0.0.1" in err
    assert "received in a process of its own" in err  # the default: OSC cannot take the GIL from audio
    assert "received on a thread" not in err
    assert "stopped." in err and "xruns" in err


@pytest.mark.jack
def test_run_says_a_stereo_pair_s_denoiser_is_linked(jack_server):
    env = dict(os.environ, JACK_DEFAULT_SERVER=jack_server.name, PYTHONUNBUFFERED="1")
    for extra, want in (([], "denoise (linked)"), (["--set", "denoise.link=none"], "chain denoise,")):
        proc = subprocess.Popen(
            [sys.executable, "-m", "hushbridge", "run", "--backend", "jack", "--name", "hblink", "--chain", "denoise",
             "--channels", "2", "--no-osc", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        seen = ""
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and proc.poll() is None and "Ctrl-C to stop" not in seen:
                seen += proc.stderr.readline()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        assert want in seen, seen


@pytest.mark.jack
def test_run_on_jack_refuses_a_rate_or_block_size_the_server_does_not_run(jack_server):
    """A JACK client takes the server's rate and period: one asked for otherwise was silently ignored
    (a user asking for 44.1 kHz got 48 kHz without a word)."""
    env = dict(os.environ, JACK_DEFAULT_SERVER=jack_server.name)
    base = [sys.executable, "-m", "hushbridge", "run", "--backend", "jack", "--name", "hbrate", "--chain", "gain",
            "--no-osc"]
    for extra, want in ((["--rate", "44100"], "--rate 44100: the JACK server runs at 48000 Hz"),
                        (["--block-size", "256"], "--block-size 256: the JACK server runs with 128-frame periods")):
        r = subprocess.run(base + extra, capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1 and want in r.stderr and "start jackd with" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.jack
def test_run_on_portaudio_names_what_the_device_has(jack_server):
    """PortAudio's errors for a rate or a channel count the device lacks said "device None" and
    "Invalid sample rate" only (QA, session 31): they name the device and what it has."""
    env = dict(os.environ, JACK_DEFAULT_SERVER=jack_server.name, JACK_NO_START_SERVER="1")
    base = [sys.executable, "-m", "hushbridge", "run", "--backend", "portaudio", "--chain", "gain", "--no-osc"]
    for extra, want in ((["--rate", "44100"], r"the device '[^']+' \(48000 Hz\) does not take 44100 Hz"),
                        (["--channels", "3"], r"the device '[^']+' has 2 input and 2 output channels: 3 asked for")):
        r = subprocess.run(base + extra, capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1 and re.search(want, r.stderr), r.stderr
        assert "on the default device" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.jack
def test_a_live_start_with_osc_and_midi_costs_no_xruns(jack_server):
    """Importing python-osc / mido / rtmidi and starting the OSC server hold the GIL for tens of
    ms, which the audio callback waits for: done after the audio started they cost every start
    4-6 xruns. Done before, none; passes on a clean start of three (the VM has its own)."""
    import jack

    env = dict(os.environ, JACK_DEFAULT_SERVER=jack_server.name, PYTHONUNBUFFERED="1")
    count = [0]
    watch = jack.Client("hb-startwatch", servername=jack_server.name, no_start_server=True)
    watch.set_xrun_callback(lambda delay: count.__setitem__(0, count[0] + 1))
    watch.activate()
    seen = []
    try:
        for take in range(3):
            time.sleep(1.0)
            before = count[0]
            proc = subprocess.Popen(
                [sys.executable, "-m", "hushbridge", "run", "--backend", "jack", "--name", f"hbstart{take}",
                 "--osc-port", "0", "--midi-in", "virtual"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
            out = ""
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline and proc.poll() is None and "Ctrl-C to stop" not in out:
                    out += proc.stderr.readline()
                assert "Ctrl-C to stop" in out, out
                time.sleep(1.0)
                seen.append(count[0] - before)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
            if seen[-1] == 0:
                break
    finally:
        watch.deactivate()
        watch.close()
    assert 0 in seen, f"xruns at each start: {seen}"


def _private_server(name, tmp_path):
    """A JACK server of the test's own (it is killed), waited for from another process: libjack in
    this one, which has clients on the session server, must not connect to a second server (it
    crashed doing so once that one died)."""
    from conftest import _start_jackd

    jackd = _start_jackd(name, realtime=False, log_path=str(tmp_path / "jackd.log"))
    ready = subprocess.run(["jack_wait", "-s", name, "-w", "-t", "10"], capture_output=True, text=True,
                           env=dict(os.environ, JACK_NO_START_SERVER="1"), timeout=30)
    assert ready.returncode == 0 and jackd.poll() is None, (tmp_path / "jackd.log").read_text()
    return jackd


def _run_until_running(args, server):
    """``hushbridge run ARGS`` on ``server``: (process, its stderr lines so far, their reader),
    once it says it is running."""
    env = dict(os.environ, JACK_DEFAULT_SERVER=server, PYTHONUNBUFFERED="1", JACK_NO_START_SERVER="1")
    proc = subprocess.Popen([sys.executable, "-m", "hushbridge", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not any("running on" in x for x in lines):
        time.sleep(0.2)
    assert any("running on" in x for x in lines), "".join(lines)
    return proc, lines, reader


@pytest.mark.jack
def test_run_exits_with_an_error_when_the_jack_server_dies(jack_server, tmp_path):
    """A JACK server that goes away (crash, kill) is not a frozen status line forever: `run`
    says so and exits non-zero, promptly, and a take it was recording is closed and named. A
    private server, since this one is killed."""
    from conftest import _kill

    name = f"hb-dies-{os.getpid()}"
    jackd = _private_server(name, tmp_path)
    proc = None
    try:
        # no JACK client here: libjack in one process does not survive a second server dying
        proc, lines, reader = _run_until_running(
            ["--backend", "jack", "--server", name, "--name", "hbdies", "--chain", "gain", "--channels", "1",
             "--no-osc", "--record", str(tmp_path / "take.wav")], name)
        time.sleep(0.5)
        jackd.terminate()  # a server that goes away (SIGKILL would also leak its slot in JACK's registry)
        jackd.wait(10)
        gone = time.monotonic()
        proc.wait(timeout=20)
        took = time.monotonic() - gone
        reader.join(5)
        err = "".join(lines)
        assert proc.returncode == 1, err
        assert "error: audio stopped:" in err, err
        assert re.search(rf"recorded [0-9.]+ s: {re.escape(str(tmp_path / 'take.wav'))}", err), err
        assert took < 4.0, took  # no wait for a take's tail the audio can no longer bring
        import soundfile as sf

        assert sf.info(str(tmp_path / "take.wav")).frames > 0.4 * 48000
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        _kill(jackd)


@pytest.mark.jack
def test_run_on_portaudio_exits_when_its_device_goes_away(tmp_path):
    """PortAudio's JACK host API as the device; the server dies. PortAudio never returns from
    stopping or closing that stream: the backend gives up on it after 2 s, but sounddevice's exit
    hook stopped and closed it again and the process hung for good, deaf to SIGTERM (QA,
    session 31). It now says so and exits."""
    from conftest import _kill

    name = f"hb-padies-{os.getpid()}"
    jackd = _private_server(name, tmp_path)
    proc = None
    try:
        proc, lines, reader = _run_until_running(["--backend", "portaudio", "--chain", "gain", "--no-osc"], name)
        assert any("running on portaudio" in x for x in lines), "".join(lines)
        # the round trip is the chain's latency plus the device's, which PortAudio estimates
        assert any(re.search(r"the device adds [1-9][0-9]* samples", x) for x in lines), "".join(lines)
        time.sleep(1.0)
        jackd.terminate()  # a server that goes away (SIGKILL would leak its slot in JACK's registry)
        jackd.wait(10)
        proc.wait(timeout=30)
        reader.join(5)
        err = "".join(lines)
        assert proc.returncode == 1 and "error: audio stopped:" in err, err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        _kill(jackd)


@pytest.mark.jack
def test_run_per_channel_with_automix_levels_each_microphone_for_itself(jack_server, tmp_path):
    """Two podcast microphones live: `run --per-channel --automix` gives each its own chain (the
    quiet speaker is levelled for itself, as `process --per-channel --automix` does the file),
    and the automixer stays when a preset is loaded live."""
    import numpy as np
    from helpers import JackRigProcess, wait_for_jack_ports

    import soundfile as sf

    from hushbridge.io.files import process_file, read_audio

    sr, seconds = 48000, 8.0
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(4)
    talk = lambda level, start: (10 ** (level / 20) * np.sin(2 * np.pi * 160 * t) * (1 + 0.8 * np.sin(2 * np.pi * 3 * t))  # noqa: E731
                                 * ((t % 2.0 >= start) & (t % 2.0 < start + 0.9)))
    mics = np.stack([talk(-14.0, 0.0) + 0.1 * talk(-14.0, 1.0), talk(-36.0, 1.0) + 0.1 * talk(-36.0, 0.0)])
    mics = (mics + 10 ** (-62 / 20) * rng.standard_normal(mics.shape)).astype(np.float32)
    src = tmp_path / "mics.wav"
    sf.write(src, mics.T, sr, subtype="FLOAT")
    process_file(src, tmp_path / "apart.wav", "dialogue", per_channel=True, automix=True, dc_offset="keep")
    process_file(src, tmp_path / "linked.wav", "dialogue", dc_offset="keep")
    apart, linked = read_audio(tmp_path / "apart.wav")[0], read_audio(tmp_path / "linked.wav")[0]

    port = free_udp_port()
    env = dict(os.environ, JACK_DEFAULT_SERVER=jack_server.name, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hushbridge", "run", "--backend", "jack", "--name", "hbmics", "--preset", "dialogue",
         "--per-channel", "--automix", "--channels", "2", "--osc-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    rig = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)

    def ask(address):
        for _ in range(40):
            sock.sendto(osc("/hb/get", address), ("127.0.0.1", port))
            try:
                while True:  # past what else the server says to us (/hb/preset/loaded)
                    reply = OscMessage(sock.recvfrom(65536)[0])
                    if reply.address in ("/hb/value", "/hb/error"):
                        return reply
            except socket.timeout:
                continue
        return None

    try:
        wait_for_jack_ports(jack_server.name, "hbmics", ["in_2", "out_2"], proc)
        latency = ask("/hb/engine/latency_samples")
        assert latency is not None, proc.stderr.read() if proc.poll() is not None else "no OSC reply"
        latency = int(latency.params[1])
        assert ask("/hb/automix/range_db").params[1] == 24.0
        rig = JackRigProcess(2, names=("hbmics-player", "hbmics-recorder"))
        rig.connect(["hbmics:in_1", "hbmics:in_2"], ["hbmics:out_1", "hbmics:out_2"])
        live, _ = rig.take(mics, extra=latency)
        live = np.nan_to_num(live[:, latency:latency + mics.shape[1]])
        # a preset loaded live keeps the automixer first
        sock.sendto(osc("/hb/preset/load", "podcast"), ("127.0.0.1", port))
        time.sleep(1.0)
        kept = ask("/hb/automix/range_db")
    finally:
        sock.close()
        if rig is not None:
            rig.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "each channel through a chain of its own" in err
    assert kept is not None and kept.address == "/hb/value" and kept.params[1] == 24.0

    def level(y, c, start):  # the last turn of speaker c + 1 (the engine had only silence before)
        seg = y[c, int((6.0 + start + 0.2) * sr):int((6.0 + start + 0.8) * sr)].astype(np.float64)
        return 10 * np.log10(np.mean(seg ** 2))

    for c, start in ((0, 0.0), (1, 1.0)):
        assert abs(level(live, c, start) - level(apart, c, start)) < 1.5, (c, level(live, c, start), level(apart, c, start))
    assert level(apart, 1, 1.0) > level(linked, 1, 1.0) + 6.0  # linked, the loud speaker's gain held mic 2 down


def test_run_automix_takes_set_and_a_preset_loaded_live_keeps_it_as_last_set():
    """Review, session 24: `run --automix --set automix.bypass=on` was refused (process's
    message), and the automixer put into a preset loaded live took the values the audio thread
    had applied, losing a change sent just before the load, and its bypass."""
    import argparse

    import numpy as np

    from hushbridge.cli import _automix_keeper, _build_chain
    from hushbridge.effects import Automix
    from hushbridge.engine import Engine

    args = argparse.Namespace(chain=None, preset="podcast", set=["automix.bypass=on", "automix.range_db=12"],
                              automix=True)
    chain = _build_chain(args, first=Automix())
    assert chain.ids[0] == "automix" and chain.is_bypassed("automix") and chain["automix"].range_db == 12.0
    engine = Engine(chain, channels=2, per_channel=True)
    engine.add_chain_filter(_automix_keeper(engine))
    engine.prepare(48000, 128)
    x = np.zeros((2, 128), np.float32)
    engine.process(x, x.copy())
    engine.set("/hb/automix/range_db", 18.0)  # not applied by the audio thread before the load
    engine.load_preset("dialogue")
    engine.process(x, x.copy())
    assert engine.chain.ids[:2] == ["automix", "highpass"]
    assert engine.chain["automix"].range_db == 18.0 and engine.chain.is_bypassed("automix")
    engine.set("/hb/automix/bypass", 0.0)
    engine.load_preset("podcast")
    engine.process(x, x.copy())
    assert not engine.chain.is_bypassed("automix") and engine.get("/hb/automix/range_db") == 18.0


def test_run_automix_with_a_duck_shares_the_gain_among_the_voices_only():
    """`run --automix --duck 2 --channels 3`: the bed (channel 3) is not a microphone; a loud
    bed took a quiet voice's gain (QA, session 31). Kept when a preset is loaded live."""
    import argparse

    import numpy as np

    from hushbridge.cli import _automix_keeper, _build_chain, _duck_bed, _duck_keeper
    from hushbridge.effects import Automix, Duck
    from hushbridge.engine import Engine

    args = argparse.Namespace(chain=None, preset="podcast", set=[], automix=True)
    chain = _build_chain(args, first=Automix(), last=Duck(voices=2))
    _duck_bed(chain, 2, 3)
    assert chain["automix"].mics == 2
    engine = Engine(chain, channels=3, per_channel=True)
    engine.add_chain_filter(_automix_keeper(engine))
    engine.add_chain_filter(_duck_keeper(engine, 2))
    engine.prepare(48000, 128)
    assert engine.get("/hb/automix/mics") == 2.0
    engine.load_preset("dialogue")
    x = np.zeros((3, 128), np.float32)
    engine.process(x, x.copy())
    assert engine.chain.ids[0] == "automix" and engine.get("/hb/automix/mics") == 2.0


@pytest.mark.jack
def test_run_duck_lowers_the_bed_under_the_voice_and_leaves_it_uncleaned(jack_server):
    """A streamer's mic on channel 1 and stereo music on 2-3: `run --duck` cleans the mic alone
    and lowers the music by the duck's depth while the mic talks; otherwise the music comes out
    as it went in (delayed by the chain's latency), not through the voice's chain."""
    import numpy as np
    from helpers import JackRigProcess, wait_for_jack_ports

    sr = 48000
    t = np.arange(int(4.0 * sr)) / sr
    voice = 0.2 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t)) * ((t >= 1.5) & (t < 2.5))
    music = np.stack([0.05 * np.sin(2 * np.pi * 440 * t), 0.05 * np.sin(2 * np.pi * 550 * t)])
    x = np.vstack([voice, music]).astype(np.float32)
    port = free_udp_port()
    env = dict(os.environ, JACK_DEFAULT_SERVER=jack_server.name, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hushbridge", "run", "--backend", "jack", "--name", "hbduck", "--preset", "podcast",
         "--channels", "3", "--duck", "--set", "duck.depth_db=15", "--osc-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    rig = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    try:
        wait_for_jack_ports(jack_server.name, "hbduck", ["in_3", "out_3"], proc)
        latency = None
        for _ in range(40):
            sock.sendto(osc("/hb/get", "/hb/engine/latency_samples"), ("127.0.0.1", port))
            try:
                latency = int(OscMessage(sock.recvfrom(65536)[0]).params[1])
                break
            except socket.timeout:
                continue
        assert latency is not None, proc.stderr.read() if proc.poll() is not None else "no OSC reply"
        rig = JackRigProcess(3, names=("hbduck-player", "hbduck-recorder"))
        rig.connect([f"hbduck:in_{c}" for c in (1, 2, 3)], [f"hbduck:out_{c}" for c in (1, 2, 3)])
        log0 = jack_server.log_size()
        y, _ = rig.take(x, extra=latency)
        late = jack_server.late_clients(log0)
        y = np.nan_to_num(y[:, latency:latency + x.shape[1]])
        # a preset loaded live keeps the ducker as it was set, and the bed out of the new cleanup
        sock.sendto(osc("/hb/preset/load", "stream"), ("127.0.0.1", port))
        time.sleep(1.5)
        kept = {}
        for address in ("/hb/duck/depth_db", "/hb/denoise@2/bypass", "/hb/denoise@1/bypass"):
            sock.sendto(osc("/hb/get", address), ("127.0.0.1", port))
            while address not in kept:
                reply = OscMessage(sock.recvfrom(65536)[0])
                if reply.address == "/hb/value" and reply.params[0] == address:
                    kept[address] = reply.params[1]
    finally:
        sock.close()
        if rig is not None:
            rig.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "ducking channels 2-3 under channel 1" in err
    assert kept == {"/hb/duck/depth_db": 15.0, "/hb/denoise@2/bypass": 1.0, "/hb/denoise@1/bypass": 0.0}

    def cut_db(c, a, b):
        s = slice(int(a * sr), int(b * sr))
        return 10 * np.log10(np.mean(y[c, s].astype(np.float64) ** 2) / np.mean(x[c, s].astype(np.float64) ** 2))

    for c in (1, 2):
        assert abs(cut_db(c, 0.5, 1.4)) < 0.1, c  # before the voice: the music as it was
        assert abs(cut_db(c, 2.0, 2.45) + 15.0) < 0.5, c  # under the voice: 15 dB down
        # the music skipped the podcast chain (its high-pass, EQ and leveler would change it),
        # sample for sample where no client was late (an xrun shifts what the rig heard)
        s = slice(int(0.5 * sr), int(1.4 * sr))
        assert late or np.max(np.abs(y[c, s] - x[c, s])) < 1e-6, c
    assert cut_db(0, 2.0, 2.45) != pytest.approx(0.0, abs=0.05)  # the voice went through the chain


@pytest.mark.jack
def test_latency_measures_the_round_trip_through_a_running_engine(jack_server):
    """`hushbridge latency` through `run --chain gain,limiter`: the limiter's 72-sample look-ahead,
    exactly, on every sweep; a port that is not there is a clear error."""
    import json as _json

    from helpers import wait_for_jack_ports

    env = dict(os.environ, JACK_DEFAULT_SERVER=jack_server.name, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "hushbridge", "run", "--backend", "jack", "--name", "hblat",
                             "--chain", "gain,limiter", "--channels", "1", "--no-osc"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert wait_for_jack_ports(jack_server.name, "hblat", ["in_1", "out_1"], proc)
        for _ in range(3):  # the measuring clients refuse a take with xruns in it: measure again
            r = subprocess.run([sys.executable, "-m", "hushbridge", "latency", "--send", "hblat:in_1", "--return",
                                "hblat:out_1", "--json"], capture_output=True, text=True, env=env, timeout=120)
            if "missed" not in r.stderr:
                break
        bad = subprocess.run([sys.executable, "-m", "hushbridge", "latency", "--send", "nowhere:in_1", "--return",
                              "hblat:out_1"], capture_output=True, text=True, env=env, timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    if r.returncode != 0 and "missed" in r.stderr and not jack_server.realtime:
        pytest.skip(f"xruns in three takes on a server without realtime scheduling: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    trip = _json.loads(r.stdout)
    assert trip["samples"] == 72 and trip["delays"] == [72, 72, 72] and trip["match"] > 0.99
    assert bad.returncode != 0 and "cannot connect the test ports" in bad.stderr
