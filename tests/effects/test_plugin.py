"""The plugin effect: pedalboard plugins inside a Chain, their params on the engine's table,
output equal to pedalboard's own rendering, and their latency compensated exactly."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pedalboard = pytest.importorskip("pedalboard")

from hushbridge.effects import Chain, Gain, ProcessSpec, render  # noqa: E402
from hushbridge.effects.plugin import PluginEffect, osc_id  # noqa: E402
from hushbridge.engine import Engine  # noqa: E402
from hushbridge.errors import ChainError, ParamError, PresetError  # noqa: E402
from hushbridge.presets import chain_to_preset, parse_preset  # noqa: E402

SR = 48000

# deterministic built-ins with settings that make them do something audible
BUILTINS = [
    ("Gain", {"gain_db": -7.5}),
    ("Reverb", {"room_size": 0.7, "wet_level": 0.5}),
    ("Compressor", {"threshold_db": -24.0, "ratio": 4.0, "attack_ms": 2.0, "release_ms": 80.0}),
    ("Delay", {"delay_seconds": 0.01, "feedback": 0.4, "mix": 0.5}),
    ("Chorus", {"rate_hz": 1.5, "depth": 0.4, "mix": 0.5}),
]


def _signal(channels: int = 2, seconds: float = 0.5, seed: int = 1) -> np.ndarray:
    """Speech-like test signal: a gliding harmonic tone with bursts and some noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 140.0 + 40.0 * np.sin(2 * np.pi * 3.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t)) ** 2
    x = 0.25 * voiced * env
    out = np.stack([x + 0.01 * rng.standard_normal(n) for _ in range(channels)])
    return out.astype(np.float32)


def _builtin(name: str, **kw: float):
    return getattr(pedalboard, name)(**kw)


@pytest.mark.parametrize("name,settings", BUILTINS, ids=[b[0] for b in BUILTINS])
def test_output_equals_pedalboard_rendering(name: str, settings: dict) -> None:
    x = _signal()
    ours = PluginEffect(_builtin(name, **settings))(x, SR, block_size=128)
    theirs = _builtin(name, **settings).process(x, SR)  # pedalboard's own offline rendering
    assert ours.shape == theirs.shape == x.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert np.abs(ours - x).max() > 1e-3  # the plugin really did something


@pytest.mark.parametrize("name,settings", BUILTINS, ids=[b[0] for b in BUILTINS])
@pytest.mark.parametrize("channels", [1, 2])
def test_block_size_invariance(name: str, settings: dict, channels: int) -> None:
    x = _signal(channels, seconds=0.25)
    whole = PluginEffect(_builtin(name, **settings))(x, SR, block_size=4096)
    for block in (1, 2, 7, 64, 333):  # 1 and 2 frames: pedalboard must not read them as interleaved
        part = PluginEffect(_builtin(name, **settings))(x, SR, block_size=block)
        np.testing.assert_array_equal(part, whole, err_msg=f"block {block}")


def test_builtin_params_are_declared() -> None:
    fx = PluginEffect(pedalboard.Reverb(room_size=0.25))
    ids = [p.id for p in fx.params]
    assert ids == ["damping", "dry_level", "freeze_mode", "room_size", "wet_level", "width"]
    assert fx.name == "plugin"
    assert fx.room_size == pytest.approx(0.25)  # the plugin's own setting is the start value
    assert fx.param("room_size").default == pytest.approx(0.5)  # pedalboard's constructor default
    comp = PluginEffect(pedalboard.Compressor())
    assert comp.param("threshold_db").unit == "dB" and comp.param("attack_ms").unit == "ms"
    assert (comp.param("ratio").min, comp.param("ratio").max) == (1.0, 20.0)
    ladder = PluginEffect(pedalboard.LadderFilter())
    mode = ladder.param("mode")
    assert mode.step == 1.0 and mode.choices[:2] == ("LPF12", "HPF12")
    ladder.mode = 1
    assert ladder.plugin.mode == pedalboard.LadderFilter.Mode.HPF12
    # one class per built-in type, so params stay a declared, per-type tuple
    assert type(PluginEffect(pedalboard.Reverb())) is type(fx)
    with pytest.raises(ParamError, match=r"\[0, 1\]"):
        fx.room_size = 2.0
    with pytest.raises(ParamError, match="no parameter"):
        fx.set("nope", 1.0)


