"""HushBridge for DaVinci Resolve: clean the timeline's audio with hushbridge and put the result
back in place, on a new audio track at the same record frames. Originals are never touched.

Runs inside Resolve (Workspace > Scripts > Utility > "HushBridge Clean Audio", or "HushBridge
Voice Isolation" for the preset with our voice isolation model, which
``hushbridge install-host-scripts resolve`` installs) or outside it with Resolve Studio's
external scripting. Only the standard library, and Python 3.6 syntax: Resolve runs whatever
Python 3 it finds. The cleaning itself is ``hushbridge process`` in a child process, so nothing
of hushbridge (numba, onnxruntime) loads into Resolve.

What it does, per the scripting API (Resolve's README.txt, "Last Updated" 2025-2026):

1. Which clips: the timeline's selected clips where the API can say (``Timeline.GetSelectedClips``,
   Resolve 21), else every clip on the enabled audio tracks. Skipped, and said why: transitions
   (items without a media pool item), disabled clips, media without audio or not on disk, and
   tracks this script made (their names start with ``HushBridge``).
2. Each source file is cleaned once, whole (``hushbridge process SRC OUT --preset P``), into the
   output folder: the result lines up with the source sample for sample (the engine compensates
   its latency), so any range of it stands for the same range of the source. A result newer than
   its source is used again.
3. The results are imported into a media pool bin ``HushBridge`` (once each), a new audio track
   of the sources' layout (mono, stereo...) is added and named ``HushBridge <preset>``, and every
   clip is appended there with ``AppendToTimeline([clipInfo])``: the same source range (source
   frames count at the media's frame rate, which Resolve gives a WAV as 24 whatever the
   timeline's: converted through seconds), ``endFrame`` exclusive, ``recordFrame`` the original's
   ``GetStart()`` (absolute, e.g. 86400 + n on a timeline starting at 01:00:00:00). Each new item
   is read back (track, start, duration): the API can drop an append silently (an overlap).

Long jobs report progress (a window with Cancel where ``fusion.UIManager`` exists, Resolve
Studio; the Console otherwise) and can be cancelled between and during files.
"""
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

BIN_NAME = "HushBridge"
TRACK_PREFIX = "HushBridge"
# AddTrack's audio sub-types by channel count (README: "mono", "stereo", ... "adaptive1".."adaptive36");
# more channels than two are taken as separate microphones (a field recorder's poly WAV), not surround
LAYOUTS = {1: "mono", 2: "stereo"}
MAX_CHANNELS = 36


class ResolveScriptError(Exception):
    """Something the user must fix before the script can run (nothing open, no hushbridge)."""


def get_resolve(namespace=None):
    """The ``Resolve`` object: the ``resolve`` global a Workspace script gets, else
    ``bmd.scriptapp("Resolve")``, else ``DaVinciResolveScript.scriptapp("Resolve")`` (external
    scripting: Resolve Studio, with RESOLVE_SCRIPT_API on PYTHONPATH)."""
    namespace = namespace or {}
    if namespace.get("resolve") is not None:
        return namespace["resolve"]
    bmd = namespace.get("bmd")
    if bmd is not None:
        app = bmd.scriptapp("Resolve")
        if app is not None:
            return app
    try:
        import DaVinciResolveScript  # noqa: N813 - Blackmagic's module name
    except ImportError:
        DaVinciResolveScript = None  # noqa: N806
    app = DaVinciResolveScript.scriptapp("Resolve") if DaVinciResolveScript is not None else None
    if app is None:
        raise ResolveScriptError("cannot reach DaVinci Resolve: run this from Workspace > Scripts, or start Resolve "
                                 "(Studio, with external scripting on in Preferences > General) first")
    return app


def has(obj, method):
    """Whether the API object has ``method``: its bridge makes up a callable for any name, so
    ``hasattr`` says yes to everything; ``dir()`` lists the real ones."""
    try:
        return method in dir(obj)
    except Exception:  # noqa: BLE001 - a bridge object that cannot list: assume the old API
        return False


class Clip(object):
    """One timeline item to clean: where it sits and which seconds of its media it plays."""

    def __init__(self, item, track, path, channels, start, duration, source_s, length_s, pick=None):
        self.item = item
        self.track = track  # audio track index (1-based) it is on
        self.path = path  # the file its sound comes from (its media's, or a file synced to it)
        self.pick = pick  # the channels of that file it plays (1-based), None: all of them
        self.channels = channels
        self.start = start  # record frame (absolute)
        self.duration = duration  # record frames
        self.source_s = source_s  # where in the media it starts, seconds
        self.length_s = length_s  # how long it plays, seconds (at 100 %: its record length)

    @property
    def key(self):
        """What is cleaned for it: a file, or some channels of it."""
        return (self.path, tuple(self.pick) if self.pick else None)

    def __repr__(self):
        return "<Clip %s %.3f s + %.3f s at %s>" % (os.path.basename(self.path), self.source_s, self.length_s,
                                                    self.start)


def _number(text, default=0.0):
    try:
        return float(str(text).split()[0])
    except (ValueError, IndexError):
        return default


def frame_rate(text):
    """A frame rate as Resolve writes it ("25", "23.976", "29.97 DF") as the exact number:
    the NTSC rates are n * 1000 / 1001."""
    fps = _number(text, 0.0)
    whole = round(fps)
    if fps > 0 and abs(fps - whole) > 1e-6 and abs(fps - whole * 1000.0 / 1001.0) < 0.01:
        return whole * 1000.0 / 1001.0
    return fps


