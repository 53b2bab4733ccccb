"""Export a trained checkpoint to the streaming ONNX contract of ``models/README.md``.

Usage::

    python -m hushbridge.models.train.export \
        --checkpoint models/train/checkpoints/denoise_shipped.pt --out models/denoise.onnx

The default checkpoint is ``denoise_shipped.pt``, the weights chosen with ``select`` (the
lowest validation loss, ``denoise_best.pt``, is not what listeners prefer; see models/denoise.md).

Two graphs: ``--out`` runs every channel on its own, ``<out>.linked.onnx`` (:func:`linked_path`)
runs link groups, a stereo pair as one (the effect's default for stereo).

Graph (opset 17): inputs ``audio_in`` [1, 240] float32, ``state_0`` .. ``state_5`` (and
``state_6`` with a post-filter release, ``state_7`` with encoder context; see
:class:`.model.StreamingDenoise`), ``atten_lim_db`` [1]; outputs ``audio_out`` [1, 240],
``state_<k>_out``, ``activity`` [1, 1] (speech probability) and ``gains`` [1, 32] (ERB-band gains).
States start as zeros. The leading dimension of every tensor but ``atten_lim_db`` is a dynamic
``batch``: one run serves every channel of a stream. In the linked graph it is ``channels`` for
the audio, the analysis and overlap-add buffers, the deep filter's past and each channel's level,
``groups`` for the network's states and outputs (models/README.md). Metadata: ``hushbridge.sample_rate`` 48000, ``hushbridge.hop`` 240,
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

from hushbridge.models.runtime import linked_path

from .model import HOP, LATENCY_SAMPLES, N_BANDS, SR, DenoiseNet, StreamingDenoise

OPSET = 17
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "denoise.onnx"


def state_names(n: int) -> list[str]:
    return [f"state_{k}" for k in range(n)]


def export(net: DenoiseNet, path: str | Path, name: str = "denoise", version: str = "0.1.0",
           linked: bool = False) -> Path:
    """Write ``net`` as a one-hop streaming ONNX graph with metadata; returns the path.
    ``linked``: the graph for link groups (:class:`.model.StreamingDenoise`)."""
    import onnx

    path = Path(path)
    net = net.eval()
    step = StreamingDenoise(net, linked=linked).eval()
    shapes = step.state_shapes()
    # traced with several rows so that nothing specialises on one; the linked graph with four
    # channels in two groups (not on one group, nor on groups of one); the first dimensions are dynamic
    rows = {"batch": 4, "groups": 2} if linked else {"batch": 2}
    args = (torch.zeros(rows["batch"], HOP),) + tuple(torch.zeros(s) for s in step.state_shapes(**rows)) \
        + (torch.tensor([100.0]),)
    names = state_names(len(shapes))
    in_names = ["audio_in"] + names + ["atten_lim_db"]
    out_names = ["audio_out"] + [f"{s}_out" for s in names] + ["activity", "gains"]
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grouped = {n for n, g in zip(names, step.group_states()) if g}
        if linked:
            batch = {n: {0: "groups" if n.removesuffix("_out") in grouped or n in ("activity", "gains") else "channels"}
                     for n in in_names + out_names if n != "atten_lim_db"}
        else:
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


def run_onnx(path: str | Path, x: np.ndarray, atten_lim_db: float = 100.0,
             groups: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feed ``x`` (48 kHz; 1-D, or [channels, T] in ``groups`` link groups, default one per
    channel) hop by hop through the ONNX graph; returns (output shaped like ``x``, activity per
    hop [groups, K] or, for 1-D ``x``, [K])."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    xs = np.atleast_2d(x)
    ch = xs.shape[0]
    g = ch if groups is None else groups
    if g != ch and not any(i.shape[0] == "groups" for i in sess.get_inputs()):
        raise ValueError(f"{path}: a per-channel graph has no link groups (its .linked.onnx has)")
    states = {i.name: np.zeros([(g if i.shape[0] == "groups" else ch)] + list(i.shape[1:]), dtype=np.float32)
              for i in sess.get_inputs() if i.name.startswith("state_")}
    outs, acts = [], []
    lim = np.array([atten_lim_db], dtype=np.float32)
    n = xs.shape[1] // HOP
    names = [o.name for o in sess.get_outputs()]
    for k in range(n):
        feed = {"audio_in": xs[:, k * HOP : (k + 1) * HOP].astype(np.float32), "atten_lim_db": lim, **states}
        r = dict(zip(names, sess.run(None, feed)))
        outs.append(r["audio_out"])
        acts.append(r["activity"][:, 0])
        states = {s: r[f"{s}_out"] for s in states}
    out = np.concatenate(outs, axis=1) if outs else np.zeros((ch, 0), np.float32)
    act = np.stack(acts, axis=1) if acts else np.zeros((g, 0))
    return (out[0], act[0]) if x.ndim == 1 else (out, act)


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


def parity_linked(net: DenoiseNet, path: str | Path, seconds: float = 2.0, seed: int = 1) -> float:
    """Max |ONNX hop-by-hop - torch whole-signal| for a stereo pair linked as one group (the
    channels differ: their own noise, the tone louder on the left)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR) // HOP * HOP
    t = np.arange(n) / SR
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (t > 0.5)
    x = np.stack([0.05 * rng.standard_normal(n) + tone, 0.03 * rng.standard_normal(n) + 0.5 * tone]).astype(np.float32)
    with torch.no_grad():
        ref = net.eval().forward_linked(torch.from_numpy(x), use_fft=False)[0].numpy()
    got, _ = run_onnx(path, x, groups=1)
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
    out_linked = linked_path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.onnx")
    tmp_linked = out.with_name(f".{out.name}.{os.getpid()}.linked.tmp.onnx")
    try:
        export(net, tmp, name=cfg.get("name", "denoise"), version=version)
        export(net, tmp_linked, name=cfg.get("name", "denoise"), version=version, linked=True)
        err = parity(net, tmp)
        err_linked = parity_linked(net, tmp_linked)
        size = tmp.stat().st_size
        if max(err, err_linked) > 1e-4:
            print(f"parity check FAILED: streaming ONNX vs torch max |diff| = {err:.2e}, a linked stereo "
                  f"pair {err_linked:.2e} (> 1e-4); {out} and {out_linked.name} left as they were", file=sys.stderr)
            return 1
        os.replace(tmp, out)
        os.replace(tmp_linked, out_linked)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_linked.unlink(missing_ok=True)
    print(f"wrote {out} ({size / 1e6:.2f} MB, step {ck.get('step')}) and {out_linked.name}; streaming ONNX vs "
          f"torch max |diff| = {err:.2e}, a linked stereo pair {err_linked:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
