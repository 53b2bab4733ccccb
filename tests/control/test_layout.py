"""``hushbridge osc-layout``: Open Stage Control session and TouchOSC-style address list."""
from __future__ import annotations

import csv
import io
import json

import pytest

from hushbridge.cli import main
from hushbridge.control.layout import open_stage_control, render, touchosc_list
from hushbridge.engine import Engine
from hushbridge.presets import builtin_names, load_preset


def _widgets(node):
    for w in node.get("widgets", []):
        yield w
        yield from _widgets(w)


@pytest.mark.parametrize("preset", builtin_names())
def test_open_stage_control_lists_every_parameter(preset):
    engine = Engine(load_preset(preset))
    session = json.loads(render(engine, "open-stage-control", port=9100))
    assert session["type"] == "session" and session["createdWith"] == "Open Stage Control"
    root = session["content"]
    assert root["type"] == "root" and "/hb/register" in root["onCreate"] and "127.0.0.1:9100" in root["onCreate"]
    controls = {w["address"]: w for w in _widgets(root) if w["type"] != "panel"}
    params = engine.parameters()
    assert list(controls) == [info.address for info, _ in params]  # every address, in chain order
    ids = [w["id"] for w in _widgets(root)]
    assert len(ids) == len(set(ids))
    for info, value in params:
        w = controls[info.address]
        assert w["target"] == "127.0.0.1:9100"
        if info.address.endswith("/bypass"):
            assert (w["type"], w["mode"], w["on"], w["off"]) == ("button", "toggle", 1, 0)
        elif info.param.momentary:  # a button (loudness's reset) is pressed, not toggled
            assert (w["type"], w["mode"]) == ("button", "push")
        elif info.param.choices:
            assert w["type"] == "dropdown" and list(w["values"]) == list(info.param.choices)
            assert w["label"] == f"{info.param.id}: %key"  # the choice selected shows (QA, session 30)
        else:
            assert w["type"] == "fader"
            (lo_label, lo), = w["range"]["min"].items()
            (hi_label, hi), = w["range"]["max"].items()
            assert (lo, hi) == (info.param.min, info.param.max)
            assert lo_label.endswith(info.param.unit) and hi_label.endswith(info.param.unit)
            # Open Stage Control 1.x faders have no label (it is dropped as the session loads): the
            # name, value and unit go into its html (QA, session 30)
            assert "label" not in w
            assert w["html"].startswith(info.param.id + " #{(@{this.value}).toFixed(") and w["html"].endswith(info.param.unit)
            # what it sends is rounded to its decimals: both ends must survive that
            assert round(lo, w["decimals"]) == lo and round(hi, w["decimals"]) == hi
            assert w["value"] == value and w["default"] == info.param.default
            assert w["logScale"] == (info.param.scale == "log")
    panels = [w for w in _widgets(root) if w["type"] == "panel"]
    assert all("label" not in w and w["html"] for w in panels)


def test_feedback_port_goes_into_register():
    session = open_stage_control(Engine(load_preset("dialogue")), feedback_port=8081)
    assert session["content"]["onCreate"].endswith("'/hb/register', 8081)")


def test_touchosc_list():
    engine = Engine(load_preset("podcast"))
    rows = list(csv.DictReader(io.StringIO(touchosc_list(engine))))
    assert [r["address"] for r in rows] == [info.address for info, _ in engine.parameters()]
    for r in rows:
        assert r["norm_address"] == r["address"] + "/norm"  # bypass too: a surface bound to /norm throughout
        if r["address"].endswith("/bypass"):
            assert r["control"] == "toggle"
        else:
            assert float(r["min"]) <= float(r["value"]) <= float(r["max"])


