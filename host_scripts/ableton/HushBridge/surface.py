"""The HushBridge control surface: Live's transport out to hushbridge, hushbridge's ducking in.

Out: Live's tempo, play state and song position (beats) go to the engine as
``/hb/transport/...`` values (``/hb/host/transport``), which every OSC client of the engine
sees, as it sees MIDI clock.

In: the engine's ``duck`` effect hears the voice (the microphone through hushbridge, via
Live's External Audio Effect or track routing) and says how far a bed should be down
(``/hb/meter/gain_reduction/duck``, subscribed here); every Live track whose name holds the tag
(``[duck]``: "Music [duck]") is turned down by that much from where its fader was, and back.
A fader moved by hand during a duck becomes the new level to duck from. When the engine falls
silent (stopped, crashed) the tracks go back to their levels within a second; so they do when
the script is switched off.

Live calls :meth:`HushBridge.update_display` about every 100 ms; all the work happens there,
on Live's thread, never blocking: the socket is non-blocking and a tick reads at most
``MAX_DATAGRAMS``. Nothing is written to Live from a listener (Live refuses changes made from
notifications): listeners only mark what changed. No threads (Live's Python does not take them
well). Errors are caught per tick and logged (rate-limited) to Live's Log.txt; the script keeps
running. The socket binds 127.0.0.1 only.
"""
import json
import math
import os
import socket
import time

from . import oscmini

DEFAULTS = {
    "engine_host": "127.0.0.1",
    "engine_port": 9000,
    "duck_tag": "[duck]",
    "duck_meter": "/hb/meter/gain_reduction/duck",
    "meter_rate_hz": 20,
}
MAX_DATAGRAMS = 64  # per tick: a flood never holds Live's thread
HELLO_TICKS = 30  # re-register and re-subscribe every 3 s: an engine restarted finds us again
SILENT_S = 1.0  # no meter for this long: the engine is gone, the ducked tracks come back
LOG_EVERY_S = 10.0


def value_to_db(v):
    """A Live mixer volume (0..1; 0.85 is 0 dB, 1.0 is +6 dB) in dB: the piecewise fit of Live's
    fader law measured by AbletonOSC's users (issue #44; within about 0.5 dB of Live's display)."""
    if v <= 0.0:
        return -math.inf
    if v >= 0.4:
        return 40.0 * v - 34.0
    if v >= 0.15:
        return -((399.751894 * v - 201.871345) ** 2 + 12630.61132) / 799.503788
    return 118.426374 * v ** (5567.0 / 7504.0) - 70.0


def db_to_value(db):
    """The inverse of :func:`value_to_db`, clamped to 0..1."""
    if db >= -18.0:
        return min(1.0, (db + 34.0) / 40.0)
    if db >= -41.0:
        return (201.871345 - math.sqrt(max(0.0, -db * 799.503788 - 12630.61132))) / 399.751894
    if db <= -70.0:
        return 0.0
    return ((db + 70.0) / 118.426374) ** (7504.0 / 5567.0)


def load_config(folder=None):
    config = dict(DEFAULTS)
    path = os.path.join(folder or os.path.dirname(os.path.abspath(__file__)), "config.json")
    try:
        with open(path) as f:
            config.update(json.load(f))
    except (OSError, ValueError):
        pass
    return config


class _Ducked(object):
    """A track under the ducker: the level it is ducked from and the value last written."""

    def __init__(self, track, value):
        self.track = track
        self.base = value
        self.written = value