def _source_seconds(item, fps, tl_fps):
    """(start s, length s) of what ``item`` plays of its media, or a string saying why that is
    not a plain range. Source frames are whole frames at the media's rate, so a clip trimmed on
    another rate's grid starts between two of them; its left offset (timeline frames, with
    sub-frames from Resolve 20) says where exactly, where it agrees with them."""
    first, end = item.GetSourceStartFrame(), item.GetSourceEndFrame()
    if first is None or end is None:
        return "Resolve gives no source range (before Resolve 18)"
    if end < first:
        return "reversed: not supported yet"
    length = item.GetDuration() / tl_fps
    # whole frames on both sides: at 100 % they agree within the rounding of the coarser grid, or
    # within half a frame where media and timeline share a rate (a 1 s clip at 104 % passed)
    slack = 0.5 / fps if abs(fps - tl_fps) < 1e-6 else 1.5 / min(fps, tl_fps)
    if abs((end - first) / fps - length) > slack:
        return "retimed (a speed change): not supported yet"
    start = first / fps
    if has(item, "GetLeftOffset"):
        try:
            left = item.GetLeftOffset(True)
        except TypeError:  # before sub-frames
            left = item.GetLeftOffset()
        if left is not None and abs(left / tl_fps - start) < 1.0 / fps:
            start = left / tl_fps
    return start, length


def _wav_format(path):
    """(channels, sample rate) of a WAV (or RF64) from its header, None for anything else (the
    standard library only: this runs in Resolve's Python)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
                return None
            for _ in range(64):
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                size = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"fmt ":
                    fmt = f.read(min(size, 16))
                    if len(fmt) < 8:
                        return None
                    return int.from_bytes(fmt[2:4], "little"), int.from_bytes(fmt[4:8], "little")
                f.seek(size + (size & 1), 1)
    except OSError:
        return None
    return None


def _entry_of(item, tracks):
    """The ``track_mapping`` entry of a split clip that ``item`` plays: the clip's items are
    linked, one per timeline track in the order of the clip's tracks (assumed: the README does not
    say), so its place among its linked audio items of the same media is its entry; None where
    the counts disagree."""
    if not has(item, "GetLinkedItems") or not has(item, "GetTrackTypeAndIndex"):
        return None

    def media_id(i):
        m = i.GetMediaPoolItem()
        return m.GetClipProperty("File Path") if m is not None else None

    mine = media_id(item)
    family = [item] + [i for i in (item.GetLinkedItems() or [])
                       if (i.GetTrackTypeAndIndex() or [None])[0] == "audio" and media_id(i) == mine
                       and i.GetStart() == item.GetStart()]
    keys = sorted(tracks, key=lambda k: int(k) if str(k).isdigit() else 0)
    if len(family) != len(keys):
        return None
    family.sort(key=lambda i: int(i.GetTrackTypeAndIndex()[1]))
    return tracks[keys[family.index(item)]]


def audio_source(item, path, channels):
    """(file, channels picked or None, offset in samples) of the sound ``item`` plays, from its
    audio mapping (``GetSourceAudioChannelMapping``, Resolve 19.0.1: which channels of its media,
    and of files synced to it with Auto Sync Audio or Link Clips, it plays), or a string saying
    why it cannot be cleaned. Without a mapping: every channel of its media."""
    if not has(item, "GetSourceAudioChannelMapping"):
        return path, None, 0
    try:
        mapping = json.loads(item.GetSourceAudioChannelMapping() or "")
    except ValueError:
        return path, None, 0
    tracks = mapping.get("track_mapping") if isinstance(mapping, dict) else None
    if not isinstance(tracks, dict) or not tracks:
        return path, None, 0
    if len(tracks) == 1:
        entry = list(tracks.values())[0]
    else:  # a clip split into several tracks (Clip Attributes): which one is this item?
        entry = _entry_of(item, tracks)
        if entry is None:
            return ("its audio mapping lists %d tracks and which one this clip plays cannot be told: "
                    "not supported yet" % len(tracks))
    if not isinstance(entry, dict) or not entry.get("channel_idx"):
        return path, None, 0
    if entry.get("mute"):
        return "muted in its audio mapping"
    try:
        picked = [int(i) for i in entry["channel_idx"]]
        embedded = int(mapping.get("embedded_audio_channels", channels))
    except (TypeError, ValueError):
        return path, None, 0
    if all(1 <= i <= embedded for i in picked):
        every = picked == list(range(1, embedded + 1)) and embedded == channels
        return path, None if every else picked, 0
    base = embedded  # after the media's own channels come each synced file's, in key order
    linked = mapping.get("linked_audio") or {}
    for key in sorted(linked, key=lambda k: int(k) if str(k).isdigit() else 0):
        info = linked[key] if isinstance(linked[key], dict) else {}
        n = int(info.get("channels") or 0)
        if n and all(base < i <= base + n for i in picked):
            synced = info.get("path") or ""
            if not os.path.isfile(synced):
                return "plays audio synced from %s, which is not on disk" % (synced or "a file Resolve does not name")
            local = [i - base for i in picked]
            return synced, None if local == list(range(1, n + 1)) else local, int(info.get("offset") or 0)
        base += n
    return "plays channels of several files (its own and synced ones): not supported yet"


def collect_clips(timeline):
    """(clips to clean, [(item name, why it is skipped)])."""
    tl_fps = frame_rate(timeline.GetSetting("timelineFrameRate")) or 24.0
    items = []
    skipped = []
    selection = timeline.GetSelectedClips() or [] if has(timeline, "GetSelectedClips") else []
    for item in selection:
        kind = item.GetTrackTypeAndIndex() if has(item, "GetTrackTypeAndIndex") else None
        if kind and kind[0] == "audio":
            items.append((item, int(kind[1])))
    if selection and not items:
        skipped.append(("the selection", "no audio clip in it (select the audio, or nothing for every clip)"))
        return [], skipped
    if not selection:  # nothing selected (or no way to know): every clip on the enabled audio tracks
        for track in range(1, int(timeline.GetTrackCount("audio") or 0) + 1):
            name = timeline.GetTrackName("audio", track) or ""
            if name.startswith(TRACK_PREFIX):
                skipped.append(("track %s" % name, "made by HushBridge"))
                continue
            if has(timeline, "GetIsTrackEnabled") and not timeline.GetIsTrackEnabled("audio", track):
                continue
            for item in timeline.GetItemListInTrack("audio", track) or []:
                items.append((item, track))
    clips = []
    for item, track in items:
        name = item.GetName() or "(transition)"
        if (timeline.GetTrackName("audio", track) or "").startswith(TRACK_PREFIX):
            skipped.append((name, "on a track HushBridge made"))
            continue
        media = item.GetMediaPoolItem()
        if media is None:
            skipped.append((name, "not a clip (a transition or generator)"))
            continue
        if has(item, "GetClipEnabled") and not item.GetClipEnabled():
            skipped.append((name, "disabled"))
            continue
        path = media.GetClipProperty("File Path") or ""
        channels = int(_number(media.GetClipProperty("Audio Ch"), 0))
        if not path or not os.path.isfile(path):
            skipped.append((name, "its media is not on disk (%s)" % (path or "no file path")))
            continue
        if path.endswith(".hushbridge.wav"):
            skipped.append((name, "already cleaned by HushBridge"))
            continue
        fps = frame_rate(media.GetClipProperty("FPS"))
        if fps <= 0:
            skipped.append((name, "Resolve gives its media no frame rate"))
            continue
        span = _source_seconds(item, fps, tl_fps)
        if not isinstance(span, tuple):
            skipped.append((name, span))
            continue
        source = audio_source(item, path, channels)
        if not isinstance(source, tuple):
            skipped.append((name, source))
            continue
        sound, pick, offset = source
        start_s, count = span[0], len(pick) if pick else channels
        if sound == path and count < 1:  # (a camera clip whose sound is synced may have none of its own)
            skipped.append((name, "its media has no audio"))
            continue
        if sound != path:  # synced audio: the file's sample = the media's sample - offset (README)
            fmt = _wav_format(sound)
            if not fmt or not fmt[1]:
                skipped.append((name, "plays audio synced from %s, not a WAV file" % sound))
                continue
            start_s -= offset / float(fmt[1])
            count = len(pick) if pick else fmt[0]
            if start_s < 0:
                skipped.append((name, "starts before its synced audio file %s does" % os.path.basename(sound)))
                continue
        if count > MAX_CHANNELS:
            skipped.append((name, "%d channels: a Resolve audio track takes %d at most" % (count, MAX_CHANNELS)))
            continue
        clips.append(Clip(item, track, sound, count, item.GetStart(), item.GetDuration(), start_s, span[1], pick))
    return clips, skipped


def preset_label(preset):
    """A preset as names show it: its name, or a .toml file's stem."""
    base = os.path.basename(preset)
    return os.path.splitext(base)[0] if base.lower().endswith(".toml") else preset


