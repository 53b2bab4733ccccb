"""A faithful fake of the parts of Ableton Live that a MIDI Remote Script touches.

From the Live Object Model (Cycling '74's LOM reference, the boost.python docstrings in
NSUSpray/Live_API_Doc) and Live 11/12's own Remote Scripts (the gluon decompiles) where the docs
are silent; what third parties found but nobody documents is marked so:

- Live imports the script package from ``User Library/Remote Scripts/<Name>`` and calls
  ``create_instance(c_instance)``, then ``connect_script_instances``, ``refresh_state`` and
  ``build_midi_map``; ``update_display`` every ~100 ms (one :meth:`LiveHost.tick`); ``disconnect``
  when the surface is switched off or the set reloaded (create, disconnect, create again).
- Listeners: ``add_<prop>_listener(cb)``, ``remove_<prop>_listener(cb)``,
  ``<prop>_has_listener(cb)``; callbacks take no arguments and run synchronously inside the
  setter. Removing one not added raises RuntimeError; adding one twice raises (assumed).
- A change made from inside a notification raises ``RuntimeError("Changes cannot be triggered
  by notifications. You will need to defer your response.")``.
- ``Song.tempo`` is 20..999 BPM; a DeviceParameter's value must lie in [min, max] (outside:
  RuntimeError, assumed); a mixer volume is 0..1 with 0.85 = 0 dB.
"""
from __future__ import annotations

import importlib
import sys

NOTIFICATION_ERROR = "Changes cannot be triggered by notifications. You will need to defer your response."


class _Live:
    """Shared by every object of one fake Live: whether a notification is running."""

    def __init__(self) -> None:
        self.notifying = 0

    def check_change(self) -> None:
        if self.notifying:
            raise RuntimeError(NOTIFICATION_ERROR)


class _Observable:
    _props: tuple[str, ...] = ()

    def __init__(self, live: _Live) -> None:
        self._live = live
        self._listeners: dict[str, list] = {p: [] for p in self._props}

    def __getattr__(self, name):
        for prefix, suffix in (("add_", "_listener"), ("remove_", "_listener"), ("", "_has_listener")):
            if name.startswith(prefix) and name.endswith(suffix):
                prop = name[len(prefix):-len(suffix)]
                if prop in self._props:
                    return lambda cb, _k=prefix, _p=prop: self._listener_call(_k, _p, cb)
        raise AttributeError(name)

    def _listener_call(self, kind: str, prop: str, cb):
        listeners = self._listeners[prop]
        if kind == "add_":
            if cb in listeners:
                raise RuntimeError(f"listener for {prop!r} added twice")
            listeners.append(cb)
            return None
        if kind == "remove_":
            if cb not in listeners:
                raise RuntimeError(f"an observer for {prop!r} is not connected")
            listeners.remove(cb)
            return None
        return cb in listeners

    def _notify(self, prop: str) -> None:
        self._live.notifying += 1
        try:
            for cb in list(self._listeners[prop]):
                cb()
        finally:
            self._live.notifying -= 1

    def fake_listeners(self, prop: str) -> int:
        return len(self._listeners[prop])


class DeviceParameter(_Observable):
    _props = ("value", "name")

    def __init__(self, live: _Live, name: str, value: float, lo: float = 0.0, hi: float = 1.0) -> None:
        super().__init__(live)
        self.name = name
        self.min, self.max = lo, hi
        self._value = value
        self.writes = 0  # values set by a script
        # 0 none, 1 automation playing, 2 overridden (a value set while it played: the automation
        # stays off until re_enable_automation, Live's "Re-Enable Automation")
        self.automation_state = 0

    @property
    def value(self) -> float:
        return self._value

    @value.setter
    def value(self, v: float) -> None:
        self._live.check_change()
        v = float(v)
        if not self.min <= v <= self.max:
            raise RuntimeError(f"invalid value {v} for {self.name!r}: outside [{self.min}, {self.max}]")
        self.writes += 1
        if self.automation_state == 1:
            self.automation_state = 2
        if v != self._value:
            self._value = v
            self._notify("value")

    def re_enable_automation(self) -> None:
        if self.automation_state == 2:
            self.automation_state = 1

    def fake_user_set(self, v: float) -> None:
        """The user drags the fader."""
        self._value = float(v)
        self._notify("value")


class MixerDevice:
    def __init__(self, live: _Live, volume: float) -> None:
        self.volume = DeviceParameter(live, "Track Volume", volume)
        self.panning = DeviceParameter(live, "Track Panning", 0.0, -1.0, 1.0)


