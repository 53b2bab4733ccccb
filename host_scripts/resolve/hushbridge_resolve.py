"""HushBridge for DaVinci Resolve: clean the timeline's audio with hushbridge and put the result
back in place, on a new audio track at the same record frames. Originals are never touched.

Runs inside Resolve (Workspace > Scripts > Utility > "HushBridge Clean Audio", which
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
import json
import os
import subprocess
import sys
import time

BIN_NAME = "HushBridge"
TRACK_PREFIX = "HushBridge"
# AddTrack's audio sub-types by channel count (README: "mono", "stereo", ... "adaptive1".."adaptive36")
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


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
    """One timeline item to clean: where it sits and what of its media it plays."""

    def __init__(self, item, track, path, fps, source_start, source_end, start, duration, channels):
        self.item = item
        self.track = track  # audio track index (1-based) it is on
        self.path = path  # its media file
        self.fps = fps  # the media's frame rate as Resolve counts its source frames
        self.source_start = source_start  # source frames, end exclusive
        self.source_end = source_end
        self.start = start  # record frame (absolute)
        self.duration = duration
        self.channels = channels

    def __repr__(self):
        return "<Clip %s [%s, %s) at %s>" % (os.path.basename(self.path), self.source_start, self.source_end, self.start)


def _number(text, default=0.0):
    try:
        return float(str(text).split()[0])
    except (ValueError, IndexError):
        return default


def collect_clips(timeline):
    """(clips to clean, [(item name, why it is skipped)])."""
    items = []
    if has(timeline, "GetSelectedClips"):
        for item in timeline.GetSelectedClips() or []:
            kind = item.GetTrackTypeAndIndex() if has(item, "GetTrackTypeAndIndex") else None
            if kind and kind[0] == "audio":
                items.append((item, int(kind[1])))
    skipped = []
    if not items:  # nothing selected (or no way to know): every clip on the enabled audio tracks
        for track in range(1, int(timeline.GetTrackCount("audio") or 0) + 1):
            name = timeline.GetTrackName("audio", track) or ""
            if name.startswith(TRACK_PREFIX):
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
        if channels < 1:
            skipped.append((name, "its media has no audio"))
            continue
        fps = _number(media.GetClipProperty("FPS"), 0.0)
        if fps <= 0:
            skipped.append((name, "Resolve gives its media no frame rate"))
            continue
        clips.append(Clip(item, track, path, fps, item.GetSourceStartFrame(), item.GetSourceEndFrame(),
                          item.GetStart(), item.GetDuration(), channels))
    return clips, skipped


def cleaned_path(out_dir, source, preset):
    """Where the cleaned version of ``source`` goes: ``<stem>.<preset>.hushbridge.wav`` (two
    sources of one name in different folders get the folder's name too)."""
    stem = os.path.splitext(os.path.basename(source))[0]
    parent = os.path.basename(os.path.dirname(os.path.abspath(source))) or "root"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in preset)
    return os.path.join(out_dir, "%s.%s.%s.hushbridge.wav" % (stem, parent, safe))


class CleanJob(object):
    """Cleans the clips' sources one by one in a child process; :meth:`step` advances without
    blocking (for a UI timer), :meth:`run` blocks. ``cancel()`` stops it between or during files."""

    def __init__(self, clips, config):
        self.config = config
        self.out_dir = config["out_dir"]
        self.preset = config.get("preset", "dialogue")
        seen = []
        for clip in clips:
            if clip.path not in seen:
                seen.append(clip.path)
        self.sources = seen
        self.results = {}  # source -> cleaned file
        self.errors = []  # (source, message)
        self.reused = []
        self._next = 0
        self._proc = None
        self._current = None
        self._started = 0.0
        self.cancelled = False
        self.done = not seen

    @property
    def progress(self):
        """(files finished, files in all, what is happening now)."""
        now = os.path.basename(self._current) if self._current else ""
        return self._next - (1 if self._proc is not None else 0), len(self.sources), now

    def cancel(self):
        self.cancelled = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

    def step(self):
        """Advance: start the next file or look at the running one. Returns ``self.done``."""
        if self.done:
            return True
        if self._proc is not None:
            code = self._proc.poll()
            if code is None:
                if self.cancelled:
                    self._proc.terminate()
                return False
            err = self._proc.stderr.read().decode("utf-8", "replace") if self._proc.stderr else ""
            self._proc = None
            if self.cancelled:
                self.done = True
                return True
            out = cleaned_path(self.out_dir, self._current, self.preset)
            if code == 0 and os.path.isfile(out):
                self.results[self._current] = out
            else:
                last = [line for line in err.strip().splitlines() if line.strip()]
                self.errors.append((self._current, last[-1] if last else "hushbridge exited with %d" % code))
        if self.cancelled or self._next >= len(self.sources):
            self.done = True
            return True
        source = self.sources[self._next]
        self._next += 1
        self._current = source
        out = cleaned_path(self.out_dir, source, self.preset)
        if os.path.isfile(out) and os.path.getmtime(out) >= os.path.getmtime(source) and self.config.get("reuse", True):
            self.results[source] = out
            self.reused.append(source)
            return self.step()
        if not os.path.isdir(self.out_dir):
            os.makedirs(self.out_dir)
        command = list(self.config["hushbridge"]) + ["process", source, out, "--preset", self.preset, "--quiet"]
        self._started = time.time()
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return False

    def run(self, report=None, poll_s=0.1):
        while not self.step():
            if report is not None:
                report(*self.progress)
            time.sleep(poll_s)
        return self


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