def test_params_settable_through_engine_addresses() -> None:
    chain = Chain([PluginEffect(pedalboard.Reverb()), PluginEffect(pedalboard.Compressor())])
    engine = Engine(chain, channels=2)
    engine.prepare(SR, 128)
    addresses = {info.address for info, _ in engine.parameters()}
    assert {"/hb/plugin/room_size", "/hb/plugin_2/threshold_db", "/hb/plugin/bypass"} <= addresses
    engine.set("/hb/plugin/room_size", 0.8)
    engine.set("/hb/plugin_2/threshold_db", -30.0)
    engine.set("/hb/plugin_2/ratio", 100.0, clamp=True)  # controllers overshoot: clamped
    x = _signal(2, seconds=128 / SR)
    y = np.zeros_like(x)
    engine.process(x, y)  # changes are applied at block start
    assert chain[0].plugin.room_size == pytest.approx(0.8)
    assert chain[1].plugin.threshold_db == pytest.approx(-30.0)
    assert chain[1].plugin.ratio == pytest.approx(20.0)
    assert engine.get("/hb/plugin/room_size") == pytest.approx(0.8)


@pytest.mark.parametrize("channels", [1, 2])
def test_latency_is_measured_and_compensated(channels: int) -> None:
    from pedalboard_native._internal import AddLatency

    lim = PluginEffect(pedalboard.BrickwallLimiter(ceiling_db=-6.0, lookahead_ms=1.5))
    delay = PluginEffect(AddLatency(100))
    for fx in (lim, delay):
        fx.prepare(ProcessSpec(SR, 128, channels))
    hold = channels if channels > 1 else 0  # see PluginEffect.hold_samples
    assert delay.hold_samples == lim.hold_samples == hold
    assert delay.latency_samples == 100 + hold
    assert lim.latency_samples == int(SR * 1.5 / 1000) + hold
    # an impulse through a chain with both comes out where it went in, after compensation
    chain = Chain([delay, Gain(gain_db=0.0), lim])
    x = np.zeros((channels, 4000), dtype=np.float32)
    x[:, 1000] = 0.25
    y = render(chain, x, SR, block_size=128)
    assert chain.latency_samples == delay.latency_samples + lim.latency_samples
    assert int(np.argmax(np.abs(y[0]))) == 1000
    np.testing.assert_allclose(y, x, atol=1e-6)  # below the ceiling: untouched


def test_latency_plugin_matches_pedalboard_offline() -> None:
    x = _signal(2) * 3.0
    settings = {"ceiling_db": -3.0, "lookahead_ms": 2.0, "release_ms": 50.0}
    ours = PluginEffect(pedalboard.BrickwallLimiter(**settings))(x, SR, block_size=256)
    theirs = pedalboard.BrickwallLimiter(**settings).process(x, SR)  # pedalboard compensates itself
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels", [2, 6])
def test_latency_plugin_takes_blocks_of_no_more_frames_than_channels(channels: int) -> None:
    # pedalboard reads such a block as frames-first, which reconfigured the plugin mid-stream
    # (and crashed on a file's last block of 1..channels frames)
    x = (np.random.default_rng(3).standard_normal((channels, 4096 + channels)) * 0.3).astype(np.float32)
    theirs = pedalboard.BrickwallLimiter().process(x, SR)
    for block in (4096, 1, 2, 3, 64):
        ours = Chain([PluginEffect(pedalboard.BrickwallLimiter())])(x, SR, block_size=block)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6, err_msg=f"block {block}")