class Track(_Observable):
    """A deleted track compares equal to None and raises on use, as Live's objects do."""

    _props = ("name", "mute", "solo")

    def __init__(self, live: _Live, name: str, volume: float = 0.85) -> None:
        super().__init__(live)
        self._name = name
        self._mixer = MixerDevice(live, volume)
        self.mute = False
        self.solo = False
        self._deleted = False

    def __eq__(self, other):
        if other is None:
            return self._deleted
        return self is other

    def __hash__(self):
        return id(self)

    def _alive(self) -> None:
        if self._deleted:
            raise RuntimeError("Object has been deleted")

    @property
    def mixer_device(self) -> MixerDevice:
        self._alive()
        return self._mixer

    @property
    def name(self) -> str:
        self._alive()
        return self._name

    @name.setter
    def name(self, text: str) -> None:
        self._live.check_change()
        self._name = str(text)
        self._notify("name")

    def fake_user_rename(self, text: str) -> None:
        self._name = str(text)
        self._notify("name")


class Song(_Observable):
    _props = ("tempo", "is_playing", "current_song_time", "tracks", "signature_numerator",
              "signature_denominator")

    def __init__(self, tracks: list[str] | None = None) -> None:
        live = _Live()
        super().__init__(live)
        self._tempo = 120.0
        self._playing = False
        self._time = 0.0
        self._tracks = [Track(live, n) for n in (tracks or [])]
        self.signature_numerator = 4
        self.signature_denominator = 4

    @property
    def tempo(self) -> float:
        return self._tempo

    @tempo.setter
    def tempo(self, bpm: float) -> None:
        self._live.check_change()
        if not 20.0 <= bpm <= 999.0:
            raise RuntimeError("tempo outside 20..999 BPM")
        self._tempo = float(bpm)
        self._notify("tempo")

    @property
    def is_playing(self) -> bool:
        return self._playing

    @property
    def current_song_time(self) -> float:
        return self._time

    @property
    def tracks(self) -> tuple:
        return tuple(self._tracks)

    def start_playing(self) -> None:
        self._live.check_change()
        self._playing = True
        self._notify("is_playing")

    def stop_playing(self) -> None:
        self._live.check_change()
        self._playing = False
        self._notify("is_playing")

    # -- the user and the clock ------------------------------------------------------------------
    def fake_user_tempo(self, bpm: float) -> None:
        self._tempo = float(bpm)
        self._notify("tempo")

    def fake_advance(self, seconds: float) -> None:
        """Time passes: while playing, the song position moves (its listener fires)."""
        if self._playing:
            self._time += seconds * self._tempo / 60.0
            self._notify("current_song_time")

    def fake_track(self, name: str) -> Track:
        return next(t for t in self._tracks if t.name == name)

    def fake_delete_track(self, track: Track) -> None:
        """The user deletes a track: gone from ``tracks`` (its listener fires), equal to None."""
        self._tracks.remove(track)
        track._deleted = True
        self._notify("tracks")


class CInstance:
    """The ``c_instance`` Live hands ``create_instance``."""

    def __init__(self, song: Song) -> None:
        self._song = song
        self.log: list[str] = []
        self.messages: list[str] = []

    def song(self) -> Song:
        return self._song

    def log_message(self, text: str) -> None:
        self.log.append(str(text))

    def show_message(self, text: str) -> None:
        self.messages.append(str(text))

    def request_rebuild_midi_map(self) -> None:
        pass


class LiveHost:
    """Live with a Remote Script chosen as Control Surface: ``LiveHost(folder, song)`` imports
    ``folder/<name>`` as Live does and starts it; :meth:`tick` is one ``update_display``."""

    def __init__(self, remote_scripts: str, song: Song, name: str = "HushBridge") -> None:
        self.song = song
        self.c_instance = CInstance(song)
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]  # Live's interpreter imports it afresh from that folder
        sys.path.insert(0, str(remote_scripts))
        try:
            module = importlib.import_module(name)
        finally:
            sys.path.remove(str(remote_scripts))
        self.module = module
        self.script = module.create_instance(self.c_instance)
        if self.script is None:
            raise AssertionError("create_instance returned None: Live logs 'NoneType' has no attribute ...")
        self.script.connect_script_instances([self.script])
        self.script.refresh_state()
        self.script.build_midi_map(object())

    def tick(self, n: int = 1, seconds: float = 0.1) -> None:
        import time as _time

        for _ in range(n):
            self.song.fake_advance(seconds)
            self.script.update_display()
            _time.sleep(seconds)

    def close(self) -> None:
        self.script.disconnect()
