"""Files: offline rendering of any soundfile format through a Chain, faster than real time.

:func:`process_file` streams the input in blocks through the same Chain code that runs live,
trims the chain's latency from the head and flushes its tail so the output lines up with the
input and has its length. It keeps the input's sample rate, channel count and subtype unless
told otherwise, dithers (TPDF) when writing integer PCM, reports samples beyond full scale and
clips them only where the format forces it. A steady DC offset at the input's head is removed
before the chain (``dc_offset``). The output is written to a temporary file next
to ``out`` and renamed over it only when everything succeeded, so a failure never damages an
existing file.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from hushbridge.atomic import temp_beside, through_links
from hushbridge.effects.base import SAMPLE_RATES, Effect
from hushbridge.effects.chain import Chain
from hushbridge.effects.render import OfflineRenderer
from hushbridge.errors import AudioFileError
from hushbridge.io.metadata import carry_wav_metadata, insert_wav_chunks, picked_ixml, read_tags, wav_chunks, write_tags

READ_FRAMES = 1 << 16
DC_WINDOW_S = 3.0  # the input's head over which a DC offset is measured
DC_MIN = 1e-3  # offsets under -60 dBFS are left alone (the thump they leave is under -50 dBFS)
DC_MIN_FRAMES_S = 0.25  # files shorter than this are left alone (too few quiet stretches to check)
DC_SILENT_HEAD = 48  # a channel that starts with this many exact zeros (digital silence) keeps its offset

# bits of integer PCM subtypes, for dither and clipping
_PCM_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "ALAC_16": 16,
             "ALAC_20": 20, "ALAC_24": 24, "ALAC_32": 32, "DWVW_12": 12, "DWVW_16": 16, "DWVW_24": 24}
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}


@dataclass
class FileReport:
    """What :func:`process_file` did."""

    input: str
    output: str
    sample_rate: int
    channels: int
    frames: int
    subtype: str
    latency_samples: int
    over_full_scale: int = 0  # output samples beyond ±1.0 before any clipping
    clipped: int = 0  # samples clipped because the output format forced it
    nonfinite_input: int = 0  # NaN/Inf samples found in the input (silenced)
    notes: list[str] = field(default_factory=list)  # what was done (resampling, repairs)
    warnings: list[str] = field(default_factory=list)  # what was wrong with the input


def audio_info(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    """soundfile's info, with our error for missing, unreadable and empty files; for a file
    only ffmpeg reads (M4A/AAC, a video's sound), where it is installed, what ffprobe says
    (:class:`hushbridge.io.decode.ProbedInfo`, ``format == "FFMPEG"``)."""
    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"{p}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{p}: is a directory, not an audio file")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        from hushbridge.io import decode

        info = decode.probe(p)
        if info is None:
            hint = "; ffmpeg cannot read it either (damaged, cut short, or not audio)" if decode.available() else \
                f"; if it is M4A/AAC, MP4 or another format libsndfile cannot read, {decode.INSTALL_HINT}"
            raise AudioFileError(f"{p}: not a readable audio file ({e}){hint}") from e
    if info.frames == 0 and getattr(info, "length_known", True):
        raise AudioFileError(f"{p}: contains no audio (0 frames)")
    return info


def _mask_offset(f) -> int | None:
    """File offset of the ``dwChannelMask`` of the open WAVE_FORMAT_EXTENSIBLE file ``f`` (read
    from its start), or None for any other file."""
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    for _ in range(64):  # 'fmt ' comes first in practice; a few chunks may precede it
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        n = int.from_bytes(chunk[4:8], "little")
        if chunk[:4] == b"fmt ":
            start = f.tell()
            fmt = f.read(min(n, 64))
            if len(fmt) >= 24 and int.from_bytes(fmt[:2], "little") == 0xFFFE:
                return start + 20
            return None
        f.seek(n + (n & 1), os.SEEK_CUR)
    return None


def wav_channel_mask(path: str | os.PathLike[str]) -> int | None:
    """The ``dwChannelMask`` of a WAVE_FORMAT_EXTENSIBLE file (which speaker each channel feeds,
    in bit order: FL FR FC LFE BL BR FLC FRC BC SL SR ...), or None for other files and a zero
    mask. soundfile does not expose it."""
    try:
        with open(path, "rb") as f:
            at = _mask_offset(f)
            if at is None:
                return None
            f.seek(at)
            return int.from_bytes(f.read(4), "little") or None
    except OSError:
        return None


def set_wav_channel_mask(path: str | os.PathLike[str], mask: int) -> bool:
    """Write ``mask`` as the ``dwChannelMask`` of a WAVE_FORMAT_EXTENSIBLE file in place; False
    (nothing written) for any other file. libsndfile writes a mask of its own choosing."""
    with open(path, "r+b") as f:
        at = _mask_offset(f)
        if at is None:
            return False
        f.seek(at)
        f.write(int(mask).to_bytes(4, "little"))
        return True


def truncation_warning(path: str | os.PathLike[str], info: sf._SoundFileInfo) -> str | None:
    """For a RIFF/WAVE file whose ``data`` chunk declares more bytes than the file holds (a copy or
    a recording cut short), what is missing; else None. libsndfile reads such files silently."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(f.fileno()).st_size
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk = f.read(8)
                n = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"data":
                    held = size - pos - 8
                    # 0 and 0xFFFFFFFF: a writer that never came back to fill the size in
                    if n in (0, 0xFFFFFFFF) or n <= held:
                        return None
                    declared = info.frames * n / max(held, 1)
                    return (f"{path}: truncated: its header declares {declared / info.samplerate:.2f} s, "
                            f"the file holds {info.frames / info.samplerate:.2f} s (processed what is there)")
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


_MASK_FORMATS = ("WAV", "WAVEX")  # the formats whose channel mask is written here
# FLAC and Ogg define the speakers of a channel count where a WAV without a mask does not: 4 is
# quad (FL FR BL BR), 7 is 6.1 (FL FR FC LFE BC SL SR: WAV order, as read here); for 1, 2, 3, 5,
# 6 and 8 their layouts weigh the channels as hushbridge's defaults do
_FORMAT_MASKS = {"FLAC": {4: 0x33, 7: 0x70F}, "OGG": {4: 0x33, 7: 0x70F}}


def channel_mask_of(path: str | os.PathLike[str], info: sf._SoundFileInfo | None = None) -> int | None:
    """Which speakers ``path``'s channels feed, as a WAV channel mask: a WAV's own, else the
    layout its format defines where that matters for loudness (:func:`format_channel_mask`).
    ``info``: ``path``'s soundfile info, where the caller has it already."""
    return _named_mask(path, info, _FORMAT_MASKS)


# every layout FLAC and Ogg define (1-8 channels), in WAV order as read here: what the dynamics
# and meters may take as known (an LFE to leave out of a detector)
_FORMAT_LAYOUTS = {1: 0x4, 2: 0x3, 3: 0x7, 4: 0x33, 5: 0x37, 6: 0x3F, 7: 0x70F, 8: 0x63F}


def layout_mask_of(path: str | os.PathLike[str], info: sf._SoundFileInfo | None = None) -> int:
    """The speakers ``path``'s channels feed where the file says so, as a WAV channel mask: a
    WAV's own mask, or the layout FLAC and Ogg define for their channel count; 0 where the file
    does not say (a WAV without a mask: a 5.1 mix or six microphones)."""
    return _named_mask(path, info, {"FLAC": _FORMAT_LAYOUTS, "OGG": _FORMAT_LAYOUTS}) or 0


def _named_mask(path: str | os.PathLike[str], info: sf._SoundFileInfo | None,
                by_format: dict[str, dict[int, int]]) -> int | None:
    """A WAV's own channel mask, else ``by_format[format][channels]``; None where neither says."""
    mask = wav_channel_mask(path)
    if mask:
        return mask
    if info is None:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError):
            return None
    return by_format.get(info.format, {}).get(info.channels)


