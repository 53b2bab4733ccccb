"""JACK MIDI input through JACK-Client, with the slice of ``rtmidi.MidiIn``'s interface that
:class:`~hushbridge.control.midi.MidiInput` uses.

Why not python-rtmidi on JACK: it keeps the GIL through its JACK calls (client open and close,
activate, port register and connect). Each of those waits for the server, and the server waits
for the current cycle, which cannot finish while a Python process callback in the same process
(the engine's audio callback) waits for the GIL: a deadlock, seen when a MIDI input opened
while the engine ran on JACK and when a controller was re-plugged. JACK-Client (cffi) lets
the GIL go during every C call. The process callback's own reads (the port's events, the
cycle's frame time) keep the GIL instead (:class:`hushbridge.io.jack.MidiEventReader`): they
never wait for the server, and each release would cost the audio thread a wait for the GIL.

The process callback offers each 3-byte event to ``fast`` (plain CC maps applied there, see
:mod:`hushbridge.control.midi_fast`; never ahead of an event still queued) and copies every
other event's bytes into a preallocated single-producer / single-consumer ring (fixed slots, no Python objects kept per event) with its frame time, and
wakes the reader when a cycle queued any (``wake``);
:meth:`JackMidiIn.get_message` hands them out as ``(bytes, delta_seconds)`` like rtmidi. When the
ring is full the newest events are dropped and counted (the reader owns the read index, so the
writer never moves it); an event longer than a slot (a long sysex dump, never a control message)
is dropped and counted too.

With ``host`` (a running :class:`~hushbridge.io.jack.JackBackend`) the MIDI port lives on the
engine's own JACK client and is read by a hook in its process callback, so the process has one
Python callback per cycle instead of two (each one takes the GIL in a real-time thread).
"""
from __future__ import annotations

import sys
from typing import Any

GIL_SWITCH_INTERVAL = 0.0002  # seconds, as the engine sets it for its own JACK callback
QUEUE_LIMIT = 4096  # events held between two drains; beyond it new ones are dropped (counted)
SLOT_BYTES = 512    # longest event kept (sysex dumps beyond it are dropped, counted)
FAST_PER_CYCLE = 32  # plain CCs applied in one cycle's callback; the rest of a burst goes to the queue


