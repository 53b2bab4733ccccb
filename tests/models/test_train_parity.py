"""Streaming ONNX export of the denoise model equals the torch model on the whole signal.

Needs the ``[train]`` extra (torch); skipped cleanly where torch is absent (CI installs only [dev]).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hushbridge.models.train import export as ex  # noqa: E402
from hushbridge.models.train import model as md  # noqa: E402

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "denoise.onnx"
CHECKPOINT = REPO / "models" / "train" / "checkpoints" / "denoise_best.pt"


@pytest.fixture(scope="module")
def random_net():
    torch.set_num_threads(1)
    torch.manual_seed(1)
    net = md.DenoiseNet().eval()
    with torch.no_grad():  # make every head matter (the deep filter starts at zero)
        net.df_head.weight.normal_(0.0, 0.02)
        net.df_head.bias.normal_(0.0, 0.05)
    return net


@pytest.fixture(scope="module")
def exported(random_net, tmp_path_factory):
    return ex.export(random_net, tmp_path_factory.mktemp("onnx") / "d.onnx")


def _signal(seconds=1.5, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * md.SR) // md.HOP * md.HOP
    t = np.arange(n) / md.SR
    return (0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 180 * t) * (t > 0.4)).astype(np.float32)


@pytest.mark.parametrize("atten_lim_db", [100.0, 12.0])
def test_streaming_onnx_equals_torch_whole_signal(random_net, exported, atten_lim_db):
    x = _signal()
    with torch.no_grad():
        for use_fft in (False, True):
            ref, vad, _ = random_net(torch.from_numpy(x)[None], atten_lim_db=atten_lim_db, use_fft=use_fft)
            got, act = ex.run_onnx(exported, x, atten_lim_db=atten_lim_db)
            assert np.max(np.abs(got - ref[0].numpy())) <= 1e-4
            assert np.max(np.abs(act - vad[0].numpy())) <= 1e-4


def test_batched_run_equals_each_channel_alone(random_net, exported):
    from hushbridge.models.runtime import StreamingModel

    rng = np.random.default_rng(4)
    x = np.stack([_signal(1.0, seed=2), 0.3 * rng.standard_normal(_signal(1.0).size).astype(np.float32)])
    m = StreamingModel(exported)
    assert m.info.batched
    m.prepare(2)
    m.atten_lim_db[0] = 100.0  # run_onnx's default: no attenuation limit
    got = np.zeros_like(x)
    for k in range(x.shape[1] // md.HOP):
        m.audio_in[...] = x[:, k * md.HOP:(k + 1) * md.HOP]
        got[:, k * md.HOP:(k + 1) * md.HOP] = m.run_all()
    for c in range(2):
        alone, _ = ex.run_onnx(exported, x[c])
        np.testing.assert_allclose(got[c], alone, atol=1e-6)
    m.reset(1)  # one channel's reset leaves the other's state alone
    assert all(not s.any() for s in m.state(1)) and any(s.any() for s in m.state(0))


LINK_PF = {"kind": "expand", "k": 10.0, "pivot": 0.4, "lo": 0.2, "hi": 1.5, "release": 0.9,
           "vad_floor": 0.25, "vad_power": 0.5, "vad_keep": 0.3, "ceiling": 1.0}


@pytest.mark.parametrize("pf", [None, LINK_PF])
def test_linked_stereo_streams_like_the_whole_signal(random_net, tmp_path, pf):
    """A stereo pair linked as one group (one network run on its mid, the same coefficients for
    both channels): the streaming graph, in onnxruntime and in our runtime, equals the torch
    model on the whole signal."""
    from hushbridge.models.runtime import StreamingModel

    random_net.postfilter = pf
    try:
        path = ex.export(random_net, tmp_path / "l.onnx", linked=True)
        assert ex.parity_linked(random_net, path, seconds=1.0) <= 1e-4
        rng = np.random.default_rng(5)
        x = np.stack([_signal(1.0, seed=6), 0.5 * _signal(1.0, seed=6) + 0.02 * rng.standard_normal(
            _signal(1.0).size).astype(np.float32)])
        with torch.no_grad():
            ref = random_net.forward_linked(torch.from_numpy(x))[0].numpy()
        m = StreamingModel(path)
        assert m.info.linkable
        m.prepare(2, linked=True)
        assert m.linked and m.state(0)[1].shape == (1, md.N_BANDS)
        m.atten_lim_db[0] = 100.0
        got = np.zeros_like(x)
        for k in range(x.shape[1] // md.HOP):
            m.audio_in[...] = x[:, k * md.HOP:(k + 1) * md.HOP]
            got[:, k * md.HOP:(k + 1) * md.HOP] = m.run_all()
        assert np.max(np.abs(got - ref)) <= 1e-4
        # unlike running each channel on its own (the per-channel graph, and this one per channel)
        plain = ex.export(random_net, tmp_path / "p.onnx")
        alone = np.stack([ex.run_onnx(plain, x[c])[0] for c in range(2)])
        np.testing.assert_allclose(ex.run_onnx(path, x)[0], alone, atol=1e-6)
        assert np.max(np.abs(alone - got)) > 1e-3
        # a pair in opposite polarity is the mono signal twice, one side inverted: nothing cancels
        flip, _ = ex.run_onnx(path, np.stack([x[0], -x[0]]), groups=1)
        np.testing.assert_allclose(flip[0], alone[0], atol=1e-5)
        np.testing.assert_allclose(flip[1], -alone[0], atol=1e-5)
        # three channels link too; one reset restarts the group
        y3, act = ex.run_onnx(path, np.stack([x[0], x[1], x[0]]), groups=1)
        assert act.shape == (1, x.shape[1] // md.HOP) and np.max(np.abs(y3[2] - y3[0])) <= 1e-6
        m.reset(1)
        assert all(not s.any() for c in (0, 1) for s in m.state(c))
    finally:
        random_net.postfilter = None


def test_contract_names_shapes_metadata(exported):
    m = onnx.load(str(exported))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["hushbridge.sample_rate"] == "48000"
    assert meta["hushbridge.hop"] == "240"
    assert int(meta["hushbridge.latency_samples"]) == md.LATENCY_SAMPLES == 240
    assert meta["hushbridge.name"] == "denoise" and meta["hushbridge.version"]
    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    ins = {i.name: i.shape for i in sess.get_inputs()}
    outs = {o.name: o.shape for o in sess.get_outputs()}
    # a dynamic batch leads every tensor but the attenuation limit: one run serves every channel
    assert ins["audio_in"] == ["batch", 240] and outs["audio_out"] == ["batch", 240]
    assert ins["atten_lim_db"] == [1] and outs["activity"] == ["batch", 1] and outs["gains"] == ["batch", 32]
    states = sorted(k for k in ins if k.startswith("state_"))
    assert states == [f"state_{k}" for k in range(len(states))]
    for s in states:
        assert outs[f"{s}_out"] == ins[s] and ins[s][0] == "batch"
    assert m.opset_import[0].version >= 17


def test_linked_graph_names_channels_and_groups(random_net, tmp_path):
    path = ex.export(random_net, tmp_path / "l.onnx", linked=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = {i.name: i.shape for i in sess.get_inputs()}
    outs = {o.name: o.shape for o in sess.get_outputs()}
    # channels for the audio and the buffers of each channel, link groups for the network's state and outputs
    assert ins["audio_in"] == ["channels", 240] and outs["audio_out"] == ["channels", 240]
    assert outs["activity"] == ["groups", 1] and outs["gains"] == ["groups", 32]
    states = sorted((k for k in ins if k.startswith("state_")), key=lambda s: int(s[6:]))
    grouped = dict(zip(states, md.StreamingDenoise(random_net, linked=True).group_states()))
    for s in states:
        assert outs[f"{s}_out"] == ins[s] and ins[s][0] == ("groups" if grouped[s] else "channels")
    assert [s for s in states if grouped[s]] == ["state_1", "state_2", "state_3"]
    assert ins[states[-1]] == ["channels", 2]  # each channel's level, for its group's reference


def test_impulse_comes_out_at_graph_delay(tmp_path):
    """With unit gains the graph is an exact delay of window - hop = 240 samples (the metadata value);
    with the runtime's hop FIFO (hop - 1) the effect's latency is 479 <= 480 (10 ms at 48 kHz)."""
    net = md.DenoiseNet().eval()
    with torch.no_grad():
        net.gain_head.weight.zero_()
        net.gain_head.bias.fill_(30.0)  # sigmoid -> 1
    path = ex.export(net, tmp_path / "id.onnx")
    x = np.zeros(48 * md.HOP, np.float32)
    x[1000] = 1.0
    y, _ = ex.run_onnx(path, x)
    assert int(np.argmax(np.abs(y))) == 1000 + md.GRAPH_DELAY
    assert abs(y[1000 + md.GRAPH_DELAY] - 1.0) < 1e-4
    assert md.LATENCY_SAMPLES == md.GRAPH_DELAY
    assert md.EFFECT_LATENCY == md.LATENCY_SAMPLES + md.HOP - 1 <= 480


@pytest.mark.skipif(not (SHIPPED.exists() and CHECKPOINT.exists()), reason="no shipped model/checkpoint")
def test_shipped_model_matches_its_checkpoint():
    """The shipped graph is the export of a committed checkpoint: the lowest validation loss, the
    last one, or ``denoise_shipped.pt`` (the weights of the step that models/train/select.py chose,
    when training went on past it); the model card says which."""
    meta = {p.key: p.value for p in onnx.load(str(SHIPPED)).metadata_props}
    assert SHIPPED.stat().st_size <= 5_000_000
    found = []
    shipped_ck = CHECKPOINT.with_name("denoise_shipped.pt")
    for path in (CHECKPOINT, CHECKPOINT.with_name("denoise_last.pt")) + ((shipped_ck,) if shipped_ck.exists() else ()):
        assert path.stat().st_size <= 5_000_000
        net, ck = ex.load_checkpoint(path)
        net.postfilter = json.loads(meta.get("hushbridge.postfilter", "null"))
        if meta["hushbridge.version"].endswith(f"step{ck['step']}"):
            found.append(path.name)
            assert ex.parity(net, SHIPPED, seconds=1.0) <= 1e-4
    assert found, f"no committed checkpoint has the shipped version {meta['hushbridge.version']}"


@pytest.mark.parametrize("pf", [{"kind": "dfn", "beta": 0.1},
                                {"kind": "expand", "k": 10.0, "pivot": 0.3, "lo": 0.5, "hi": 1.5, "beta": 0.05},
                                {"kind": "expand", "k": 10.0, "pivot": 0.3, "lo": 0.5, "hi": 1.5,
                                 "release": 0.9, "vad_floor": 0.25, "vad_power": 1.0},
                                {"kind": "expand", "k": 10.0, "pivot": 0.4, "lo": 0.2, "hi": 1.5,
                                 "release": 0.9, "vad_floor": 0.25, "vad_power": 1.0, "ceiling": 1.0},
                                {"kind": "expand", "k": 10.0, "pivot": 0.4, "lo": 0.2, "hi": 1.5,
                                 "release": 0.9, "vad_floor": 0.25, "vad_power": 1.0, "vad_keep": 0.2,
                                 "ceiling": 1.0},
                                # one value per band (fit_postfilter)
                                {"kind": "expand", "k": [8.0 + 0.1 * b for b in range(32)],
                                 "pivot": [0.3 + 0.005 * b for b in range(32)], "lo": [0.2] * 16 + [0.4] * 16,
                                 "hi": [1.5 - 0.01 * b for b in range(32)], "release": [0.8 + 0.005 * b for b in range(32)],
                                 "vad_floor": [0.1 + 0.01 * b for b in range(32)], "vad_power": 1.0}])
def test_postfilter_streams_like_the_whole_signal_and_is_recorded(random_net, tmp_path, pf):
    random_net.postfilter = pf
    try:
        path = ex.export(random_net, tmp_path / "pf.onnx")
        assert ex.parity(random_net, path, seconds=1.0) <= 1e-4
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(meta["hushbridge.postfilter"]) == pf
        shapes = json.loads(meta["hushbridge.state_shapes"])
        # the release carries the held band gains from hop to hop; without one the graph has no such state
        assert len(shapes) == 6 + ("release" in pf)
        if "release" in pf:
            assert shapes["state_6"] == [1, md.N_BANDS]
        x = _signal()[: 48000]
        with torch.no_grad():
            filtered = random_net(torch.from_numpy(x)[None])[0]
            random_net.postfilter = None
            plain = random_net(torch.from_numpy(x)[None])[0]
        assert float((filtered - plain).abs().max()) > 1e-3  # it does something
    finally:
        random_net.postfilter = None


def test_postfilter_per_band_lists_of_one_value_equal_the_number(random_net):
    scalar = {"kind": "expand", "k": 10.0, "pivot": 0.4, "lo": 0.2, "hi": 1.5, "release": 0.9,
              "vad_floor": 0.25, "vad_power": 1.0}
    lists = {k: ([v] * md.N_BANDS if k in ("k", "pivot", "lo", "hi", "release", "vad_floor") else v)
             for k, v in scalar.items()}
    x = torch.from_numpy(_signal()[:48000])[None]
    try:
        with torch.no_grad():
            random_net.postfilter = scalar
            a = random_net(x)[0]
            random_net.postfilter = lists
            b = random_net(x)[0]
    finally:
        random_net.postfilter = None
    assert torch.allclose(a, b, atol=1e-7)
    with pytest.raises(ValueError, match="one per band"):
        md.postfilter_scale(torch.zeros(32), {**scalar, "k": [10.0] * 31})


def test_postfilter_scale_shapes_the_gain_curve():
    g = torch.linspace(0.0, 1.0, 101)
    dfn = md.postfilter_scale(g, {"kind": "dfn", "beta": 0.1})
    assert float(dfn[-1]) == pytest.approx(1.0)  # unity gain stays unity
    assert float(dfn[10]) < 0.5 and float(dfn[80]) > 0.95  # low gains go down much harder than high
    ex_ = md.postfilter_scale(g, {"kind": "expand", "k": 10.0, "pivot": 0.3, "lo": 0.5, "hi": 1.5})
    out = g * ex_
    assert float(out.max()) <= 1.0 + 1e-6  # never above unity gain
    assert float(ex_[5]) < 0.6 and float(ex_[60]) > 1.3  # noise-like bands down, speech-like up
    assert bool(torch.all(out[1:] >= out[:-1] - 1e-6))  # the gain curve stays monotonic
    with pytest.raises(ValueError, match="kind"):
        md.postfilter_scale(g, {"kind": "gate"})


def test_postfilter_release_lets_band_gains_fall_at_most_by_its_factor_per_hop():
    pf = {"kind": "expand", "k": 10.0, "pivot": 0.3, "lo": 0.5, "hi": 1.5, "release": 0.8}
    geff = torch.tensor([[0.9, 0.9], [0.05, 0.9], [0.05, 0.5], [0.05, 0.05], [0.05, 1.0]])  # hops x bands
    held = torch.zeros(2)
    gains = []
    for t in range(geff.shape[0]):
        f = torch.ones(2)
        f, held = md.postfilter_release(geff[t], f, held, pf)
        gains.append(geff[t] * f)
    g = torch.stack(gains)
    assert torch.allclose(g[:, 0], torch.tensor([0.9, 0.72, 0.576, 0.4608, 0.36864]))  # 0.8 per hop
    assert torch.allclose(g[:, 1], torch.tensor([0.9, 0.9, 0.72, 0.576, 1.0]))  # rises at once
    assert float(g.max()) <= 1.0


def test_postfilter_release_ends_at_zero_not_subnormal_in_silence():
    pf = {"kind": "expand", "k": 10.0, "pivot": 0.4, "lo": 0.2, "hi": 1.5, "release": 0.9}
    held = torch.full((32,), 0.8)
    silent = torch.zeros(32)
    for _ in range(2000):  # 10 s of hops: 0.8 * 0.9^2000 would be far below the smallest float
        f, held = md.postfilter_release(silent, torch.ones(32), held, pf)
    assert torch.equal(held, torch.zeros(32))
    f, held = md.postfilter_release(torch.full((32,), 0.5), torch.ones(32), held, pf)
    assert torch.allclose(held, torch.full((32,), 0.5))  # and rises again at once


def test_postfilter_ceiling_keeps_every_band_at_or_under_unity_gain(random_net):
    """The deep filter adds its taps to the gained low bins and can raise a band over its input;
    ``ceiling`` 1 caps the band gain after everything else (random_net's deep filter is random)."""
    x = torch.from_numpy(_signal(seed=3))[None]
    pf = {"kind": "expand", "k": 10.0, "pivot": 0.4, "lo": 0.2, "hi": 1.5, "release": 0.9,
          "vad_floor": 0.25, "vad_power": 1.0}

    def band_gains(postfilter):
        random_net.postfilter = postfilter
        with torch.no_grad():
            y = random_net(x)[0][:, md.GRAPH_DELAY:]
        xs = torch.stft(x[:, : y.shape[1]], 480, 240, window=torch.hann_window(480), return_complex=True)
        ys = torch.stft(y, 480, 240, window=torch.hann_window(480), return_complex=True)
        return (ys.abs() ** 2).sum(-1) / ((xs.abs() ** 2).sum(-1) + 1e-12)  # per bin, whole signal

    try:
        free = band_gains(pf)
        capped = band_gains({**pf, "ceiling": 1.0})
    finally:
        random_net.postfilter = None
    low = slice(1, md.DF_BINS)
    assert float(free[0, low].max()) > 1.05  # the check can fail: this net raises some bins
    assert float(capped[0, low].max()) < float(free[0, low].max())
    g = torch.tensor([0.5, 1.0, 2.0])
    f = md.postfilter_ceiling(g, torch.tensor([1.5, 1.0, 1.0]), {"ceiling": 1.0})
    assert torch.allclose(g * f, torch.tensor([0.75, 1.0, 1.0]))  # only a band over unity is lowered


def test_postfilter_vad_gain_goes_from_the_floor_to_unity():
    v = torch.tensor([0.0, 0.25, 1.0])
    assert torch.allclose(md.postfilter_vad_gain(v, {"vad_floor": 0.25}), torch.tensor([0.25, 0.4375, 1.0]))
    assert torch.allclose(md.postfilter_vad_gain(v, {"vad_floor": 0.25, "vad_power": 2.0}),
                          torch.tensor([0.25, 0.296875, 1.0]))
    assert torch.equal(md.postfilter_vad_gain(v, {"kind": "expand"}), torch.ones(3))


def test_postfilter_vad_keep_spares_the_bands_the_network_keeps():
    vad = torch.tensor([[0.0]])  # a word start: the speech probability still low
    geff = torch.tensor([[0.05, 0.2, 0.5, 0.9]])  # per band: noise ... clearly kept
    pf = {"vad_floor": 0.25, "vad_keep": 0.3}
    g = md.postfilter_vad_gain(vad, pf, geff)
    assert g.shape == (1, 4)
    assert float(g[0, 0]) == pytest.approx(0.25, abs=0.01)  # noise bands keep the floor
    assert float(g[0, 2]) > 0.98 and float(g[0, 3]) > 0.999  # kept bands are not floored
    assert torch.all(g[0, 1:] >= g[0, :-1])
    assert torch.equal(md.postfilter_vad_gain(vad, {"vad_floor": 0.25}, geff), torch.full((1, 1), 0.25))
    # with the speech probability high it changes nothing
    assert torch.allclose(md.postfilter_vad_gain(torch.tensor([[1.0]]), pf, geff), torch.ones(1, 4))


@pytest.mark.parametrize("release", [False, True])
def test_context_network_streams_like_the_whole_signal(tmp_path, release):
    torch.manual_seed(3)
    net = md.DenoiseNet(context=2).eval()
    with torch.no_grad():
        net.df_head.weight.normal_(0.0, 0.02)
        net.ctx.weight.normal_(0.0, 0.05)  # trained weights are not zero
    if release:
        net.postfilter = {"kind": "expand", "k": 10.0, "pivot": 0.4, "lo": 0.2, "hi": 1.5, "release": 0.9,
                          "vad_floor": 0.25, "vad_power": 1.0}
    path = ex.export(net, tmp_path / "ctx.onnx")
    assert ex.parity(net, path, seconds=1.0) <= 1e-4
    shapes = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["hushbridge.state_shapes"])
    last = f"state_{len(shapes) - 1}"
    assert shapes[last] == [1, 2 * (md.N_BANDS + 2 * md.DF_BINS)]
    assert ("state_7" in shapes) == release
    from hushbridge.models.runtime import StreamingModel

    StreamingModel(path)  # the runtime's contract check: every state has a fixed shape


