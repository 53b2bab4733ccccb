"""MIDI control of a running :class:`~hushbridge.engine.Engine` (DESIGN §3, STYLE rule 7).

Routing is kept apart from transport, as for OSC:

:class:`MidiMapper`
    Port-free. Takes :class:`mido.Message` objects (``mapper.handle(msg)``) or raw bytes
    (``mapper.feed(data)``) and applies the maps to the engine: ``engine.set(address, value,
    clamp=True, source=MIDI_SOURCE)``, ``engine.load_preset`` for program changes. Also MIDI
    learn (:meth:`MidiMapper.learn`) and the MIDI clock / transport (:class:`Transport`).
:class:`MidiInput`
    A thin transport: one input port (JACK through JACK-Client; ALSA, CoreMIDI or WinMM
    through python-rtmidi, the backend mido's ``mido.backends.rtmidi`` uses), either a virtual
    port others connect to or a named source port it connects to and, when that source
    disappears, reconnects to when it comes back (hot-plug). rtmidi's callback thread (or, on
    JACK, the service thread draining the port's queue) feeds the mapper; the service thread
    also applies 14-bit/NRPN timeouts and polls for the source port; preset loads run on a
    worker thread.
:class:`MidiStreamParser`
    Splits a raw MIDI byte stream into messages (running status, realtime bytes inside messages,
    sysex) and *counts* what it rejects; :class:`mido.Parser` silently drops the same garbage,
    and every rejected message must show in ``engine.dropped_messages``.

Map schema (TOML; the ``[midi]`` table of a preset, kept in :attr:`Preset.midi
<hushbridge.presets.Preset>`)::

    [midi]
    timeout_ms = 10            # optional: 14-bit pair / NRPN data wait (default 10 ms)

    [[midi.cc]]                # 7-bit CC -> parameter
    channel = 1                # 1..16; omitted = any channel
    cc = 7                     # 0..127
    address = "/hb/compressor/threshold_db"   # /hb/<id>/<param> or /hb/<id>/bypass
    curve = "lin"              # lin | log | exp (default lin)
    min = -40.0                # optional sub-range, in the parameter's units
    max = 0.0                  #   (default: the parameter's whole range; min > max also works)
    invert = false             # optional: 127 -> min, 0 -> max

    [[midi.cc]]                # 14-bit CC: MSB on cc (0..31), LSB on cc + 32, either order
    cc = 1
    cc14 = true
    address = "/hb/gain/gain_db"

    [[midi.nrpn]]              # NRPN: CC 99/98 select, 6/38 data entry (14-bit), 96/97 +/-
    channel = 1
    param = 1000               # 0..16383
    address = "/hb/eq/band1_gain_db"
    step = 128                 # optional: 96/97 step in 14-bit units (default 128 = one 7-bit step)
    # curve, min, max, invert as for CC

    [[midi.note]]              # note on toggles between min and max (bypass: 0 <-> 1)
    note = 36                  # 0..127; channel as for CC
    address = "/hb/limiter/bypass"
    mode = "toggle"            # toggle (default) | momentary (note on -> max, note off -> min)

    [midi.program]             # program change (0..127, any channel) -> preset name
    0 = "dialogue"
    1 = "podcast"

Several entries may share a source (one knob, several targets). A controller value becomes a
position ``x`` in 0..1 (7-bit ``v / 127``, 14-bit ``v / 16383``), ``invert`` makes it ``1 - x``,
the curve shapes it (``lin``: ``x``; ``exp``: ``(100**x - 1) / 99``, fine control at the bottom,
geometric for a range spanning a factor of 100, e.g. 10..1000 Hz; ``log``: its inverse, fine control
at the top) and the result is spread over ``min..max``; the engine clamps and quantises.

14-bit pairs: MSB then LSB or LSB then MSB are combined when the second arrives within
``timeout_ms``; a lone MSB is then applied as a 7-bit value and a lone LSB as the fine part of
the target's current position. NRPN data entry (CC 6 MSB, CC 38 LSB) pairs the same way; CC 96/97
move one ``step`` from the target's current position (the data byte is ignored); CC 101/100 (RPN)
or the null NRPN 127/127 deselect.

Presets: a mapper follows the engine's preset loads (``Engine.add_preset_listener``): a preset
with a ``[midi]`` table brings its maps and program table, one without keeps the current ones.

What counts as rejected (``engine.dropped_messages``): malformed bytes (stray data bytes without
running status, a message cut short by another status byte, an interrupted or oversized sysex, a
stray end-of-sysex, undefined status bytes 0xF4 0xF5 0xF9 0xFD), sysex (hushbridge has no sysex
protocol), a map whose address the current chain does not have, a program change whose preset
fails to load. Valid messages nothing is mapped to (an unmapped CC, pitch bend, aftertouch...)
are only counted in :attr:`MidiMapper.stats` (``ignored``); a program change with no preset
mapped is also logged as a warning (once per program number), since whoever sent it expected a
preset to load.

MIDI learn: ``mapper.learn("/hb/gain/gain_db")`` arms learn; the next note on, CC (a CC 0..31
followed within ``timeout_ms`` by its LSB partner becomes a 14-bit map) or NRPN data entry is
mapped to that address (replacing earlier maps of that address, and moving the control off other
addresses) and :meth:`MidiMapper.to_toml_dict` gives the table to save:
``save_preset(engine.chain, name, midi=mapper.to_toml_dict())``. The
message that was learned is not applied; the next one is.

Example::

    from hushbridge.control.midi import MidiInput, MidiMapper
    mapper = MidiMapper(engine, find_preset("dialogue").midi)
    with MidiInput(mapper, port="nanoKONTROL2", api="alsa"):   # or port=None: a virtual port
        ...

.. note::
   Handlers run on rtmidi's thread and share the GIL with the audio callback: each message is a
   few dict look-ups and one ``engine.set`` (which only queues a ``ParamChange``). Preset loads
   are handed to a worker thread.

.. note::
   JACK and the GIL: python-rtmidi keeps the GIL through its JACK calls (client open/close,
   port register/connect), each of which waits for a JACK cycle that a Python audio callback
   in the same process cannot finish without the GIL: a deadlock. So the JACK input uses
   JACK-Client (cffi releases the GIL in C calls), and its process callback only queues raw
   bytes; listing JACK MIDI ports (``list_input_ports``) still goes through rtmidi, so do it
   before the audio client starts.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import mido

from hushbridge.control.midi_fast import REPORT_S, CcFastPath
from hushbridge.control.waker import AVAILABLE as waker_available
from hushbridge.control.waker import Waker
from hushbridge.errors import HushbridgeError, ParamError

log = logging.getLogger(__name__)

MIDI_SOURCE = "midi"  # the ``source`` of engine changes made by MIDI (OSC feedback echoes them to all)
DEFAULT_TIMEOUT_S = 0.010
MAX_SYSEX = 4096
CURVE_BASE = 100.0
APIS = {"jack": "UNIX_JACK", "alsa": "LINUX_ALSA", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}

Kind = Literal["cc", "cc14", "nrpn", "note"]
Curve = Literal["lin", "log", "exp"]


class MidiError(HushbridgeError):
    """A MIDI port cannot be opened or listed."""


class MidiMapError(HushbridgeError, ValueError):
    """A ``[midi]`` table is malformed; the message names the entry and key."""


# == counting rejected messages ====================================================================
_DROP_LOCK = threading.Lock()


def count_dropped(engine: Any, n: int = 1) -> None:
    """Add ``n`` to ``engine.dropped_messages`` from any thread.

    Uses ``engine.count_dropped(n)`` when the engine has one; otherwise increments the plain int
    under a module lock (OSC increments it under its own lock, so two threads may still race).
    """
    hook = getattr(engine, "count_dropped", None)
    if hook is not None:
        hook(n)
        return
    with _DROP_LOCK:
        engine.dropped_messages += n


# == curves ========================================================================================
def _exp(x: float) -> float:
    return (CURVE_BASE ** x - 1.0) / (CURVE_BASE - 1.0)


def _log(x: float) -> float:
    return math.log1p((CURVE_BASE - 1.0) * x) / math.log(CURVE_BASE)


_CURVES: dict[str, tuple[Callable[[float], float], Callable[[float], float]]] = {
    "lin": (lambda x: x, lambda y: y),
    "exp": (_exp, _log),
    "log": (_log, _exp),
}


# == maps ==========================================================================================
@dataclass(frozen=True)
class MidiMap:
    """One source -> address mapping (see the module docstring for the TOML form).

    ``channel`` is 0-based here (0..15) and ``None`` for any channel; TOML uses 1..16.
    """

    kind: Kind
    number: int  # cc (MSB cc for cc14), note, or NRPN parameter number
    address: str
    channel: int | None = None
    curve: Curve = "lin"
    min: float | None = None
    max: float | None = None
    invert: bool = False
    mode: Literal["toggle", "momentary"] = "toggle"
    step: int = 128

    def range_for(self, param: Any) -> tuple[float, float]:
        lo = float(param.min) if self.min is None else self.min
        hi = float(param.max) if self.max is None else self.max
        return lo, hi

    def value(self, x: float, param: Any) -> float:
        """The parameter value for controller position ``x`` (0..1)."""
        x = min(1.0, max(0.0, x))
        if self.invert:
            x = 1.0 - x
        lo, hi = self.range_for(param)
        return lo + _CURVES[self.curve][0](x) * (hi - lo)

    def position(self, value: float, param: Any) -> float:
        """The controller position (0..1) that gives ``value`` (inverse of :meth:`value`)."""
        lo, hi = self.range_for(param)
        y = 0.0 if hi == lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
        x = _CURVES[self.curve][1](y)
        return 1.0 - x if self.invert else x

    def to_dict(self) -> dict[str, Any]:
        """The TOML table of this entry (defaults left out)."""
        d: dict[str, Any] = {}
        if self.channel is not None:
            d["channel"] = self.channel + 1
        key = {"cc": "cc", "cc14": "cc", "nrpn": "param", "note": "note"}[self.kind]
        d[key] = self.number
        if self.kind == "cc14":
            d["cc14"] = True
        d["address"] = self.address
        if self.kind != "note" and self.curve != "lin":
            d["curve"] = self.curve
        if self.min is not None:
            d["min"] = self.min
        if self.max is not None:
            d["max"] = self.max
        if self.invert:
            d["invert"] = True
        if self.kind == "note" and self.mode != "toggle":
            d["mode"] = self.mode
        if self.kind == "nrpn" and self.step != 128:
            d["step"] = self.step
        return d


_KEYS = {
    "cc": {"channel", "cc", "cc14", "address", "curve", "min", "max", "invert"},
    "nrpn": {"channel", "param", "address", "curve", "min", "max", "invert", "step"},
    "note": {"channel", "note", "address", "min", "max", "mode"},
}


def _int(where: str, entry: Mapping[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int | None:
    v = entry.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise MidiMapError(f"{where}: key {key!r}: needs an integer {lo}..{hi}, got {v!r}")
    return v


def _parse_entry(section: str, i: int, entry: Any) -> MidiMap:
    where = f"midi.{section}[{i}]"
    if not isinstance(entry, Mapping):
        raise MidiMapError(f"{where}: each [[midi.{section}]] entry must be a table")
    extra = set(entry) - _KEYS[section]
    if extra:
        raise MidiMapError(f"{where}: key {sorted(extra)[0]!r}: unknown (allowed: {', '.join(sorted(_KEYS[section]))})")
    address = entry.get("address")
    if not isinstance(address, str) or not address.startswith("/hb/") or address.count("/") != 3:
        raise MidiMapError(f"{where}: key 'address': needs /hb/<id>/<param> or /hb/<id>/bypass, got {address!r}")
    channel = _int(where, entry, "channel", 1, 16)
    kw: dict[str, Any] = {"address": address, "channel": None if channel is None else channel - 1}
    for key in ("min", "max"):
        if key in entry:
            v = entry[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise MidiMapError(f"{where}: key {key!r}: needs a finite number, got {v!r}")
            kw[key] = float(v)
    if "curve" in entry:
        if entry["curve"] not in _CURVES:
            raise MidiMapError(f"{where}: key 'curve': needs lin, log or exp, got {entry['curve']!r}")
        kw["curve"] = entry["curve"]
    if "invert" in entry:
        if not isinstance(entry["invert"], bool):
            raise MidiMapError(f"{where}: key 'invert': needs true or false, got {entry['invert']!r}")
        kw["invert"] = entry["invert"]
    if section == "cc":
        cc14 = entry.get("cc14", False)
        if not isinstance(cc14, bool):
            raise MidiMapError(f"{where}: key 'cc14': needs true or false, got {cc14!r}")
        number = _int(where, entry, "cc", 0, 31 if cc14 else 127)
        if number is None:
            raise MidiMapError(f"{where}: key 'cc': missing")
        return MidiMap("cc14" if cc14 else "cc", number, **kw)
    if section == "nrpn":
        number = _int(where, entry, "param", 0, 16383)
        if number is None:
            raise MidiMapError(f"{where}: key 'param': missing")
        step = _int(where, entry, "step", 1, 16383, 128)
        return MidiMap("nrpn", number, step=step, **kw)
    number = _int(where, entry, "note", 0, 127)
    if number is None:
        raise MidiMapError(f"{where}: key 'note': missing")
    mode = entry.get("mode", "toggle")
    if mode not in ("toggle", "momentary"):
        raise MidiMapError(f"{where}: key 'mode': needs toggle or momentary, got {mode!r}")
    return MidiMap("note", number, mode=mode, **kw)


def parse_midi_table(table: Mapping[str, Any] | None) -> tuple[list[MidiMap], dict[int, str], float]:
    """Check a ``[midi]`` table: its maps, program -> preset table and pair timeout (seconds)."""
    table = dict(table or {})
    extra = set(table) - {"cc", "nrpn", "note", "program", "timeout_ms"}
    if extra:
        raise MidiMapError(f"midi: key {sorted(extra)[0]!r}: unknown (allowed: cc, nrpn, note, program, timeout_ms)")
    maps: list[MidiMap] = []
    for section in ("cc", "nrpn", "note"):
        entries = table.get(section, [])
        if not isinstance(entries, list):
            raise MidiMapError(f"midi.{section}: needs an array of tables ([[midi.{section}]])")
        maps += [_parse_entry(section, i, e) for i, e in enumerate(entries)]
    program: dict[int, str] = {}
    prog = table.get("program", {})
    if not isinstance(prog, Mapping):
        raise MidiMapError("midi.program: needs a table such as { 0 = \"dialogue\" }")
    for key, name in prog.items():
        try:
            number = int(key)
        except (TypeError, ValueError):
            number = -1
        if not 0 <= number <= 127:
            raise MidiMapError(f"midi.program: key {key!r}: needs a program number 0..127")
        if not isinstance(name, str) or not name:
            raise MidiMapError(f"midi.program: key {key!r}: needs a preset name, got {name!r}")
        program[number] = name
    timeout = table.get("timeout_ms", DEFAULT_TIMEOUT_S * 1000)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 1000:
        raise MidiMapError(f"midi: key 'timeout_ms': needs a number of milliseconds 0..1000, got {timeout!r}")
    return maps, program, float(timeout) / 1000.0


# == raw byte streams ==============================================================================
def _data_length(status: int) -> int:
    """Data bytes after a (non-sysex, defined) status byte."""
    if status < 0xF0:
        return 1 if status & 0xF0 in (0xC0, 0xD0) else 2
    return {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0}.get(status, 0)


class MidiStreamParser:
    """Split a raw MIDI 1.0 byte stream into complete messages, counting what it rejects.

    Follows the MIDI 1.0 wire rules: running status for channel messages, realtime bytes (0xF8..)
    anywhere, even inside another message, system common messages cancel running status. Each
    rejection calls ``on_reject(reason)`` once: a run of stray data bytes counts once.

    Parameters
    ----------
    on_message : callable
        ``on_message(list_of_bytes)`` for every complete message (sysex included, F0 .. F7).
    on_reject : callable
        ``on_reject(reason)`` for every rejected message.
    """

    def __init__(self, on_message: Callable[[list[int]], None], on_reject: Callable[[str], None]) -> None:
        self.on_message = on_message
        self.on_reject = on_reject
        self._running = 0  # running status (channel messages only)
        self._msg: list[int] | None = None  # message being collected
        self._need = 0
        self._sysex: list[int] | None = None
        self._sysex_oversized = False
        self._stray = False

    def reset(self) -> None:
        self._running = 0
        self._msg = None
        self._sysex = None
        self._sysex_oversized = False
        self._stray = False

    def feed(self, data: Iterable[int]) -> None:
        for b in data:
            self.feed_byte(int(b) & 0xFF)

    def end_packet(self) -> None:
        """The end of one transport event (rtmidi, JACK): an incomplete channel or system common
        message is rejected. An open sysex stays open: a long one arrives in several events (the
        ALSA sequencer splits it into chunks), and it ends at its F7 or at the next status byte,
        counted once either way (each chunk used to count as a rejection of its own)."""
        if self._msg is not None:
            self.on_reject("incomplete message")
        sysex, oversized = self._sysex, self._sysex_oversized
        self.reset()
        self._sysex, self._sysex_oversized = sysex, oversized

    def end_stream(self) -> None:
        """The source is gone (closed, unplugged, reconnected): a sysex still open is rejected too."""
        self.end_packet()
        if self._sysex is not None:
            self.on_reject("unterminated sysex")
        self.reset()

    def feed_byte(self, b: int) -> None:
        if b >= 0xF8:  # realtime: never disturbs the message around it
            if b in (0xF9, 0xFD):
                self.on_reject(f"undefined realtime status 0x{b:02X}")
            else:
                self.on_message([b])
            return
        if b < 0x80:
            self._data(b)
            return
        self._stray = False
        if self._sysex is not None:
            if b == 0xF7:
                sysex, oversized = self._sysex, self._sysex_oversized
                self._sysex = None
                if oversized:
                    self.on_reject(f"sysex longer than {MAX_SYSEX} bytes")
                else:
                    sysex.append(0xF7)
                    self.on_message(sysex)
                return
            self._sysex = None
            self.on_reject("sysex interrupted by a status byte")
        if self._msg is not None:
            self._msg = None
            self.on_reject("message cut short by a status byte")
        if b == 0xF7:
            self._running = 0
            self.on_reject("end of sysex without a start")
        elif b == 0xF0:
            self._running = 0
            self._sysex, self._sysex_oversized = [0xF0], False
        elif b in (0xF4, 0xF5):
            self._running = 0
            self.on_reject(f"undefined status 0x{b:02X}")
        else:
            if b >= 0xF0:
                self._running = 0
            else:
                self._running = b
            need = _data_length(b)
            if need == 0:
                self.on_message([b])
            else:
                self._msg, self._need = [b], need

    def _data(self, b: int) -> None:
        if self._sysex is not None:
            if len(self._sysex) < MAX_SYSEX:
                self._sysex.append(b)
            else:
                self._sysex_oversized = True
            return
        msg = self._msg
        if msg is None:
            if not self._running:
                if not self._stray:
                    self._stray = True
                    self.on_reject("data byte without a status byte")
                return
            msg = self._msg = [self._running]
            self._need = _data_length(self._running)
        msg.append(b)
        if len(msg) > self._need:
            self._msg = None
            self.on_message(msg)


# == transport (MIDI clock) ========================================================================
TransportListener = Callable[["Transport", str], None]


class Transport:
    """Tempo and transport state from MIDI clock (0xF8, 24 per quarter note) and start/stop/continue.

    Attributes
    ----------
    bpm : float
        Smoothed tempo (0.0 until enough clock ticks arrived, and again once the clock has been
        silent for :attr:`STALE_S`): a least-squares fit of the tick times over the last two beats,
        counting a lost tick (an interval near twice the median) as two; a gap over 0.5 s restarts
        the estimate.
    playing : bool
        True after start or continue, False after stop, and when the clock has been silent for
        :attr:`STALE_S` (a master unplugged or crashed sends no stop): True again when that
        clock comes back (a master plugged in again plays on without sending start).
    ticks : int
        Clock ticks since start (or the last song position pointer; 6 per 16th note).
    beat : float
        The song position in quarter notes (``ticks / 24``).
    last_change : float
        ``time.monotonic()`` of the last change of ``bpm``, ``playing`` or ``beat``.

    Listeners, ``listener(transport, what)`` with ``what`` in ``"bpm"``, ``"playing"``, ``"beat"``,
    are called on the MIDI thread; ``"bpm"`` only when the tempo moved by at least
    :attr:`BPM_HYSTERESIS` (so a jittery clock does not flood feedback) or went to 0; ``"beat"``
    on start, on a song position pointer and on every quarter note while playing (not on every
    tick: 48 messages a second at 120 BPM to every client would be a flood).
    """

    WINDOW = 48  # ticks: two beats
    MIN_TICKS = 12
    GAP_S = 0.5
    STALE_S = 1.0  # no clock for this long: bpm 0 ("no clock")
    BPM_HYSTERESIS = 0.1

    def __init__(self) -> None:
        self.bpm = 0.0
        self.playing = False
        self.ticks = 0
        self.last_change = 0.0
        self._stamps: deque[float] = deque(maxlen=self.WINDOW)
        self._last_tick = 0.0  # time.monotonic() of the last tick
        self._lost_while_playing = False  # the clock went silent while playing (see expire)
        self._listeners: list[TransportListener] = []

    def add_listener(self, listener: TransportListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: TransportListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, what: str) -> None:
        self.last_change = time.monotonic()
        for listener in list(self._listeners):
            try:
                listener(self, what)
            except Exception:  # noqa: BLE001 - a listener must not stop MIDI
                log.exception("transport listener failed")

    def clock(self, stamp: float, now: float | None = None) -> None:
        """One clock tick at ``stamp`` (seconds, any clock); ``now``: ``time.monotonic()``."""
        self._last_tick = time.monotonic() if now is None else now
        if self._lost_while_playing:
            self._lost_while_playing = False
            self._set_playing(True)
        stamps = self._stamps
        if stamps and stamp - stamps[-1] > self.GAP_S:
            stamps.clear()
        stamps.append(stamp)
        if self.playing:
            self.ticks += 1
            if self.ticks % 24 == 0:
                self._notify("beat")
        if len(stamps) >= self.MIN_TICKS:
            tick_s = _tick_interval(stamps)
            if tick_s > 0.0:
                bpm = 60.0 / (24.0 * tick_s)
                if abs(bpm - self.bpm) >= self.BPM_HYSTERESIS:
                    self.bpm = bpm
                    self._notify("bpm")

    def expire(self, now: float) -> None:
        """Tempo 0 and stopped once the clock has been silent for :attr:`STALE_S` (the MIDI thread
        calls it)."""
        if self.bpm != 0.0 and now - self._last_tick >= self.STALE_S:
            self.bpm = 0.0
            self._stamps.clear()
            self._notify("bpm")
            if self.playing:
                self._set_playing(False)
                self._lost_while_playing = True  # its clock coming back plays on (no start is sent)

    def deadline(self) -> float | None:
        """When :meth:`expire` has something to do (``None``: no tempo to expire)."""
        return self._last_tick + self.STALE_S if self.bpm != 0.0 else None

    @property
    def beat(self) -> float:
        return self.ticks / 24.0

    def start(self) -> None:
        self._lost_while_playing = False
        self.ticks = 0
        self._set_playing(True)
        self._notify("beat")

    def cont(self) -> None:
        self._lost_while_playing = False
        self._set_playing(True)

    def stop(self) -> None:
        self._lost_while_playing = False
        self._set_playing(False)

    def song_position(self, sixteenths: int) -> None:
        self.ticks = 6 * sixteenths
        self._notify("beat")

    def _set_playing(self, playing: bool) -> None:
        if playing != self.playing:
            self.playing = playing
            self._notify("playing")

    def state(self) -> dict[str, float | bool | int]:
        return {"bpm": self.bpm, "playing": self.playing, "ticks": self.ticks, "beat": self.beat,
                "last_change": self.last_change}


def _tick_interval(stamps: deque[float]) -> float:
    """Seconds per clock tick: the least-squares slope of tick time over tick number, where an
    interval of about k times the median counts as k ticks (lost ones in between)."""
    t = list(stamps)
    gaps = sorted(b - a for a, b in zip(t, t[1:]))
    med = gaps[len(gaps) // 2]
    if med <= 0.0:
        return 0.0
    idx = [0]
    for a, b in zip(t, t[1:]):
        idx.append(idx[-1] + max(1, round((b - a) / med)))
    n = len(t)
    mi, mt = sum(idx) / n, sum(t) / n
    var = sum((i - mi) ** 2 for i in idx)
    return sum((i - mi) * (x - mt) for i, x in zip(idx, t)) / var if var > 0 else 0.0


# == routing =======================================================================================
class _Pair:
    """A half-received 14-bit value (MSB or LSB) waiting for its partner."""

    __slots__ = ("deadline", "lsb", "maps", "msb")

    def __init__(self, maps: list[MidiMap], deadline: float) -> None:
        self.maps = maps
        self.deadline = deadline
        self.msb: int | None = None
        self.lsb: int | None = None


_NRPN_CCS = (6, 38, 96, 97, 98, 99, 100, 101)
LearnListener = Callable[[str, MidiMap], None]


class MidiMapper:
    """Applies MIDI messages to an engine through maps; no ports (see the module docstring).

    Parameters
    ----------
    engine : Engine
        The engine to control.
    table : mapping, optional
        A ``[midi]`` table (e.g. ``find_preset(name).midi``); raises :class:`MidiMapError`.
    run_slow : callable, optional
        ``run_slow(fn)`` runs a preset load elsewhere (:class:`MidiInput` uses a worker thread).
        Default: inline.
    transport : Transport, optional
        Receives clock and start/stop/continue (a new one by default).

    Examples
    --------
    >>> mapper = MidiMapper(engine, {"cc": [{"cc": 7, "address": "/hb/gain/gain_db"}]})  # doctest: +SKIP
    >>> mapper.handle(mido.Message("control_change", control=7, value=127))             # doctest: +SKIP
    """

    def __init__(self, engine: Any, table: Mapping[str, Any] | None = None, *,
                 run_slow: Callable[[Callable[[], None]], None] | None = None,
                 transport: Transport | None = None) -> None:
        self.engine = engine
        self.run_slow = run_slow
        self.transport = transport or Transport()
        self.stats = {"received": 0, "applied": 0, "ignored": 0, "rejected": 0}
        self.last_error = ""
        self._unmapped_programs: set[int] = set()
        self.on_pending: Callable[[], None] | None = None  # MidiInput wakes its service thread
        self._lock = threading.RLock()
        self._learn: str | None = None
        self._learn_candidate: tuple[int, int, float] | None = None  # channel, cc, deadline
        self._learn_listeners: list[LearnListener] = []
        self._pairs: dict[tuple[str, int, int], _Pair] = {}
        self._last: dict[tuple[str, int, int], int] = {}  # last 14-bit value / MSB per source
        self._nrpn: dict[int, tuple[str | None, int, int]] = {}  # channel -> (kind, msb, lsb)
        self._parser = MidiStreamParser(self._on_bytes, self.reject)
        #: called (any thread, mapper lock held) when maps or the learn state change
        self._change_listeners: list[Callable[[], None]] = []
        self.load(table)
        if hasattr(engine, "add_preset_listener"):
            engine.add_preset_listener(self._preset_loaded)
        if hasattr(engine, "publish"):
            self.transport.add_listener(self._publish_transport)
            # readable from the start (0: no MIDI clock yet / stopped): a controller polls on connect
            for address in ("/hb/transport/tempo_bpm", "/hb/transport/playing", "/hb/transport/beat"):
                if not engine.is_published(address):
                    engine.publish(address, 0.0, source=MIDI_SOURCE)

    def _publish_transport(self, transport: Transport, what: str) -> None:
        """Transport listener: ``/hb/transport/tempo_bpm`` (0.1 BPM steps), ``/playing`` and ``/beat``
        through ``engine.publish`` (readable with ``/hb/get``, echoed as OSC feedback)."""
        if what == "bpm":
            self.engine.publish("/hb/transport/tempo_bpm", round(transport.bpm, 1), source=MIDI_SOURCE)
        elif what == "playing":
            self.engine.publish("/hb/transport/playing", 1.0 if transport.playing else 0.0, source=MIDI_SOURCE)
        elif what == "beat":
            self.engine.publish("/hb/transport/beat", transport.beat, source=MIDI_SOURCE)

    def close(self) -> None:
        """Stop following the engine's preset loads."""
        if hasattr(self.engine, "remove_preset_listener"):
            self.engine.remove_preset_listener(self._preset_loaded)

    def _preset_loaded(self, preset: Any) -> None:
        """Engine preset listener: a preset with a ``[midi]`` table brings its maps and program
        table (whatever loaded it: a program change, OSC, a host script); one without keeps the
        current ones, so a controller set up once works across presets that do not map it."""
        if preset.midi:
            self.load(preset.midi)

    # == maps ====================================================================================
    def load(self, table: Mapping[str, Any] | None) -> None:
        """Replace all maps with those of a ``[midi]`` table."""
        maps, program, timeout = parse_midi_table(table)
        with self._lock:
            self.timeout = timeout
            self.program = program
            self._set_maps(maps)

    def _set_maps(self, maps: list[MidiMap]) -> None:
        index: dict[tuple[str, int | None, int], list[MidiMap]] = {}
        for m in maps:
            index.setdefault((m.kind, m.channel, m.number), []).append(m)
        self.maps = list(maps)
        self._index = index
        self._pairs.clear()
        self._changed()

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called when the maps or the learn state change (mapper lock held:
        keep it short, e.g. :meth:`CcFastPath.invalidate <hushbridge.control.midi_fast.CcFastPath.invalidate>`)."""
        self._change_listeners.append(listener)

    def remove_change_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._change_listeners:
            self._change_listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._change_listeners):
            listener()

    def add(self, m: MidiMap) -> None:
        with self._lock:
            self._set_maps([*self.maps, m])

    def remove_address(self, address: str) -> int:
        """Remove every map to ``address``; returns how many there were."""
        with self._lock:
            keep = [m for m in self.maps if m.address != address]
            n = len(self.maps) - len(keep)
            self._set_maps(keep)
            return n

    def to_toml_dict(self) -> dict[str, Any]:
        """The ``[midi]`` table of the current maps (for ``save_preset(..., midi=...)``): maps to
        addresses the engine's current chain lacks, and program changes to presets that no longer
        exist, are left out with a warning (a preset may only map its own chain and name presets
        that exist, see :func:`hushbridge.presets.parse_preset`), so the file saved loads again."""
        with self._lock:
            doc: dict[str, Any] = {}
            if abs(self.timeout - DEFAULT_TIMEOUT_S) > 1e-9:
                doc["timeout_ms"] = self.timeout * 1000.0
            maps = [m for m in self.maps if self._targets_chain(m.address)]
            if len(maps) < len(self.maps):
                log.warning("preset save: %d MIDI map(s) to addresses not in this chain left out",
                            len(self.maps) - len(maps))
            for section, kinds in (("cc", ("cc", "cc14")), ("nrpn", ("nrpn",)), ("note", ("note",))):
                entries = [m.to_dict() for m in maps if m.kind in kinds]
                if entries:
                    doc[section] = entries
            if self.program:
                from hushbridge.presets import preset_exists

                # a preset deleted since the map was made would make the saved file refuse to load
                program = {str(k): v for k, v in sorted(self.program.items()) if preset_exists(v)}
                if len(program) < len(self.program):
                    gone = sorted({v for v in self.program.values() if not preset_exists(v)})
                    log.warning("preset save: MIDI program change(s) to %s left out: no such preset",
                                ", ".join(map(repr, gone)))
                if program:
                    doc["program"] = program
            return doc

    def _targets_chain(self, address: str) -> bool:
        try:
            self.engine.info(address)
        except ParamError:
            return False
        return True

    def _lookup(self, kind: str, channel: int, number: int) -> list[MidiMap]:
        index = self._index
        a = index.get((kind, channel, number))
        b = index.get((kind, None, number))
        if a and b:
            return a + b
        return a or b or []

    # == learn ===================================================================================
    def learn(self, address: str) -> None:
        """Arm MIDI learn: the next CC, 14-bit CC, NRPN or note moved is mapped to ``address``.

        Raises ParamError when the engine has no such address. This is what OSC ``/hb/learn
        <address>`` calls.
        """
        info = self.engine.info(address)  # ParamError for an unknown address
        with self._lock:
            self._learn = info.address
            self._learn_candidate = None
            self._changed()  # the JACK fast path stops taking CCs before this returns

    def cancel_learn(self) -> None:
        with self._lock:
            self._learn = None
            self._learn_candidate = None
            self._changed()

    @property
    def learning(self) -> str | None:
        """The address learn is armed for, or None."""
        return self._learn

    def add_learn_listener(self, listener: LearnListener) -> None:
        """``listener(address, midimap)`` is called (on the MIDI thread) when learn maps a control."""
        self._learn_listeners.append(listener)

    def remove_learn_listener(self, listener: LearnListener) -> None:
        if listener in self._learn_listeners:
            self._learn_listeners.remove(listener)

    def _learned(self, kind: Kind, channel: int, number: int) -> MidiMap:
        address = self._learn
        assert address is not None
        m = MidiMap(kind, number, address, channel)
        self._learn = None
        self._learn_candidate = None
        # learn moves a control, as in a DAW: the address's earlier maps go, and so do the maps
        # of this control to other addresses (one source to several targets is a TOML choice)
        same = {"cc": ("cc", "cc14"), "cc14": ("cc", "cc14")}.get(kind, (kind,))
        self._set_maps([x for x in self.maps
                        if x.address != address
                        and not (x.kind in same and x.number == number and x.channel in (channel, None))] + [m])
        return m

    def _learn_cc(self, channel: int, cc: int, now: float) -> MidiMap | None:
        """Learn from a CC; returns the new map, or None while it waits (14-bit) or skips it."""
        if cc in _NRPN_CCS:
            kind, msb, lsb = self._nrpn.get(channel, (None, 0, 0))
            if cc in (6, 38, 96, 97) and kind == "nrpn":
                return self._learned("nrpn", channel, (msb << 7) | lsb)
            if cc in (98, 99, 100, 101):
                return None
        cand = self._learn_candidate
        if cand is not None and cand[0] == channel and cand[2] >= now:
            if cand[1] < 32 and cc == cand[1] + 32:
                return self._learned("cc14", channel, cand[1])
            if 32 <= cand[1] < 64 and cc == cand[1] - 32:
                return self._learned("cc14", channel, cc)
        if cc < 64:
            if cand is None or cand[:2] != (channel, cc):  # a knob still moving keeps its deadline
                self._learn_candidate = (channel, cc, now + self.timeout)
                self._wake()
            return None
        return self._learned("cc", channel, cc)

    # == input ===================================================================================
    def feed(self, data: Iterable[int], *, packet: bool = False) -> None:
        """Feed raw MIDI bytes (a stream: running status carries over between calls; ``packet``:
        the bytes are one complete transport event, anything left incomplete is rejected)."""
        self._parser.feed(data)
        if packet:
            self._parser.end_packet()

    def _on_bytes(self, data: list[int]) -> None:
        try:
            msg = mido.Message.from_bytes(data)
        except (ValueError, TypeError) as e:
            self.reject(f"invalid message {bytes(data[:8]).hex()}: {e}")
            return
        self.handle(msg)

    def reject(self, reason: str) -> None:
        """Count one rejected message (``engine.dropped_messages`` and ``stats``)."""
        self.stats["rejected"] += 1
        self.last_error = reason
        count_dropped(self.engine)

    def handle(self, msg: mido.Message, now: float | None = None, stamp: float | None = None) -> None:
        """Apply one message. ``now``: ``time.monotonic()`` (for pair timeouts); ``stamp``: the
        message's time in seconds on any clock (for the tempo estimate; default ``now``).
        Never raises: failures are counted (see :meth:`reject`)."""
        if now is None:
            now = time.monotonic()
        try:
            self.stats["received"] += 1
            t = msg.type
            if t == "control_change":
                self._apply(self._control_change(msg.channel, msg.control, msg.value, now))
            elif t == "note_on" or t == "note_off":
                self._apply(self._note(msg.channel, msg.note, msg.velocity if t == "note_on" else 0))
            elif t == "clock":
                self.transport.clock(now if stamp is None else stamp, now)
            elif t == "start":
                self.transport.start()
            elif t == "stop":
                self.transport.stop()
            elif t == "continue":
                self.transport.cont()
            elif t == "songpos":
                self.transport.song_position(msg.pos)
            elif t == "program_change":
                self._program(msg.program)
            elif t == "sysex":
                self.reject("sysex is not supported")
            else:
                self.stats["ignored"] += 1
        except Exception as e:  # noqa: BLE001 - never into rtmidi's thread
            log.debug("MIDI message %s failed", msg, exc_info=e)
            self.reject(f"{msg}: {type(e).__name__}: {e}")

    def flush(self, now: float | None = None) -> None:
        """Apply 14-bit halves and learn candidates whose partner did not come within the timeout."""
        if now is None:
            now = time.monotonic()
        actions: list[tuple[MidiMap, float]] = []
        with self._lock:
            for key, pair in list(self._pairs.items()):
                if pair.deadline <= now:
                    del self._pairs[key]
                    actions += self._complete(key, pair, lone=True)
            cand = self._learn_candidate
            learned = None
            if cand is not None and cand[2] <= now and self._learn is not None:
                learned = self._learned("cc", cand[0], cand[1])
        if learned is not None:
            self._notify_learned(learned)
        self._apply(actions)
        self.transport.expire(now)

    def next_deadline(self) -> float | None:
        """The earliest ``time.monotonic()`` at which :meth:`flush` has something to do."""
        deadlines = [p.deadline for p in list(self._pairs.values())]
        cand = self._learn_candidate
        if cand is not None:
            deadlines.append(cand[2])
        stale = self.transport.deadline()
        if stale is not None:
            deadlines.append(stale)
        return min(deadlines) if deadlines else None

    def _wake(self) -> None:
        if self.on_pending is not None:
            self.on_pending()

    def _notify_learned(self, m: MidiMap) -> None:
        for listener in list(self._learn_listeners):
            try:
                listener(m.address, m)
            except Exception:  # noqa: BLE001
                log.exception("learn listener failed")

    # == message kinds ===========================================================================
    def _control_change(self, channel: int, cc: int, value: int, now: float) -> list[tuple[MidiMap, float]]:
        actions: list[tuple[MidiMap, float]] = []
        learned: MidiMap | None = None
        with self._lock:
            # while learning, a moving knob is the learn gesture and nothing else: a CC under 64
            # waits a moment for a 14-bit partner, and in that moment its old maps moved their
            # parameters with it (QA: re-learning a fader dragged its old target to 0)
            learning = self._learn is not None
            if learning:
                learned = self._learn_cc(channel, cc, now)
            if cc in _NRPN_CCS:
                actions += self._nrpn_cc(channel, cc, value, now, skip=learning)
            mapped = cc in _NRPN_CCS or learning
            if not learning:
                maps = self._lookup("cc", channel, cc)
                for m in maps:
                    actions.append((m, value / 127.0))
                if cc < 64:
                    half = cc if cc < 32 else cc - 32
                    mapped = mapped or bool(maps) or bool(self._lookup("cc14", channel, half))
                    actions += self._cc14(channel, cc, value, now)
                else:
                    mapped = mapped or bool(maps)
        if learned is not None:
            self._notify_learned(learned)
        if not mapped:
            self.stats["ignored"] += 1
        return actions

    def _cc14(self, channel: int, cc: int, value: int, now: float) -> list[tuple[MidiMap, float]]:
        is_msb = cc < 32
        number = cc if is_msb else cc - 32
        maps = self._lookup("cc14", channel, number)
        if not maps:
            return []
        return self._half(("cc14", channel, number), maps, is_msb, value, now)

    def _half(self, key: tuple[str, int, int], maps: list[MidiMap], is_msb: bool, value: int,
              now: float) -> list[tuple[MidiMap, float]]:
        """One half of a 14-bit value arrived: combine with a waiting partner or wait for one."""
        pair = self._pairs.get(key)
        if pair is not None and (pair.msb is None) == is_msb:  # the partner is waiting
            del self._pairs[key]
            if is_msb:
                pair.msb = value
            else:
                pair.lsb = value
            return self._complete(key, pair, lone=False)
        out: list[tuple[MidiMap, float]] = []
        if pair is not None:  # the same half again: the earlier one was alone
            del self._pairs[key]
            out = self._complete(key, pair, lone=True)
        pair = _Pair(maps, now + self.timeout)
        if is_msb:
            pair.msb = value
        else:
            pair.lsb = value
        self._pairs[key] = pair
        self._wake()
        return out

    def _complete(self, key: tuple[str, int, int], pair: _Pair, *, lone: bool) -> list[tuple[MidiMap, float]]:
        if pair.msb is not None and pair.lsb is not None:
            v14 = (pair.msb << 7) | pair.lsb
            x = v14 / 16383.0
        elif pair.msb is not None:  # a lone MSB: a 7-bit value
            v14 = pair.msb << 7
            x = pair.msb / 127.0
        else:  # a lone LSB: a fine change under the target's current coarse position
            assert pair.lsb is not None
            v14 = (self._current14(key, pair.maps) & ~0x7F) | pair.lsb
            x = v14 / 16383.0
        self._last[key] = v14
        return [(m, x) for m in pair.maps]

    def _current14(self, key: tuple[str, int, int], maps: list[MidiMap]) -> int:
        """The first target's current value as a 14-bit controller position, so that relative
        input (a lone LSB, NRPN increment) starts where OSC, a preset or another map left it."""
        m = maps[0]
        try:
            return round(m.position(self.engine.get(m.address), self.engine.info(m.address).param) * 16383)
        except ParamError:  # the target is not in the current chain: MIDI's own last value
            return self._last.get(key, 0)

    def _nrpn_cc(self, channel: int, cc: int, value: int, now: float, skip: bool) -> list[tuple[MidiMap, float]]:
        kind, msb, lsb = self._nrpn.get(channel, (None, 0, 0))
        if cc in (99, 98, 101, 100):
            out = self._flush_nrpn(channel)  # a new selection completes pending data entry
            if cc == 99:
                kind, msb = "nrpn", value
            elif cc == 98:
                kind, lsb = "nrpn", value
            else:
                kind = "rpn"
            if kind == "nrpn" and msb == 127 and lsb == 127:
                kind = None  # null NRPN
            self._nrpn[channel] = (kind, msb, lsb)
            return out
        if kind != "nrpn" or skip:
            return []
        number = (msb << 7) | lsb
        maps = self._lookup("nrpn", channel, number)
        if not maps:
            return []
        key = ("nrpn", channel, number)
        if cc in (6, 38):
            return self._half(key, maps, cc == 6, value, now)
        # 96 increment / 97 decrement: one step (the map's, in 14-bit units) per message; the data
        # byte is ignored, as buttons send 127 with it. A data entry still waiting for its other
        # half completes first, and the step starts from it (its value reaches the engine only
        # with this message's actions, so engine.get would still give the one before)
        entered = key in self._pairs
        out = self._flush_nrpn(channel)
        base = self._last[key] if entered else self._current14(key, maps)
        step = maps[0].step
        v14 = min(16383, max(0, base + (step if cc == 96 else -step)))
        self._last[key] = v14
        return out + [(m, v14 / 16383.0) for m in maps]

    def _flush_nrpn(self, channel: int) -> list[tuple[MidiMap, float]]:
        out: list[tuple[MidiMap, float]] = []
        for key in [k for k in self._pairs if k[0] == "nrpn" and k[1] == channel]:
            out += self._complete(key, self._pairs.pop(key), lone=True)
        return out

    def _note(self, channel: int, note: int, velocity: int) -> list[tuple[MidiMap, float]]:
        learned: MidiMap | None = None
        with self._lock:
            if self._learn is not None and velocity > 0:
                learned = self._learned("note", channel, note)
            maps = [] if learned is not None else self._lookup("note", channel, note)
        if learned is not None:
            self._notify_learned(learned)
            return []
        actions: list[tuple[MidiMap, float]] = []
        for m in maps:
            if m.mode == "momentary":
                actions.append((m, 1.0 if velocity > 0 else 0.0))
            elif velocity > 0:  # toggle on note on; note off does nothing
                lo, hi = m.range_for(self.engine.info(m.address).param)
                current = self.engine.get(m.address)
                actions.append((m, 0.0 if abs(current - hi) < abs(current - lo) else 1.0))
        if not maps:
            self.stats["ignored"] += 1
        return actions

    def _program(self, program: int) -> None:
        name = self.program.get(program)
        if name is None:
            self.stats["ignored"] += 1
            if program not in self._unmapped_programs:  # once per number: a controller may send it on every touch
                self._unmapped_programs.add(program)
                mapped = ", ".join(f"{k} = {v!r}" for k, v in sorted(self.program.items())) or "none"
                log.warning("MIDI program change %d: no preset mapped to it (the preset's [midi.program] "
                            "maps: %s)", program, mapped)
            return

        def load() -> None:
            try:
                self.engine.load_preset(name, source=MIDI_SOURCE)
            except Exception as e:  # noqa: BLE001 - counted; the worker lives on
                log.warning("MIDI program change %d: preset %r failed: %s", program, name, e)
                self.reject(f"program change {program}: {e}")

        if self.run_slow is None:
            load()
        else:
            self.run_slow(load)

    def _apply(self, actions: list[tuple[MidiMap, float]]) -> None:
        """Set each target (outside the mapper lock: engine listeners may send OSC feedback)."""
        engine = self.engine
        for m, x in actions:
            try:
                info = engine.info(m.address)
                engine.set(m.address, m.value(x, info.param), clamp=True, source=MIDI_SOURCE)
                self.stats["applied"] += 1
            except ParamError as e:  # the map names an address the current chain lacks
                self.reject(str(e))


def describe(m: MidiMap) -> str:
    """A short label of a map's source, e.g. ``"cc 74 ch 5"``, ``"cc14 1/33"``, ``"nrpn 1000"``."""
    what = {"cc": f"cc {m.number}", "cc14": f"cc14 {m.number}/{m.number + 32}",
            "nrpn": f"nrpn {m.number}", "note": f"note {m.number}"}[m.kind]
    return what if m.channel is None else f"{what} ch {m.channel + 1}"


