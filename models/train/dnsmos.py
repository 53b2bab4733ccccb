"""DNSMOS P.835 (SIG, BAK, OVRL) as a differentiable torch module, for a perceptual loss term.

The scorer that ``speechmos`` ships (``dnsmos_models/sig_bak_ovr.onnx``, Microsoft's DNS-Challenge
model) is a small CNN on the log power spectrum of 16 kHz audio: an STFT written as two 1x1
convolutions (frame 320, hop 160), ``log10`` power, seven 3x3 conv layers (max pooling after the
fourth, fifth and sixth), a global max pool and three dense layers. :class:`DnsmosP835` rebuilds it
from the ONNX file's weights, so gradients flow from the scores to the audio; it equals onnxruntime
on the same input (``tests/models/test_train_dnsmos.py``). Like the original it takes any length
(its global max pool), but it was calibrated on 9.01 s segments: on a 2 s training mixture it is a
training signal, not the benchmark's score (the benchmark runs ``speechmos`` itself), unless the loss
repeats the clip to a full segment as speechmos does (``loss.dnsmos_tile_s``).

Training-time only (``[train]`` and ``speechmos`` from ``[dev]``); the run-time never imports it.
Only training-split mixtures are ever scored here: the evaluation split stays unseen.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...dsp.resample import polyphase_bank

RATE = 16000
# the polynomial calibration that speechmos applies to the raw scores (non-personalized model)
POLY = {"sig": (-0.08397278, 1.22083953, 0.0052439), "bak": (-0.13166888, 1.60915514, -0.39604546),
        "ovrl": (-0.06766283, 1.11546468, 0.04602535)}


def default_model_path() -> str:
    try:
        import speechmos
    except ModuleNotFoundError as e:  # pragma: no cover - [dev] is installed wherever training runs
        raise RuntimeError("the DNSMOS loss needs the speechmos package (pip install -e '.[dev]')") from e
    return os.path.join(os.path.dirname(speechmos.__file__), "dnsmos_models", "sig_bak_ovr.onnx")


def load_weights(path: str) -> dict[str, np.ndarray]:
    """The scorer's initializers by name, from its ``.onnx`` file or from an ``.npz`` written by
    ``python -m hushbridge.models.train.dnsmos --npz OUT`` (for a machine without the onnx package)."""
    if str(path).endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k].copy() for k in z.files}
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i).copy() for i in onnx.load(path).graph.initializer}


class DnsmosP835(nn.Module):
    """``forward(audio [B, T] at 48 kHz, or at 16 kHz with rate=16000)`` -> ``[B, 3]`` calibrated
    (SIG, BAK, OVRL). The weights are frozen buffers; only the input receives gradients."""

    def __init__(self, path: str | None = None):
        super().__init__()
        w = {k: torch.from_numpy(v) for k, v in load_weights(path or default_model_path()).items()}
        pre = "mos_estimator_logpow/"
        # the STFT's real and imaginary kernels [161, 320, 1] as one [320, 322] matrix
        self.register_buffer("stft", torch.cat([w["time2freq/stft-real/kernel:0"][:, :, 0],
                                                w["time2freq/stft-imag/kernel:0"][:, :, 0]], 0).T.contiguous())
        self.log_floor = float(w[pre + "Maximum/x:0"])
        self.log_div = float(w[pre + "truediv/y:0"])
        if float(w[pre + "pow/y:0"]) != 2.0:
            raise ValueError("unexpected DNSMOS graph: the magnitude is not squared")
        self.convs = nn.ModuleList()
        for i in range(7):
            name = "conv2d" if i == 0 else f"conv2d_{i}"
            k = w[f"{name}/kernel:0"]
            c = nn.Conv2d(k.shape[1], k.shape[0], 3, padding=1)
            c.weight.data.copy_(k)
            c.bias.data.copy_(w[f"{name}/bias:0"])
            self.convs.append(c)
        self.dense = nn.ModuleList()
        for name in ("dense", "dense_1", "dense_3"):
            wt = w[f"{pre}{name}/MatMul/ReadVariableOp/resource:0"]
            lin = nn.Linear(wt.shape[0], wt.shape[1])
            lin.weight.data.copy_(wt.T)
            lin.bias.data.copy_(w[f"{pre}{name}/BiasAdd/ReadVariableOp/resource:0"])
            self.dense.append(lin)
        # 48 -> 16 kHz: the project's own Kaiser-windowed sinc (one row: up 1, down 3)
        bank, _, down, lookahead = polyphase_bank(48000, RATE)
        self.decim_stride, self.decim_pad = down, (lookahead, bank.shape[1] - 1 - lookahead)
        self.register_buffer("decim", torch.from_numpy(bank[0].copy())[None, None, :])
        self.register_buffer("poly", torch.tensor([POLY["sig"], POLY["bak"], POLY["ovrl"]], dtype=torch.float32))
        for p in self.parameters():
            p.requires_grad_(False)

    def raw(self, x16: torch.Tensor) -> torch.Tensor:
        """The ONNX graph's output (uncalibrated SIG, BAK, OVRL) for 16 kHz audio ``[B, T]``."""
        b, n = x16.shape
        k = n // 160
        if k < 17:
            raise ValueError(f"DNSMOS needs at least 17 frames of 10 ms at 16 kHz, got {n} samples")
        chunks = x16[:, : k * 160].reshape(b, k, 160)
        frames = torch.cat([chunks[:, :-1], chunks[:, 1:]], 2)  # frame 320, hop 160, as the graph slices
        spec = frames @ self.stft
        re, im = spec[..., :161], spec[..., 161:]
        h = (torch.log(torch.clamp(re * re + im * im, min=self.log_floor)) / self.log_div).unsqueeze(1)
        for i, c in enumerate(self.convs):
            h = F.relu(c(h))
            if i in (3, 4, 5):
                h = F.max_pool2d(h, 2)
        h = h.amax(dim=(2, 3))
        h = F.relu(self.dense[0](h))
        h = F.relu(self.dense[1](h))
        return self.dense[2](h)

    def to16k(self, x48: torch.Tensor) -> torch.Tensor:
        return F.conv1d(F.pad(x48[:, None, :], self.decim_pad), self.decim, stride=self.decim_stride)[:, 0]

    def forward(self, audio: torch.Tensor, rate: int = 48000) -> torch.Tensor:
        if rate == 48000:
            audio = self.to16k(audio)
        elif rate != RATE:
            raise ValueError(f"DNSMOS takes 48 or 16 kHz audio, not {rate} Hz")
        r = self.raw(audio)
        p = self.poly
        return p[:, 0] * r * r + p[:, 1] * r + p[:, 2]


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write the DNSMOS P.835 scorer's weights as .npz (for loss.dnsmos_model)")
    ap.add_argument("--npz", required=True, help="output file, e.g. .carry/dnsmos.npz")
    ap.add_argument("--model", default=None, help="the scorer's .onnx (default: speechmos's)")
    args = ap.parse_args(argv)
    np.savez(args.npz, **load_weights(args.model or default_model_path()))
    print(f"wrote {args.npz}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
