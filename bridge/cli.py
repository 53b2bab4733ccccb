"""The ``hushbridge`` command line.

    hushbridge demo                          clean the bundled demo clip, show before/after
    hushbridge process IN OUT                clean a file with the default preset (dialogue)
    hushbridge process A.wav B.wav --out-dir cleaned/ --preset podcast --loudness podcast
    hushbridge run --backend jack            live: JACK ports in_1.., out_1.., OSC on 127.0.0.1:9000
    hushbridge loudness A.wav B.flac         integrated loudness, LRA, max M/S, true peak (--json)
    hushbridge normalize IN OUT -t podcast   loudness to -16 LUFS, true peak under -1 dBTP
    hushbridge devices                       audio backends, devices and JACK ports
    hushbridge presets                       built-in and user presets
    hushbridge midi ports                    MIDI inputs (JACK by default; --api alsa)
    hushbridge midi learn /hb/gain/gain_db   map the next MIDI control moved (--save NAME keeps it)
    hushbridge osc-layout --out s.json       Open Stage Control session (--format touchosc-list: CSV)
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

from hushbridge import __version__
from hushbridge.atomic import remove_leftovers
from hushbridge.errors import HushbridgeError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _tell(tag: str, style: str, message: object) -> None:
    """``tag`` in ``style`` and ``message`` verbatim on stderr (file names may hold ``[...]``,
    which rich would read as markup)."""
    from rich.text import Text

    _console(stderr=True).print(Text.assemble((tag, style), " ", str(message)))


def _error(message: object) -> None:
    _tell("error:", "red", message)


def _warning(message: object) -> None:
    _tell("warning:", "yellow", message)


def _ranged(kind: type, lo: float, hi: float, what: str):
    """An argparse type: a finite ``kind`` in ``lo..hi``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{what} {text} is outside {lo:g}..{hi:g}")
        return value
    return parse


def _rate_arg(text: str) -> int:
    from hushbridge.effects.base import SAMPLE_RATES

    return _ranged(int, *SAMPLE_RATES, "sample rate")(text)


def _block_arg(text: str) -> int:
    from hushbridge.effects.base import MAX_BLOCK

    return _ranged(int, 1, MAX_BLOCK, "block size")(text)


def _channels_arg(text: str) -> int:
    from hushbridge.effects.base import MAX_CHANNELS

    return _ranged(int, 1, MAX_CHANNELS, "channel count")(text)


_port_arg = _ranged(int, 1, 65535, "UDP port")


def _pick_arg(text: str) -> list[int]:
    from hushbridge.effects.base import MAX_CHANNELS

    try:
        picked = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: channel numbers from 1, separated by commas (e.g. 2 or 1,3)") from None
    if not picked or min(picked) < 1 or len(picked) > MAX_CHANNELS:
        raise argparse.ArgumentTypeError(f"{text!r}: 1 to {MAX_CHANNELS} channel numbers, each from 1")
    return picked


# == chain selection shared by process and run =====================================================
def _add_chain_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", "-p", metavar="NAME", help="preset name or .toml path (default: dialogue; see `hushbridge presets`)")
    g.add_argument("--chain", "-c", metavar="E1,E2,...",
                   help="ad-hoc chain of effects with default settings, e.g. highpass,compressor,limiter; "
                        "plugin:Reverb or plugin:/path/x.vst3 adds a pedalboard plugin")
    p.add_argument("--set", "-s", metavar="ID.PARAM=VALUE", action="append", default=[],
                   help="override a parameter, e.g. --set compressor.threshold_db=-20 or declip.soft_repair=on; "
                        "with --per-channel, ID@N.PARAM=VALUE sets channel N's own, e.g. gate@2.threshold_db=-55 "
                        "(repeatable)")


def _build_chain(args: argparse.Namespace, outside: dict | None = None, first=None, last=None):  # noqa: ANN001
    """The chain ``--preset``/``--chain`` name, with ``--set`` applied; ``outside``: effects that
    run outside it but take ``--set`` too (``process --automix``'s automixer), by id; ``first``
    (``last``): an effect put first (last) in the chain unless one of its kind is in it
    (``run --automix``, ``run --duck``)."""
    from hushbridge.effects import chain_from_names
    from hushbridge.errors import ChainError, ParamError
    from hushbridge.presets import load_preset

    chain = chain_from_names(args.chain) if args.chain is not None else load_preset(args.preset or "dialogue")
    if first is not None and not any(type(e) is type(first) for e in chain):
        chain.insert(0, first, id=first.name if first.name not in chain else None)
    if last is not None and not any(type(e) is type(last) for e in chain):
        chain.insert(len(chain), last, id=last.name if last.name not in chain else None)
    outside = outside or {}
    preset_own = {eid: chain.channel_values(k) for k, eid in enumerate(chain.ids)}
    # every channel's value first, then a channel's own: `--set gate@2.x=.. --set gate.x=..` keeps
    # channel 2's, whichever comes first (setting the effect's value sets every channel again)
    items = sorted(args.set, key=lambda item: "@" in item.partition("=")[0])
    for item in items:
        key, sep, value = item.partition("=")
        eid, dot, pid = key.strip().rpartition(".")
        if not sep or not dot or not eid or not pid:
            raise ParamError(f"--set {item!r}: expected ID.PARAM=VALUE, e.g. compressor.threshold_db=-20")
        if eid.partition("@")[0] == "automix" and "automix" not in chain.ids and "automix" not in outside \
                and hasattr(args, "automix"):
            raise ParamError(f"--set {item!r}: no automix in the chain; add --automix (gain sharing before the "
                             "chain) or put it in the chain (--chain automix,...)")
        eid, at, channel = eid.partition("@")
        if at:
            alone = eid in outside and eid not in chain.ids  # process --automix's automixer
            target = outside[eid] if alone else chain[eid]
            if pid == "link" and hasattr(target, "set_link"):
                raise ParamError(f"--set {item!r}: link says how {eid} hears all the channels together, not one "
                                 f"channel's value: --set {eid}.link=stereo|all|none")
            if not getattr(args, "per_channel", False) and target.channel_coupling != "joint":
                raise ParamError(f"--set {item!r}: a channel's own value is used when each channel runs on its own: "
                                 "add --per-channel")
            if not re.fullmatch(r"[1-9][0-9]{0,3}", channel):
                raise ParamError(f"--set {item!r}: expected ID@N.PARAM=VALUE with N a channel from 1, "
                                 "e.g. gate@2.threshold_db=-55")
            if pid == "bypass" and not alone:  # bypassed on that channel alone
                switch = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
                if value.strip().lower() not in switch:
                    raise ParamError(f"--set {item!r}: bypass takes on/off (or true/false, 1/0)")
                try:
                    chain.set_channel_bypass(eid, int(channel), switch[value.strip().lower()])
                except ChainError as e:
                    raise ParamError(f"--set {item!r}: {e}") from None
                continue
            param = target.param(pid)
            index = param.choice_index(value) if param.choices else None
            try:
                number = float(index) if index is not None else float(value)
            except ValueError:
                raise ParamError(f"--set {item!r}: {value!r} is not a number") from None
            try:
                if alone:
                    target.set_channel(int(channel), pid, number)
                else:
                    chain.set_channel(eid, int(channel), pid, number)
            except ChainError as e:
                raise ParamError(f"--set {item!r}: {e}") from None
            continue
        if eid in outside and eid not in chain.ids:
            effect = outside[eid]
            if pid == "bypass":
                raise ParamError(f"--set {item!r}: {eid} runs outside the chain; leave out --{eid} instead")
        else:
            effect = chain[eid]
        if pid == "bypass":  # as a preset's `bypass = true`
            switch = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
            if value.strip().lower() not in switch:
                raise ParamError(f"--set {item!r}: bypass takes on/off (or true/false, 1/0)")
            chain.set_bypass(eid, switch[value.strip().lower()])
            continue
        if pid == "link" and hasattr(effect, "set_link"):  # a set-up option, as a preset's `link = "none"`
            try:
                effect.set_link(value.strip())
            except ValueError as e:
                raise ParamError(f"--set {item!r}: {e}") from None
            if getattr(args, "per_channel", False):
                _warning(f"--set {item}: with --per-channel every channel has a {effect.name} of its own: "
                         "there is nothing to link, each runs alone")
            continue
        param = effect.param(pid)  # ParamError naming the parameters there are
        choices = tuple(param.choices or ())
        # a switch or mode by name (declip.soft_repair=on, highpass.slope=24, loudness.layout=5.0:
        # a name wins over the index it would read as), as in a preset
        index = param.choice_index(value) if choices else None
        if index is not None:
            number = float(index)
        else:
            try:
                number = float(value)
            except ValueError:
                named = f" or one of {', '.join(choices)}" if choices else ""
                raise ParamError(f"--set {item!r}: {value!r} is not a number{named}") from None
        effect.set(pid, number)
        if eid in preset_own and any(pid in row for row in preset_own[eid].values()):
            cleared = ", ".join(f"{eid}@{c}.{pid}={row[pid]:g}" for c, row in preset_own[eid].items() if pid in row)
            _warning(f"--set {item}: sets every channel's {pid}, the preset's own values per channel too ({cleared}); "
                     f"give --set {eid}@N.{pid}=... to keep one")
    # values per channel of effects that run split only in a chain run per channel (an
    # automixer keeps its weights per microphone in any chain)
    idle = [eid for k, (eid, effect) in enumerate(chain.items())
            if effect.channel_coupling != "joint" and chain.channel_values(k)]
    if not getattr(args, "per_channel", True) and idle:
        _console(stderr=True).print(f"[yellow]warning:[/] values per channel ({', '.join(idle)}) are used with "
                                    "--per-channel, not here", highlight=False)
    return chain


