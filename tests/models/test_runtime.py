"""StreamingModel: the streaming ONNX contract (models/README.md) on small real graphs."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_graphs import contract_graph, reference  # noqa: E402

from hushbridge.models.runtime import ModelError, ModelNotFoundError, StreamingModel  # noqa: E402

HOP = 160


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    return {
        "delay": contract_graph(d / "delay.onnx", hop=HOP, delay=37),
        "leaky": contract_graph(d / "leaky.onnx", hop=HOP, delay=37, leaky=0.9, activity=True, atten=True),
        "nodelay": contract_graph(d / "nodelay.onnx", hop=HOP, delay=0, gain=0.5),
        "dir": d,
    }


def run(model: StreamingModel, x: np.ndarray, channel: int = 0) -> np.ndarray:
    hop = model.hop
    out = []
    for k in range(len(x) // hop):
        model.audio_in[0] = x[k * hop:(k + 1) * hop]
        out.append(model.run_hop(channel)[0].copy())
    return np.concatenate(out)


def test_metadata_states_and_session_options(graphs):
    m = StreamingModel(graphs["leaky"])
    i = m.info
    assert (i.sample_rate, i.hop, i.latency_samples, i.name) == (16000, HOP, 37, "testgraph")
    assert dict(i.states) == {"state_buf": (1, 37), "state_lvl": (1, 1)}
    assert i.has_atten_lim and i.has_activity
    assert dict(i.extra_outputs) == {"activity": (1,)}
    so = m.session.get_session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert m.session.get_providers() == ["CPUExecutionProvider"]
    assert "hop=160" in repr(m) and m.latency_samples == 37


def test_impulse_comes_out_latency_samples_later(graphs):
    m = StreamingModel(graphs["delay"])
    m.prepare(1)
    for at in (0, 1, 122, 159, 160, 300):
        m.reset()
        x = np.zeros(HOP * 6, np.float32)
        x[at] = 1.0
        y = run(m, x)
        assert int(np.argmax(y)) == at + m.latency_samples
        assert y.max() == 1.0 and np.count_nonzero(y) == 1


def test_matches_reference_with_recurrent_state(graphs):
    m = StreamingModel(graphs["leaky"])
    m.prepare(1)
    x = (np.random.default_rng(0).standard_normal(HOP * 30) * 0.3).astype(np.float32)
    y = run(m, x)
    np.testing.assert_allclose(y, reference(x, hop=HOP, delay=37, leaky=0.9), atol=2e-6)
    assert 0.0 < m.extras[0]["activity"][0] < 1.0


def test_state_is_swapped_not_copied_and_reset_restores_zero(graphs):
    m = StreamingModel(graphs["leaky"])
    m.prepare(1)
    first = [a.ctypes.data for a in m.state(0)]
    x = (np.random.default_rng(1).standard_normal(HOP * 3) * 0.3).astype(np.float32)
    y1 = run(m, x)
    assert [a.ctypes.data for a in m.state(0)] != first  # odd number of hops: the other set
    assert any(np.any(a != 0) for a in m.state(0))
    m.reset()
    assert all(np.all(a == 0) for a in m.state(0))
    np.testing.assert_array_equal(run(m, x), y1)


def test_channels_have_independent_state(graphs):
    m = StreamingModel(graphs["leaky"])
    m.prepare(2)
    rng = np.random.default_rng(2)
    a = (rng.standard_normal(HOP * 10) * 0.5).astype(np.float32)
    b = (rng.standard_normal(HOP * 10) * 0.01).astype(np.float32)
    ya, yb = [], []
    for k in range(10):  # interleaved, as the effect runs them
        m.audio_in[0] = a[k * HOP:(k + 1) * HOP]
        ya.append(m.run_hop(0)[0].copy())
        m.audio_in[0] = b[k * HOP:(k + 1) * HOP]
        yb.append(m.run_hop(1)[0].copy())
    solo = StreamingModel(graphs["leaky"])
    solo.prepare(1)
    np.testing.assert_array_equal(np.concatenate(yb), run(solo, b))
    solo.reset()
    np.testing.assert_array_equal(np.concatenate(ya), run(solo, a))


def test_atten_lim_input_is_bound(graphs):
    p = contract_graph(graphs["dir"] / "supp.onnx", hop=HOP, delay=0, atten=True, suppress=True)
    m = StreamingModel(p)
    m.prepare(1)
    m.audio_in[0] = 1.0
    m.atten_lim_db[0] = 20.0
    np.testing.assert_allclose(m.run_hop(0), 0.1, rtol=1e-6)
    m.atten_lim_db[0] = 6.0
    np.testing.assert_allclose(m.run_hop(0), 10 ** (-6 / 20), rtol=1e-6)


def test_run_hop_does_not_allocate(graphs):
    m = StreamingModel(graphs["leaky"])
    m.prepare(2)
    for _ in range(50):
        m.run_hop(0)
        m.run_hop(1)
    tracemalloc.start()
    try:
        s0 = tracemalloc.take_snapshot()
        for _ in range(2000):
            m.run_hop(0)
            m.run_hop(1)
        s1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(st.size_diff for st in s1.compare_to(s0, "filename"))
    assert growth < 4096, growth


def test_nonfinite_state_is_detected(graphs):
    m = StreamingModel(graphs["leaky"])
    m.prepare(1)
    assert m.state_finite(0)
    m.state(0)[1][0, 0] = np.nan
    assert not m.state_finite(0)
    m.reset(0)
    assert m.state_finite(0)


# == contract errors ==========================================================================
def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model file not found: .*nothing.onnx"):
        StreamingModel(tmp_path / "nothing.onnx")


def test_garbage_file_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load .*bad.onnx"):
        StreamingModel(p)


def test_missing_metadata_is_a_clear_error(graphs):
    p = contract_graph(graphs["dir"] / "nometa.onnx", hop=HOP, delay=3,
                       metadata={"hushbridge.hop": ""})
    with pytest.raises(ModelError, match="must be integers"):
        StreamingModel(p)


def test_hop_mismatch_is_a_clear_error(graphs):
    p = contract_graph(graphs["dir"] / "hop.onnx", hop=HOP, delay=3, metadata={"hushbridge.hop": "240"})
    with pytest.raises(ModelError, match=r"'audio_in' has shape \(1, 160\), the metadata says \[1, 240\]"):
        StreamingModel(p)


def test_state_without_output_is_a_clear_error(graphs):
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(graphs["delay"]))
    g = model.graph
    keep = [o for o in g.output if o.name != "state_buf_out"]
    del g.output[:]
    g.output.extend(keep)
    g.output.append(helper.make_tensor_value_info("state_buf_out2", TensorProto.FLOAT, [1, 37]))
    for node in g.node:
        node.output[:] = ["state_buf_out2" if o == "state_buf_out" else o for o in node.output]
    p = graphs["dir"] / "noout.onnx"
    onnx.save(model, str(p))
    with pytest.raises(ModelError, match="state input 'state_buf' has no output 'state_buf_out'"):
        StreamingModel(p)


def test_batched_graph_runs_every_channel_in_one_call(graphs):
    from onnx_graphs import reference

    p = contract_graph(graphs["dir"] / "leaky_b.onnx", hop=HOP, delay=37, leaky=0.9, activity=True, batched=True)
    m = StreamingModel(p)
    assert m.info.batched
    m.prepare(3)
    assert m.audio_in.shape == (3, HOP) and m.extras[2]["activity"].shape == (1, 1)
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 20 * HOP)) * np.array([[0.3], [0.05], [0.0]])).astype(np.float32)
    got = np.zeros_like(x)
    for k in range(20):
        m.audio_in[...] = x[:, k * HOP:(k + 1) * HOP]
        got[:, k * HOP:(k + 1) * HOP] = m.run_all()
    for c in range(3):
        np.testing.assert_allclose(got[c], reference(x[c], hop=HOP, delay=37, leaky=0.9), rtol=1e-5, atol=1e-7)
    assert m.extras[0]["activity"].flat[0] > m.extras[1]["activity"].flat[0] > m.extras[2]["activity"].flat[0]
    m.reset(0)
    assert not any(s.any() for s in m.state(0)) and any(s.any() for s in m.state(1))
    assert m.state_finite(1)
    m.state(1)[0][0, 0] = np.inf
    assert not m.state_finite(1) and m.state_finite(0)
    # run_all allocates nothing per call either, once warm (onnxruntime allocates during about the
    # first 100 runs of a graph with a dynamic batch; ModelEffect.prepare does those)
    for _ in range(200):
        m.run_all()
    # two windows of 2000 calls: an allocation per call grows both by >= 2000 x its size, while a
    # one-off (a dict resize or a frame elsewhere in the process, seen under load) shows in one only
    growth = []
    tracemalloc.start()
    try:
        for _ in range(2):
            s0 = tracemalloc.take_snapshot()
            for _ in range(2000):
                m.run_all()
            s1 = tracemalloc.take_snapshot()
            growth.append(sum(st.size_diff for st in s1.compare_to(s0, "filename")))
    finally:
        tracemalloc.stop()
    assert min(growth) < 4096, growth


def test_batched_audio_with_a_fixed_state_is_a_clear_error(graphs):
    p = contract_graph(graphs["dir"] / "half_b.onnx", hop=HOP, delay=37, batched=True, fixed_state=True)
    with pytest.raises(ModelError, match="dynamic batch dimension but 'state_buf' has shape"):
        StreamingModel(p)


def test_run_all_needs_a_batched_graph(graphs):
    m = StreamingModel(graphs["delay"])
    m.prepare(1)
    with pytest.raises(ModelError, match="run_all"):
        m.run_all()


def test_a_gone_models_session_is_reused_with_its_warm_shapes(graphs, tmp_path):
    """Creating an onnxruntime session holds the GIL for ~100 ms: a model of the same file made
    after another is gone (a preset loaded live again) takes the idle session instead."""
    import gc
    import shutil

    path = tmp_path / "pooled.onnx"
    shutil.copy(graphs["leaky"], path)
    first = StreamingModel(path)
    first.prepare(1)
    session = first.session
    first.warmed.add(1)
    x = np.random.default_rng(2).standard_normal(HOP * 8).astype(np.float32) * 0.1
    expected = run(first, x)
    del first
    gc.collect()
    second = StreamingModel(path)
    assert second.session is session and second.warmed == {1}
    second.prepare(1)  # fresh state on the reused session: the same output as the first model
    np.testing.assert_array_equal(run(second, x), expected)
    third = StreamingModel(path)  # the only idle session is taken: a new one
    assert third.session is not session and third.warmed == set()
    path.write_bytes(path.read_bytes())  # a rewritten file is another model: nothing reused
    del second
    gc.collect()
    import os
    os.utime(path, ns=(1, 1))
    assert StreamingModel(path).session is not session


def _shipped(name: str = "denoise.onnx"):
    from hushbridge.models.runtime import default_model_path

    path = default_model_path(name)
    if not path.is_file():
        pytest.skip(f"{name} is not installed")
    return path


def _run_rows(m: StreamingModel, x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for k in range(x.shape[1] // m.hop):
        m.audio_in[...] = x[:, k * m.hop:(k + 1) * m.hop]
        out[:, k * m.hop:(k + 1) * m.hop] = m.run_all()
    return out


@pytest.mark.parametrize("name", ["denoise.onnx", "dereverb.onnx", "isolate.onnx"])
def test_shipped_models_link_a_stereo_pair(name):
    """Linked, the network runs once for the pair and its coefficients apply to both sides: a
    pair in opposite polarity is the mono output twice, one side inverted (a mean of the sides
    would cancel)."""
    from hushbridge.models.runtime import linked_path

    path = linked_path(_shipped(name))
    assert not StreamingModel(_shipped(name)).info.linkable  # the per-channel graph: as before
    m = StreamingModel(path)
    assert m.info.linkable and {"state_1", "state_2", "state_3", "activity", "gains"} <= m.info.group_tensors
    assert "state_0" not in m.info.group_tensors and "state_5" not in m.info.group_tensors
    m.prepare(2, linked=True)
    assert m.linked and m.audio_in.shape == (2, m.hop)
    shared = {n: np.shares_memory(a, b) for (n, _), a, b in zip(m.info.states, m.state(0), m.state(1))}
    assert shared["state_3"] and shared["state_1"]  # the group's row, one for both channels
    assert not shared["state_0"] and not shared["state_5"]  # each channel's own buffers
    m.atten_lim_db[0] = 100.0
    rng = np.random.default_rng(40)
    n = 40 * m.hop
    t = np.arange(n) / 48000
    tone = 0.2 * np.sin(2 * np.pi * 200 * t) * (t > 0.05)
    x = np.stack([tone + 0.05 * rng.standard_normal(n), 0.6 * tone + 0.02 * rng.standard_normal(n)]).astype(np.float32)
    mono = StreamingModel(path)
    mono.prepare(1)
    mono.atten_lim_db[0] = 100.0
    alone = _run_rows(mono, x[:1])
    m.reset()
    flip = _run_rows(m, np.stack([x[0], -x[0]]))
    np.testing.assert_allclose(flip[0], alone[0], atol=1e-5)
    np.testing.assert_allclose(flip[1], -alone[0], atol=1e-5)
    m.reset()
    linked = _run_rows(m, x)
    apart = StreamingModel(path)
    apart.prepare(2)
    apart.atten_lim_db[0] = 100.0
    assert np.abs(_run_rows(apart, x) - linked).max() > 1e-3  # and it is not each side on its own
    assert np.abs(m.extras[0]["activity"] - m.extras[1]["activity"]).max() == 0.0  # one group, one value
    m.reset(0)  # a channel's reset is the group's: they share the network's state
    assert all(not s.any() for c in (0, 1) for s in m.state(c))


def test_linking_needs_a_graph_with_groups(graphs):
    from onnx_graphs import contract_graph

    p = contract_graph(graphs["dir"] / "leaky_link.onnx", hop=HOP, delay=37, leaky=0.9, batched=True)
    m = StreamingModel(p)
    assert m.info.batched and not m.info.linkable
    with pytest.raises(ModelError, match="cannot link channels"):
        m.prepare(2, linked=True)
    m.prepare(1, linked=True)  # one channel has nothing to link
    assert not m.linked


def test_a_graph_with_two_group_dimensions_is_a_clear_error(tmp_path):
    import onnx

    from hushbridge.models.runtime import linked_path

    model = onnx.load(str(linked_path(_shipped())))
    for v in list(model.graph.input) + list(model.graph.output):
        if v.name in ("state_2", "state_2_out"):
            v.type.tensor_type.shape.dim[0].dim_param = "other"
    p = tmp_path / "two_groups.onnx"
    onnx.save(model, str(p))
    with pytest.raises(ModelError, match="at most one group dimension"):
        StreamingModel(p)
