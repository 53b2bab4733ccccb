"""Control-surface templates generated from the engine's parameters (the data ``/hb/list`` sends).

:func:`open_stage_control` gives an Open Stage Control session (JSON, v1 format): one panel per
effect, one fader per numeric parameter (address ``/hb/<id>/<param>``, the parameter's range,
unit and default, logarithmic where the parameter's scale is), a drop-down for parameters with
named choices, and a toggle button for each bypass. The root registers for feedback when the
session opens (``/hb/register``), so the widgets follow changes from MIDI, presets and other
clients. :func:`touchosc_list` gives a plain CSV address list for TouchOSC and other editors.

    hushbridge osc-layout --out hushbridge.json                # Open Stage Control, dialogue preset
    hushbridge osc-layout --format touchosc-list --preset podcast
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any

OSC_VERSION = "1.26.2"  # the Open Stage Control version whose session format this follows


def _rows(engine: Any) -> list[tuple[Any, float]]:
    return engine.parameters()


def _decimals(p: Any) -> int:
    if p.step is not None and float(p.step).is_integer():
        return 0
    span = p.max - p.min
    return 0 if span >= 1000 else 1 if span >= 10 else 2 if span >= 1 else 3


def _widget(info: Any, value: float, target: str) -> dict[str, Any]:
    p = info.param
    common = {"id": info.address[len("/hb/"):].replace("/", "_"), "address": info.address, "preArgs": "",
              "typeTags": "f", "target": target, "value": value, "default": p.default,
              "label": p.id, "width": "auto", "height": "auto"}
    if p.id == "bypass" and info.address.endswith("/bypass"):
        return {"type": "button", "mode": "toggle", "on": 1, "off": 0, "typeTags": "i",
                **{k: v for k, v in common.items() if k != "typeTags"}, "value": int(value), "default": 0}
    if p.choices:
        values = {label: float(i) for i, label in enumerate(p.choices)}
        return {"type": "dropdown", "values": values, **common}
    return {"type": "fader", "range": {"min": p.min, "max": p.max}, "logScale": p.scale == "log",
            "unit": p.unit, "decimals": _decimals(p), "steps": 0, "doubleTap": True,
            "html": "", "css": "", **common}


def open_stage_control(engine: Any, host: str = "127.0.0.1", port: int = 9000,
                       feedback_port: int | None = None) -> dict[str, Any]:
    """An Open Stage Control session (a dict; ``json.dump`` it to a ``.json`` file).

    ``host:port`` is where hushbridge listens; ``feedback_port`` is sent with ``/hb/register``
    when Open Stage Control receives on a port other than the one it sends from.
    """
    target = f"{host}:{port}"
    register = f"send('{target}', '/hb/register'{', ' + str(int(feedback_port)) if feedback_port else ''})"
    panels: dict[str, list[dict[str, Any]]] = {}
    for info, value in _rows(engine):
        panels.setdefault(info.effect_id, []).append(_widget(info, float(value), target))
    widgets = [{"type": "panel", "id": f"panel_{eid}", "label": eid, "layout": "horizontal",
                "width": "auto", "height": "auto", "scroll": True, "widgets": ws, "tabs": []}
               for eid, ws in panels.items()]
    root = {"type": "root", "id": "root", "layout": "vertical", "onCreate": register,
            "address": "auto", "preArgs": "", "typeTags": "", "target": "", "widgets": widgets, "tabs": []}
    return {"createdWith": "Open Stage Control", "version": OSC_VERSION, "type": "session", "content": root}


def touchosc_list(engine: Any) -> str:
    """A CSV address list: one row per parameter with its ``/norm`` address, range and display."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["address", "norm_address", "control", "min", "max", "default", "value", "unit", "scale", "display"])
    for info, value in _rows(engine):
        p = info.param
        bypass = p.id == "bypass" and info.address.endswith("/bypass")
        control = "toggle" if bypass else "choice" if p.choices else "fader"
        w.writerow([info.address, "" if bypass else info.address + "/norm", control, f"{p.min:g}", f"{p.max:g}",
                    f"{p.default:g}", f"{value:g}", p.unit, p.scale, p.display(value)])
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
