"""Crash-safe recording of a live engine: what it plays (the cleaned output), and what it hears.

The audio thread only copies samples into a preallocated ring (:mod:`hushbridge.dsp.kernels.record`);
a writer thread of :class:`Recorder` moves them to WAV files about twenty times a second. So the
callback never waits on the disk, and a disk that stalls for up to ``buffer_s`` loses nothing;
beyond that the missing blocks become silence of the same length and are counted, so the take
keeps its timing.

Crash safety: every write also rewrites the WAV header (libsndfile's automatic header update),
so the file on disk is a complete, valid WAV up to the last write at all times: a ``kill -9``,
a crash of the interpreter or of the audio server loses at most the last ``POLL_S`` plus what the
ring held; the writer also ``fsync``\\ s every ``fsync_s`` against power loss. A take never
replaces a file: names that exist get ``-2``, ``-3`` ... (created with ``O_EXCL``), and a take
that outgrows WAV's 4 GiB goes on in ``<name>-part2.wav`` and so on, sample-continuous.

Alignment: the output file is the chain's output *for* the take's input, not merely during it:
it starts the chain's latency after the take starts and the take goes on for that long after
the stop, so a raw file and a cleaned file of one take line up sample for sample (swap them on a
timeline). The latency is the one at the start of the take; a preset loaded during a take with a
different latency shifts what follows by the difference, which :attr:`Take.latency_changes` counts.
"""
from __future__ import annotations

import glob
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile as sf

from hushbridge.dsp.kernels import record as k
from hushbridge.errors import RecordingError
from hushbridge.io.files import Quantizer
from hushbridge.io.metadata import set_broadcast_info

log = logging.getLogger(__name__)

POLL_S = 0.05  # the writer's period: what a crash can lose beyond the ring's content
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
# a WAV's sizes are 32-bit: a part ends before its RIFF size would pass 4 GiB (header room kept)
WAV_LIMIT_BYTES = 2**32 - 2**20
_BYTES = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}
HEADER_ROOM = 4096  # bytes a part keeps for its header and labels (bext alone is 610)
MIN_SPLIT_BYTES = 65536
# libsndfile's sf_command codes (sndfile.h); soundfile does not name them
_SFC_SET_UPDATE_HEADER_AUTO = 0x1061


@dataclass
class Take:
    """One recording: its files, how long it is, and what went wrong, if anything."""

    paths: list[Path] = field(default_factory=list)  # the output's files, part 1 first
    raw_paths: list[Path] = field(default_factory=list)  # the input's files, part 1 first
    started: datetime | None = None
    sample_rate: int = 0
    latency: int = 0  # samples the output file is shifted by to line up with the input
    frames: int = 0  # frames in each file of the take so far (all parts)
    lost_frames: int = 0  # frames the writer could not keep up with: silence in the files
    latency_changes: int = 0  # times the chain's latency changed during the take
    clipped_samples: int = 0  # samples beyond full scale, clipped (PCM formats; FLOAT keeps them)
    error: str = ""  # why the take ended early ("" if it did not)
    finished: bool = False

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    def notes(self) -> list[str]:
        """What a user should know of the take beyond its length, one short phrase each."""
        notes = []
        if self.lost_frames:
            notes.append(f"{self.lost_frames / self.sample_rate:.2f} s lost: disk too slow")
        if self.clipped_samples:
            notes.append(f"{self.clipped_samples} samples clipped: record FLOAT to keep them")
        if self.latency_changes:
            notes.append("the chain's latency changed during the take: the cleaned file is shifted from there")
        if self.error:
            notes.append(f"stopped: {self.error}")
        return notes


