"""Fit the run-time post-filter per band, the network frozen: its curves (``k``, ``pivot``, ``lo``,
``hi``), ``release`` and ``vad_floor``, one value per band each, by gradient descent on
``-DNSMOS OVRL + fidelity x spectral loss`` of the output over **training-split** mixtures.

Usage::

    python -m hushbridge.models.train.fit_postfilter CHECKPOINT [--clips 128] [--seconds 3]
        [--steps 200] [--batch 8] [--lr 0.03] [--fidelity 10] [--out postfilter.json]

Why: a grid over the post-filter's few global numbers (sessions 6-10) ended where every band
shares one curve, while the model hedges differently per band ("Where the gap is" in
models/denoise.md); 192 numbers are few enough to fit on a few hundred mixtures without the
network learning anything new, and the post-filter is cheap to fit because the network runs once:
its spectra, gains and speech probability are computed up front and only the post-filter, the
synthesis and the scorer run in each step.

The mixtures come from the checkpoint's config, stream :data:`STREAM` (not training's 0, not
``select``'s 7); the 40 dB attenuation limit of the effect applies as in ``select``. Starting
point: the ``[postfilter]`` of the config (``--init``), broadcast to every band, so step 0 is
what ships. The result (``--out``, JSON) is a ``[postfilter]`` table with lists; judge it with
``select --postfilter`` on the validation mixtures before it goes into denoise.toml.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .data import MixtureSampler
from .dnsmos import DnsmosP835
from .export import load_checkpoint, resolve_postfilter
from .model import GRAPH_DELAY, N_BANDS
from .select import ATTEN_LIM_DB
from .train import Loss, mix_config

STREAM = 11
FITTED = ("k", "pivot", "lo", "hi", "release", "vad_floor")


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _softplus_inv(y: float) -> float:
    return math.log(math.expm1(y))


class BandParams(torch.nn.Module):
    """The fitted settings as unconstrained tensors, mapped into their ranges: ``k`` > 0,
    ``pivot``, ``lo``, ``release``, ``vad_floor`` in (0, 1), ``hi`` > 1."""

    def __init__(self, init: dict):
        super().__init__()
        if init.get("kind") != "expand" or "release" not in init or "vad_floor" not in init:
            raise ValueError("fit_postfilter starts from an expand post-filter with release and vad_floor")
        self.fixed = {k: v for k, v in init.items() if k not in FITTED}

        def full(v: float) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.full((N_BANDS,), float(v)))

        self.k = full(_softplus_inv(float(init["k"])))
        self.pivot = full(_logit(float(init["pivot"])))
        self.lo = full(_logit(float(init["lo"])))
        self.hi = full(_softplus_inv(float(init["hi"]) - 1.0))
        self.release = full(_logit(float(init["release"])))
        self.vad_floor = full(_logit(float(init["vad_floor"])))

    def postfilter(self) -> dict:
        sp, sg = torch.nn.functional.softplus, torch.sigmoid
        return {**self.fixed, "k": sp(self.k), "pivot": sg(self.pivot), "lo": sg(self.lo),
                "hi": 1.0 + sp(self.hi), "release": sg(self.release), "vad_floor": sg(self.vad_floor)}

    def table(self) -> dict:
        with torch.no_grad():
            return {k: ([round(float(a), 5) for a in v] if isinstance(v, torch.Tensor) else v)
                    for k, v in self.postfilter().items()}


def precompute(net, cfg: dict, clips: int, seconds: float, seed_batch: int = 0):
    """The network's part of the output for ``clips`` training mixtures, computed once."""
    mc = replace(mix_config(cfg), seconds=seconds, p_no_speech=0.0)
    sampler = MixtureSampler(mc, seed=int(cfg["seed"]), verbose=False)
    noisy, target, band = [], [], []
    per = 8
    for i in range(-(-clips // per)):
        x, s, b = sampler.batch(seed_batch + i, per, stream=STREAM)
        noisy.append(x), target.append(s), band.append(b)
    noisy = torch.from_numpy(np.concatenate(noisy)[:clips])
    target = torch.from_numpy(np.concatenate(target)[:clips])
    band_hz = torch.as_tensor(np.concatenate(band)[:clips], dtype=torch.float32)
    net.postfilter = None
    with torch.no_grad():
        re, im, past_re, past_im, gains, df, vad = net.front(noisy)
        yr, yi = net.apply(re, im, past_re, past_im, gains, df, 0.0)
    return {"noisy": noisy, "target": target, "band_hz": band_hz, "re": re, "im": im,
            "yr": yr, "yi": yi, "vad": vad}


def render(net, data: dict, idx, pf: dict, lim: float) -> torch.Tensor:
    """Output of the post-filter ``pf`` for the mixtures ``idx``, aligned with the target."""
    re, im = data["re"][idx], data["im"][idx]
    yr, yi = net.postfilter_spectra(re, im, data["yr"][idx], data["yi"][idx], data["vad"][idx], pf)
    return net.back(*net.attenuation_limit(re, im, yr, yi, lim))[:, GRAPH_DELAY:]


def fit(checkpoint: str, clips: int, seconds: float, steps: int, batch: int, lr: float, fidelity: float,
        init: dict, seed: int = 0, log=print) -> dict:
    net, ck = load_checkpoint(checkpoint)
    for p in net.parameters():
        p.requires_grad_(False)
    cfg = ck["config"]
    t0 = time.time()
    data = precompute(net, cfg, clips, seconds)
    log(f"{clips} mixtures of {seconds:g} s through the network in {time.time() - t0:.0f} s")
    params = BandParams(init)
    opt = torch.optim.Adam(params.parameters(), lr=lr)
    scorer = DnsmosP835()
    lossf = Loss(cfg)
    lim = 10.0 ** (-ATTEN_LIM_DB / 20.0)
    gen = torch.Generator().manual_seed(seed)
    # the result is an exponential average over the steps (the DNSMOS of 8 mixtures is a noisy gradient)
    avg = torch.optim.swa_utils.AveragedModel(params, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.95))
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = torch.randperm(clips, generator=gen)[:batch]
        y = render(net, data, idx, params.postfilter(), lim)
        s = data["target"][idx][:, : y.shape[1]]
        # the spectral loss of training, level-normalised as there, keeps speech from being traded away
        w = lossf.norm_rms / data["noisy"][idx].pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-5)
        spec = lossf.spec(y * w, s * w, data["band_hz"][idx])
        mos = scorer(y)  # [batch, 3]
        loss = -mos[:, 2].mean() + fidelity * spec
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg.update_parameters(params)
        if step % 10 == 0 or step == 1:
            el = time.time() - t0
            m = mos.detach().mean(0)
            log(f"step {step}/{steps} loss {float(loss.detach()):.4f} spec {float(spec.detach()):.4f} SIG {float(m[0]):.3f} "
                f"BAK {float(m[1]):.3f} OVRL {float(m[2]):.3f} | {el / step:.1f} s/step, "
                f"ETA {el / step * (steps - step) / 60:.0f} min")
    return avg.module.table()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fit the post-filter per band on training-split mixtures")
    ap.add_argument("checkpoint")
    ap.add_argument("--clips", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--fidelity", type=float, default=10.0,
                    help="weight of training's spectral loss against DNSMOS OVRL")
    ap.add_argument("--init", default="config", help='starting post-filter, as select --postfilter ("config")')
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="postfilter.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    table = fit(args.checkpoint, args.clips, args.seconds, args.steps, args.batch, args.lr, args.fidelity,
                resolve_postfilter(args.init))
    Path(args.out).write_text(json.dumps(table, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