def attach_osc(controller: Any, mapper: MidiMapper) -> Callable[[], None]:
    """Wire MIDI learn and the preset ``[midi]`` table into an OSC controller.

    ``/hb/learn <address>`` calls :meth:`MidiMapper.learn`, ``/hb/learn/cancel``
    :meth:`MidiMapper.cancel_learn`; registered clients and the client that asked get
    ``/hb/learn/armed <address>`` and ``/hb/learn/cancelled`` (a surface can light its learn
    button), and when learn maps a control ``/hb/learn/done <address> <source>`` (source as
    :func:`describe` gives it).
    ``/hb/preset/save`` stores :meth:`MidiMapper.to_toml_dict`. Returns a function that undoes it.
    """
    asked: dict[str, Any] = {}

    def on_learn(address: str | None, client: Any) -> None:
        if address is None:
            mapper.cancel_learn()
            asked.clear()
            controller.notify("/hb/learn/cancelled", (), also=client)
        else:
            # armed is said first: a control moved at once would otherwise have its done said
            # before it, and a surface's learn light would stay on
            controller.notify("/hb/learn/armed", (address,), also=client)
            asked.clear()
            asked["client"] = client
            mapper.learn(address)

    def on_learned(address: str, m: MidiMap) -> None:
        controller.notify("/hb/learn/done", (address, describe(m)), also=asked.pop("client", None))

    controller.set_learn_handler(on_learn)
    controller.set_preset_midi(mapper.to_toml_dict)
    mapper.add_learn_listener(on_learned)

    def detach() -> None:
        controller.set_learn_handler(None)
        controller.set_preset_midi(None)
        mapper.remove_learn_listener(on_learned)

    return detach