class HushBridge(object):
    """What ``create_instance`` returns: Live calls the methods below (a plain Remote Script,
    as Live's own MackieControl is, so no framework version matters)."""

    def __init__(self, c_instance, config=None):
        self._c = c_instance
        self._song = c_instance.song()
        self._config = config or load_config()
        self._engine = (self._config["engine_host"], int(self._config["engine_port"]))
        self._sock = None
        self._ticks = 0
        self._transport_dirty = True
        self._sent_beat = None
        self._cut_db = 0.0
        self._heard = -math.inf  # time.monotonic() of the last meter from the engine
        self._ducked = {}  # id(track) -> _Ducked
        self._last_log = -math.inf
        self.errors = 0
        self._listening = []  # (add/remove owner, property, callback)
        self._open_socket()
        self._listen(self._song, "tempo", self._on_transport)
        self._listen(self._song, "is_playing", self._on_transport)
        self._log("HushBridge: talking to hushbridge at %s:%d" % self._engine)

    # == what Live calls ==========================================================================
    def disconnect(self):
        """Live switches the script off (or reloads the set): tracks back to their levels,
        listeners and socket gone."""
        try:
            self._cut_db = 0.0
            self._apply_ducking(force_release=True)
        except Exception as e:  # noqa: BLE001 - tear down the rest whatever happens
            self._log("HushBridge: could not restore a ducked track: %r" % (e,))
        for owner, prop, callback in self._listening:
            try:
                getattr(owner, "remove_%s_listener" % prop)(callback)
            except RuntimeError:  # the object is gone already
                pass
        self._listening = []
        if self._sock is not None:
            self._send("/hb/unsubscribe")
            self._send("/hb/unregister")
            self._sock.close()
            self._sock = None

    def connect_script_instances(self, instanciated_scripts):
        pass

    def refresh_state(self):
        self._transport_dirty = True

    def port_settings_changed(self):
        self.refresh_state()

    def build_midi_map(self, midi_map_handle):
        pass

    def receive_midi(self, midi_bytes):
        pass

    def can_lock_to_devices(self):
        return False

    def suggest_input_port(self):
        return ""

    def suggest_output_port(self):
        return ""

    def suggest_map_mode(self, cc_no, channel):
        return -1

    def update_display(self):
        """Live's timer (about 100 ms): one tick of work, never raising into Live."""
        try:
            self._tick()
        except Exception as e:  # noqa: BLE001 - a bad tick is logged; the next one runs
            self.errors += 1
            self._log("HushBridge: %r" % (e,), limited=True)

    # == the work =================================================================================
    def _tick(self):
        self._ticks += 1
        if self._sock is None:
            self._open_socket()
        if self._sock is None:
            return
        if self._ticks % HELLO_TICKS == 1:
            self._send("/hb/register")
            self._send("/hb/subscribe", self._config["duck_meter"], int(self._config["meter_rate_hz"]))
        self._receive()
        self._send_transport()
        self._apply_ducking()

    def _receive(self):
        for _ in range(MAX_DATAGRAMS):
            try:
                data, _sender = self._sock.recvfrom(65536)
            except BlockingIOError:  # nothing waiting (Windows: WSAEWOULDBLOCK)
                return
            except ConnectionResetError:  # Windows reports a send to a closed port on the next read
                continue
            except OSError as e:
                self._log("HushBridge: receive failed: %s" % e, limited=True)
                return
            for address, args in oscmini.decode(data):
                self._handle(address, args)

    def _handle(self, address, args):
        if address == self._config["duck_meter"] and args and isinstance(args[0], (int, float)):
            cut = float(args[0])
            self._cut_db = cut if math.isfinite(cut) and cut > 0.0 else 0.0
            self._heard = time.monotonic()
        elif address == "/hb/error":
            self._log("HushBridge: hushbridge says: %s" % (args[0] if args else "?"), limited=True)

    def _send_transport(self):
        song = self._song
        beat = float(song.current_song_time)
        playing = bool(song.is_playing)
        # while playing, the position every tick it moved by a sixteenth or more; else on change
        moved = self._sent_beat is None or abs(beat - self._sent_beat) >= 0.25
        if self._transport_dirty or (playing and moved):
            self._transport_dirty = False
            self._sent_beat = beat
            self._send("/hb/host/transport", float(song.tempo), 1 if playing else 0, beat)

    def _apply_ducking(self, force_release=False):
        silent = time.monotonic() - self._heard > SILENT_S
        cut = 0.0 if (force_release or silent) else self._cut_db
        tag = self._config["duck_tag"]
        seen = set()
        for track in list(self._song.tracks):
            if tag not in (track.name or ""):
                continue
            key = id(track)
            seen.add(key)
            param = track.mixer_device.volume
            state = self._ducked.get(key)
            if state is None:
                state = self._ducked[key] = _Ducked(track, param.value)
            elif abs(param.value - state.written) > 1e-6:
                # moved by hand (or automation) since we wrote: the level to duck from now
                state.base = state.written = param.value
            target = state.base if cut <= 0.0 else db_to_value(value_to_db(state.base) - cut)
            target = min(param.max, max(param.min, target))
            if abs(target - param.value) > 1e-4:
                param.value = target
                state.written = param.value
        for key in [k for k in self._ducked if k not in seen]:  # untagged, or the track is gone
            del self._ducked[key]

    # == helpers ==================================================================================
    def _on_transport(self):
        self._transport_dirty = True  # a listener only marks: Live refuses changes from notifications

    def _listen(self, owner, prop, callback):
        getattr(owner, "add_%s_listener" % prop)(callback)
        self._listening.append((owner, prop, callback))

    def _open_socket(self):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(("127.0.0.1", 0))
        except OSError as e:
            self._log("HushBridge: no UDP socket (%s); retrying" % e, limited=True)
            self._sock = None
            return
        self._sock = sock

    def _send(self, address, *args):
        if self._sock is None:
            return
        try:
            self._sock.sendto(oscmini.encode(address, args), self._engine)
        except (BlockingIOError, ConnectionResetError, ConnectionRefusedError):
            pass  # the engine is not running (yet): the next hello finds it
        except OSError as e:
            self._log("HushBridge: send failed: %s" % e, limited=True)

    def _log(self, text, limited=False):
        now = time.monotonic()
        if limited and now - self._last_log < LOG_EVERY_S:
            return
        self._last_log = now
        try:
            self._c.log_message(text)
        except Exception:  # noqa: BLE001 - logging must never take the script down
            pass
