"""Shared test helpers: JACK test clients that play and record against sample-frame time.

Feed the engine from one client (:class:`JackPlayer`) and record it with another
(:class:`JackRecorder`): a single client that both feeds and records closes a loop, which JACK may
resolve a period late (DESIGN.md section 7). Both clients address the signal by absolute JACK
frame time (``client.last_frame_time`` in their process callbacks), so with the same
``start_frame`` the recording's index ``i`` is the frame at which the player's sample ``i`` went
out, and the through-delay is read off exactly.
"""
from __future__ import annotations

import time

import numpy as np

from hushbridge.io.jack import address_of, cycle_calls


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def wait_until(predicate, timeout: float = 2.0, interval: float = 0.005) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(interval)


def find_delay(reference: np.ndarray, recording: np.ndarray, max_lag: int) -> int:
    """Lag (samples, ``0..max_lag``) at which ``recording`` best matches ``reference`` (1-D),
    by normalised cross-correlation. Use a broadband reference (noise, impulses)."""
    n = len(reference)
    best, best_lag = -np.inf, -1
    ref = reference.astype(np.float64)
    for lag in range(max_lag + 1):
        seg = recording[lag:lag + n].astype(np.float64)
        if len(seg) < n:
            break
        denom = np.sqrt(np.dot(seg, seg) * np.dot(ref, ref))
        score = np.dot(seg, ref) / denom if denom > 0 else -np.inf
        if score > best:
            best, best_lag = score, lag
    return best_lag


class _FrameClient:
    """A JACK client whose process callback sees absolute frame time."""

    def __init__(self, name: str, channels: int, *, output: bool, server: str | None = None) -> None:
        import jack

        self.client = jack.Client(name, no_start_server=True, servername=server)
        ports = self.client.outports if output else self.client.inports
        prefix = "out" if output else "in"
        self.ports = [ports.register(f"{prefix}_{k + 1}") for k in range(channels)]
        self.channels = channels
        self.cycles = 0
        # the engine's GIL-holding libjack calls: a player and a recorder in one process would
        # otherwise wait for each other's GIL at every cffi call and miss cycles themselves
        self._calls = cycle_calls()
        if self._calls is not None:
            self._client_address = address_of(self.client._ptr)
            self._port_addresses = [address_of(p._ptr) for p in self.ports]
        self._scratch = np.zeros((channels, 1 << 14), dtype=np.float32)
        self.client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        raise NotImplementedError

    def _frame_time(self) -> int:
        calls = self._calls
        return calls.last_frame_time(self._client_address) if calls is not None else self.client.last_frame_time

    def _read(self, k: int, frames: int) -> np.ndarray:
        """Port ``k``'s buffer of this cycle (a copy, valid until the next call)."""
        calls = self._calls
        if calls is None:
            return self.ports[k].get_array()
        row = self._scratch[k, :frames]
        calls.memcpy(row.ctypes.data, calls.get_buffer(self._port_addresses[k], frames), frames * 4)
        return row

    def _write(self, k: int, frames: int, row: np.ndarray) -> None:
        calls = self._calls
        if calls is None:
            self.ports[k].get_array()[:] = row
        else:
            calls.memcpy(calls.get_buffer(self._port_addresses[k], frames), row.ctypes.data, frames * 4)

    def now(self) -> int:
        """The current JACK frame time (estimated, from a non-RT thread)."""
        return int(self.client.frame_time)

    def activate(self) -> None:
        self.client.activate()

    def connect_to(self, other_ports: list[str]) -> None:
        """Connect port k of this client with ``other_ports[k]`` (direction by port kind)."""
        for mine, other in zip(self.ports, other_ports):
            if mine.is_output:
                self.client.connect(mine, other)
            else:
                self.client.connect(other, mine)

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JackPlayer(_FrameClient):
    """Plays ``signal`` (channels, n) float32 from absolute JACK frame ``start``; silence otherwise."""

    def __init__(self, name: str = "hb-player", channels: int = 2, server: str | None = None) -> None:
        self._job: tuple[np.ndarray, int] | None = None
        super().__init__(name, channels, output=True, server=server)

    def play(self, signal: np.ndarray, start: int) -> None:
        signal = np.ascontiguousarray(np.atleast_2d(signal), dtype=np.float32)
        if signal.shape[0] != self.channels:
            raise ValueError(f"signal has {signal.shape[0]} channels, player {self.channels}")
        self._job = (signal, int(start))

    def _process(self, frames: int) -> None:
        self.cycles += 1
        job = self._job
        t = self._frame_time()
        for k in range(self.channels):
            buf = self._scratch[k, :frames]
            buf.fill(0.0)
            if job is not None:
                sig, start = job
                off = t - start
                a, b = max(off, 0), min(off + frames, sig.shape[1])
                if a < b:
                    buf[a - off:b - off] = sig[k, a:b]
            self._write(k, frames, buf)