def cleaned_path(out_dir, source, preset, pick=None):
    """Where the cleaned version of ``source`` goes: ``<stem>.<hash of its path>.<preset>.hushbridge.wav``
    (two recorders' ``ZOOM0001.WAV`` of two days are two files), ``...<preset>.ch2.hushbridge.wav``
    for some of its channels (``pick``)."""
    stem = os.path.splitext(os.path.basename(source))[0]
    tag = hashlib.sha1(os.path.abspath(source).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in preset_label(preset))
    channels = ".ch%s" % "-".join(str(c) for c in pick) if pick else ""
    return os.path.join(out_dir, "%s.%s.%s%s.hushbridge.wav" % (stem, tag, safe, channels))


def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _package_version(lib_dir):
    """hushbridge's version, read from the package this module lies in (an upgrade re-renders)."""
    init = os.path.join(os.path.dirname(os.path.dirname(lib_dir)), "__init__.py")
    try:
        with open(init) as f:
            found = re.search(r'__version__\s*=\s*["\']([^"\']+)', f.read())
    except OSError:
        return ""
    return found.group(1) if found else ""


def render_key(source, config, pick=None):
    """What a render depends on: the source file (size, time) and the channels picked, the preset
    (its name and, where the config can find its file, that file's size and time) and
    hushbridge's version."""
    preset = config.get("preset", "dialogue")
    files = [preset] if preset.lower().endswith(".toml") else [
        os.path.join(d, preset + ".toml") for d in config.get("preset_dirs", [])]
    preset_file = next((f for f in files if os.path.isfile(f)), "")
    return {"source": os.path.abspath(source), "source_stamp": _stamp(source), "pick": list(pick or []),
            "preset": preset,
            "preset_file": preset_file, "preset_stamp": _stamp(preset_file) if preset_file else None,
            "version": _package_version(os.path.dirname(os.path.abspath(__file__)))}


