"""Plain CC maps applied in the JACK process callback (hushbridge.control.midi_fast): which CCs
it takes, that its values are the service thread's, that learn and chain changes stop it at
once, and on a real JACK server that a dense CC stream no longer wakes the service thread per
cycle."""
from __future__ import annotations

import time

import mido
import numpy as np
import pytest

from helpers import CycleHost, read_midi, run_midi_cycle

from hushbridge.control.midi import MidiMapper
from hushbridge.control.midi_fast import CcFastPath
from hushbridge.effects import Chain, Gain, HighPass, Loudness
from hushbridge.engine import Engine

GAIN, GAIN2, CUTOFF = "/hb/gain/gain_db", "/hb/gain_2/gain_db", "/hb/highpass/cutoff_hz"
TABLE = {"cc": [
    {"cc": 7, "address": GAIN, "min": -40.0, "max": 0.0, "curve": "exp"},          # any channel
    {"channel": 3, "cc": 74, "address": CUTOFF, "curve": "log", "invert": True},
    {"channel": 3, "cc": 74, "address": GAIN2},                                      # one CC, two targets
    {"cc": 2, "cc14": True, "address": GAIN2},                                       # 14-bit: 2 and 34
    {"cc": 34, "address": GAIN},                                                     # a half of that pair
    {"cc": 6, "address": GAIN},                                                      # NRPN data entry
    {"cc": 80, "address": "/hb/loudness/layout"},                                    # checked by the effect
    {"cc": 81, "address": "/hb/nope/gain_db"},                                       # not in the chain
]}


def make_engine() -> Engine:
    engine = Engine(Chain([Gain(), Gain(), HighPass(), Loudness()]), channels=2)
    engine.prepare(48000, 128)
    return engine


def block(engine: Engine) -> None:
    x = np.zeros((2, 128), np.float32)
    engine.process(x, x)


@pytest.fixture
def fast():
    engine = make_engine()
    mapper = MidiMapper(engine, TABLE)
    wakes = []
    path = CcFastPath(mapper, lambda: wakes.append(1))
    path.attach()
    path.rebuild()
    yield engine, mapper, path, wakes
    path.detach()


def test_only_plain_cc_maps_to_checked_parameters_are_taken(fast):
    _, _, path, _ = fast
    routes = path._table.routes
    assert {cc for _, cc in routes} == {7, 74}
    assert {status for status, cc in routes if cc == 7} == {0xB0 | ch for ch in range(16)}
    assert {status for status, cc in routes if cc == 74} == {0xB0 | 2}  # TOML channel 3 is 0-based 2
    assert len(routes[(0xB2, 74)]) == 2
    for data in ([0xB0, 2, 1], [0xB0, 34, 1], [0xB0, 6, 1], [0xB0, 80, 1], [0xB0, 81, 1], [0xB5, 74, 1],
                 [0x90, 7, 100]):  # 14-bit halves, NRPN, checked, unknown, other channel, a note
        assert not path.take(bytes(data)), data


def test_values_are_what_the_service_thread_would_set(fast):
    engine, _, path, _ = fast
    twin = make_engine()
    slow = MidiMapper(twin, TABLE)
    for status, cc, v in ((0xB0, 7, 0), (0xB9, 7, 64), (0xB0, 7, 127), (0xB2, 74, 0), (0xB2, 74, 100)):
        assert path.take(bytes([status, cc, v]))
        block(engine)
        slow.handle(mido.Message.from_bytes([status, cc, v]))
        block(twin)
        for address in (GAIN, GAIN2, CUTOFF):
            info = engine.info(address)
            assert engine.chain[info.slot].get(info.param.id) == twin.chain[info.slot].get(info.param.id), address
    assert engine.dropped_messages == 0


