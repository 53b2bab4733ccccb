"""A file's metadata carried from the input to the rendered output.

Editors line a clip up on a timeline by its timecode: a Broadcast WAV's ``bext`` chunk (its
``TimeReference``, samples since midnight) and a production recorder's ``iXML`` chunk. A
rendered file without them lands at zero on the timeline, so they are copied into a WAV output
(placed before its ``data`` chunk, where every reader looks). Text tags (title, artist, ...:
a WAV's ``LIST/INFO``, FLAC/Ogg comments) are copied through soundfile in any format.

The output is processed audio: a ``bext`` of version 2 or later gets its loudness fields
(EBU Tech 3285 v2) set to "not used" (0x7FFF) instead of the input's stale values, and its
``TimeReference`` is rescaled when the output's rate differs from the input's. soundfile
(libsndfile) reads and writes neither chunk, so they are handled here as raw RIFF chunks.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
from datetime import datetime
from pathlib import Path

import soundfile as sf

#: RIFF chunks copied from a WAV input into a WAV output (``LIST``: INFO tags as they were
#: written, in whatever code page; soundfile reads them as UTF-8)
CARRIED_CHUNKS = (b"bext", b"iXML", b"LIST")
_TEXT_TAGS = ("title", "copyright", "software", "artist", "comment", "date", "album", "license",
              "tracknumber", "genre")
_BEXT_TIME_REFERENCE = 338  # u64, little-endian: first sample's count since midnight
_BEXT_VERSION = 346         # u16
_BEXT_LOUDNESS = 412        # five i16 (version >= 2): loudness, range, true peak, max momentary, max short-term
_LOUDNESS_UNUSED = 0x7FFF
_RIFF_MAX = 0xFFFFFFFF


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The text tags soundfile reads from ``path`` (empty where it has none or cannot read it)."""
    try:
        with sf.SoundFile(str(path)) as f:
            return {k: v for k in _TEXT_TAGS if (v := getattr(f, k, "") or "")}
    except (sf.LibsndfileError, RuntimeError, OSError):
        return {}


def write_tags(f: sf.SoundFile, tags: dict[str, str]) -> None:
    """Set ``tags`` on ``f``, open for writing and before any audio is written; a tag the format
    cannot hold is skipped."""
    for key, value in tags.items():
        try:
            setattr(f, key, value)
        except (sf.LibsndfileError, RuntimeError, ValueError):
            pass


def _riff_chunks(f, rf64: bool = False) -> list[tuple[bytes, int, int]] | None:  # noqa: ANN001 - binary file
    """``(id, payload offset, payload size)`` of every chunk of a RIFF/WAVE file (and, with
    ``rf64``, of an RF64/BW64 one, whose ``data`` size is in its ``ds64`` chunk), or None."""
    f.seek(0)
    head = f.read(12)
    kinds = (b"RIFF", b"RF64", b"BW64") if rf64 else (b"RIFF",)
    if len(head) < 12 or head[:4] not in kinds or head[8:12] != b"WAVE":
        return None
    size = os.fstat(f.fileno()).st_size
    chunks, pos, data64 = [], 12, None
    while pos + 8 <= size:
        f.seek(pos)
        cid, n = struct.unpack("<4sI", f.read(8))
        if cid == b"ds64" and n >= 16:
            data64 = struct.unpack("<QQ", f.read(16))[1]
        elif cid == b"data" and n == _RIFF_MAX and data64 is not None:
            n = data64
        n = min(n, size - pos - 8)  # a truncated last chunk: what is there
        chunks.append((cid, pos + 8, n))
        pos += 8 + n + (n & 1)
    return chunks


def wav_chunks(path: str | os.PathLike[str], ids: tuple[bytes, ...] = CARRIED_CHUNKS) -> list[tuple[bytes, bytes]]:
    """The payloads of the chunks ``ids`` of a RIFF/WAVE file, in file order (none for other files)."""
    try:
        with open(path, "rb") as f:
            chunks = _riff_chunks(f, rf64=True)
            if chunks is None:
                return []
            out = []
            for cid, at, n in chunks:
                if cid in ids:
                    f.seek(at)
                    out.append((cid, f.read(n)))
            return out
    except OSError:
        return []


