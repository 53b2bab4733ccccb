"""Presets: TOML files that describe a chain (and, later, its MIDI map).

Schema (version 1)::

    version = 1
    name = "dialogue"
    [[chain]]
    effect = "highpass"          # effect name (see hushbridge.effects.EFFECTS)
    id = "highpass"              # optional instance id (default: name, name_2, ...)
    bypass = false               # optional
    params = { cutoff_hz = 80.0 }
    [[chain]]
    effect = "plugin"            # a pedalboard plugin (hushbridge.effects.plugin) named by
    plugin = "Reverb"            #   plugin = "<pedalboard built-in class>" or
    # path = "/x.vst3"           #   path = "<VST3/AU file>" (plugin_name = "..." picks one in a bundle)
    params = { room_size = 0.3 } # its parameters as the plugin effect declares them
    [[chain]]
    effect = "gate"
    params = { threshold_db = -45.0 }
    channels = { 2 = { threshold_db = -55.0 } }  # optional: a channel's own values, used when
                                 #   the chain runs per channel (run/process --per-channel)
    [midi]                       # optional: CC and note maps, kept as-is

Lookup order for a name: a path to a ``.toml`` file, the user preset folder
(:func:`user_preset_dir`, e.g. ``~/.config/hushbridge/presets`` on Linux), then the built-in
presets shipped in this package (``dialogue`` is the default). Errors name the file, the line
and the key.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

import tomli_w

from hushbridge.atomic import write_text_atomic
from hushbridge.effects import EFFECTS, Chain, create_effect
from hushbridge.errors import ChainError, ParamError, PresetError

DEFAULT_PRESET = "dialogue"
_PLUGIN_KEYS = {"plugin", "path", "plugin_name"}  # extra keys of effect = "plugin"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-. ]{0,79}$")  # short enough for any file system


@dataclass
class Preset:
    """A parsed preset: the chain description, its MIDI table and where it came from."""

    name: str
    chain: list[dict[str, Any]]
    midi: dict[str, Any] = field(default_factory=dict)
    source: str = "<string>"
    # the chain parse_preset built to validate, handed out by the first build() while the
    # description is unchanged: a load builds once, not twice (a denoise model costs ~0.1 s)
    _spare: tuple[str, Chain] | None = field(default=None, repr=False, compare=False)

    def build(self) -> Chain:
        """A new Chain for this preset (raises PresetError naming file, line and key)."""
        spare, self._spare = self._spare, None
        if spare is not None and spare[0] == repr(self.chain):
            return spare[1]
        return _build(self)


def user_preset_dir() -> Path:
    """Folder for user presets (created on demand)."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("hushbridge", appauthor=False)) / "presets"


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def list_presets() -> dict[str, str]:
    """Name -> source (``built-in`` or the user file path); user presets shadow built-ins."""
    found = {n: "built-in" for n in builtin_names()}
    d = user_preset_dir()
    if d.is_dir():
        for p in sorted(d.glob("*.toml")):
            found[p.stem] = str(p)
    return found


def _line_of(text: str, index: int, key: str | None) -> int:
    """Line (1-based) of ``key`` inside the ``index``-th [[chain]] table, or of its header."""
    # comments dropped (a key named in a comment is not the key), "[[ chain ]]" is a header too
    lines = [re.sub(r"#[^\"']*$", "", line) for line in text.splitlines()]
    headers = [i for i, line in enumerate(lines) if re.match(r"\s*\[\[\s*chain\s*\]\]", line)]
    if not headers:
        return _line_in_inline_chain(lines, index, key)
    if index >= len(headers):
        return 1
    start = headers[index]
    end = headers[index + 1] if index + 1 < len(headers) else len(lines)
    if key:
        pat = re.compile(rf"(^|[\s{{,]){re.escape(key)}\s*=")
        for i in range(start, end):
            if pat.search(lines[i]):
                return i + 1
    return start + 1


