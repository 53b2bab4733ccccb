"""Recording a live engine (hushbridge.record): aligned raw and cleaned takes, names that never
overwrite, parts past a size, a stalled disk, OSC control, and a take that survives ``kill -9``."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_message import OscMessage

from hushbridge.control.osc import OscServer, encode
from hushbridge.effects import Chain, Gain, Limiter
from hushbridge.engine import Engine
from hushbridge.errors import RecordingError
from hushbridge.record import Recorder

SR = 48000


def engine_with_latency(channels: int = 2) -> Engine:
    e = Engine(Chain([Gain(), Limiter()]), channels=channels)
    e.prepare(SR, 1024)
    assert e.latency_samples > 0  # the limiter's look-ahead: what the take must compensate
    return e


def noise(seconds: float, channels: int = 2, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((channels, int(seconds * SR))) * 0.05
    return x.astype(np.float32)


class Feed:
    """Runs blocks of ``x`` through the engine as a driver would, in blocks of varied size."""

    def __init__(self, engine: Engine, x: np.ndarray, seed: int = 2) -> None:
        self.engine, self.x = engine, x
        self.out = np.zeros_like(x)
        self.pos = 0
        self.rng = np.random.default_rng(seed)

    def run(self, frames: int, pace: float = 0.0, realtime: bool = False) -> int:
        """Process ``frames`` more (sleeping ``pace`` s after each block, or as long as the block
        lasts); returns the position where they started."""
        start, end = self.pos, self.pos + frames
        while self.pos < end:
            n = min(int(self.rng.integers(1, 1001)), end - self.pos)
            self.engine.process(self.x[:, self.pos:self.pos + n], self.out[:, self.pos:self.pos + n])
            self.pos += n
            if pace or realtime:
                time.sleep(n / SR if realtime else pace)
        return start


def finish(rec: Recorder, feed: Feed) -> None:
    """Stop the take while audio goes on (the output runs for the latency after the stop)."""
    stopper = threading.Thread(target=rec.stop)
    stopper.start()
    while stopper.is_alive():
        feed.run(256, pace=0.001)
    stopper.join()


def one_take(rec: Recorder, feed: Feed, frames: int, before: int = 0):
    """Start a take after ``before`` frames, play ``frames`` into it, stop it while audio goes on,
    close the recorder; returns (take, first frame, end frame) of the take in ``feed``'s signal."""
    try:
        feed.run(before)
        take = rec.start()
        s0 = feed.run(frames)
        s1 = feed.pos
        finish(rec, feed)
    finally:
        rec.close()
    return take, s0, s1


def read(path) -> np.ndarray:
    return sf.read(path, dtype="float32", always_2d=True)[0].T


def unaccounted_bytes(path) -> int:
    """Bytes of audio in a WAV file beyond what its header says (so what a strict reader, one
    that believes the RIFF and data sizes, would not play). libsndfile itself reads a header that
    says 0 as "to the end of the file", so it cannot tell."""
    import struct

    data = open(path, "rb").read()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] + 8 <= len(data)
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if tag == b"data":
            return len(data) - (pos + 8) - size
        pos += 8 + size + (size & 1)
    raise AssertionError(f"{path}: no data chunk")


def test_a_take_lines_the_cleaned_file_up_with_the_raw_one_sample_for_sample(tmp_path):
    e = engine_with_latency()
    rec = Recorder(tmp_path / "ep.wav", raw=True, subtype="FLOAT")
    rec.attach(e)
    feed = Feed(e, noise(4.0))
    take, s0, s1 = one_take(rec, feed, SR * 2 + 777, before=5000)
    assert take.finished and not take.error and take.lost_frames == 0
    assert take.paths == [tmp_path / "ep.wav"] and take.raw_paths == [tmp_path / "ep-raw.wav"]
    L = take.latency
    assert L == e.latency_samples
    raw, cleaned = read(take.raw_paths[0]), read(take.paths[0])
    assert raw.shape == cleaned.shape == (2, s1 - s0) and take.frames == s1 - s0
    np.testing.assert_array_equal(raw, feed.x[:, s0:s1])  # what came in during the take
    np.testing.assert_array_equal(cleaned, feed.out[:, s0 + L:s1 + L])  # its cleaned version, aligned
    with sf.SoundFile(take.paths[0]) as f:
        assert "latency compensated" in f.comment and f.software.startswith("hushbridge")