def processed_bext(payload: bytes, rate_in: int, rate_out: int) -> bytes:
    """A ``bext`` payload for the processed file: time reference at the output rate, the input's
    loudness values marked unused (they describe the unprocessed audio)."""
    b = bytearray(payload)
    if len(b) >= _BEXT_TIME_REFERENCE + 8 and rate_in != rate_out:
        (ref,) = struct.unpack_from("<Q", b, _BEXT_TIME_REFERENCE)
        struct.pack_into("<Q", b, _BEXT_TIME_REFERENCE, round(ref * rate_out / rate_in))
    if len(b) >= _BEXT_LOUDNESS + 10 and struct.unpack_from("<H", b, _BEXT_VERSION)[0] >= 2:
        struct.pack_into("<5h", b, _BEXT_LOUDNESS, *([_LOUDNESS_UNUSED] * 5))
    return bytes(b)


_SF_BROADCAST_INFO = """typedef struct {
    char description[256]; char originator[32]; char originator_reference[32];
    char origination_date[10]; char origination_time[8];
    uint32_t time_reference_low; uint32_t time_reference_high; short version; char umid[64];
    int16_t loudness_value; int16_t loudness_range; int16_t max_true_peak_level;
    int16_t max_momentary_loudness; int16_t max_shortterm_loudness;
    char reserved[180]; uint32_t coding_history_size; char coding_history[256];
} SF_BROADCAST_INFO;"""  # sndfile.h's SF_BROADCAST_INFO_VAR(256); cffi lays it out as the C compiler does
_SFC_SET_BROADCAST_INFO = 0x10F1
_bext_ffi = None


def set_broadcast_info(f: sf.SoundFile, *, description: str, originator: str, when: datetime,
                       time_reference: int) -> bool:
    """Give ``f`` (a WAV open for writing, before any audio) a ``bext`` chunk (EBU Tech 3285 v2):
    ``time_reference`` (its first sample's count since midnight, which editors place a clip by),
    origination date and time from ``when``, loudness fields "not used". False if libsndfile
    refuses (the file is then written without one)."""
    global _bext_ffi
    import cffi
    from soundfile import _ffi, _snd  # noqa: PLC2701 - libsndfile's sf_command, not wrapped

    if _bext_ffi is None:
        ffi = cffi.FFI()
        ffi.cdef(_SF_BROADCAST_INFO)
        _bext_ffi = ffi
    ffi = _bext_ffi
    info = ffi.new("SF_BROADCAST_INFO *")
    info.description = description.encode("utf-8")[:255]
    info.originator = originator.encode("ascii", "replace")[:31]
    info.origination_date = when.strftime("%Y-%m-%d").encode()
    info.origination_time = when.strftime("%H:%M:%S").encode()
    info.time_reference_low = time_reference & 0xFFFFFFFF
    info.time_reference_high = (time_reference >> 32) & 0xFFFFFFFF
    info.version = 2
    for name in ("loudness_value", "loudness_range", "max_true_peak_level", "max_momentary_loudness",
                 "max_shortterm_loudness"):
        setattr(info, name, _LOUDNESS_UNUSED)
    address = _ffi.cast("void *", int(ffi.cast("uintptr_t", info)))
    return _snd.sf_command(f._file, _SFC_SET_BROADCAST_INFO, address, ffi.sizeof("SF_BROADCAST_INFO")) == _snd.SF_TRUE


def processed_ixml(payload: bytes, rate_out: int) -> bytes:
    """An ``iXML`` payload with its ``FILE_SAMPLE_RATE`` set to the output's rate (its timestamp
    carries a sample rate of its own and stays as it is)."""
    return re.sub(rb"(<FILE_SAMPLE_RATE>)\s*\d+(\s*</FILE_SAMPLE_RATE>)",
                  lambda m: m.group(1) + str(rate_out).encode() + m.group(2), payload)


