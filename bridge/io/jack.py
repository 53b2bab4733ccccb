"""JACK backend: the engine as a JACK client with ``in_1..N`` and ``out_1..N`` ports.

>>> from hushbridge.engine import Engine
>>> from hushbridge.effects import Chain, Gain
>>> engine = Engine(Chain([Gain(gain_db=-6)]), channels=2)
>>> with JackBackend(engine, connect_inputs=["system:capture_1", "system:capture_2"],
...                  connect_outputs="system:playback_.*") as backend:   # doctest: +SKIP
...     ...

The process callback follows the contract of :mod:`hushbridge.io.base` word for word::

    callback(frames: int) -> None          # JACK's real-time thread
        inp[k][:] = in_k's buffer          # into preallocated (channels, frames) float32
        engine.process(inp, out)           # never raises, fills all of `out`
        out_k's buffer[:] = out[k]         # write into JACK's buffer, never rebind it

The copies keep the GIL (:class:`_CycleCalls`): the callback then waits for it only once, when
it starts, however busy the process's control threads are.

Buffer-size and sample-rate changes re-prepare the engine from JACK's notification thread
(JACK suspends the process cycle meanwhile). Xruns are counted with ``engine.note_xrun()``.

Latency: the engine's latency is added to the port latency ranges JACK propagates through the
graph (``jack_set_latency_callback``): ``out_k`` capture latency = ``in_k`` capture latency + engine
latency, ``in_k`` playback latency = ``out_k`` playback latency + engine latency. A chain swap that
changes the latency republishes it (:meth:`JackBackend.publish_latency` calls
``jack_recompute_total_latencies``). JACK-Client (0.5.x) has no latency API, so those few calls go
to libjack through :mod:`ctypes`; :func:`get_latency_range` reads any port's range.
"""
from __future__ import annotations

import contextlib
import ctypes as _ctypes
import re
import threading as _threading
import time as _time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from hushbridge.engine import Engine
from hushbridge.errors import BackendError
from hushbridge.io.base import Backend

try:
    import jack
except OSError as _e:  # libjack missing: the module imports, opening a client explains
    jack = None
    _IMPORT_ERROR: Exception | None = _e
else:
    _IMPORT_ERROR = None

HOOK_WAIT_S = 0.25  # longest remove_process_hook waits for a cycle that is calling hooks
CAPTURE = 0  # JackCaptureLatency
PLAYBACK = 1  # JackPlaybackLatency
_MODES = {"capture": CAPTURE, "playback": PLAYBACK, CAPTURE: CAPTURE, PLAYBACK: PLAYBACK}

PortSpec = str | Sequence[str] | None


# == the part of libjack that JACK-Client does not wrap ==============================================
class _LatencyRange(_ctypes.Structure):
    _fields_ = [("min", _ctypes.c_uint32), ("max", _ctypes.c_uint32)]


_LatencyCallback = _ctypes.CFUNCTYPE(None, _ctypes.c_int, _ctypes.c_void_p)
_libjack: _ctypes.CDLL | None = None


def _lib() -> _ctypes.CDLL:
    """libjack through ctypes (the same library JACK-Client loaded), with latency signatures."""
    global _libjack
    if _libjack is None:
        _need_jack("loading libjack")
        lib = _ctypes.CDLL(jack._libname)
        vp = _ctypes.c_void_p
        lib.jack_set_latency_callback.argtypes = [vp, _LatencyCallback, vp]
        lib.jack_set_latency_callback.restype = _ctypes.c_int
        lib.jack_port_set_latency_range.argtypes = [vp, _ctypes.c_int, _ctypes.POINTER(_LatencyRange)]
        lib.jack_port_set_latency_range.restype = None
        lib.jack_port_get_latency_range.argtypes = [vp, _ctypes.c_int, _ctypes.POINTER(_LatencyRange)]
        lib.jack_port_get_latency_range.restype = None
        lib.jack_recompute_total_latencies.argtypes = [vp]
        lib.jack_recompute_total_latencies.restype = _ctypes.c_int
        lib.jack_port_by_name.argtypes = [vp, _ctypes.c_char_p]
        lib.jack_port_by_name.restype = vp
        _libjack = lib
    return _libjack


