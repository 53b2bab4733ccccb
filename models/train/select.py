"""Choose between checkpoints on validation mixtures from the **training** split (never the
evaluation split): PESQ-WB, SI-SDR and DNSMOS P.835 (SIG/BAK/OVRL) of each checkpoint's output,
and the level of word onsets (:func:`onset_level_db`).

Usage::

    python -m hushbridge.models.train.select CHECKPOINT... [--clips 24] [--seconds 6] [--json out.json]

A ``denoise_snapshots.pt`` (``train --snapshot-every``) counts as one checkpoint per step it holds
(``denoise_snapshots.pt#32400,32800``: those steps only).

The mixtures come from :class:`.data.MixtureSampler` with the checkpoint's own config, stream
:data:`STREAM` (training uses stream 0, the validation loss stream 1), speech always present, at
the ``denoise`` effect's default attenuation limit (40 dB). Each checkpoint runs the whole-signal
torch model (the same arithmetic as the streaming ONNX export); its output is aligned by the
240-sample graph delay, scored at 16 kHz against the training target (early-reverberant speech).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import soxr
import torch

from .data import MixtureSampler
from .evaluate import onset_level_db, si_sdr
from .export import load_checkpoint, resolve_postfilter
from .model import GRAPH_DELAY, SR, DenoiseNet
from .train import mix_config

STREAM = 7
ATTEN_LIM_DB = 40.0  # the denoise effect's default reduction_db


def validation_clips(cfg: dict, clips: int, seconds: float, pack: str | None = None,
                     dev_noises: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``clips`` mixtures from the training split. ``dev_noises`` N: only real noise, from the
    dev pool of ``data.dev_noise_every`` N (recordings a run with that setting never trains on)."""
    # the same mixtures for every run: training-only augmentation (speed, noise) stays off
    mc = replace(mix_config(cfg), seconds=seconds, p_no_speech=0.0, p_speed=0.0, p_noise_aug=0.0,
                 dev_noise_every=dev_noises)
    if dev_noises:
        mc = replace(mc, p_real_noise=1.0)
    sampler = MixtureSampler(mc, seed=int(cfg["seed"]), verbose=False, pack=pack)
    if dev_noises:
        if not sampler.dev_noise:
            raise ValueError(f"--dev-noises {dev_noises}: no dev noise recordings among {len(sampler.noise)}")
        sampler.noise = sampler.dev_noise
    out: list[tuple[np.ndarray, np.ndarray]] = []
    per = 8
    for i in range(-(-clips // per)):
        noisy, target, _ = sampler.batch(i, per, stream=STREAM)
        out += list(zip(noisy, target))
    return out[:clips]


def score(est48: np.ndarray, ref48: np.ndarray) -> dict[str, float]:
    from pesq import pesq
    from speechmos import dnsmos

    est = soxr.resample(est48, SR, 16000, quality="HQ").astype(np.float64)
    ref = soxr.resample(ref48, SR, 16000, quality="HQ").astype(np.float64)
    m = {"si_sdr": si_sdr(est, ref)}
    try:
        m["pesq"] = float(pesq(16000, ref, est, "wb"))
    except Exception:  # noqa: BLE001 - pesq raises on silent output
        m["pesq"] = float("nan")
    peak = float(np.abs(est).max()) or 1.0
    d = dnsmos.run(np.clip(est / max(peak, 1.0), -1, 1).astype(np.float32), sr=16000)
    m.update(dnsmos_sig=float(d["sig_mos"]), dnsmos_bak=float(d["bak_mos"]), dnsmos_ovrl=float(d["ovrl_mos"]))
    m["onset_db"] = onset_level_db(est48, ref48)
    return m


def load_all(path: str) -> dict[str, tuple]:
    """``{label: (net, checkpoint)}`` for a checkpoint, or for every step of a snapshots file
    (``train --snapshot-every``: ``{"config": ..., "steps": {step: weights}}``), or for the steps
    named after it: ``denoise_snapshots.pt#32400,32800``."""
    only = None
    if "#" in path and not Path(path).exists():
        path, steps = path.rsplit("#", 1)
        only = {int(a) for a in steps.split(",")}
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if "steps" not in ck:
        if only is not None:
            raise ValueError(f"{path} is one checkpoint, not a snapshots file: it has no steps to pick")
        return {path: load_checkpoint(path)}
    if only is not None and not only <= set(ck["steps"]):
        raise ValueError(f"{path} has no snapshot of step(s) {sorted(only - set(ck['steps']))}; "
                         f"it holds {sorted(ck['steps'])}")
    out = {}
    for step, weights in sorted(ck["steps"].items()):
        if only is not None and step not in only:
            continue
        cfg = ck.get("configs", {}).get(step, ck["config"])  # a warm start may change the network
        net = DenoiseNet.from_config(cfg)
        net.load_state_dict(weights)
        out[f"{path}#{step}"] = (net.eval(), {"step": step, "config": cfg})
    return out


def evaluate(checkpoints: list[str], clips: int, seconds: float,
             atten_lim_db: tuple[float, ...] = (ATTEN_LIM_DB,),
             postfilters: tuple[dict | None, ...] = (None,), pack: str | None = None,
             dev_noises: int = 0) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    nets = {label: v for p in checkpoints for label, v in load_all(p).items()}
    cfg = next(iter(nets.values()))[1].get("config", {})
    items = validation_clips(cfg, clips, seconds, pack, dev_noises)
    noisy = torch.from_numpy(np.stack([x for x, _ in items]))
    systems: dict[str, np.ndarray] = {"noisy": noisy.numpy()}
    for p, (net, ck) in nets.items():
        for pf in postfilters:
            net.postfilter = pf
            for lim in atten_lim_db:
                with torch.no_grad():
                    y = net(noisy, atten_lim_db=lim)[0].numpy()
                y = np.concatenate([y[:, GRAPH_DELAY:], np.zeros((y.shape[0], GRAPH_DELAY), np.float32)], 1)
                tag = "" if len(atten_lim_db) == 1 else f" @{lim:g} dB"
                tag += "" if len(postfilters) == 1 else f" pf={json.dumps(pf)}"
                systems[f"{p} (step {ck.get('step')}){tag}"] = y
    report = {}
    for name, outs in systems.items():
        rows = [score(o[:-GRAPH_DELAY], t[:-GRAPH_DELAY]) for o, (_, t) in zip(outs, items)]
        report[name] = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
        print(name, {k: round(v, 3) for k, v in report[name].items()}, flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Score checkpoints on training-split validation mixtures")
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--atten-db", type=float, nargs="+", default=[ATTEN_LIM_DB],
                    help="attenuation limit(s) to score each checkpoint at (default: the effect's 40 dB)")
    ap.add_argument("--postfilter", nargs="+", default=["config"],
                    help='post-filter(s) to score (default: what ships): "config" (denoise.toml\'s '
                         '[postfilter]), "none", a .json file (fit_postfilter --out) or a TOML inline table '
                         'such as \'{kind = "dfn", beta = 0.05}\'')
    ap.add_argument("--json", default=None)
    ap.add_argument("--pack", default=None,
                    help="draw the mixtures from this pack (see .pack) instead of ../shared/data")
    ap.add_argument("--dev-noises", type=int, default=0, metavar="N",
                    help="mix only the dev noise recordings of data.dev_noise_every N (noise a run with "
                         "that setting never heard; a run without it trained on them)")
    args = ap.parse_args(argv)
    pfs = tuple(resolve_postfilter(a) for a in args.postfilter)
    rep = evaluate(args.checkpoints, args.clips, args.seconds, tuple(args.atten_db), pfs, args.pack,
                   args.dev_noises)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
