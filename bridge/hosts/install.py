"""``hushbridge install-host-scripts {resolve,ableton}``: put the editor scripts where the editors look.

Ableton Live: the ``HushBridge`` Remote Script package goes into the User Library's ``Remote
Scripts`` folder with a ``config.json`` (the engine's OSC port, the track tag to duck); Live
lists it as a Control Surface after a restart.

DaVinci Resolve lists the ``.py`` files of ``<Scripts>/Utility`` under Workspace > Scripts on every page
(it scans at start-up: restart it after installing). The menu script is a few lines that load
:mod:`hushbridge.host_scripts.resolve.hushbridge_resolve` from this installation and a JSON
config beside it naming the command that runs hushbridge (this interpreter), the preset and the
folder the cleaned files go to; Resolve's own Python then needs nothing of ours installed.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import platformdirs

from hushbridge.atomic import write_text_atomic
from hushbridge.errors import HushbridgeError

SCRIPT_NAME = "HushBridge Clean Audio.py"
LOUDNESS_SCRIPT_NAME = "HushBridge Loudness Report.py"
ISOLATE_SCRIPT_NAME = "HushBridge Voice Isolation.py"
CONFIG_NAME = "hushbridge_resolve.json"

_ENTRY = '''# HushBridge: {what} (written by `hushbridge install-host-scripts resolve`;
# run that again to update it). Settings: {config}
import sys
sys.path.insert(0, {lib!r})
import hushbridge_resolve
hushbridge_resolve.{main}(globals(), {config!r})
'''


def resolve_scripts_folder(platform: str | None = None, home: Path | None = None, env: dict | None = None) -> Path:
    """The per-user ``Fusion/Scripts`` folder of DaVinci Resolve on this OS (Resolve's README)."""
    platform = platform or sys.platform
    home = home or Path.home()
    env = os.environ if env is None else env
    if platform.startswith("win"):
        appdata = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        return Path(appdata) / "Blackmagic Design" / "DaVinci Resolve" / "Support" / "Fusion" / "Scripts"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "Blackmagic Design" / "DaVinci Resolve" / "Fusion" / "Scripts"
    return home / ".local" / "share" / "DaVinciResolve" / "Fusion" / "Scripts"


def install_resolve(dest: Path | None = None, *, preset: str = "dialogue", out_dir: Path | None = None,
                    command: list[str] | None = None, target: float = -16.0,
                    isolate_preset: str = "dialogue-isolate") -> list[Path]:
    """Write the menu scripts (Clean Audio, Voice Isolation, Loudness Report) into ``dest`` (default:
    :func:`resolve_scripts_folder`) ``/Utility`` and their config beside them; returns the files
    written. ``preset``: Clean Audio's; ``isolate_preset``: Voice Isolation's (Clean Audio with
    that preset); ``target``: the loudness report's integrated target, LUFS."""
    from hushbridge.host_scripts import resolve as package
    from hushbridge.presets import load_preset, user_preset_dir

    for p in (preset, isolate_preset):
        load_preset(p)  # a preset that does not load is refused here, not in Resolve
    # the menu script runs in Resolve's folder, not this one
    preset, isolate_preset = (str(Path(p).expanduser().resolve()) if p.lower().endswith(".toml") else p
                              for p in (preset, isolate_preset))
    root = (Path(dest) if dest is not None else resolve_scripts_folder()).expanduser().resolve()
    folder = root / "Utility"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HushbridgeError(f"{folder}: cannot create the scripts folder: {e.strerror or e}") from e
    out_dir = Path(out_dir) if out_dir is not None else Path(platformdirs.user_data_dir("hushbridge")) / "resolve"
    import hushbridge.presets as presets

    config = {"hushbridge": command or [sys.executable, "-m", "hushbridge"], "preset": preset,
              "isolate_preset": isolate_preset,
              "out_dir": str(out_dir.expanduser().resolve()), "reuse": True,
              # where a preset's file is looked for (user presets first, as `--preset` does): its
              # size and time are part of what a render depends on
              "preset_dirs": [str(user_preset_dir()), str(Path(presets.__file__).resolve().parent)],
              # the loudness report: integrated target, how far over it the short-term loudness may
              # go before a marker says so, the true-peak ceiling
              "loudness_target": float(target), "loud_lu": 3.0, "true_peak_ceiling": -1.0}
    config_path = folder / CONFIG_NAME
    lib = str(Path(package.__file__).resolve().parent)
    write_text_atomic(config_path, json.dumps(config, indent=2) + "\n")
    written = []
    for name, what, main in ((SCRIPT_NAME, "clean the timeline's audio with hushbridge", "main"),
                             (ISOLATE_SCRIPT_NAME, "the voice alone: clean the timeline's audio with voice isolation",
                              "main_isolate"),
                             (LOUDNESS_SCRIPT_NAME, "mark where the timeline's mix misses its loudness target",
                              "main_loudness")):
        written.append(write_text_atomic(folder / name, _ENTRY.format(what=what, lib=lib, config=str(config_path),
                                                                      main=main)))
    return [*written, config_path]


def ableton_scripts_folder(platform: str | None = None, home: Path | None = None) -> Path | None:
    """Live's per-user ``User Library/Remote Scripts`` folder (Live 10.1.13+), or None where Live
    does not run (Linux: give --dest)."""
    platform = platform or sys.platform
    home = home or Path.home()
    if platform.startswith("win"):
        return home / "Documents" / "Ableton" / "User Library" / "Remote Scripts"
    if platform == "darwin":
        return home / "Music" / "Ableton" / "User Library" / "Remote Scripts"
    return None


def install_ableton(dest: Path | None = None, *, engine_port: int = 9000, duck_tag: str = "[duck]") -> list[Path]:
    """Copy the HushBridge Remote Script into ``dest`` (default :func:`ableton_scripts_folder`)
    ``/HushBridge`` with its ``config.json``; returns the files written."""
    from hushbridge.host_scripts import ableton as package

    if not duck_tag.strip():
        raise HushbridgeError("--duck-tag must not be empty: every track would be ducked, the voice's too")
    root = Path(dest) if dest is not None else ableton_scripts_folder()
    if root is None:
        raise HushbridgeError("Ableton Live has no Linux version: give --dest (the User Library's Remote Scripts "
                              "folder, e.g. on the machine or in the Wine prefix that runs Live)")
    folder = root.expanduser().resolve() / "HushBridge"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HushbridgeError(f"{folder}: cannot create the script folder: {e.strerror or e}") from e
    source = Path(package.__file__).resolve().parent / "HushBridge"
    written = []
    for module in sorted(source.glob("*.py")):
        written.append(write_text_atomic(folder / module.name, module.read_text(encoding="utf-8")))
    config = {"engine_host": "127.0.0.1", "engine_port": int(engine_port), "duck_tag": duck_tag,
              "duck_meter": "/hb/meter/gain_reduction/duck", "meter_rate_hz": 20}
    written.append(write_text_atomic(folder / "config.json", json.dumps(config, indent=2) + "\n"))
    return written
