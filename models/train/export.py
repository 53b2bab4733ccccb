"""Export a trained checkpoint to the streaming ONNX contract of ``models/README.md``.

Usage::

    python -m hushbridge.models.train.export \
        --checkpoint models/train/checkpoints/denoise_shipped.pt --out models/denoise.onnx

The default checkpoint is ``denoise_shipped.pt``, the weights chosen with ``select`` (the
lowest validation loss, ``denoise_best.pt``, is not what listeners prefer; see models/denoise.md).

Graph (opset 17): inputs ``audio_in`` [1, 240] float32, ``state_0`` .. ``state_5`` (and
``state_6`` with a post-filter release, ``state_7`` with encoder context; see
:class:`.model.StreamingDenoise`), ``atten_lim_db`` [1]; outputs ``audio_out`` [1, 240],
``state_<k>_out``, ``activity`` [1, 1] (speech probability) and ``gains`` [1, 32] (ERB-band gains).
States start as zeros. The leading dimension of every tensor but ``atten_lim_db`` is a dynamic
batch: one run can serve every channel of a stream (models/README.md). Metadata: ``hushbridge.sample_rate`` 48000, ``hushbridge.hop`` 240,
``hushbridge.latency_samples`` 240 (the graph's own delay, window 480 - hop 240, as models/README.md
defines it; the runtime's hop FIFO adds 239, so the effect reports 479), ``hushbridge.name``,
``hushbridge.version``, ``hushbridge.state_shapes`` and ``hushbridge.n_bands``.

After export the graph is checked with onnx.checker and, hop by hop in onnxruntime, against the
torch model run on a whole test signal (``max |diff|`` printed; must be <= 1e-4). The command
line writes a temporary file beside ``--out`` and renames it over ``--out`` only when that check
passes: a failed export never replaces the shipped model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .model import HOP, LATENCY_SAMPLES, N_BANDS, SR, DenoiseNet, StreamingDenoise

OPSET = 17
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "denoise.onnx"


def state_names(n: int) -> list[str]:
    return [f"state_{k}" for k in range(n)]


def export(net: DenoiseNet, path: str | Path, name: str = "denoise", version: str = "0.1.0") -> Path:
    """Write ``net`` as a one-hop streaming ONNX graph with metadata; returns the path."""
    import onnx

    path = Path(path)
    net = net.eval()
    step = StreamingDenoise(net).eval()
    shapes = step.state_shapes()
    # traced with two streams so that nothing specialises on a batch of one; the batch is dynamic
    args = (torch.zeros(2, HOP),) + tuple(torch.zeros(step.state_shapes(2)[k]) for k in range(len(shapes))) \
        + (torch.tensor([100.0]),)
    names = state_names(len(shapes))
    in_names = ["audio_in"] + names + ["atten_lim_db"]
    out_names = ["audio_out"] + [f"{s}_out" for s in names] + ["activity", "gains"]
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = {n: {0: "batch"} for n in in_names + out_names if n != "atten_lim_db"}
        torch.onnx.export(step, args, str(tmp), input_names=in_names, output_names=out_names,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False, dynamic_axes=batch)
    model = onnx.load(str(tmp))
    tmp.unlink()
    meta = {
        "hushbridge.sample_rate": str(SR),
        "hushbridge.hop": str(HOP),
        "hushbridge.latency_samples": str(LATENCY_SAMPLES),
        "hushbridge.name": name,
        "hushbridge.version": version,
        "hushbridge.state_shapes": json.dumps({n: list(s) for n, s in zip(names, shapes)}),
        "hushbridge.n_bands": str(N_BANDS),
        "hushbridge.postfilter": json.dumps(net.postfilter),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    model.producer_name = "hushbridge.models.train.export"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run_onnx(path: str | Path, x: np.ndarray, atten_lim_db: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """Feed ``x`` (1-D, 48 kHz) hop by hop through the ONNX graph; returns (output, activity per hop)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    states = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtype=np.float32)
              for i in sess.get_inputs() if i.name.startswith("state_")}
    outs, acts = [], []
    lim = np.array([atten_lim_db], dtype=np.float32)
    n = x.size // HOP
    for k in range(n):
        feed = {"audio_in": x[None, k * HOP : (k + 1) * HOP].astype(np.float32), "atten_lim_db": lim, **states}
        res = sess.run(None, feed)
        names = [o.name for o in sess.get_outputs()]
        r = dict(zip(names, res))
        outs.append(r["audio_out"][0])
        acts.append(float(r["activity"].flat[0]))
        states = {s: r[f"{s}_out"] for s in states}
    return np.concatenate(outs) if outs else np.zeros(0, np.float32), np.array(acts)


