"""Loudness normalization of a file: one gain to an integrated-loudness target, a true-peak
limiter only where that gain would pass the ceiling.

Used by ``hushbridge normalize`` and by ``hushbridge process --loudness`` (which renders the chain
first and normalizes what it rendered, so one command delivers a file at -16 LUFS / -1 dBTP).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from hushbridge.atomic import temp_beside, through_links
from hushbridge.dsp import loudness as _L
from hushbridge.errors import AudioFileError

TARGETS = {"podcast": -16.0, "streaming": -14.0, "broadcast": -23.0}
MAX_GAIN_DB = 60.0  # beyond it a "quiet" file is noise floor: say so rather than raise it
BLOCK_S = 0.4  # BS.1770's gating block: a shorter clip has no integrated loudness


@dataclass
class NormalizeReport:
    """What :func:`normalize_file` measured and did."""

    before: dict  # hushbridge.measure.loudness_file of the input
    after: dict  # the same of the written output
    target_lufs: float
    ceiling_dbtp: float
    gain_db: float  # the gain applied in the end
    limited: bool  # the true-peak limiter ran
    limiter_ceiling_dbtp: float  # its ceiling (tightened below ceiling_dbtp if the first pass let a peak through)
    trim_db: float  # gain after the limiter where its lowest ceiling was not enough (0 normally)
    subtype: str
    warnings: list[str] = field(default_factory=list)  # e.g. the output format lost the speaker layout
    notes: list[str] = field(default_factory=list)  # what was done besides the gain (decoded with ffmpeg)

    @property
    def predicted_true_peak_dbtp(self) -> float:
        """Where the input's true peak would land under the gain alone."""
        return self.before["true_peak_dbtp"] + self.gain_db


def _gain_stages(gain_db: float) -> list:
    """``gain_db`` as Gain effects within the effect's own range (it ends at +24 dB)."""
    from hushbridge.effects import Gain

    n = max(1, math.ceil(gain_db / Gain.params[0].max - 1e-9))
    return [Gain(gain_db=gain_db / n) for _ in range(n)]