def parse_preset(text: str, source: str = "<string>") -> Preset:
    """Parse TOML text into a :class:`Preset`, checking schema, effects and parameters."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"{source}: invalid TOML: {e}") from e
    version = data.get("version", 1)
    if version != 1:
        raise PresetError(f"{source}: line {_find_top(text, 'version')}: key 'version': unsupported version {version!r} (expected 1)")
    chain = data.get("chain")
    if not isinstance(chain, list) or not chain:
        raise PresetError(f"{source}: key 'chain': needs at least one [[chain]] table")
    unknown_top = set(data) - {"version", "name", "chain", "midi", "description"}
    if unknown_top:
        key = sorted(unknown_top)[0]
        raise PresetError(f"{source}: line {_find_top(text, key)}: key {key!r}: unknown top-level key")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str):
        raise PresetError(f"{source}: line {_find_top(text, 'name')}: key 'name': must be a string, got {name!r}")
    midi = data.get("midi", {})
    if not isinstance(midi, dict):
        raise PresetError(f"{source}: line {_find_top(text, 'midi')}: key 'midi': must be a table ([midi] or "
                          f"[[midi.cc]] entries), got {midi!r:.60}")
    preset = Preset(name, chain, midi, source)
    built = preset.build()  # validates effects, ids and parameter values
    _check_midi(preset, built, text)
    preset._spare = (repr(chain), built)
    return preset


def _check_midi(preset: Preset, chain: Chain, text: str) -> None:
    """The [midi] table parses and every map targets a parameter (or bypass) of the chain."""
    if not preset.midi:
        return
    from hushbridge.control.midi import MidiMapError, parse_midi_table

    line = next((i + 1 for i, t in enumerate(text.splitlines())
                 if re.match(r"\s*(\[\[?midi\b|midi\s*=)", t)), 1)
    where = f"{preset.source}: line {line}: "
    try:
        maps, program, _ = parse_midi_table(preset.midi)
    except MidiMapError as e:
        raise PresetError(where + str(e)) from e
    except (TypeError, ValueError, AttributeError) as e:  # a shape the parser does not expect
        raise PresetError(where + f"malformed [midi] table ({e})") from e
    targets = {f"/hb/{eid}/{p.id}" for eid, effect in chain.items() for p in effect.params}
    targets |= {f"/hb/{eid}/bypass" for eid in chain.ids}
    def per_channel(effect: Any, pid: str) -> bool:  # may a channel have a value of its own?
        if effect.channel_coupling == "joint":
            return pid in effect.channel_params
        return pid == "bypass" or (pid in effect._index and pid not in effect.shared_params)

    effects = dict(chain.items())
    for m in maps:
        own = re.fullmatch(r"/hb/([^/@]+)@([1-9][0-9]{0,3})/([^/]+)", m.address)
        if own and own.group(1) in effects and per_channel(effects[own.group(1)], own.group(3)):
            continue  # a channel's own value (per-channel runs; a channel the stream lacks is refused there)
        if m.address not in targets:
            raise PresetError(where + f"midi {m.kind} {m.number}: address {m.address!r} is not a parameter of "
                              f"this chain (e.g. {sorted(targets)[0]})")
    for number, name in sorted(program.items()):
        if not preset_exists(name):
            raise PresetError(where + f"midi program {number}: unknown preset {name!r} "
                              f"(available: {', '.join(sorted(list_presets()))})")


def preset_exists(name: str) -> bool:
    """Whether :func:`find_preset` would find ``name`` (without reading it)."""
    if not isinstance(name, str) or not name.strip():
        return False
    if name.endswith(".toml") or os.sep in name:
        return Path(name).expanduser().is_file()
    return (user_preset_dir() / f"{name}.toml").is_file() or resources.files(__name__).joinpath(f"{name}.toml").is_file()


def read_preset_text(path: Path) -> str:
    """A preset file's text: UTF-8 (a byte-order mark is fine), else a PresetError naming it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise PresetError(f"{path}: not UTF-8 text (byte {e.start}); save the preset as UTF-8") from e
    except OSError as e:
        raise PresetError(f"{path}: cannot read ({e.strerror or e})") from e


