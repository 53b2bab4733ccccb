"""Session fixtures: a private JACK dummy server for the tests that need live audio."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import pytest

SAMPLE_RATE = 48000
BLOCK_SIZE = 128
_RT_REFUSED = ("cannot use real-time scheduling", "acquireselfrealtime error", "cannot lock down",
               "operation not permitted")


@dataclass
class JackServer:
    """A running ``jackd -d dummy`` started by the :func:`jack_server` fixture."""

    name: str
    realtime: bool
    sample_rate: int
    block_size: int
    process: subprocess.Popen = field(repr=False)
    log_path: str = field(repr=False)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def log_size(self) -> int:
        return os.path.getsize(self.log_path)

    def late_clients(self, since: int = 0) -> dict[str, int]:
        """Clients jackd named at its xruns after byte ``since`` of its log
        (:func:`hushbridge.io.jack.late_clients`)."""
        from hushbridge.io.jack import late_clients

        with open(self.log_path, "rb") as f:
            f.seek(since)
            return late_clients(f.read().decode(errors="replace"))

    def realtime_refused(self) -> bool:
        """Whether jackd has logged a refused real-time request (also for client threads)."""
        text = self.log().lower()
        return any(s in text for s in _RT_REFUSED)


def _start_jackd(name: str, realtime: bool, log_path: str) -> subprocess.Popen:
    cmd = ["jackd", "-n", name]
    cmd += ["-R", "-P", "70"] if realtime else ["--no-realtime"]
    cmd += ["-d", "dummy", "-r", str(SAMPLE_RATE), "-p", str(BLOCK_SIZE)]
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1", JACK_NO_START_SERVER="1")
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def _wait_ready(proc: subprocess.Popen, name: str, timeout: float = 10.0) -> bool:
    import jack

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            client = jack.Client("hb-probe", no_start_server=True, servername=name)
        except jack.JackOpenError:
            time.sleep(0.05)
            continue
        client.close()
        return True
    return False


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _detach_portaudio(name: str) -> None:
    """Re-initialise PortAudio without this JACK server before it goes away: PortAudio's JACK
    host API aborts the interpreter at exit (an assertion in pa_jack.c) if its server vanished."""
    import sys

    sd = sys.modules.get("sounddevice")
    if sd is None:
        return
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ["JACK_DEFAULT_SERVER"] = f"{name}-gone"
    os.environ["JACK_NO_START_SERVER"] = "1"
    try:
        sd._terminate()
        sd._initialize()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def jack_server():
    """Start ``jackd -n <unique> -R -P 70 -d dummy -r 48000 -p 128`` for the session (falling back
    to ``--no-realtime`` where real-time scheduling is refused), export ``JACK_DEFAULT_SERVER``
    and yield a :class:`JackServer`. Skips when jackd or JACK-Client is missing."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (apt install jackd2)")
    try:
        import jack  # noqa: F401
    except (ImportError, OSError) as e:
        pytest.skip(f"JACK-Client cannot load libjack: {e}")
    name = f"hbtest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    log_dir = tempfile.mkdtemp(prefix="hb-jackd-")
    proc = None
    realtime = True
    for realtime in (True, False):
        log_path = os.path.join(log_dir, f"jackd-{'rt' if realtime else 'nort'}.log")
        proc = _start_jackd(name, realtime, log_path)
        if _wait_ready(proc, name):
            with open(log_path, errors="replace") as f:
                refused = any(s in f.read().lower() for s in _RT_REFUSED)
            if realtime and refused:
                _kill(proc)  # runs, but not really real-time: say so honestly with --no-realtime
                continue
            break
        _kill(proc)
        proc = None
    if proc is None:
        pytest.skip(f"jackd did not start; logs in {log_dir}")
    server = JackServer(name, realtime, SAMPLE_RATE, BLOCK_SIZE, proc, log_path)
    old = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        yield server
    finally:
        _detach_portaudio(name)
        if old is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = old
        _kill(proc)


def pytest_collection_modifyitems(config, items):
    """The standalone build's tests run only when asked for (``-m standalone``): they build for minutes."""
    if "standalone" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="builds the standalone program: run with -m standalone")
    for item in items:
        if "standalone" in item.keywords:
            item.add_marker(skip)