def test_cli_writes_the_files(tmp_path, capsys):
    out = tmp_path / "surface.json"
    assert main(["osc-layout", "--preset", "stream", "--out", str(out), "--port", "9001"]) == 0
    session = json.loads(out.read_text())
    addresses = {w["address"] for w in _widgets(session["content"]) if w["type"] != "panel"}
    assert addresses == {info.address for info, _ in Engine(load_preset("stream")).parameters()}
    capsys.readouterr()
    assert main(["osc-layout", "--format", "touchosc-list", "--chain", "gain,limiter", "--out", "-"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("address,norm_address,control")
    assert "/hb/limiter/ceiling_dbtp,/hb/limiter/ceiling_dbtp/norm,fader" in text


def test_stepped_parameters_get_steps_and_ids_stay_unique():
    from hushbridge.presets import parse_preset

    chain = parse_preset('version = 1\n[[chain]]\neffect = "humremove"\nid = "x"\n'
                         '[[chain]]\neffect = "gain"\nid = "x_mains_hz"\n'
                         '[[chain]]\neffect = "eq"\nid = "e"\n[[chain]]\neffect = "gain"\nid = "e_band1"\n').build()
    engine = Engine(chain)
    session = open_stage_control(engine, host="my'host")
    faders = {w["address"]: w for w in _widgets(session["content"]) if w["type"] == "fader"}
    mains = engine.chain["x"].param("mains_hz")
    assert faders["/hb/x/mains_hz"]["steps"] == int((mains.max - mains.min) / mains.step) + 1 == 2
    assert faders["/hb/x_mains_hz/gain_db"]["steps"] == ""
    ids = [w["id"] for w in _widgets(session["content"])]
    assert len(ids) == len(set(ids)), ids
    assert faders["/hb/e/band1_gain_db"]["id"] == "e_band1_gain_db"
    assert faders["/hb/e_band1/gain_db"]["id"] == "e_band1_gain_db_2"
    assert session["content"]["onCreate"] == 'send("my\'host:9000", \'/hb/register\')'
    rows = {r["address"]: r for r in csv.DictReader(io.StringIO(touchosc_list(engine)))}
    assert (rows["/hb/x/mains_hz"]["control"], rows["/hb/x/mains_hz"]["step"]) == ("stepped", "10")


def test_per_channel_surface_has_a_panel_per_channel_of_each_effect(tmp_path):
    """`osc-layout --per-channel --channels 3`: for `run --per-channel`, each effect's panel is
    followed by one per channel with that channel's own settings (/hb/<id>@<n>/<param>); the
    automixer works on all channels together and has none."""
    out = tmp_path / "mics.json"
    assert main(["osc-layout", "--chain", "automix,gate", "--per-channel", "--channels", "3", "--out", str(out)]) == 0
    panels = json.loads(out.read_text())["content"]["widgets"]
    assert [p["html"] for p in panels] == ["automix", "automix (channel 1)", "automix (channel 2)", "automix (channel 3)",
                                           "gate", "gate (channel 1)", "gate (channel 2)", "gate (channel 3)"]
    assert [w["address"] for w in _widgets(panels[2])] == ["/hb/automix@2/weight_db"]
    assert len({w["id"] for p in panels for w in _widgets(p)} | {p["id"] for p in panels}) == \
        sum(1 + len(list(_widgets(p))) for p in panels)  # ids unique
    third = {w["address"] for w in _widgets(panels[7])}
    assert "/hb/gate@3/threshold_db" in third and "/hb/gate@3/bypass" in third  # a toggle: the gate off on mic 3
    toggle = next(w for w in _widgets(panels[7]) if w["address"] == "/hb/gate@3/bypass")
    assert toggle["type"] == "button" and toggle["mode"] == "toggle"
    engine = Engine(load_preset("dialogue"), channels=3, per_channel=True)
    addresses = {w["address"] for w in _widgets(open_stage_control(engine)["content"]) if w["type"] != "panel"}
    assert addresses == {info.address for info, _ in engine.parameters()}
    assert main(["osc-layout", "--chain", "gate", "--out", str(out)]) == 0  # not per channel: none
    assert "/hb/gate@" not in out.read_text()