class JackRecorder(_FrameClient):
    """Records ``n`` frames from absolute JACK frame ``start`` into :attr:`data` (channels, n)."""

    def __init__(self, name: str = "hb-recorder", channels: int = 2, server: str | None = None) -> None:
        self._job: tuple[np.ndarray, int] | None = None
        self.frames_recorded = 0
        self.passed_end = False
        self.last_frames = 0
        super().__init__(name, channels, output=False, server=server)

    def record(self, n: int, start: int) -> None:
        self.frames_recorded = 0
        self.passed_end = False
        self._job = (np.full((self.channels, int(n)), np.nan, dtype=np.float32), int(start))

    @property
    def data(self) -> np.ndarray:
        return self._job[0]

    @property
    def done(self) -> bool:
        """Whether JACK time has passed the end of the recording window."""
        job = self._job
        return job is not None and self.passed_end

    @property
    def complete(self) -> bool:
        """Whether every frame of the window was recorded (an xrun can skip a cycle)."""
        job = self._job
        # a late cycle can be written twice and another skipped, so count the holes, not the frames
        return job is not None and self.frames_recorded >= job[0].shape[1] and not np.isnan(job[0]).any()

    def wait(self, timeout: float = 5.0, require_complete: bool = True) -> np.ndarray:
        """Wait until the window has passed; with ``require_complete`` every frame must have been
        recorded exactly once (missing frames are NaN otherwise)."""
        if not wait_until(lambda: self.done, timeout):
            raise TimeoutError(f"JACK time did not reach the end of the recording in {timeout} s")
        data = self.data
        if require_complete and not self.complete:
            missing = int(np.isnan(data).any(axis=0).sum())
            raise AssertionError(f"{missing} frames never recorded (an xrun skipped cycles)")
        return data

    def _process(self, frames: int) -> None:
        self.cycles += 1
        self.last_frames = frames
        job = self._job
        if job is None:
            return
        data, start = job
        t = self._frame_time()
        off = t - start
        a, b = max(off, 0), min(off + frames, data.shape[1])
        if a < b:
            for k in range(self.channels):
                data[k, a:b] = self._read(k, frames)[a - off:b - off]
            self.frames_recorded += b - a
        if off + frames >= data.shape[1]:
            self.passed_end = True


# == player and recorder in a child process ======================================================
class _ChildProcess:
    """A helper in a spawned child process, driven by messages on a pipe; the child's first
    message (its port names) is kept as ``hello``."""

    def __init__(self, target, args: tuple, what: str) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._what = what
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self._proc.start()
        if not self._conn.poll(20.0):
            self._proc.kill()
            raise TimeoutError(f"the {what} process did not start")
        self.hello = self._conn.recv()

    def _answer(self, timeout: float = 10.0):
        if not self._conn.poll(timeout):
            raise TimeoutError(f"the {self._what} process did not answer")
        return self._conn.recv()

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("close",))
                self._proc.join(5.0)
            except (BrokenPipeError, OSError):
                self._proc.kill()
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(2.0)