# == process =======================================================================================
def _batch_output(out_dir: Path, src: Path) -> Path:
    """``--out-dir``: the input's name, in a format hushbridge writes (an M4A or a video, which
    only ffmpeg reads, comes out as WAV)."""
    from hushbridge.errors import AudioFileError
    from hushbridge.io.files import _format_for

    try:
        _format_for(out_dir / src.name)
    except AudioFileError:
        return out_dir / (src.stem + ".wav")
    return out_dir / src.name


def _cmd_process(args: argparse.Namespace) -> int:
    out = _console()
    err = _console(stderr=True)
    paths = [Path(p) for p in args.files]
    if args.out_dir:
        out_dir = Path(args.out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            _error(f"--out-dir {out_dir}: is a file, not a folder")
            return EXIT_USAGE
        jobs = [(p, _batch_output(out_dir, p)) for p in paths]
        by_name: dict[str, list[Path]] = {}
        for p, dst in jobs:
            by_name.setdefault(dst.name, []).append(p)
        clashes = [group for group in by_name.values() if len(group) > 1]
        if clashes:  # one output would silently replace another
            _error("inputs with the same name would overwrite each other in --out-dir: "
                   + "; ".join(", ".join(map(str, group)) for group in clashes)
                   + " (process them into separate folders)")
            return EXIT_USAGE
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            _error(f"--out-dir {out_dir}: cannot create it ({e.strerror or e})")
            return EXIT_FAILED
    else:
        if len(paths) != 2:
            _error("give IN and OUT, or several inputs with --out-dir DIR")
            return EXIT_USAGE
        jobs = [(paths[0], paths[1])]
    from hushbridge.effects import Automix

    mixer = Automix() if args.automix else False
    args.mixer = mixer
    chain = _build_chain(args, {"automix": mixer} if mixer else None)
    failures = 0
    for src, dst in jobs:
        try:
            with contextlib.ExitStack() as stack:
                failures += _process_one(args, chain, src, dst, stack, out, err)
        except (HushbridgeError, OSError) as e:  # one bad file never stops a batch
            failures += 1
            _error(e if isinstance(e, HushbridgeError) else f"{src} -> {dst}: {e.strerror or e}")
    if failures and len(jobs) > 1:
        _tell(f"{failures} of {len(jobs)} files failed", "red", "")
    return EXIT_FAILED if failures else EXIT_OK


def _process_one(args: argparse.Namespace, chain, src: Path, dst: Path, stack, out, err) -> int:
    """One ``process`` input into ``dst``; 0 (a failure raises). With ``--pick``, the picked
    channels of ``src`` in a temporary file (with ``src``'s tags, timecode and iXML) are what the
    chain cleans."""
    from hushbridge.errors import AudioFileError
    from hushbridge.io.files import audio_info, picked_channels

    given = src
    if args.pick:
        src, *decoded = stack.enter_context(picked_channels(given, args.pick,
                                                            dst.parent if dst.parent.is_dir() else None))
        original = audio_info(given)  # (the picked file carries its timecode and iXML on)
        if args.subtype is None:  # the output in the input's format (where the output's format can
            from hushbridge.io.decode import output_subtype  # store it), not the temporary copy's float
            from hushbridge.io.files import output_format

            stack.callback(setattr, args, "subtype", None)
            args.subtype = output_format(dst, original.subtype, None)[1] if original.format != "FFMPEG" \
                else output_subtype(dst, None)
        shown = Path(f"{given} (channel{'s' if len(args.pick) > 1 else ''} {','.join(map(str, args.pick))})")
        try:
            return _process_picked(args, chain, src, dst, out, err, shown, decoded)
        except AudioFileError as e:  # the user's file, not our temporary copy of its channels
            raise AudioFileError(str(e).replace(str(src), str(shown))) from e
    return _process_picked(args, chain, src, dst, out, err, given)


def _process_picked(args: argparse.Namespace, chain, src: Path, dst: Path, out, err, shown: Path,
                    decoded: tuple[str, str] = ("", "")) -> int:
    """``_process_one``'s work on ``src`` (the input, or the temporary file of its picked
    channels, which messages call ``shown``; ``decoded``: what ffmpeg said decoding it, a
    warning, and a note that it did)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from hushbridge.io.files import audio_info, process_file

    mixer = args.mixer
    info = audio_info(src)
    args.layout_mask = _layout_mask(args.layout, info.channels, src)
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), console=err, transient=True,
                  disable=args.quiet or info.duration < 20 or not err.is_terminal) as bar:
        task = bar.add_task(shown.name, total=info.frames)

        def progress(done: int, total: int) -> None:
            _still_running()
            bar.update(task, completed=done, total=total)

        if args.loudness is None:
            report = process_file(src, dst, chain, sample_rate=args.rate, subtype=args.subtype,
                                  block_size=args.block_size, progress=progress,
                                  channel_mask=args.layout_mask or None,
                                  dc_offset="keep" if args.keep_dc else "remove",
                                  per_channel=args.per_channel, automix=mixer)
        else:
            report, loud = _render_to_loudness(src, dst, chain, args, info, progress)
    if shown != src:  # the user's file, not our temporary copy of its channels
        report.warnings = [w.replace(str(src), str(shown)) for w in [decoded[0]] + report.warnings if w]
        report.notes = [n.replace(str(src), str(shown)) for n in [decoded[1]] + report.notes if n]
        if args.loudness is not None:
            loud.warnings = [w.replace(str(src), str(shown)) for w in loud.warnings]
        src = shown
    dt = time.perf_counter() - t0
    seconds = report.frames / report.sample_rate
    if not args.quiet:
        out.print(f"{src} -> {dst}: {seconds:.2f} s, {report.channels} ch, {report.sample_rate} Hz, "
                  f"{report.subtype}, {_speed(seconds, dt)} real time, "
                  f"latency {report.latency_samples} samples compensated", markup=False)
    for warning in report.warnings:
        _warning(warning)
    if args.loudness is not None:
        _print_loudness_pass(loud, dst, args.quiet)
    elif report.over_full_scale:
        if report.clipped and any(e.name == "declip" for e in chain):
            # a rebuilt peak lies above the clip level by design: a limiter would squash it
            # again, a gain keeps its shape
            _warning(f"{dst}: {report.over_full_scale} samples beyond full scale, clipped by the format: "
                     "the de-clipper rebuilt peaks above it; give them headroom (--loudness podcast, "
                     "or a gain after declip, e.g. --chain declip,gain --set gain.gain_db=-6) or write "
                     "--subtype FLOAT to keep them")
        elif report.clipped:
            _warning(f"{dst}: {report.over_full_scale} samples beyond full scale, clipped by the format "
                     "(end the chain with a limiter, deliver with --loudness, or write --subtype FLOAT "
                     "to keep them)")
        else:
            _warning(f"{dst}: {report.over_full_scale} samples beyond full scale, kept (float format)")
    for note in report.notes:
        if not args.quiet:
            out.print(f"  {note}", markup=False)
    return 0


def _layout_mask(layout: str | None, channels: int, src: Path) -> int:
    """``--layout``'s channel mask for a file of ``channels`` channels (0: none given, or equal)."""
    if layout is None or layout == "equal":
        return 0
    from hushbridge.dsp.loudness import LAYOUT_MASKS, LAYOUTS
    from hushbridge.errors import AudioFileError

    if len(LAYOUTS[layout]) != channels:
        raise AudioFileError(f"{src}: has {channels} channel{'s' if channels != 1 else ''}, --layout {layout} "
                             f"{len(LAYOUTS[layout])}")
    return LAYOUT_MASKS[layout]


def _render_to_loudness(src: Path, dst: Path, chain, args: argparse.Namespace, info, progress):
    """``process --loudness``: render the chain into a float temporary file beside ``dst``, then
    normalize that into ``dst`` (in the format the plain render would have written)."""
    from hushbridge.atomic import temp_beside, through_links
    from hushbridge.errors import AudioFileError
    from hushbridge.io.files import channel_mask_of, output_format, process_file
    from hushbridge.normalize import normalize_file

    if dst.exists() and os.path.samefile(src, dst):
        raise AudioFileError(f"refusing to overwrite the input {src}: choose another output path")
    if dst.is_dir():
        raise AudioFileError(f"{dst}: is a directory; give a file name")
    if info.format == "FFMPEG":  # only ffmpeg reads it: render and normalize from one decoded copy
        from hushbridge.io.decode import as_input, decoded, mentions, output_subtype, retold, speaker_mask
        from hushbridge.io.files import audio_info

        with decoded(src, dst.parent if dst.parent.is_dir() else None, info) as (dec, said):
            as_decoded = argparse.Namespace(**vars(args))
            as_decoded.subtype = output_subtype(dst, args.subtype)
            # the speakers the input names (a 5.1 AAC's), none for a mono or stereo one: the
            # decoded copy's mask for those says no more than its channel count
            as_decoded.source_mask = speaker_mask(dec, info.channels)
            as_decoded.layout_mask = args.layout_mask or as_decoded.source_mask
            try:
                report, loud = _render_to_loudness(dec, dst, chain, as_decoded, audio_info(dec), progress)
            except AudioFileError as e:
                raise AudioFileError(mentions(str(e), dec, src)) from e
        loud.warnings = retold(loud.warnings, dec, src, info)
        return as_input(report, dec, said, src, info), loud
    _, subtype = output_format(dst, info.subtype, args.subtype)  # refuse a bad --subtype before rendering
    final = through_links(dst)
    if not final.parent.is_dir():
        raise AudioFileError(f"{final.parent}: output folder does not exist")
    # W64: float samples beyond full scale and files past 4 GB, until the limiter deals with them
    tmp = temp_beside(final.with_suffix(".w64"), "render")
    try:
        report = process_file(src, tmp, chain, sample_rate=args.rate, subtype="FLOAT",
                              block_size=args.block_size, progress=progress, channel_mask=args.layout_mask,
                              dc_offset="keep" if args.keep_dc else "remove", per_channel=args.per_channel,
                              automix=args.mixer)
        # the W64 render carries no channel mask: measure and write with the input's
        from hushbridge.io.files import layout_mask_of

        # separate microphones (said, or processed per channel from a file that names no layout):
        # every channel weighs 1.0 (the count's default made a mask-less WAV's fourth mic an LFE)
        equal = args.layout == "equal" or (args.per_channel and not args.layout_mask and not layout_mask_of(src))
        named = getattr(args, "source_mask", None)
        loud = normalize_file(tmp, dst, args.loudness, ceiling_dbtp=args.true_peak, subtype=subtype,
                              name=f"{dst} (as rendered)", layout="equal" if equal else None,
                              channel_mask=args.layout_mask or (channel_mask_of(src) if named is None else named) or 0,
                              metadata_from=src)
    finally:
        tmp.unlink(missing_ok=True)
    report.output, report.subtype = str(dst), loud.subtype
    return report, loud


def _print_loudness_pass(loud, dst: Path, quiet: bool) -> None:
    after = loud.after
    for warning in loud.warnings:
        _warning(warning)
    for note in loud.notes if not quiet else ():
        _console().print(f"  {note}", markup=False)
    if not quiet:
        _console().print(
            f"  loudness {_fmt(loud.before['integrated_lufs'])} -> {_fmt(after['integrated_lufs'])} LUFS "
            f"(target {loud.target_lufs:g}), gain {loud.gain_db:+.2f} dB"
            + (f", true-peak limited at {loud.limiter_ceiling_dbtp:.2f} dBTP" if loud.limited else "")
            + f", true peak {after['true_peak_dbtp']:.2f} dBTP, LRA {after['lra_lu']:.1f} LU", markup=False)
    reached = after["integrated_lufs"]
    if loud.limited and reached < loud.target_lufs - 0.5:
        _warning(f"{dst}: the {loud.ceiling_dbtp:g} dBTP ceiling held the loudness at {reached:.1f} LUFS, "
                 f"{loud.target_lufs - reached:.1f} LU under the target; a lower target or more compression "
                 "would reach it")


def _speed(seconds: float, dt: float) -> str:
    """How many times faster than real time, e.g. ``13x``, ``1.4x``, ``0.02x`` (a 10 ms file)."""
    r = seconds / max(dt, 1e-9)
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x" if r >= 1 else f"{r:.2g}x"


# == demo ==========================================================================================
def _cmd_demo(args: argparse.Namespace) -> int:
    from importlib import resources

    from rich.markup import escape
    from rich.table import Table

    from hushbridge.io.files import process_file, read_audio
    from hushbridge.measure import measure
    from hushbridge.presets import load_preset

    out = _console()
    src = resources.files("hushbridge.data").joinpath("demo.flac")
    dst = Path(args.out)
    preset = args.preset or "dialogue"
    chain = load_preset(preset)
    with resources.as_file(src) as src_path:
        # the first run on an install compiles the DSP kernels (numba, ~10 s, then cached): timed
        # apart, so the speed shown is the chain's
        import numpy as np

        from hushbridge.effects import render

        t0 = time.perf_counter()
        render(load_preset(preset), np.zeros((1, 4800), dtype=np.float32), 48000)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            report = process_file(src_path, dst, chain)
        except OSError as e:
            _error(f"cannot write {dst}: {e.strerror or e}")
            return EXIT_FAILED
        dt = time.perf_counter() - t0
        before_audio, sr = read_audio(src_path)
    after_audio, _ = read_audio(dst)
    before, after = measure(before_audio, sr), measure(after_audio, sr)
    seconds = report.frames / sr
    out.print(f"hushbridge {__version__} demo: bundled clip (TTS speech, simulated room, hum, fan noise) "
              f"through the [bold]{escape(preset)}[/] preset")
    out.print(f"chain: {' > '.join(chain.ids)}; latency {report.latency_samples} samples "
              f"({report.latency_samples / sr * 1000:.2f} ms), compensated")
    out.print(f"processed {seconds:.1f} s of audio in {dt:.2f} s ({_speed(seconds, dt)} real time)"
              + (f"; first compiled the DSP kernels in {warm:.1f} s (once: numba keeps them)" if warm > 1.0 else ""))
    table = Table(title=None)
    table.add_column("measure")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    labels = {
        "integrated_lufs": ("integrated loudness", "LUFS"),
        "lra_lu": ("loudness range", "LU"),
        "true_peak_dbtp": ("true peak", "dBTP"),
        "sample_peak_dbfs": ("sample peak", "dBFS"),
        "rms_dbfs": ("RMS", "dBFS"),
        "noise_floor_dbfs": ("noise floor", "dBFS"),
    }
    for key, (label, unit) in labels.items():
        if key in before:
            b, a = before[key], after[key]
            fmt = (lambda v: "-inf" if not math.isfinite(v) else f"{v:.1f}")
            table.add_row(label, f"{fmt(b)} {unit}", f"{fmt(a)} {unit}")
    out.print(table)
    out.print(f"wrote {dst}", markup=False)
    return EXIT_OK


# == run ===========================================================================================
NO_CALLBACKS_S = 3.0  # run: this long without a callback means the device or server is gone


def _channel_values_line(engine) -> str:  # noqa: ANN001 - an Engine
    """What the channels of ``engine``'s chain have of their own, for `run`'s start line
    (``gate@2 threshold_db=-55``; empty when none): values that apply there only."""
    chain = engine.chain
    used = []
    for k, (eid, effect) in enumerate(chain.items()):
        if not (engine.per_channel or effect.channel_coupling == "joint"):
            continue
        for c, row in chain.channel_values(k).items():
            if c <= engine.channels:
                used.append(f"{eid}@{c} " + " ".join(f"{pid}={v:g}" for pid, v in row.items()))
    return "; ".join(used)


def _automix_keeper(engine):  # noqa: ANN001, ANN202 - an Engine; returns its chain filter
    """``run --automix``: a preset loaded live brings its own chain, but the microphones still
    need their gain shared: put an automixer first in one that has none, set as the control
    side last set the running one (a change the audio thread has not applied yet too) and
    bypassed if that one is."""
    from hushbridge.effects import Automix

    def keep(new) -> None:  # noqa: ANN001 - a Chain
        if any(isinstance(e, Automix) for e in new):
            return
        eid = next((i for i, e in engine.chain.items() if isinstance(e, Automix)), None)
        mixer = Automix() if eid is None else Automix(**{p.id: engine.get(f"/hb/{eid}/{p.id}") for p in Automix.params})
        new.insert(0, mixer, id="automix" if "automix" not in new else None)
        for c in range(1, engine.channels + 1) if eid is not None else ():  # each microphone's weight
            for pid in Automix.channel_params:
                value = engine.get(f"/hb/{eid}@{c}/{pid}")
                if value != mixer.get(pid):
                    new.set_channel(0, c, pid, value)
        if eid is not None and engine.get(f"/hb/{eid}/bypass") >= 0.5:
            new.set_bypass(0, True)

    return keep


def _duck_bed(chain, voices: int, channels: int) -> None:  # noqa: ANN001 - a Chain
    """``run --duck``: the channels after the voices are the bed (music, game audio): every effect
    but the ducker and the other joint ones (meters, automixer) is bypassed there, so the bed is
    not cleaned as a voice, and an automixer shares the gain among the voices only (a loud bed
    took a quiet voice's gain and pumped with its syllables)."""
    from hushbridge.effects import Automix

    for eid, effect in chain.items():
        if isinstance(effect, Automix):
            effect.mics = voices
        if effect.channel_coupling != "joint":
            for c in range(voices + 1, channels + 1):
                chain.set_channel_bypass(eid, c, True)


def _duck_keeper(engine, voices: int):  # noqa: ANN001, ANN202 - an Engine; returns its chain filter
    """``run --duck``: a preset loaded live keeps a ducker last, set as the running one, and the
    bed's channels bypassed in its cleanup."""
    from hushbridge.effects import Duck

    def keep(new) -> None:  # noqa: ANN001 - a Chain
        if not any(isinstance(e, Duck) for e in new):
            eid = next((i for i, e in engine.chain.items() if isinstance(e, Duck)), None)
            duck = Duck(voices=voices) if eid is None else Duck(**{p.id: engine.get(f"/hb/{eid}/{p.id}") for p in Duck.params})
            new.insert(len(new), duck, id="duck" if "duck" not in new else None)
            if eid is not None and engine.get(f"/hb/{eid}/bypass") >= 0.5:
                new.set_bypass(len(new) - 1, True)
        _duck_bed(new, voices, engine.channels)

    return keep


def _run_backend(args: argparse.Namespace, engine):  # noqa: ANN001, ANN202 - an Engine; a Backend
    """``run``'s audio backend, made (its JACK client and ports exist from here) but not started."""
    if args.backend == "jack":
        from hushbridge.io.jack import JackBackend

        backend = JackBackend(engine, name=args.name, server=args.server,
                              connect_inputs=args.connect_inputs, connect_outputs=args.connect_outputs)
        # a JACK server's rate and period are its own, set when it starts: not a client's to ask for
        mismatch = None
        if args.rate and args.rate != backend.sample_rate:
            mismatch = ("--rate", args.rate, f"at {backend.sample_rate} Hz", "-r")
        elif args.block_size and args.block_size != backend.block_size:
            mismatch = ("--block-size", args.block_size, f"with {backend.block_size}-frame periods", "-p")
        if mismatch is not None:
            backend.close()
            opt, value, has, jack_opt = mismatch
            raise HushbridgeError(f"{opt} {value}: the JACK server runs {has}, and its clients with it; start "
                                  f"jackd with {jack_opt} {value} (e.g. jackd -d alsa {jack_opt} {value}), or leave "
                                  f"{opt} out (it sets the device for --backend portaudio)")
    else:
        from hushbridge.io.portaudio import PortAudioBackend

        device = int(args.device) if args.device and args.device.isdigit() else args.device
        backend = PortAudioBackend(engine, device=device, samplerate=args.rate, blocksize=args.block_size or 128)
    return backend


def _cmd_run(args: argparse.Namespace) -> int:
    from hushbridge.engine import Engine

    err = _console(stderr=True)
    recorder = None
    if args.record is not None:
        from hushbridge.record import Recorder

        try:
            recorder = Recorder(args.record, raw=args.record_raw, subtype=args.record_format)
        except (HushbridgeError, ValueError) as e:
            _error(e)
            return EXIT_USAGE
    elif args.record_raw or args.record_paused or args.record_follow:
        _error("--record-raw, --record-paused and --record-follow go with --record FILE.wav|FOLDER")
        return EXIT_USAGE
    if args.record_paused and args.no_osc:
        _error("--record-paused waits for /hb/record/start over OSC; with --no-osc nothing could start a take")
        return EXIT_USAGE
    from hushbridge.effects import Automix

    if args.duck is not None:
        from hushbridge.effects import Duck

        if args.duck >= args.channels:
            _error(f"--duck {args.duck}: with --channels {args.channels} there is no bed to duck; the voices are "
                   f"the first {args.duck}, the bed the channels after them (e.g. --channels {args.duck + 2} for a "
                   "stereo bed)")
            return EXIT_USAGE
        args.per_channel = True  # the bed's channels skip the voice's cleanup: a chain per channel
    chain = _build_chain(args, first=Automix() if args.automix else None,
                         last=Duck(voices=args.duck) if args.duck is not None else None)
    if args.duck is not None:
        _duck_bed(chain, args.duck, args.channels)
    mask = 0
    if args.layout is not None:
        from hushbridge.dsp.loudness import LAYOUT_MASKS, LAYOUTS

        if len(LAYOUTS[args.layout]) != args.channels:
            _error(f"--layout {args.layout} has {len(LAYOUTS[args.layout])} channels; add --channels "
                   f"{len(LAYOUTS[args.layout])} (the engine runs {args.channels})")
            return EXIT_USAGE
        mask = LAYOUT_MASKS[args.layout]
    if args.per_channel and args.layout not in (None, "mono", "stereo"):
        _warning(f"--per-channel with --layout {args.layout}: the LFE and surrounds are levelled and gated as "
                 "sources of their own; per channel is for separate microphones")
    engine = Engine(chain, channels=args.channels, channel_mask=mask, per_channel=args.per_channel)
    unused = chain.channels_beyond(args.channels, split=args.per_channel)
    if unused:
        _warning(f"--channels {args.channels}: the values of {', '.join(unused)} are not used")
    if args.automix:
        engine.add_chain_filter(_automix_keeper(engine))
    if args.duck is not None:
        engine.add_chain_filter(_duck_keeper(engine, args.duck))
    osc = midi = follower = None
    # before the audio: importing a module (python-osc, mido, rtmidi: C extensions loaded) and
    # starting the OSC server hold the GIL for tens of ms, which the audio callback waits for
    # (started after it, they cost every live start 4-6 xruns); and before the backend is made,
    # since its JACK ports appear then, and a client that connects to them as they do finds them
    # not active yet while the OSC server starts
    try:
        if not args.no_osc:
            from hushbridge.control.osc import OscServer

            osc = OscServer(engine, host=args.osc_host, port=args.osc_port, process=args.osc_receive == "process")
            if recorder is not None:
                osc.controller.set_recorder(recorder)
            osc.start()
        if args.midi_in:
            _import_midi(args)
        backend = _run_backend(args, engine)
    except BaseException:
        if osc is not None:
            osc.close()
        raise
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    audio_lost = started = False
    try:
        if recorder is not None:
            # attached and started before the audio: the take (and its --record-raw copy) starts
            # at the engine's first block, so cleaning the raw copy again gives the same samples
            # (it started 750-1140 samples in, and the denoiser's hop grid with it)
            backend.prepare()
            recorder.attach(engine)
            if args.record_follow:
                from hushbridge.record import TransportFollower

                follower = TransportFollower(recorder, engine)
            elif not args.record_paused:
                recorder.start()
        backend.start()
        started = True
        # on JACK the MIDI port joins the engine's own client (one Python callback per cycle)
        midi = _start_midi_in(args, engine, backend) if args.midi_in else None
        where = f"OSC on {args.osc_host}:{osc.port}" if osc else "OSC off"
        if osc is not None and osc.receiver is not None:
            where += " (received in a process of its own)"
        elif osc is not None and args.osc_receive == "process":
            where += " (received on a thread: no receive process here)"
        if engine.device_latency_samples:  # PortAudio: what the device adds to the chain's latency
            dev = engine.device_latency_samples
            where += (f"; the device adds {dev} samples ({dev / engine.spec.sample_rate * 1000:.2f} ms, "
                      f"PortAudio's estimate) to the chain's {engine.latency_samples}")
        if midi is not None:
            if osc is not None:
                from hushbridge.control.midi import attach_osc

                attach_osc(osc.controller, midi.mapper)
            where += f", MIDI in: {midi.port_label}"
        each = ", each channel through a chain of its own" if engine.per_channel and engine.channels > 1 else ""
        # a model effect that hears the channels as one (a stereo pair, linked by default)
        ids = [eid + (" (linked)" if getattr(e, "linked", False) else "") for eid, e in engine.chain.items()]
        err.print(f"hushbridge running on {backend.name} ({engine.spec.sample_rate} Hz, {engine.period_frames or engine.spec.max_block_size} frames, "
                  f"{engine.channels} ch), chain {' > '.join(ids)}{each}, {where}. Ctrl-C to stop.",
                  markup=False)
        own = _channel_values_line(engine)
        if own:
            err.print(f"values per channel: {own}", markup=False)
        if args.duck is not None:
            v, ch = args.duck, engine.channels
            bed = f"channel {v + 1}" if v + 1 == ch else f"channels {v + 1}-{ch}"
            err.print(f"ducking {bed} under {'channel 1' if v == 1 else f'channels 1-{v}'} (/hb/duck/...); "
                      f"the bed skips the chain's cleanup", markup=False)
        if recorder is not None:
            take = recorder.take
            sources = ([f"MIDI start/stop on {midi.port_label}"] if midi is not None else []) + \
                (["Live's HushBridge Remote Script over OSC"] if osc is not None else [])
            err.print(f"recording to {', '.join(str(p) for p in take.paths + take.raw_paths)}" if take else
                      f"recording follows the transport ({' or '.join(sources) or 'nothing can play it'}): "
                      "a take while it plays" if args.record_follow else
                      "recording armed: /hb/record/start starts a take", markup=False)
            if args.record_follow and not sources:
                _warning("--record-follow with --no-osc and no --midi-in: no transport can start a take")
        tty = sys.stderr.isatty()
        errors_seen, blocks_seen, quiet_since = engine.callback_errors, engine.blocks, time.monotonic()
        while not stop.wait(0.5):
            lost = backend.lost
            if not lost and engine.blocks == blocks_seen and time.monotonic() - quiet_since > NO_CALLBACKS_S:
                lost = f"no audio callbacks from {backend.name} for {NO_CALLBACKS_S:g} s (device or server gone?)"
            if lost:
                if tty:
                    sys.stderr.write("\n")
                _error(f"audio stopped: {lost}")
                audio_lost = True
                return EXIT_FAILED
            if engine.blocks != blocks_seen:
                blocks_seen, quiet_since = engine.blocks, time.monotonic()
            if engine.callback_errors != errors_seen:
                errors_seen = engine.callback_errors
                if tty:
                    sys.stderr.write("\n")
                what = engine.last_callback_error
                effect = "the audio played on" if what.startswith("process hook") else "output silenced for that block"
                _warning(f"audio callback error ({effect}): {what}")
            line = engine.status_line()
            if recorder is not None:
                line += " | " + recorder.status()
            if tty:
                sys.stderr.write("\r" + line + "   ")
                sys.stderr.flush()
            elif args.status_every and engine.blocks and int(time.monotonic() * 2) % (2 * args.status_every) == 0:
                print(line, file=sys.stderr, flush=True)
        if tty:
            sys.stderr.write("\n")
    finally:
        if follower is not None:
            follower.close()
        if recorder is not None:  # first, while audio runs: the take ends with the output of its last input
            recorder.close(audio_running=started and not audio_lost)
            _print_take(err, recorder)
        if midi is not None:
            midi.close()  # first: on JACK its port lives on the backend's client
        if osc is not None:
            osc.close()
        backend.close()
    err.print(f"stopped. {engine.status_line()}", markup=False)
    return EXIT_OK


def _print_take(err, recorder) -> None:  # noqa: ANN001 - a rich Console, a Recorder
    """Every take of the run with its files (several: started and stopped over OSC, or by the
    transport), so none is left to find in the folder."""
    takes = recorder.takes
    if len(takes) > 1:
        err.print(f"recorded {len(takes)} takes:", markup=False)
    for take in takes:
        err.print(f"{'  ' if len(takes) > 1 else 'recorded '}{take.seconds:.1f} s: "
                  f"{', '.join(str(p) for p in take.paths + take.raw_paths)}"
                  + "".join(f"; {note}" for note in take.notes()), markup=False)


# == midi ==========================================================================================
def _preset_midi_table(args: argparse.Namespace) -> dict:
    """The ``[midi]`` table of the preset ``run``/``midi learn`` use ({} for an ad-hoc --chain)."""
    from hushbridge.presets import find_preset

    if getattr(args, "chain", None):
        return {}
    return find_preset(args.preset or "dialogue").midi


def _import_midi(args: argparse.Namespace) -> None:
    """Import what ``run --midi-in`` will use (before the audio starts; see _cmd_run)."""
    import hushbridge.control.midi  # noqa: F401

    if (args.midi_api or ("jack" if args.backend == "jack" else None)) == "jack":
        import hushbridge.control.jack_midi  # noqa: F401
    else:
        with contextlib.suppress(ImportError):  # MidiInput says what is missing
            import rtmidi  # noqa: F401


def _start_midi_in(args: argparse.Namespace, engine, backend):
    """``run --midi-in``: a MidiInput feeding the engine (the preset's ``[midi]`` maps); on JACK
    with the JACK backend its port is ``<--name>:midi_in`` on the engine's client."""
    from hushbridge.control.midi import MidiInput, MidiMapper

    mapper = MidiMapper(engine, _preset_midi_table(args))
    api = args.midi_api or ("jack" if args.backend == "jack" else None)
    port = None if args.midi_in == "virtual" else args.midi_in
    host = backend if api == "jack" and args.backend == "jack" else None
    extra = {"jack_host": host, "port_name": "midi_in"} if host is not None else {}
    midi = MidiInput(mapper, port=port, api=api, server=args.server if api == "jack" else None, **extra)
    _show_midi_connections()
    midi.start()
    return midi


class _NoteHandler(logging.Handler):
    """Log records of one level as ``note:`` lines on stderr, on a line of their own (the status
    line of a terminal is rewritten in place)."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.addFilter(lambda record: record.levelno == level)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if sys.stderr.isatty():
                sys.stderr.write("\n")
            _tell("note:", "cyan", record.getMessage())
        except Exception:  # noqa: BLE001 - logging must not raise into the MIDI thread
            self.handleError(record)


def _show_midi_connections() -> logging.Handler:
    """`run --midi-in`: say when the MIDI source goes away and when it is connected (again): a
    controller unplugged and plugged back in is picked up on its own, and the user sees it."""
    logger = logging.getLogger("hushbridge.control.midi")
    for handler in logger.handlers:
        if isinstance(handler, _NoteHandler):
            return handler
    handler = _NoteHandler(logging.INFO)
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def _cmd_midi(args: argparse.Namespace) -> int:
    from hushbridge.control.midi import list_input_ports

    out = _console()
    api = None if args.api == "default" else args.api
    if args.server and api == "jack":
        os.environ["JACK_DEFAULT_SERVER"] = args.server
    if args.midi_command == "ports":
        names = list_input_ports(api)
        out.print(f"[bold]MIDI inputs[/] ({api or 'default'} API): {len(names)}")
        for name in names:
            out.print(f"  {name}", markup=False)
        return EXIT_OK
    return _midi_learn(args, api, out)


def _midi_learn(args: argparse.Namespace, api, out) -> int:
    import tomli_w

    from hushbridge.control.midi import MidiInput, MidiMapper, describe
    from hushbridge.engine import Engine
    from hushbridge.errors import PresetError
    from hushbridge.presets import find_preset, preset_name_problem, save_note, save_preset

    if args.save and preset_name_problem(args.save):  # before the knob moves, not after
        raise PresetError(f"--save: {preset_name_problem(args.save)}")
    preset = find_preset(args.preset or "dialogue")
    engine = Engine(preset.build())
    mapper = MidiMapper(engine, preset.midi)
    learned = []
    done = threading.Event()
    mapper.add_learn_listener(lambda address, m: (learned.append(m), done.set()))
    mapper.learn(args.address)
    with MidiInput(mapper, port=args.port, api=api, server=args.server if api == "jack" else None) as midi:
        _console(stderr=True).print(f"learning {args.address} (preset {preset.name}): move a control on "
                                    f"{midi.port_label} ... (Ctrl-C to give up)", markup=False)
        if not done.wait(args.timeout if args.timeout > 0 else None):
            _error(f"no MIDI control moved within {args.timeout:g} s")
            return EXIT_FAILED
    m = learned[0]
    section = {"cc": "cc", "cc14": "cc", "nrpn": "nrpn", "note": "note"}[m.kind]
    out.print(f"# {describe(m)} -> {m.address}", markup=False)
    out.print(tomli_w.dumps({"midi": {section: [m.to_dict()]}}).strip(), markup=False)
    if args.save:
        note = save_note(args.save)
        path = save_preset(engine.chain, args.save, midi=mapper.to_toml_dict())
        out.print(f"saved preset {args.save!r} with its [midi] table to {path}" + (f" ({note})" if note else ""),
                  markup=False)
    return EXIT_OK


# == devices / presets =============================================================================
def _cmd_devices(args: argparse.Namespace) -> int:  # noqa: ARG001
    from rich.markup import escape

    out = _console()
    out.print("[bold]backends[/]: jack (JACK-Client), portaudio (sounddevice), files (soundfile + soxr)")
    try:
        from hushbridge.io.jack import list_jack_ports

        ports = list_jack_ports()
    except Exception as e:  # noqa: BLE001 - a listing must not fail because one backend is broken
        ports = []
        out.print(f"[yellow]jack: unavailable ({escape(str(e))})[/]")
    server = os.environ.get("JACK_DEFAULT_SERVER", "default")
    if ports:
        out.print(f"[bold]JACK ports[/] (server {server}):")
        for name in ports:
            out.print(f"  {name}", markup=False)
    else:
        out.print(f"JACK: no server running (server name {server}); start one with "
                  "`jackd -R -d dummy -r 48000 -p 128` or your sound card's driver")
    try:
        from hushbridge.io.portaudio import list_devices

        devices = list_devices()
    except Exception as e:  # noqa: BLE001
        devices = []
        out.print(f"[yellow]portaudio: unavailable ({escape(str(e))})[/]")
    if devices:
        out.print("[bold]PortAudio devices[/]:")
        for d in devices:
            out.print(f"  [{d['index']}] {d['name']} ({d['hostapi']}): {d['max_input_channels']} in, "
                      f"{d['max_output_channels']} out, {d['default_samplerate']:.0f} Hz", markup=False)
    else:
        out.print("PortAudio: no devices")
    return EXIT_OK


def _cmd_presets(args: argparse.Namespace) -> int:  # noqa: ARG001
    from rich.markup import escape

    from hushbridge.presets import find_preset, list_presets, user_preset_dir

    out = _console()
    presets = list_presets()
    width = max([12, *map(len, presets)])
    for name, source in presets.items():
        try:
            chain = find_preset(name).build()
            # set-up options a preset keeps besides parameters (a denoiser's link = "none")
            desc = escape(" > ".join(eid + "".join(f" ({k}={v})" for k, v in
                                                  (getattr(e, "preset_keys", dict)() or {}).items() if k == "link")
                                     for eid, e in chain.items()))
        except HushbridgeError as e:
            desc = f"[red]broken: {escape(str(e))}[/]"
        out.print(f"{escape(name.ljust(width))} {desc}  [dim]({escape(str(source))})[/]")
    out.print(f"user presets live in {user_preset_dir()}", markup=False)
    return EXIT_OK


# == loudness / normalize ==========================================================================
_LOUDNESS_KEYS = (("integrated_lufs", "integrated", "LUFS"), ("lra_lu", "LRA", "LU"),
                  ("max_momentary_lufs", "max momentary", "LUFS"),
                  ("max_short_term_lufs", "max short-term", "LUFS"), ("true_peak_dbtp", "true peak", "dBTP"))


def _fmt(v: float) -> str:
    return f"{v:.1f}" if math.isfinite(v) else "-inf"


def _cmd_loudness(args: argparse.Namespace) -> int:
    import json

    if args.timeline and not args.json:
        _error("--timeline goes with --json (a list per file is for programs to read)")
        return EXIT_USAGE

    from hushbridge.errors import AudioFileError
    from hushbridge.measure import loudness_file

    out = _console()
    rows: list[dict] = []
    failures = 0
    for name in args.files:
        try:
            try:
                m = loudness_file(name, layout=args.layout, timeline_s=args.timeline)
            except ValueError as e:  # a layout of another channel count
                if isinstance(e, HushbridgeError):
                    raise
                raise AudioFileError(f"{name}: {e}") from None
        except HushbridgeError as e:
            failures += 1
            _error(e)
            rows.append({"file": name, "error": str(e)})
            continue
        if m["nonfinite_samples"]:
            _warning(f"{name}: {m['nonfinite_samples']} NaN/Inf samples, measured as silence")
        if m["truncated"]:
            _warning(m["truncated"])
        if m["decoded"]:
            _tell("note:", "cyan", f"{name}: {m['decoded']}")
        if m["unweighed"]:
            _warning(f"{name}: {m['unweighed']}")
        rows.append({"file": name, **{k: m[k] for k, _, _ in _LOUDNESS_KEYS},
                     "sample_rate": m["sample_rate"], "channels": m["channels"], "duration_s": m["duration_s"],
                     "nonfinite_samples": m["nonfinite_samples"], **({"timeline": m["timeline"]} if args.timeline else {})})
    if args.json:
        def clean(v):
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return None if isinstance(v, float) and not math.isfinite(v) else v

        print(json.dumps([clean(r) for r in rows], indent=None if args.timeline else 2))
    else:
        for r in rows:
            if "error" not in r:
                out.print(f"{r['file']}: " + ", ".join(f"{label} {_fmt(r[k])} {unit}" for k, label, unit in _LOUDNESS_KEYS),
                          markup=False)
    if failures and len(rows) > 1:
        _tell(f"{failures} of {len(rows)} files failed", "red", "")
    return EXIT_FAILED if failures else EXIT_OK


def _target(text: str) -> float:
    """``--target``: a number (LUFS) or podcast / streaming / broadcast."""
    from hushbridge.normalize import TARGETS

    key = text.strip().lower()
    if key in TARGETS:
        return TARGETS[key]
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a loudness (LUFS, e.g. -16) or one of {', '.join(TARGETS)}") from None
    if not -70.0 <= value <= 0.0:
        raise argparse.ArgumentTypeError(f"target {value:g} LUFS is outside -70..0")
    return value


def _ceiling_arg(text: str) -> float:
    from hushbridge.effects import Limiter

    ceiling = Limiter.params[0]
    return _ranged(float, ceiling.min, ceiling.max, "true-peak ceiling")(text)


def _release_arg(text: str) -> float:
    from hushbridge.effects import Limiter

    release = Limiter.params[1]
    return _ranged(float, release.min, release.max, "limiter release")(text)


def _print_normalized(report, shown_in: str, shown_out: str) -> None:
    """Before/after lines of a normalize pass (and a note where the target was missed)."""
    out = _console()
    before, after = report.before, report.after
    ceiling, target = report.ceiling_dbtp, report.target_lufs
    out.print(f"{shown_in}: {_fmt(before['integrated_lufs'])} LUFS, LRA {before['lra_lu']:.1f} LU, true peak "
              f"{before['true_peak_dbtp']:.2f} dBTP", markup=False)
    predicted_tp = report.predicted_true_peak_dbtp
    out.print(f"gain {report.gain_db:+.2f} dB"
              + (f", true-peak limiter at {report.limiter_ceiling_dbtp:.2f} dBTP (the gained signal "
                 f"would peak at {predicted_tp:+.2f} dBTP)" if report.limited else
                 f"; no limiting needed (peak {predicted_tp:+.2f} dBTP)")
              + (f", then {report.trim_db:+.2f} dB after it (its lowest ceiling let inter-sample peaks through)"
                 if report.trim_db else ""))
    out.print(f"{shown_out}: {_fmt(after['integrated_lufs'])} LUFS, LRA {after['lra_lu']:.1f} LU, true peak "
              f"{after['true_peak_dbtp']:.2f} dBTP ({report.subtype}, target {target:g} LUFS, "
              f"ceiling {ceiling:g} dBTP)", markup=False)
    for note in report.notes:
        out.print(f"  {note}", markup=False)
    for warning in report.warnings:
        _warning(warning)
    reached = after["integrated_lufs"]
    if reached < target - 0.5 and report.limited:
        _warning(f"the {ceiling:g} dBTP ceiling held the loudness at {reached:.1f} LUFS, {target - reached:.1f} LU "
                 "under the target; a lower target or a compressor first would reach it")
    elif reached < target - 0.5:
        _tell("note:", "yellow", f"{shown_out} measures {reached:.1f} LUFS, under the {target:g} LUFS target")
    elif reached > target + 0.5:
        _tell("note:", "yellow", f"{shown_out} measures {reached:.1f} LUFS, above the {target:g} LUFS target: "
                                 "BS.1770's -70 LUFS gate leaves the quietest blocks out of the measurement, more "
                                 "of them the lower the target")


def _cmd_normalize(args: argparse.Namespace) -> int:
    from hushbridge.normalize import normalize_file

    report = normalize_file(args.input, args.output, args.target, ceiling_dbtp=args.true_peak,
                            release_ms=args.release_ms, subtype=args.subtype, layout=args.layout)
    if report.before["nonfinite_samples"]:
        _warning(f"{args.input}: {report.before['nonfinite_samples']} NaN/Inf samples, measured and written as silence")
    _print_normalized(report, args.input, args.output)
    return EXIT_OK


# == osc-layout ====================================================================================
def _cmd_latency(args: argparse.Namespace) -> int:
    from hushbridge.io.latency import measure_round_trip

    trip = measure_round_trip(args.send, args.ret, server=args.server, repeats=args.repeats,
                              max_latency_s=args.max_latency)
    if args.json:
        import json

        print(json.dumps({"samples": trip.samples, "ms": trip.ms, "sample_rate": trip.sample_rate,
                          "period": trip.period, "match": trip.match, "delays": list(trip.delays),
                          "inverted": trip.inverted}))
        return EXIT_OK
    _console().print(f"round trip {', '.join(args.send)} -> {args.ret}: {trip.samples} samples, {trip.ms:.2f} ms "
                     f"at {trip.sample_rate} Hz (JACK period {trip.period}; each sweep: "
                     f"{', '.join(map(str, trip.delays))}; match {trip.match:.2f})", markup=False)
    if trip.inverted:
        _warning("it came back with its polarity inverted (a wiring or an interface that flips it)")
    if trip.match < 0.7:
        _warning("the signal came back much changed (a denoiser or gate in the way?): bypass it for a surer number")
    return EXIT_OK


def _cmd_install_host_scripts(args: argparse.Namespace) -> int:
    from hushbridge.hosts.install import install_ableton, install_resolve

    err = _console(stderr=True)
    if args.host == "ableton":
        written = install_ableton(Path(args.dest) if args.dest else None, engine_port=args.osc_port,
                                  duck_tag=args.duck_tag)
        for path in written:
            err.print(f"wrote {path}", markup=False)
        err.print("Restart Live, choose HushBridge as a Control Surface (Preferences > Link, Tempo & MIDI); tracks "
                  f"named with {args.duck_tag} are ducked under the voice that `hushbridge run --chain ...,duck` "
                  "hears, and Live's tempo and transport reach hushbridge.", markup=False)
        return EXIT_OK
    written = install_resolve(Path(args.dest) if args.dest else None, preset=args.preset,
                              out_dir=Path(args.out_dir) if args.out_dir else None, target=args.target,
                              isolate_preset=args.isolate_preset)
    for path in written:
        err.print(f"wrote {path}", markup=False)
    err.print("Restart DaVinci Resolve, then Workspace > Scripts > HushBridge Clean Audio cleans the selected "
              "audio clips (every clip on the enabled audio tracks where Resolve cannot say which are selected) "
              f"onto a new track, HushBridge Voice Isolation does the same with {args.isolate_preset} (our voice "
              "isolation model first: music and noise out), and HushBridge Loudness Report renders the mix and "
              "marks where it misses "
              f"{args.target:g} LUFS.", markup=False)
    return EXIT_OK


def _cmd_osc_layout(args: argparse.Namespace) -> int:
    from hushbridge.control.layout import render
    from hushbridge.engine import Engine

    from hushbridge.atomic import write_text_atomic

    from hushbridge.effects import Automix

    chain = _build_chain(args, first=Automix() if args.automix else None)
    if args.channels != 2 and not args.per_channel and not any(e.channel_params for e in chain):
        _error("--channels: the layout has channels of their own only with --per-channel (or --automix: "
               "a weight per microphone)")
        return EXIT_USAGE
    engine = Engine(chain, channels=args.channels, per_channel=args.per_channel)
    text = render(engine, args.format, args.host, args.port, args.feedback_port)
    if args.out and args.out != "-":
        out = Path(args.out)
        if out.is_dir():
            _error(f"--out {out}: is a folder; give a file name")
            return EXIT_USAGE
        if not out.parent.exists():
            _error(f"--out {out}: the folder {out.parent} does not exist")
            return EXIT_FAILED
        try:
            write_text_atomic(out, text)
        except OSError as e:
            _error(f"--out {out}: {e.strerror or e}")
            return EXIT_FAILED
        _console(stderr=True).print(f"wrote {args.out} ({args.format})", markup=False)
    else:
        sys.stdout.write(text)
    return EXIT_OK


# == parser ========================================================================================
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hushbridge",
        description="Speech cleanup and broadcast dynamics, live (JACK, PortAudio) or on files.",
        epilog="Start with `hushbridge demo`. Every command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"hushbridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("process", help="clean audio files offline (faster than real time)",
                       description="Render files through a preset or chain. The output keeps the input's rate, "
                                   "channels and sample format and lines up with the input sample for sample. "
                                   "OUT is written only when everything succeeded.")
    p.add_argument("files", nargs="+", metavar="FILE", help="IN OUT, or several inputs with --out-dir")
    p.add_argument("--out-dir", "-o", metavar="DIR", help="batch mode: write each input to DIR under its own name")
    _add_chain_args(p)
    p.add_argument("--rate", type=_rate_arg, metavar="HZ", help="output/processing sample rate (default: the input's)")
    p.add_argument("--subtype", metavar="NAME", help="output sample format, e.g. PCM_16, PCM_24, FLOAT (default: the input's)")
    p.add_argument("--block-size", type=_block_arg, default=4096, metavar="N", help="frames per processing block (default 4096)")
    p.add_argument("--loudness", "-l", type=_target, metavar="LUFS",
                   help="deliver at this integrated loudness: after the chain, one gain (and the true-peak "
                        "limiter where needed) as `hushbridge normalize` applies; a number, or podcast (-16), "
                        "streaming (-14), broadcast (-23)")
    p.add_argument("--true-peak", type=_ceiling_arg, default=-1.0, metavar="DBTP",
                   help="true-peak ceiling for --loudness, -24..0 dBTP (default -1)")
    p.add_argument("--layout", choices=["mono", "stereo", "5.0", "5.1", "7.1", "equal"],
                   help="the speakers the input's channels feed (WAV order: L R C LFE Ls Rs ...), where the file "
                        "does not say (a WAV without a channel mask): a named LFE stays out of the dynamics' "
                        "detectors, the meters weigh the layout, and a WAV output carries it; equal: separate microphones, every "
                        "channel heard and weighed 1.0 (the default for --loudness with --per-channel on such a file)")
    p.add_argument("--per-channel", action="store_true",
                   help="each channel through a chain of its own, as separate files would be: for separate "
                        "microphones in one file (a recorder's poly WAV, two speakers on left and right); by "
                        "default the dynamics are linked, so the louder speaker sets the gain of both")
    p.add_argument("--automix", action="store_true",
                   help="before the chain, share the gain across the channels as an automixer does (separate "
                        "microphones: each falls by as much as its bleed of whoever talks lies under that "
                        "talker); with --per-channel, a speaker's leveler then does not lift the others' bleed")
    p.add_argument("--pick", type=_pick_arg, metavar="CH[,CH...]",
                   help="clean only these input channels (from 1, in this order), e.g. --pick 2 for a poly WAV's "
                        "second microphone; the output has as many channels")
    p.add_argument("--keep-dc", action="store_true",
                   help="keep a DC offset in the input (by default one of -60 dBFS or more, measured over "
                        "the first 3 s, is removed before the chain: the filters would start with a thump)")
    p.add_argument("--quiet", "-q", action="store_true", help="print errors and warnings only")
    p.set_defaults(func=_cmd_process)

    p = sub.add_parser("demo", help="clean the bundled demo clip and show before/after measurements",
                       description="Processes a clip shipped with hushbridge (TTS speech in a simulated room with "
                                   "hum and fan noise) with the default preset. Needs no audio hardware.")
    p.add_argument("--out", default="hushbridge-demo.wav", metavar="PATH", help="where to write the result")
    p.add_argument("--preset", "-p", metavar="NAME", help="preset to use (default: dialogue)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="run live on JACK or PortAudio with OSC control",
                       description="Runs the chain live until Ctrl-C or SIGTERM. On JACK the client has ports "
                                   "in_1..N and out_1..N. OSC listens on 127.0.0.1:9000 unless told otherwise.")
    p.add_argument("--backend", "-b", choices=["jack", "portaudio"], default="jack")
    _add_chain_args(p)
    p.add_argument("--channels", type=_channels_arg, default=2, metavar="N", help="channels in and out (default 2)")
    p.add_argument("--layout", choices=["mono", "stereo", "5.0", "5.1", "7.1"],
                   help="the speakers the channels feed (WAV order: L R C LFE Ls Rs ...): a named LFE stays "
                        "out of the dynamics' detectors (default: not known, every channel heard)")
    p.add_argument("--per-channel", action="store_true",
                   help="each channel through a chain of its own (its own leveler, gate, compressor...), as if "
                        "alone: for separate microphones (two podcast mics); by default the dynamics are linked, "
                        "so the louder speaker sets the gain of both. Presets loaded live run per channel too")
    p.add_argument("--automix", action="store_true",
                   help="share the gain across the channels as an automixer does (separate microphones: each "
                        "falls by as much as its bleed of whoever talks lies under that talker): an automix "
                        "effect first in the chain (/hb/automix/...), kept when a preset is loaded live")
    p.add_argument("--duck", nargs="?", const=1, type=_ranged(int, 1, 63, "voice channels"), metavar="VOICES",
                   help="auto-ducking for a stream: the first VOICES channels (default 1) are microphones, the "
                        "channels after them a bed (music, game audio) that falls while a voice talks. The chain "
                        "cleans the voices only (each channel runs on its own; the bed skips the cleanup), a duck "
                        "effect last (/hb/duck/depth_db...), kept when a preset is loaded live")
    p.add_argument("--name", default="hushbridge", help="JACK client name (default hushbridge)")
    p.add_argument("--server", metavar="NAME", help="JACK server name (default: $JACK_DEFAULT_SERVER or default)")
    p.add_argument("--connect-inputs", nargs="+", metavar="PORT", help="JACK ports to connect to our inputs, e.g. system:capture_1")
    p.add_argument("--connect-outputs", nargs="+", metavar="PORT", help="JACK ports to connect our outputs to, e.g. system:playback_1")
    p.add_argument("--device", metavar="NAME|INDEX", help="PortAudio device (see `hushbridge devices`)")
    p.add_argument("--rate", type=_rate_arg, metavar="HZ", help="PortAudio sample rate (default: the device's; "
                   "on JACK the server's, and another is an error)")
    p.add_argument("--block-size", type=_block_arg, metavar="N", help="PortAudio block size (default 128; on JACK "
                   "the server's period, and another is an error)")
    p.add_argument("--osc-host", default="127.0.0.1", help="OSC address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--osc-port", type=_ranged(int, 0, 65535, "UDP port"), default=9000,
                   help="OSC UDP port (default 9000; 0: any free port, printed at start)")
    p.add_argument("--no-osc", action="store_true", help="do not start the OSC server")
    p.add_argument("--osc-receive", choices=["process", "thread"], default="process",
                   help="receive OSC in a process of its own, so that a flood of parameter changes never takes "
                        "the audio callback's interpreter lock (default), or on a thread of this process")
    p.add_argument("--midi-in", metavar="PORT",
                   help="MIDI control from this source port (see `hushbridge midi ports`; reconnects when it comes "
                        "back), or `virtual` for a port of our own; maps from the preset's [midi] table")
    p.add_argument("--midi-api", choices=["jack", "alsa", "coremidi", "winmm"],
                   help="MIDI API (default: jack with the JACK backend, else python-rtmidi's default)")
    p.add_argument("--record", metavar="FILE.wav|FOLDER",
                   help="record what hushbridge plays (the cleaned signal) to this WAV file, crash-safe (a "
                        "kill or power cut keeps all but the last moment); a folder: takes named by their start "
                        "time. Never overwrites: an existing name gets -2, -3... Starts at once unless "
                        "--record-paused; /hb/record/start and /stop over OSC")
    p.add_argument("--record-raw", action="store_true",
                   help="with --record: also what it hears, before the chain, as <name>-raw.wav, sample-aligned "
                        "with the cleaned file (a safety copy to clean again later)")
    p.add_argument("--record-format", choices=["PCM_24", "PCM_16", "FLOAT"], default="PCM_24",
                   help="recording sample format (default PCM_24; PCM_16 is dithered)")
    p.add_argument("--record-paused", action="store_true",
                   help="with --record: wait for /hb/record/start instead of starting at once")
    p.add_argument("--record-follow", action="store_true",
                   help="with --record: a take while the transport plays (Live through the HushBridge Remote "
                        "Script, or MIDI start/stop with --midi-in), each in a file of its own")
    p.add_argument("--status-every", type=int, default=10, metavar="S",
                   help="when stderr is not a terminal, print the status line every S seconds (0: never)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("midi", help="MIDI control: list input ports, learn a mapping",
                       description="MIDI maps live in a preset's [midi] table (see the README, MIDI section).")
    msub = p.add_subparsers(dest="midi_command", metavar="ACTION", required=True)
    for action, text in (("ports", "list MIDI sources an input can connect to"),
                         ("learn", "map the next MIDI control moved to ADDRESS and print (or save) the map")):
        mp = msub.add_parser(action, help=text, description=text)
        if action == "learn":
            mp.add_argument("address", metavar="ADDRESS", help="parameter address, e.g. /hb/compressor/threshold_db")
            mp.add_argument("--port", metavar="NAME", help="source port to listen to (default: a virtual port of our own)")
            mp.add_argument("--preset", "-p", metavar="NAME", help="preset whose chain and [midi] table to start from (default: dialogue)")
            mp.add_argument("--save", metavar="NAME", help="save the preset with the learned map as user preset NAME")
            mp.add_argument("--timeout", type=float, default=60.0, metavar="S", help="give up after S seconds (default 60; 0: never)")
        mp.add_argument("--api", choices=["jack", "alsa", "coremidi", "winmm", "default"], default="jack",
                        help="MIDI API (default jack)")
        mp.add_argument("--server", metavar="NAME", help="JACK server name (default: $JACK_DEFAULT_SERVER or default)")
        mp.set_defaults(func=_cmd_midi)

    p = sub.add_parser("devices", help="list audio backends, devices and JACK ports")
    p.set_defaults(func=_cmd_devices)

    p = sub.add_parser("presets", help="list built-in and user presets")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("loudness", help="measure loudness (BS.1770-4 / EBU R128) of audio files",
                       description="Integrated loudness, loudness range (EBU Tech 3342), maximum momentary and "
                                   "short-term loudness and true peak (8x oversampled) of each file, read in "
                                   "blocks. A file that cannot be read is reported and the rest go on (exit 1).")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print a JSON list (one object per file; -inf as null)")
    p.add_argument("--timeline", type=_ranged(float, 0.01, 60.0, "step"), metavar="S",
                   help="with --json: also the momentary and short-term loudness at the end of every S seconds "
                        "and the true peak within each (\"timeline\": lists), to find where a programme is too loud")
    p.add_argument("--layout", choices=["mono", "stereo", "5.0", "5.1", "7.1", "equal"],
                   help="weigh the channels as this layout (equal: every channel 1.0, e.g. separate microphones) "
                        "instead of as the file names them (a WAV's mask, FLAC/Ogg's order, else by the count: "
                        "6 channels are 5.1, the fourth an LFE)")
    p.set_defaults(func=_cmd_loudness)

    p = sub.add_parser("normalize", help="normalize a file to a loudness target under a true-peak ceiling",
                       description="Measures IN, applies the gain that brings its integrated loudness to the "
                                   "target and, where the gained signal would pass the true-peak ceiling, runs it "
                                   "through the look-ahead true-peak limiter. OUT keeps IN's rate, channels and "
                                   "sample format (dithered), is written only on success; before/after are printed. "
                                   "It raises by at most 60 dB.")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--target", "-t", type=_target, default=-16.0, metavar="LUFS",
                   help="integrated loudness to reach: a number, or podcast (-16), streaming (-14), "
                        "broadcast (-23); default -16")
    p.add_argument("--true-peak", type=_ceiling_arg, default=-1.0, metavar="DBTP",
                   help="true-peak ceiling in dBTP, -24..0 (default -1)")
    p.add_argument("--release-ms", type=_release_arg, default=80.0, metavar="MS",
                   help="limiter release, 1..1000 ms (default 80 ms)")
    p.add_argument("--subtype", metavar="NAME",
                   help="output sample format (default: the input's, where OUT's format can store it)")
    p.add_argument("--layout", choices=["equal"],
                   help="equal: the channels are separate sources (microphones), every one weighs 1.0, where "
                        "BS.1770 tools take 6 or 8 channels naming no speakers as 5.1 or 7.1")
    p.set_defaults(func=_cmd_normalize)
    p = sub.add_parser("latency", help="measure the round trip from JACK ports and back (a host's \"Hardware "
                                       "Latency\")",
                       description="Plays a sweep into --send and records --return with two JACK clients of its "
                                   "own, and prints the delay (samples and ms): what Ableton Live's External Audio "
                                   "Effect asks as Hardware Latency for a route through hushbridge or an interface "
                                   "wired back to itself.")
    p.add_argument("--send", nargs="+", required=True, metavar="PORT",
                   help="JACK ports to play the sweep into, e.g. hushbridge:in_1 or system:playback_1")
    p.add_argument("--return", dest="ret", required=True, metavar="PORT",
                   help="the JACK port it comes back on, e.g. hushbridge:out_1 or system:capture_1")
    p.add_argument("--server", metavar="NAME", help="JACK server name (default: $JACK_DEFAULT_SERVER or default)")
    p.add_argument("--repeats", type=_ranged(int, 1, 20, "repeats"), default=3, help="sweeps to send (default 3)")
    p.add_argument("--max-latency", type=_ranged(float, 0.05, 10.0, "seconds"), default=1.0, metavar="S",
                   help="the longest round trip looked for, seconds (default 1; a longer one is an error, not a "
                        "wrong number)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_latency)

    p = sub.add_parser("install-host-scripts", help="install the editor scripts (DaVinci Resolve, Ableton Live)",
                       description="resolve: writes the HushBridge menu script into Resolve's per-user "
                                   "Fusion/Scripts/Utility folder (or DEST/Utility), with a config naming this "
                                   "hushbridge, the preset and where cleaned files go. ableton: copies the HushBridge "
                                   "Remote Script into Live's User Library/Remote Scripts (or DEST) with a config "
                                   "naming the OSC port and the track tag to duck. Run it again to change them.")
    p.add_argument("host", choices=["resolve", "ableton"],
                   help="resolve: the Workspace > Scripts menu script; ableton: the HushBridge Remote Script")
    p.add_argument("--dest", metavar="DIR", help="the folder to install into (default: Resolve's per-user "
                                                  "Fusion/Scripts, or Live's User Library/Remote Scripts)")
    p.add_argument("--osc-port", type=_port_arg, default=9000, help="ableton: the port `hushbridge run` listens "
                                                                     "on (default 9000)")
    p.add_argument("--duck-tag", default="[duck]", help="ableton: Live tracks whose name holds this are ducked "
                                                         "(default [duck])")
    p.add_argument("--preset", "-p", default="dialogue", metavar="NAME", help="preset the script cleans with "
                                                                              "(default dialogue)")
    p.add_argument("--isolate-preset", default="dialogue-isolate", metavar="NAME",
                   help="resolve: preset the Voice Isolation script cleans with (default dialogue-isolate)")
    p.add_argument("--out-dir", metavar="DIR", help="where cleaned files go (default: hushbridge's user data "
                                                     "folder, resolve/)")
    p.add_argument("--target", "-t", type=_target, default=-16.0, metavar="LUFS",
                   help="resolve: the loudness report's integrated target: a number, or podcast (-16), streaming "
                        "(-14), broadcast (-23); default -16")
    p.set_defaults(func=_cmd_install_host_scripts)

    p = sub.add_parser("osc-layout", help="generate an OSC control surface (Open Stage Control, TouchOSC list)",
                       description="Writes an Open Stage Control session (one fader per parameter, toggles for "
                                   "bypass, feedback through /hb/register) or a CSV address list for TouchOSC and "
                                   "other editors, from the parameters of a preset or chain (what /hb/list sends).")
    p.add_argument("--format", "-f", choices=["open-stage-control", "touchosc-list"], default="open-stage-control")
    p.add_argument("--out", "-o", metavar="FILE", help="write here instead of standard output (- is standard output)")
    _add_chain_args(p)
    p.add_argument("--host", default="127.0.0.1", help="where hushbridge listens (default 127.0.0.1)")
    p.add_argument("--port", type=_port_arg, default=9000, help="hushbridge's OSC port (default 9000)")
    p.add_argument("--feedback-port", type=_port_arg, metavar="PORT",
                   help="the port Open Stage Control receives on, if not the one it sends from")
    p.add_argument("--per-channel", action="store_true",
                   help="for `run --per-channel`: a panel per channel too, with each channel's own settings "
                        "(/hb/<id>@<n>/<param>)")
    p.add_argument("--channels", type=_channels_arg, default=2, metavar="N",
                   help="with --per-channel: the channels `run` has (default 2)")
    p.add_argument("--automix", action="store_true", help="as `run --automix`: the automixer first in the chain")
    p.set_defaults(func=_cmd_osc_layout)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    # run stops cleanly on its own; elsewhere SIGTERM (and SIGHUP: a closed terminal, a dropped ssh)
    # unwinds like Ctrl-C, so no temporary file is left behind (a decoded input's copy is hundreds
    # of MB); only the main thread may set handlers: main() also runs inside other programs
    previous: dict = {}
    _signalled.clear()  # main() may run again in one process (tests, embedding programs)
    if args.command != "run" and threading.current_thread() is threading.main_thread():
        for sig in _ENDING_SIGNALS:
            previous[sig] = signal.signal(sig, _raise_interrupt)
    try:
        return args.func(args)
    except (HushbridgeError, OSError) as e:
        if _signalled:  # the signal, turned into another error on its way (inside onnxruntime's import)
            remove_leftovers()
            return 128 + _signalled[0]
        if isinstance(e, HushbridgeError):
            _error(e)
            return EXIT_FAILED if not isinstance(e, ValueError) else EXIT_USAGE
        where = f"{e.filename}: " if e.filename else ""  # a folder not writable, a full disk: one line
        _error(f"{where}{e.strerror or e}")
        return EXIT_FAILED
    except _Terminated as e:
        remove_leftovers()  # a temporary file made where no caller's cleanup could see it
        return 128 + e.signum  # as a shell reports a process that the signal ended
    except KeyboardInterrupt:
        remove_leftovers()
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def console_main() -> None:
    """The ``hushbridge`` command (and ``python -m hushbridge``): :func:`main`, then exit. After a
    SIGTERM, once the unwinding has removed the temporary files, the process leaves without the
    interpreter's teardown: a native library stopped mid-call (onnxruntime, numba's compiler) made
    that teardown crash now and then (exit status -11 instead of 143)."""
    code = main()
    if code in {128 + s for s in _ENDING_SIGNALS}:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


_ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, unwinding like Ctrl-C (temporary files removed on the way)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = int(signum)


_signalled: list[int] = []  # SIGTERM/SIGHUP that came (see _still_running)


def _raise_interrupt(signum, frame):  # noqa: ARG001
    _signalled.append(signum)
    raise _Terminated(signum)


def _still_running() -> None:
    """Raise again a SIGTERM/SIGHUP whose exception was lost: a handler that runs inside a
    finalizer (``__del__``, a weakref callback, during a garbage collection) has its exception
    printed and dropped by CPython, and the render went on to the end (seen once in CI: exit 0)."""
    if _signalled:
        raise _Terminated(_signalled[0])


if __name__ == "__main__":
    sys.exit(main())
