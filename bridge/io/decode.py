"""Inputs libsndfile cannot read (M4A/AAC, the audio of a video file...), decoded with ffmpeg.

hushbridge reads audio with libsndfile (soundfile): WAV, FLAC, AIFF, Ogg, MP3, Opus and more. A
phone's voice memo, a video call's recording or an editor's clip is usually AAC in an MP4
(``.m4a``, ``.mp4``, ``.mov``), which it cannot read. Where ``ffprobe`` and ``ffmpeg`` are on
PATH such an input is probed (:func:`probe`: what :func:`hushbridge.io.files.audio_info` returns
for it) and its first audio stream decoded, at its own rate and channel count, to a temporary
32-bit float WAV file (RF64 beyond 4 GB; :func:`decoded`) that is read as any other and removed afterwards; the
input is never changed. The text tags ffmpeg maps into a WAV (title, artist, album, comment,
date...) come along as a WAV input's would.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hushbridge.errors import AudioFileError

#: what to tell a user whose input only ffmpeg reads, where it is missing
INSTALL_HINT = "install ffmpeg (Debian/Ubuntu: apt install ffmpeg; macOS: brew install ffmpeg) and hushbridge decodes it"
PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ProbedInfo:
    """What ffprobe says of an input's first audio stream, with the attributes of soundfile's
    info that hushbridge reads (``frames`` from the stream's duration: the decoded length may
    differ by an encoder's padding; the decoded file is exact)."""

    name: str
    samplerate: int
    channels: int
    frames: int
    duration: float
    subtype: str  # the codec, e.g. "aac"
    #: False where the container does not say how long it is (a streamed WebM or MKV): ``frames``
    #: is then 0 and only the decoded file tells
    length_known: bool = True
    format: str = "FFMPEG"
    format_info: str = "decoded with ffmpeg"
    sections: int = 1
    #: audio streams in the file, and how many of them are decoded as channels (several mono
    #: streams, a camera's microphones: all of them; otherwise the first)
    streams: int = 1
    merged: int = 1
    #: (start, end) in seconds of each merged stream, where the container says (else empty)
    spans: tuple = ()

    @property
    def subtype_info(self) -> str:
        return self.subtype


def available() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def probe(path: str | os.PathLike[str]) -> ProbedInfo | None:
    """The first audio stream of ``path`` as ffprobe reads it; None where ffmpeg is not
    installed or ffprobe finds no media in the file. AudioFileError for a media file that has
    no audio stream (a video without sound)."""
    if not available():
        return None
    try:
        r = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_type,codec_name,sample_rate,channels,duration,start_time:format=duration",
                            "-of", "json", os.fspath(path)],
                           capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    try:
        found = json.loads(r.stdout or "{}")
    except ValueError:
        return None
    streams = found.get("streams") or []
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        if streams:
            raise AudioFileError(f"{path}: has no audio stream (only {', '.join(s.get('codec_type', '?') for s in streams)})")
        return None
    s = audio[0]
    try:
        rate = int(s.get("sample_rate") or 0)
        channels = int(s.get("channels") or 0)
        duration = float(s.get("duration") or (found.get("format") or {}).get("duration") or 0.0)
        # a camera records each microphone as a mono stream of its own (two, four): they are its
        # channels, as an editor shows them (only the first was decoded: the second mic was lost)
        merged = len(audio) if len(audio) > 1 and all(
            int(a.get("channels") or 0) == 1 and int(a.get("sample_rate") or 0) == rate for a in audio) else 1
        spans: tuple = ()
        if merged > 1 and all(a.get("duration") not in (None, "N/A") for a in audio):
            spans = tuple((float(a.get("start_time") or 0.0), float(a.get("start_time") or 0.0) + float(a["duration"]))
                          for a in audio)
            duration = max(b for _, b in spans) - min(a for a, _ in spans)
    except (TypeError, ValueError):
        return None
    if rate <= 0 or channels <= 0:
        return None
    return ProbedInfo(os.fspath(path), rate, merged if merged > 1 else channels, int(round(duration * rate)),
                      duration, str(s.get("codec_name") or "unknown"), length_known=duration > 0.0,
                      streams=len(audio), merged=merged, spans=spans)