def _midi_sender_main(conn, server: str | None, client_name: str, port_name: str) -> None:
    """Child process: a JACK client with one MIDI output that writes events at given frame times."""
    from collections import deque

    import jack

    client = jack.Client(client_name, no_start_server=True, servername=server)
    port = client.midi_outports.register(port_name)
    schedule: deque[tuple[int, bytes]] = deque()  # (frame time, event), in frame order
    xruns = [0]

    def process(frames: int) -> None:
        port.clear_buffer()
        t0 = client.last_frame_time
        while schedule and schedule[0][0] < t0 + frames:
            frame, data = schedule.popleft()
            port.write_midi_event(max(0, frame - t0), data)  # late ones go out at the cycle start

    client.set_process_callback(process)
    client.set_xrun_callback(lambda delay: xruns.__setitem__(0, xruns[0] + 1))
    client.activate()
    conn.send(f"{client.name}:{port.shortname}")
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "send":
                last = schedule[-1][0] if schedule else 0
                schedule.append((max(client.frame_time, last), msg[1]))
            elif msg[0] == "every":  # n copies of an event, one per ``interval`` frames
                _, data, n, interval = msg
                start = max(client.frame_time + 1024, schedule[-1][0] if schedule else 0)
                for k in range(n):
                    schedule.append((start + k * interval, data))
                conn.send(("scheduled", start))
            elif msg[0] == "events":  # a list of events, one per ``interval`` frames
                _, events, interval = msg
                start = max(client.frame_time + 1024, schedule[-1][0] if schedule else 0)
                for k, data in enumerate(events):
                    schedule.append((start + k * interval, data))
                conn.send(("scheduled", start))
            elif msg[0] == "state":
                conn.send((len(schedule), xruns[0]))
            elif msg[0] == "close":
                break
    finally:
        client.deactivate()
        client.close()


class JackMidiSenderProcess(_ChildProcess):
    """A JACK MIDI output in a child process that writes events at exact frame times (like a
    DAW's clock), so its Python callback does not compete for the GIL with the MIDI input under
    test (two Python process callbacks in one process make xruns, and an xrun loses the events
    written in the skipped cycle).

    >>> out = JackMidiSenderProcess(server, "hb-clock")             # doctest: +SKIP
    >>> out.send_every(bytes([0xF8]), 96, 1000)                     # 120 BPM clock at 48 kHz
    """

    def __init__(self, server: str | None, client_name: str, port_name: str = "out") -> None:
        super().__init__(_midi_sender_main, (server, client_name, port_name), "JACK MIDI sender")
        self.port_name = self.hello

    def send(self, data: bytes) -> None:
        """Write ``data`` in the next cycle (after anything already scheduled)."""
        self._conn.send(("send", bytes(data)))

    def send_every(self, data: bytes, n: int, interval_frames: int) -> None:
        """Write ``data`` ``n`` times, ``interval_frames`` apart, starting shortly after now."""
        self._conn.send(("every", bytes(data), int(n), int(interval_frames)))
        self._answer()

    def send_events(self, events: list[bytes], interval_frames: int) -> None:
        """Write ``events`` in order, one per ``interval_frames``, starting shortly after now."""
        self._conn.send(("events", [bytes(e) for e in events], int(interval_frames)))
        self._answer()

    def state(self) -> tuple[int, int]:
        """(events still scheduled, xruns this client saw)."""
        self._conn.send(("state",))
        return self._answer()


def _rig_main(conn, channels: int, server: str | None, names: tuple[str, str]) -> None:
    """Child process: a JackPlayer and a JackRecorder driven by messages on ``conn``."""
    import sys

    sys.setswitchinterval(0.0002)  # as the engine does: its callbacks wait less for this thread's GIL
    player = JackPlayer(names[0], channels, server)
    recorder = JackRecorder(names[1], channels, server)
    player.activate()
    recorder.activate()
    conn.send(([p.name for p in player.ports], [p.name for p in recorder.ports]))
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "connect":
                player.connect_to(msg[1])
                recorder.connect_to(msg[2])
                conn.send("ok")
            elif msg[0] == "take":
                _, signal, extra, lead = msg
                start = player.now() + lead
                recorder.record(signal.shape[1] + extra, start)
                player.play(signal, start)
                conn.send(("started", start))
                seconds = (signal.shape[1] + extra + lead) / player.client.samplerate
                data = recorder.wait(timeout=10.0 + seconds, require_complete=False)
                conn.send(("done", data, recorder.complete))
            elif msg[0] == "close":
                break
    finally:
        player.close()
        recorder.close()


