"""Small real ONNX graphs that follow the streaming contract (models/README.md), built with onnx.helper.

``contract_graph`` makes a pure delay line (state = the last ``delay`` input samples) with optional
recurrent "leaky integrator" gain, ``activity`` output and ``atten_lim_db`` input. Its latency is
known exactly, so the runtime and the Effect can be checked to the sample.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def contract_graph(path: str | Path, *, sample_rate: int = 16000, hop: int = 160, delay: int = 37,
                   gain: float = 1.0, leaky: float | None = None, activity: bool = False,
                   atten: bool = False, suppress: bool = False, metadata: dict | None = None,
                   name: str = "testgraph", batched: bool = False, fixed_state: bool = False) -> Path:
    """Write a contract graph to ``path`` and return the path.

    audio_out = gain * g * (audio_in delayed by ``delay`` samples), where
    ``g = 1 / (1 + 4 * s)`` and ``s`` is a leaky integrator of the hop's mean square
    (``s' = leaky * s + (1 - leaky) * mean(x^2)``, state ``state_lvl`` [1, 1]) when ``leaky`` is set, else 1.
    ``suppress``: the output is 0 (a model that removes everything), or with ``atten`` the input
    scaled by 10^(-atten_lim_db / 20) (it removes everything down to the limit).
    ``activity`` adds an output ``activity`` [1] = s / (s + 0.001).
    ``batched``: the leading dimension of audio, states and activity ([batch, 1]) is a dynamic
    ``batch`` (one run for all channels); ``fixed_state`` then leaves ``state_buf`` at [1, delay]
    (a broken batched graph).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    b = "batch" if batched else 1
    inputs = [helper.make_tensor_value_info("audio_in", TensorProto.FLOAT, [b, hop])]
    outputs = [helper.make_tensor_value_info("audio_out", TensorProto.FLOAT, [b, hop])]

    def const(nm: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), nm))
        return nm

    if delay > 0:
        sb = 1 if fixed_state else b
        inputs.append(helper.make_tensor_value_info("state_buf", TensorProto.FLOAT, [sb, delay]))
        outputs.append(helper.make_tensor_value_info("state_buf_out", TensorProto.FLOAT, [sb, delay]))
        nodes.append(helper.make_node("Concat", ["state_buf", "audio_in"], ["cat"], axis=1))
        ax = const("ax1", np.array([1], np.int64))
        nodes.append(helper.make_node("Slice", ["cat", const("s0", np.array([0], np.int64)),
                                                const("e0", np.array([hop], np.int64)), ax], ["delayed"]))
        nodes.append(helper.make_node("Slice", ["cat", const("s1", np.array([hop], np.int64)),
                                                const("e1", np.array([hop + delay], np.int64)), ax],
                                      ["state_buf_out"]))
    else:
        nodes.append(helper.make_node("Identity", ["audio_in"], ["delayed"]))
    cur = "delayed"
    nodes.append(helper.make_node("Mul", [cur, const("gain", np.array(gain, np.float32))], ["gained"]))
    cur = "gained"
    if leaky is not None:
        inputs.append(helper.make_tensor_value_info("state_lvl", TensorProto.FLOAT, [b, 1]))
        outputs.append(helper.make_tensor_value_info("state_lvl_out", TensorProto.FLOAT, [b, 1]))
        nodes.append(helper.make_node("Mul", ["audio_in", "audio_in"], ["sq"]))
        nodes.append(helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[1], keepdims=1))
        nodes.append(helper.make_node("Mul", ["state_lvl", const("a", np.array(leaky, np.float32))], ["sa"]))
        nodes.append(helper.make_node("Mul", ["ms", const("b", np.array(1.0 - leaky, np.float32))], ["mb"]))
        nodes.append(helper.make_node("Add", ["sa", "mb"], ["state_lvl_out"]))
        nodes.append(helper.make_node("Mul", ["state_lvl_out", const("four", np.array(4.0, np.float32))], ["s4"]))
        nodes.append(helper.make_node("Add", ["s4", const("one", np.array(1.0, np.float32))], ["den"]))
        nodes.append(helper.make_node("Div", [cur, "den"], ["leveled"]))
        cur = "leveled"
        if activity:
            outputs.append(helper.make_tensor_value_info("activity", TensorProto.FLOAT, [b, 1] if batched else [1]))
            nodes.append(helper.make_node("Add", ["state_lvl_out", const("eps", np.array(1e-3, np.float32))],
                                          ["sd"]))
            nodes.append(helper.make_node("Div", ["state_lvl_out", "sd"], ["act2"]))
            shp = np.array([-1, 1] if batched else [1], np.int64)
            nodes.append(helper.make_node("Reshape", ["act2", const("shp1", shp)], ["activity"]))
    if atten:
        inputs.append(helper.make_tensor_value_info("atten_lim_db", TensorProto.FLOAT, [1]))
    if suppress:
        if atten:
            nodes.append(helper.make_node("Div", ["atten_lim_db", const("m20", np.array(-20.0, np.float32))],
                                          ["ex"]))
            nodes.append(helper.make_node("Pow", [const("ten", np.array(10.0, np.float32)), "ex"], ["lim"]))
            nodes.append(helper.make_node("Mul", [cur, "lim"], ["audio_out"]))
        else:
            nodes.append(helper.make_node("Mul", [cur, const("zero", np.array(0.0, np.float32))], ["audio_out"]))
    else:
        if atten:  # consume the input without changing the audio
            nodes.append(helper.make_node("Mul", ["atten_lim_db", const("z2", np.array(0.0, np.float32))], ["az"]))
            nodes.append(helper.make_node("Add", [cur, "az"], ["audio_out"]))
        else:
            nodes.append(helper.make_node("Identity", [cur], ["audio_out"]))
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"hushbridge.sample_rate": str(sample_rate), "hushbridge.hop": str(hop),
            "hushbridge.latency_samples": str(delay), "hushbridge.name": name, "hushbridge.version": "0"}
    meta.update(metadata or {})
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def reference(x: np.ndarray, *, hop: int, delay: int, gain: float = 1.0, leaky: float | None = None) -> np.ndarray:
    """What ``contract_graph`` computes on the mono signal ``x`` (fed hop by hop, graph time)."""
    n = len(x) // hop * hop
    x = x[:n].astype(np.float64)
    d = np.concatenate([np.zeros(delay), x])[:n] * gain
    if leaky is None:
        return d.astype(np.float32)
    s = 0.0
    out = np.empty(n)
    for k in range(n // hop):
        seg = x[k * hop:(k + 1) * hop]
        s = leaky * s + (1 - leaky) * np.mean(seg * seg)
        out[k * hop:(k + 1) * hop] = d[k * hop:(k + 1) * hop] / (1 + 4 * s)
    return out.astype(np.float32)