def parity(net: DenoiseNet, path: str | Path, seconds: float = 2.0, seed: int = 0) -> float:
    """Max |ONNX hop-by-hop - torch whole-signal| on noise-plus-tones test input."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR) // HOP * HOP
    t = np.arange(n) / SR
    x = (0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 220 * t) * (t > 0.5)).astype(np.float32)
    with torch.no_grad():
        ref = net.eval()(torch.from_numpy(x)[None], use_fft=False)[0][0].numpy()
    got, _ = run_onnx(path, x)
    return float(np.max(np.abs(got - ref)))


DEFAULT_CONFIG = Path(__file__).resolve().parent / "denoise.toml"


def resolve_postfilter(arg: str | None, config: str | Path = DEFAULT_CONFIG) -> dict | None:
    """The run-time post-filter (:func:`.model.postfilter_scale`): ``None`` or ``"config"`` reads the
    ``[postfilter]`` table of ``config``, ``"none"`` turns it off, a path ending in ``.json`` reads
    that file (``fit_postfilter --out``), anything else is a TOML inline table such as
    ``{kind = "dfn", beta = 0.05}``. Besides ``kind`` and its keys, a table may hold
    ``release`` (:func:`.model.postfilter_release`), ``vad_floor``/``vad_power``/``vad_keep``
    (:func:`.model.postfilter_vad_gain`) and ``ceiling`` (:func:`.model.postfilter_ceiling`)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    if arg is None or arg == "config":
        with open(config, "rb") as f:
            pf = tomllib.load(f).get("postfilter")
        return dict(pf) if pf else None
    if arg == "none":
        return None
    if arg.endswith(".json"):
        return dict(json.loads(Path(arg).read_text()))
    return dict(tomllib.loads(f"pf = {arg}")["pf"])


def load_checkpoint(path: str | Path) -> tuple[DenoiseNet, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ck.get("config", {})
    net = DenoiseNet.from_config(cfg)
    net.load_state_dict(ck["model"])
    return net.eval(), ck


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Export a denoise checkpoint to streaming ONNX")
    ap.add_argument("--checkpoint", default=str(Path(__file__).resolve().parent / "checkpoints" / "denoise_shipped.pt"),
                    help="checkpoint to export (default: denoise_shipped.pt, the weights that ship)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--postfilter", default="config",
                    help='"config" (the [postfilter] table of --config), "none", or a TOML inline table')
    ap.add_argument("--config", default=str(DEFAULT_CONFIG))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    net, ck = load_checkpoint(args.checkpoint)
    net.postfilter = resolve_postfilter(args.postfilter, args.config)
    cfg = ck.get("config", {})
    version = f"{cfg.get('version', '0.1.0')}+step{ck.get('step', 0)}"
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.onnx")
    try:
        export(net, tmp, name=cfg.get("name", "denoise"), version=version)
        err = parity(net, tmp)
        size = tmp.stat().st_size
        if err > 1e-4:
            print(f"parity check FAILED: streaming ONNX vs torch max |diff| = {err:.2e} (> 1e-4); "
                  f"{out} left as it was", file=sys.stderr)
            return 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out} ({size / 1e6:.2f} MB, step {ck.get('step')}); streaming ONNX vs torch max |diff| = {err:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