class JackRigProcess(_ChildProcess):
    """A :class:`JackPlayer` and a :class:`JackRecorder` in a child process, so their Python
    callbacks do not compete for the GIL with the JACK client under test.

    >>> rig = JackRigProcess(2)                                     # doctest: +SKIP
    >>> rig.connect(["engine:in_1", "engine:in_2"], ["engine:out_1", "engine:out_2"])
    >>> recording, complete = rig.take(signal)                      # (channels, n + extra)
    """

    def __init__(self, channels: int = 2, server: str | None = None,
                 names: tuple[str, str] = ("hb-player", "hb-recorder")) -> None:
        super().__init__(_rig_main, (channels, server, names), "JACK test-client")
        self.player_ports, self.recorder_ports = self.hello

    def connect(self, engine_inputs: list[str], engine_outputs: list[str]) -> None:
        """Player port k -> ``engine_inputs[k]``; ``engine_outputs[k]`` -> recorder port k."""
        self._conn.send(("connect", engine_inputs, engine_outputs))
        self._recv("ok")

    def take(self, signal: np.ndarray, extra: int = 1024, lead: int = 2400, during=None,
             now=None) -> tuple[np.ndarray, bool]:
        """Play ``signal`` (channels, n) from ``lead`` frames ahead and record ``n + extra`` frames
        aligned on the same JACK frame; returns (recording, complete). ``during()`` is called once
        a third of the signal has played (``now()`` gives JACK frame time in this process)."""
        signal = np.ascontiguousarray(signal, dtype=np.float32)
        self._conn.send(("take", signal, extra, lead))
        start = self._recv("started")[1]
        if during is not None:
            if now is None:
                raise ValueError("during= needs now= (a JACK frame-time source in this process)")
            wait_until(lambda: now() > start + signal.shape[1] // 3, 5.0)
            during()
        _, data, complete = self._recv("done", timeout=15.0 + (signal.shape[1] + extra + lead) / 48000)
        return data, complete

    def _recv(self, what: str, timeout: float = 15.0):
        if not self._conn.poll(timeout):
            raise TimeoutError(f"no {what!r} from the JACK test-client process")
        msg = self._conn.recv()
        tag = msg if isinstance(msg, str) else msg[0]
        if tag != what:
            raise RuntimeError(f"expected {what!r} from the JACK test-client process, got {msg!r}")
        return msg


class JackToolRig:
    """A player and a recorder that are JACK's own C example clients, ``jack_simple_client``
    (two sines, 0.2 peak: 240 Hz left and 720 Hz right at 48 kHz, periods of 200 and 200/3
    samples, so every :data:`WINDOW` samples hold whole periods of both) and ``jack_rec``: their
    cycles never wait for a Python interpreter lock. Under a control flood the Python rig's
    recorder, starved of its process's GIL, was late in most of the xruns a take saw; with these
    the engine under test is the only Python client in the graph.

    >>> rig = JackToolRig(server, "hb-fuzz", ["hb-fuzz:in_1", "hb-fuzz:in_2"])   # doctest: +SKIP
    >>> rec = rig.record(["hb-fuzz:out_1", "hb-fuzz:out_2"], seconds=6, path=tmp / "take.wav")
    >>> audio, overruns = rec.wait()                                         # (channels, frames)
    """

    WINDOW = 600
    PEAK = 0.2
    TOOLS = ("jack_simple_client", "jack_rec", "jack_connect")

    @classmethod
    def missing(cls) -> list[str]:
        import shutil

        return [t for t in cls.TOOLS if shutil.which(t) is None]

    def __init__(self, server: str, name: str, engine_inputs: list[str]) -> None:
        import subprocess

        self.server = server
        self.player = subprocess.Popen(["jack_simple_client", f"{name}-player", server],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ports = [f"{name}-player:output1", f"{name}-player:output2"]
        try:
            deadline = time.monotonic() + 10.0
            while True:  # the player's ports appear once it has activated
                done = [self._connect(a, b) for a, b in zip(ports, engine_inputs)]
                if all(done):
                    break
                if time.monotonic() > deadline or self.player.poll() is not None:
                    raise RuntimeError(f"jack_simple_client did not come up on {server!r}")
                time.sleep(0.1)
        except BaseException:
            self.close()
            raise

    def _connect(self, a: str, b: str) -> bool:
        import subprocess

        r = subprocess.run(["jack_connect", "-s", self.server, a, b], capture_output=True, text=True, timeout=10)
        return r.returncode == 0 or "already" in (r.stdout + r.stderr)

    def record(self, outputs: list[str], seconds: int, path) -> "_ToolTake":  # noqa: ANN001
        """Start ``jack_rec`` on ``outputs`` for ``seconds`` (whole seconds, its unit)."""
        return _ToolTake(self.server, outputs, seconds, str(path))

    def close(self) -> None:
        if self.player.poll() is None:
            self.player.terminate()
            try:
                self.player.wait(5)
            except Exception:  # noqa: BLE001
                self.player.kill()


class _ToolTake:
    def __init__(self, server: str, outputs: list[str], seconds: int, path: str) -> None:
        import os
        import subprocess

        self.path = path
        # a 5 s ring: its disk thread writes frame by frame and must never make the take lossy
        self.proc = subprocess.Popen(["jack_rec", "-f", path, "-d", str(int(seconds)), "-b", "24",
                                      "-B", str(5 * 48000), *outputs],
                                     env=dict(os.environ, JACK_DEFAULT_SERVER=server),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 30.0) -> tuple[np.ndarray, int]:
        """The recording (channels, frames) from its first non-zero sample on (jack_rec may take a
        cycle to connect) and how many samples its ring lost (overruns: the take is incomplete)."""
        import re

        import soundfile as sf

        try:
            _, err = self.proc.communicate(timeout=timeout)
        except BaseException:
            self.proc.kill()  # never left recording into the next test
            self.proc.communicate()
            raise
        lost = re.search(r"failed with (\d+) overruns", err or "")
        y, _ = sf.read(self.path, dtype="float32", always_2d=True)
        y = y.T
        sounding = np.flatnonzero(np.abs(y).max(axis=0) > 0)
        return (y[:, sounding[0]:] if len(sounding) else y[:, :0]), int(lost.group(1)) if lost else 0


# == a random MIDI byte stream (the MIDI fuzz) ====================================================
def fuzz_stream(seed: int, target: int = 5000) -> tuple[list[int], int]:
    """A random byte stream of valid messages (with running status and realtime bytes inside) and
    malformed pieces; returns the bytes and how many rejections the MIDI rules call for."""
    import random

    rng = random.Random(seed)
    data: list[int] = []
    expected = 0
    last_channel_status = 0  # running status in force for the next data bytes, or 0

    def data_bytes(n: int) -> list[int]:
        return [rng.randrange(128) for _ in range(n)]

    while len(data) < target:
        r = rng.random()
        if r < 0.35:  # channel message, sometimes with realtime bytes inside
            status = rng.choice([0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0]) | rng.randrange(16)
            n = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
            body = [status] + data_bytes(n)
            if rng.random() < 0.3:
                body.insert(rng.randrange(1, len(body) + 1), rng.choice([0xF8, 0xFA, 0xFB, 0xFC, 0xFE]))
            data += body
            last_channel_status = status
        elif r < 0.55 and last_channel_status:  # running status: data bytes only
            n = 1 if last_channel_status & 0xF0 in (0xC0, 0xD0) else 2
            data += data_bytes(n) * rng.randrange(1, 4)
        elif r < 0.6:  # a complete sysex: valid bytes, but rejected (no sysex protocol)
            data += [0xF0] + data_bytes(rng.randrange(0, 20)) + [0xF7]
            expected += 1
            last_channel_status = 0
        elif r < 0.65:  # stray sysex: started, interrupted by the next status byte
            data += [0xF0] + data_bytes(rng.randrange(0, 20))
            data += [0xF6]  # tune request: ends it, valid (ignored)
            expected += 1
            last_channel_status = 0
        elif r < 0.7:  # stray end of sysex
            data += [0xF7]
            expected += 1
            last_channel_status = 0
        elif r < 0.77:  # invalid data bytes: no running status in force
            data += [0xF6] + data_bytes(rng.randrange(1, 6))
            expected += 1
            last_channel_status = 0
        elif r < 0.84:  # a message cut short by the next status byte
            status = rng.choice([0x80, 0x90, 0xB0, 0xE0]) | rng.randrange(16)
            data += [status] + data_bytes(1) + [0xF6]
            expected += 1
            last_channel_status = 0
        elif r < 0.9:  # undefined status bytes
            data += [rng.choice([0xF4, 0xF5, 0xF9, 0xFD])]
            expected += 1
            if data[-1] in (0xF4, 0xF5):
                last_channel_status = 0
        elif r < 0.95:  # system common: song position, song select, MTC quarter frame
            data += rng.choice([[0xF2] + data_bytes(2), [0xF3] + data_bytes(1), [0xF1] + data_bytes(1)])
            last_channel_status = 0
        else:  # clock, start, stop
            data += [rng.choice([0xF8, 0xFA, 0xFC])]
    return data, expected


def shared_data_dir():
    """The real recordings of ../shared/data (read in place, never copied into the project).

    Looked up in $HUSHBRIDGE_SHARED_DATA, next to the checkout (../shared/data), then
    /work/shared/data; None when absent (tests that need it skip with a message).
    """
    import os
    from pathlib import Path

    candidates = [os.environ.get("HUSHBRIDGE_SHARED_DATA", ""),
                  str(Path(__file__).resolve().parents[1].parent / "shared" / "data"),
                  "/work/shared/data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def trivial_client_xruns(seconds: float, name: str = "hb-baseline") -> int:
    """Xruns the server reports in ``seconds`` while only a trivial copy-through client runs:
    tells machine load apart from xruns the engine causes (the 0-xrun tests compare against it)."""
    import time

    import jack

    client = jack.Client(name, no_start_server=True)
    count = [0]
    inp, out = client.inports.register("in_1"), client.outports.register("out_1")
    client.set_process_callback(lambda frames: out.get_array().__setitem__(slice(None), inp.get_array()))
    client.set_xrun_callback(lambda delay: count.__setitem__(0, count[0] + 1))
    client.activate()
    try:
        time.sleep(0.3)  # activation xruns
        count[0] = 0
        time.sleep(seconds)
        return count[0]
    finally:
        client.deactivate()
        client.close()


# == a JACK MIDI reader's process hook driven by hand ===================================================
class CycleHost:
    """Stands in for the engine's JACK client: a real server cannot be made to run a cycle twice
    on demand, so this drives the reader's process hook by hand with chosen frame times."""

    class _Client:
        last_frame_time = 0
        samplerate = 48000

    def __init__(self):
        self.client = self._Client()
        self.hooks = []

    def add_process_hook(self, hook):
        self.hooks.append(hook)

    def remove_process_hook(self, hook):
        self.hooks.remove(hook)


class _MidiBuffer:
    def __init__(self, events):
        self.events = events

    def incoming_midi_events(self):
        return iter(self.events)


def run_midi_cycle(host, rt, frame, events):
    host.client.last_frame_time = frame
    rt._port = _MidiBuffer([(off, bytes(b)) for off, b in events])
    host.hooks[0](128)


def read_midi(rt):
    out = []
    while (m := rt.get_message()) is not None:
        out.append(m[0])
    return out


def wait_for_jack_ports(server: str, client: str, ports: list[str], proc, timeout: float = 60.0) -> bool:
    """Wait until JACK client ``client`` (started by ``proc``, a `hushbridge run`) has ``ports``
    (short names, e.g. ``["in_2", "out_2"]``); False when ``proc`` exits or time runs out."""
    import jack

    probe = jack.Client(f"{client}-probe", no_start_server=True, servername=server)
    try:
        want = {f"{client}:{p}" for p in ports}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if want <= {p.name for p in probe.get_ports(f"{client}:")}:
                return True
            time.sleep(0.2)
        return False
    finally:
        probe.close()