@contextmanager
def decoded(path: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None,
            info: ProbedInfo | None = None) -> Iterator[tuple[Path, str]]:
    """Decode ``path``'s first audio stream (its mono streams, where all are: :func:`probe`) into a
    temporary float WAV file (in ``folder``, else
    the system's temporary folder), yield ``(its path, what ffmpeg reported)`` and remove it
    afterwards. ffmpeg decodes what it can of a file cut short and still succeeds, saying so
    ("partial file"): that report is a warning for the caller to pass on ("" when it said
    nothing). ``info``: what :func:`probe` said of ``path``, where the caller has it. (Not W64:
    ffmpeg's float W64 reads back in libsndfile as 32-bit integers.)"""
    if info is None:  # (callers pass what audio_info probed; else before the temporary file:
        info = probe(path)  # a signal in ffprobe then leaves nothing behind)
    merged = info.merged if info is not None else 1
    streams = ["-filter_complex", _merge_graph(info), "-map", "[a]"] if merged > 1 else ["-map", "0:a:0"]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".hushbridge-decoded-", suffix=".wav", dir=folder)
    except OSError:  # a folder we may not write to: the output's own error says so, later
        fd, tmp = tempfile.mkstemp(prefix=".hushbridge-decoded-", suffix=".wav")
    os.close(fd)
    try:
        try:
            # -guess_layout_max 0: a stream that names no speakers gets none (ffmpeg guessed 2.1 for
            # three channels, and its third was then weighed as an LFE)
            r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-guess_layout_max", "0",
                                "-i", os.fspath(path), *streams,
                                # bitexact: no "software: Lavf..." tag of ffmpeg's own among the input's
                                "-c:a", "pcm_f32le", "-f", "wav", "-rf64", "auto", "-bitexact", tmp],
                               capture_output=True, text=True)
        except OSError as e:
            raise AudioFileError(f"{path}: ffmpeg could not run ({e})") from e
        if r.returncode < 0:
            raise AudioFileError(f"{path}: ffmpeg was stopped while decoding it (signal {-r.returncode})")
        lines = (r.stderr or "").strip().splitlines()
        if r.returncode != 0 or os.path.getsize(tmp) == 0:
            raise AudioFileError(f"{path}: ffmpeg could not decode it ({(lines[-1:] or ['no output'])[0][:300]})")
        if merged > 2:  # separate microphones name no speakers (amerge called four of them quad)
            from hushbridge.io.files import set_wav_channel_mask

            set_wav_channel_mask(tmp, 0)
        said = ""
        if lines:
            more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
            said = (f"{path}: ffmpeg decoded it with errors, so it may be cut short or damaged and the output "
                    f"holds only what could be decoded: {lines[0][:200]}{more}")
        yield Path(tmp), said
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _merge_graph(info: ProbedInfo) -> str:
    """The ffmpeg filter graph that makes a camera's mono streams one stream of channels, each
    placed by its start time and padded with silence to the last one's end (amerge alone stops
    at the shortest and ignores the starts)."""
    n, rate = info.merged, info.samplerate
    spans = info.spans if len(info.spans) == n else ()
    first = min((a for a, _ in spans), default=0.0)
    last = max((b for _, b in spans), default=0.0)
    parts = []
    for k in range(n):
        delay = int(round((spans[k][0] - first) * rate)) if spans else 0
        # (aformat: amerge cannot choose a format after apad on streams that name no layout)
        parts.append(f"[0:a:{k}]adelay=delays={delay}S:all=1,apad,aformat=channel_layouts=mono[s{k}]"
                     if spans and last > first else f"[0:a:{k}]anull[s{k}]")
    end = f",atrim=end_sample={int(round((last - first) * rate))}" if spans and last > first else ""
    return ";".join(parts) + ";" + "".join(f"[s{k}]" for k in range(n)) + f"amerge=inputs={n}{end}[a]"


# the masks that say no more than the channel count (mono: centre; stereo: left, right)
_PLAIN_MASKS = {1: 0x4, 2: 0x3}


def speaker_mask(tmp: Path, channels: int) -> int:
    """The channel mask the decoded ``tmp`` carries where it names speakers a plain file of its
    channel count would not (a 5.1 AAC's), else 0: a mono or stereo input stays a plain WAV."""
    from hushbridge.io.files import wav_channel_mask

    mask = wav_channel_mask(tmp) or 0
    return 0 if mask == _PLAIN_MASKS.get(channels) else mask


def output_subtype(out: str | os.PathLike[str], subtype: str | None) -> str | None:
    """``subtype``, else 24-bit PCM where ``out``'s format stores it: a lossy codec decodes to
    float, which 24 bits hold (as for an MP3 input); None leaves the choice to the format."""
    from hushbridge.io.files import _format_for, _writable

    if subtype is not None or Path(out).suffix.lower() == ".opus":
        return subtype
    return "PCM_24" if _writable(_format_for(Path(out)), "PCM_24") else None


def decoded_note(info: ProbedInfo) -> str:
    streams = getattr(info, "streams", 1)
    if getattr(info, "merged", 1) > 1:
        spans = getattr(info, "spans", ())
        uneven = len({round(a, 3) for a, _ in spans}) > 1 or len({round(b, 3) for _, b in spans}) > 1
        how = f": its {info.merged} mono audio streams as channels" + (
            ", placed by their start times and padded with silence to the longest" if uneven else "")
    elif streams > 1:
        how = f": the first of its {streams} audio streams"
    else:
        how = ""
    return f"decoded with ffmpeg ({info.subtype}, {info.samplerate} Hz, {info.channels} ch{how})"


def as_input(report, tmp: Path, said: str, original: str | os.PathLike[str], info: ProbedInfo):  # noqa: ANN001, ANN201
    """A :class:`~hushbridge.io.files.FileReport` of the decoded copy, made one of the input
    (``said``: what ffmpeg reported, a warning)."""
    report.input = os.fspath(original)
    report.notes = [decoded_note(info)] + retold(report.notes, tmp, original, info)
    report.warnings = ([said] if said else []) + retold(report.warnings, tmp, original, info)
    return report


def retold(texts: list[str], tmp: Path, original: str | os.PathLike[str], info: ProbedInfo) -> list[str]:
    """Notes or warnings about the decoded copy, told of the input (its path, its codec)."""
    codec = info.subtype.upper()
    return [mentions(t, tmp, original).replace("the input's FLOAT", f"the input's {codec}") for t in texts]


def mentions(text: str, tmp: Path, original: str | os.PathLike[str]) -> str:
    """``text`` (a note, warning or error) naming the input, not the temporary file."""
    return text.replace(str(tmp), os.fspath(original))