def test_taken_changes_are_reported_with_their_order(fast):
    engine, mapper, path, wakes = fast
    heard = []
    engine.add_listener(lambda address, value, source: heard.append((address, value, source)))
    assert path.take(bytes([0xB0, 7, 127])) and path.take(bytes([0xB0, 7, 0]))
    assert len(wakes) >= 2  # invalidate woke it once at attach; the first CC once (then rate-limited)
    block(engine)
    assert engine.chain[0].gain_db == -40.0
    assert engine.get(GAIN) != -40.0  # not reported yet
    assert path.report()
    assert engine.get(GAIN) == -40.0
    assert heard == [(GAIN, -40.0, "midi")]  # the latest value once, not every step
    assert mapper.stats["received"] == mapper.stats["applied"] == 2
    assert path.take(bytes([0xB2, 74, 5]))  # one CC, two targets: counted as the other way counts
    path.report()
    assert (mapper.stats["received"], mapper.stats["applied"]) == (3, 4)
    assert not path.report()
    engine.set(GAIN, -3.0)  # a later change from elsewhere ...
    assert path.take(bytes([0xB0, 7, 64]))  # ... and a later CC: the CC's value wins, in order
    block(engine)
    path.report()
    assert engine.get(GAIN) == engine.chain[0].gain_db != -3.0


def test_learn_and_map_changes_stop_it_before_they_return(fast):
    engine, mapper, path, _ = fast
    mapper.learn(GAIN2)
    assert not path.take(bytes([0xB0, 7, 10]))  # learn must see the next control moved
    path.rebuild()
    assert path._table.routes == {}  # stays empty while learning
    mapper.cancel_learn()
    assert not path.take(bytes([0xB0, 7, 10]))
    path.rebuild()
    assert path.take(bytes([0xB0, 7, 10]))
    mapper.remove_address(GAIN)
    assert not path.take(bytes([0xB0, 7, 10]))
    path.rebuild()
    assert (0xB0, 7) not in path._table.routes


def test_a_new_chain_stops_it_until_it_is_rebuilt_for_the_new_slots(fast):
    engine, mapper, path, _ = fast
    engine.load_chain(Chain([HighPass(), Loudness(), Gain(), Gain()]))
    for _ in range(20):
        block(engine)
    assert path.dirty and not path.take(bytes([0xB0, 7, 127]))
    path.rebuild()
    assert path.take(bytes([0xB0, 7, 127]))
    block(engine)
    assert engine.chain["gain"].gain_db == 0.0 and engine.chain[2] is engine.chain["gain"]


def test_a_chain_without_parameters_stops_it_too(fast):
    """Loading it tells no listener (there is no parameter to announce); take() checks the
    table's generation itself, so the CC goes the other way and is rejected and counted there."""
    engine, _, path, wakes = fast
    path.dirty = False
    engine.load_chain(Chain([]))
    n = len(wakes)
    assert not path.take(bytes([0xB0, 7, 127]))
    assert path.dirty and len(wakes) == n + 1


def test_a_full_ring_sends_ccs_the_other_way(fast):
    engine, _, path, _ = fast
    taken = sum(path.take(bytes([0xB0, 7, k % 128])) for k in range(path.ring.capacity + 5))
    assert taken == path.ring.capacity
    block(engine)
    assert path.take(bytes([0xB0, 7, 1]))


def test_a_status_byte_where_the_value_belongs_takes_the_other_way(fast):
    """``B0 07 F8`` (a clock byte in a mapped CC's value) raised IndexError in the process
    callback, which lost the rest of that cycle's events; the parser rejects and counts it."""
    engine, mapper, path, _ = fast
    for value in (0xF8, 0x90, 0x80):
        assert not path.take(bytes([0xB0, 7, value]))
    mapper.handle(mido.Message.from_bytes([0xB0, 7, 0x7F]))  # the parser takes the valid ones only
    assert path.take(bytes([0xB0, 7, 0x7F]))


