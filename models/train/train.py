"""Train a speech model (denoise, dereverb, isolate); resumable, reproducible from the seed and the config.

Usage::

    python -m hushbridge.models.train.train --config models/train/denoise.toml --minutes 60
    python -m hushbridge.models.train.train --config models/train/denoise.toml --steps 200 --out /tmp/ck

Files are named after the config's ``name`` (``denoise``, ``dereverb``, ...). Resumes from
``<out>/<name>_last.pt`` when it exists; ``--fresh`` deletes it and the run's other
files (log, best, snapshots) and starts over, and without either a folder that holds another run's
log or best refuses to start (a new run would pass for a continuation of it). Every batch is a pure
function of ``(seed, step)`` and the optimizer state is saved in full, so stopping and resuming gives
the run an uninterrupted one would have given. Checkpoints hold fp32 weights, the Adam state and the
step (about 3 MB); ``<name>_best.pt`` (weights only) is the step with the lowest validation loss on
fixed mixtures of the *training* split (the evaluation split is never looked at here). Progress and
ETA go to stdout; the loss curve to ``<out>/<name>_log.csv``. ``--init CHECKPOINT`` starts a new run
(step 0, a new optimizer) from another run's weights: the dereverb and isolate models start from the
shipped denoiser, whose features (bands, running means, speech activity) they need as well.

Runs on one CPU thread (``torch.set_num_threads(1)``); start it with ``nice -n 10`` on shared machines.
On a GPU machine (``--device cuda``), ``--workers N`` builds batches in N processes (each batch is still
the pure function of its step, so the run is the same whatever N is) and ``--pack`` reads the training
pools from a folder written by :mod:`.pack` where ``../shared`` is absent. ``batch_sizes = [[step, n]]``
in ``[train]`` changes the batch size from ``step`` on (the validation batches keep ``batch_size``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import torch

from .data import MixConfig, MixtureSampler
from .model import GRAPH_DELAY, HOP, N_FFT, DenoiseNet, count_params, erb_band_matrix

DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoints"


def load_config(path: str | os.PathLike) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def apply_overrides(cfg: dict, items: list[str]) -> dict:
    """``["table.key=value", ...]`` (value in TOML syntax) applied to ``cfg`` in place."""
    for item in items:
        path, sep, value = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise SystemExit(f"--set {item!r}: expected TABLE.KEY=VALUE")
        try:
            v = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError as e:
            raise SystemExit(f"--set {item!r}: the value is not TOML ({e})") from None
        node = cfg
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = v
    return cfg


# Every key the pipeline reads, per table (data: MixConfig's fields). A typo such as
# loss.silence_wieght would otherwise train the control run of an A/B without a word.
_KNOWN = {
    "": {"seed", "name", "version", "model", "data", "train", "loss", "postfilter"},
    "model": {"hidden", "layers", "context"},
    "train": {"batch_size", "lr", "lr_min", "lr_halflife_steps", "restarts", "batch_sizes", "remix",
              "warmup_steps", "weight_decay", "grad_clip", "val_every", "val_batches", "checkpoint_every",
              "log_every"},
    "loss": {"compress", "complex_weight", "resolutions", "vad_weight", "gain_weight", "gain_from_step",
             "gain_weights", "level_norm_from_step", "level_norm_dbfs", "silence_weight", "silence_from_step",
             "silence_floor_db", "under_weight", "under_from_step", "lsd_weight", "lsd_from_step", "lsd_floor_db",
             "lsd_floor_steps", "dnsmos_weight", "dnsmos_from_step", "dnsmos_examples", "dnsmos_scores",
             "dnsmos_tile_s", "dnsmos_model"},
    "postfilter": {"kind", "k", "pivot", "lo", "hi", "beta", "release", "vad_floor", "vad_power", "vad_keep", "ceiling"},
}
_INT_KEYS = {"seed", "hidden", "layers", "context", "batch_size", "lr_halflife_steps", "warmup_steps", "val_every",
             "val_batches", "checkpoint_every", "log_every", "gain_from_step", "level_norm_from_step",
             "silence_from_step", "under_from_step", "lsd_from_step", "dnsmos_from_step", "dnsmos_examples"}


def _kind(v: object) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, dict):
        return "a table"
    return "a string"


def check_config(cfg: dict, defaults: dict | None = None) -> None:
    """Refuse unknown keys (with the nearest known one) and values of the wrong kind, naming the
    key, before any data loads. ``defaults``: a config whose values give each key's kind (the
    shipped denoise.toml); MixConfig's own defaults give those of [data]."""
    import dataclasses
    import difflib

    known = dict(_KNOWN, data={f.name for f in dataclasses.fields(MixConfig)})
    kinds: dict[str, str] = {f"data.{f.name}": _kind(f.default) for f in dataclasses.fields(MixConfig)
                             if f.default is not dataclasses.MISSING}
    for table, entries in (defaults or {}).items():
        if isinstance(entries, dict):
            kinds.update({f"{table}.{k}": _kind(v) for k, v in entries.items()})
        else:
            kinds[table] = _kind(entries)

    def fail(key: str, why: str) -> None:
        raise SystemExit(f"config key {key!r}: {why}")

    for key, value in cfg.items():
        if key not in known[""]:
            near = difflib.get_close_matches(key, known[""], 1)
            fail(key, "unknown" + (f" (did you mean {near[0]!r}?)" if near else ""))
        if key in known and key != "":
            if not isinstance(value, dict):
                fail(key, f"must be a table, got {value!r:.60}")
            for k, v in value.items():
                full = f"{key}.{k}"
                if k not in known[key]:
                    near = difflib.get_close_matches(k, known[key], 1)
                    fail(full, "unknown" + (f" (did you mean {key}.{near[0]}?)" if near else ""))
                if key == "postfilter":  # a number or one per band
                    continue
                want = "an integer" if k in _INT_KEYS else kinds.get(full)
                got = _kind(v)
                ok = want is None or got == want or (want == "a number" and got == "an integer")
                if not ok:
                    fail(full, f"must be {want}, got {v!r:.60}")
        elif key in _INT_KEYS and _kind(value) != "an integer":
            fail(key, f"must be an integer, got {value!r:.60}")


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``["table.key: old -> new", ...]`` between two configs."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "(unset)"), new.get(k, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r:.60} -> {b!r:.60}")
    return out