# == ports =========================================================================================
def _rtapi(api: str | None) -> int:
    import rtmidi

    if api in (None, "", "default"):
        return rtmidi.API_UNSPECIFIED
    name = APIS.get(api.lower(), api)
    value = getattr(rtmidi, f"API_{name}", None)
    if value is None or value not in rtmidi.get_compiled_api():
        compiled = [rtmidi.get_api_name(a) for a in rtmidi.get_compiled_api()]
        raise MidiError(f"MIDI API {api!r} is not available (python-rtmidi has: {', '.join(compiled)})")
    return value


def mido_backend(api: str | None = "jack") -> mido.Backend:
    """mido's rtmidi backend for ``api`` (``jack``, ``alsa``, ``coremidi``, ``winmm`` or None)."""
    _rtapi(api)
    if api in (None, "", "default"):
        return mido.Backend("mido.backends.rtmidi")
    return mido.Backend(f"mido.backends.rtmidi/{APIS.get(api.lower(), api)}")


def list_input_ports(api: str | None = "jack") -> list[str]:
    """Names of the MIDI sources (ports an input can connect to): JACK MIDI outputs through
    JACK-Client (see :class:`MidiInput` on rtmidi and the GIL), other APIs through mido's rtmidi
    backend."""
    if (api or "").lower() == "jack":
        try:
            import jack

            client = jack.Client("hushbridge-list", no_start_server=True)
        except Exception as e:  # noqa: BLE001 - JackOpenError without a server
            raise MidiError(f"cannot list MIDI inputs (jack API): {e}") from e
        try:
            return [p.name for p in client.get_ports(is_midi=True, is_output=True)]
        finally:
            client.close()
    try:
        return list(mido_backend(api).get_input_names())
    except MidiError:
        raise
    except Exception as e:  # noqa: BLE001 - rtmidi raises SystemError & co. without a server
        raise MidiError(f"cannot list MIDI inputs ({api or 'default'} API): {e}") from e