def format_channel_mask(fmt: str, channels: int) -> int | None:
    """The speakers a ``fmt`` file's ``channels`` channels feed by that format's definition,
    as a WAV channel mask, where it differs from the loudness defaults; else None."""
    return _FORMAT_MASKS.get(fmt, {}).get(channels)


def layout_loss(fmt: str, channels: int, mask: int | None) -> str | None:
    """What writing audio whose speakers ``mask`` names into a ``fmt`` file loses, or None:
    a format without a channel mask is read with the default layout for its channel count,
    which weighs the channels' loudness differently (a 6.0 file read as 5.1 loses a channel to
    the LFE's weight 0)."""
    from hushbridge.dsp import loudness as L

    if fmt in _MASK_FORMATS:
        return None
    own = format_channel_mask(fmt, channels)
    read_as = L.channel_weights_from_mask(channels, own) if own else L.channel_weights(channels)
    meant = L.channel_weights_from_mask(channels, mask) if mask else L.channel_weights(channels)
    if np.array_equal(meant, read_as):
        return None
    default = {4: "quad", 7: "6.1"}.get(channels) if own else L._DEFAULT_LAYOUT.get(channels, "channels of equal weight")
    if mask:
        return (f"{fmt} cannot store the input's speaker layout (channel mask {mask:#x}): players and loudness "
                f"meters will take its {channels} channels as {default}; write a WAV to keep the layout")
    return (f"{fmt} defines {channels} channels as {default}; the input, which names no speakers, was taken "
            f"as {channels} channels of equal weight, and players and loudness meters will read them as {default}")


# Ogg Vorbis and Opus (mapping family 1) order 3-8 channels their own way (Vorbis I spec 4.3.9:
# L C R; FL C FR RL RR LFE; ...), and libsndfile hands them over as stored. hushbridge works in
# the WAV order (FL FR FC LFE BL BR ... SL SR), which its loudness layouts assume: for each
# count, which stored channel is WAV channel i.
_OGG_TO_WAV = {3: (0, 2, 1), 5: (0, 2, 1, 3, 4), 6: (0, 2, 1, 5, 3, 4), 7: (0, 2, 1, 6, 5, 3, 4),
               8: (0, 2, 1, 7, 5, 6, 3, 4)}


def wav_order(fmt: str, channels: int) -> np.ndarray | None:
    """The permutation that puts a ``fmt`` file's channels, as soundfile reads them, in WAV
    order (``data[perm]`` for ``(channels, frames)`` data), or None where they already are."""
    perm = _OGG_TO_WAV.get(channels) if fmt == "OGG" else None
    return np.array(perm) if perm is not None else None