class CleanJob(object):
    """Cleans the clips' sources one by one in a child process; :meth:`step` advances without
    blocking (for a UI timer), :meth:`run` blocks. ``cancel()`` stops it between or during files."""

    def __init__(self, clips, config):
        self.config = config
        self.out_dir = config["out_dir"]
        self.preset = config.get("preset", "dialogue")
        seen = []
        for clip in clips:
            if clip.key not in seen:
                seen.append(clip.key)
        self.sources = seen  # (file, channels picked or None) each
        self.results = {}  # source -> cleaned file
        self.errors = []  # (file, message)
        self.reused = []
        self._next = 0
        self._proc = None
        self._log = None
        self._current = None
        self.cancelled = False
        self.done = not seen

    @property
    def progress(self):
        """(files finished, files in all, what is happening now)."""
        now = _shown(self._current) if self._current else ""
        return self._next - (1 if self._proc is not None else 0), len(self.sources), now

    def describe(self):
        """One line for a progress window."""
        return "%d of %d files, now %s" % self.progress

    def cancel(self):
        self.cancelled = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def _finish_child(self, code):
        self._log.seek(0)
        err = self._log.read().decode("utf-8", "replace")
        self._log.close()
        self._proc = self._log = None
        if self.cancelled:
            return
        path, pick = self._current
        out = cleaned_path(self.out_dir, path, self.preset, pick)
        if code == 0 and os.path.isfile(out):
            self.results[self._current] = out
            try:
                with open(out + ".json", "w") as f:
                    json.dump(render_key(path, self.config, pick), f)
            except OSError:
                pass  # no record: the next run renders it again
        else:
            last = [line for line in err.strip().splitlines() if line.strip()]
            self.errors.append((_shown(self._current, full=True),
                                last[-1] if last else "hushbridge exited with %d" % code))

    def _reusable(self, source, out):
        if not self.config.get("reuse", True) or not os.path.isfile(out):
            return False
        try:
            with open(out + ".json") as f:
                return json.load(f) == json.loads(json.dumps(render_key(source[0], self.config, source[1])))
        except (OSError, ValueError):
            return False

    def step(self):
        """Advance: start the next file or look at the running one. Returns ``self.done``.
        Raises :class:`ResolveScriptError` when no file can be cleaned at all (the output folder
        cannot be made, hushbridge is gone)."""
        if self.done:
            return True
        if self._proc is not None:
            code = self._proc.poll()
            if code is None:
                if self.cancelled:
                    self._proc.terminate()
                return False
            self._finish_child(code)
        while not self.cancelled and self._next < len(self.sources):
            source = self.sources[self._next]
            self._next += 1
            self._current = source
            out = cleaned_path(self.out_dir, source[0], self.preset, source[1])
            if self._reusable(source, out):
                self.results[source] = out
                self.reused.append(source)
                continue
            try:
                if not os.path.isdir(self.out_dir):
                    os.makedirs(self.out_dir)
            except OSError as e:
                self.done = True
                raise ResolveScriptError("cannot make the output folder %s: %s" % (self.out_dir, e.strerror or e))
            command = list(self.config["hushbridge"]) + ["process", source[0], out, "--preset", self.preset, "--quiet"]
            if source[1]:
                command += ["--pick", ",".join(str(c) for c in source[1])]
            self._log = tempfile.TemporaryFile()  # not a pipe: a chatty child never blocks on it
            flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # Windows: no console flashing up
            try:
                self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._log,
                                              creationflags=flags)
            except OSError as e:
                self._log.close()
                self._log = None
                self.done = True
                raise ResolveScriptError("cannot run hushbridge (%s): %s; run `hushbridge install-host-scripts "
                                         "resolve` again" % (command[0], e.strerror or e))
            return False
        self.done = True
        return True

    def run(self, report=None, poll_s=0.1):
        """Step to the end, blocking; ``report(text)`` hears each new progress line."""
        said = None
        while not self.step():
            if report is not None and self.describe() != said:
                said = self.describe()
                report("HushBridge: %s" % said)
            time.sleep(poll_s)
        return self


def _shown(source, full=False):
    """A source (file, channels picked) as the Console names it."""
    path, pick = source
    name = path if full else os.path.basename(path)
    return "%s (channel%s %s)" % (name, "s" if len(pick) > 1 else "", ",".join(str(c) for c in pick)) if pick else name


def _media_bin(pool):
    root = pool.GetRootFolder()
    for folder in root.GetSubFolderList() or []:
        if folder.GetName() == BIN_NAME:
            return folder
    return pool.AddSubFolder(root, BIN_NAME)


def import_cleaned(pool, files):
    """{file: MediaPoolItem}: each file imported into the HushBridge bin once (an earlier
    import of the same file is used again)."""
    folder = _media_bin(pool)
    if folder is None:
        raise ResolveScriptError("could not make the media pool bin %r" % BIN_NAME)
    have = {}
    for clip in folder.GetClipList() or []:
        have[clip.GetClipProperty("File Path")] = clip
    missing = [f for f in files if f not in have]
    if missing:
        current = pool.GetCurrentFolder()
        pool.SetCurrentFolder(folder)  # ImportMedia puts clips in the current folder
        try:
            for imported in pool.ImportMedia(missing) or []:
                have[imported.GetClipProperty("File Path")] = imported
        finally:
            if current is not None:
                pool.SetCurrentFolder(current)
    return dict((f, have[f]) for f in files if f in have)