class Recorder:
    """Records a running :class:`~hushbridge.engine.Engine` to WAV files, take by take.

    Parameters
    ----------
    target : path
        A ``.wav`` file name for the output of the first take (later takes, and any name that
        exists, get ``-2``, ``-3``...), or a folder: takes are then named by their start time,
        ``hushbridge-YYYYmmdd-HHMMSS.wav``.
    output : bool
        Record what the engine plays (the cleaned signal).
    raw : bool
        Record what it hears, before the chain, as ``<name>-raw.wav`` beside the output.
    subtype : str
        Sample format: ``PCM_24`` (default), ``PCM_16`` (TPDF-dithered) or ``FLOAT``.
    buffer_s : float
        Seconds the ring holds: how long the disk may stall before samples are lost.
    fsync_s : float
        Seconds between forced writes to the disk (0: every write).
    split_bytes : int
        Size at which a file continues in the next part (default: WAV's 4 GiB limit).

    Use :meth:`attach` once the engine is prepared (a backend started), then :meth:`start` and
    :meth:`stop` any number of times; :meth:`close` ends a take still running and the writer.
    """

    def __init__(self, target: str | os.PathLike[str], *, output: bool = True, raw: bool = False,
                 subtype: str = "PCM_24", buffer_s: float = 4.0, fsync_s: float = 1.0,
                 split_bytes: int = WAV_LIMIT_BYTES) -> None:
        if not (output or raw):
            raise ValueError("a Recorder records the output, the raw input or both; both were off")
        if subtype not in SUBTYPES:
            raise ValueError(f"recording sample format {subtype!r}: use one of {', '.join(SUBTYPES)}")
        if not buffer_s > 0:
            raise ValueError(f"buffer_s must be > 0, not {buffer_s!r}")
        if split_bytes < MIN_SPLIT_BYTES:
            raise ValueError(f"split_bytes must be at least {MIN_SPLIT_BYTES}, not {split_bytes!r}")
        # a folder: one that exists, or a name that ends in a separator (Path drops it)
        self.folder = Path(target).is_dir() or str(target).endswith(("/", os.sep))
        target = Path(target)
        if self.folder and not target.is_dir():
            raise RecordingError(f"{target}: no such folder (create it first)")
        if not self.folder:
            if target.suffix.lower() != ".wav":
                raise RecordingError(f"{target}: recordings are WAV files; name it <something>.wav, or give a folder")
            if not target.parent.is_dir():
                raise RecordingError(f"{target}: folder {target.parent} does not exist")
        self.target = target
        self._ext = ".wav" if self.folder else target.suffix  # the user's spelling: Episode.WAV stays .WAV
        self.output = bool(output)
        self.raw = bool(raw)
        self.subtype = subtype
        self.buffer_s = float(buffer_s)
        self.fsync_s = float(fsync_s)
        self.split_bytes = int(split_bytes)
        self._engine = None
        self._ring: np.ndarray | None = None
        self._state = np.zeros(k.STATE_SIZE, dtype=np.int64)
        self._lock = threading.Lock()  # control threads (CLI, OSC, writer): one start/stop at a time
        self._io = threading.Lock()  # the files: one thread at a time writes, closes or parts them
        self._take: Take | None = None
        self._last: Take | None = None
        self._takes: list[Take] = []
        self._writer: threading.Thread | None = None
        self._quit = threading.Event()
        self._wake = threading.Event()
        self._listeners: list = []
        # writer-side state of the current take
        # per file of the take: (its parts so far, the part open, bytes in it, frames before it)
        self._files: list[tuple[list[Path], sf.SoundFile, int, int]] = []
        self._held: np.ndarray | None = None
        self._skip = 0
        self._synced = 0.0
        self._dither: list = []
        self._channels = 0

    # == set-up ===================================================================================
    def attach(self, engine) -> None:  # noqa: ANN001 - an Engine (imported lazily: no cycle)
        """Give the engine's audio callback the ring (sized from its sample rate) and start the
        writer thread. The engine must be prepared."""
        if engine.spec is None:
            raise RecordingError("attach the recorder after the engine is prepared (the backend started)")
        if self._engine is not None:
            raise RecordingError("this recorder is attached already")
        if engine.record_tap is not None:
            raise RecordingError("the engine has a recorder already (one per engine: its takes can record "
                                 "the output, the raw input or both)")
        ch = engine.channels
        cols = ch * (int(self.raw) + int(self.output))
        rows = max(int(self.buffer_s * engine.spec.sample_rate), 4 * 8192)
        self._ring = np.zeros((rows, cols), dtype=np.float32)
        self._engine = engine
        engine.set_record_tap(self._ring, self._state, ch if self.raw else 0, ch if self.output else 0)
        self._quit.clear()
        self._writer = threading.Thread(target=self._run, name="hushbridge-recorder", daemon=True)
        self._writer.start()

    def add_listener(self, listener) -> None:  # noqa: ANN001 - callable(Take)
        """Call ``listener(take)`` (from a control or the writer thread) when a take starts or ends."""
        self._listeners.append(listener)

    @property
    def recording(self) -> bool:
        """A take is running (or finishing: its last samples still going to disk)."""
        return self._take is not None

    @property
    def take(self) -> Take | None:
        """The take running, else the last one (None before the first)."""
        return self._take or self._last

    @property
    def takes(self) -> tuple[Take, ...]:
        """Every take started, oldest first."""
        return tuple(self._takes)

    def status(self) -> str:
        """One line for a status display: ``rec 00:01:23 name.wav`` (and trouble, if any)."""
        take = self.take
        if take is None:
            return "rec armed"
        t = int(take.seconds)
        line = f"{'rec' if self.recording else 'rec stopped'} {t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d} "
        line += (take.paths or take.raw_paths)[-1].name
        return line + "".join(f" ({note})" for note in take.notes())

    # == takes (control side) =====================================================================
    def start(self) -> Take:
        """Start a take now; returns it (its file names). Raises :class:`RecordingError` when
        one is running or the files cannot be created."""
        engine = self._engine
        if engine is None:
            raise RecordingError("the recorder is not attached to a running engine")
        with self._lock:
            if self._take is not None:
                if self._state[k.STATE] in (k.STOPPING, k.DONE):
                    raise RecordingError(f"the previous take ({self._take_name(self._take)}) is still being "
                                         "finished; start again in a moment")
                raise RecordingError(f"already recording to {self._take_name(self._take)}; stop that take first")
            if self.folder and not self.target.is_dir():
                raise RecordingError(f"{self.target}: the folder for the takes is gone (a disk unmounted?)")
            sr = engine.spec.sample_rate
            take = Take(started=datetime.now().astimezone(), sample_rate=sr,
                        latency=engine.latency_samples if self.output else 0)
            self._channels = engine.channels
            if not self._io.acquire(timeout=1.0):
                raise RecordingError("the disk is still busy with the previous take; start again in a moment")
            try:
                self._open_first(take, engine)
            finally:
                self._io.release()
            st = self._state
            st[:] = 0
            self._held = np.zeros((0, engine.channels), dtype=np.float32)
            self._skip = take.latency
            self._latency_seen = engine.latency_samples
            self._synced = time.monotonic()
            self._take = take
            self._takes.append(take)
            st[k.STATE] = k.ROLLING  # last: the audio thread starts taking rows with the next callback
        self._tell(take)
        return take

    def stop(self, timeout: float = 5.0) -> Take | None:
        """End the take: the output goes on for the chain's latency (the output of the last
        input), then the files are closed. Waits up to ``timeout`` seconds for that; returns
        the take (None if none was running)."""
        with self._lock:
            take = self._take
            if take is None:
                return None
            st = self._state
            if st[k.STATE] == k.ROLLING:
                st[k.REMAIN] = take.latency
                st[k.STATE] = k.STOPPING
        self._wake.set()
        deadline = time.monotonic() + timeout
        while self._take is take and time.monotonic() < deadline:
            if not (self._writer and self._writer.is_alive()):
                self._drain()  # no writer (closing): finish here
            time.sleep(0.005)
        return take

    def close(self, audio_running: bool = True, timeout: float = 5.0) -> None:
        """Stop a running take (its files complete) and the writer thread; detach from the
        engine. ``audio_running=False`` (the server or device is gone): end the take at what
        the audio thread gave, without waiting for the latency's worth after it."""
        take = self._take
        if take is not None:
            if audio_running:
                self.stop(timeout)
            if self._take is take:  # no audio to finish it: end at what is in
                self._state[k.STATE] = k.DONE
                self._wake.set()
                deadline = time.monotonic() + timeout
                while self._take is take and time.monotonic() < deadline:
                    if not (self._writer and self._writer.is_alive()):
                        self._drain()
                    time.sleep(0.005)
            if self._take is take:  # the writer is stuck in a write: it finishes the take if the disk comes back
                take.error = take.error or (f"the disk did not respond for {timeout:g} s; the files hold what "
                                            "reached it")
        self._quit.set()
        self._wake.set()
        if self._writer is not None:
            self._writer.join(timeout=timeout)
            self._writer = None
        if self._engine is not None:
            self._engine.set_record_tap(None)
            self._engine = None

    # == files ====================================================================================
    def _take_name(self, take: Take) -> str:
        return str((take.paths or take.raw_paths)[0])

    def _stem(self, take: Take) -> Path:
        if self.folder:
            return self.target / take.started.strftime("hushbridge-%Y%m%d-%H%M%S")
        return self.target.with_suffix("")

    def _open_first(self, take: Take, engine) -> None:  # noqa: ANN001
        stem = self._stem(take)
        for n in range(1, 10000):
            base = stem if n == 1 else stem.with_name(f"{stem.name}-{n}")
            ext = self._ext
            names = [p for p, on in ((base.with_name(base.name + ext), self.output),
                                     (base.with_name(base.name + "-raw" + ext), self.raw)) if on]
            # a name is free when the take's later parts are free too (an earlier take's leftovers)
            if any(p.exists() or any(p.parent.glob(glob.escape(p.stem) + "-part*" + ext)) for p in names):
                continue
            opened: list[sf.SoundFile] = []
            try:
                for p in names:
                    opened.append(self._create(p, take, engine, raw=p.name.endswith("-raw" + ext), first_frame=0))
            except BaseException as e:  # the files this take made so far go again
                for p, f in zip(names, opened):
                    f.close()
                    p.unlink(missing_ok=True)
                if isinstance(e, FileExistsError):
                    continue
                raise
            break
        else:
            raise RecordingError(f"{stem}: 9999 takes of that name exist already")
        if self.output:
            take.paths.append(names[0])
        if self.raw:
            take.raw_paths.append(names[-1])
        # the take's lists themselves: a new part shows in the take at once
        lists = [lst for lst, on in ((take.paths, self.output), (take.raw_paths, self.raw)) if on]
        self._files = [(lst, f, 0, 0) for lst, f in zip(lists, opened)]
        self._dither = [Quantizer(self.subtype, seed=0x5EED + n) for n in range(len(names))]

    def _create(self, path: Path, take: Take, engine, raw: bool, first_frame: int) -> sf.SoundFile:  # noqa: ANN001
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            if first_frame:  # a part's name, free at the start of the take, taken since
                raise RecordingError(f"{path}: something else created this file during the take") from None
            raise
        except OSError as e:
            raise RecordingError(f"{path}: cannot create: {e.strerror}") from e
        try:
            f = sf.SoundFile(fd, "w", take.sample_rate, self._channels, self.subtype, format="WAV", closefd=True)
        except Exception as e:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise RecordingError(f"{path}: cannot write a WAV file there: {e}") from e
        try:
            from hushbridge import __version__

            f.software = f"hushbridge {__version__}"
            f.date = take.started.isoformat(timespec="seconds")
            chain = (" > ".join(engine.chain.ids) if engine is not None else "") or "empty chain"
            f.comment = ("raw input" if raw else
                         f"output of {chain}, {take.latency} samples of latency compensated")
            # time of day of the first sample: editors place the take (and each part) by it
            midnight = take.started.replace(hour=0, minute=0, second=0, microsecond=0)
            since = round((take.started - midnight).total_seconds() * take.sample_rate) + first_frame
            what = "raw input" if raw else f"cleaned by hushbridge ({chain})"
            if not set_broadcast_info(f, description=what, originator="hushbridge", when=take.started,
                                      time_reference=since):
                log.debug("libsndfile refused a bext chunk for %s", path)
        except Exception:  # noqa: BLE001 - the labels are a courtesy; the audio is what matters
            log.debug("could not label %s", path, exc_info=True)
        # every write rewrites the header: the file is a complete WAV at every moment
        from soundfile import _ffi, _snd  # noqa: PLC2701 - libsndfile's sf_command, not wrapped

        if _snd.sf_command(f._file, _SFC_SET_UPDATE_HEADER_AUTO, _ffi.NULL, _snd.SF_TRUE) != _snd.SF_TRUE:
            f.close()
            path.unlink(missing_ok=True)
            raise RecordingError(f"{path}: libsndfile refused to keep the header up to date; not crash-safe")
        return f

    def _next_part(self, i: int, take: Take, engine) -> None:  # noqa: ANN001
        paths, f, size, before = self._files[i]
        frames = before + size // (f.channels * _BYTES[self.subtype])
        f.close()
        first = paths[0]
        part = first.with_name(f"{first.stem}-part{len(paths) + 1}{self._ext}")
        new = self._create(part, take, engine, raw=first.name.endswith("-raw" + self._ext), first_frame=frames)
        paths.append(part)
        self._files[i] = (paths, new, 0, frames)

    # == writer thread ============================================================================
    def _run(self) -> None:
        while not self._quit.is_set() or self._take is not None:  # a take being closed is finished first
            self._wake.wait(POLL_S)
            self._wake.clear()
            self._drain()

    def _abort(self, e: Exception) -> None:
        take = self._take
        self._state[k.STATE] = k.IDLE  # the audio side stops taking rows
        if take is None:
            return
        take.error = str(e) if isinstance(e, (OSError, RecordingError)) else f"{type(e).__name__}: {e}"
        log.error("recording stopped: %s", take.error)
        self._finish(take)

    def _drain(self) -> None:
        with self._io:
            try:
                self._drain_rows()
            except Exception as e:  # noqa: BLE001 - a failing disk ends the take, never the engine
                self._abort(e)

    def _drain_rows(self) -> None:
        take = self._take
        ring = self._ring
        if take is None or ring is None:
            return
        st = self._state
        done = st[k.STATE] == k.DONE  # read before the rows: a take is done only once they are in
        w, r = int(st[k.WRITTEN]), int(st[k.READ])
        engine = self._engine
        if engine is not None and engine.latency_samples != self._latency_seen:
            self._latency_seen = engine.latency_samples
            take.latency_changes += 1
        if w > r:
            cap = ring.shape[0]
            a, b = r % cap, w % cap
            rows = ring[a:b].copy() if a < b else np.concatenate((ring[a:], ring[:b]))
            st[k.READ] = w  # the copy is ours: the audio side may reuse the rows
            self._write(rows, take)
        if done and st[k.GAP]:
            self._write(np.zeros((int(st[k.GAP]), ring.shape[1]), dtype=np.float32), take)
            st[k.GAP] = 0
        take.lost_frames = int(st[k.LOST])
        take.clipped_samples = sum(q.clipped for q in self._dither)
        if done and engine is not None and engine.spec is not None and engine.spec.sample_rate != take.sample_rate:
            take.error = take.error or (f"the sample rate changed to {engine.spec.sample_rate} Hz; the take ends "
                                        "there (start another)")
        if self._files and time.monotonic() - self._synced >= self.fsync_s:
            for _paths, f, _size, _before in self._files:
                f.flush()  # sf_write_sync: fsync
            self._synced = time.monotonic()
        if done:
            self._finish(take)

    def _write(self, rows: np.ndarray, take: Take) -> None:
        ch = self._channels
        np.nan_to_num(rows, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        blocks = []
        if self.output:
            out = rows[:, rows.shape[1] - ch:]
            skip = min(self._skip, out.shape[0])
            self._skip -= skip
            blocks.append(out[skip:])
        if self.raw:
            # held back by the latency: the input's last rows belong after the take's stop
            held = np.concatenate((self._held, rows[:, :ch]))
            keep = min(take.latency, held.shape[0])
            self._held = held[held.shape[0] - keep:]
            blocks.append(held[:held.shape[0] - keep])
        for i, block in enumerate(blocks):
            self._append(i, block, take)
            if i == 0:  # as soon as it is on disk: a failing second file must not hide it
                take.frames += block.shape[0]

    def _append(self, i: int, block: np.ndarray, take: Take) -> None:
        per_frame = block.shape[1] * _BYTES[self.subtype]
        while block.shape[0]:
            paths, f, size, before = self._files[i]
            room = (self.split_bytes - HEADER_ROOM - size) // per_frame
            if room <= 0:
                self._next_part(i, take, self._engine)
                continue
            part, block = block[:room], block[room:]
            try:
                f.write(self._dither[i](part.T))
            except sf.LibsndfileError as e:  # "System error." alone: ask libsndfile which one
                from soundfile import _ffi, _snd  # noqa: PLC2701

                detail = _ffi.string(_snd.sf_strerror(f._file)).decode("utf-8", "replace")
                raise RecordingError(f"{paths[-1]}: {detail or e}") from e
            self._files[i] = (paths, f, size + part.shape[0] * per_frame, before)

    def _finish(self, take: Take) -> None:
        errors = []
        for paths, f, _size, _before in self._files:
            try:
                f.close()
            except Exception as e:  # noqa: BLE001 - close the others; the header is current anyway
                errors.append(f"{paths[-1]}: {e}")
        self._files = []
        if errors and not take.error:
            take.error = "; ".join(errors)
        take.finished = True
        self._last = take
        self._state[k.STATE] = k.IDLE
        self._take = None
        self._tell(take)

    def _tell(self, take: Take) -> None:
        for listener in list(self._listeners):
            try:
                listener(take)
            except Exception:  # noqa: BLE001 - a listener must not stop a take
                log.exception("recording listener failed")



class TransportFollower:
    """A take while the transport plays: started when ``/hb/transport/playing`` turns 1 (Live
    through the HushBridge Remote Script, a MIDI start or continue), ended when it turns 0.
    Engine listeners run on control threads (OSC, MIDI): the starts and stops happen on a thread
    of this follower's own, as they open and close files."""

    def __init__(self, recorder: Recorder, engine) -> None:  # noqa: ANN001 - an Engine
        import queue

        self.recorder = recorder
        self.engine = engine
        self.errors: list[str] = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hushbridge-record-follow", daemon=True)
        self._thread.start()
        engine.add_listener(self._on_change)
        if engine.is_published("/hb/transport/playing") and engine.get("/hb/transport/playing") >= 0.5:
            self._queue.put(True)  # already playing

    def _on_change(self, address: str, value: float, source: object) -> None:  # noqa: ARG002
        if address == "/hb/transport/playing":
            self._queue.put(value >= 0.5)

    def _run(self) -> None:
        while True:
            playing = self._queue.get()
            if playing is None:
                return
            try:
                if playing and not self.recorder.recording:
                    self.recorder.start()
                elif not playing and self.recorder.recording:
                    self.recorder.stop()
            except RecordingError as e:
                self.errors.append(str(e))
                log.error("recording with the transport: %s", e)

    def close(self) -> None:
        self.engine.remove_listener(self._on_change)
        self._queue.put(None)
        self._thread.join(timeout=10.0)