def test_values_taken_just_before_a_map_change_are_still_reported(fast):
    """learn, a map change or a new chain replace the table: what the old one took in its last
    20 ms was never reported (/hb/get, feedback and a saved preset kept the older value)."""
    engine, mapper, path, _ = fast
    assert path.take(bytes([0xB0, 7, 64]))
    block(engine)
    mapper.learn(GAIN2)  # invalidates before the service thread reported
    path.report()
    assert engine.get(GAIN) == engine.chain[0].gain_db != 0.0 and path._retired == []
    mapper.cancel_learn()
    path.rebuild()
    assert path.take(bytes([0xB0, 7, 0]))
    block(engine)
    path.rebuild()  # replaced without an invalidate (take() found a new chain)
    path.report()
    assert engine.get(GAIN) == engine.chain[0].gain_db == -40.0


# == in JackMidiIn's process hook (a stand-in host calls it as a JackBackend would) ===============
def _read(rt):
    out = read_midi(rt)
    rt.handled()  # as MidiInput does once it has applied them
    return out


@pytest.fixture
def hooked():
    from hushbridge.control.jack_midi import JackMidiIn

    host = CycleHost()
    rt = JackMidiIn("unused", host=host)
    taken: list[list[int]] = []
    rt.fast = lambda raw: (raw[0] & 0xF0 == 0xB0) and (taken.append(list(raw)) or True)
    return host, rt, taken


def test_a_cc_does_not_overtake_a_message_queued_before_it(hooked):
    host, rt, taken = hooked
    note, cc, cc2 = [0x90, 36, 100], [0xB0, 7, 0], [0xB0, 7, 5]
    run_midi_cycle(host, rt, 1000, [(0, note), (1, cc)])  # the note waits for the service thread ...
    assert taken == []                            # ... so the CC waits behind it
    run_midi_cycle(host, rt, 1128, [(0, cc2)])            # still not handled: behind it too
    assert taken == []
    assert _read(rt) == [note, cc, cc2]
    run_midi_cycle(host, rt, 1256, [(0, cc)])             # all handled: the fast path again
    assert taken == [cc] and _read(rt) == []


def test_a_fast_path_that_raises_loses_no_event_of_the_cycle(hooked):
    host, rt, _ = hooked

    def broken(raw):
        raise IndexError("boom")

    rt.fast = broken
    cc, note = [0xB0, 7, 5], [0x90, 36, 100]
    run_midi_cycle(host, rt, 1000, [(0, cc), (1, note)])
    assert _read(rt) == [cc, note] and rt.fast_errors == 1


def test_a_cycle_run_twice_loses_nothing_new_when_its_cc_took_the_fast_path(hooked):
    """jackd -R may run a cycle twice around an xrun; a CC the first run applied itself is not in
    the queue, and a program change new in the second run must still be queued (and a repeat
    of the CC is harmless: same absolute value)."""
    host, rt, taken = hooked
    cc, prog, note = [0xB0, 7, 64], [0xC0, 5], [0x90, 60, 100]
    run_midi_cycle(host, rt, 1000, [(0, cc)])
    run_midi_cycle(host, rt, 1000, [(0, cc)])  # the same again: skipped
    assert taken == [cc] and rt.repeated == 1 and _read(rt) == []
    run_midi_cycle(host, rt, 1128, [(0, note), (2, cc)])
    run_midi_cycle(host, rt, 1128, [(0, note), (1, prog), (2, cc)])  # upstream was late: prog is new
    assert _read(rt) == [note, cc, prog, cc] and rt.repeated == 2
    run_midi_cycle(host, rt, 1128, [(0, note), (1, prog), (2, cc)])  # a third run repeats the second
    assert _read(rt) == [] and rt.repeated == 5