def _new_track(timeline, channels, label):
    layout = LAYOUTS.get(channels, "adaptive%d" % channels)
    if not timeline.AddTrack("audio", layout):
        raise ResolveScriptError("Resolve refused a new %s audio track" % layout)
    index = int(timeline.GetTrackCount("audio"))
    taken = set(timeline.GetTrackName("audio", t) for t in range(1, index))
    name, n = label, 2
    while name in taken:
        name, n = "%s %d" % (label, n), n + 1
    timeline.SetTrackName("audio", index, name)
    return index, name


def _undo(timeline, item):
    """Take an item Resolve put in the wrong place off the timeline again (it would hide the next)."""
    if has(timeline, "DeleteClips"):
        timeline.DeleteClips([item], False)


def place(project, timeline, clips, cleaned, preset):
    """Append every clip's cleaned media at its record frames on a new track for each source
    track (and channel layout). Returns ([(clip, new item)], [(clip, why not)], [track names])."""
    pool = project.GetMediaPool()
    media = import_cleaned(pool, sorted(set(cleaned[c.key] for c in clips if c.key in cleaned)))
    placed, failed, tracks = [], [], []
    groups = {}
    for clip in clips:
        if clip.key not in cleaned:
            failed.append((clip, "its source was not cleaned"))
        elif cleaned[clip.key] not in media:
            failed.append((clip, "Resolve did not import %s" % cleaned[clip.key]))
        else:
            groups.setdefault((clip.track, clip.channels), []).append(clip)
    for (source_track, channels) in sorted(groups):
        label = "%s %s - %s" % (TRACK_PREFIX, preset_label(preset), timeline.GetTrackName("audio", source_track))
        if sum(1 for t, _c in groups if t == source_track) > 1:  # clips of several layouts on one track
            label += " (%s)" % LAYOUTS.get(channels, "%d ch" % channels)
        track, name = _new_track(timeline, channels, label)
        made = 0
        for clip in sorted(groups[(source_track, channels)], key=lambda c: c.start):
            new_media = media[cleaned[clip.key]]
            fps = frame_rate(new_media.GetClipProperty("FPS")) or 24.0
            # the cleaned file lines up with its source: the same seconds, in its own frames
            first = clip.source_s * fps
            end = first + clip.length_s * fps
            if abs(first - round(first)) < 1e-6 and abs(end - round(end)) < 1e-6:
                first, end = int(round(first)), int(round(end))
            info = {"mediaPoolItem": new_media, "startFrame": first, "endFrame": end, "mediaType": 2,
                    "trackIndex": track, "recordFrame": clip.start}
            appended = pool.AppendToTimeline([info]) or []
            item = appended[0] if appended else None
            if item is None:
                failed.append((clip, "Resolve did not append it (does it overlap another clip of its track?)"))
                continue
            where = item.GetTrackTypeAndIndex() if has(item, "GetTrackTypeAndIndex") else ["audio", track]
            # record frames are whole: a range between two of them may round to one frame either way
            if list(where) != ["audio", track] or item.GetStart() != clip.start or \
                    abs(item.GetDuration() - clip.duration) > 1:
                _undo(timeline, item)
                failed.append((clip, "Resolve placed it at %s, frame %s, %s frames long (wanted audio %d, frame "
                                      "%s, %s); taken off again" % (where, item.GetStart(), item.GetDuration(),
                                                                     track, clip.start, clip.duration)))
                continue
            placed.append((clip, item))
            made += 1
        if made:
            tracks.append(name)
        elif has(timeline, "DeleteTrack"):  # nothing landed there: no empty track left behind
            timeline.DeleteTrack("audio", track)
    return placed, failed, tracks


def open_timeline(resolve):
    """(project, timeline) the user has open, or :class:`ResolveScriptError` saying what is not."""
    project = resolve.GetProjectManager().GetCurrentProject()
    if project is None:
        raise ResolveScriptError("no project is open")
    timeline = project.GetCurrentTimeline()
    if timeline is None:
        raise ResolveScriptError("the project has no timeline open")
    return project, timeline


def clean_timeline(resolve, config, report=print, job_runner=None):
    """The whole script: returns a summary dict (also printed through ``report``)."""
    project, timeline = open_timeline(resolve)
    clips, skipped = collect_clips(timeline)
    for name, why in skipped:
        report("HushBridge: skipped %s: %s" % (name, why))
    if not clips:
        report("HushBridge: no audio clips to clean on %s" % timeline.GetName())
        return {"placed": 0, "failed": 0, "skipped": len(skipped), "tracks": [], "cancelled": False, "errors": []}
    job = CleanJob(clips, config)
    report("HushBridge: cleaning %d clip(s) from %d file(s) with preset %s" % (len(clips), len(job.sources), job.preset))
    if job_runner is not None:
        job_runner(job)
    else:
        job.run(report)
    for source, message in job.errors:
        report("HushBridge: could not clean %s: %s" % (source, message))
    if job.cancelled:
        report("HushBridge: cancelled; the timeline is unchanged")
        return {"placed": 0, "failed": 0, "skipped": len(skipped), "tracks": [], "cancelled": True,
                "errors": job.errors}
    placed, failed, tracks = place(project, timeline, clips, job.results, job.preset)
    for clip, why in failed:
        report("HushBridge: not placed: %s at frame %s: %s" % (clip.item.GetName(), clip.start, why))
    report("HushBridge: %d clip(s) on %s%s" % (len(placed), ", ".join(tracks) or "no new track",
                                               (", %d reused" % len(job.reused)) if job.reused else ""))
    return {"placed": len(placed), "failed": len(failed), "skipped": len(skipped), "tracks": tracks,
            "cancelled": False, "errors": job.errors}