def match_port(wanted: str, names: list[str], current: str | None = None) -> int | None:
    """Index of ``wanted`` in ``names``: an exact name, else ``current`` (the port connected now)
    if it still contains it, else the only name containing it (ALSA adds ``client:port`` numbers
    that change when a device is plugged back in); None when absent or ambiguous."""
    if wanted in names:
        return names.index(wanted)
    if current is not None and current in names and wanted in current:
        return names.index(current)  # another port that also contains it must not cut this one off
    hits = [i for i, n in enumerate(names) if wanted in n]
    return hits[0] if len(hits) == 1 else None


JACK_DRAIN_S = 0.001  # how often a JACK MIDI input drains its port's queue where no Waker can wake it


class MidiInput:
    """A MIDI input port feeding a :class:`MidiMapper` (see the module docstring).

    Parameters
    ----------
    mapper : MidiMapper
        Where messages go; its ``run_slow`` is set to this input's worker thread if unset.
    port : str, optional
        A source port to connect to (exact name, or a unique part of it). It need not exist
        yet: the input connects when it appears, and reconnects whenever it comes back.
        ``None``: open a virtual port ``client_name:port_name`` others connect to (JACK, ALSA,
        CoreMIDI; not WinMM).
    api : str, optional
        ``"jack"`` (default), ``"alsa"``, ``"coremidi"``, ``"winmm"`` or None (rtmidi's default).
    server : str, optional
        JACK server name (default ``$JACK_DEFAULT_SERVER`` or ``default``).
    client_name, port_name : str
        Our client and port names (JACK shows ``hushbridge-midi:in``; with ``jack_host`` the
        client is the backend's).
    poll_s : float
        How often to look for the source port (hot-plug).
    jack_host : JackBackend, optional
        JACK only: put the MIDI port on this running backend's client (``<engine>:<port_name>``)
        instead of a client of our own, read in its process callback (one Python callback per
        cycle in the process instead of two).
    fast_cc : bool
        JACK only: apply plain 7-bit CC maps in the process callback
        (:mod:`hushbridge.control.midi_fast`): no thread wakes per cycle for them, and they
        reach the block of the cycle they arrive in (with ``jack_host``).

    On JACK the input is a JACK-Client client (:mod:`hushbridge.control.jack_midi`), not
    python-rtmidi, which keeps the GIL through JACK server calls and so deadlocks against a
    Python audio callback in the same process. Its process callback applies plain 7-bit CC maps
    itself (``fast_cc``, :mod:`hushbridge.control.midi_fast`) and only queues every other event's
    bytes and wakes the service thread (:class:`~hushbridge.control.waker.Waker`), which does
    all other parsing (where no Waker exists, Windows, the service thread drains the queue every
    :data:`JACK_DRAIN_S` instead). Other APIs call back from rtmidi's own non-real-time thread.

    Examples
    --------
    >>> with MidiInput(MidiMapper(engine), port=None, api="jack") as midi:   # doctest: +SKIP
    ...     print(midi.port_label)
    """

    def __init__(self, mapper: MidiMapper, port: str | None = None, *, api: str | None = "jack",
                 server: str | None = None, client_name: str = "hushbridge-midi", port_name: str = "in",
                 poll_s: float = 0.25, jack_host: Any = None, fast_cc: bool = True) -> None:
        self.mapper = mapper
        self.source = port
        self.api = api
        self.server = server
        self.client_name = client_name
        self.port_name = port_name
        self.poll_s = poll_s
        self.jack_host = jack_host
        if jack_host is not None:
            if (api or "").lower() != "jack":
                raise MidiError("jack_host needs the jack MIDI API")
            self.client_name = jack_host.client.name
        self.connected = False  # to the source port (always True for a virtual port once open)
        self.connected_to = ""
        self._ambiguous: tuple[str, ...] = ()  # the ports a substring --midi-in matched, warned once
        self.connects = 0
        self.disconnects = 0
        self._rt: Any = None
        self._rt_lock = threading.Lock()
        self._parser = MidiStreamParser(self._on_message_bytes, mapper.reject)
        self._stamp = 0.0
        self._stop = threading.Event()
        self._wake: Any = threading.Event()  # JACK: a Waker from start() on (see there)
        self._tasks: deque[Callable[[], None]] = deque()
        self._task_ready = threading.Event()
        self._service = threading.Thread(target=self._serve, name="hushbridge-midi", daemon=True)
        self._worker = threading.Thread(target=self._work, name="hushbridge-midi-worker", daemon=True)
        self._started = False
        self._closed = False
        #: JACK: the service thread drains the port's queue (see above), woken by the port's hook
        #: or, without a Waker, every JACK_DRAIN_S
        self._polling = (api or "").lower() == "jack"
        self._woken = False
        self._overflows_seen = 0
        self.fast_cc = fast_cc
        self._fast: Any = None  # the CcFastPath while it runs (JACK with a Waker)
        self.wakeups = 0  # service thread wake-ups (diagnostics: each one takes the GIL)
        self._failure = ""  # the service step's last error, logged once while it repeats

    @property
    def port_label(self) -> str:
        """What this input listens on, for messages."""
        if self.source is None:
            return f"virtual port {self.client_name}:{self.port_name}"
        state = f"connected to {self.connected_to}" if self.connected else "waiting for it to appear"
        return f"{self.source!r} ({state})"

    def start(self) -> MidiInput:
        if self._closed:
            raise RuntimeError("MidiInput is closed; create a new one")
        if self._started:
            return self
        rtapi = None if self._polling else _rtapi(self.api)  # JACK needs no rtmidi JACK API
        try:
            if self._polling:  # JACK: JACK-Client, which lets the GIL go in server calls
                from hushbridge.control.jack_midi import JackMidiIn

                rt = JackMidiIn(self.client_name, self.server, host=self.jack_host)
                if waker_available:  # the process hook wakes the service thread (no lock, GIL kept)
                    self._wake, self._woken = Waker(), True
                    rt.wake = self._wake.set
                    if self.fast_cc and hasattr(self.mapper.engine, "attach_ring"):
                        self._fast = CcFastPath(self.mapper, self._wake.set)
                        self._fast.attach()
                        rt.fast = self._fast.take
            else:
                import rtmidi

                rt = rtmidi.MidiIn(rtapi=rtapi, name=self.client_name)
        except Exception as e:  # noqa: BLE001 - e.g. SystemError / JackOpenError: no JACK server
            raise MidiError(f"cannot open MIDI ({self.api or 'default'} API): {e}") from e
        rt.ignore_types(sysex=False, timing=False, active_sense=True)
        self._rt = rt
        try:
            if self.source is None:
                try:
                    rt.open_virtual_port(self.port_name)
                except Exception as e:  # noqa: BLE001 - NotImplementedError on WinMM & co.
                    raise MidiError(f"cannot create a virtual MIDI port ({self.api or 'default'} API): {e}") from e
                if not self._polling:
                    rt.set_callback(self._on_event)
                self.connected = True
            else:
                if self._polling:  # JACK: our port is there from the start, for hand patching too
                    rt.open_virtual_port(self.port_name)
                self._check_source()
        except BaseException:
            rt.fast = None
            rt.delete()
            self._rt = None
            if self._fast is not None:
                self._fast.report()
                self._fast.detach()
                self._fast = None
            if self._woken:
                rt.wake = None
                self._wake.close()
                self._wake, self._woken = threading.Event(), False
            raise
        if self.mapper.run_slow is None:
            self.mapper.run_slow = self._submit
        self.mapper.on_pending = self._wake.set
        self._started = True
        self._service.start()
        self._worker.start()
        return self

    def close(self) -> None:
        """Stop the threads and close the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._task_ready.set()
        if self._started:
            self._service.join()
            self._worker.join()
        if self.mapper.on_pending == self._wake.set:
            self.mapper.on_pending = None
        if self.mapper.run_slow == self._submit:
            self.mapper.run_slow = None
        with self._rt_lock:
            rt, self._rt = self._rt, None
            if rt is not None:
                if not self._polling:
                    rt.cancel_callback()
                if self._fast is not None:
                    rt.fast = None
                rt.close_port()
                rt.delete()
        if self._fast is not None:  # rt.delete() returned: take() neither runs nor will run again
            self._fast.report()  # what it took since the service thread's last look
            self._fast.detach()
            self._fast = None
        if self._woken:  # rt.delete() returned: its hook neither runs nor will run again
            if rt is not None:
                rt.wake = None
            self._wake.close()
            self._wake, self._woken = threading.Event(), False
        self._parser.end_stream()  # the threads are gone: a sysex left open counts now
        self.connected = False

    stop = close

    def __enter__(self) -> MidiInput:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_connected(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connected

    # == rtmidi thread ===========================================================================
    def _on_event(self, event: tuple[list[int], float], data: object = None) -> None:
        """rtmidi callback: one complete event. Never raises."""
        try:
            message, delta = event
            self._stamp += delta
            self._parser.feed(message)
            self._parser.end_packet()
        except Exception as e:  # noqa: BLE001
            self._parser.reset()
            self.mapper.reject(f"MIDI input: {type(e).__name__}: {e}")

    def _on_message_bytes(self, data: list[int]) -> None:
        try:
            msg = mido.Message.from_bytes(data)
        except (ValueError, TypeError) as e:
            self.mapper.reject(f"invalid message {bytes(data[:8]).hex()}: {e}")
            return
        self.mapper.handle(msg, stamp=self._stamp)

    # == service thread ==========================================================================
    def _drain(self, rt: Any) -> None:
        """Hand every queued event to the parser (JACK, service thread); events the full
        queue lost are counted as dropped messages."""
        for _ in range(4096):  # bounded: a flood cannot keep this thread here
            event = rt.get_message()
            if event is None:
                break
            self._on_event(event)
            rt.handled()
        lost = rt.overflows - self._overflows_seen
        if lost > 0:
            self._overflows_seen += lost
            for _ in range(lost):
                self.mapper.reject(f"MIDI input: {lost} events lost (queue full, or a sysex over 512 bytes)")

    def _serve(self) -> None:
        next_poll = time.monotonic() + self.poll_s
        while not self._stop.is_set():
            now = time.monotonic()
            self.wakeups += 1
            report_again = math.inf
            try:
                # JACK: the port is ours and always there, so what a user patches into it by hand
                # plays too, connected to the named source or not (and nothing queues for later)
                fast = self._fast
                if fast is not None:
                    if fast.dirty:
                        fast.rebuild()
                    # before the queue: a toggle or an NRPN step queued after fast CCs starts
                    # from the value they set
                    if fast.report():
                        report_again = now + REPORT_S  # the knob may still move: its last value too
                if self._polling:
                    with self._rt_lock:
                        if self._rt is not None:
                            self._drain(self._rt)
                self.mapper.flush(now)
                if self.source is not None and now >= next_poll:
                    next_poll = now + self.poll_s
                    self._check_source()
                failure = ""
            except Exception as e:  # noqa: BLE001 - keep serving
                failure = f"{type(e).__name__}: {e}"
                if failure != self._failure:  # once per kind in a row: a poll every 0.25 s would flood the log
                    log.exception("MIDI service step failed (repeats of this error are logged at debug level)")
                else:
                    log.debug("MIDI service step failed again: %s", failure)
            self._failure = failure
            wake = next_poll if self.source is not None else now + self.poll_s
            deadline = self.mapper.next_deadline()
            if deadline is not None:
                wake = min(wake, deadline)
            if self._polling and not self._woken:
                wake = min(wake, now + JACK_DRAIN_S)
            wake = min(wake, report_again)
            self._wake.wait(max(0.0, wake - time.monotonic()))
            self._wake.clear()

    def _check_source(self) -> None:
        """Connect to the source port when it is there, let go of it when it is gone."""
        assert self.source is not None
        with self._rt_lock:
            rt = self._rt
            if rt is None:
                return
            if not getattr(rt, "usable", True):  # a host backend stopped (deactivated: no connections) or closed
                if self.connected:
                    self.connected = False
                    self.disconnects += 1
                    log.info("MIDI input: the engine's JACK client stopped; %r is connected again when it "
                             "starts", self.connected_to)
                return
            names = rt.get_ports()
            index = match_port(self.source, names, self.connected_to if self.connected else None)
            if index is None and not self.connected:
                hits = tuple(n for n in names if self.source in n)
                if len(hits) > 1 and hits != self._ambiguous:
                    log.warning("MIDI source %r matches %d ports (%s): name one exactly", self.source,
                                len(hits), ", ".join(hits))
                self._ambiguous = hits
            if self.connected and (index is None or names[index] != self.connected_to
                                   or not self._still_connected(names[index])):
                if not self._polling:
                    rt.cancel_callback()
                    rt.close_port()
                else:  # our JACK port stays, with whatever else a user patched into it
                    self._drain(rt)
                    rt.close_port(self.connected_to)
                self.connected = False
                self.disconnects += 1
                self._parser.end_stream()
                log.info("MIDI source %r went away; waiting for it", self.connected_to)
            if not self.connected and index is not None:
                if not self._polling:
                    rt.set_callback(self._on_event)
                rt.open_port(index, self.port_name)
                self._parser.end_stream()
                self.connected, self.connected_to = True, names[index]
                self.connects += 1
                log.info("MIDI input connected to %r", names[index])

    def _still_connected(self, source: str) -> bool:
        """JACK: whether ``source`` still feeds our port (a source closed and opened again
        between two polls has the same name but is no longer connected to us)."""
        watch = getattr(self._rt, "client", None)
        if watch is None:
            return True
        try:
            peers = watch.get_all_connections(source)
        except Exception:  # noqa: BLE001 - the port vanished meanwhile
            return False
        ours = f"{watch.name}:{self.port_name}"  # exactly: an engine "hb" is not "hb2"
        return any(p.name == ours for p in peers)

    # == worker (preset loads) ===================================================================
    def _submit(self, fn: Callable[[], None]) -> None:
        self._tasks.append(fn)
        self._task_ready.set()

    def _work(self) -> None:
        while not self._stop.is_set():
            self._task_ready.wait()
            self._task_ready.clear()
            while self._tasks:
                fn = self._tasks.popleft()
                try:
                    fn()
                except Exception:  # noqa: BLE001
                    log.exception("MIDI worker task failed")


__all__ = [
    "APIS",
    "MIDI_SOURCE",
    "MidiError",
    "MidiInput",
    "MidiMap",
    "MidiMapError",
    "MidiMapper",
    "MidiStreamParser",
    "Transport",
    "attach_osc",
    "count_dropped",
    "describe",
    "list_input_ports",
    "match_port",
    "mido_backend",
    "parse_midi_table",
]