def test_a_burst_takes_the_fast_path_for_its_first_ccs_only_and_queues_the_rest_in_order(hooked):
    """300 CCs in one cycle (a controller dumping a fader's history) ran the callback past its
    period on JACK, and the next cycle cleared the events not read yet (lost, uncounted). Only
    FAST_PER_CYCLE take the fast path; the rest wait in the queue, in order, none lost."""
    from hushbridge.control.jack_midi import FAST_PER_CYCLE

    host, rt, taken = hooked
    burst = [[0xB0, 20, v % 128] for v in range(300)]
    run_midi_cycle(host, rt, 1000, [(k * 128 // 300, cc) for k, cc in enumerate(burst)])
    assert 0 < len(taken) == FAST_PER_CYCLE <= 64  # a handful a cycle, far under a burst
    assert taken == burst[:FAST_PER_CYCLE]
    assert _read(rt) == burst[FAST_PER_CYCLE:] and rt.overflows == 0


# == on a real JACK server ========================================================================
@pytest.mark.jack
def test_a_dense_cc_stream_does_not_wake_the_service_thread_every_cycle(jack_server):
    from helpers import JackMidiSenderProcess

    from hushbridge.control.midi import MidiInput
    from hushbridge.io.jack import JackBackend

    engine = Engine(Chain([Gain()]), channels=1)
    backend = JackBackend(engine, name="hb-fastcc")
    sender = JackMidiSenderProcess(jack_server.name, "hb-fastcc-sender")
    midi = None
    try:
        backend.start()
        mapper = MidiMapper(engine, {"cc": [{"cc": 7, "address": GAIN}]})
        midi = MidiInput(mapper, port=sender.port_name, api="jack", jack_host=backend, port_name="midi_in").start()
        assert midi.wait_connected(10) and midi._fast is not None
        deadline = time.monotonic() + 5
        while midi._fast.dirty and time.monotonic() < deadline:
            time.sleep(0.01)
        p = engine.info(GAIN).param
        w0, taken0, blocks0 = midi.wakeups, midi._fast.taken, engine.blocks
        sender.send_every(bytes([0xB0, 7, 100]), 300, 160)  # 300 CCs 3.3 ms apart: every cycle but one in 6
        time.sleep(1.3)
        cycles = engine.blocks - blocks0
        woke = midi.wakeups - w0
        taken = midi._fast.taken - taken0
        assert taken > 250, f"only {taken} of 300 CCs took the fast path"
        # the service thread's way would wake once per cycle that brought a CC (~300 here)
        assert woke < 100, f"the service thread woke {woke} times in {cycles} cycles"
        want = p.min + 100 / 127 * (p.max - p.min)
        assert engine.chain[0].gain_db == pytest.approx(want)
        assert engine.get(GAIN) == pytest.approx(want)  # reported
        assert mapper.stats["applied"] >= taken
        # a knob that stops right after a report: its last value is reported all the same
        last = p.min + 20 / 127 * (p.max - p.min)
        for _ in range(3):  # an xrun can lose the cycle that carried it
            sender.send(bytes([0xB0, 7, 20]))
            deadline = time.monotonic() + 1.0
            while engine.get(GAIN) != pytest.approx(last) and time.monotonic() < deadline:
                time.sleep(0.005)
            if engine.get(GAIN) == pytest.approx(last):
                break
        assert engine.get(GAIN) == pytest.approx(last) == engine.chain[0].gain_db
        # closed right after a CC was applied, before its report was due: reported on close
        final = p.min + 90 / 127 * (p.max - p.min)
        for _ in range(3):
            sender.send(bytes([0xB0, 7, 90]))
            deadline = time.monotonic() + 1.0
            while engine.chain[0].gain_db != pytest.approx(final) and time.monotonic() < deadline:
                time.sleep(0.001)
            if engine.chain[0].gain_db == pytest.approx(final):
                break
        midi.close()
        midi = None
        assert engine.get(GAIN) == pytest.approx(final) == engine.chain[0].gain_db
    finally:
        if midi is not None:
            midi.close()
        assert engine._remote_rings == ()
        backend.close()
        sender.close()
