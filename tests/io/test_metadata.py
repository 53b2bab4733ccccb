"""Metadata carried into the rendered file: Broadcast WAV timecode (bext), iXML, text tags.

The inputs are written by ffmpeg (an independent BWF writer) and the outputs read back with our
chunk reader and with ffprobe."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from hushbridge.effects import Chain, Gain
from hushbridge.io.files import process_file
from hushbridge.io.metadata import insert_wav_chunks, wav_chunks
from hushbridge.normalize import normalize_file

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="needs ffmpeg and ffprobe (apt ffmpeg)")

TIME_REFERENCE = 172_800_000  # 1 h at 48 kHz
IXML = b'<?xml version="1.0"?><BWFXML><SPEED><TIMECODE_RATE>25/1</TIMECODE_RATE></SPEED></BWFXML>'


def speech_like(n: int, sr: int = 48000) -> np.ndarray:
    t = np.arange(n) / sr
    return (0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def bwf_input(tmp_path, sr: int = 48000):
    plain = tmp_path / "plain.wav"
    sf.write(str(plain), speech_like(sr * 2, sr), sr, subtype="PCM_24")
    src = tmp_path / "take.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(plain), "-c:a", "pcm_s24le", "-write_bext", "1",
                    "-metadata", f"time_reference={TIME_REFERENCE}", "-metadata", "title=Interview",
                    "-metadata", "originator=Field recorder", str(src)], check=True)
    # a version-2 bext with loudness values (ffmpeg writes version 1) and an iXML chunk
    (bext,) = [d for cid, d in wav_chunks(src, (b"bext",))]
    b = bytearray(bext)
    struct.pack_into("<H", b, 346, 2)
    struct.pack_into("<5h", b, 412, -2300, 500, -100, -1800, -2000)
    assert insert_wav_chunks(src, [(b"bext", bytes(b)), (b"iXML", IXML)])
    return src


def probe_tags(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["format"].get("tags", {})


def chunk_order(path) -> list[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    ids, pos = [], 12
    while pos + 8 <= len(data):
        cid, n = struct.unpack_from("<4sI", data, pos)
        ids.append(cid)
        pos += 8 + n + (n & 1)
    return ids


def test_a_broadcast_wav_keeps_its_timecode_ixml_and_title(tmp_path):
    src = bwf_input(tmp_path)
    dst = tmp_path / "out.wav"
    process_file(src, dst, Chain([Gain(gain_db=-6)]))
    tags = probe_tags(dst)
    assert tags["time_reference"] == str(TIME_REFERENCE) and tags["title"] == "Interview"
    (bext,) = [d for cid, d in wav_chunks(dst, (b"bext",))]
    assert bext[256:288].rstrip(b"\0") == b"Field recorder"  # the originator
    assert struct.unpack_from("<5h", bext, 412) == (0x7FFF,) * 5  # the input's loudness no longer holds
    assert [d for cid, d in wav_chunks(dst, (b"iXML",))] == [IXML]
    order = chunk_order(dst)
    assert order.index(b"bext") < order.index(b"data") and order.index(b"iXML") < order.index(b"data")
    x, _ = sf.read(str(src), dtype="float32")
    y, sr = sf.read(str(dst), dtype="float32")
    assert sr == 48000 and y.shape == x.shape
    assert np.max(np.abs(y - x * 10 ** (-6 / 20))) < 2.5 / 2**23  # the audio is what it was


def test_timecode_follows_a_rate_change_and_normalize_and_loudness_keep_it(tmp_path):
    src = bwf_input(tmp_path)
    up = tmp_path / "up.wav"
    process_file(src, up, Chain([Gain()]), sample_rate=96000)
    assert probe_tags(up)["time_reference"] == str(TIME_REFERENCE * 2)  # still 1 h, at 96 kHz
    norm = tmp_path / "norm.wav"
    normalize_file(src, norm, -16.0)
    assert probe_tags(norm)["time_reference"] == str(TIME_REFERENCE)
    # process --loudness renders to a temporary W64 first: the input's timecode still arrives
    cli = tmp_path / "cli.wav"
    r = subprocess.run([sys.executable, "-m", "hushbridge", "process", str(src), str(cli), "--chain", "gain",
                        "--loudness", "podcast", "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert probe_tags(cli)["time_reference"] == str(TIME_REFERENCE) and probe_tags(cli)["title"] == "Interview"


def test_flac_tags_are_kept_and_a_plain_wav_gets_no_chunks(tmp_path):
    plain = tmp_path / "plain.wav"
    sf.write(str(plain), speech_like(48000), 48000, subtype="PCM_16")
    tagged = tmp_path / "ep.flac"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(plain), "-metadata", "title=Ep1",
                    "-metadata", "artist=Host", str(tagged)], check=True)
    out = tmp_path / "ep_out.flac"
    process_file(tagged, out, Chain([Gain()]))
    tags = {k.lower(): v for k, v in probe_tags(out).items()}
    assert tags["title"] == "Ep1" and tags["artist"] == "Host"
    wav = tmp_path / "plain_out.wav"
    process_file(plain, wav, Chain([Gain()]))
    assert wav_chunks(wav) == [] and chunk_order(wav)[-1] == b"data"


def test_rf64_input_ixml_rate_latin1_tags_and_the_outputs_mode(tmp_path):
    """QA: a BW64/RF64 input's timecode was dropped; iXML kept saying 48000 Hz in a 44.1 kHz
    file; a Latin-1 INFO title came out as replacement characters; an existing output's mode
    0640 became 0644 when the metadata was put in."""
    import os

    src = bwf_input(tmp_path)
    rf64 = tmp_path / "long.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-c:a", "pcm_s24le", "-rf64", "always",
                    "-write_bext", "1", "-metadata", f"time_reference={TIME_REFERENCE}", str(rf64)], check=True)
    assert open(rf64, "rb").read(4) in (b"RF64", b"BW64")
    out = tmp_path / "from_rf64.wav"
    process_file(rf64, out, Chain([Gain()]))
    assert probe_tags(out)["time_reference"] == str(TIME_REFERENCE)
    ixml = b"<BWFXML><FILE_SAMPLE_RATE>48000</FILE_SAMPLE_RATE></BWFXML>"
    latin = bytes([0x49, 0x4E, 0x41, 0x4D, 9, 0, 0, 0]) + "Café Ünï".encode("latin-1") + b"\0\0"  # INAM, 9 bytes
    assert insert_wav_chunks(src, [(b"iXML", ixml), (b"LIST", b"INFO" + latin)])
    down = tmp_path / "down.wav"
    down.write_bytes(b"old")
    os.chmod(down, 0o640)
    process_file(src, down, Chain([Gain()]), sample_rate=44100)
    assert os.stat(down).st_mode & 0o777 == 0o640
    assert [d for _, d in wav_chunks(down, (b"iXML",))] == [ixml.replace(b"48000", b"44100")]
    assert [d for _, d in wav_chunks(down, (b"LIST",))] == [b"INFO" + latin]  # as written, not re-decoded