def test_an_instance_beyond_the_ranges_widens_only_its_own() -> None:
    loud = PluginEffect(pedalboard.Gain(gain_db=40.0))
    assert loud.param("gain_db").max == 40.0 and loud.gain_db == 40.0
    assert PluginEffect(pedalboard.Gain()).param("gain_db").max == 24.0


def test_pitch_shift_is_refused_not_silent() -> None:
    with pytest.raises(ChainError, match="PitchShift returns only silence when streamed"):
        PluginEffect(pedalboard.PitchShift(semitones=2))


def test_bypassing_a_latent_plugin_keeps_timing() -> None:
    from pedalboard_native._internal import AddLatency

    chain = Chain([PluginEffect(AddLatency(64))])
    chain.set_bypass(0, True)
    x = np.zeros((1, 2000), dtype=np.float32)
    x[0, 500] = 1.0
    y = render(chain, x, SR, block_size=100)
    np.testing.assert_array_equal(y, x)


def test_nonfinite_input_gives_finite_output() -> None:
    chain = Chain([PluginEffect(pedalboard.Reverb())])
    x = _signal(2, seconds=0.05)
    x[:, 100] = np.nan
    x[:, 200] = np.inf
    y = render(chain, x, SR, block_size=64)
    assert np.isfinite(y).all()


def test_preset_round_trip() -> None:
    text = """
version = 1
name = "verb"
[[chain]]
effect = "plugin"
plugin = "Reverb"
id = "verb"
params = { room_size = 0.7, wet_level = 0.2 }
"""
    chain = parse_preset(text).build()
    assert chain.ids == ["verb"]
    assert chain["verb"].plugin.room_size == pytest.approx(0.7)
    doc = chain_to_preset(chain, "verb")
    assert doc["chain"][0]["plugin"] == "Reverb" and doc["chain"][0]["effect"] == "plugin"
    import tomli_w

    again = parse_preset(tomli_w.dumps(doc)).build()
    assert again["verb"].values() == pytest.approx(chain["verb"].values())


@pytest.mark.parametrize("entry,match", [
    ('plugin = "NoSuchThing"', "unknown pedalboard plugin"),
    ('path = "/nonexistent/x.vst3"', "cannot load plugin"),
    ('', "exactly one of"),
    ('plugin = "Reverb"\nparams = { room_size = 3.0 }', "room_size"),
    ('plugin = 42', "key 'plugin': must be a string, got 42"),
    ('plugin = "Reverb"\nplugin_name = "x"', "key 'plugin_name': picks a plugin in a plugin file"),
])
def test_preset_errors(entry: str, match: str) -> None:
    with pytest.raises(PresetError, match=match):
        parse_preset(f'version = 1\n[[chain]]\neffect = "plugin"\n{entry}\n')


def test_plugin_key_only_for_plugin_effect() -> None:
    with pytest.raises(PresetError, match="unknown key"):
        parse_preset('version = 1\n[[chain]]\neffect = "gain"\nplugin = "Reverb"\n')


def test_needs_a_plugin() -> None:
    with pytest.raises(ChainError, match="wraps a pedalboard plugin"):
        PluginEffect()
    with pytest.raises(TypeError):
        PluginEffect(pedalboard.Pedalboard([pedalboard.Gain()]))


def test_chain_from_names_takes_plugins() -> None:
    from hushbridge.effects import chain_from_names

    chain = chain_from_names("highpass, plugin:Reverb ,plugin:Chorus")
    assert [e.name for e in chain] == ["highpass", "plugin", "plugin"]
    assert isinstance(chain[1].plugin, pedalboard.Reverb) and isinstance(chain[2].plugin, pedalboard.Chorus)
    assert chain[1].preset_keys() == {"plugin": "Reverb"}
    for names, match in (("plugin:Nope", "unknown pedalboard plugin 'Nope'"),
                         ("plugin:", "only plugins take a ':'"), ("gain:x", "only plugins take a ':'"),
                         ("plugin", "--chain plugin:Reverb"),
                         ("plugin:/nonexistent/x.vst3", "cannot load plugin '/nonexistent/x.vst3'"),
                         ("plugin:Convolution", r"cannot be built without arguments: [^\n]*impulse_response")):
        with pytest.raises(ChainError, match=match):
            chain_from_names(names)