def run_with_window(fusion, bmd, job):
    """Drive ``job`` from a UIManager window with a progress line and Cancel; False when the
    window cannot be made (Resolve's free edition has no UIManager since 19.1)."""
    ui = getattr(fusion, "UIManager", None) if fusion is not None else None
    if ui is None or bmd is None:
        return False
    disp = bmd.UIDispatcher(ui)
    win = disp.AddWindow({"ID": "HushBridgeClean", "WindowTitle": "HushBridge",
                          "Geometry": [200, 200, 460, 120]},
                         ui.VGroup([ui.Label({"ID": "Status", "Text": "Starting..."}),
                                    ui.Button({"ID": "Cancel", "Text": "Cancel"})]))
    items = win.GetItems()
    timer = ui.Timer({"ID": "Poll", "Interval": 200, "SingleShot": False})

    failure = []

    def tick(ev):
        try:
            finished = job.step()
        except ResolveScriptError as e:  # raised after the loop, not into Resolve's dispatcher
            failure.append(e)
            finished = True
        if finished:
            disp.ExitLoop()
            return
        items["Status"].Text = job.describe()

    def cancel(ev):
        job.cancel()
        items["Status"].Text = "Cancelling..."

    win.On.Cancel.Clicked = cancel
    win.On.HushBridgeClean.Close = cancel
    disp.On.Timeout = tick
    win.Show()
    timer.Start()
    try:
        disp.RunLoop()
    finally:
        timer.Stop()
        win.Hide()
    if failure:
        raise failure[0]
    while not job.step():  # a window closed early: finish or stop the child process
        time.sleep(0.05)
    return True


MARKER_TAG = "hushbridge:loudness"  # customData of the report's markers: the next report replaces them


class LoudnessJob(object):
    """Renders the timeline's mix (an audio-only WAV, Resolve's "Audio Only" render preset) and
    measures it with ``hushbridge loudness --json --timeline``; :meth:`step` advances without
    blocking, as :class:`CleanJob`'s does. Whatever happens, the render job is removed again (a
    stopped one once it has stopped), the render file deleted (unless ``keep_renders``) and the
    page the user was on opened again (every render call of the API switches to Deliver)."""

    STALL_S = 120.0  # no progress this long: the render is not coming (stuck at "Ready", stopped by hand)
    MEASURE_TIMEOUT_S = 3600.0
    STOP_WAIT_S = 10.0
    FINAL = ("Cancelled", "Failed", "Background Render Cancelled", "Remote Render Cancelled")  # English only: a hint

    def __init__(self, resolve, project, timeline, config):
        self.resolve, self.project, self.timeline, self.config = resolve, project, timeline, config
        self.out_dir = config["out_dir"]
        self.state = "start"
        self.percent = 0
        self.error = None
        self.result = None  # the loudness JSON object of the mix
        self.path = None
        self.cancelled = False
        self.done = False
        self._job = ""
        self._name = ""
        self._page = None
        self._moved = 0.0  # time.time() the percentage last changed
        self._stop_asked = 0.0
        self._proc = None
        self._files = ()

    def describe(self):
        if self.state == "render":
            return "Rendering the mix: %d %%" % self.percent
        if self.state == "measure":
            return "Measuring the mix"
        if self.state == "stopping":
            return "Stopping the render"
        return "Starting..."

    def cancel(self):
        self.cancelled = True

    run = CleanJob.run

    def _finish(self, error=None):
        self.error = self.error or error
        if self._job and has(self.project, "DeleteRenderJob"):
            if not self.project.DeleteRenderJob(self._job):
                self.error = self.error or ("could not take the render job off Resolve's queue: remove it "
                                            "there, or the next Render All renders it again")
            self._job = ""
        if self._page and has(self.resolve, "OpenPage"):
            self.resolve.OpenPage(self._page)
            self._page = None
        for f in self._files:
            f.close()
        if self.path and self.config.get("keep_renders") is not True:
            try:
                os.remove(self.path)
            except OSError:
                pass
        self.done = True
        return True

    def step(self):
        if self.done:
            return True
        try:
            return getattr(self, "_" + self.state)()
        except Exception as e:  # noqa: BLE001 - the page and the job are put back whatever happens
            return self._finish("%s: %s" % (type(e).__name__, e))

    def _start(self):
        project = self.project
        self._page = self.resolve.GetCurrentPage() if has(self.resolve, "GetCurrentPage") else None
        if not os.path.isdir(self.out_dir):
            os.makedirs(self.out_dir)
        self._name = "hushbridge-mix-%d" % int(time.time() * 1000)  # unique: an old file never passes for the new one
        presets = project.GetRenderPresetList() if has(project, "GetRenderPresetList") else None
        loaded = (presets is None or "Audio Only" in presets) and project.LoadRenderPreset("Audio Only")
        if not loaded and not project.SetCurrentRenderFormatAndCodec("wav", "LinearPCM"):  # before Resolve 19
            return self._finish("Resolve has no \"Audio Only\" render preset (renamed, or in another language?) "
                                "and no WAV codec to render the mix with")
        if has(project, "SetCurrentRenderMode"):
            project.SetCurrentRenderMode(1)  # single clip: the whole timeline as one file
        if not project.SetRenderSettings({"SelectAllFrames": True, "ExportVideo": False, "ExportAudio": True,
                                          "AudioCodec": "lpcm", "AudioBitDepth": 24, "AudioSampleRate": 48000,
                                          "TargetDir": self.out_dir, "CustomName": self._name}):
            return self._finish("Resolve refused the render settings for an audio-only WAV")
        self._job = project.AddRenderJob() or ""
        if not self._job:
            return self._finish("Resolve would not queue an audio render of this timeline")
        self._moved = time.time()
        if not project.StartRendering([self._job], isInteractiveMode=False):
            return self._finish("Resolve would not start the render")
        self.state = "render"
        return False

    def _render(self):
        project = self.project
        if self.cancelled:
            if has(project, "StopRendering"):
                project.StopRendering()
            self._stop_asked = time.time()
            self.state = "stopping"
            return False
        status = project.GetRenderJobStatus(self._job)
        if not status:
            self._job = ""  # taken off the queue by someone else
            return self._finish("the render job left Resolve's queue before it was done")
        if status.get("Error"):
            return self._finish("the render failed: %s" % status["Error"])
        percent = int(_number(status.get("CompletionPercentage"), 0))
        if percent != self.percent:
            self.percent, self._moved = percent, time.time()
        if self.percent < 100:  # JobStatus is in the user's language: the percentage is what counts
            if status.get("JobStatus") in self.FINAL:
                return self._finish("the render stopped (Resolve says %r)" % status.get("JobStatus"))
            if time.time() - self._moved > self.STALL_S:
                return self._finish("the render made no progress for %d s (Resolve says %r)" % (
                    self.STALL_S, status.get("JobStatus")))
            return False
        self.path = self._rendered_file()
        if self.path is None:
            return self._finish("Resolve says the render is complete but wrote no %s*.wav in %s" % (
                self._name, self.out_dir))
        command = list(self.config["hushbridge"]) + ["loudness", self.path, "--json", "--timeline", "0.1"]
        self._files = (tempfile.TemporaryFile(), tempfile.TemporaryFile())
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self._proc = subprocess.Popen(command, stdout=self._files[0], stderr=self._files[1], creationflags=flags)
        self._moved = time.time()
        self.state = "measure"
        return False

    def _stopping(self):
        status = self.project.GetRenderJobStatus(self._job) if self._job else None
        rendering = bool(status) and not status.get("Error") and status.get("JobStatus") == "Rendering"
        if rendering and time.time() - self._stop_asked < self.STOP_WAIT_S:
            return False  # deleted only once stopped: a job deleted mid-render may stay queued
        return self._finish()

    def _rendered_file(self):
        for job in (self.project.GetRenderJobList() if has(self.project, "GetRenderJobList") else None) or []:
            if job.get("JobId") == self._job and job.get("OutputFilename"):
                path = os.path.join(job.get("TargetDir") or self.out_dir, job["OutputFilename"])
                path = path if path.lower().endswith(".wav") else path + ".wav"
                if os.path.isfile(path) and os.path.getmtime(path) >= self._moved - 1:
                    return path
        fresh = [os.path.join(self.out_dir, f) for f in os.listdir(self.out_dir)
                 if self._name in f and f.lower().endswith(".wav")]
        fresh = [f for f in fresh if os.path.getmtime(f) >= self._moved - 1]
        return max(fresh, key=os.path.getmtime) if fresh else None

    def _measure(self):
        if self.cancelled or time.time() - self._moved > self.MEASURE_TIMEOUT_S:
            self._proc.terminate()
        code = self._proc.poll()
        if code is None:
            return False
        texts = []
        for f in self._files:
            f.seek(0)
            texts.append(f.read().decode("utf-8", "replace"))
        if self.cancelled:
            return self._finish()
        if code != 0:
            lines = [line for line in texts[1].strip().splitlines() if line.strip()]
            return self._finish("hushbridge could not measure the mix: %s" % (lines[-1] if lines else code))
        self.result = json.loads(texts[0])[0]
        return self._finish()