def stored_order(fmt: str, channels: int) -> np.ndarray | None:
    """The inverse of :func:`wav_order`: WAV-ordered channels as a ``fmt`` file stores them."""
    perm = wav_order(fmt, channels)
    return np.argsort(perm) if perm is not None else None


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a whole file as ``(channels, frames)`` float32 in WAV channel order, and its rate."""
    info = audio_info(path)
    if info.format == "FFMPEG":
        from hushbridge.io.decode import decoded

        with decoded(path, info=info) as (tmp, _):
            return read_audio(tmp)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioFileError(f"{path}: cannot read audio ({e})") from e
    perm = wav_order(info.format, info.channels)
    data = data.T if perm is None else data.T[perm]
    return np.ascontiguousarray(data), int(sr)


# codecs libsndfile lists for containers it can only read them from (check_format says yes to
# MPEG_LAYER_III in WAV; the write then fails): written only into their own format
_OWN_FORMAT_ONLY = {"MPEG_LAYER_I": "MP3", "MPEG_LAYER_II": "MP3", "MPEG_LAYER_III": "MP3",
                    "VORBIS": "OGG", "OPUS": "OGG"}
# inputs whose samples hold more than 16 bits: the high-resolution ones, and lossy ones, which
# decode to float (a Vorbis or MP3 input written as PCM_16 was requantized for nothing)
_HIGH_RES = ("FLOAT", "DOUBLE", "PCM_32", "PCM_24", "VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II",
             "MPEG_LAYER_III")
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def _writable(fmt: str, subtype: str) -> bool:
    return sf.check_format(fmt, subtype) and _OWN_FORMAT_ONLY.get(subtype, fmt) == fmt


def output_format(out: Path, in_subtype: str, subtype: str | None) -> tuple[str, str]:
    """The output format and subtype: ``subtype`` if given, else the input's where the output
    format can store it, else 24-bit for a high-resolution input where it can, else the format's
    default."""
    fmt = _format_for(out)
    if not subtype and out.suffix.lower() == ".opus":
        subtype = "OPUS"  # an .opus file is Opus in Ogg, not the Ogg default (Vorbis)
    if subtype:
        chosen = subtype.upper()
        if not _writable(fmt, chosen):
            can = [s for s in sf.available_subtypes(fmt) if _writable(fmt, s)]
            raise AudioFileError(f"{out}: format {fmt} cannot store subtype {chosen} (it can: {', '.join(can)})")
        return fmt, chosen
    if _writable(fmt, in_subtype):
        return fmt, in_subtype
    if in_subtype in _HIGH_RES and _writable(fmt, "PCM_24"):
        return fmt, "PCM_24"
    return fmt, sf.default_subtype(fmt)


def _format_for(out: Path) -> str:
    ext = out.suffix.lower().lstrip(".")
    formats = {k.lower(): k for k in sf.available_formats()}
    aliases = {"aif": "aiff", "oga": "ogg", "opus": "ogg"}
    ext = aliases.get(ext, ext)
    if ext not in formats:
        raise AudioFileError(f"{out}: unknown output format {out.suffix!r} (use one of: "
                             f"{', '.join(sorted(set(formats) | set(aliases)))})")
    return formats[ext]


class Quantizer:
    """TPDF dither and clipping for integer PCM (a channel's block that is all on the format's
    grid, an untouched PCM input, is kept exactly, and so is digital silence); pass-through (with
    reporting) for float."""

    def __init__(self, subtype: str, seed: int = 0x5EED) -> None:
        self.bits = _PCM_BITS.get(subtype)
        self.is_float = subtype in _FLOAT_SUBTYPES
        self.rng = np.random.default_rng(seed)
        self.over = 0
        self.clipped = 0

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """(channels, frames) float32 -> (frames, channels) array ready for soundfile."""
        over = int(np.count_nonzero(np.abs(block) > 1.0))
        self.over += over
        x = block.T
        if self.is_float:
            return np.ascontiguousarray(x, dtype=np.float32)
        if self.bits is None:  # lossy/compressed formats: the codec quantizes; keep range legal
            self.clipped += over
            return np.clip(x, -1.0, 1.0).astype(np.float32)
        scale = float(2 ** (self.bits - 1))
        v = x.astype(np.float64) * scale
        d = self.rng.random(x.shape) - self.rng.random(x.shape)  # TPDF, ±1 LSB
        # a channel the format already stores exactly (an untouched PCM input) has no error to
        # decorrelate, and digital silence stays silent; otherwise every sample is dithered: one
        # spared where it happens to land on the grid (half of them after -6.02 dB) made the
        # noise follow the signal (QA, session 30)
        d[:, (v == np.floor(v)).all(axis=0)] = 0.0
        d[v == 0.0] = 0.0
        q = np.floor(v + d + 0.5)
        hi, lo = scale - 1, -scale
        self.clipped += int(np.count_nonzero((q > hi) | (q < lo)))
        q = np.clip(q, lo, hi)
        # soundfile maps int32 full scale onto the file's bit depth exactly
        return (q * 2 ** (32 - self.bits)).astype(np.int32)


def _blocks(f: sf.SoundFile) -> Iterator[np.ndarray]:
    """``f`` in chunks of ``(channels, frames)`` float32, in WAV channel order."""
    perm = wav_order(f.format, f.channels)
    while True:
        try:
            data = f.read(READ_FRAMES, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, sf.SoundFileRuntimeError) as e:
            raise AudioFileError(f"{f.name}: corrupt or truncated audio ({e})") from e
        if data.shape[0] == 0:
            return
        yield np.ascontiguousarray(data.T if perm is None else data.T[perm])


def process_file(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    chain: Chain | str,
    *,
    sample_rate: int | None = None,
    subtype: str | None = None,
    block_size: int = 4096,
    progress: Callable[[int, int], None] | None = None,
    channel_mask: int | None = None,
    metadata_from: str | os.PathLike[str] | None = None,
    dc_offset: str = "remove",
    per_channel: bool = False,
    automix: bool = False,
) -> FileReport:
    """Render ``inp`` through ``chain`` into ``out``.

    Parameters
    ----------
    inp, out : path
        Any format soundfile reads; ``out``'s format comes from its extension.
    chain : Chain, Effect or str
        Prepared here for the file's channels and the processing rate; a string is a preset's
        name or a ``.toml`` path (``"podcast"``).
    sample_rate : int, optional
        Processing and output rate; the input is resampled with soxr when it differs.
        Default: the input's rate.
    subtype : str, optional
        Output subtype (``PCM_16``, ``PCM_24``, ``FLOAT``...). Default: the input's, when the
        output format can store it.
    block_size : int
        Frames per ``process`` call (results are identical for any value).
    progress : callable, optional
        ``progress(frames_done, frames_total)`` after each chunk.
    channel_mask : int, optional
        Which speaker each channel feeds (a WAV ``dwChannelMask``), written into a WAV output;
        default: the input's own, when it is a WAV that has one or a FLAC/Ogg file whose
        format defines one (so a 5.1 or quad file keeps its layout, and its loudness weights).
    metadata_from : path, optional
        The file whose metadata ``out`` carries (default ``inp``): its text tags (title,
        artist...: WAV INFO, FLAC/Ogg comments) in any output format, and into a WAV output its
        Broadcast WAV ``bext`` chunk (timecode; loudness fields marked unused) and ``iXML``, so
        an editor puts the result where the original sat (:mod:`hushbridge.io.metadata`).
    dc_offset : {"remove", "keep"}
        ``remove`` (default): a channel whose first :data:`DC_WINDOW_S` seconds average
        :data:`DC_MIN` or more away from zero (a DC offset, from a cheap interface or a worn
        preamp), steadily and in its quietest stretches too, has that average subtracted before
        the chain (over the head, as much of it as has arrived: a fade-in gets no step), and a
        note says so. The filters
        start from rest, so a chain fed the offset starts with a thump (0.05 of offset: a -19 dBFS
        thump through ``podcast``) before its high-pass removes it; live the stream starts the
        same way, but a file is known in advance. A channel starting in digital silence keeps its
        offset (subtracting it would put the step at the start). ``keep``: the samples as read.
    per_channel : bool
        Each channel through a chain of its own (copies of ``chain``, mono), as if it were its
        own file: separate microphones in one file (a recorder's poly WAV, two speakers on the
        left and right of a podcast's stereo take), which linked dynamics would level, gate and
        compress as one (the louder speaker sets the gain of both). Default: one chain, its
        dynamics linked across the channels.
    automix : bool
        Before the chain, share the gain across the channels as an automixer does
        (:class:`~hushbridge.effects.automix.Automix`, its defaults): each microphone falls by as
        much as its bleed of whoever talks lies under that talker, so a per-channel chain does
        not lift the bleed in its own speaker's pauses.

    Returns
    -------
    FileReport

    Raises
    ------
    AudioFileError
        Missing, unreadable or empty input; ``out`` is the same file as ``inp``; an output
        format that cannot be written. ``out`` is untouched in every failure.
    """
    if isinstance(chain, (str, os.PathLike)):
        from hushbridge.presets import load_preset

        chain = load_preset(os.fspath(chain))
    elif isinstance(chain, Effect) and not isinstance(chain, Chain):
        chain = Chain([chain])
    elif not isinstance(chain, Chain):
        raise TypeError(f"process_file: chain must be a Chain, an Effect or a preset name, not {type(chain).__name__}")
    src, dst = Path(inp), Path(out)
    info = audio_info(src)
    if dst.exists() and (dst.resolve() == src.resolve() or os.path.samefile(src, dst)):
        raise AudioFileError(f"refusing to overwrite the input {src}: choose another output path")
    if dst.is_dir():
        raise AudioFileError(f"{dst}: is a directory; give a file name (or use --out-dir for batches)")
    if info.format == "FFMPEG":  # only ffmpeg reads it: decoded to a temporary file first
        from hushbridge.io.decode import as_input, decoded, mentions, output_subtype, speaker_mask

        subtype = output_subtype(dst, subtype)
        if not dst.parent.exists():
            raise AudioFileError(f"{dst.parent}: output folder does not exist")
        with decoded(src, dst.parent, info) as (tmp, said):
            if channel_mask is None:
                channel_mask = speaker_mask(tmp, info.channels)
            try:
                report = process_file(tmp, dst, chain, sample_rate=sample_rate, subtype=subtype,
                                      block_size=block_size, progress=progress, channel_mask=channel_mask,
                                      metadata_from=metadata_from, dc_offset=dc_offset, per_channel=per_channel,
                                      automix=automix)
            except AudioFileError as e:
                raise AudioFileError(mentions(str(e), tmp, src)) from e
        return as_input(report, tmp, said, src, info)
    fmt, out_subtype = output_format(dst, info.subtype, subtype)
    mask = channel_mask_of(src, info) if channel_mask is None else (channel_mask or None)
    if channel_mask is None and mask is None and info.channels > 2:
        mask = layout_mask_of(src, info) or None  # a FLAC/Ogg 5.1 written as WAV says it is 5.1
    if mask and fmt == "WAV" and sf.check_format("WAVEX", out_subtype):
        fmt = "WAVEX"  # the format that carries a channel mask (patched in below)
    rate = int(sample_rate or info.samplerate)
    if out_subtype == "OPUS" and rate not in OPUS_RATES:
        raise AudioFileError(f"{dst}: Opus stores {', '.join(f'{r // 1000}' for r in OPUS_RATES)} kHz, not "
                             f"{rate} Hz: add --rate 48000 (or write another format)")
    lo, hi = SAMPLE_RATES
    for what, r in (("its sample rate", info.samplerate), ("the processing rate", rate)):
        if not lo <= r <= hi:
            raise AudioFileError(f"{src}: {what} {r} Hz is outside the {lo}..{hi} Hz hushbridge processes")
    channels = info.channels
    report = FileReport(str(src), str(dst), rate, channels, 0, out_subtype, chain.latency_samples)
    lost = layout_loss(fmt, channels, mask)
    if lost:
        report.warnings.append(f"{dst}: {lost}")
    if not subtype and out_subtype != info.subtype:
        report.notes.append(f"written as {fmt} {out_subtype} ({fmt} cannot store the input's {info.subtype}; "
                            f"--subtype chooses)")
    if not dst.parent.exists():
        raise AudioFileError(f"{dst.parent}: output folder does not exist")

    if dc_offset not in ("remove", "keep"):
        raise ValueError(f"dc_offset must be 'remove' or 'keep', not {dc_offset!r}")
    from hushbridge.effects.automix import Automix

    if not isinstance(per_channel, (bool, np.bool_)) or not isinstance(automix, (bool, np.bool_, Automix)):
        raise TypeError(f"per_channel and automix must be True or False (automix: or an Automix), not "
                        f"{per_channel!r}, {automix!r}")
    mix_on = isinstance(automix, Automix) or bool(automix)
    inner = [e for e in chain if isinstance(e, Automix)]
    per_channel = bool(per_channel or chain.per_channel)
    if inner and mix_on and channels > 1:
        report.warnings.append(f"{src}: the gain is shared twice (--automix and the chain's automix): every cut "
                               "is doubled")
    # a stereo pair may be two microphones; three or more channels that name speakers are a mix.
    # The hint only where linked dynamics run and neither remedy is on already.
    linked = any(_links(e, channels) and not chain.is_bypassed(k) for k, e in enumerate(chain))
    hint = not per_channel and not mix_on and not inner and linked \
        and (channels == 2 or 2 < channels <= 8 and not (mask or layout_mask_of(src, info)))
    check_mix = (mix_on or per_channel) and channels > 1
    head = _read_head(src, info) if hint or check_mix or dc_offset == "remove" else None
    if hint:
        turns = _taking_turns(head, info.samplerate)
        if turns is not None:
            report.notes.append(f"channels {turns[0] + 1} and {turns[1] + 1} take turns 15 dB or more apart (separate "
                                "microphones?): linked, the louder one sets the gain of both (a denoiser's too); --per-channel gives "
                                "each a chain of its own, --automix shares the gain between them first")
    if check_mix:
        corr = _correlated(head, info.samplerate)
        if corr is not None:
            what = "automix and per channel are" if mix_on and per_channel else "automix is" if mix_on else \
                "per channel is"
            report.warnings.append(f"{src}: channels {corr[0] + 1} and {corr[1] + 1} are alike at alike levels "
                                   f"({corr[2]:.0%} of the frames where both sound): a stereo or surround mix? "
                                   f"{what} for separate microphones, and would lean a mix's image")
    if per_channel and channels > 1:
        from hushbridge.dsp import loudness as L

        named = layout_mask_of(src, info) if mask is None else mask
        if named and (np.any(L.channel_weights_from_mask(channels, named) != 1.0)):
            whose = "the layout given" if channel_mask else f"{src} names"
            report.warnings.append(f"{whose} a surround layout (channel mask {named:#x}): per channel, its "
                                   "LFE and surrounds are levelled and gated as sources of their own; per "
                                   "channel is for separate microphones")
    dc_plan = _dc_offset(head, info.samplerate) if dc_offset == "remove" else None
    dc = None
    if dc_plan is not None:
        off = dc_plan.offset
        order = " (WAV order)" if info.format == "OGG" and channels > 2 else ""
        shown = ", ".join(f"channel {c + 1}: {off[c]:+.4f} ({20 * np.log10(abs(off[c])):.1f} dBFS)"
                          for c in np.flatnonzero(off))
        report.notes.append(f"removed a DC offset before the chain ({shown}{order}; measured over the first "
                            f"{dc_plan.seconds:.3g} s)")
        dc = off.astype(np.float32)[:, None]
    dc_pos = 0  # input frames the offset has been taken from

    tmp_name = ""
    was_per_channel = chain.per_channel
    try:  # from the temporary file's creation on: a SIGTERM (KeyboardInterrupt) anywhere removes it
        final = through_links(dst)
        tmp_name = str(temp_beside(final))
        quantize = Quantizer(out_subtype)
        # the layout the chain works with: the one asked for, else the one the input names (also
        # where no mask is to be written, as for --loudness's float render)
        mixer = None
        if mix_on and channels > 1:
            sharer = automix if isinstance(automix, Automix) else Automix()
            mixer = OfflineRenderer(sharer, channels, rate, block_size)  # no latency: in step with the chain
            report.notes.append(f"automixed: each channel's gain its share of the {channels} channels' power")
        if per_channel and channels > 1:
            report.notes.append(f"each of the {channels} channels through a chain of its own (per channel)")
        unused = chain.channels_beyond(channels, split=per_channel)
        if mixer is not None or (mix_on and isinstance(automix, Automix)):  # the automixer before the chain
            own = (automix if isinstance(automix, Automix) else Automix())._own
            unused += [f"automix@{c + 1}" for c in range(channels, 0 if own is None else own.shape[0])
                       if np.any(own[c] == own[c])]
        if unused:
            report.warnings.append(f"{src} has {channels} channel{'s' if channels != 1 else ''}: the values of "
                                   f"{', '.join(unused)} are not used")
        object.__setattr__(chain, "per_channel", per_channel)  # set back when done: the caller's chain
        renderer = OfflineRenderer(chain, channels, rate, block_size, mask or layout_mask_of(src, info))
        report.latency_samples = renderer.latency_samples
        resampler = None
        if rate != info.samplerate:
            import soxr

            resampler = soxr.ResampleStream(info.samplerate, rate, channels, dtype="float32", quality="VHQ")
            report.notes.append(f"resampled {info.samplerate} Hz -> {rate} Hz (soxr VHQ)")
        expected = int(round(info.frames * rate / info.samplerate))
        done = 0
        try:
            reader = sf.SoundFile(str(src))
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioFileError(f"{src}: cannot open ({e})") from e
        meta_src = Path(metadata_from) if metadata_from is not None else src
        with reader, sf.SoundFile(tmp_name, "w", rate, channels, out_subtype, format=fmt) as writer:
            write_tags(writer, read_tags(meta_src))

            to_stored = stored_order(fmt, channels)

            def emit(y: np.ndarray) -> None:
                nonlocal done
                y = y[:, : max(0, expected - done)]
                if y.shape[1]:
                    writer.write(quantize(y if to_stored is None else y[to_stored]))
                    done += y.shape[1]

            for chunk in _blocks(reader):
                bad = ~np.isfinite(chunk)
                if bad.any():
                    report.nonfinite_input += int(bad.sum())
                    chunk[bad] = 0.0
                if dc is not None:
                    m = chunk.shape[1]
                    head = dc_plan.head[:, dc_pos : dc_pos + m]
                    chunk[:, : head.shape[1]] -= head
                    chunk[:, head.shape[1]:] -= dc
                    dc_pos += m
                if resampler is not None:
                    chunk = np.ascontiguousarray(resampler.resample_chunk(chunk.T).T)
                if mixer is not None:
                    chunk = mixer.push(chunk)
                emit(renderer.push(chunk))
                if progress is not None:
                    progress(min(done, expected), expected)
            if resampler is not None:
                tail = np.ascontiguousarray(resampler.resample_chunk(np.zeros((0, channels), np.float32), last=True).T)
                emit(renderer.push(tail if mixer is None else mixer.push(tail)))
            emit(renderer.flush())
            if done < expected:  # resampler delivered a few frames fewer than the ideal count
                emit(np.zeros((channels, expected - done), np.float32))
            if progress is not None:
                progress(done, expected)
        if fmt == "WAVEX" and mask:
            set_wav_channel_mask(tmp_name, mask)
        if fmt in ("WAV", "WAVEX"):
            try:
                meta_rate = info.samplerate if meta_src == src else sf.info(str(meta_src)).samplerate
            except (sf.LibsndfileError, RuntimeError):
                meta_rate = info.samplerate
            carry_wav_metadata(meta_src, tmp_name, meta_rate, rate)
        cut = truncation_warning(src, info)
        if cut:
            report.warnings.append(cut)
        report.frames = done
        report.over_full_scale = quantize.over
        report.clipped = quantize.clipped
        if report.nonfinite_input:
            report.warnings.append(f"{src}: {report.nonfinite_input} NaN/Inf input samples replaced by silence")
        for index in range(len(chain)):
            # what effects found in this file (e.g. declip: runs rebuilt, saturation)
            instances = chain.instances(index)
            for k, effect in enumerate(instances):
                notes = getattr(effect, "file_notes", None)
                if callable(notes):
                    report.notes.extend(f"channel {k + 1}: {n}" if len(instances) > 1 else n for n in notes())
        os.replace(tmp_name, final)
    except BaseException:
        if tmp_name:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass  # already renamed
        raise
    finally:
        object.__setattr__(chain, "per_channel", was_per_channel)
    return report


@contextmanager
def picked_channels(src: str | os.PathLike[str], channels: Sequence[int],
                    folder: str | os.PathLike[str] | None = None) -> Iterator[tuple[Path, str, str]]:
    """``src``'s channels ``channels`` (1-based, in that order; one may come twice) in a temporary
    float file (in ``folder``, else the system's temporary folder) with ``src``'s tags, removed
    afterwards: what ``process --pick`` cleans (a poly WAV's lav alone, a camera's second mic).
    Yields ``(its path, what ffmpeg said decoding src (a warning) or "", a note that it decoded
    src or "")``."""
    import tempfile

    src = Path(src)
    info = audio_info(src)
    bad = [c for c in channels if not 1 <= c <= info.channels]
    if not channels or bad:
        raise AudioFileError(f"{src}: has {info.channels} channel{'s' if info.channels != 1 else ''}; "
                             f"cannot pick {', '.join(map(str, bad)) or 'none'}")
    if info.format == "FFMPEG":  # only ffmpeg reads it: picked from the decoded copy
        from hushbridge.io.decode import decoded, decoded_note, retold

        with decoded(src, folder, info) as (dec, said), picked_channels(dec, channels, folder) as (tmp, _, _):
            yield tmp, said and retold([said], dec, src, info)[0], decoded_note(info)
        return
    rows = [c - 1 for c in channels]
    where = Path(folder) if folder is not None and os.access(folder, os.W_OK) else Path(tempfile.gettempdir())
    # named before it is made: a signal then leaves nothing the CLI's clean-up does not know of.
    # A WAV (RF64 past 4 GB), so that it carries the input's Broadcast WAV timecode and iXML (its
    # track list cut down to the picked channels) on to the output
    tmp = temp_beside(where / f"{src.stem}.wav", "picked")
    name = str(tmp)
    big = info.frames * len(rows) * 4 > 0xFFFF0000
    try:
        with sf.SoundFile(str(src)) as reader, \
                sf.SoundFile(name, "w", info.samplerate, len(rows), "FLOAT", format="RF64" if big else "WAV") as writer:
            write_tags(writer, read_tags(src))
            for block in _blocks(reader):
                writer.write(np.ascontiguousarray(block[rows].T))
        chunks = []
        for cid, payload in wav_chunks(src):
            if cid == b"iXML":
                payload = picked_ixml(payload, list(channels))
            if payload is not None:
                chunks.append((cid, payload))
        insert_wav_chunks(name, chunks)
        yield tmp, "", ""
    finally:
        tmp.unlink(missing_ok=True)


TURNS_WINDOW_S = 30.0  # how much of the input the separate-microphones hint and mix check look at
_LINKED_DYNAMICS = ("compressor", "gate", "deesser", "leveler")  # one gain for all channels


def _links(effect, channels: int) -> bool:
    """Whether ``effect`` gives ``channels`` channels one gain: the linked dynamics, and a model
    effect that links them (a stereo pair by default: one network for both sides)."""
    link = getattr(effect, "link", None)
    return effect.name in _LINKED_DYNAMICS or (link == "stereo" and channels == 2) or (link == "all" and channels > 1)


def _read_head(src: Path, info: sf._SoundFileInfo) -> np.ndarray:
    """The input's first seconds as ``(channels, frames)`` float32 in WAV order, NaN/Inf as 0:
    what the DC offset, the separate-microphones hint and the mix check look at, read once
    (:data:`TURNS_WINDOW_S`, less for more than 8 channels, never under :data:`DC_WINDOW_S`)."""
    seconds = max(DC_WINDOW_S, min(TURNS_WINDOW_S, TURNS_WINDOW_S * 8 / info.channels))
    try:
        with sf.SoundFile(str(src)) as f:
            head = f.read(max(1, int(seconds * info.samplerate)), dtype="float32", always_2d=True)
            perm = wav_order(f.format, f.channels)
    except (sf.LibsndfileError, sf.SoundFileRuntimeError, RuntimeError) as e:
        raise AudioFileError(f"{src}: corrupt or truncated audio ({e})") from e
    head = head.T if perm is None else head.T[perm]
    return np.ascontiguousarray(np.nan_to_num(head, nan=0.0, posinf=0.0, neginf=0.0))


def _taking_turns(head: np.ndarray, sr: int) -> tuple[int, int] | None:
    """A pair of channels that take turns, each 15 dB or more over the other in a fifth or more of
    the 50 ms frames where either sounds: two speakers on their own microphones, as a mix's
    channels are not. None where no pair does."""
    frame = max(1, int(0.05 * sr))
    count = head.shape[1] // frame
    if count < 20:
        return None
    frames = head[:, : count * frame].astype(np.float64).reshape(head.shape[0], count, frame)
    level = 10 * np.log10(np.mean(frames * frames, axis=2) + 1e-12)
    loud = level > level.max(axis=1, keepdims=True) - 30.0  # where each channel is near its own top
    for a in range(head.shape[0]):
        for b in range(a + 1, head.shape[0]):
            either = loud[a] | loud[b]
            if either.sum() < 20:
                continue
            a_over = np.mean((level[a] - level[b] >= 15.0)[either])
            b_over = np.mean((level[b] - level[a] >= 15.0)[either])
            if a_over >= 0.2 and b_over >= 0.2:
                return a, b
    return None


def _correlated(head: np.ndarray, sr: int) -> tuple[int, int, float] | None:
    """The pair of channels in the input's first 30 s that most looks like a mix's: alike
    (zero-lag correlation over 0.5) at alike levels (within 10 dB) in most 50 ms frames where
    both sound within 30 dB of their loudest (a silent pre-roll and shared room tone do not count).
    A microphone's bleed of another's talker is alike too, but as far under it as the bleed is."""
    frame = max(1, int(0.05 * sr))
    count = head.shape[1] // frame
    if count == 0:
        return None
    frames = head[:, : count * frame].astype(np.float64).reshape(head.shape[0], count, frame)
    frames = frames - frames.mean(axis=2, keepdims=True)
    power = np.mean(frames * frames, axis=2)  # (channels, frames)
    # frames where a channel is within 30 dB of its loudest: programme, not the room tone that
    # separate microphones share
    sounding = (power > 1e-8) & (power > power.max(axis=1, keepdims=True) * 1e-3)
    loudest = power.max(axis=0) * 0.5  # within 3 dB of the loudest channel of each frame
    best = None
    for a in range(head.shape[0]):
        for b in range(a + 1, head.shape[0]):
            # two silent guests' mics both hold the host's bleed alike: only frames the pair leads
            both = sounding[a] & sounding[b] & (np.maximum(power[a], power[b]) >= loudest)
            if both.sum() < 4:
                continue
            corr = np.sum(frames[a] * frames[b], axis=1)[both] / (frame * np.sqrt(power[a][both] * power[b][both]))
            near = np.abs(10 * np.log10(power[a][both] / power[b][both])) < 10.0
            share = float(np.mean((corr > 0.5) & near))
            if share > 0.5 and (best is None or share > best[2]):
                best = (a, b, share)
    return best


@dataclass
class _DcPlan:
    """What :func:`process_file` subtracts: ``offset`` per channel (WAV order; 0.0 where none)
    from the ``head``'s end on, and over the head a profile that follows the offset in (the
    offset times 0..1 per frame), so a head that fades in or starts quiet does not get a step
    of its own."""

    offset: np.ndarray  # (channels,)
    head: np.ndarray  # (channels, frames) float32: what to subtract from each of the first frames
    seconds: float  # how much of the input was measured


def _dc_offset(head: np.ndarray, sr: int) -> _DcPlan | None:
    """The DC offset :func:`process_file` removes, measured over the first :data:`DC_WINDOW_S`
    of ``head`` (:func:`_read_head`), or None where no channel has one."""
    head = head[:, : max(1, int(DC_WINDOW_S * sr))].astype(np.float64)
    n = head.shape[1]
    if n == 0 or n < DC_MIN_FRAMES_S * sr:
        return None  # a short clip's mean says more about its content than about an offset
    dc = head.mean(axis=1)
    # an offset is steady: a mean that content makes (a slow swell) moves between thirds
    thirds = np.stack([part.mean(axis=1) for part in np.array_split(head, 3, axis=1)], axis=1)
    steady = np.all(np.abs(thirds - dc[:, None]) <= np.maximum(0.5 * DC_MIN, 0.2 * np.abs(dc))[:, None], axis=1)
    # and it is there in the quiet too: the quietest 20 ms frames sit on it, while the mean a
    # kick drum's lopsided waveform makes (steady in a loop) is gone between the kicks
    frame = int(0.02 * sr)
    count = n // frame
    frames = head[:, : count * frame].reshape(head.shape[0], count, frame)
    quiet = np.argsort(frames.std(axis=2), axis=1)[:, : max(3, count // 10)]
    floor = np.median(np.take_along_axis(frames.mean(axis=2), quiet, axis=1), axis=1)
    in_quiet = np.abs(floor - dc) <= np.maximum(0.5 * np.abs(dc), 1.5 * DC_MIN)
    silent_start = ~np.any(head[:, :DC_SILENT_HEAD] != 0.0, axis=1)  # digital silence stays exact
    dc[(np.abs(dc) < DC_MIN) | silent_start | ~steady | ~in_quiet] = 0.0
    if not np.any(dc):
        return None
    # over the head, subtract only as much of the offset as has arrived: the local mean (10 ms,
    # centred) as a share of it, never falling back, and all of it by the head's end
    half = max(1, int(0.005 * sr))
    csum = np.concatenate([np.zeros((head.shape[0], 1)), np.cumsum(head, axis=1)], axis=1)
    idx = np.arange(n)
    reach = np.minimum(np.minimum(idx, n - 1 - idx), half)  # symmetric at the ends too: a ramp reads as itself
    lo, hi = idx - reach, idx + reach + 1
    local = (csum[:, hi] - csum[:, lo]) / (hi - lo)
    share = np.zeros_like(local)
    nz = dc != 0.0
    share[nz] = np.maximum.accumulate(np.clip(local[nz] / dc[nz, None], 0.0, 1.0), axis=1)
    ramp_from = max(0, n - int(0.5 * sr))
    share = np.maximum(share, np.clip((idx - ramp_from) / max(1, n - 1 - ramp_from), 0.0, 1.0))
    return _DcPlan(dc, (share * dc[:, None]).astype(np.float32), n / sr)


class _EngineAsEffect(Chain):
    """Lets the file renderer drive an Engine (its callback, hand-off and swaps) like an Effect."""

    def __init__(self, engine) -> None:  # noqa: ANN001 - Engine, imported lazily to avoid a cycle
        super().__init__()
        object.__setattr__(self, "_engine", engine)

    @property
    def latency_samples(self) -> int:
        return self._engine.latency_samples

    def set_non_realtime(self, non_realtime: bool) -> None:
        super().set_non_realtime(non_realtime)
        self._engine.chain.set_non_realtime(non_realtime)

    def prepare(self, spec) -> None:  # noqa: ANN001
        self._engine.prepare(spec.sample_rate, spec.max_block_size)
        object.__setattr__(self, "_spec", spec)

    def reset(self) -> None:
        self._engine.chain.reset()

    def process(self, block: np.ndarray) -> None:
        self._engine.process(block, block)


class FileBackend:
    """The engine's Backend for files: runs ``engine.process`` over ``inp`` as fast as the CPU
    allows and writes ``out``, exactly as a live backend would call it block by block.

    Control works while it runs (``engine.set`` from another thread lands at a block start).
    The engine's rate is the file's unless ``sample_rate`` is given (then soxr resamples).
    """

    name = "file"

    def __init__(self, engine, inp: str | os.PathLike[str], out: str | os.PathLike[str], *,  # noqa: ANN001
                 sample_rate: int | None = None, block_size: int = 128, subtype: str | None = None) -> None:
        self.engine = engine
        self.inp, self.out = inp, out
        self._rate = sample_rate
        self._block = block_size
        self.subtype = subtype
        self.report: FileReport | None = None

    @property
    def sample_rate(self) -> int:
        return int(self._rate or audio_info(self.inp).samplerate)

    @property
    def block_size(self) -> int:
        return self._block

    def start(self) -> None:
        """Render the whole file (returns when done)."""
        if audio_info(self.inp).channels != self.engine.channels:
            raise AudioFileError(f"{self.inp}: has {audio_info(self.inp).channels} channels, the engine "
                                 f"{self.engine.channels}")
        self.report = process_file(self.inp, self.out, _EngineAsEffect(self.engine), sample_rate=self._rate,
                                   subtype=self.subtype, block_size=self._block,
                                   dc_offset="keep")  # the samples a live input would deliver

    def stop(self) -> None:
        """Nothing to stop: :meth:`start` returns when the file is done."""

    def close(self) -> None:
        self.stop()
