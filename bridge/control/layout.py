"""Control-surface templates generated from the engine's parameters (the data ``/hb/list`` sends).

:func:`open_stage_control` gives an Open Stage Control session (JSON, v1 format): one panel per
effect, one fader per numeric parameter (address ``/hb/<id>/<param>``, the parameter's range and
default, logarithmic where the parameter's scale is, stepped where it takes steps, its html
showing its name, value and unit: Open Stage Control 1.x faders and panels have no label), a
drop-down for parameters with named choices (showing the one selected), a toggle button for
each bypass and a push button for each button (loudness's reset). The root registers for feedback when the
session opens (``/hb/register``), so the widgets follow changes from MIDI, presets and other
clients. :func:`touchosc_list` gives a plain CSV address list for TouchOSC and other editors.

    hushbridge osc-layout --out hushbridge.json                # Open Stage Control, dialogue preset
    hushbridge osc-layout --format touchosc-list --preset podcast
"""
from __future__ import annotations

import csv
import html
import io
import json
from typing import Any

OSC_VERSION = "1.26.2"  # the Open Stage Control version whose session format this follows


def _rows(engine: Any) -> list[tuple[Any, float]]:
    return engine.parameters()


def _decimals(p: Any) -> int:
    """Decimals for a fader: by its span, and enough that its ends are what it sends (Open Stage
    Control rounds what a fader sends to them: a minimum of 0.05 at one decimal sent 0.1)."""
    if p.step is not None and float(p.step).is_integer():
        return 0
    span = p.max - p.min
    dec = 0 if span >= 1000 else 1 if span >= 10 else 2 if span >= 1 else 3
    while dec < 6 and (round(p.min, dec) != p.min or round(p.max, dec) != p.max):
        dec += 1
    return dec


def _steps(p: Any) -> int | list[float] | str:
    """Open Stage Control's ``steps`` for a parameter with a ``step``: the number of evenly spaced
    values, or "" (continuous); the fader then cannot rest between values the engine accepts."""
    if not p.step:
        return ""
    n = int(round((p.max - p.min) / p.step)) + 1
    return n if 2 <= n <= 1001 else ""