def test_pcm_formats_round_within_a_step_and_the_output_alone_needs_no_raw(tmp_path):
    e = engine_with_latency(channels=1)
    rec = Recorder(tmp_path / "x.wav", subtype="PCM_24")
    rec.attach(e)
    feed = Feed(e, noise(2.0, channels=1))
    take, s0, _ = one_take(rec, feed, SR)
    assert take.raw_paths == [] and sf.info(take.paths[0]).subtype == "PCM_24"
    got = read(take.paths[0])
    want = feed.out[:, s0 + take.latency:s0 + take.latency + SR]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1.5 / 2**23  # rounded with ±1 step of TPDF dither


def test_takes_never_replace_a_file_and_a_folder_names_them_by_time(tmp_path):
    (tmp_path / "ep.wav").write_bytes(b"an earlier take")
    e = engine_with_latency()
    rec = Recorder(tmp_path / "ep.wav", raw=True)
    rec.attach(e)
    feed = Feed(e, noise(3.0))
    try:
        first = rec.start()
        with pytest.raises(RecordingError, match="already recording"):
            rec.start()
        feed.run(4800)
        finish(rec, feed)
        second = rec.start()
        feed.run(4800)
        finish(rec, feed)
    finally:
        rec.close()
    assert (tmp_path / "ep.wav").read_bytes() == b"an earlier take"
    assert first.paths == [tmp_path / "ep-2.wav"] and first.raw_paths == [tmp_path / "ep-2-raw.wav"]
    assert second.paths == [tmp_path / "ep-3.wav"]
    assert rec.takes == (first, second)  # `run` names them all when it stops

    def one_take(rec):
        rec.attach(e)
        try:
            take = rec.start()
            feed.pos = 0
            feed.run(4800)
            finish(rec, feed)
        finally:
            rec.close()
        return take

    upper = one_take(Recorder(tmp_path / "Episode.WAV", raw=True))  # the name as spelled (QA, session 30)
    assert upper.paths == [tmp_path / "Episode.WAV"] and upper.raw_paths == [tmp_path / "Episode-raw.WAV"]
    folder = tmp_path / "takes"
    folder.mkdir()
    take = one_take(Recorder(folder))
    assert take.paths[0].parent == folder and take.paths[0].name.startswith("hushbridge-20")
    with pytest.raises(RecordingError, match="WAV"):
        Recorder(tmp_path / "ep.flac")
    with pytest.raises(RecordingError, match="does not exist"):
        Recorder(tmp_path / "nowhere" / "ep.wav")


def test_a_long_take_goes_on_in_parts_without_losing_a_sample(tmp_path):
    e = engine_with_latency()
    rec = Recorder(tmp_path / "long.wav", raw=True, subtype="FLOAT", split_bytes=150_000)
    rec.attach(e)
    feed = Feed(e, noise(3.0))
    take, s0, s1 = one_take(rec, feed, SR)
    assert len(take.paths) == len(take.raw_paths) >= 3
    assert take.paths[1] == tmp_path / "long-part2.wav" and take.raw_paths[1] == tmp_path / "long-raw-part2.wav"
    assert all(os.path.getsize(p) <= 150_000 for p in take.paths + take.raw_paths)
    raw = np.concatenate([read(p) for p in take.raw_paths], axis=1)
    cleaned = np.concatenate([read(p) for p in take.paths], axis=1)
    np.testing.assert_array_equal(raw, feed.x[:, s0:s1])
    np.testing.assert_array_equal(cleaned, feed.out[:, s0 + take.latency:s1 + take.latency])