class _MidiEvent(_ctypes.Structure):
    _fields_ = [("time", _ctypes.c_uint32), ("size", _ctypes.c_size_t), ("buffer", _ctypes.c_void_p)]


class _CycleCalls:
    """The libjack calls of a process cycle, made without letting go of the GIL.

    JACK-Client's ``port.get_array()`` makes two cffi calls, and cffi releases the GIL around
    each. With another Python thread busy (an OSC server receiving a flood), every release
    costs the audio thread up to a switch interval to get the GIL back: eight waits a cycle
    for four ports, enough to miss a 2.7 ms period. ``ctypes.PyDLL`` functions keep the GIL.
    Only calls that never wait for the server are made this way (buffers, MIDI events, the
    cycle's frame time); opening, connecting and closing stay on JACK-Client, which must let the
    GIL go while the server waits for a cycle that needs it."""

    def __init__(self) -> None:
        vp, u32 = _ctypes.c_void_p, _ctypes.c_uint32
        lib = _ctypes.PyDLL(jack._libname)  # the library JACK-Client loaded: the same handle
        self.get_buffer = lib.jack_port_get_buffer
        self.get_buffer.argtypes = [vp, u32]
        self.get_buffer.restype = vp
        self.last_frame_time = lib.jack_last_frame_time
        self.last_frame_time.argtypes = [vp]
        self.last_frame_time.restype = u32
        self.frames_since_cycle_start = lib.jack_frames_since_cycle_start
        self.frames_since_cycle_start.argtypes = [vp]
        self.frames_since_cycle_start.restype = u32
        self.midi_event_count = lib.jack_midi_get_event_count
        self.midi_event_count.argtypes = [vp]
        self.midi_event_count.restype = u32
        self.midi_event_get = lib.jack_midi_event_get
        self.midi_event_get.argtypes = [_ctypes.POINTER(_MidiEvent), vp, u32]
        self.midi_event_get.restype = _ctypes.c_int
        self.memcpy = _ctypes.PyDLL(None).memcpy  # libc's, found among the process's own symbols
        self.memcpy.argtypes = [vp, vp, _ctypes.c_size_t]
        self.memcpy.restype = vp


_cycle_calls_state: _CycleCalls | None | bool = False  # False: not tried yet


def cycle_calls() -> _CycleCalls | None:
    """The GIL-holding libjack calls, or ``None`` where they cannot be set up (no ``dlopen(NULL)``,
    as on Windows): callers then use JACK-Client's own calls."""
    global _cycle_calls_state
    if _cycle_calls_state is False:
        try:
            _need_jack("loading libjack")
            _cycle_calls_state = _CycleCalls()
        except (OSError, AttributeError, BackendError):
            _cycle_calls_state = None
    return _cycle_calls_state  # type: ignore[return-value]


class MidiEventReader:
    """``reader(frames)`` yields a JACK MIDI input port's ``(offset, bytes)`` events of the
    current cycle, like ``port.incoming_midi_events()`` but without letting go of the GIL (see
    :class:`_CycleCalls`). One per port: its event struct is reused every call."""

    def __init__(self, calls: _CycleCalls, port: "jack.Port") -> None:
        self._calls = calls
        self._port = address_of(port._ptr)
        self._event = _MidiEvent()
        self._event_ref = _ctypes.pointer(self._event)
        self.failed = 0  # events counted but not readable (a callback that ran past its cycle)

    def __call__(self, frames: int) -> Iterator[tuple[int, bytes]]:
        calls, event = self._calls, self._event
        buffer = calls.get_buffer(self._port, frames)
        if not buffer:
            return
        count = calls.midi_event_count(buffer)
        for i in range(count):
            if calls.midi_event_get(self._event_ref, buffer, i):
                self.failed += count - i
                break
            yield event.time, _ctypes.string_at(event.buffer, event.size)


def address_of(cdata: object) -> int:
    """The integer address of a JACK-Client cffi pointer (client or port)."""
    return int(jack._ffi.cast("uintptr_t", cdata))