def test_osc_ids() -> None:
    assert osc_id("Delay Time", "ms") == "delay_time_ms"
    assert osc_id("Cutoff", "Hz") == "cutoff_hz"
    assert osc_id("gain_db", "dB") == "gain_db"
    assert osc_id("3 Band/Mix") == "p_3_band_mix"
    assert osc_id("Bypass") == "bypass_param"
    taken: set[str] = set()
    assert [osc_id("Mix", taken=taken), osc_id("mix", taken=taken)] == ["mix", "mix_2"]


class _FakeParam(SimpleNamespace):
    """The parts of pedalboard.AudioProcessorParameter the wrapper reads."""


class _FakeExternal:
    """Stands in for a loaded VST3 (none is installed here): pedalboard's external-plugin API."""

    def __init__(self) -> None:
        self.parameters = {
            "gain": _FakeParam(type=float, min_value=-24.0, max_value=12.0, step_size=None, label="dB",
                               valid_values=[]),
            "delay_time": _FakeParam(type=float, min_value=1.0, max_value=500.0, step_size=1.0, label="ms",
                                     valid_values=[]),
            "enabled": _FakeParam(type=bool, min_value=False, max_value=True, step_size=1, label=None,
                                  valid_values=[False, True]),
            "mode": _FakeParam(type=str, min_value=None, max_value=None, step_size=None, label=None,
                               valid_values=["Clean", "Warm", "Hot"]),
        }
        self.gain, self.delay_time, self.enabled, self.mode = -3.0, 20.0, True, "Warm"
        self.calls = 0

    def process(self, x, sample_rate, buffer_size=8192, reset=True):
        self.calls += 1
        return x * np.float32(10 ** (self.gain / 20))

    def reset(self) -> None:
        pass


def test_external_plugin_parameters_are_mapped() -> None:
    plug = _FakeExternal()
    fx = PluginEffect(plug)
    assert [p.id for p in fx.params] == ["gain_db", "delay_time_ms", "enabled", "mode"]
    g = fx.param("gain_db")
    assert (g.min, g.max, g.default, g.unit) == (-24.0, 12.0, -3.0, "dB")
    assert fx.param("delay_time_ms").step == 1.0
    assert fx.param("enabled").choices and fx.enabled == 1.0
    assert fx.param("mode").choices == ("Clean", "Warm", "Hot") and fx.mode == 1.0
    fx.mode = 2
    fx.enabled = 0
    fx.gain_db = -6.0
    assert (plug.mode, plug.enabled, plug.gain) == ("Hot", False, -6.0)
    y = fx(np.ones((1, 300), np.float32), SR, block_size=128)
    np.testing.assert_allclose(y, 10 ** (-6 / 20), rtol=1e-6)
    assert type(PluginEffect(_FakeExternal())) is not type(fx)  # one class per external instance


def test_plugin_effects_pickle_and_copy_with_their_settings() -> None:
    import copy
    import pickle

    chain = Chain([PluginEffect(pedalboard.Reverb(room_size=0.3)), PluginEffect(pedalboard.Gain(gain_db=40.0))])
    again = pickle.loads(pickle.dumps(chain))  # e.g. to a worker process
    assert again.ids == chain.ids and again[0].room_size == pytest.approx(0.3) and again[1].gain_db == 40.0
    x = _signal(2)
    np.testing.assert_array_equal(again(x, SR), chain(x, SR))
    assert copy.deepcopy(chain[0]).room_size == pytest.approx(0.3)
    from pedalboard_native._internal import AddLatency

    with pytest.raises(TypeError, match="cannot copy a PluginEffect of AddLatency"):
        pickle.dumps(PluginEffect(AddLatency(10)))
