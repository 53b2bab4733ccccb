"""The self-pipe wake-up that the JACK MIDI hook gives the MIDI service thread.

Real parts: a real pipe, real threads; for the MIDI input, the session's jackd, a JACK MIDI port
on a running :class:`JackBackend` and the kernel's per-thread context-switch counts.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from hushbridge.control import waker

pytestmark = pytest.mark.skipif(not waker.AVAILABLE, reason="POSIX self-pipe")


def test_set_wait_clear():
    w = waker.Waker()
    try:
        assert not w.is_set()
        t = time.monotonic()
        assert w.wait(0.05) is False
        assert time.monotonic() - t >= 0.04
        w.set()
        w.set()  # one byte until cleared: a flood of events does not fill the pipe
        assert w.is_set() and w.wait(5) is True
        w.clear()
        assert not w.is_set() and w.wait(0) is False
        w.set()
        assert w.wait(0) is True
    finally:
        w.close()
    w.set()  # a late setter after close neither raises nor writes anywhere
    assert w.wait(0) is True


def test_set_from_another_thread_wakes_the_waiter_at_once():
    w = waker.Waker()
    woke: list[float] = []

    def waiter() -> None:
        w.wait(10)
        woke.append(time.monotonic())

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.1)
    t = time.monotonic()
    w.set()
    th.join(5)
    w.close()
    assert woke and woke[0] - t < 0.05


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_dropping_a_waker_closes_its_pipe():
    before = _open_fds()
    w = waker.Waker()
    assert _open_fds() == before + 2
    w.set()
    del w
    assert _open_fds() == before


def test_waits_with_a_descriptor_past_fd_setsize():
    """select() refuses descriptors from 1024 on; a busy process gets there (the wait must still
    sleep, not fail at once and spin)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1100
    if soft < want + 64:
        if hard != resource.RLIM_INFINITY and hard < want + 64:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {want + 64}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want + 64, hard))
    held = []
    try:
        while _open_fds() < want:
            held.append(os.open(os.devnull, os.O_RDONLY))
        w = waker.Waker()
        try:
            assert w._r >= 1024
            t = time.monotonic()
            assert w.wait(0.05) is False
            assert time.monotonic() - t >= 0.04
            w.set()
            assert w.wait(5) is True
        finally:
            w.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _voluntary_switches(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


@pytest.mark.jack
def test_idle_jack_midi_input_sleeps_and_wakes_for_an_event(jack_server):
    """Idle, the MIDI service thread sleeps (it polled every millisecond before); a CC sent
    through a JACK MIDI port still reaches the parameter."""
    from helpers import JackMidiSenderProcess

    from hushbridge.control.midi import MidiInput, MidiMapper
    from hushbridge.effects import Chain, Gain
    from hushbridge.engine import Engine
    from hushbridge.io.jack import JackBackend

    engine = Engine(Chain([Gain()]), channels=1)
    backend = JackBackend(engine, name="hb-waker")
    sender = JackMidiSenderProcess(jack_server.name, "hb-waker-sender")
    midi = None
    try:
        backend.start()
        mapper = MidiMapper(engine, {"cc": [{"cc": 7, "address": "/hb/gain/gain_db"}]})
        midi = MidiInput(mapper, port=sender.port_name, api="jack", jack_host=backend,
                         port_name="midi_in").start()
        assert midi.wait_connected(10)
        assert midi._woken
        tid = midi._service.native_id
        time.sleep(0.3)
        s0 = _voluntary_switches(tid)
        time.sleep(1.0)
        idle = _voluntary_switches(tid) - s0
        assert idle < 50, f"the idle MIDI service thread woke {idle} times in 1 s"
        p = engine.info("/hb/gain/gain_db").param
        for attempt in range(3):  # an xrun can lose the cycle that carried the event
            sender.send(bytes([0xB0, 7, 127]))
            deadline = time.monotonic() + 2
            while engine.get("/hb/gain/gain_db") != p.max and time.monotonic() < deadline:
                time.sleep(0.01)
            if engine.get("/hb/gain/gain_db") == p.max:
                break
        assert engine.get("/hb/gain/gain_db") == p.max
        midi.close()
        midi = None
        import gc

        fds = _open_fds()
        gc.disable()  # closing must not wait for a collection (a JACK client is a reference cycle)
        try:
            for host in (backend, None) * 5:  # on the engine's client and on a client of its own
                m = MidiInput(mapper, port=sender.port_name, api="jack", jack_host=host, port_name="midi_in")
                m.start()
                m.close()
            assert _open_fds() <= fds, "MIDI inputs left pipes open"
        finally:
            gc.enable()
    finally:
        if midi is not None:
            midi.close()
        sender.close()
        backend.close()


@pytest.mark.jack
def test_a_hosted_midi_input_follows_its_backend_through_stop_start_and_close(jack_server, caplog):
    """A MIDI input on the engine's own JACK client while that backend is stopped and started
    again (deactivated: every connection gone) and finally closed before the input: the input
    reconnects after each start, a CC plays each time, and nothing fails (the service thread
    logged a traceback every poll while the backend was stopped, and libjack complained about a
    NULL client every poll after it was closed)."""
    import logging

    from helpers import JackMidiSenderProcess

    from hushbridge.control.midi import MidiInput, MidiMapper
    from hushbridge.effects import Chain, Gain
    from hushbridge.engine import Engine
    from hushbridge.io.jack import JackBackend

    caplog.set_level(logging.INFO, logger="hushbridge")
    engine = Engine(Chain([Gain()]), channels=1)
    backend = JackBackend(engine, name="hb-midi-host")
    sender = JackMidiSenderProcess(jack_server.name, "hb-midi-host-sender")
    midi = None
    try:
        backend.start()
        mapper = MidiMapper(engine, {"cc": [{"cc": 7, "address": "/hb/gain/gain_db"}]})
        midi = MidiInput(mapper, port=sender.port_name, api="jack", jack_host=backend, port_name="midi_in",
                         poll_s=0.05).start()
        p = engine.info("/hb/gain/gain_db").param
        for round_, value in enumerate((127, 0, 127)):
            if round_:
                backend.stop()
                time.sleep(0.3)  # several polls while stopped
                assert not midi.connected
                backend.start()
            assert midi.wait_connected(10), round_
            want = p.max if value else p.min
            for attempt in range(5):  # an xrun can lose the cycle that carried the event
                sender.send(bytes([0xB0, 7, value]))
                deadline = time.monotonic() + 2
                while engine.get("/hb/gain/gain_db") != want and time.monotonic() < deadline:
                    time.sleep(0.01)
                if engine.get("/hb/gain/gain_db") == want:
                    break
            assert engine.get("/hb/gain/gain_db") == want, round_
        assert midi.connects == 3 and midi.disconnects == 2, (midi.connects, midi.disconnects)
        backend.close()
        time.sleep(0.3)
        midi.close()
        midi = None
        failed = [r for r in caplog.records if "service step failed" in r.getMessage() and r.levelno >= logging.WARNING]
        assert not failed, failed[0].getMessage()
    finally:
        if midi is not None:
            midi.close()
        sender.close()
        backend.close()