def test_a_stalled_disk_loses_blocks_as_counted_silence_and_the_rest_keeps_its_time(tmp_path, monkeypatch):
    """The writer stalls 1.5 s (a disk that hangs) while the audio thread goes on: the ring
    (its smallest, 0.68 s) fills, later blocks are lost and counted, and once the disk is back
    they are silence of their length, so everything after is at its true time."""
    e = engine_with_latency()
    rec = Recorder(tmp_path / "stall.wav", raw=True, subtype="FLOAT", buffer_s=0.1)
    stalled = threading.Event()
    append = Recorder._append

    def slow_disk(self, i, block, take):
        if not stalled.is_set():
            stalled.set()
            time.sleep(1.5)
        append(self, i, block, take)

    monkeypatch.setattr(Recorder, "_append", slow_disk)
    rec.attach(e)
    feed = Feed(e, noise(6.0))
    try:
        take = rec.start()
        s0 = feed.run(int(2.5 * SR), realtime=True)
        s1 = feed.pos
        finish(rec, feed)
    finally:
        rec.close()
    assert take.lost_frames > 0 and not take.error
    raw, cleaned = read(take.raw_paths[0]), read(take.paths[0])
    assert raw.shape == cleaned.shape == (2, s1 - s0)  # the take keeps its length
    want_raw, want_cleaned = feed.x[:, s0:s1], feed.out[:, s0 + take.latency:s1 + take.latency]
    kept_raw, kept_cleaned = np.all(raw == want_raw, axis=0), np.all(cleaned == want_cleaned, axis=0)
    # every frame is itself at its own time, or lost as silence
    assert np.all(kept_raw | np.all(raw == 0, axis=0)) and np.all(kept_cleaned | np.all(cleaned == 0, axis=0))
    L = take.latency  # a lost instant's output is the cleaned version of the input L earlier
    assert np.array_equal(kept_cleaned[:-L], kept_raw[L:])
    assert int(np.count_nonzero(~kept_raw)) == take.lost_frames
    assert kept_raw[-SR // 2:].all()  # after the stall, recording goes on


def test_osc_starts_stops_and_reports_takes(tmp_path):
    e = engine_with_latency()
    rec = Recorder(tmp_path, raw=True)
    stop = threading.Event()

    def driver():
        x, out = noise(0.1), np.zeros((2, 128), np.float32)
        i = 0
        while not stop.is_set():
            e.process(x[:, i:i + 128], out)
            i = (i + 128) % (x.shape[1] - 128)
            time.sleep(128 / SR)

    server = OscServer(e, port=0)
    server.controller.set_recorder(rec)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    thread = threading.Thread(target=driver, daemon=True)

    def ask(address, *args):
        sock.sendto(encode(address, list(args)), ("127.0.0.1", server.port))
        return OscMessage(sock.recvfrom(65536)[0])

    try:
        rec.attach(e)
        thread.start()
        server.start()
        assert ask("/hb/record/status").params == ["armed", 0.0, "", 0.0, ""]
        started = ask("/hb/record/start")
        assert started.address == "/hb/record/status" and started.params[0] == "recording"
        assert started.params[2].startswith(str(tmp_path / "hushbridge-"))
        time.sleep(0.5)
        again = ask("/hb/record/start")
        assert again.address == "/hb/error" and "already recording" in again.params[0]
        wrong = ask("/hb/record/start", "/etc/passwd.wav")
        assert wrong.address == "/hb/error" and "no arguments" in wrong.params[0]
        stopped = ask("/hb/record/stop")
        assert stopped.params[0] == "stopped" and 0.3 < stopped.params[1] < 3.0
        assert ask("/hb/record/stop").params[0].endswith("not recording")
    finally:
        server.close()
        stop.set()
        thread.join()
        rec.close()
        sock.close()
    path = stopped.params[2]
    assert sf.info(path).frames == round(stopped.params[1] * SR)
    assert sf.info(path.replace(".wav", "-raw.wav")).frames == sf.info(path).frames
    bare = OscServer(Engine(Chain([Gain()]), channels=1), port=0).controller
    [reply] = bare.handle_datagram(encode("/hb/record/start", []), ("127.0.0.1", 9))
    assert reply.address == "/hb/error" and "--record" in reply.args[0]


@pytest.mark.jack
def test_a_take_survives_kill_9(jack_server, tmp_path):
    """`run --record` killed with SIGKILL mid-take: both files are complete WAVs holding what was
    played, the cleaned one aligned with the raw one, up to the last moments before the kill."""
    from helpers import JackRigProcess, wait_for_jack_ports

    env = dict(os.environ, JACK_DEFAULT_SERVER=jack_server.name, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hushbridge", "run", "--backend", "jack", "--name", "hbrec", "--chain", "gain,limiter",
         "--channels", "2", "--no-osc", "--record", str(tmp_path / "take.wav"), "--record-raw",
         "--record-format", "FLOAT"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    rig = None
    try:
        assert wait_for_jack_ports(jack_server.name, "hbrec", ["in_2", "out_2"], proc), proc.stderr.read()
        rig = JackRigProcess(2, names=("hbrec-player", "hbrec-recorder"))
        rig.connect(["hbrec:in_1", "hbrec:in_2"], ["hbrec:out_1", "hbrec:out_2"])
        log0 = jack_server.log_size()
        t = np.arange(3 * SR) / SR
        played = np.stack([0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t),
                           0.1 * np.random.default_rng(3).standard_normal(t.size)]).astype(np.float32)
        rig.take(played)
        late = jack_server.late_clients(log0)  # an xrun can shift what the engine heard of the player
        time.sleep(0.5)  # the writer's period is 50 ms: what is older than that is on disk
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if rig is not None:
            rig.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    for name in ("take.wav", "take-raw.wav"):  # the header is current: at most a write (50 ms) behind
        assert 0 <= unaccounted_bytes(tmp_path / name) <= 2 * 4 * SR // 10, name
    raw, cleaned = read(tmp_path / "take-raw.wav"), read(tmp_path / "take.wav")
    assert raw.shape[1] > played.shape[1]
    # where the played signal starts in the raw file: its first nonzero sample
    start = int(np.flatnonzero(np.abs(raw[1]) > 0)[0])
    heard = raw[:, start:start + played.shape[1]]
    if not late:  # the engine heard exactly what was played
        np.testing.assert_array_equal(heard, played)
    else:  # a late client: the engine heard it shifted or in part; all of it is in the file all the same
        assert abs(10 * np.log10(np.mean(heard.astype(np.float64) ** 2) / np.mean(played.astype(np.float64) ** 2))) < 1.0
    n = min(cleaned.shape[1] - start, played.shape[1])
    assert n > played.shape[1] - SR // 10  # at most the last 0.1 s before the kill is missing
    # the cleaned file is sample-aligned with the raw one (gain 0 dB; the limiter never acts at
    # 0.3): each callback's input and output, whatever the other clients did
    np.testing.assert_allclose(cleaned[:, start:start + n], raw[:, start:start + n], atol=1e-6)


def test_a_failing_disk_ends_the_take_with_the_reason_and_keeps_what_was_written(tmp_path):
    """The file system refuses the file past 300 kB (RLIMIT_FSIZE, in a child process: a full
    disk as the process sees it): the take ends with libsndfile's reason, the audio goes on,
    and the file keeps every sample written before, with a header that says so."""
    script = f"""
import resource, signal, time, numpy as np
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from hushbridge.effects import Chain, Gain
from hushbridge.engine import Engine
from hushbridge.record import Recorder
e = Engine(Chain([Gain()]), channels=2); e.prepare(48000, 128)
rec = Recorder({str(tmp_path / 'full.wav')!r}, subtype="FLOAT")
rec.attach(e)
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
x = np.full((2, 128), 0.25, np.float32); out = np.zeros_like(x)
take = rec.start()
for i in range(1500):  # 4 s
    e.process(x, out)
    time.sleep(128 / 48000)
assert np.all(out == x), "the audio stopped"
print(rec.recording, repr(take.error))
rec.close()
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("False") and "File too large" in r.stdout
    assert 0 <= unaccounted_bytes(tmp_path / "full.wav") < 8  # at most a torn last frame, not counted
    got = read(tmp_path / "full.wav")
    assert 0.3 * SR < got.shape[1] <= 300_000 // 8 and np.all(got == 0.25)


def test_run_refuses_record_options_it_cannot_honour(tmp_path):
    for args, says in ((["--record-raw"], "go with --record"), (["--record", str(tmp_path / "x.flac")], "WAV files"),
                       (["--record", str(tmp_path / "no" / "x.wav")], "does not exist")):
        r = subprocess.run([sys.executable, "-m", "hushbridge", "run", "--no-osc", *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)


def test_every_file_and_part_carries_its_time_of_day_for_editors(tmp_path):
    """Broadcast WAV ``bext``: each file's TimeReference is its first sample's count since
    midnight (local), so an editor places raw, cleaned and every part where they belong."""
    import struct

    from hushbridge.io.metadata import wav_chunks

    e = engine_with_latency()
    rec = Recorder(tmp_path / "day.wav", raw=True, subtype="FLOAT", split_bytes=150_000)
    rec.attach(e)
    take, _, _ = one_take(rec, Feed(e, noise(2.0)), SR)
    midnight = take.started.replace(hour=0, minute=0, second=0, microsecond=0)
    start = round((take.started - midnight).total_seconds() * SR)
    for paths in (take.paths, take.raw_paths):
        before = 0
        for p in paths:
            [(_, bext)] = wav_chunks(p, (b"bext",))
            assert struct.unpack_from("<Q", bext, 338)[0] == start + before
            assert bext[256:266] == b"hushbridge" and bext[320:330] == take.started.strftime("%Y-%m-%d").encode()
            before += sf.info(p).frames
    assert b"raw input" in wav_chunks(take.raw_paths[0], (b"bext",))[0][1][:256]


def test_closing_while_the_disk_hangs_never_cuts_a_hole_in_the_take(tmp_path, monkeypatch):
    """close() gives up waiting for a hung disk with an error, and the writer alone finishes the
    files when the disk comes back: every frame at its own time (or lost as silence), none skipped."""
    e = engine_with_latency()
    rec = Recorder(tmp_path / "hang.wav", raw=True, subtype="FLOAT", buffer_s=0.1)
    calls = []
    append = Recorder._append

    def hanging_disk(self, i, block, take):
        calls.append(1)
        if len(calls) == 6:
            time.sleep(1.5)
        append(self, i, block, take)

    monkeypatch.setattr(Recorder, "_append", hanging_disk)
    rec.attach(e)
    feed = Feed(e, noise(4.0))
    done = threading.Event()

    def play():
        while not done.is_set() and feed.pos < 3.5 * SR:
            feed.run(480, realtime=True)

    audio = threading.Thread(target=play)
    take = rec.start()
    s0 = 0
    audio.start()
    time.sleep(0.4)
    rec.close(timeout=0.3)  # while the disk hangs
    done.set()
    audio.join()
    assert "did not respond" in take.error
    deadline = time.monotonic() + 5
    while not take.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    assert take.finished
    raw, cleaned = read(take.raw_paths[0]), read(take.paths[0])
    assert raw.shape == cleaned.shape and raw.shape[1] > 0.3 * SR
    n = raw.shape[1]
    kept = np.all(raw == feed.x[:, s0:s0 + n], axis=0)
    assert np.all(kept | np.all(raw == 0, axis=0))
    assert np.all(np.all(cleaned == feed.out[:, take.latency:take.latency + n], axis=0) | np.all(cleaned == 0, axis=0))


def test_a_new_sample_rate_ends_the_take_at_the_old_one(tmp_path):
    e = engine_with_latency()
    rec = Recorder(tmp_path / "rate.wav", subtype="FLOAT")
    rec.attach(e)
    feed = Feed(e, noise(2.0))
    try:
        take = rec.start()
        feed.run(SR // 2)
        e.prepare(44100, 1024)  # JACK's sample-rate callback does this
        feed.run(SR // 2)
        deadline = time.monotonic() + 5
        while rec.recording and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        rec.close()
    assert take.finished and "sample rate changed to 44100 Hz" in take.error
    assert sf.info(take.paths[0]).samplerate == SR
    assert sf.info(take.paths[0]).frames == SR // 2 - take.latency  # only what came at 48 kHz


def test_a_name_whose_later_parts_exist_or_that_a_dangling_link_holds_is_skipped_whole(tmp_path):
    (tmp_path / "ep-part2.wav").write_bytes(b"part of an older take")
    (tmp_path / "ep-2-raw.wav").symlink_to(tmp_path / "nowhere.wav")  # exists() says no, O_EXCL says yes
    e = engine_with_latency()
    rec = Recorder(tmp_path / "ep.wav", raw=True)
    rec.attach(e)
    take, _, _ = one_take(rec, Feed(e, noise(1.0)), 4800)
    assert take.paths == [tmp_path / "ep-3.wav"] and take.raw_paths == [tmp_path / "ep-3-raw.wav"]
    assert not (tmp_path / "ep.wav").exists() and not (tmp_path / "ep-2.wav").exists()  # nothing left half-made
    with pytest.raises(ValueError, match="split_bytes"):
        Recorder(tmp_path / "x.wav", split_bytes=1000)
    with pytest.raises(RecordingError, match="no such folder"):
        Recorder(str(tmp_path / "newdir") + "/")
    rec2 = Recorder(tmp_path / "y.wav")
    rec3 = Recorder(tmp_path / "z.wav")
    rec2.attach(e)
    try:
        with pytest.raises(RecordingError, match="has a recorder already"):
            rec3.attach(e)
    finally:
        rec2.close()


def test_takes_follow_the_transport_one_file_each(tmp_path):
    """run --record-follow: Live's play starts a take (the Remote Script's /hb/host/transport over
    OSC), its stop ends it; the next play is a take of its own."""
    from hushbridge.control.osc import OscController
    from hushbridge.record import TransportFollower

    e = engine_with_latency()
    rec = Recorder(tmp_path / "show.wav")
    rec.attach(e)
    follower = TransportFollower(rec, e)
    ctl = OscController(e)
    live = ("127.0.0.1", 11000)
    stop = threading.Event()

    def audio():
        feed = Feed(e, noise(60.0))
        while not stop.is_set():
            feed.run(1024, realtime=True)

    driver = threading.Thread(target=audio)
    driver.start()
    try:
        takes = []
        for seconds in (0.6, 0.3):
            assert ctl.handle_datagram(encode("/hb/host/transport", [120.0, 1, 0.0]), live) == []
            deadline = time.monotonic() + 5
            while not rec.recording and time.monotonic() < deadline:
                time.sleep(0.01)
            assert rec.recording
            takes.append(rec.take)
            time.sleep(seconds)
            ctl.handle_datagram(encode("/hb/host/transport", [120.0, 0, 8.0]), live)
            deadline = time.monotonic() + 5
            while rec.recording and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not rec.recording
    finally:
        follower.close()
        stop.set()
        driver.join()
        rec.close()
    assert [t.paths[0].name for t in takes] == ["show.wav", "show-2.wav"]
    for take, seconds in zip(takes, (0.6, 0.3)):
        assert take.finished and not take.error and abs(take.seconds - seconds) < 0.25
    assert not follower.errors
    # `run` names every take when it stops, not only the last (QA, session 30)
    import io

    from rich.console import Console

    from hushbridge.cli import _print_take

    out = io.StringIO()
    _print_take(Console(file=out, width=300), rec)
    lines = out.getvalue().splitlines()
    assert lines[0] == "recorded 2 takes:" and [line.split(": ")[-1] for line in lines[1:]] == \
        [str(tmp_path / "show.wav"), str(tmp_path / "show-2.wav")]