def _new_track(timeline, channels, preset):
    layout = LAYOUTS.get(channels, "adaptive%d" % channels)
    if not timeline.AddTrack("audio", layout):
        raise ResolveScriptError("Resolve refused a new %s audio track" % layout)
    index = int(timeline.GetTrackCount("audio"))
    taken = set(timeline.GetTrackName("audio", t) for t in range(1, index))
    name, n = "%s %s" % (TRACK_PREFIX, preset), 2
    while name in taken:
        name, n = "%s %s %d" % (TRACK_PREFIX, preset, n), n + 1
    timeline.SetTrackName("audio", index, name)
    return index, name


def place(project, timeline, clips, cleaned, preset):
    """Append every clip's cleaned media on new tracks (one per channel layout) at its record
    frames. Returns ([(clip, new item)], [(clip, why not)], [track names])."""
    pool = project.GetMediaPool()
    media = import_cleaned(pool, sorted(set(cleaned[c.path] for c in clips if c.path in cleaned)))
    placed, failed, tracks = [], [], []
    by_layout = {}
    for clip in clips:
        if clip.path not in cleaned:
            failed.append((clip, "its source was not cleaned"))
        elif cleaned[clip.path] not in media:
            failed.append((clip, "Resolve did not import %s" % cleaned[clip.path]))
        else:
            by_layout.setdefault(clip.channels, []).append(clip)
    for channels in sorted(by_layout):
        track, name = _new_track(timeline, channels, preset)
        tracks.append(name)
        for clip in sorted(by_layout[channels], key=lambda c: c.start):
            new_media = media[cleaned[clip.path]]
            fps = _number(new_media.GetClipProperty("FPS"), clip.fps)
            scale = fps / clip.fps  # source frames of the cleaned file count at its own rate
            info = {"mediaPoolItem": new_media, "startFrame": clip.source_start * scale,
                    "endFrame": clip.source_end * scale, "mediaType": 2, "trackIndex": track,
                    "recordFrame": clip.start}
            if scale == 1.0:
                info["startFrame"], info["endFrame"] = clip.source_start, clip.source_end
            appended = pool.AppendToTimeline([info]) or []
            item = appended[0] if appended else None
            if item is None:
                failed.append((clip, "Resolve did not append it (overlapping clips on the source track?)"))
                continue
            where = item.GetTrackTypeAndIndex() if has(item, "GetTrackTypeAndIndex") else ["audio", track]
            if list(where) != ["audio", track] or item.GetStart() != clip.start or item.GetDuration() != clip.duration:
                failed.append((clip, "Resolve placed it at %s, frame %s, %s frames long (wanted audio %d, frame "
                                      "%s, %s)" % (where, item.GetStart(), item.GetDuration(), track, clip.start,
                                                   clip.duration)))
                continue
            placed.append((clip, item))
    return placed, failed, tracks


def clean_timeline(resolve, config, report=print, job_runner=None):
    """The whole script: returns a summary dict (also printed through ``report``)."""
    project = resolve.GetProjectManager().GetCurrentProject()
    if project is None:
        raise ResolveScriptError("no project is open")
    timeline = project.GetCurrentTimeline()
    if timeline is None:
        raise ResolveScriptError("the project has no timeline open")
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
        last = [None]

        def progress(done, total, now):
            if (done, now) != last[0]:
                last[0] = (done, now)
                report("HushBridge: %d/%d files %s" % (done, total, now))

        job.run(progress)
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
    win = disp.AddWindow({"ID": "HushBridgeClean", "WindowTitle": "HushBridge: cleaning audio",
                          "Geometry": [200, 200, 460, 120]},
                         ui.VGroup([ui.Label({"ID": "Status", "Text": "Starting..."}),
                                    ui.Button({"ID": "Cancel", "Text": "Cancel"})]))
    items = win.GetItems()
    timer = ui.Timer({"ID": "Poll", "Interval": 200, "SingleShot": False})

    def tick(ev):
        if job.step():
            disp.ExitLoop()
            return
        done, total, now = job.progress
        items["Status"].Text = "%d of %d files, now %s" % (done, total, now)

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
    while not job.step():  # a window closed early: finish or stop the child process
        time.sleep(0.05)
    return True


def main(namespace, config_path):
    """Entry point of the installed menu script."""
    with open(config_path) as f:
        config = json.load(f)
    try:
        resolve = get_resolve(namespace)
        fusion = namespace.get("fusion") or (resolve.Fusion() if has(resolve, "Fusion") else None)

        def runner(job):
            if not run_with_window(fusion, namespace.get("bmd"), job):
                job.run(lambda d, t, n: print("HushBridge: %d/%d files %s" % (d, t, n)))

        return clean_timeline(resolve, config, job_runner=runner)
    except ResolveScriptError as e:
        print("HushBridge: %s" % e)
        return None


if __name__ == "__main__":  # outside Resolve: python hushbridge_resolve.py CONFIG.json
    if len(sys.argv) != 2:
        sys.exit("usage: hushbridge_resolve.py CONFIG.json")
    main({}, sys.argv[1])