def picked_ixml(payload: bytes, channels: list[int]) -> bytes | None:
    """An ``iXML`` payload describing only ``channels`` (1-based, in that order) of the file it
    came with: its ``TRACK_LIST`` cut down and renumbered (``TRACK_COUNT``, ``CHANNEL_INDEX``,
    ``INTERLEAVE_INDEX``), so a poly file's lav taken alone is not named "Boom" by an editor.
    None where the payload cannot be read as XML (it is then better left out)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(payload)
    except ET.ParseError:
        return None
    tracks = root.find("TRACK_LIST")
    if tracks is not None:
        by_index = {}
        for track in tracks.findall("TRACK"):
            index = (track.findtext("CHANNEL_INDEX") or track.findtext("INTERLEAVE_INDEX") or "").strip()
            if index.isdigit():
                by_index.setdefault(int(index), track)
            tracks.remove(track)
        for k, c in enumerate(channels, 1):
            if c in by_index:
                track = ET.fromstring(ET.tostring(by_index[c]))
                for tag in ("CHANNEL_INDEX", "INTERLEAVE_INDEX"):
                    if track.find(tag) is not None:
                        track.find(tag).text = str(k)
                tracks.append(track)
        count = tracks.find("TRACK_COUNT")
        if count is not None:
            count.text = str(len(channels))
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root)


def insert_wav_chunks(path: str | os.PathLike[str], chunks: list[tuple[bytes, bytes]]) -> bool:
    """Put ``chunks`` into the RIFF/WAVE file ``path`` before its ``data`` chunk (replacing chunks
    of the same ids). The file is rewritten beside itself and renamed over it. False (file
    unchanged) for a file that is not RIFF/WAVE or would pass RIFF's 4 GB."""
    if not chunks:
        return True
    p = Path(path)
    with open(p, "rb") as f:
        found = _riff_chunks(f)
        if found is None or not any(cid == b"data" for cid, _, _ in found):
            return False
        ids = {cid for cid, _ in chunks}
        kept = [c for c in found if c[0] not in ids]
        body = sum(8 + n + (n & 1) for _, _, n in kept) + sum(8 + len(d) + (len(d) & 1) for _, d in chunks)
        if 4 + body > _RIFF_MAX:
            return False
        tmp = p.with_name(p.name + ".meta")
        try:
            with open(tmp, "wb") as out:
                out.write(b"RIFF" + struct.pack("<I", 4 + body) + b"WAVE")
                for cid, at, n in kept:
                    if cid == b"data":
                        for new_id, payload in chunks:
                            out.write(new_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1))
                    out.write(cid + struct.pack("<I", n))
                    f.seek(at)
                    _copy(f, out, n)
                    if n & 1:
                        out.write(b"\0")
            shutil.copymode(p, tmp)  # the mode the output was given (that of the file it replaces)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
    return True


def _copy(src, dst, n: int) -> None:  # noqa: ANN001 - binary files
    while n > 0:
        block = src.read(min(n, 1 << 20))
        if not block:
            raise OSError("file shorter than its chunk sizes")
        dst.write(block)
        n -= len(block)


def carry_wav_metadata(src: str | os.PathLike[str], dst: str | os.PathLike[str], rate_in: int, rate_out: int) -> list[str]:
    """Copy ``src``'s ``bext``/``iXML`` chunks into the WAV ``dst``; the names of those carried."""
    chunks = wav_chunks(src)
    if not chunks:
        return []
    chunks = [(cid, processed_bext(d, rate_in, rate_out) if cid == b"bext"
               else processed_ixml(d, rate_out) if cid == b"iXML" else d) for cid, d in chunks]
    if not insert_wav_chunks(dst, chunks):
        return []
    return [cid.decode("ascii") for cid, _ in chunks]


__all__ = ["CARRIED_CHUNKS", "carry_wav_metadata", "insert_wav_chunks", "picked_ixml", "processed_bext",
           "processed_ixml", "read_tags",
           "wav_chunks", "write_tags"]