def normalize_file(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    target_lufs: float = -16.0,
    *,
    ceiling_dbtp: float = -1.0,
    release_ms: float = 80.0,
    subtype: str | None = None,
    name: str | os.PathLike[str] | None = None,
    channel_mask: int | None = None,
    metadata_from: str | os.PathLike[str] | None = None,
    layout: str | None = None,
) -> NormalizeReport:
    """Write ``inp`` to ``out`` at ``target_lufs`` integrated loudness, true peak under ``ceiling_dbtp``.

    ``out`` keeps ``inp``'s rate and channels, and its sample format unless ``subtype`` is given
    (integer formats dithered); it is written through a temporary file and renamed only when the
    result measures under the ceiling. ``name`` is how errors name the input (for a caller whose
    input is its own temporary file). ``channel_mask`` (a WAV ``dwChannelMask``; default: the
    input's own) weights the channels' loudness and goes into a WAV output; ``layout="equal"``
    weighs every channel 1.0 instead (separate microphones). ``metadata_from``
    (default ``inp``) is the file whose tags and Broadcast WAV timecode ``out`` carries.

    Raises
    ------
    AudioFileError
        Unreadable input; a silent input (one shorter than a 400 ms block is measured as one
        block); sound only on the LFE; more than
        ``MAX_GAIN_DB`` to apply; ``out`` is ``inp``; the ceiling could not be held.
    """
    from hushbridge.effects import Chain, Limiter
    from hushbridge.io.files import _format_for, audio_info, channel_mask_of, layout_loss, process_file
    from hushbridge.measure import loudness_file, _one_block_loudness

    src, dst = Path(inp), Path(out)
    shown = name if name is not None else src
    info = audio_info(src)
    if info.format == "FFMPEG":  # only ffmpeg reads it: decoded once, measured and written from that
        from hushbridge.io.decode import decoded, decoded_note, mentions, output_subtype, retold, speaker_mask

        if dst.exists() and os.path.samefile(src, dst):
            raise AudioFileError(f"refusing to overwrite the input {shown}: choose another output path")
        with decoded(src, dst.parent if dst.parent.is_dir() else None, info) as (tmp, said):
            try:
                report = normalize_file(tmp, dst, target_lufs, ceiling_dbtp=ceiling_dbtp, release_ms=release_ms,
                                        subtype=output_subtype(dst, subtype), name=shown,
                                        channel_mask=speaker_mask(tmp, info.channels) if channel_mask is None
                                        else channel_mask, metadata_from=metadata_from or tmp, layout=layout)
            except AudioFileError as e:
                raise AudioFileError(mentions(str(e), tmp, src)) from e
        report.warnings = ([said] if said else []) + retold(report.warnings, tmp, src, info)
        report.notes.insert(0, decoded_note(info))
        return report
    mask = channel_mask if channel_mask is not None else channel_mask_of(src)
    # the input's weights, for the measurement before and every one after: a render read back in a
    # format that defines another layout (a 4-channel WAV written as FLAC, read as quad) was
    # measured with that layout's weights, so the gain and the check disagreed (0.9 LU off)
    if layout is not None:
        weigh: dict = {"layout": layout}
    elif mask:
        weigh = {"channel_mask": mask}
    else:
        weigh = {"layout": _L._DEFAULT_LAYOUT.get(info.channels, "equal")}
    before = loudness_file(src, **weigh)
    level = before["integrated_lufs"]
    if before["unweighed"]:
        raise AudioFileError(f"{shown}: {before['unweighed']}; nothing to normalize")
    # a sting or a single word: no 400 ms block to gate, so the whole clip is one (a batch of
    # clips lost them, and `process --loudness` wrote no file at all)
    one_block = not math.isfinite(level) and before["duration_s"] < BLOCK_S
    notes: list[str] = []
    if one_block:
        level = before["integrated_lufs"] = _one_block_loudness(src, **weigh)
        if math.isfinite(level):
            notes.append(f"{before['duration_s'] * 1000:.0f} ms, shorter than BS.1770's 400 ms block: its loudness "
                         "is measured over its whole length, as one block")
    if not math.isfinite(level):
        measure = (lambda: _one_block_loudness(src, layout="equal")) if one_block else \
            (lambda: loudness_file(src, layout="equal")["integrated_lufs"])
        if layout != "equal" and before["true_peak_dbtp"] > -math.inf and math.isfinite(measure()):
            raise AudioFileError(f"{shown}: its sound is only in channels BS.1770 leaves out of loudness (the LFE), "
                                 "so it measures -inf; --layout equal measures every channel as full-range sound")
        raise AudioFileError(f"{shown}: silent or quieter than BS.1770's -70 LUFS gate{'' if one_block else ' throughout'}; "
                             "nothing to normalize")
    gain_db = target_lufs - level
    if gain_db > MAX_GAIN_DB:
        raise AudioFileError(f"{shown}: reaching {target_lufs:g} LUFS from {level:.1f} LUFS needs "
                             f"{gain_db:+.1f} dB, more than the {MAX_GAIN_DB:g} dB normalize applies")
    # the limiter passes anything under its ceiling bit-exactly; engage it with a margin for the
    # meter's and the writer's (dither) last hundredths of a dB
    limit = before["true_peak_dbtp"] + gain_db > ceiling_dbtp - 0.1
    if dst.is_dir():
        raise AudioFileError(f"{dst}: is a directory; give a file name")
    if not dst.parent.exists():
        raise AudioFileError(f"{dst.parent}: output folder does not exist")
    if dst.exists() and os.path.samefile(src, dst):
        raise AudioFileError(f"refusing to overwrite the input {shown}: choose another output path")
    limiter_ceiling = ceiling_dbtp
    trim_db = 0.0
    tmp: Path | None = None
    try:
        final = through_links(dst)
        tmp = temp_beside(final, "norm")
        # The limiter's look-ahead estimate can miss a little of an inter-sample peak built from
        # content near Nyquist (clicks); re-measure the result and tighten its ceiling until the
        # written file is under the ceiling. A mildly limited file gets the lost loudness back.
        for attempt in range(4):
            effects = _gain_stages(gain_db)
            if limit:
                effects.append(Limiter(ceiling_dbtp=limiter_ceiling, release_ms=release_ms))
            if trim_db:
                effects += _gain_stages(trim_db)
            try:
                report = process_file(src, tmp, Chain(effects), subtype=subtype, channel_mask=mask or 0,
                                      metadata_from=metadata_from, dc_offset="keep")
            except AudioFileError as e:  # name the file the user asked for, not our temporary one
                raise AudioFileError(str(e).replace(str(tmp), str(dst)).replace(str(src), str(shown))) from e
            after = loudness_file(tmp, **weigh)
            if one_block:
                after["integrated_lufs"] = _one_block_loudness(tmp, **weigh)
            over = after["true_peak_dbtp"] - ceiling_dbtp
            short = target_lufs - after["integrated_lufs"]
            if attempt == 3:
                break
            if over > -0.01:
                lowest = Limiter.params[0].min
                if limit and limiter_ceiling - over - 0.02 < lowest:
                    trim_db -= over + 0.02  # the limiter is at its lowest ceiling: trim after it
                limit = True
                limiter_ceiling = max(limiter_ceiling - over - 0.02, lowest)
            elif limit and 0.1 < short <= 1.0 and gain_db + short <= MAX_GAIN_DB:
                gain_db += short
            else:
                break
        warnings = [w.replace(str(tmp), str(dst)) for w in report.warnings]
        equal_not_read = layout == "equal" and after["channels"] in _L._DEFAULT_LAYOUT and after["channels"] > 2
        if equal_not_read or layout_loss(_format_for(dst), after["channels"], mask):
            # what a player or a platform's meter will read, without the input's layout
            as_read = loudness_file(tmp)["integrated_lufs"]
            if abs(as_read - after["integrated_lufs"]) >= 0.05:
                how = (f"read as {_L._DEFAULT_LAYOUT[after['channels']]}, as BS.1770 tools take "
                       f"{after['channels']} channels naming no speakers," if equal_not_read else "read that way")
                warnings.append(f"{dst}: {how} it measures {as_read:.1f} LUFS, not {after['integrated_lufs']:.1f}")
        if after["true_peak_dbtp"] > ceiling_dbtp:  # a delivery spec's ceiling is a ceiling
            raise AudioFileError(f"{dst}: could not keep the true peak under {ceiling_dbtp:g} dBTP "
                                 f"(reached {after['true_peak_dbtp']:.2f} dBTP); {dst} left untouched")
        os.replace(tmp, final)
    except AudioFileError:
        raise
    except OSError as e:  # an unwritable folder or file, a file where a folder should be
        raise AudioFileError(f"{dst}: cannot write ({e.strerror or e}); nothing written") from e
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    return NormalizeReport(before=before, after=after, target_lufs=target_lufs, ceiling_dbtp=ceiling_dbtp,
                           gain_db=gain_db, limited=limit, limiter_ceiling_dbtp=limiter_ceiling, trim_db=trim_db,
                           subtype=report.subtype, warnings=warnings, notes=notes)
