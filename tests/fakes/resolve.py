"""A faithful fake of DaVinci Resolve's scripting API, for driving the real host scripts.

Built from Blackmagic's README.txt (the Developer/Scripting one, "Last Updated" 2025 and 2026)
and from what third parties measured on Resolve Studio 19-21 where the README is silent
(samuelgursky/davinci-resolve-mcp's api-limitations ledger and issues); each such rule says so:

- Every index is 1-based. Methods fail with False / None / [], never an exception.
- The Python bridge makes up a callable (returning None) for any attribute name: ``hasattr``
  is always true and only ``dir()`` lists the real methods. So does every object here.
- A timeline starts at frame 86400 (01:00:00:00 at 24 fps) by default; items' ``GetStart`` /
  ``GetEnd`` and AppendToTimeline's ``recordFrame`` are absolute frames, ``GetEnd`` exclusive;
  marker frames count from the timeline's start (measured).
- Source frames count at the media's own frame rate, and Resolve gives a WAV (any audio file)
  24 fps whatever the timeline's (measured); ``GetSourceEndFrame`` and AppendToTimeline's
  ``endFrame`` are exclusive (measured). A range played on a timeline of another rate lasts
  ``round((end - start) * timeline_fps / media_fps)`` timeline frames (assumed).
- AppendToTimeline needs the track to exist; a placement that overlaps an item on its track is
  dropped silently, absent from the returned list (measured).
- ImportMedia puts clips in the current folder and leaves out paths that do not exist.
- ``Timeline.GetSelectedClips`` exists from Resolve 21 only (``version``); ``fusion.UIManager``
  is None in the free edition since 19.1.
- Clip properties are strings, except ``FPS``, a float.
- Audio mapping (README "Audio Mapping"; ``TimelineItem.GetSourceAudioChannelMapping`` from
  19.0.1): a JSON string; channel indices count the media's embedded channels first, then each
  linked (synced) file's in key order; a linked file's ``offset`` is in samples, "audio at media
  offset 0 plays file_start + 100th sample" for -100. Which entry of ``track_mapping`` a timeline
  item plays is not documented: two public tools read the item's entry "1". An item given its
  own channels (``fake_map``) reports one entry; a clip whose Clip Attributes split its audio
  into several tracks (``fake_split``) reports them all on each of its items, as the media does
  (the README: "similar for mpItem and timelineItem"), and its items are linked to each other
  (``GetLinkedItems``), one per timeline track, in the order of the clip's tracks (assumed).

Test-side helpers (not Resolve API) start with ``fake_``.
"""
from __future__ import annotations

import os

import numpy as np
import soundfile as sf