class JackMidiIn:
    """A JACK client with one MIDI input port (see the module docstring)."""

    def __init__(self, name: str, server: str | None = None, host: Any = None) -> None:
        self._host = host
        self._ring = bytearray(QUEUE_LIMIT * SLOT_BYTES)
        self._ring_view = memoryview(self._ring)
        self._sizes = [0] * QUEUE_LIMIT
        self._frames = [0] * QUEUE_LIMIT
        self._written = 0  # events written (only the process callback moves it)
        self._read = 0     # events read (only get_message moves it)
        self._cycle_frame = -1  # frame time of the last cycle read
        self._cycle_events: list[tuple[int, bytes]] = []  # (offset, bytes) of the events it saw
        #: events the reader has finished with (handled, not just read); set by the reader
        #: (:class:`~hushbridge.control.midi.MidiInput`), read here for the fast path
        self.done = 0
        self.repeated = 0  # events seen twice in one cycle and skipped (see _process)
        self._port: Any = None
        self._reader: Any = None  # MidiEventReader of the port, where the GIL-holding calls exist
        self._calls: Any = None
        self._client_address = 0
        self._reader_failed = 0
        #: called (in the process callback) after a cycle queued events: must not block, lock or
        #: let the GIL go (:class:`~hushbridge.control.waker.Waker`'s ``set``)
        self.wake: Any = None
        #: ``fast(event_bytes) -> bool`` (in the process callback) for every 3-byte event: True
        #: when it applied the event itself (:class:`~hushbridge.control.midi_fast.CcFastPath`),
        #: which then is not queued
        self.fast: Any = None
        self._sources: list[str] = []
        self._last_frame: int | None = None
        self._ignore_active_sense = True
        self.overflows = 0  # events dropped (ring full, or oversized)
        self.oversized = 0  # of those, events longer than SLOT_BYTES
        self.fast_errors = 0  # events the fast path raised on (they took the queue instead)
        if host is not None:
            self.client = host.client
            host.add_process_hook(self._process)
        else:
            import jack

            self.client = jack.Client(name, no_start_server=True, servername=server)
            self.client.set_process_callback(self._process)
            # a Python process callback waits for the GIL; at the default 5 ms switch interval a
            # busy thread would keep it past a 128-frame period and the whole graph would xrun
            if sys.getswitchinterval() > GIL_SWITCH_INTERVAL:
                sys.setswitchinterval(GIL_SWITCH_INTERVAL)
            self.client.activate()

    # == JACK process thread =====================================================================
    def _process(self, frames: int) -> None:
        port = self._port
        if port is None:
            return
        reader = self._reader
        if reader is not None:  # the GIL-holding calls (hushbridge.io.jack._CycleCalls)
            base = self._calls.last_frame_time(self._client_address)
            events = reader(frames)
        else:
            base = self.client.last_frame_time
            events = port.incoming_midi_events()
        view, sizes, times = self._ring_view, self._sizes, self._frames
        # Around an xrun jackd -R was seen to run this callback twice with the same frame time,
        # the first time on a buffer the (late) upstream client was still writing. An event the
        # first run took is skipped only where the second run shows the same event (offset and
        # bytes) at the same place; a note toggle must not toggle twice, and a one-shot message
        # (program change) that is new in the second run must not be lost. What a run saw is
        # kept apart from the queue, since the fast path (CCs applied here) queues nothing.
        record = self._cycle_events
        if base != self._cycle_frame:
            self._cycle_frame = base
            record.clear()
        taken = len(record)
        differs = False
        seen = 0
        fast_taken = 0
        written = self._written
        fast = self.fast
        for offset, data in events:
            raw = bytes(data)
            n = len(raw)
            seen += 1
            if seen <= taken and not differs:
                if record[seen - 1] == (offset, raw):
                    self.repeated += 1
                    continue
                differs = True  # another buffer than the first run's: everything from here is new
            if seen <= len(record):  # a further run of this cycle compares with this one
                record[seen - 1] = (offset, raw)
            else:
                record.append((offset, raw))
            # a CC may skip the queue only when nothing waits in it: a message queued before it
            # would otherwise be applied after it (and count as the later change)
            # and only up to FAST_PER_CYCLE a cycle: a burst of hundreds (a fader's whole history
            # sent at once) ran the callback past its period, and the next cycle cleared the events
            # still unread
            if fast is not None and n == 3 and self._written == self.done and fast_taken < FAST_PER_CYCLE:
                try:
                    if fast(raw):
                        fast_taken += 1
                        continue
                except Exception:  # noqa: BLE001 - never lose the rest of the cycle: the queue's way
                    self.fast_errors += 1
            w = self._written
            if w - self._read >= QUEUE_LIMIT:
                self.overflows += 1
                continue
            if n > SLOT_BYTES:
                self.oversized += 1
                self.overflows += 1
                continue
            slot = w % QUEUE_LIMIT
            at = slot * SLOT_BYTES
            view[at:at + n] = raw
            sizes[slot] = n
            times[slot] = base + offset
            self._written = w + 1  # publish after the slot is complete
        if reader is not None and reader.failed != self._reader_failed:  # events the server no longer had
            self.overflows += reader.failed - self._reader_failed
            self._reader_failed = reader.failed
        wake = self.wake
        if wake is not None and self._written != written:
            wake()

    # == the rtmidi.MidiIn slice =================================================================
    def ignore_types(self, sysex: bool = True, timing: bool = True, active_sense: bool = True) -> None:
        """Only active sensing can be dropped here; sysex and timing always pass (we parse them)."""
        self._ignore_active_sense = active_sense

    @property
    def usable(self) -> bool:
        """Whether the JACK client can be asked for ports and connections now: on a host, while
        the host backend is started (a stopped one is deactivated, a closed one has no client)."""
        host = self._host
        return host is None or (bool(host.active) and bool(host.client._ptr))

    def get_ports(self) -> list[str]:
        """Full names of the MIDI outputs of other clients (the sources we can connect to);
        none while the host backend is stopped or closed."""
        if not self.usable:  # libjack would print an error per call on a closed client, then raise
            self._sources = []
            return []
        mine = f"{self.client.name}:"
        self._sources = [p.name for p in self.client.get_ports(is_midi=True, is_output=True)
                         if not p.name.startswith(mine)]
        return list(self._sources)

    def _ensure_port(self, name: str) -> Any:
        if self._port is None:
            from hushbridge.io.jack import MidiEventReader, address_of, cycle_calls

            port = self.client.midi_inports.register(name)
            calls = cycle_calls()
            if calls is not None:
                self._calls, self._client_address = calls, address_of(self.client._ptr)
                self._reader = MidiEventReader(calls, port)
            self._port = port  # last: the process callback reads the port once it is set
        return self._port

    def open_virtual_port(self, name: str) -> None:
        self._ensure_port(name)

    def open_port(self, index: int, name: str) -> None:
        """Connect the source ``get_ports()[index]`` (from the latest ``get_ports``) to our port."""
        port = self._ensure_port(name)
        source = self._sources[index]
        if not any(p.name == source for p in self.client.get_all_connections(port)):
            self.client.connect(source, port)

    def close_port(self, source: str | None = None) -> None:
        """Disconnect our port from ``source``, or from every source (it stays registered for the
        next open)."""
        port = self._port
        if port is not None and self.usable:  # a stopped host has no connections, a closed one no client
            try:
                if source is None:
                    port.disconnect()
                else:
                    self.client.disconnect(source, port)
            except Exception:  # noqa: BLE001 - already gone with the source
                pass

    def handled(self) -> None:
        """The reader has finished with every event it has read (applied or rejected them):
        from now on a CC may take the fast path without overtaking one of them."""
        self.done = self._read

    def get_message(self) -> tuple[list[int], float] | None:
        """The oldest queued event as ``(bytes, seconds since the previous event)``, or None."""
        while self._read < self._written:
            slot = self._read % QUEUE_LIMIT
            at, n, frame = slot * SLOT_BYTES, self._sizes[slot], self._frames[slot]
            data = self._ring_view[at:at + n].tobytes()
            self._read += 1
            if self._ignore_active_sense and data == b"\xfe":
                continue
            last = self._last_frame
            self._last_frame = frame
            delta = 0.0 if last is None else ((frame - last) & 0xFFFFFFFF) / self.client.samplerate
            return list(data), delta
        return None

    def delete(self) -> None:
        port, self._port = self._port, None
        if self._host is not None:
            self._host.remove_process_hook(self._process)
            if port is not None and self._host.client._ptr:  # a closed client took its ports along
                try:
                    port.unregister()
                except Exception:  # noqa: BLE001 - the backend's client is already closed
                    pass
            return
        try:
            self.client.deactivate()
        finally:
            self.client.close()