def _preset_value(param: Any, value: Any) -> float:
    """A [[chain]] params value as the parameter's number: numbers; for switches and modes also
    their names (``detector = "rms"``, ``slope = 24`` for "24 dB/oct", ``soft_repair = true``)."""
    choices = tuple(getattr(param, "choices", ()) or ())
    if isinstance(value, bool):
        if choices == ("off", "on"):
            return 1.0 if value else 0.0
        raise ParamError(f"must be a number, got {str(value).lower()}")
    if not isinstance(value, (int, float, str)):
        raise ParamError(f"must be a number, got {value!r:.60}")
    if choices:
        if isinstance(value, float) and param.choice_index(str(value)) is not None:
            # a name that TOML reads as a float (``layout = 5.0``) is the name, not index 5
            return float(param.choice_index(str(value)))
        if not isinstance(value, str) and float(value).is_integer() and 0 <= value < len(choices):
            return float(value)  # the choice's index
        index = param.choice_index(value if isinstance(value, str) else f"{value:g}")
        if index is not None:
            return float(index)
        raise ParamError(f"must be one of {', '.join(repr(c) for c in choices)} (or 0..{len(choices) - 1}), "
                         f"got {value!r}")
    if isinstance(value, str):
        raise ParamError(f"must be a number, got {value!r:.60}")
    return float(value)


def _find_top(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines()):
        if re.match(rf"\s*{re.escape(key)}\s*=", line) or line.strip() == f"[{key}]":
            return i + 1
    return 1


def _line_in_inline_chain(lines: list[str], index: int, key: str | None) -> int:
    """Line of ``key`` in the ``index``-th table of an inline ``chain = [{...}, {...}]`` array (the
    array may span lines), else of the table's ``{``, else of ``chain =``, else 1."""
    start = next((i for i, line in enumerate(lines) if re.match(r"\s*chain\s*=", line)), None)
    if start is None:
        return 1
    depth, count, quote, found = 0, -1, "", None  # depth of {...} inside the array
    pat = re.compile(rf"(^|[\s{{,]){re.escape(key)}\s*=") if key else None
    for i in range(start, len(lines)):
        line = lines[i][lines[i].index("=") + 1:] if i == start else lines[i]
        for ch in line:
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "\"'":
                quote = ch
            elif ch == "{":
                depth += 1
                if depth == 1:
                    count += 1
                    if count == index:
                        found = i
            elif ch == "}":
                depth -= 1
                if depth == 0 and count == index:
                    # the table ends on this line: the key is here, or not in its text at all
                    return i + 1 if pat is not None and pat.search(line) else found + 1
        if found is not None and pat is not None and pat.search(line):
            return i + 1
    return (found if found is not None else start) + 1