def load_resumed(net: DenoiseNet, opt: torch.optim.Optimizer, ck: dict) -> list[str]:
    """Load a checkpoint's weights and optimizer state into ``net`` and ``opt``. A checkpoint of the
    same network without the encoder's ``context`` branch warm-starts one with it (``--set
    model.context=N`` on a resumed run): the branch starts at zero, so the output is the
    checkpoint's, and its Adam state starts empty. Returns the names of the parameters added."""
    missing, unexpected = net.load_state_dict(ck["model"], strict=False)
    if unexpected or any(not k.startswith("ctx.") for k in missing):
        net.load_state_dict(ck["model"])  # raises with torch's full message
    state = ck["opt"]
    if missing:
        n_old = len(state["param_groups"][0]["params"])
        state = {**state, "param_groups": [{**state["param_groups"][0],
                                            "params": list(range(n_old + len(missing)))}]}
    opt.load_state_dict(state)
    return missing


def mix_config(cfg: dict) -> MixConfig:
    d = dict(cfg.get("data", {}))
    for k in ("snr_db", "level_dbfs", "speed_range", "noise_speed_range"):
        if k in d:
            d[k] = tuple(d[k])
    return MixConfig(**d)


class Loss:
    """Masked multi-resolution compressed spectral loss + activity BCE. See data.py, "Band limits"."""

    def __init__(self, cfg: dict):
        lc = cfg.get("loss", {})
        self.c = float(lc.get("compress", 0.3))
        self.cw = float(lc.get("complex_weight", 0.3))
        self.res = [tuple(r) for r in lc.get("resolutions", [[480, 240], [1024, 256], [2048, 512]])]
        self.vad_w = float(lc.get("vad_weight", 0.05))
        self.gain_w = float(lc.get("gain_weight", 0.0))
        self.gain_from = int(lc.get("gain_from_step", 0))
        # later changes of the band-gain weight: [[step, weight], ...] (a resumed run's steps before
        # ``step`` keep the weight they were trained with)
        self.gain_sched = sorted((int(a), float(w)) for a, w in lc.get("gain_weights", []))
        # per-example level normalisation of the spectral loss (third session): the spectral terms are
        # homogeneous of degree 1 in the signal level, so without it a -45 dBFS mixture weighs 45x less
        # than a -12 dBFS one and quiet noise is left in; every mixture is scaled to ``level_norm_dbfs``
        self.norm_from = lc.get("level_norm_from_step")
        self.norm_rms = 10.0 ** (float(lc.get("level_norm_dbfs", -25.0)) / 20.0)
        # log-energy penalty on the output where the target is silent (``silence_weight`` from
        # ``silence_from_step``): the spectral terms weigh a residual 30 dB down almost nothing,
        # while listeners (and DNSMOS BAK) hear it in every pause; in dB every halving counts the same
        self.silence_w = float(lc.get("silence_weight", 0.0))
        self.silence_from = int(lc.get("silence_from_step", 0))
        self.silence_floor_db = float(lc.get("silence_floor_db", -70.0))
        # extra weight on compressed magnitudes below the target's (``under_weight`` from
        # ``under_from_step``): an MSE on |.|^c under uncertainty settles below the target, and the
        # trained model left speech-dominated bands 3.5 dB low (models/denoise.md, "Where the gap is")
        self.under_w = float(lc.get("under_weight", 0.0))
        self.under_from = int(lc.get("under_from_step", 0))
        # band log-spectral distance (``lsd_weight`` from ``lsd_from_step``): squared dB error of the
        # output's band energies against the target's, both floored ``lsd_floor_db`` under the
        # target's loudest band-frame; a 3 dB speech loss and a 3 dB noise excess cost the same,
        # where the MSE on compressed magnitudes lets a hedging model turn unsure speech down
        self.lsd_w = float(lc.get("lsd_weight", 0.0))
        self.lsd_from = int(lc.get("lsd_from_step", 0))
        self.lsd_floor_db = float(lc.get("lsd_floor_db", -50.0))
        # a deeper (or other) floor from a step on: [[step, dB], ...] (the eighth session's -55 dB)
        self.lsd_floor_steps = sorted((int(st), float(db)) for st, db in lc.get("lsd_floor_steps", []))
        # DNSMOS P.835 of the output as a loss term (``dnsmos_weight`` from ``dnsmos_from_step``, on the
        # first ``dnsmos_examples`` mixtures of each batch; ``dnsmos_scores`` weighs SIG, BAK, OVRL):
        # the scores listeners' ratings were fitted to, where the spectral terms let a model that is
        # unsure keep noise and dull speech (models/denoise.md, "Where the gap is"); training mixtures only
        self.dnsmos_w = float(lc.get("dnsmos_weight", 0.0))
        self.dnsmos_from = int(lc.get("dnsmos_from_step", 0))
        self.dnsmos_n = int(lc.get("dnsmos_examples", 4))
        self.dnsmos_scores = torch.tensor([float(v) for v in lc.get("dnsmos_scores", [0.0, 0.0, 1.0])])
        # repeat each output to this length before scoring, as speechmos does with clips under its
        # 9.01 s segment (0: score the mixture as it is; the 2 s clips then meet a scorer fitted on 9 s)
        self.dnsmos_tile_s = float(lc.get("dnsmos_tile_s", 0.0))
        self.dnsmos = None
        if self.dnsmos_w > 0:
            from .dnsmos import DnsmosP835

            self.dnsmos = DnsmosP835(lc.get("dnsmos_model"))  # a path where speechmos is not installed
        self.last_dnsmos = None  # mean calibrated (SIG, BAK, OVRL) of the last batch scored, for the log
        self.windows = {n: torch.hann_window(n) for n, _ in self.res}
        band = torch.from_numpy(erb_band_matrix())  # [bins, bands]
        self.band = band
        self.band_hz = band.argmax(0).float() * (48000.0 / N_FFT)  # centre of each band
        self.win = torch.sin(torch.pi * torch.arange(N_FFT) / N_FFT)

    def to(self, device) -> "Loss":
        self.windows = {n: w.to(device) for n, w in self.windows.items()}
        self.band, self.band_hz, self.win = self.band.to(device), self.band_hz.to(device), self.win.to(device)
        self.dnsmos_scores = self.dnsmos_scores.to(device)
        if self.dnsmos is not None:
            self.dnsmos = self.dnsmos.to(device)
        return self

    def _pow(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(a) if self.c == 0.5 else torch.exp(self.c * torch.log(a))

    def spec(self, y, s, band_hz, under: float = 0.0):
        total = y.new_zeros(())
        for n, hop in self.res:
            w = self.windows[n]
            Y = torch.stft(y, n, hop, window=w, return_complex=True, center=False)  # [B, F, K]
            S = torch.stft(s, n, hop, window=w, return_complex=True, center=False)
            f = torch.fft.rfftfreq(n, 1.0 / 48000.0, device=y.device)
            e = (S.abs() ** 2).sum(1)  # [B, K]
            active = e > e.amax(1, keepdim=True) * 1e-5
            inband = f[None, :, None] < band_hz[:, None, None]
            m = (inband | ~active[:, None, :]).float()
            yr, yi = Y.real, Y.imag
            sr, si = S.real, S.imag
            ya2 = yr * yr + yi * yi + 1e-12
            sa2 = sr * sr + si * si + 1e-12
            ya, sa = torch.sqrt(ya2), torch.sqrt(sa2)
            yc, sc = self._pow(ya), self._pow(sa)  # |Y|^c
            msum = m.sum() * 1.0
            m_mag = m * (1.0 + under * (yc < sc).float()) if under > 0 else m
            mag = ((yc - sc) ** 2 * m_mag).sum() / msum
            yk, sk = yc / ya, sc / sa  # |Y|^(c-1): compressed complex = Y |Y|^(c-1)
            cpx = (((yr * yk - sr * sk) ** 2 + (yi * yk - si * sk) ** 2) * m).sum() / msum
            total = total + (1 - self.cw) * mag + self.cw * cpx
        return total / len(self.res)

    def _band_energy(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Band energies ``[B, k, bands]`` of the model's own frames (same padding and window)."""
        xp = torch.cat([x.new_zeros(x.shape[0], GRAPH_DELAY), x[:, : k * HOP]], 1)
        sp = torch.fft.rfft(xp.unfold(1, N_FFT, HOP) * self.win, dim=-1)
        return (sp.real ** 2 + sp.imag ** 2) @ self.band

    def gain(self, gains, noisy, target, band_hz):
        """RNNoise-style band-gain loss: every band of every frame counts the same, so noise-only
        frames and quiet bands (where a spectral loss weighs little) are pushed to the ideal gain
        ``sqrt(E_target / E_noisy)`` as hard as loud speech is."""
        k = gains.shape[1]
        es, ex = self._band_energy(target, k), self._band_energy(noisy, k)
        ideal = torch.sqrt(torch.clamp(es / (ex + 1e-10), 0.0, 1.0))
        active = es.sum(-1, keepdim=True) > es.sum(-1).amax(1)[:, None, None] * 1e-5
        inband = self.band_hz[None, None, :] < band_hz[:, None, None]
        m = ((inband | ~active) & (ex > 1e-9)).float()
        d = torch.sqrt(gains + 1e-8) - torch.sqrt(ideal + 1e-8)
        return ((d * d + 10.0 * d ** 4) * m).sum() / m.sum().clamp(min=1.0)

    def lsd_floor_at(self, step: int | None) -> float:
        """``lsd_floor_db``, or the last ``lsd_floor_steps`` entry that ``step`` has reached."""
        db = self.lsd_floor_db
        for st, d in self.lsd_floor_steps:
            if step is not None and step >= st:
                db = d
        return db

    def lsd(self, y: torch.Tensor, s: torch.Tensor, noisy: torch.Tensor, band_hz: torch.Tensor,
            step: int | None = None) -> torch.Tensor:
        """Mean squared dB difference of band energies (the model's frames and bands), in-band cells
        (all bands where the target is silent, as in :meth:`spec`), floored per example
        (:meth:`lsd_floor_at` ``step``)."""
        k = y.shape[1] // HOP - 1
        ey, es = self._band_energy(y, k), self._band_energy(s, k)
        peak = es.amax(dim=(1, 2), keepdim=True)
        ref = torch.where(peak > 0, peak, self._band_energy(noisy, k).amax(dim=(1, 2), keepdim=True))
        floor = ref.clamp(min=1e-12) * 10.0 ** (self.lsd_floor_at(step) / 10.0)
        d = 10.0 * (torch.log10(ey + floor) - torch.log10(es + floor))
        active = es.sum(-1, keepdim=True) > es.sum(-1).amax(1)[:, None, None] * 1e-5
        inband = self.band_hz[None, None, :] < band_hz[:, None, None]
        m = (inband | ~active).float()
        return (d * d * m).sum() / m.sum().clamp(min=1.0)

    def silence(self, y: torch.Tensor, s: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """Mean ``log(1 + E_out / E_floor)`` over the frames where the target is silent (50 dB below
        its loudest frame, or an all-silent target), ``E_floor`` ``silence_floor_db`` under the
        target's loudest frame (under the noisy input's mean power where the target is silent
        throughout)."""
        k = y.shape[1] // HOP
        ey = y[:, : k * HOP].reshape(y.shape[0], k, HOP).pow(2).mean(-1)
        es = s[:, : k * HOP].reshape(s.shape[0], k, HOP).pow(2).mean(-1)
        peak = es.amax(1, keepdim=True)
        silent = (es <= peak * 1e-5).float()
        ref = torch.where(peak > 0, peak, noisy.pow(2).mean(1, keepdim=True).clamp(min=1e-12))
        floor = ref * 10.0 ** (self.silence_floor_db / 10.0)
        pen = torch.log1p(ey / floor)
        return (pen * silent).sum() / silent.sum().clamp(min=1.0)

    def __call__(self, out, vad, noisy, target, band_hz, gains=None, step=None):
        t = out.shape[1]
        y = out[:, GRAPH_DELAY:]
        s = target[:, : t - GRAPH_DELAY]
        under = self.under_w if self.under_w > 0 and (step is None or step >= self.under_from) else 0.0
        if self.norm_from is not None and step is not None and step >= int(self.norm_from):
            w = self.norm_rms / noisy.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-5)
            total = self.spec(y * w, s * w, band_hz, under)
        else:
            w = None
            total = self.spec(y, s, band_hz, under)
        if w is None and under == 0:
            loss = total
        else:
            with torch.no_grad():  # logged with the plain definition so runs stay comparable
                loss = self.spec(y, s, band_hz)
        gw = self.gain_w
        for at, w in self.gain_sched:
            if step is not None and step >= at:
                gw = w
        if gains is not None and gw > 0 and (step is None or step >= self.gain_from):
            total = total + gw * self.gain(gains, noisy, target, band_hz)
        if self.lsd_w > 0 and (step is None or step >= self.lsd_from):
            total = total + self.lsd_w * self.lsd(y, s, noisy, band_hz, step)
        if self.silence_w > 0 and (step is None or step >= self.silence_from):
            total = total + self.silence_w * self.silence(y, s, noisy)
        if self.dnsmos is not None and step is not None and step >= self.dnsmos_from:
            yd = y[: self.dnsmos_n]
            need = int(round(self.dnsmos_tile_s * 48000))
            if need > yd.shape[1]:
                yd = yd.repeat(1, -(-need // yd.shape[1]))[:, :need]
            scores = self.dnsmos(yd)  # [n, 3]
            self.last_dnsmos = scores.detach().mean(0)
            total = total - self.dnsmos_w * (scores @ self.dnsmos_scores).mean()
        # activity label per model frame: target frame energy within 30 dB of the loudest, above -70 dBFS
        tp = torch.cat([target.new_zeros(target.shape[0], GRAPH_DELAY), target[:, :t]], 1)
        fe = tp.unfold(1, N_FFT, HOP).pow(2).mean(-1)[:, : vad.shape[1]]
        label = ((fe > fe.amax(1, keepdim=True) * 1e-3) & (fe > 1e-7)).float()
        bce = torch.nn.functional.binary_cross_entropy(vad.clamp(1e-6, 1 - 1e-6), label)
        return total + self.vad_w * bce, loss.detach(), bce.detach()


def remix(noisy, speech, target, level, generator):
    """New mixtures from a batch (torch tensors on any device): speech ``i`` with the noise of
    mixture ``perm[i]`` (a permutation without fixed points, from ``generator``, a CPU
    ``torch.Generator``), scaled to keep that noise's SNR against the new speech's ``level``; peaks
    over 0.99 scaled down with the target. Costs a few elementwise ops, so a GPU that waits on
    mixture-building processes gets several batches from each one (``remix`` in ``[train]``)."""
    b = noisy.shape[0]
    order = torch.randperm(b, generator=generator)
    shift = int(torch.randint(1, max(b, 2), (1,), generator=generator)) if b > 1 else 0
    perm = torch.empty(b, dtype=torch.long)
    perm[order] = order[(torch.arange(b) + shift) % b]
    perm = perm.to(noisy.device)
    noise = noisy - speech
    scale = (level / level[perm].clamp(min=1e-9))[:, None]
    out = speech + noise[perm] * scale
    peak = out.abs().amax(1, keepdim=True)
    k = torch.where(peak > 0.99, 0.99 / peak, torch.ones_like(peak))
    return out * k, target * k


def lr_at(step: int, tc: dict) -> float:
    """Warm-up, then halve every ``lr_halflife_steps`` down to ``lr_min``.

    ``restarts = [[step, lr, halflife], ...]`` restarts the decay from ``lr`` at ``step`` (warm restarts: a
    resumed run gets out of the floor it had settled on without changing the steps before it, so the
    shipped weights stay reproducible from the config); a fourth value is a new floor from ``step`` on
    (an annealing tail below ``lr_min``).
    """
    lr = float(tc["lr"])
    lo = float(tc.get("lr_min", lr / 10))
    warm = int(tc.get("warmup_steps", 0))
    if step < warm:
        return lr * (step + 1) / warm
    start, half = warm, float(tc.get("lr_halflife_steps", 1e9))
    for at, peak, *rest in sorted(tc.get("restarts", [])):
        if step >= int(at):
            start, lr, half = int(at), float(peak), float(rest[0]) if rest else half
            lo = float(rest[1]) if len(rest) > 1 else lo
    return max(lo, lr * 0.5 ** ((step - start) / half))


def batch_size_at(step: int, tc: dict) -> int:
    """``batch_size``, or the last ``batch_sizes = [[step, n], ...]`` entry at or before ``step``."""
    bs = int(tc["batch_size"])
    for at, n in sorted(tc.get("batch_sizes", [])):
        if step >= int(at):
            bs = int(n)
    return bs


def _remix_segments(tc: dict) -> list[tuple[int, int, int]]:
    """``(first batch id, first step, k)`` of each stretch of training where every batch serves
    ``k`` steps (``remix = [[step, k], ...]`` in ``[train]``; ``k = 1`` before the first entry)."""
    segs = [(0, 0, 1)]
    for at, k in sorted((int(a), int(k)) for a, k in tc.get("remix", [])):
        sid, sat, sk = segs[-1]
        segs.append((sid + ((at - 1 - sat) // sk + 1 if at > sat else 0), at, max(k, 1)))
    return segs


def batch_plan(step: int, tc: dict) -> tuple[int, int]:
    """``(batch id, r)`` of a training step: the step trains on the sampler's batch ``id`` as built
    (``r == 0``) or on its ``r``-th :func:`remix`. Without ``remix`` in ``[train]`` the id is the step;
    ``remix = [[step, k], ...]`` uses every batch for ``k`` steps from ``step`` on (ids stay
    consecutive, so a resumed run and a DataLoader walk them in order)."""
    sid, sat, sk = [s for s in _remix_segments(tc) if s[1] <= step][-1]
    return sid + (step - sat) // sk, (step - sat) % sk


def first_step_of(batch_id: int, tc: dict) -> int:
    """The first training step that uses batch ``batch_id`` (:func:`batch_plan` inverted): batch
    sizes (``batch_sizes``) go by steps, so a remixed batch is built at the size of its first step."""
    sid, sat, sk = [s for s in _remix_segments(tc) if s[0] <= batch_id][-1]
    return sat + (batch_id - sid) * sk


class Batches(torch.utils.data.Dataset):
    """Item ``i`` is the sampler's batch ``first + i`` (for a DataLoader with worker processes)."""

    def __init__(self, sampler: MixtureSampler, tc: dict, first: int, count: int):
        self.sampler, self.tc, self.first, self.count = sampler, tc, first, count
        self.parts = bool(tc.get("remix"))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        bid = self.first + i
        size = batch_size_at(first_step_of(bid, self.tc), self.tc)
        return tuple(torch.from_numpy(a) for a in self.sampler.batch(bid, size, parts=self.parts))


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)


def cpu_state(module_or_opt) -> dict:
    """A state dict with every tensor on the CPU (checkpoints load on machines without a GPU)."""
    def conv(v):
        if isinstance(v, torch.Tensor):
            return v.detach().to("cpu", copy=True)  # a copy even on the CPU: snapshots must not follow training
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return conv(module_or_opt.state_dict())


def save(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _truncate_log(log_p: Path, step: int) -> None:
    """Drop the log rows after ``step`` (written by a run killed after its last checkpoint)."""
    if not log_p.exists():
        return
    with open(log_p, newline="") as f:
        rows = list(csv.reader(f))
    keep = [r for r in rows if not r or not r[0].isdigit() or int(r[0]) <= step]
    if len(keep) != len(rows):
        tmp = log_p.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(keep)
        os.replace(tmp, log_p)


def validate(net, lossf, val) -> float:
    net.eval()
    tot = 0.0
    dev = next(net.parameters()).device
    with torch.no_grad():
        for noisy, target, band in val:
            noisy, target, band = noisy.to(dev), target.to(dev), band.to(dev)
            out, vad, _ = net(noisy)
            tot += float(lossf(out, vad, noisy, target, band)[1])
    net.train()
    return tot / max(len(val), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parent / "denoise.toml"))
    ap.add_argument("--minutes", type=float, default=None, help="stop after this much wall time")
    ap.add_argument("--steps", type=int, default=None, help="stop at this total step count")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="checkpoint folder")
    ap.add_argument("--init", default=None, metavar="CHECKPOINT",
                    help="a new run starts from this checkpoint's weights (step 0, new optimizer)")
    ap.add_argument("--fresh", action="store_true",
                    help="start over: delete the folder's checkpoint, log, best and snapshots first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    ap.add_argument("--workers", type=int, default=0, help="processes that build batches (0: in this one)")
    ap.add_argument("--pack", default=None, help="read the training pools from this pack (see .pack)")
    ap.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                    help="override one config value (TOML syntax), e.g. --set loss.silence_weight=0.002; "
                         "the checkpoints carry the resulting config")
    ap.add_argument("--scan", choices=("auto", "loop", "log"), default="auto",
                    help="minGRU recurrence: step loop (CPU) or parallel log-space scan (auto: log on a GPU)")
    ap.add_argument("--snapshot-every", type=int, default=0,
                    help="also keep the weights every N steps in <out>/<name>_snapshots.pt (for select)")
    args = ap.parse_args(argv)
    if args.minutes is None and args.steps is None:
        ap.error("give --minutes and/or --steps")

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cfg = apply_overrides(load_config(args.config), args.set)
    check_config(cfg, load_config(Path(__file__).resolve().parent / "denoise.toml"))
    tc = cfg["train"]
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = str(cfg.get("name", "denoise"))
    last_p, best_p, log_p = out_dir / f"{name}_last.pt", out_dir / f"{name}_best.pt", out_dir / f"{name}_log.csv"

    net = DenoiseNet.from_config(cfg).to(device)
    scan = args.scan if args.scan != "auto" else ("log" if device.type == "cuda" else "loop")
    for layer in net.rnn:
        layer.scan = scan
    opt = torch.optim.AdamW(net.parameters(), lr=float(tc["lr"]), weight_decay=float(tc.get("weight_decay", 0)))
    step, best, trained_s = 0, math.inf, 0.0
    history: list[tuple[int, dict]] = []  # (first step, config) of every earlier leg of this run
    running = None
    snaps_p = out_dir / f"{name}_snapshots.pt"
    init = None
    if args.init:  # read before --fresh deletes anything: it may name one of this run's own files
        try:
            init = torch.load(args.init, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise SystemExit(f"--init {args.init}: no such file") from None
        except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged or foreign file
            raise SystemExit(f"--init {args.init} cannot be read ({type(e).__name__}: "
                             f"{str(e).strip()[:200]})") from None
        try:
            net.load_state_dict(init["model"])
        except (KeyError, TypeError, RuntimeError) as e:
            raise SystemExit(f"--init {args.init}: not a checkpoint of the network this config builds "
                             f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})") from None
    if args.init and last_p.exists() and not args.fresh:
        raise SystemExit(f"--init starts a new run, but {last_p} is there to resume: leave out --init to "
                         "resume it, --out another folder for a new run beside it, or --fresh to start over here from the "
                         "--init weights (it deletes this run's files)")
    if last_p.exists() and not args.fresh:
        try:
            ck = torch.load(last_p, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds for a damaged file
            raise SystemExit(f"{last_p} cannot be read ({type(e).__name__}: {str(e).strip()[:200]}); "
                             "--fresh starts over (and deletes the run's files), or put back a good copy") from None
        try:
            added = load_resumed(net, opt, ck)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise SystemExit(f"{last_p} is a checkpoint of another network than this config builds "
                             f"({first}); --fresh starts over, or set model.* as it was") from None
        if added:
            print(f"warm start: {', '.join(added)} added to the checkpoint's network, starting at zero")
        step, best, trained_s = int(ck["step"]), float(ck.get("best_val", math.inf)), float(ck.get("trained_s", 0))
        history = list(ck.get("config_history", []))
        running = ck.get("running")
        changes = config_changes(ck.get("config", {}), cfg)
        if changes:  # allowed (restarts, warm starts, new loss terms), but never silent
            print(f"warning: the config differs from the checkpoint's ({len(changes)} change(s), kept in "
                  "config_history):\n  " + "\n  ".join(changes), file=sys.stderr)
            history.append((step, ck.get("config", {})))
        print(f"resumed from {last_p} at step {step} ({trained_s / 60:.1f} min trained, best val {best:.4f})")
        _truncate_log(log_p, step)  # rows a killed run logged after its last checkpoint come again
    elif args.fresh:
        # nothing of an earlier run may pass for this one, not even until the first checkpoint
        for p in (last_p, log_p, best_p, snaps_p):
            if p.exists():
                p.unlink()
    if init is not None:
        # where the weights came from travels with the run (the config cannot say it)
        history = [(0, {"init_from": str(args.init), "init_step": int(init.get("step", -1)),
                        "init_config": init.get("config", {})})]
        print(f"initialised from {args.init} (step {init.get('step', '?')})")
    if not args.fresh and not last_p.exists():
        leftovers = [p.name for p in (log_p, best_p, snaps_p) if p.exists()]
        if leftovers:  # a new run would append to another run's log and best
            raise SystemExit(f"{out_dir} holds files of an earlier run ({', '.join(leftovers)}) but no "
                             f"{last_p.name} to resume from: --fresh starts over (and deletes them), or "
                             "put the last checkpoint back")
    print(f"model: {count_params(net):,} parameters; batch {batch_size_at(step, tc)} x {cfg['data']['seconds']} s"
          f" on {device}" + (f", {args.workers} data workers" if args.workers else ""))

    sampler = MixtureSampler(mix_config(cfg), seed=seed, pack=args.pack)
    lossf = Loss(cfg).to(device)
    bs = int(tc["batch_size"])
    val = []
    for i in range(int(tc.get("val_batches", 4))):
        n, t, b = sampler.batch(i, bs, stream=1)
        val.append((torch.from_numpy(n), torch.from_numpy(t), torch.from_numpy(b)))

    new_log = not log_p.exists()
    logf = open(log_p, "a", newline="")
    log = csv.writer(logf)
    if new_log:
        log.writerow(["step", "trained_min", "lr", "train_loss", "train_vad_bce", "val_loss"])

    def checkpoint():
        save(last_p, {"step": step, "model": cpu_state(net), "opt": cpu_state(opt), "best_val": best,
                      "trained_s": trained_s, "config": cfg, "config_history": history,
                      # the partial log window, so a resumed run logs the same rows
                      "running": {"loss": run_loss, "bce": run_bce, "n": n_run,
                                  "dns": run_dns.tolist(), "n_dns": n_dns}})

    # one file of weights-only checkpoints (a device call returns at most 8 files); `select` reads
    # it, building each step's network from that step's config (a warm start can change it)
    snapshots = (torch.load(snaps_p, map_location="cpu", weights_only=False) if snaps_p.exists()
                 else {"config": cfg, "steps": {}})
    snapshots.setdefault("configs", {})

    if args.workers > 0:
        loader = torch.utils.data.DataLoader(
            Batches(sampler, tc, batch_plan(step, tc)[0], 10**9), batch_size=None, shuffle=False, num_workers=args.workers,
            pin_memory=device.type == "cuda", prefetch_factor=4, worker_init_fn=_one_thread,
            persistent_workers=False)
        batches = iter(loader)
    else:
        batches = None

    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60 if args.minutes is not None else math.inf
    stop_step = args.steps if args.steps is not None else None
    start_step = step
    run_loss, run_bce, n_run = 0.0, 0.0, 0
    run_dns, n_dns = torch.zeros(3), 0
    if running:
        run_loss, run_bce, n_run = float(running["loss"]), float(running["bce"]), int(running["n"])
        run_dns, n_dns = torch.tensor(running["dns"]), int(running["n_dns"])
    held_id, held = None, None
    net.train()
    while True:
        now = time.monotonic()
        if now >= deadline or (stop_step is not None and step >= stop_step):
            break
        bid, r = batch_plan(step, tc)
        if bid != held_id:
            if batches is not None:
                parts = next(batches)
                ts = time.monotonic()
            else:
                ts = time.monotonic()
                parts = tuple(torch.from_numpy(a) for a in
                              sampler.batch(bid, batch_size_at(first_step_of(bid, tc), tc),
                                            parts=bool(tc.get("remix"))))
            held_id, held = bid, tuple(a.to(device, non_blocking=True) for a in parts)
        else:
            ts = time.monotonic()
        noisy, target, band = held[:3]
        if r > 0:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            noisy, target = remix(noisy, held[3], target, held[4], gen)
        lr_now = lr_at(step, tc)
        for g in opt.param_groups:
            g["lr"] = lr_now
        out, vad, gains = net(noisy)
        loss, spec_l, bce = lossf(out, vad, noisy, target, band, gains, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), float(tc.get("grad_clip", 1.0)))
        opt.step()
        step += 1
        trained_s += time.monotonic() - ts
        run_loss += float(spec_l)
        run_bce += float(bce)
        n_run += 1
        if lossf.last_dnsmos is not None:
            run_dns, n_dns = run_dns + lossf.last_dnsmos.cpu(), n_dns + 1
            lossf.last_dnsmos = None
        val_loss = ""
        if step % int(tc.get("val_every", 250)) == 0:
            v = validate(net, lossf, val)
            val_loss = f"{v:.5f}"
            if v < best:
                best = v
                save(best_p, {"step": step, "model": cpu_state(net), "val_loss": v, "config": cfg})
        if step % int(tc.get("log_every", 20)) == 0 or val_loss:
            el = time.monotonic() - t0
            rate = (step - start_step) / max(el, 1e-9)
            if stop_step is not None:
                eta = (stop_step - step) / max(rate, 1e-9)
                eta = min(eta, deadline - time.monotonic())
            else:
                eta = deadline - time.monotonic()
            print(f"step {step:6d}  loss {run_loss / n_run:.4f}  vad {run_bce / n_run:.3f}  "
                  f"lr {lr_now:.2e}  {rate:.2f} step/s  ETA {eta / 60:5.1f} min"
                  + (f"  DNSMOS SIG/BAK/OVRL {' / '.join(f'{v:.2f}' for v in (run_dns / n_dns).tolist())}"
                     if n_dns else "")
                  + (f"  val {val_loss} (best {best:.5f})" if val_loss else ""), flush=True)
            log.writerow([step, f"{trained_s / 60:.2f}", f"{lr_now:.3g}", f"{run_loss / n_run:.5f}",
                          f"{run_bce / n_run:.4f}", val_loss])
            logf.flush()
            run_loss, run_bce, n_run = 0.0, 0.0, 0
            run_dns, n_dns = torch.zeros(3), 0
        if step % int(tc.get("checkpoint_every", 100)) == 0:
            checkpoint()
        if args.snapshot_every and step % args.snapshot_every == 0:
            snapshots["steps"][step] = cpu_state(net)
            snapshots["configs"][step] = cfg
            save(snaps_p, snapshots)
    checkpoint()
    if math.isinf(best):
        # a run too short for its first validation still leaves a best checkpoint: the last step,
        # marked provisional and replaced at the end of every later leg until a real validation
        # (so a run interrupted and resumed picks the same best as one that was not)
        v = validate(net, lossf, val)
        save(best_p, {"step": step, "model": cpu_state(net), "val_loss": v, "config": cfg, "provisional": True})
    logf.close()
    print(f"stopped at step {step}; {trained_s / 60:.1f} min trained in total; checkpoints in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
