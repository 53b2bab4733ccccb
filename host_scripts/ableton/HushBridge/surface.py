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
HELLO_TICKS = 30  # re-subscribe every 3 s: an engine restarted finds us again
TRACKS_PER_TICK = 16  # track updates sent a tick: a big set is announced over a few ticks
REFUSED_TICKS = 300  # ... every 30 s while the engine says it has no such meter (no duck effect);
# meanwhile every HELLO_TICKS it asks the engine for the tempo we sent it: an engine that does
# not know it (restarted) is told everything again
SILENT_S = 1.0  # no meter for this long: the engine is gone, the ducked tracks come back
TEMPO = "/hb/transport/tempo_bpm"
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
    if db >= _DB_AT_04:
        return min(1.0, (db + 34.0) / 40.0)
    if db >= _DB_AT_015:
        return (201.871345 - math.sqrt(max(0.0, -db * 799.503788 - 12630.61132))) / 399.751894
    if db <= -70.0:
        return 0.0
    return ((db + 70.0) / 118.426374) ** (7504.0 / 5567.0)


_DB_AT_04 = value_to_db(0.4)  # where the fit's pieces meet (about -18 and -41 dB)
_DB_AT_015 = value_to_db(0.15)


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
    """A track under the ducker: the level it is ducked from and the value last written.
    Found again by ``==`` (Live compares its objects so, not by identity)."""

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
        self._sent_tracks = {}  # index -> (name, volume dB) as hushbridge last heard it
        self._sent_count = None
        self._next_track = 0  # where the next tick's track updates start (round robin)
        self._heard_any = -math.inf  # time.monotonic() of the last datagram from the engine
        self._cut_db = 0.0
        self._cut_max = 0.0  # the largest cut heard this tick (meters come faster than ticks)
        self._heard = -math.inf  # time.monotonic() of the last meter from the engine
        self._ducked = []  # _Ducked, one per tagged track
        self._last_log = {}  # kind -> time.monotonic() of its last log line
        self._next_hello = 1  # tick of the next subscribe (or, refused, of the next question)
        self._next_subscribe = 1  # refused: the tick of the next subscribe
        self._refused = False  # the engine said it has no duck meter
        self._active = True  # False: another HushBridge on this set does the ducking
        self._said_automated = set()  # tagged tracks left alone for their volume automation
        self.errors = 0
        self._listening = []  # (add/remove owner, property, callback)
        self._open_socket()
        self._listen(self._song, "tempo", self._on_transport)
        self._listen(self._song, "is_playing", self._on_transport)
        self._log("HushBridge: talking to hushbridge at %s:%d" % self._engine, kind="start")

    # == what Live calls ==========================================================================
    def disconnect(self):
        """Live switches the script off (or reloads the set): tracks back to their levels,
        listeners and socket gone."""
        try:
            self._cut_db = 0.0
            if self._active:
                self._apply_ducking(force_release=True)
        except Exception as e:  # noqa: BLE001 - tear down the rest whatever happens
            self._log("HushBridge: could not restore a ducked track: %r" % (e,), kind="restore")
        for owner, prop, callback in self._listening:
            try:
                getattr(owner, "remove_%s_listener" % prop)(callback)
            except RuntimeError:  # the object is gone already
                pass
        self._listening = []
        if self._sock is not None:
            self._send("/hb/unsubscribe")
            self._sock.close()
            self._sock = None

    def connect_script_instances(self, instanciated_scripts):
        """Two HushBridge surfaces on one set would each take the other's writes for a hand on
        the fader and duck again from there: the first one ducks, the others only send."""
        for script in instanciated_scripts:
            if script is self:
                return
            if type(script).__name__ == type(self).__name__:
                self._active = False
                self._show("HushBridge is chosen twice as a Control Surface: only the first one ducks")
                return

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
            self._log("HushBridge: %r" % (e,), kind="tick")

    # == the work =================================================================================
    def _tick(self):
        self._ticks += 1
        if self._sock is None:
            self._open_socket()
        if self._sock is None:
            return
        if self._ticks >= self._next_hello:
            self._next_hello = self._ticks + HELLO_TICKS
            if self._active and self._refused and self._ticks < self._next_subscribe:
                # no duck meter to follow: ask for the tempo we told it, so that a restarted engine
                # hears the tracks and transport within seconds (it took up to 30 s)
                self._send("/hb/get", TEMPO)
            elif self._active:
                self._send("/hb/subscribe", self._config["duck_meter"], int(self._config["meter_rate_hz"]))
                self._next_subscribe = self._ticks + REFUSED_TICKS
        self._cut_max = -1.0
        self._receive()
        if self._cut_max >= 0.0:
            self._cut_db = self._cut_max
        if not self._active:  # the first HushBridge surface speaks for this set
            return
        self._send_transport()
        self._apply_ducking()
        self._send_tracks()

    def _receive(self):
        for _ in range(MAX_DATAGRAMS):
            try:
                data, _sender = self._sock.recvfrom(65536)
            except BlockingIOError:  # nothing waiting (Windows: WSAEWOULDBLOCK)
                return
            except ConnectionResetError:  # Windows reports a send to a closed port on the next read
                continue
            except OSError as e:
                self._log("HushBridge: receive failed: %s" % e, kind="receive")
                return
            now = time.monotonic()
            if now - self._heard_any > SILENT_S and not self._refused:
                self._tell_everything()  # hushbridge (re)appeared
            self._heard_any = now
            for address, args in oscmini.decode(data):
                self._handle(address, args)

    def _handle(self, address, args):
        if address == self._config["duck_meter"] and args and isinstance(args[0], (int, float)):
            cut = float(args[0])
            self._cut_max = max(self._cut_max, cut if math.isfinite(cut) and cut > 0.0 else 0.0)
            self._heard = time.monotonic()
            self._refused = False
        elif address == "/hb/value" and len(args) > 1 and args[0] == TEMPO:
            if args[1] == 0.0 and self._song.tempo > 0:  # it has not heard our transport: a new engine
                self._tell_everything()
        elif address == "/hb/error" and args and TEMPO in str(args[0]):
            self._tell_everything()  # no tempo known at all: a new engine
        elif address == "/hb/error":
            text = str(args[0]) if args else "?"
            if "/hb/subscribe" in text or self._config["duck_meter"] in text:
                if not self._refused:  # say it once; ask again only now and then
                    self._refused = True
                    self._next_subscribe = self._ticks + REFUSED_TICKS
                    self._show("HushBridge: hushbridge has no duck effect to follow (%s)" % text)
            else:
                self._log("HushBridge: hushbridge says: %s" % text, kind="error")

    def _tell_everything(self):
        """An engine that does not know us (started, restarted): the tracks and the transport
        again, and a subscribe at once (it may have the duck effect now)."""
        self._sent_tracks, self._sent_count, self._transport_dirty = {}, None, True
        self._next_subscribe = self._ticks

    def _send_transport(self):
        song = self._song
        beat = float(song.current_song_time)
        playing = bool(song.is_playing)
        # while playing, the position every tick it moved by a sixteenth or more; else on change
        moved = self._sent_beat is None or abs(beat - self._sent_beat) >= 0.25
        if self._transport_dirty or moved:  # playing, or the playhead moved by hand
            self._transport_dirty = False
            self._sent_beat = beat
            self._send("/hb/host/transport", float(song.tempo), 1 if playing else 0, beat)

    def _send_tracks(self):
        """Track names and faders out, as they change (at most TRACKS_PER_TICK a tick); a ducked
        track's fader is reported where the user put it, not where the duck holds it."""
        tracks = list(self._song.tracks)
        if len(tracks) != self._sent_count:
            self._sent_count = len(tracks)
            self._send("/hb/host/track_count", len(tracks))
            for index in [i for i in self._sent_tracks if i > len(tracks)]:
                del self._sent_tracks[index]
        sent = 0
        start = self._next_track % max(1, len(tracks))
        for k in range(len(tracks)):  # round robin: busy faders 1..16 never starve the rest
            if sent >= TRACKS_PER_TICK:
                self._next_track = (start + k) % len(tracks)
                break
            index, track = (start + k) % len(tracks) + 1, tracks[(start + k) % len(tracks)]
            state = next((s for s in self._ducked if s.track == track), None)
            value = state.base if state is not None else track.mixer_device.volume.value
            now = (track.name or "", round(value_to_db(value), 1) if value > 0 else -1000.0)
            if self._sent_tracks.get(index) != now:
                self._sent_tracks[index] = now
                self._send("/hb/host/track", index, now[0], float(now[1]))
                sent += 1

    def _apply_ducking(self, force_release=False):
        silent = time.monotonic() - self._heard > SILENT_S
        cut = 0.0 if (force_release or silent) else self._cut_db
        tag = self._config["duck_tag"]
        kept = []
        automated = []  # tagged tracks whose faders follow automation: never written
        for track in list(self._song.tracks):
            try:
                if track == None or tag not in (track.name or ""):  # noqa: E711 - Live's deleted objects equal None
                    continue
                state = next((s for s in self._ducked if s.track == track), None)
                param = track.mixer_device.volume
                if getattr(param, "automation_state", 0) == 1:
                    # its fader follows automation (drawn before the script started or since): a
                    # write would switch that off (Live's "overridden") until the user re-enables
                    # it; left alone, its level given back by the automation, and said once
                    automated.append(track)
                    if track.name not in self._said_automated:
                        self._said_automated.add(track.name)
                        self._show("HushBridge: %s has volume automation: not ducked" % track.name)
                    continue
                if state is None:
                    state = _Ducked(track, param.value)
                elif abs(param.value - state.written) > 1e-6:
                    # moved by hand (or automation) since we wrote: the level to duck from now
                    state.base = state.written = param.value
                kept.append(state)
                if cut <= 0.0:  # not ducked: exactly the level it had
                    self._write(param, state, state.base, exact=True)
                else:
                    self._write(param, state, db_to_value(value_to_db(state.base) - cut))
            except Exception as e:  # noqa: BLE001 - one track's trouble must not stop the others
                self._log("HushBridge: ducking %r: %r" % (getattr(track, "name", "?"), e), kind="track")
        for state in self._ducked:  # untagged since (renamed), or gone: give it its level back
            if state in kept or state.track in automated:
                continue
            try:
                track = state.track
                if track != None:  # noqa: E711
                    param = track.mixer_device.volume
                    if abs(param.value - state.written) <= 1e-6:  # not moved by hand since
                        self._write(param, state, state.base, exact=True)
            except Exception:  # noqa: BLE001 - a deleted track raises: nothing to give back
                pass
        self._ducked = kept

    @staticmethod
    def _write(param, state, target, exact=False):
        """Set the fader (within its range) where it moved by more than a hair, or at all when ``exact``."""
        target = min(param.max, max(param.min, target))
        if abs(target - param.value) > (0.0 if exact else 1e-4):
            param.value = target
            state.written = param.value

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
            self._log("HushBridge: no UDP socket (%s); retrying" % e, kind="socket")
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
            self._log("HushBridge: send failed: %s" % e, kind="send")

    def _log(self, text, kind):
        """To Live's Log.txt, at most once every LOG_EVERY_S per kind of message."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -math.inf) < LOG_EVERY_S:
            return
        self._last_log[kind] = now
        try:
            self._c.log_message(text)
        except Exception:  # noqa: BLE001 - logging must never take the script down
            pass

    def _show(self, text):
        """In Live's status bar, and the log."""
        self._log(text, kind=text)
        try:
            self._c.show_message(text)
        except Exception:  # noqa: BLE001
            pass