def _build(preset: Preset) -> Chain:
    text = ""
    if preset.source not in ("<string>",) and Path(preset.source).is_file():
        text = read_preset_text(Path(preset.source))
    elif preset.source.startswith("built-in:"):
        text = resources.files(__name__).joinpath(preset.source[9:]).read_text(encoding="utf-8")

    def fail(i: int, key: str | None, why: str) -> PresetError:
        line = _line_of(text, i, key) if text else 0
        where = f"line {line}: " if line else ""
        return PresetError(f"{preset.source}: {where}[[chain]] #{i + 1}, key {key!r}: {why}")

    chain = Chain()
    for i, entry in enumerate(preset.chain):
        if not isinstance(entry, dict):
            raise fail(i, None, "each [[chain]] entry must be a table")
        name = entry.get("effect")
        cls = EFFECTS.get(name)
        options = _PLUGIN_KEYS if name == "plugin" else {"link"} if cls is not None and hasattr(cls, "set_link") else set()
        allowed = {"effect", "id", "bypass", "params", "channels"} | options
        extra = set(entry) - allowed
        if extra:
            raise fail(i, sorted(extra)[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")
        if name not in EFFECTS:
            raise fail(i, "effect", f"unknown effect {name!r} (available: {', '.join(sorted(EFFECTS))})")
        params = entry.get("params", {})
        if not isinstance(params, dict):
            raise fail(i, "params", "must be a table such as { cutoff_hz = 80.0 }")
        if name == "plugin":
            from hushbridge.effects.plugin import PluginEffect

            for key in sorted(_PLUGIN_KEYS & set(entry)):
                if not isinstance(entry[key], str):
                    raise fail(i, key, f"must be a string, got {entry[key]!r:.60}")
            if "plugin_name" in entry and "path" not in entry:
                raise fail(i, "plugin_name", "picks a plugin in a plugin file: it needs path = \"<file>\"")
            try:
                effect = PluginEffect.from_preset(**{k: str(entry[k]) for k in _PLUGIN_KEYS if k in entry})
            except ChainError as e:
                raise fail(i, "path" if "path" in entry else "plugin", str(e)) from e
        else:
            effect = create_effect(name)
            if "link" in entry:  # a model effect's channels: linked or each on its own
                try:
                    effect.set_link(entry["link"])
                except ValueError as e:
                    raise fail(i, "link", str(e)) from e
        for key, value in params.items():
            try:
                effect.set(key, _preset_value(effect.param(key), value))
            except ParamError as e:
                raise fail(i, key, str(e)) from e
        eid = entry.get("id")
        if eid is not None and not isinstance(eid, str):
            raise fail(i, "id", f"must be a string such as \"voice\", got {eid!r}")
        try:
            chain.append(effect, id=eid)
        except ChainError as e:
            raise fail(i, "id", str(e)) from e
        bypass = entry.get("bypass", False)
        if not isinstance(bypass, bool):
            raise fail(i, "bypass", f"must be true or false, got {bypass!r}")
        if bypass:
            chain.set_bypass(len(chain) - 1, True)
        channels = entry.get("channels", {})
        if not isinstance(channels, dict) or not all(isinstance(v, dict) for v in channels.values()):
            raise fail(i, "channels", "must be a table of channels such as { 2 = { threshold_db = -55.0 } }")
        for number, values in channels.items():
            if not re.fullmatch(r"[1-9][0-9]{0,3}", number):
                raise fail(i, "channels", f"channels are numbered from 1, got {number!r}")
            for key, value in values.items():
                try:
                    if key == "bypass":  # bypassed on that channel alone
                        if not isinstance(value, bool):
                            raise ParamError(f"bypass must be true or false, got {value!r}")
                        chain.set_channel_bypass(len(chain) - 1, int(number), value)
                        continue
                    chain.set_channel(len(chain) - 1, int(number), key, _preset_value(effect.param(key), value))
                except (ParamError, ChainError) as e:
                    raise fail(i, key, str(e)) from e
    return chain


def find_preset(name: str) -> Preset:
    """Locate and parse a preset by name or path."""
    if not isinstance(name, str) or not name.strip():
        raise PresetError(f"preset name must be a non-empty string, got {name!r}")
    path = Path(name).expanduser()
    if name.endswith(".toml") or os.sep in name:
        if not path.is_file():
            raise PresetError(f"{path}: preset file not found")
        return parse_preset(read_preset_text(path), str(path))
    user = user_preset_dir() / f"{name}.toml"
    if user.is_file():
        return parse_preset(read_preset_text(user), str(user))
    res = resources.files(__name__).joinpath(f"{name}.toml")
    if res.is_file():
        return parse_preset(res.read_text(encoding="utf-8"), f"built-in:{name}.toml")
    raise PresetError(f"unknown preset {name!r} (available: {', '.join(sorted(list_presets()))})")


def load_preset(name: str = DEFAULT_PRESET) -> Chain:
    """A new Chain built from the preset ``name`` (a built-in, a user preset or a .toml path)."""
    return find_preset(name).build()


def _saved_value(param: Any, value: float) -> Any:
    """A parameter's value as a preset keeps it: a switch as true/false and a mode by its name
    (``detector = "rms"``, not ``1.0``), so that a saved preset reads as it would be written by
    hand; numbers as they are."""
    choices = tuple(getattr(param, "choices", ()) or ())
    if not choices:
        return value
    index = int(round(float(value) - param.min))
    if not (0 <= index < len(choices) and float(value) - param.min == index):
        return value
    if choices == ("off", "on"):
        return bool(index)
    return choices[index]


def chain_to_preset(chain: Chain, name: str, midi: dict[str, Any] | None = None) -> dict[str, Any]:
    """The TOML-ready dict describing ``chain``."""
    entries = []
    for i, (eid, effect) in enumerate(chain.items()):
        entry: dict[str, Any] = {"effect": effect.name, "id": eid}
        preset_keys = getattr(effect, "preset_keys", None)
        if preset_keys is not None:
            entry.update(preset_keys())
        if chain.is_bypassed(i):
            entry["bypass"] = True
        cls = EFFECTS.get(effect.name)
        buttons = {p.id for p in cls.params if p.momentary} if cls is not None else set()
        params = {p.id: p for p in getattr(effect, "params", ())}
        entry["params"] = {k: _saved_value(params.get(k), v) for k, v in effect.values().items()
                           if k not in buttons}  # a press is not a setting
        own = chain.channel_values(i) if hasattr(chain, "channel_values") else {}
        own = {str(c): {k: (True if k == "bypass" else _saved_value(params.get(k), v)) for k, v in values.items()
                        if k not in buttons}
               for c, values in own.items()}
        if any(own.values()):
            entry["channels"] = {c: values for c, values in own.items() if values}
        entries.append(entry)
    doc: dict[str, Any] = {"version": 1, "name": name, "chain": entries}
    if midi:
        doc["midi"] = midi
    return doc


def valid_preset_name(name: str) -> bool:
    """A name (not a path) that a preset file may have: up to 80 ASCII letters, digits, '-', '_',
    '.', spaces, starting with a letter or digit."""
    return preset_name_problem(name) is None


def preset_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a preset's name, in words (None: nothing)."""
    shown = f"{name!r:.100}"
    if name.endswith(".toml") and _NAME_RE.match(name[:-5]):
        return f"preset name {shown}: give it without .toml ({name[:-5]!r:.100})"
    if _NAME_RE.match(name):
        return None
    rule = "up to 80 ASCII letters, digits, '-', '_', '.' and spaces, starting with a letter or digit"
    if not name:
        return f"preset name is empty: use {rule}"
    if len(name) > 80:
        return f"preset name {shown} has {len(name)} characters: use {rule}"
    bad = next((ch for ch in name if not (ch.isascii() and (ch.isalnum() or ch in "-_. "))), None)
    if bad is not None:
        what = "a path separator" if bad in "/\\" else f"{bad!r}"
        return f"preset name {shown} has {what}: use {rule}"
    return f"preset name {shown} starts with {name[0]!r}: use {rule}"


def save_note(name: str, folder: str | os.PathLike[str] | None = None) -> str | None:
    """What saving preset ``name`` will do besides writing it (None: nothing to say): replace a
    preset of that name, or shadow the built-in of that name."""
    target = (Path(folder) if folder is not None else user_preset_dir()) / f"{name}.toml"
    if name in builtin_names():
        return (f"shadows the built-in preset {name!r}; remove {target} to get the built-in back"
                if not target.exists() else f"replaced {target}, which shadows the built-in {name!r}")
    if target.exists():
        return f"replaced the earlier {name!r} ({target})"
    return None


def save_preset(chain: Chain, name: str, folder: str | os.PathLike[str] | None = None,
                midi: dict[str, Any] | None = None) -> Path:
    """Write ``chain`` as preset ``name`` (user folder by default), atomically (temp + rename)."""
    problem = preset_name_problem(name)
    if problem is not None:
        raise PresetError(problem)
    if not len(list(chain.items())):
        raise PresetError(f"preset {name!r}: the chain is empty; a preset needs at least one effect")
    folder = Path(folder) if folder is not None else user_preset_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.toml"
    text = tomli_w.dumps(chain_to_preset(chain, name, midi))
    return write_text_atomic(target, text)


__all__ = [
    "DEFAULT_PRESET",
    "Preset",
    "builtin_names",
    "chain_to_preset",
    "find_preset",
    "list_presets",
    "load_preset",
    "parse_preset",
    "preset_name_problem",
    "save_note",
    "save_preset",
    "user_preset_dir",
]