def _runs(flags, join=0):
    """[(first, last)] index runs where ``flags`` is true; runs fewer than ``join`` apart are one."""
    runs, first = [], None
    for i, on in enumerate(flags):
        if on and first is None:
            first = i
        elif not on and first is not None:
            runs.append((first, i - 1))
            first = None
    if first is not None:
        runs.append((first, len(flags) - 1))
    merged = []
    for run in runs:
        if merged and run[0] - merged[-1][1] <= join:
            merged[-1] = (merged[-1][0], run[1])
        else:
            merged.append(run)
    return merged


def _fmt(value, unit):
    return "n/a" if value is None else "%.1f %s" % (value, unit)


MAX_MARKERS = 100  # of each kind: a loud programme says "and N more" instead of thousands of calls


def loudness_markers(result, fps, target, loud_lu=3.0, ceiling=-1.0, length=None):
    """The report as markers (frame from the timeline's start, color, name, note, duration):
    a summary at the start, a red span wherever the short-term loudness (3 s) is more than
    ``loud_lu`` over the target, a yellow one wherever the true peak passes the ceiling; spans
    less than 3 s (red) or 1 s (yellow) apart are one, at most MAX_MARKERS of each kind (the
    summary says how many more), all within ``length`` frames."""
    line = result["timeline"]
    step = float(line["step_s"])
    length = int(length) if length else None

    def span(begin_s, end_s):
        first = int(math.floor(begin_s * fps))
        last = int(math.ceil(end_s * fps))
        if length is not None:
            first, last = min(first, length - 1), min(last, length)
        return first, max(1, last - first)

    short, peaks = line["short_term_lufs"], line["true_peak_dbtp"]
    red = []
    for a, b in _runs([v is not None and v > target + loud_lu for v in short], join=int(round(3.0 / step))):
        top = max(v for v in short[a:b + 1] if v is not None)
        frame, duration = span(max(0.0, (a + 1) * step - 3.0), (b + 1) * step)  # a reading covers the 3 s before it
        red.append((frame, "Red", "Too loud", "short-term up to %.1f LUFS (target %.1f + %.1f LU)"
                    % (top, target, loud_lu), duration))
    yellow = []
    for a, b in _runs([v is not None and v > ceiling for v in peaks], join=int(round(1.0 / step))):
        top = max(v for v in peaks[a:b + 1] if v is not None)
        frame, duration = span(a * step, min(len(peaks), b + 1) * step)
        yellow.append((frame, "Yellow", "True peak over", "%.1f dBTP (ceiling %.1f dBTP)" % (top, ceiling), duration))
    integrated = result.get("integrated_lufs")
    off = "" if integrated is None else " (%+.1f LU from the target)" % (integrated - target)
    note = "integrated %s%s, target %.1f LUFS; loudness range %s; true peak max %s; %d too loud, %d true peak over" % (
        _fmt(integrated, "LUFS"), off, target, _fmt(result.get("lra_lu"), "LU"),
        _fmt(result.get("true_peak_dbtp"), "dBTP"), len(red), len(yellow))
    more = [("%d more too loud" % (len(red) - MAX_MARKERS)) if len(red) > MAX_MARKERS else "",
            ("%d more true peak over" % (len(yellow) - MAX_MARKERS)) if len(yellow) > MAX_MARKERS else ""]
    if any(more):
        note += " (not marked: %s)" % ", ".join(m for m in more if m)
    return [(0, "Blue", "Loudness", note, 1)] + sorted(red[:MAX_MARKERS] + yellow[:MAX_MARKERS])