class _Bridged:
    """Resolve's bridge: an unknown method is a callable that returns None; ``dir()`` is honest."""

    def __getattr__(self, name):
        if name.startswith("_") or name.startswith("fake_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def _timecode(frames: float, fps: float) -> str:
    f = int(round(fps))
    n = int(round(frames))
    return f"{n // (3600 * f):02d}:{n // (60 * f) % 60:02d}:{n // f % 60:02d}:{n % f:02d}"


class MediaPoolItem(_Bridged):
    def __init__(self, path: str, fps: float = 24.0) -> None:
        info = sf.info(path)
        self._path = os.path.abspath(path)
        self._info = info
        self._fps = float(fps)
        self._linked: list[dict] = []  # files synced to it: {"path", "channels", "offset"}
        self._split: list[list[int]] | None = None  # Clip Attributes: its audio tracks' channels

    def fake_link(self, path: str, offset: int = 0) -> int:
        """Sync ``path``'s audio to this clip (Auto Sync Audio / Link Clips); returns the mapping
        index of its first channel."""
        first = self._info.channels + sum(f["channels"] for f in self._linked) + 1
        self._linked.append({"channels": sf.info(path).channels, "offset": int(offset),
                             "path": os.path.abspath(path)})
        return first

    def fake_split(self, tracks: list[list[int]]) -> None:
        """Clip Attributes: its audio as these tracks (e.g. ``[[1], [2]]``: two mono tracks)."""
        self._split = [list(t) for t in tracks]

    def fake_mapping(self, channel_idx: list[int] | None = None, mute: bool = False) -> dict:
        def entry(idx, mute):
            kind = {1: "Mono", 2: "Stereo", 6: "5.1", 8: "7.1"}.get(len(idx), "Adaptive%d" % len(idx))
            return {"channel_idx": idx, "mute": bool(mute), "type": kind}

        if channel_idx is None and self._split:
            tracks = {str(k): entry(t, False) for k, t in enumerate(self._split, 1)}
        else:
            tracks = {"1": entry(list(channel_idx) if channel_idx else list(range(1, self._info.channels + 1)), mute)}
        return {"embedded_audio_channels": self._info.channels,
                "linked_audio": {str(k): dict(f) for k, f in enumerate(self._linked, 1)},
                "track_mapping": tracks}

    def GetAudioMapping(self):  # noqa: N802
        import json

        return json.dumps(self.fake_mapping())

    def fake_channel_audio(self, index: int, sample_rate: int) -> np.ndarray:
        """Mapping channel ``index`` (1-based) on the media's own time axis, as Resolve plays it."""
        n = self._info.channels
        if index <= n:
            audio, sr = sf.read(self._path, dtype="float64", always_2d=True)
            assert sr == sample_rate
            return audio[:, index - 1]
        base = n
        for f in self._linked:
            if index <= base + f["channels"]:
                audio, sr = sf.read(f["path"], dtype="float64", always_2d=True)
                assert sr == sample_rate
                ch = audio[:, index - base - 1]
                off = f["offset"]  # the media's sample t plays the file's t - offset
                return np.concatenate([np.zeros(off), ch]) if off >= 0 else ch[-off:]
            base += f["channels"]
        raise IndexError(index)

    @property
    def fake_frames(self) -> float:
        return self._info.frames / self._info.samplerate * self._fps

    def GetName(self):  # noqa: N802 - Resolve's names
        return os.path.basename(self._path)

    def GetClipProperty(self, name=None):  # noqa: N802
        info = self._info
        props = {
            "File Path": self._path,
            "File Name": os.path.basename(self._path),
            "Audio Ch": str(info.channels),
            "Sample Rate": str(info.samplerate),
            "Audio Bit Depth": {"PCM_16": "16", "PCM_24": "24", "FLOAT": "32"}.get(info.subtype, "24"),
            "FPS": self._fps,
            "Frames": str(int(self.fake_frames)),
            "Duration": _timecode(self.fake_frames, self._fps),
            "Start TC": "00:00:00:00",
            "Type": "Audio",
        }
        if name is None:
            return props
        return props.get(name, "")  # "an invalid key will return a trivial result"

    def GetMediaId(self):  # noqa: N802
        return f"media-{id(self):x}"


class Folder(_Bridged):
    def __init__(self, name: str) -> None:
        self._name = name
        self._clips: list[MediaPoolItem] = []
        self._subfolders: list[Folder] = []

    def GetName(self):  # noqa: N802
        return self._name

    def GetClipList(self):  # noqa: N802
        return list(self._clips)

    def GetSubFolderList(self):  # noqa: N802
        return list(self._subfolders)


class TimelineItem(_Bridged):
    """``source_start`` / ``source_end``: the media's frames (at its rate; fractional where a
    trim on another rate's grid put them between two). Resolve reports them whole
    (``GetSourceStartFrame``) and the exact start through the left offset (timeline frames)."""

    def __init__(self, timeline: "Timeline", media: MediaPoolItem | None, track: int, start: int, duration: int,
                 source_start: float, source_end: float, name: str | None = None, enabled: bool = True,
                 kind: str = "audio") -> None:
        self._timeline = timeline
        self._media = media
        self._track = track
        self._start = int(start)
        self._duration = int(duration)
        self._source = (source_start, source_end)
        self._name = name if name is not None else (media.GetName() if media is not None else "")
        self._enabled = enabled
        self._kind = kind
        self._map: tuple[list[int] | None, bool] = (None, False)  # channel_idx (None: the media's own), mute
        self._clip_track = 1  # of a split clip, the track of it this item plays
        self._links: list[TimelineItem] = []

    def __dir__(self):
        names = set(super().__dir__())
        if self._timeline._version < 19:
            names.discard("GetSourceAudioChannelMapping")
        return sorted(names)

    def fake_map(self, channel_idx: list[int], mute: bool = False) -> "TimelineItem":
        """Which channels it plays (the clip's audio attributes, or a poly file split per track)."""
        self._map = (list(channel_idx), mute)
        return self

    def GetSourceAudioChannelMapping(self):  # noqa: N802 - Resolve 19.0.1
        import json

        if self._media is None:
            return ""
        return json.dumps(self._media.fake_mapping(*self._map))

    def fake_channels(self) -> list[int]:
        if self._map[0] is None and self._media._split:
            return self._media._split[self._clip_track - 1]
        return self._map[0] or list(range(1, self._media._info.channels + 1))

    def GetLinkedItems(self):  # noqa: N802
        return list(self._links)

    @staticmethod
    def fake_link_items(items: list["TimelineItem"]) -> None:
        """Items of one split clip, linked (their clip tracks in this order)."""
        for k, item in enumerate(items, 1):
            item._clip_track = k
            item._links = [i for i in items if i is not item]

    def GetName(self):  # noqa: N802
        return self._name

    def GetStart(self, subframe_precision=False):  # noqa: N802
        return self._start

    def GetEnd(self, subframe_precision=False):  # noqa: N802
        return self._start + self._duration  # exclusive (measured)

    def GetDuration(self, subframe_precision=False):  # noqa: N802
        return self._duration

    def GetLeftOffset(self, subframe_precision=False):  # noqa: N802
        left = self._source[0] / self._media._fps * self._timeline.fake_fps if self._media else 0.0
        return left if subframe_precision else int(round(left))

    def GetSourceStartFrame(self):  # noqa: N802
        return int(round(self._source[0]))

    def GetSourceEndFrame(self):  # noqa: N802
        return int(round(self._source[1]))

    def GetMediaPoolItem(self):  # noqa: N802
        return self._media

    def GetTrackTypeAndIndex(self):  # noqa: N802
        return [self._kind, self._track]

    def GetClipEnabled(self):  # noqa: N802
        return self._enabled

    def SetClipEnabled(self, enabled):  # noqa: N802
        self._enabled = bool(enabled)
        return True


class Timeline(_Bridged):
    def __init__(self, name: str = "Timeline 1", fps: str = "24", start_frame: int = 86400, version: int = 20) -> None:
        self._name = name
        self._fps = fps
        self._start = start_frame
        self._version = version
        self._tracks: list[dict] = []
        self._markers: dict[float, dict] = {}
        self._selected: list[TimelineItem] = []

    @property
    def fake_fps(self) -> float:
        return float(self._fps.split()[0])

    def __dir__(self):
        names = set(super().__dir__())
        if self._version < 21:
            names.discard("GetSelectedClips")
        return sorted(names)

    def __getattribute__(self, name):
        if name == "GetSelectedClips" and object.__getattribute__(self, "_version") < 21:
            return lambda *a, **k: None  # the bridge's made-up callable: no such method before 21
        return object.__getattribute__(self, name)

    # -- Resolve API ------------------------------------------------------------------------
    def GetName(self):  # noqa: N802
        return self._name

    def GetSetting(self, name=None):  # noqa: N802
        settings = {"timelineFrameRate": self._fps}
        return settings if name is None else settings.get(name, "")

    def GetStartFrame(self):  # noqa: N802
        return self._start

    def GetEndFrame(self):  # noqa: N802
        ends = [i.GetEnd() for t in self._tracks for i in t["items"]]
        return max(ends, default=self._start)

    def GetTrackCount(self, track_type):  # noqa: N802
        return len(self._tracks) if track_type == "audio" else 0

    def AddTrack(self, track_type, sub_type="mono"):  # noqa: N802
        if track_type != "audio":
            return False
        options = sub_type if isinstance(sub_type, dict) else {"audioType": sub_type}
        kind = options.get("audioType", "mono")
        valid = {"mono", "stereo", "5.1", "7.1", "5.0", "7.0"} | {f"adaptive{n}" for n in range(1, 37)}
        if kind not in valid:
            return False
        self._tracks.append({"name": f"Audio {len(self._tracks) + 1}", "subtype": kind, "enabled": True,
                             "locked": False, "items": []})
        return True

    def _track(self, track_type, index):
        if track_type != "audio" or not isinstance(index, int) or not 1 <= index <= len(self._tracks):
            return None
        return self._tracks[index - 1]

    def GetTrackName(self, track_type, index):  # noqa: N802
        t = self._track(track_type, index)
        return t["name"] if t else ""

    def SetTrackName(self, track_type, index, name):  # noqa: N802
        t = self._track(track_type, index)
        if t is None:
            return False
        t["name"] = str(name)
        return True

    def GetTrackSubType(self, track_type, index):  # noqa: N802
        t = self._track(track_type, index)
        return t["subtype"] if t else ""

    def GetIsTrackEnabled(self, track_type, index):  # noqa: N802
        t = self._track(track_type, index)
        return bool(t and t["enabled"])

    def SetTrackEnable(self, track_type, index, enabled):  # noqa: N802
        t = self._track(track_type, index)
        if t is None:
            return False
        t["enabled"] = bool(enabled)
        return True

    def GetItemListInTrack(self, track_type, index):  # noqa: N802
        t = self._track(track_type, index)
        return sorted(t["items"], key=lambda i: i.GetStart()) if t else None

    def GetSelectedClips(self):  # noqa: N802 - Resolve 21+
        return list(self._selected)

    def DeleteClips(self, items, ripple=False):  # noqa: N802
        found = False
        for t in self._tracks:
            for item in list(t["items"]):
                if item in items:
                    t["items"].remove(item)
                    found = True
        return found

    def DeleteTrack(self, track_type, index):  # noqa: N802
        if self._track(track_type, index) is None:
            return False
        del self._tracks[index - 1]
        for i, t in enumerate(self._tracks, 1):
            for item in t["items"]:
                item._track = i
        return True

    def AddMarker(self, frame, color, name, note, duration, custom_data=""):  # noqa: N802
        colors = {"Blue", "Cyan", "Green", "Yellow", "Red", "Pink", "Purple", "Fuchsia", "Rose", "Lavender", "Sky",
                  "Mint", "Lemon", "Sand", "Cocoa", "Cream"}
        frame = float(frame)
        length = self.GetEndFrame() - self._start
        # a marker past the timeline's end is refused (assumed: whether Resolve cuts or refuses is open)
        if color not in colors or frame in self._markers or frame < 0 or duration < 1 or frame + duration > length:
            return False
        self._markers[frame] = {"color": color, "duration": float(duration), "note": note, "name": name,
                                "customData": custom_data}
        return True

    def GetMarkers(self):  # noqa: N802
        return dict(self._markers)

    def DeleteMarkerAtFrame(self, frame):  # noqa: N802 - "False if no marker at frame"
        return self._markers.pop(float(frame), None) is not None

    # -- test side --------------------------------------------------------------------------
    def fake_add_track(self, name: str, subtype: str = "mono", enabled: bool = True) -> int:
        self.AddTrack("audio", subtype)
        self._tracks[-1]["name"] = name
        self._tracks[-1]["enabled"] = enabled
        return len(self._tracks)

    def fake_place(self, track: int, media: MediaPoolItem | None, source_start: float, source_end: float,
                   record: int, name: str | None = None, enabled: bool = True) -> TimelineItem:
        """Put an item on the timeline as an editor would (no checks: the user's edit)."""
        fps = media._fps if media is not None else self.fake_fps
        duration = round((source_end - source_start) * self.fake_fps / fps)
        item = TimelineItem(self, media, track, record, duration, source_start, source_end, name, enabled)
        self._tracks[track - 1]["items"].append(item)
        return item

    def fake_place_on_grid(self, track: int, media: MediaPoolItem, source_seconds: float, record: int,
                           duration: int) -> TimelineItem:
        """An item trimmed on the timeline's frame grid: it starts ``source_seconds`` into its
        media, which need not be a whole frame of the media's rate."""
        start = source_seconds * media._fps
        end = start + duration / self.fake_fps * media._fps
        item = TimelineItem(self, media, track, record, duration, start, end)
        self._tracks[track - 1]["items"].append(item)
        return item

    def fake_video_item(self, media: MediaPoolItem, record: int, duration: int) -> TimelineItem:
        """An item of video track 1 (selection tests: a selection may hold video only)."""
        return TimelineItem(self, media, 1, record, duration, 0, duration / self.fake_fps * media._fps, kind="video")

    def fake_select(self, items: list[TimelineItem]) -> None:
        self._selected = list(items)

    def fake_render_mix(self, sample_rate: int = 48000) -> np.ndarray:
        """The main bus: every enabled track summed, mono tracks in both channels (stereo)."""
        mix = None
        for index, t in enumerate(self._tracks, 1):
            if not t["enabled"]:
                continue
            audio, _ = self.fake_render_track(index, sample_rate)
            audio = np.vstack([audio, audio]) if audio.shape[0] == 1 else audio[:2]
            mix = audio if mix is None else mix[:, :audio.shape[1]] + audio[:, :mix.shape[1]]
        return mix if mix is not None else np.zeros((2, 0))

    def fake_render_track(self, track: int, sample_rate: int = 48000) -> tuple[np.ndarray, int]:
        """What the track plays from the timeline's start to its end, (channels, samples), as
        Resolve would render it (each item: its source range of its media, at its record frames)."""
        items = [i for i in self._tracks[track - 1]["items"] if i._media is not None and i._enabled]
        channels = max((len(i.fake_channels()) for i in items), default=1)
        length = round((self.GetEndFrame() - self._start) / self.fake_fps * sample_rate)
        out = np.zeros((channels, length), dtype=np.float64)
        for item in items:
            if item._map[1]:
                continue  # muted
            media = item._media
            sr = sample_rate
            src = round(item._source[0] / media._fps * sr)
            dst = round((item._start - self._start) / self.fake_fps * sr)
            n = round(item._duration / self.fake_fps * sr)
            for k, index in enumerate(item.fake_channels()):
                piece = media.fake_channel_audio(index, sr)[src:src + n]
                out[k, dst:dst + len(piece)] += piece
        return out, length


class MediaPool(_Bridged):
    def __init__(self, project: "Project") -> None:
        self._project = project
        self._root = Folder("Master")
        self._current = self._root
        self.fake_imports = 0  # files ImportMedia took
        self.fake_shift_appends = None  # frames: appends land this much off (Resolve misplacing one)

    def GetRootFolder(self):  # noqa: N802
        return self._root

    def GetCurrentFolder(self):  # noqa: N802
        return self._current

    def SetCurrentFolder(self, folder):  # noqa: N802
        if not isinstance(folder, Folder):
            return False
        self._current = folder
        return True

    def AddSubFolder(self, folder, name):  # noqa: N802
        if not isinstance(folder, Folder):
            return None
        sub = Folder(str(name))
        folder._subfolders.append(sub)
        return sub

    def ImportMedia(self, items):  # noqa: N802
        made = []
        for entry in items or []:
            path = entry.get("FilePath") if isinstance(entry, dict) else entry
            if not isinstance(path, str) or not os.path.isfile(path):
                continue
            try:
                clip = MediaPoolItem(path)
            except RuntimeError:
                continue
            self._current._clips.append(clip)
            self.fake_imports += 1
            made.append(clip)
        return made

    def _all_clips(self):
        stack, out = [self._root], []
        while stack:
            f = stack.pop()
            out.extend(f._clips)
            stack.extend(f._subfolders)
        return out

    def AppendToTimeline(self, *clips):  # noqa: N802
        timeline = self._project._timeline
        if timeline is None:
            return []
        infos = clips[0] if len(clips) == 1 and isinstance(clips[0], list) else list(clips)
        made = []
        known = self._all_clips()
        for info in infos:
            if not isinstance(info, dict):
                continue  # the plain-clips form appends at the end: not used by our scripts
            media = info.get("mediaPoolItem")
            if media not in known:
                continue
            start, end = info.get("startFrame", 0), info.get("endFrame", media.fake_frames)
            if not (0 <= start < end <= media.fake_frames + 1e-6):
                continue
            track = info.get("trackIndex", 1)
            if info.get("mediaType", 2) != 2 or timeline._track("audio", track) is None:
                continue
            record = info.get("recordFrame", timeline.GetEndFrame()) + (self.fake_shift_appends or 0)
            duration = round((end - start) * timeline.fake_fps / media._fps)
            items = timeline._tracks[track - 1]["items"]
            if any(record < i.GetEnd() and i.GetStart() < record + duration for i in items):
                continue  # overlaps: dropped silently (measured)
            item = TimelineItem(timeline, media, track, record, duration, start, end)
            items.append(item)
            made.append(item)
        return made


class Project(_Bridged):
    """Rendering as measured by others (the README only names the calls): every render call
    switches Resolve to the Deliver page; ``GetRenderCodecs("wav")`` is empty on 19-21, so a WAV
    comes from the "Audio Only" preset with ``AudioCodec`` lpcm; an empty ``CustomName`` rejects
    the whole settings dict; ``AddRenderJob`` returns "" when it cannot; ``StartRendering``
    returns at once and the job moves on as it is polled; ``JobStatus`` is in the UI's language
    (``fake_language``); ``GetRenderJobStatus`` takes the job id string."""

    STATUS = {"en": ("Ready", "Rendering", "Complete"), "it": ("Pronto", "Rendering", "Concluso")}

    def __init__(self, timeline: Timeline | None) -> None:
        self._timeline = timeline
        self._pool = MediaPool(self)
        self._resolve = None  # set by Resolve: the page a render call switches
        self._settings: dict = {"ExportVideo": True, "ExportAudio": True, "format": "mp4", "AudioCodec": "aac"}
        self._jobs: dict[str, dict] = {}
        self.fake_language = "en"
        self.fake_polls_per_render = 3  # status polls a render takes
        self.fake_refuse_jobs = False  # AddRenderJob fails (an audio-only timeline, say)
        self.fake_fail_render = ""  # an Error the render reports (a full disk, say)
        self.fake_presets = ["YouTube - 1080p", "Audio Only", "H.264 Master"]
        self.render_mode = 0  # 0: individual clips, 1: single clip

    def _deliver(self) -> None:
        if self._resolve is not None:
            self._resolve._page = "deliver"

    def GetRenderPresetList(self):  # noqa: N802
        return list(self.fake_presets)

    def LoadRenderPreset(self, name):  # noqa: N802
        self._deliver()
        if name != "Audio Only" or name not in self.fake_presets:
            return name in self.fake_presets
        self._settings.update(ExportVideo=False, ExportAudio=True, format="wav", AudioCodec="lpcm")
        return True

    def SetCurrentRenderMode(self, mode):  # noqa: N802
        self._deliver()
        if mode not in (0, 1):
            return False
        self.render_mode = mode
        return True

    def SetCurrentRenderFormatAndCodec(self, fmt, codec):  # noqa: N802 - GetRenderCodecs("wav") is {} on 19-21
        self._deliver()
        return False

    def SetRenderSettings(self, settings):  # noqa: N802
        self._deliver()
        if not isinstance(settings, dict) or ("CustomName" in settings and not settings["CustomName"]):
            return False  # one bad value rejects the whole dict
        self._settings.update(settings)
        return True

    def AddRenderJob(self):  # noqa: N802
        self._deliver()
        s = self._settings
        if self.fake_refuse_jobs or not (s.get("format") == "wav" and s.get("ExportAudio") and not s.get("ExportVideo")
                                         and s.get("TargetDir") and s.get("CustomName")):
            return ""
        import uuid

        job = str(uuid.uuid4())
        # individual-clips mode renders a file per clip, named after each: not the name asked for
        name = s["CustomName"] if self.render_mode == 1 else "A001_" + s["CustomName"]
        self._jobs[job] = {"JobId": job, "TargetDir": s["TargetDir"], "OutputFilename": name + ".wav",
                           "RenderJobName": "Job 1", "TimelineName": self._timeline.GetName(), "_polls": None,
                           "_state": 0}
        return job

    def StartRendering(self, *jobs, isInteractiveMode=False):  # noqa: N802, N803
        self._deliver()
        ids = jobs[0] if len(jobs) == 1 and isinstance(jobs[0], list) else list(jobs)
        found = [self._jobs[j] for j in ids if j in self._jobs]
        for job in found:
            job["_polls"] = 0
        return bool(found)

    def StopRendering(self):  # noqa: N802 - the job stops over the next poll or two, then says Cancelled
        for job in self._jobs.values():
            if job["_polls"] is not None and job["_state"] < 2:
                job["_stop"] = 2

    def IsRenderingInProgress(self):  # noqa: N802
        return any(j["_polls"] is not None and j["_state"] < 2 for j in self._jobs.values())

    def GetRenderJobStatus(self, job_id):  # noqa: N802
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            return None
        names = self.STATUS[self.fake_language]
        if job.get("_stop") is not None:
            job["_stop"] -= 1
            if job["_stop"] <= 0:
                job["_polls"], job["_state"] = None, 3
                return {"JobStatus": "Cancelled", "CompletionPercentage": 0}
            return {"JobStatus": names[1], "CompletionPercentage": 40}
        if job["_state"] == 3:
            return {"JobStatus": "Cancelled", "CompletionPercentage": 0}
        if self.fake_fail_render and job["_polls"] is not None:
            return {"JobStatus": "Failed", "CompletionPercentage": 10, "Error": self.fake_fail_render}
        if job["_polls"] is not None and job["_state"] < 2:
            job["_polls"] += 1
            job["_state"] = 1
            if job["_polls"] >= self.fake_polls_per_render:
                mix = self._timeline.fake_render_mix()
                sf.write(os.path.join(job["TargetDir"], job["OutputFilename"]), mix.T, 48000, subtype="PCM_24")
                job["_state"] = 2
        pct = {0: 0, 1: int(100 * job["_polls"] / max(1, self.fake_polls_per_render)) if job["_polls"] else 0,
               2: 100}[job["_state"]]
        return {"JobStatus": names[job["_state"]], "CompletionPercentage": min(pct, 99) if job["_state"] < 2 else 100}

    def GetRenderJobList(self):  # noqa: N802
        return [{k: v for k, v in j.items() if not k.startswith("_")} for j in self._jobs.values()]

    def DeleteRenderJob(self, job_id):  # noqa: N802 - not while it renders (assumed)
        job = self._jobs.get(job_id)
        if job is None or (job["_polls"] is not None and job["_state"] == 1):
            return False
        del self._jobs[job_id]
        return True

    def GetName(self):  # noqa: N802
        return "Fake project"

    def GetMediaPool(self):  # noqa: N802
        return self._pool

    def GetCurrentTimeline(self):  # noqa: N802
        return self._timeline

    def GetSetting(self, name=None):  # noqa: N802
        settings = {"timelineFrameRate": self._timeline._fps if self._timeline else "24",
                    "audioSampleRate": "48000"}
        return settings if name is None else settings.get(name, "")


class ProjectManager(_Bridged):
    def __init__(self, project: Project | None) -> None:
        self._project = project

    def GetCurrentProject(self):  # noqa: N802
        return self._project


class Fusion(_Bridged):
    UIManager = None  # the free edition since 19.1


class Resolve(_Bridged):
    """``Resolve(timeline)``: a running Resolve with one project open on ``timeline``."""

    def __init__(self, timeline: Timeline | None = None, version: int = 20) -> None:
        self._pm = ProjectManager(Project(timeline))
        self._pm._project._resolve = self
        self._version = version
        self._page = "edit"

    def GetCurrentPage(self):  # noqa: N802
        return self._page

    def OpenPage(self, name):  # noqa: N802
        if name not in ("media", "cut", "edit", "fusion", "color", "fairlight", "deliver"):
            return False
        self._page = name
        return True

    def GetProjectManager(self):  # noqa: N802
        return self._pm

    def GetVersion(self):  # noqa: N802
        return [self._version, 0, 0, 0, ""]

    def Fusion(self):  # noqa: N802
        return Fusion()

    @property
    def fake_project(self) -> Project:
        return self._pm._project

    @property
    def fake_pool(self) -> MediaPool:
        return self._pm._project._pool


class _Events:
    """``win.On.<ID>.<Event> = handler`` and ``disp.On.<Event> = handler``, as Fusion's UI has them."""

    def __init__(self) -> None:
        object.__setattr__(self, "_handlers", {})

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        handlers = self._handlers
        if name not in handlers:
            handlers[name] = _Events()
        return handlers[name]

    def __setattr__(self, name, value):
        self._handlers[name] = value


class _Widget:
    def __init__(self, kind: str, props: dict | None = None, children=None) -> None:
        self.kind = kind
        self.props = dict(props or {})
        self.children = list(children or [])
        self.Text = self.props.get("Text", "")


class UIManager:
    """Fusion's UIManager as its documentation (UIManager, RunLoop/ExitLoop, ui.Timer) describes
    it, for a window with a label, a Cancel button and a timer."""

    def VGroup(self, children):  # noqa: N802
        return _Widget("VGroup", None, children)

    def Label(self, props):  # noqa: N802
        return _Widget("Label", props)

    def Button(self, props):  # noqa: N802
        return _Widget("Button", props)

    def Timer(self, props):  # noqa: N802
        return FakeTimer(props)


class FakeTimer:
    def __init__(self, props: dict) -> None:
        self.props = props
        self.running = False

    def Start(self):  # noqa: N802
        self.running = True

    def Stop(self):  # noqa: N802
        self.running = False


class FakeWindow:
    def __init__(self, props: dict, root: _Widget) -> None:
        self.props = props
        self.On = _Events()
        self._items: dict[str, _Widget] = {}
        stack = [root]
        while stack:
            w = stack.pop()
            if "ID" in w.props:
                self._items[w.props["ID"]] = w
            stack.extend(w.children)
        self.shown = False

    def GetItems(self):  # noqa: N802
        return self._items

    def Show(self):  # noqa: N802
        self.shown = True

    def Hide(self):  # noqa: N802
        self.shown = False


class Dispatcher:
    """``bmd.UIDispatcher(ui)``: RunLoop delivers the timer's Timeout every interval (the test
    may click a button after some ticks) until ExitLoop."""

    def __init__(self, ui: UIManager, click_after: tuple[int, str] | None = None) -> None:
        self.ui = ui
        self.On = _Events()
        self.windows: list[FakeWindow] = []
        self.texts: list[str] = []  # every status text shown, in order
        self._click_after = click_after
        self._running = False

    def AddWindow(self, props, root):  # noqa: N802
        win = FakeWindow(props, root)
        self.windows.append(win)
        return win

    def ExitLoop(self, code=0):  # noqa: N802
        self._running = False

    def RunLoop(self):  # noqa: N802
        import time as _time

        self._running = True
        ticks = 0
        while self._running:
            _time.sleep(0.05)
            handler = self.On._handlers.get("Timeout")
            if callable(handler):
                handler({"who": "Poll"})
            ticks += 1
            for win in self.windows:
                status = win.GetItems().get("Status")
                if status is not None and (not self.texts or self.texts[-1] != status.Text):
                    self.texts.append(status.Text)
            if self._click_after and ticks == self._click_after[0]:
                for win in self.windows:
                    handler = win.On._handlers.get(self._click_after[1])
                    clicked = handler._handlers.get("Clicked") if isinstance(handler, _Events) else None
                    if callable(clicked):
                        clicked({"who": self._click_after[1]})
            if ticks > 2000:
                raise AssertionError("the script never left its UI loop")


class Bmd:
    """The ``bmd`` global of a Workspace script: ``scriptapp`` and ``UIDispatcher``."""

    def __init__(self, resolve: Resolve, click_after: tuple[int, str] | None = None) -> None:
        self._resolve = resolve
        self._click_after = click_after
        self.dispatchers: list[Dispatcher] = []

    def scriptapp(self, name):
        return self._resolve if name == "Resolve" else None

    def UIDispatcher(self, ui):  # noqa: N802
        d = Dispatcher(ui, self._click_after)
        self.dispatchers.append(d)
        return d


class StudioFusion(Fusion):
    """Resolve Studio's Fusion: it has a UIManager."""

    UIManager = UIManager()