def _number(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def _widget(info: Any, value: float, target: str, wid: str) -> dict[str, Any]:
    p = info.param
    common = {"id": wid, "address": info.address, "preArgs": "",
              "typeTags": "f", "target": target, "value": value, "default": p.default,
              "width": "auto", "height": "auto"}
    if (p.id == "bypass" and info.address.endswith("/bypass")) or getattr(p, "momentary", False):
        # a bypass toggles; a button (loudness's reset) is pressed
        return {"type": "button", "mode": "push" if getattr(p, "momentary", False) else "toggle", "on": 1, "off": 0,
                "typeTags": "i", "label": p.id, **{k: v for k, v in common.items() if k != "typeTags"},
                "value": int(value), "default": 0}
    if p.choices:
        values = {label: float(i) for i, label in enumerate(p.choices)}
        # the label with %key: the choice selected, not only the parameter's name
        return {"type": "dropdown", "values": values, **common, "label": f"{p.id}: %key"}
    dec = _decimals(p)
    unit = f" {p.unit}" if p.unit else ""
    # Open Stage Control faders have no label, unit or value readout of their own (a "label" is
    # dropped when the session loads): their html shows the name and the value with its unit (a
    # template on the widget's own value); the scale's ends carry the unit
    shown = f"{p.id} #{{(@{{this.value}}).toFixed({dec})}}{unit}"
    scale = {"min": {f"{_number(p.min, dec)}{unit}": p.min}, "max": {f"{_number(p.max, dec)}{unit}": p.max}}
    return {"type": "fader", "range": scale, "logScale": p.scale == "log", "pips": True,
            "decimals": dec, "steps": _steps(p), "doubleTap": True, "css": "", **common, "html": shown}


def open_stage_control(engine: Any, host: str = "127.0.0.1", port: int = 9000,
                       feedback_port: int | None = None) -> dict[str, Any]:
    """An Open Stage Control session (a dict; ``json.dump`` it to a ``.json`` file).

    ``host:port`` is where hushbridge listens; ``feedback_port`` is sent with ``/hb/register``
    when Open Stage Control receives on a port other than the one it sends from.
    """
    target = f"{host}:{port}"
    # json.dumps quotes the target as a JavaScript string literal (a host name may hold quotes)
    register = f"send({json.dumps(target)}, '/hb/register'{', ' + str(int(feedback_port)) if feedback_port else ''})"
    panels: dict[str, list[dict[str, Any]]] = {}
    taken: set[str] = set()

    def unique(wid: str) -> str:
        # widgets that share an id are clones in Open Stage Control (one drives the other), and
        # "x" + "band1_gain_db" and "x_band1" + "gain_db" flatten alike
        out, n = wid, 2
        while out in taken:
            out, n = f"{wid}_{n}", n + 1
        taken.add(out)
        return out

    rows = _rows(engine)
    # one panel per effect and, in an engine run per channel, one per channel of it ("gate@2":
    # that channel's own settings), after the effect's
    def panel(info: Any) -> str:
        return f"{info.effect_id}@{info.channel}" if getattr(info, "channel", 0) else info.effect_id

    panel_ids = {key: unique(f"panel_{key.replace('@', '_ch')}") for key in dict.fromkeys(panel(info) for info, _ in rows)}
    for info, value in sorted(rows, key=lambda row: getattr(row[0], "channel", 0)):
        wid = unique(info.address[len("/hb/"):].replace("/", "_").replace("@", "_ch"))
        panels.setdefault(panel(info), []).append(_widget(info, float(value), target, wid))
    order = {eid: k for k, eid in enumerate(dict.fromkeys(info.effect_id for info, _ in rows))}
    keys = sorted(panels, key=lambda key: (order[key.partition("@")[0]], int(key.partition("@")[2] or 0)))
    # a panel has no label either: its html names the effect (and the channel)
    widgets = [{"type": "panel", "id": panel_ids[key],
                "html": html.escape(key if "@" not in key else f"{key.partition('@')[0]} (channel {key.partition('@')[2]})"),
                "layout": "horizontal", "width": "auto", "height": "auto", "scroll": True, "widgets": panels[key],
                "tabs": []}
               for key in keys]
    root = {"type": "root", "id": "root", "layout": "vertical", "onCreate": register,
            "address": "auto", "preArgs": "", "typeTags": "", "target": "", "widgets": widgets, "tabs": []}
    return {"createdWith": "Open Stage Control", "version": OSC_VERSION, "type": "session", "content": root}


def touchosc_list(engine: Any) -> str:
    """A CSV address list: one row per parameter with its ``/norm`` address, range and display."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["address", "norm_address", "control", "min", "max", "default", "value", "unit", "scale", "display",
                "step"])
    for info, value in _rows(engine):
        p = info.param
        bypass = p.id == "bypass" and info.address.endswith("/bypass")
        control = "toggle" if bypass else "choice" if p.choices else "stepped" if _steps(p) else "fader"
        w.writerow([info.address, info.address + "/norm", control, f"{p.min:g}", f"{p.max:g}",
                    f"{p.default:g}", f"{value:g}", p.unit, p.scale, p.display(value),
                    f"{p.step:g}" if p.step and not bypass else ""])
    return buf.getvalue()


def render(engine: Any, fmt: str, host: str = "127.0.0.1", port: int = 9000,
           feedback_port: int | None = None) -> str:
    """The template ``fmt`` (``open-stage-control`` or ``touchosc-list``) as text."""
    if fmt == "open-stage-control":
        return json.dumps(open_stage_control(engine, host, port, feedback_port), indent=2) + "\n"
    if fmt == "touchosc-list":
        return touchosc_list(engine)
    raise ValueError(f"unknown layout format {fmt!r} (formats: open-stage-control, touchosc-list)")


FORMATS = ("open-stage-control", "touchosc-list")
__all__ = ["FORMATS", "open_stage_control", "render", "touchosc_list"]