def test_context_branch_starts_at_zero_and_changes_the_output_once_trained(random_net):
    net = md.DenoiseNet(context=3).eval()
    missing, unexpected = net.load_state_dict(random_net.state_dict(), strict=False)
    assert missing == ["ctx.weight"] and not unexpected
    x = torch.from_numpy(_signal()[:48000])[None]
    with torch.no_grad():
        assert torch.equal(net(x)[0], random_net(x)[0])
        net.ctx.weight.normal_(0.0, 0.05)
        assert float((net(x)[0] - random_net(x)[0]).abs().max()) > 1e-3
    # causal: the output up to a sample does not depend on the input after it
    y = x.clone()
    y[:, 30000:] = 0.0
    with torch.no_grad():
        a, b = net(x)[0], net(y)[0]
    assert torch.equal(a[:, :30000], b[:, :30000])


def test_link_reference_keeps_one_side_s_phase_and_holds_its_choice():
    spec = torch.randn(1, 1, 2, md.N_BINS)
    pair = torch.cat([spec, -spec], dim=1)  # opposite polarity: the first side, not a cancellation
    out, lv = md.link_reference(pair, (pair * pair).sum(2), torch.zeros(2, 2))
    torch.testing.assert_close(out, spec[:, 0], atol=1e-6, rtol=1e-5)
    assert lv[:, 1].tolist() == [1.0, 0.0]  # the first of equals is the reference
    # the right side 0.5 dB louder: the left stays the reference (1 dB of hold) ...
    loud = torch.cat([spec, 10 ** (0.5 / 20) * spec], dim=1)
    e = float((spec * spec).sum())
    level = torch.tensor([[e, 1.0], [10 ** 0.05 * e, 0.0]])
    _, lv = md.link_reference(loud, (loud * loud).sum(2), level)
    assert lv[:, 1].tolist() == [1.0, 0.0]
    # ... 2 dB louder, it takes over; one side silent: the other's phase at both sides' RMS
    louder = torch.cat([spec, 10 ** (2 / 20) * spec], dim=1)
    level = torch.tensor([[e, 1.0], [10 ** 0.2 * e, 0.0]])
    _, lv = md.link_reference(louder, (louder * louder).sum(2), level)
    assert lv[:, 1].tolist() == [0.0, 1.0]
    one = torch.cat([torch.zeros_like(spec), spec], dim=1)
    out, _ = md.link_reference(one, (one * one).sum(2), torch.zeros(2, 2))
    torch.testing.assert_close(out, spec[:, 0] / 2 ** 0.5, atol=1e-6, rtol=1e-5)