def _need_jack(operation: str) -> None:
    if jack is None:
        raise BackendError(f"the JACK library is not installed ({_IMPORT_ERROR})", operation)


_LATE_CLIENT = re.compile(r"XRun: client (?:= )?(?P<name>\S+) (?:was not finished, state = (?P<state>\w+)"
                          r"|finished after current callback)")


def late_clients(jackd_log: str) -> dict[str, int]:
    """The clients jackd (JACK 2) named at its xruns in ``jackd_log`` (its stderr), counted by
    ``"name:state"``. ``Running``: the client's callback was still running at the cycle's end
    (too slow, or preempted); ``Triggered``: its thread had not been woken yet (the system's
    scheduling, not the client's work); ``late``: it finished after the next cycle began."""
    counts: dict[str, int] = {}
    for m in _LATE_CLIENT.finditer(jackd_log):
        key = f"{m['name']}:{m['state'] or 'late'}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def get_latency_range(client: "jack.Client", port: "str | jack.Port", mode: str | int) -> tuple[int, int]:
    """``(min, max)`` latency in frames of any port, as ``client`` sees it.

    Parameters
    ----------
    client : jack.Client
        An open client of the same server (any client, not only the port's owner).
    port : str or jack.Port
        Full port name (``"hushbridge:out_1"``) or a port object.
    mode : {"capture", "playback"} or CAPTURE / PLAYBACK
        Capture latency: how long ago the signal at this port entered the graph.
        Playback latency: how long until the signal at this port leaves the graph.
    """
    try:
        m = _MODES[mode]
    except KeyError:
        raise ValueError(f"mode must be 'capture' or 'playback', got {mode!r}") from None
    name = port.name if not isinstance(port, str) else port
    lib = _lib()
    ptr = lib.jack_port_by_name(address_of(client._ptr), name.encode())
    if not ptr:
        raise BackendError(f"no port {name!r}", "reading port latency")
    r = _LatencyRange()
    lib.jack_port_get_latency_range(ptr, m, _ctypes.byref(r))
    return int(r.min), int(r.max)


@contextlib.contextmanager
def _libjack_quiet(sink: Callable[[str], None]) -> Iterator[None]:
    """libjack's error and info lines go to ``sink`` instead of stderr, then back to stderr."""
    jack.set_error_function(sink)
    jack.set_info_function(sink)
    try:
        yield
    finally:
        jack.set_error_function(None)
        jack.set_info_function(None)


def _open_client(name: str, server: str | None, operation: str, exact: bool = True) -> "jack.Client":
    _need_jack(operation)
    said: list[str] = []  # libjack's own lines, off stderr: the error below says it in one
    try:
        with _libjack_quiet(said.append):
            # exact: JACK would otherwise rename a second instance (name-01) and scripts that
            # connect name:in_1 would reach the first one without a word
            return jack.Client(name, no_start_server=True, servername=server, use_exact_name=exact)
    except jack.JackOpenError as e:
        status = getattr(e, "status", None)
        # jackd2 answers a taken exact name with server_error (jackd1: name_not_unique); a server
        # that is not there gives server_failed
        taken = status is not None and (getattr(status, "name_not_unique", False) or (
            getattr(status, "server_error", False) and not getattr(status, "server_failed", False)))
        if taken:
            raise BackendError(f"a JACK client named {name!r} is already running (another hushbridge?); "
                               f"choose another with --name ({e})", operation) from e
        where = f"JACK server {server!r}" if server else "the JACK server"
        detail = f"; libjack: {said[0]}" if said else ""
        raise BackendError(f"{where} is not running or refused the client {name!r} ({e}{detail})", operation) from e


def list_jack_ports(server: str | None = None) -> list[str]:
    """Full names of all ports of a running JACK server, ``[]`` when none runs.

    ``server`` defaults to ``$JACK_DEFAULT_SERVER`` or ``"default"``.
    """
    if jack is None:
        return []
    # "no server" is an answer here, not an error: keep libjack's connection messages off stderr
    try:
        with _libjack_quiet(lambda message: None):
            client = jack.Client("hushbridge-lsp", no_start_server=True, servername=server)
    except jack.JackOpenError:
        return []
    try:
        return [p.name for p in client.get_ports()]
    finally:
        client.close()