def place_markers(timeline, markers):
    """Replace the last report's markers with ``markers``; returns how many were placed (a frame
    that holds a marker of the user's is nudged on, up to 10 frames)."""
    for frame, info in list((timeline.GetMarkers() or {}).items()):
        if str(info.get("customData", "")).startswith(MARKER_TAG):
            timeline.DeleteMarkerAtFrame(int(frame))
    placed = 0
    for frame, color, name, note, duration in markers:
        for nudge in range(10):
            if timeline.AddMarker(frame + nudge, color, name, note, duration, MARKER_TAG):
                placed += 1
                break
    return placed


def loudness_report(resolve, config, report=print, job_runner=None):
    """The loudness report script: returns a summary dict (also printed through ``report``)."""
    project, timeline = open_timeline(resolve)
    job = LoudnessJob(resolve, project, timeline, config)
    report("HushBridge: rendering and measuring the mix of %s" % timeline.GetName())
    if job_runner is not None:
        job_runner(job)
    else:
        job.run(report)
    if job.cancelled:
        report("HushBridge: cancelled; no markers changed")
        return {"cancelled": True, "markers": 0, "error": None}
    if job.error:
        report("HushBridge: %s" % job.error)
        return {"cancelled": False, "markers": 0, "error": job.error}
    fps = frame_rate(timeline.GetSetting("timelineFrameRate")) or 24.0
    target = float(config.get("loudness_target", -16.0))
    length = None
    if has(timeline, "GetEndFrame") and has(timeline, "GetStartFrame"):
        length = int(timeline.GetEndFrame()) - int(timeline.GetStartFrame())
    markers = loudness_markers(job.result, fps, target, float(config.get("loud_lu", 3.0)),
                               float(config.get("true_peak_ceiling", -1.0)), length=length)
    placed = place_markers(timeline, markers)
    report("HushBridge: %s" % markers[0][3])
    report("HushBridge: %d of %d marker(s) placed" % (placed, len(markers)))
    return {"cancelled": False, "markers": placed, "error": None, "result": job.result}


def _main(namespace, config_path, task):
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        print("HushBridge: cannot read the settings %s (%s); run `hushbridge install-host-scripts resolve` "
              "again" % (config_path, e))
        return None
    try:
        resolve = get_resolve(namespace)
        fusion = namespace.get("fusion") or (resolve.Fusion() if has(resolve, "Fusion") else None)

        def runner(job):
            if not run_with_window(fusion, namespace.get("bmd"), job):  # free edition: the Console
                job.run(print)

        return task(resolve, config, job_runner=runner)
    except (ResolveScriptError, OSError) as e:
        print("HushBridge: %s" % e)
        return None
    except Exception:  # noqa: BLE001 - a bug: say so in one place, with what to send us
        import traceback

        print("HushBridge: internal error; please report it with this:\n%s" % traceback.format_exc())
        return None


def main(namespace, config_path):
    """Entry point of the installed "HushBridge Clean Audio" menu script."""
    return _main(namespace, config_path, clean_timeline)


def main_isolate(namespace, config_path):
    """Entry point of the installed "HushBridge Voice Isolation" menu script: Clean Audio with the
    config's ``isolate_preset`` (voice isolation first), onto a track of its own."""
    def isolate(resolve, config, **kw):
        return clean_timeline(resolve, dict(config, preset=config.get("isolate_preset", "dialogue-isolate")), **kw)

    return _main(namespace, config_path, isolate)


def main_loudness(namespace, config_path):
    """Entry point of the installed "HushBridge Loudness Report" menu script."""
    return _main(namespace, config_path, loudness_report)


if __name__ == "__main__":  # outside Resolve: python hushbridge_resolve.py CONFIG.json
    if len(sys.argv) != 2:
        sys.exit("usage: hushbridge_resolve.py CONFIG.json")
    main({}, sys.argv[1])