class JackBackend(Backend):
    """Run an :class:`~hushbridge.engine.Engine` as a JACK client.

    The client is opened and its ports registered here; :meth:`start` prepares the engine for
    the server's format, activates the client and makes the connections; :meth:`stop`
    deactivates it (a later :meth:`start` resumes); :meth:`close` also closes the client. Both are
    idempotent. Use as a context manager.

    Parameters
    ----------
    engine : Engine
        The engine to run; its ``channels`` sets the number of ports each way.
    name : str
        Client name (JACK appends ``-01``... if it is taken; see :attr:`client_name`).
    server : str, optional
        JACK server name; default ``$JACK_DEFAULT_SERVER`` or ``"default"``. The server is never
        started by the backend.
    connect_inputs, connect_outputs : str or sequence of str, optional
        Ports to connect on start. A sequence gives one port per channel, in order (``None``
        entries skip a channel); each entry is an exact port name or, failing that, a regular
        expression whose first match is used. A single string is a regular expression whose
        matches (in JACK's order) are connected to ``in_1``, ``in_2``... (``out_1``...).

    Raises
    ------
    BackendError
        The server is not running, a port cannot be registered, or (on start) a port to
        connect does not exist. The message names the operation.
    """

    name = "jack"

    def __init__(
        self,
        engine: Engine,
        name: str = "hushbridge",
        server: str | None = None,
        connect_inputs: PortSpec = None,
        connect_outputs: PortSpec = None,
    ) -> None:
        super().__init__(engine)
        self.server = server
        self.connect_inputs = connect_inputs
        self.connect_outputs = connect_outputs
        self._active = False
        self._latency = int(engine.latency_samples)
        self._format_lock = _threading.Lock()  # notification thread vs start()
        self._latency_lock = _threading.Lock()  # control threads publishing the latency
        self._io: tuple | None = None
        self._in_cycle = False  # the process callback is between reading _io and finishing with it
        self._in_hooks = False  # the process callback is calling the hooks
        self.client = _open_client(name, server, "opening JACK client")
        try:
            self.inports = [self.client.inports.register(f"in_{k + 1}") for k in range(engine.channels)]
            self.outports = [self.client.outports.register(f"out_{k + 1}") for k in range(engine.channels)]
            # before any callback is set: JACK may notify the sample rate at once (on its own
            # thread), and an engine a previous backend prepared re-formats for it here
            self._ptrs_in = [address_of(p._ptr) for p in self.inports]
            self._ptrs_out = [address_of(p._ptr) for p in self.outports]
            self._client_address = address_of(self.client._ptr)
            self.server_shutdown = ""
            self._hooks: list[Callable[[int], None]] = []
            self.client.set_process_callback(self._process)
            self.client.set_xrun_callback(self._on_xrun)
            self.client.set_blocksize_callback(self._on_blocksize)
            self.client.set_samplerate_callback(self._on_samplerate)
            self.client.set_shutdown_callback(self._on_shutdown)
            self._latency_cb = _LatencyCallback(self._on_latency)  # keep a reference while open
            err = _lib().jack_set_latency_callback(address_of(self.client._ptr), self._latency_cb, None)
            if err:
                raise BackendError(f"libjack returned {err}", "setting the JACK latency callback")
        except jack.JackError as e:
            self.client.close()
            raise BackendError(str(e), "registering JACK ports and callbacks") from e
        except BaseException:
            self.client.close()
            raise

    # == properties =============================================================================
    @property
    def client_name(self) -> str:
        """The name JACK gave the client (ports are ``<client_name>:in_1`` ...)."""
        return self.client.name

    @property
    def sample_rate(self) -> int:
        return int(self.client.samplerate)

    @property
    def block_size(self) -> int:
        return int(self.client.blocksize)

    @property
    def active(self) -> bool:
        return self._active

    @property
    def realtime(self) -> bool:
        """Whether the server runs its process threads with real-time priority."""
        return bool(self.client.realtime)

    # == lifecycle ==============================================================================
    def start(self) -> None:
        """Prepare the engine for the server's format, activate, connect, start housekeeping."""
        if self._active:
            return
        if not self.client._ptr:
            raise BackendError("the client is closed", "starting JACK backend")
        self.prepare()
        self._latency = int(self.engine.latency_samples)
        # a port that does not exist is refused before the client is activated: activating and
        # at once deactivating again is the path on which a clean-clone CI run once hung in
        # jack_deactivate (2 cores, both busy with real-time threads)
        pairs = (self._resolve(self.connect_inputs, self.inports, is_input=True),
                 self._resolve(self.connect_outputs, self.outports, is_input=False))
        # the full collection holds the GIL for tens of ms: do it before the callback runs, so
        # only the short one below (over what start-up adds after this) overlaps live audio
        self.engine.freeze_gc()
        try:
            self.client.activate()
        except jack.JackError as e:
            raise BackendError(str(e), "activating JACK client") from e
        self._active = True
        self.engine.attach(True)
        try:
            self._connect(pairs[0], is_input=True)
            self._connect(pairs[1], is_input=False)
        except BaseException:
            self.stop()
            raise
        self._start_housekeeping()
        self.publish_latency(self.engine.latency_samples)
        self.engine.freeze_gc()

    def stop(self) -> None:
        """Deactivate the client (disconnects its ports) and stop housekeeping. Idempotent."""
        if not self._active:
            return
        self._active = False
        self._stop_housekeeping()
        if self.client._ptr:
            self.client.deactivate(ignore_errors=True)
        self.engine.attach(False)  # no more callbacks: a later load swaps at once

    def close(self) -> None:
        """Stop and close the JACK client. Idempotent."""
        self.stop()
        if self.client._ptr:
            self.client.close(ignore_errors=True)

    # == connections ============================================================================
    def _resolve(self, spec: PortSpec, own: list, is_input: bool) -> list[tuple[str, object]]:
        """Pairs (other port name, own port) for a connect_* spec."""
        if spec is None:
            return []
        # our inputs take from output ports and the other way round
        kind = dict(is_audio=True, is_output=is_input, is_input=not is_input)
        what = "capture/output" if is_input else "playback/input"
        if isinstance(spec, str):
            try:
                found = [p for p in self.client.get_ports(spec, **kind) if p.name.split(":")[0] != self.client_name]
            except jack.JackError as e:
                raise BackendError(str(e), f"looking up JACK ports {spec!r}") from e
            if not found:
                raise BackendError(
                    f"no {what} audio port matches {spec!r} (available: {self._available(kind)})",
                    f"connecting JACK {'inputs' if is_input else 'outputs'}",
                )
            return [(p.name, mine) for p, mine in zip(found, own)]
        entries = list(spec)
        if len(entries) > len(own):
            raise BackendError(f"{len(entries)} ports to connect but only {len(own)} channels: {spec!r}",
                               f"connecting JACK {'inputs' if is_input else 'outputs'}")
        pairs = []
        for entry, mine in zip(entries, own):
            if entry is None:
                continue
            try:
                port = self.client.get_port_by_name(entry)
                name = port.name
            except jack.JackError:
                matches = []
                if _is_regex(entry):
                    try:
                        matches = self.client.get_ports(entry, **kind)
                    except jack.JackError:
                        matches = []
                if not matches:
                    raise BackendError(
                        f"no {what} audio port {entry!r} (available: {self._available(kind)})",
                        f"connecting JACK {'inputs' if is_input else 'outputs'}",
                    ) from None
                name = matches[0].name
            pairs.append((name, mine))
        return pairs

    def _available(self, kind: dict) -> str:
        names = [p.name for p in self.client.get_ports(**kind) if p.name.split(":")[0] != self.client_name]
        return ", ".join(names) or "none"

    def _connect(self, pairs: list[tuple[str, object]], is_input: bool) -> None:
        for other, mine in pairs:
            src, dst = (other, mine.name) if is_input else (mine.name, other)
            try:
                self.client.connect(src, dst)
            except jack.JackErrorCode as e:
                if "already exists" not in str(e):
                    raise BackendError(str(e), f"connecting {src} -> {dst}") from e
            except jack.JackError as e:
                raise BackendError(str(e), f"connecting {src} -> {dst}") from e

    # == latency ================================================================================
    def publish_latency(self, samples: int) -> None:
        """Announce the engine's latency in the JACK graph (any non-RT thread)."""
        self._latency = max(0, int(samples))
        # one at a time: two threads of one client in jack_recompute_total_latencies at once
        # (start() and the first housekeeping) deadlocked in libjack
        with self._latency_lock:
            if self._active and self.client._ptr:
                _lib().jack_recompute_total_latencies(address_of(self.client._ptr))

    @property
    def published_latency(self) -> int:
        """The latency (frames) the latency callback adds between ``in_k`` and ``out_k``."""
        return self._latency

    def _on_latency(self, mode: int, _arg: object) -> None:
        """JACK latency callback (notification thread): propagate ranges through the engine."""
        try:
            lib = _lib()
            lat = self._latency
            r = _LatencyRange()
            if mode == CAPTURE:
                pairs = zip(self._ptrs_in, self._ptrs_out)
            else:
                pairs = zip(self._ptrs_out, self._ptrs_in)
            for src, dst in pairs:
                lib.jack_port_get_latency_range(src, mode, _ctypes.byref(r))
                r.min += lat
                r.max += lat
                lib.jack_port_set_latency_range(dst, mode, _ctypes.byref(r))
        except Exception as e:  # noqa: BLE001 - a ctypes callback must not raise into libjack
            self.engine.callback_errors += 1
            self.engine.last_callback_error = f"latency callback: {e!r}"

    # == format changes (notification thread, process cycle suspended) =========================
    def _reformat(self, sample_rate: int, block_size: int) -> None:
        """Prepare the engine and the port buffers for a format, unless they already fit it. A new
        buffer size at the same rate keeps the prepared chain and all its state (the engine runs a
        block longer than it was prepared for in pieces): re-preparing reset every delay line and
        model, a hole of 3-7 ms of silence in the output and a restart of every effect."""
        with self._format_lock:
            spec = self.engine.spec
            io = self._io
            same_rate = spec is not None and spec.sample_rate == sample_rate
            if same_rate and io is not None and io[4] == block_size:
                return
            # JACK suspends the process cycle around format notifications, but a server or a
            # caller need not: park the callback on silence and let a cycle in flight finish
            # before the chain is re-prepared under it
            self._io = None
            t_end = _time.monotonic() + 0.5
            while self._in_cycle and _time.monotonic() < t_end:
                _time.sleep(0.0002)
            if not same_rate:
                self.engine.prepare(sample_rate, block_size)
            self.engine.period_frames = block_size
            ch = self.engine.channels
            inp = np.zeros((ch, block_size), dtype=np.float32)
            out = np.zeros((ch, block_size), dtype=np.float32)
            calls = cycle_calls()
            if calls is not None:  # (port address, row address) for the GIL-holding copies
                in_pairs = tuple((a, inp[k].ctypes.data, inp[k]) for k, a in enumerate(self._ptrs_in))
                out_pairs = tuple((a, out[k].ctypes.data) for k, a in enumerate(self._ptrs_out))
            else:
                in_pairs = tuple((port, inp[k]) for k, port in enumerate(self.inports))
                out_pairs = tuple((port, out[k]) for k, port in enumerate(self.outports))
            self._io = (inp, out, in_pairs, out_pairs, block_size, calls)  # one atomic rebinding

    def prepare(self) -> None:
        """Prepare the engine for the server's rate and period (nothing when it is already)."""
        self._reformat(self.sample_rate, self.block_size)

    def _on_blocksize(self, blocksize: int) -> None:
        try:
            spec = self.engine.spec  # no server calls from a notification callback
            if spec is None:
                return  # not started yet: start() prepares
            self._reformat(spec.sample_rate, int(blocksize))
        except Exception as e:  # noqa: BLE001
            self.engine.callback_errors += 1
            self.engine.last_callback_error = f"buffer size change to {blocksize}: {e!r}"
            raise jack.CallbackExit from e

    def _on_samplerate(self, samplerate: int) -> None:
        if self.engine.spec is None:
            return  # not started yet: start() prepares
        try:
            self._reformat(int(samplerate), self.engine.period_frames or self.engine.spec.max_block_size)
        except Exception as e:  # noqa: BLE001
            self.engine.callback_errors += 1
            self.engine.last_callback_error = f"sample rate change to {samplerate}: {e!r}"
            raise jack.CallbackExit from e

    def _on_xrun(self, _delayed_usecs: float) -> None:
        self.engine.note_xrun()

    @property
    def lost(self) -> str:
        return self.server_shutdown

    def _on_shutdown(self, status: object, reason: str) -> None:
        self.server_shutdown = reason or "JACK server shut down"
        self._active = False

    # == real time ==============================================================================
    def _process(self, frames: int) -> None:
        """JACK process callback. See the module docstring for the contract."""
        self._in_cycle = True
        io = self._io
        if io is None or frames > io[4]:
            for port in self.outports:
                port.get_array().fill(0.0)
            self.engine.late_blocks += 1
            self._in_cycle = False
            return
        inp, out, in_pairs, out_pairs, size, calls = io
        if calls is not None and calls.frames_since_cycle_start(self._client_address) * 2 > frames:
            # half the period gone before this callback ran: not our processing (late_blocks counts
            # that) but our process's thread waking late or waiting for the GIL; jackd names the
            # client alike at an xrun ("hushbridge was not finished")
            self.engine.late_starts += 1
        hooks = self._hooks
        if hooks:  # before the audio: a MIDI CC of this cycle may apply to this cycle's block
            self._in_hooks = True
            try:
                for hook in hooks:
                    try:
                        hook(frames)
                    except Exception as e:  # noqa: BLE001 - the audio below must still run
                        self.engine.callback_errors += 1
                        self.engine.last_callback_error = f"process hook: {e!r}"
            finally:
                self._in_hooks = False
        if calls is not None:
            get_buffer, memcpy, nbytes = calls.get_buffer, calls.memcpy, frames * 4
            for port, address, row in in_pairs:
                buffer = get_buffer(port, frames)
                if buffer:
                    memcpy(address, buffer, nbytes)
                else:  # no buffer (never seen from JACK in a cycle): silence, not stale audio
                    row.fill(0.0)
            if frames == size:
                self.engine.process(inp, out)
            else:
                self.engine.process(inp[:, :frames], out[:, :frames])
            for port, address in out_pairs:
                buffer = get_buffer(port, frames)
                if buffer:
                    memcpy(buffer, address, nbytes)
        elif frames == size:
            for port, row in in_pairs:
                row[:] = port.get_array()
            self.engine.process(inp, out)
            for port, row in out_pairs:
                port.get_array()[:] = row
        else:  # smaller than the prepared size (JACK does not do this, but be exact if it does)
            for port, row in in_pairs:
                row[:frames] = port.get_array()
            self.engine.process(inp[:, :frames], out[:, :frames])
            for port, row in out_pairs:
                port.get_array()[:] = row[:frames]
        self._in_cycle = False

    def add_process_hook(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(frames)`` in every process cycle before the audio (for MIDI ports on this
        client, :mod:`hushbridge.control.jack_midi`). It runs in the real-time thread: keep it tiny."""
        self._hooks = [*self._hooks, hook]  # a new list: the callback never sees one being changed

    def remove_process_hook(self, hook: Callable[[int], None]) -> None:
        """Stop calling ``hook``; on return it is not running either (a cycle that had begun
        calling hooks is waited for, up to HOOK_WAIT_S), so what it uses may be closed."""
        self._hooks = [h for h in self._hooks if h != hook]  # ==: each obj.method is a new bound method
        deadline = _time.monotonic() + HOOK_WAIT_S
        while self._in_hooks and self._active and _time.monotonic() < deadline:
            _time.sleep(0.0005)


def _is_regex(text: str) -> bool:
    return any(c in text for c in "*+?[](){}|^$\\")
