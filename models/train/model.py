"""The denoise network: ERB-band gains + low-band deep filter + small GRU, full band at 48 kHz.

One set of weights, two forms that compute the same thing:

- :meth:`DenoiseNet.forward` runs a whole signal ``[B, T]`` at once (training, parity reference);
- :class:`StreamingDenoise` runs one hop ``[1, 240]`` with explicit state tensors (ONNX export).

Signal path (per 5 ms hop)::

    audio_in (240) -> [prev 240 | new 240] -> sqrt-Hann 480 -> DFT (matmul) -> X (241 bins, 100 Hz)
      features: 32 triangular ERB-band log energies, minus a running mean (tau 1 s) / 40
                + bins 0..47 (0..4.7 kHz) complex, divided by a running mean of |X| (tau 1 s)
      Linear(128,160)+ReLU -> 3 minGRU layers (160, residual) -> heads:
          32 band gains (sigmoid, interpolated to 241 bins),
          deep filter: 3-tap complex filter over frames t, t-1, t-2 on bins 0..47 (added to the gained bins),
          activity (sigmoid, speech probability)
      Y = gains * X (+ DF on the low bins); Y = Y (1 - lim) + lim X, lim = 10^(-atten_lim_db / 20)
      -> inverse DFT (matmul) -> sqrt-Hann -> overlap-add (tail in state) -> audio_out (240)

Graph delay: output sample n is input sample n - 240 (window 480 minus hop 240); that is the
``hushbridge.latency_samples`` of the export. The runtime's hop FIFO (any host block size) adds
hop - 1 = 239, so the denoise Effect reports 479 samples = 9.98 ms at 48 kHz.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

SR = 48_000
N_FFT = 480
HOP = 240
N_BINS = N_FFT // 2 + 1
N_BANDS = 32
DF_BINS = 48
DF_ORDER = 3
HIDDEN = 160
GRU_LAYERS = 3
TAU_S = 1.0
ALPHA = math.exp(-HOP / (SR * TAU_S))
FEAT_INIT_DB = -60.0  # running-mean starting points (states start at zero = these values)
UNIT_INIT = 1e-3
# a link group's reference channel (StreamingDenoise): the loudest by a running mean of frame
# energy (tau 1 s), the one that is the reference counted this much louder, so it changes seldom
REF_HOLD = 10.0 ** (1.0 / 10.0)  # 1 dB
GRAPH_DELAY = N_FFT - HOP
LATENCY_SAMPLES = GRAPH_DELAY  # metadata value (models/README.md): the graph's own delay at 48 kHz
EFFECT_LATENCY = GRAPH_DELAY + HOP - 1  # what the denoise Effect reports: + the runtime's hop FIFO


def erb_band_matrix(n_bands: int = N_BANDS, n_bins: int = N_BINS, sr: int = SR, n_fft: int = N_FFT) -> np.ndarray:
    """Triangular band weights ``[n_bins, n_bands]``, centres ERB-spaced (>= 1 bin apart), rows sum to 1."""
    def erb(f):
        return 21.4 * np.log10(1.0 + 0.00437 * f)

    def inv(e):
        return (10.0 ** (e / 21.4) - 1.0) / 0.00437

    bin_hz = sr / n_fft
    centres = [0]
    # place centres so that the remaining ones stay ERB-spaced but at least one bin apart
    for i in range(1, n_bands):
        lo = erb(centres[-1] * bin_hz)
        step = (erb(sr / 2) - lo) / (n_bands - i)
        c = int(round(inv(lo + step) / bin_hz))
        centres.append(max(c, centres[-1] + 1))
    centres[-1] = n_bins - 1
    w = np.zeros((n_bins, n_bands), dtype=np.float64)
    for b in range(n_bands - 1):
        c0, c1 = centres[b], centres[b + 1]
        for k in range(c0, c1 + 1):
            t = (k - c0) / (c1 - c0)
            if k < c1:
                w[k, b] += 1.0 - t
                w[k, b + 1] += t
    w[n_bins - 1, n_bands - 1] = 1.0
    return w.astype(np.float32)


def dft_matrices() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windowed forward (``[N, F]`` re, im) and inverse (``[F, N]`` re, im) real-DFT matrices."""
    n = np.arange(N_FFT)
    f = np.arange(N_BINS)
    win = np.sin(np.pi * n / N_FFT)  # sqrt of the periodic Hann: w^2 overlap-adds to 1 at 50 %
    ang = 2.0 * np.pi * np.outer(n, f) / N_FFT
    fr = win[:, None] * np.cos(ang)
    fi = -win[:, None] * np.sin(ang)
    c = np.full(N_BINS, 2.0)
    c[0] = c[-1] = 1.0
    ir = (c[:, None] * np.cos(ang.T)) * win[None, :] / N_FFT
    ii = (-c[:, None] * np.sin(ang.T)) * win[None, :] / N_FFT
    return (fr.astype(np.float32), fi.astype(np.float32), ir.astype(np.float32), ii.astype(np.float32))


CT_ROWS, CT_COLS = 16, 30  # N_FFT = 16 x 30: the streaming graph's DFTs as two small stages


def factored_dft_constants() -> dict[str, np.ndarray]:
    """Constants of a two-stage (Cooley-Tukey, 480 = 16 x 30) windowed real DFT and its inverse.

    Same results as :func:`dft_matrices` (to float rounding) with ~60 kB of constants instead of
    1.85 MB: in the real-time callback the graph runs once every 5 ms, and a 1.85 MB matrix falls
    out of the caches between hops and has to come back from memory on every hop.

    Forward, ``x`` windowed and read as ``[16, 30]`` (``n = 30 a + b``): stage 1 ``[re; im] =
    f1 @ x`` (DFT over ``a``), stage 2 per row ``k1``: ``[re | im] @ f2[k1]`` (twiddle and DFT over
    ``b``, only the 16 ``k2`` that reach bin 240), then ``fwd_take`` picks bins ``k = k1 + 16 k2``
    into ``[re 0..240 | im 0..240]``. Inverse: ``inv_take``/``inv_sign`` build the full Hermitian
    spectrum as ``[2, 16, 30]`` (``k = 30 a + b``), stage 1 ``i1`` (inverse DFT over ``a``), stage 2
    per row ``c``: ``i2[c]`` (twiddle, inverse DFT over ``b``, real part), giving ``y[c + 16 d]``.
    """
    n1, n2, n = CT_ROWS, CT_COLS, N_FFT
    a = np.arange(n1)
    b = np.arange(n2)
    win = np.sin(np.pi * np.arange(n) / n)
    # forward
    e1 = np.exp(-2j * np.pi * np.outer(a, a) / n1)                    # [k1, a]
    f1 = np.stack([e1.real, e1.imag], axis=1).reshape(2 * n1, n1)     # [32, 16], rows (k1, re/im)
    k2n = -(-N_BINS // n1)                                             # k2 = 0..15
    tw = np.exp(-2j * np.pi * np.outer(a, b) / n)                      # [k1, b]
    e2 = np.exp(-2j * np.pi * np.outer(b, np.arange(k2n)) / n2)       # [b, k2]
    f2 = np.zeros((n1, 2 * n2, 2 * k2n))
    for k1 in range(n1):
        m = tw[k1][:, None] * e2                                       # [b, k2] complex
        f2[k1, :n2, :k2n], f2[k1, :n2, k2n:] = m.real, m.imag          # from re
        f2[k1, n2:, :k2n], f2[k1, n2:, k2n:] = -m.imag, m.real         # from im
    k = np.arange(N_BINS)
    fwd_take = np.stack([(k % n1) * 2 * k2n + k // n1, (k % n1) * 2 * k2n + k2n + k // n1])  # [2, F]
    # inverse: y[n] = win[n] / N * Re sum_k Y[k] e^{+2 pi i n k / N}, Y[N - k] = conj(Y[k])
    kk = np.arange(n)
    src = np.where(kk < N_BINS, kk, n - kk)
    inv_take = np.concatenate([src, N_BINS + src]).reshape(2 * n1, n2)  # rows (re/im, a)
    inv_sign = np.concatenate([np.ones(n), np.where(kk < N_BINS, 1.0, -1.0)]).reshape(2 * n1, n2)
    g1 = np.exp(2j * np.pi * np.outer(a, a) / n1)                      # [c, a]
    i1 = np.stack([np.concatenate([g1.real, -g1.imag], 1),             # rows (c, re/im)
                   np.concatenate([g1.imag, g1.real], 1)], axis=1).reshape(2 * n1, 2 * n1)
    tw2 = np.exp(2j * np.pi * np.outer(a, b) / n)                      # [c, b]
    g2 = np.exp(2j * np.pi * np.outer(b, b) / n2)                      # [b, d]
    out_win = (win / n).reshape(n2, n1).T                              # [c, d]: y[c + 16 d]
    i2 = np.zeros((n1, 2 * n2, n2))
    for c in range(n1):
        m = tw2[c][:, None] * g2 * out_win[c][None, :]                 # [b, d] complex, windowed
        i2[c, :n2], i2[c, n2:] = m.real, -m.imag                       # Re((Pr + i Pi) m)
    f32 = np.float32
    return {"win": win.reshape(n1, n2).astype(f32), "f1": f1.astype(f32), "f2": f2.astype(f32),
            "fwd_take": fwd_take.astype(np.int64), "inv_take": inv_take.astype(np.int64),
            "inv_sign": inv_sign.astype(f32), "i1": i1.astype(f32), "i2": i2.astype(f32)}


def ema_matrix(t: int, alpha: float = ALPHA, device=None) -> torch.Tensor:
    """``W[t, s] = (1 - a) a^(t - s)`` for s <= t: running mean over a whole sequence as one matmul."""
    idx = torch.arange(t, device=device, dtype=torch.float64)
    d = idx[:, None] - idx[None, :]
    w = torch.where(d >= 0, (1 - alpha) * torch.pow(torch.tensor(alpha, dtype=torch.float64), d.clamp(min=0)),
                    torch.zeros((), dtype=torch.float64))
    return w.float()


def _g(x: torch.Tensor) -> torch.Tensor:
    """minGRU's positive activation: x + 0.5 for x >= 0, sigmoid(x) below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def _log_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, torch.log(torch.relu(x) + 0.5), -torch.nn.functional.softplus(-x))


def _pf_value(pf: dict, key: str, like: torch.Tensor, default=None):
    """A post-filter setting: a number, or one value per band (a list of ``N_BANDS``, from
    ``fit_postfilter``; a tensor while it is being fitted)."""
    v = pf.get(key, default)
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (list, tuple)):
        if len(v) != N_BANDS:
            raise ValueError(f"post-filter {key!r}: {len(v)} values, one per band needs {N_BANDS}")
        return torch.tensor([float(a) for a in v], dtype=like.dtype, device=like.device)
    return float(v)


def postfilter_scale(geff: torch.Tensor, pf: dict) -> torch.Tensor:
    """Per-band factor for the enhanced spectrum from its effective band gain ``geff`` (|Y| / |X| per
    band, in [0, 1]); the run-time post-filter (models/denoise.md, "Post-filter"), chosen on
    training-split validation mixtures, not trained.

    - ``{"kind": "expand", "k", "pivot", "lo", "hi"}``: ``lo + (hi - lo) sigmoid(k (geff - pivot))``
      with the result kept at or under unity gain: lowers bands the network left mostly noise and
      raises the ones it kept mostly speech (it keeps speech-dominated bands too low otherwise);
      each of ``k``, ``pivot``, ``lo``, ``hi`` a number or one value per band;
    - ``{"kind": "dfn", "beta"}``: the PercepNet / DeepFilterNet post-filter ``(1 + b) / (1 + b /
      sin^2(pi geff / 2))``, which turns low gains down harder;
    - ``expand`` with a ``beta`` too: the expansion, then the DFN post-filter on the gain it gives.
    """
    kind = pf.get("kind")
    if kind not in ("expand", "dfn"):
        raise ValueError(f"unknown post-filter kind {kind!r} (expand or dfn)")
    f = torch.ones_like(geff)
    if kind == "expand":
        lo, hi = _pf_value(pf, "lo", geff), _pf_value(pf, "hi", geff)
        f = lo + (hi - lo) * torch.sigmoid(_pf_value(pf, "k", geff) * (geff - _pf_value(pf, "pivot", geff)))
        f = torch.minimum(f, 1.0 / torch.clamp(geff, min=1e-6))
        geff = geff * f
    if "beta" in pf:
        b = float(pf["beta"])
        sn = torch.sin(geff * (math.pi / 2.0))
        f = f * ((1.0 + b) / (1.0 + b / torch.clamp(sn * sn, min=1e-12)))
    return f


HELD_FLOOR = 1e-12


def postfilter_release(geff: torch.Tensor, f: torch.Tensor, held: torch.Tensor, pf: dict):
    """The post-filter's per-band release (``pf["release"]``, a factor per hop): the band gain
    ``geff * f`` may fall by at most that factor per hop, so speech tails and weak parts between
    strong ones are not chopped (it raised DNSMOS SIG; the VAD floor takes the noise it lets through
    between words). One frame: ``geff``, ``f``, ``held`` ``[..., N_BANDS]``; returns ``(f, held)``,
    ``held`` the gain to carry to the next hop (state ``state_6`` of the streaming graph)."""
    held = torch.maximum(geff * f, _pf_value(pf, "release", geff) * held)
    # in silence the held gains decay by the release factor every hop and would end as subnormal
    # numbers (slow arithmetic on x86, and never exactly zero): below -240 dB they are zero
    held = torch.where(held > HELD_FLOOR, held, torch.zeros_like(held))
    return torch.where(geff > 1e-6, held / torch.clamp(geff, min=1e-6), f), held


VAD_KEEP_SHARPNESS = 20.0


def postfilter_vad_gain(vad: torch.Tensor, pf: dict, geff: torch.Tensor | None = None) -> torch.Tensor:
    """The post-filter's gain from the model's speech probability: ``vad_floor`` where it is 0,
    unity where it is 1 (``vad ** vad_power`` between), 1 without ``vad_floor``; per band where
    ``vad_floor`` has one value per band.

    ``vad_keep`` (with ``geff``, the effective band gain): a band the network itself keeps above
    that gain is (mostly) spared the floor (``max(vad ** vad_power, sigmoid(20 (geff - vad_keep)))``). The
    speech probability lags a word start by a few hops (0.2-0.3 in its first 5 ms), so without it
    the floor took 2-5 dB off the first 10-25 ms of every word after a pause, in the very bands the
    network had already opened."""
    if "vad_floor" not in pf:
        return torch.ones_like(vad)
    lo = _pf_value(pf, "vad_floor", vad)
    p = torch.pow(torch.clamp(vad, 0.0, 1.0), _pf_value(pf, "vad_power", vad, 1.0))
    if "vad_keep" in pf and geff is not None:
        p = torch.maximum(p, torch.sigmoid(VAD_KEEP_SHARPNESS * (geff - _pf_value(pf, "vad_keep", geff))))
    return lo + (1.0 - lo) * p


def postfilter_gain(geff: torch.Tensor, vad: torch.Tensor | None, pf: dict, held: torch.Tensor | None = None,
                    geff_raw: torch.Tensor | None = None):
    """The whole post-filter: per-band factor for the enhanced spectrum, ``(f, held)``. ``geff``
    ``[..., N_BANDS]`` (clamped to [0, 1]); ``vad`` shaped to broadcast against it (``[..., 1]``);
    ``held`` (one frame only) applies the release and is returned updated, else ``None`` comes
    back; ``geff_raw`` (the same gain before the clamp) applies ``ceiling``
    (:func:`postfilter_ceiling`)."""
    f = postfilter_scale(geff, pf)
    if held is not None:
        f, held = postfilter_release(geff, f, held, pf)
    if "vad_floor" in pf:
        f = f * postfilter_vad_gain(vad, pf, geff)
    if "ceiling" in pf and geff_raw is not None:
        f = postfilter_ceiling(geff_raw, f, pf)
    return f, held


def postfilter_ceiling(geff_raw: torch.Tensor, f: torch.Tensor, pf: dict) -> torch.Tensor:
    """``pf["ceiling"]``: the band gain ``geff_raw * f`` never above it (1: unity). The deep filter
    adds its taps to the gained low bins, and on clean speech that raised bands under 4.7 kHz by
    0.4-1.1 dB (the output 1 dB louder than the input, peaks over full scale on material
    normalized to 0 dBFS); the clamp of ``geff`` to [0, 1] hid it from the other parts."""
    return torch.minimum(f, _pf_value(pf, "ceiling", geff_raw) / torch.clamp(geff_raw, min=1e-6))


def link_reference(spec_c: torch.Tensor, power_c: torch.Tensor, level: torch.Tensor):
    """What the network hears of a link group: the spectrum of its reference channel with, in every
    bin, the RMS magnitude over its channels. ``spec_c`` [G, k, 2, F] (re; im) and ``power_c``
    [G, k, F] of the group's ``k`` channels; ``level`` [G * k, 2]: each channel's running mean of
    frame energy and whether it is the reference (the state). Returns ([G, 2, F], the new level).

    Not the mean of the channels' spectra: a pair in opposite polarity cancels there, and a spaced
    pair (one side a little later) comb-filters; the reference keeps one channel's phase (the one
    the deep filter's taps are estimated on: a constant phase offset between the sides does not
    change how a bin evolves from frame to frame) and the magnitudes heard are the channels' power
    mean, so one silent side costs 3 dB, not a cancellation. The reference is the loudest channel
    by a running mean of frame energy (tau 1 s), the current one counted :data:`REF_HOLD` louder,
    so that it changes seldom (each change is a step in the phase the network hears). One channel:
    its spectrum (to the last bits); identical channels: the first's spectrum."""
    g, k = power_c.shape[0], power_c.shape[1]
    lv = level.reshape(g, k, 2)
    run = ALPHA * lv[:, :, 0] + (1.0 - ALPHA) * power_c.sum(-1)  # [G, k]
    score = run * (1.0 + (REF_HOLD - 1.0) * lv[:, :, 1])
    best = (score >= score.max(dim=1, keepdim=True).values).float()
    first = best * (torch.cumsum(best, dim=1) == 1.0).float()  # the first of equals
    ref = (first[:, :, None, None] * spec_c).sum(1)  # [G, 2, F]
    scale = torch.sqrt(power_c.mean(1) / ((ref * ref).sum(1) + 1e-30))
    return ref * scale[:, None], torch.stack([run, first], dim=-1).reshape(-1, 2)


class MinGRU(nn.Module):
    """minGRU (Feng et al. 2024, "Were RNNs all we needed?"): ``h_t = (1 - z_t) h_{t-1} + z_t g(c_t)``
    with ``z_t, c_t`` from the input only: the matmuls run over the whole sequence at once and only an
    elementwise multiply-add is sequential, so training is far cheaper than a GRU's, and one run-time
    step is one small matmul."""

    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.lin = nn.Linear(n_in, 2 * hidden)
        self.hidden = hidden

    # "loop": the recurrence step by step (cheap on a CPU); "log": the paper's parallel scan in log
    # space (a few whole-sequence kernels instead of thousands of tiny ones: for a GPU, where the loop
    # is bound by kernel launches). Same result to float rounding (float64 inside the scan).
    scan = "loop"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, T, n_in] -> h [B, T, hidden], starting from h = 0."""
        k, c = self.lin(x).chunk(2, dim=-1)
        if self.scan == "log":
            # h_t = sum_s b_s prod_{s<r<=t} a_r with a = 1 - z = sigmoid(-k), b = z g(c) > 0
            log_a = -torch.nn.functional.softplus(k).double()
            log_b = (-torch.nn.functional.softplus(-k) + _log_g(c)).double()
            a_star = torch.cumsum(log_a, dim=1)
            return torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1)).to(x.dtype)
        z = torch.sigmoid(k)
        a = (1.0 - z).unbind(1)
        b = (z * _g(c)).unbind(1)
        h = b[0]
        out = [h]
        for t in range(1, len(a)):  # only the cheap elementwise recurrence is sequential
            h = a[t] * h + b[t]
            out.append(h)
        return torch.stack(out, dim=1)


class DenoiseNet(nn.Module):
    """Weights and whole-signal forward. See the module docstring."""

    def __init__(self, hidden: int = HIDDEN, layers: int = GRU_LAYERS, context: int = 0):
        super().__init__()
        self.hidden = hidden
        self.layers = layers
        self.context = context
        # run-time post-filter (postfilter_scale); None while training
        self.postfilter: dict | None = None
        fr, fi, ir, ii = dft_matrices()
        band = erb_band_matrix()
        win = np.sin(np.pi * np.arange(N_FFT) / N_FFT).astype(np.float32)
        for name, arr in (("win", win), ("fwd_re", fr), ("fwd_im", fi), ("inv_re", ir), ("inv_im", ii),
                          ("band", band), ("interp", band.T.copy())):
            self.register_buffer(name, torch.from_numpy(arr), persistent=False)
        n_in = N_BANDS + 2 * DF_BINS
        self.enc = nn.Linear(n_in, hidden)
        self.rnn = nn.ModuleList([MinGRU(hidden, hidden) for _ in range(layers)])
        self.gain_head = nn.Linear(hidden, N_BANDS)
        self.df_head = nn.Linear(hidden, DF_ORDER * DF_BINS * 2)
        self.vad_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.df_head.weight)
        nn.init.zeros_(self.df_head.bias)
        nn.init.constant_(self.gain_head.bias, 1.0)
        # ``context`` > 0: the encoder also sees the features of the last ``context`` frames (a causal
        # conv over time, kernel context + 1). minGRU gates depend on the current input only, so
        # without it no layer can form a nonlinear function of several recent frames (onsets, the
        # phase advance of a harmonic from frame to frame); zero at the start, so a network warm-started
        # from one without context begins with the same output
        self.ctx = None
        if context > 0:
            self.ctx = nn.Linear(n_in * context, hidden, bias=False)
            nn.init.zeros_(self.ctx.weight)
        # (registered last: a checkpoint's optimizer state without it keeps its parameter order)

    @classmethod
    def from_config(cls, cfg: dict) -> "DenoiseNet":
        """The network a config's ``[model]`` table describes (``hidden``, ``layers``, ``context``)."""
        m = cfg.get("model", {})
        return cls(hidden=int(m.get("hidden", HIDDEN)), layers=int(m.get("layers", GRU_LAYERS)),
                   context=int(m.get("context", 0)))

    # ---- shared pieces (work on [..., frames, ...] tensors of any leading shape)

    def analysis(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return frames @ self.fwd_re, frames @ self.fwd_im

    def band_db(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10((re * re + im * im) @ self.band + 1e-10)

    def recurrent(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.rnn):
            h = layer(h) if i == 0 else layer(h) + h
        return h

    def heads(self, h: torch.Tensor):
        gains = torch.sigmoid(self.gain_head(h))
        df = self.df_head(h)
        vad = torch.sigmoid(self.vad_head(h)).squeeze(-1)
        return gains, df, vad

    def apply(self, re, im, past_re, past_im, gains, df, lim, vad=None):
        """Enhance frames ``[B, K, bins]``. ``past_*``: ``[..., DF_ORDER, DF_BINS]`` low bins of frames
        t, t-1, t-2; ``vad`` ``[B, K]``, used by a post-filter with a ``vad_floor``."""
        yr, yi = self.enhance(re, im, past_re, past_im, gains, df)
        if self.postfilter is not None:
            yr, yi = self.postfilter_spectra(re, im, yr, yi, vad, self.postfilter)
        return self.attenuation_limit(re, im, yr, yi, lim)

    def enhance(self, re, im, past_re, past_im, gains, df):
        """Band gains and the deep filter on frames ``[B, K, bins]`` (heads broadcast over ``B``)."""
        g = gains @ self.interp
        yr = g * re
        yi = g * im
        c = df.reshape(df.shape[:-1] + (DF_ORDER, DF_BINS, 2))
        cr, ci = c[..., 0], c[..., 1]
        dr = (cr * past_re - ci * past_im).sum(-2)
        di = (cr * past_im + ci * past_re).sum(-2)
        yr = torch.cat([yr[..., :DF_BINS] + dr, yr[..., DF_BINS:]], dim=-1)
        return yr, torch.cat([yi[..., :DF_BINS] + di, yi[..., DF_BINS:]], dim=-1)

    @staticmethod
    def attenuation_limit(re, im, yr, yi, lim: float):
        """``Y (1 - l) + l X``: no bin ends more than ``-20 log10 l`` dB under the input."""
        return yr * (1.0 - lim) + lim * re, yi * (1.0 - lim) + lim * im

    def postfilter_spectra(self, re, im, yr, yi, vad, pf: dict):
        """The post-filter ``pf`` on enhanced frames ``yr, yi`` [B, K, bins] of the input ``re, im``
        (``vad`` [B, K] or None), before the attenuation limit."""
        sc = self.postfilter_factors(re, im, yr, yi, vad, pf)
        return yr * sc, yi * sc

    def postfilter_factors(self, re, im, yr, yi, vad, pf: dict) -> torch.Tensor:
        """The post-filter's factor per bin [B, K, bins] for enhanced frames ``yr, yi`` of ``re, im``."""
        return self.postfilter_from_power(re * re + im * im, yr * yr + yi * yi, vad, pf)

    def postfilter_from_power(self, px, py, vad, pf: dict) -> torch.Tensor:
        """The post-filter's factor per bin [B, K, bins] from the input's and the enhanced frames'
        power spectra ``px``, ``py`` [B, K, bins]."""
        ey = py @ self.band
        ex = px @ self.band
        raw = torch.sqrt(ey / (ex + 1e-10))
        geff = torch.clamp(raw, 0.0, 1.0)
        v = None if vad is None else vad.unsqueeze(-1)
        if "release" in pf:  # recursive over frames: [B, K, bands]
            held = geff.new_zeros(geff.shape[:-2] + (N_BANDS,))
            fs = []
            for t in range(geff.shape[-2]):
                ft, held = postfilter_gain(geff[..., t, :], None if v is None else v[..., t, :], pf, held,
                                           raw[..., t, :])
                fs.append(ft)
            f = torch.stack(fs, dim=-2)
        else:
            f, _ = postfilter_gain(geff, v, pf, geff_raw=raw)
        return f @ self.interp

    def synthesis(self, yr, yi):
        return yr @ self.inv_re + yi @ self.inv_im

    # ---- whole signal

    def forward(self, x: torch.Tensor, atten_lim_db: float = 100.0, use_fft: bool = True):
        """``x`` [B, T] (T a multiple of 240) -> (out [B, T] delayed by 240 samples, vad [B, K], gains [B, K, 32]).

        ``use_fft`` computes the (identical) DFTs with torch.fft instead of the export's matmuls (faster).
        """
        re, im, past_re, past_im, gains, df, vad = self.front(x, use_fft)
        lim = 10.0 ** (-atten_lim_db / 20.0)
        yr, yi = self.apply(re, im, past_re, past_im, gains, df, lim, vad)
        return self.back(yr, yi, use_fft), vad, gains

    def forward_linked(self, x: torch.Tensor, atten_lim_db: float = 100.0, use_fft: bool = True):
        """The channels of ``x`` [C, T] as one link group (:class:`StreamingDenoise`): the network
        hears the group (:func:`link_reference`), and its gains, deep filter and post-filter apply
        to every channel alike. Returns (out [C, T] delayed by 240 samples, vad [1, K], gains [1, K, 32])."""
        re, im, past_re, past_im = self.spectra(x, use_fft)
        power = re * re + im * im  # [C, K, F]
        level = torch.zeros(x.shape[0], 2)
        refs = []
        for t in range(re.shape[1]):  # the reference channel, frame by frame (it has a memory)
            spec_t = torch.stack([re[:, t], im[:, t]], dim=1)[None]  # [1, C, 2, F]
            m, level = link_reference(spec_t, power[None, :, t], level)
            refs.append(m[0])
        m = torch.stack(refs, dim=1)  # [2, K, F]
        re_m, im_m = m[0:1], m[1:2]
        gains, df, vad = self.front_spectra(re_m, im_m)
        yr, yi = self.enhance(re, im, past_re, past_im, gains, df)
        if self.postfilter is not None:
            sc = self.postfilter_from_power(re_m * re_m + im_m * im_m, (yr * yr + yi * yi).mean(0, keepdim=True),
                                            vad, self.postfilter)
            yr, yi = yr * sc, yi * sc
        yr, yi = self.attenuation_limit(re, im, yr, yi, 10.0 ** (-atten_lim_db / 20.0))
        return self.back(yr, yi, use_fft), vad, gains

    def spectra(self, x: torch.Tensor, use_fft: bool = True):
        """The frames' spectra ``re, im`` [B, K, bins] of ``x`` [B, T] and the deep filter's past
        low bins ``past_re, past_im`` [B, K, DF_ORDER, DF_BINS] (frames t, t-1, t-2)."""
        b, t = x.shape
        k = t // HOP
        xp = torch.cat([x.new_zeros(b, GRAPH_DELAY), x[:, : k * HOP]], dim=1)
        frames = xp.unfold(1, N_FFT, HOP)  # [B, K, N]
        if use_fft:
            spec = torch.fft.rfft(frames * self.win, dim=-1)
            re, im = spec.real, spec.imag
        else:
            re, im = self.analysis(frames)
        lr, li = re[..., :DF_BINS], im[..., :DF_BINS]
        pad = lr.new_zeros(b, DF_ORDER - 1, DF_BINS)
        lrp = torch.cat([pad, lr], dim=1)
        lip = torch.cat([pad, li], dim=1)
        past_re = torch.stack([lrp[:, DF_ORDER - 1 - i : DF_ORDER - 1 - i + k] for i in range(DF_ORDER)], dim=2)
        past_im = torch.stack([lip[:, DF_ORDER - 1 - i : DF_ORDER - 1 - i + k] for i in range(DF_ORDER)], dim=2)
        return re, im, past_re, past_im

    def front(self, x: torch.Tensor, use_fft: bool = True):
        """The network on a whole signal ``x`` [B, T]: ``(re, im)`` of its frames [B, K, bins], the
        deep filter's past low bins, and the heads' ``gains``, ``df``, ``vad``."""
        re, im, past_re, past_im = self.spectra(x, use_fft)
        gains, df, vad = self.front_spectra(re, im)
        return re, im, past_re, past_im, gains, df, vad

    def front_spectra(self, re: torch.Tensor, im: torch.Tensor):
        """The network on the frames' spectra ``re, im`` [B, K, bins]: the heads' ``gains``, ``df``, ``vad``."""
        b, k = re.shape[0], re.shape[1]
        w = ema_matrix(k, device=re.device)
        feat = self.band_db(re, im)
        mu = FEAT_INIT_DB + torch.einsum("ts,bsd->btd", w, feat - FEAT_INIT_DB)
        featn = (feat - mu) / 40.0
        mag = torch.sqrt(re[..., :DF_BINS] ** 2 + im[..., :DF_BINS] ** 2 + 1e-12)
        s = UNIT_INIT + torch.einsum("ts,bsd->btd", w, mag - UNIT_INIT)
        sr_ = re[..., :DF_BINS] / s
        si_ = im[..., :DF_BINS] / s
        e = torch.cat([featn, sr_, si_], dim=-1)  # [B, K, n_in]
        pre = self.enc(e)
        if self.ctx is not None:
            c = self.context
            ep = torch.cat([e.new_zeros(b, c, e.shape[-1]), e], dim=1)
            past = torch.cat([ep[:, c - j : c - j + k] for j in range(1, c + 1)], dim=-1)  # t-1, ..., t-c
            pre = pre + self.ctx(past)
        z = torch.relu(pre)
        h = self.recurrent(z)
        return self.heads(h)

    def back(self, yr: torch.Tensor, yi: torch.Tensor, use_fft: bool = True) -> torch.Tensor:
        """Enhanced spectra [B, K, bins] -> the signal [B, K * 240] (synthesis window, overlap-add)."""
        if use_fft:
            y = torch.fft.irfft(torch.complex(yr, yi), n=N_FFT, dim=-1) * self.win
        else:
            y = self.synthesis(yr, yi)  # [B, K, N]
        b, k = y.shape[0], y.shape[1]
        head = y[..., :HOP]
        tail = torch.cat([y.new_zeros(b, 1, N_FFT - HOP), y[:, :-1, HOP:]], dim=1)
        return (head + tail).reshape(b, k * HOP)


class StreamingDenoise(nn.Module):
    """One hop with explicit state, for ONNX export; ``linked``: the graph for link groups (below).
    States (all start at zero):

    - ``state_0`` [C, 240]: previous input hop (analysis buffer)
    - ``state_1`` [G, 32]: running mean of band log energies, minus -60 dB
    - ``state_2`` [G, 48]: running mean of low-bin magnitudes, minus 1e-3
    - ``state_3`` [G, layers * hidden]: minGRU hidden states, layer after layer
    - ``state_4`` [C, 2, DF_ORDER - 1, 48]: low-bin spectra (re; im) of frames t-1, t-2
    - ``state_5`` [C, 240]: overlap-add tail
    - ``state_6`` [G, 32]: the post-filter's held band gains (:func:`postfilter_release`), only in a
      graph whose post-filter has a ``release``
    - then, only for a network with ``context`` c > 0: [G, c * 128] the encoder inputs of frames
      t-1, ..., t-c
    - last, only in the ``linked`` graph, [C, 2]: each channel's running frame energy and whether
      it is its link group's reference (:func:`link_reference`)

    The per-channel graph (``linked=False``, ``models/<name>.onnx``) has one dynamic batch ``B``
    where ``C`` and ``G`` stand above: every channel is a stream of its own. The ``linked`` graph
    (``models/<name>.linked.onnx``) runs ``C`` channels in ``G`` link groups (both dynamic; ``C`` a
    multiple of ``G``, a group's channels consecutive; ``G = 1`` for a stereo pair): the network
    hears the group's reference (one channel's phase, the channels' RMS magnitude;
    :func:`link_reference`) and its gains, deep filter and post-filter (from the channels' mean
    power) apply to every channel of the group alike, so the stereo image stays where it is and
    the network runs once; with identical channels each output is the mono one. Two graphs, not
    one with both: the group arithmetic cost a mono run 13 % more time per hop.

    The same arithmetic as :meth:`DenoiseNet.forward`, laid out for few graph nodes (onnxruntime
    spends more on each node than on these small matmuls): the spectrum is one ``[2, F]`` tensor
    (re; im) throughout, the DFTs run in two small stages (:func:`factored_dft_constants`), one
    matmul serves all three heads with the deep-filter outputs permuted to ``[re/im, tap, bin]``,
    and the minGRU states are one row. Every tensor has a leading batch dimension (1 above), dynamic
    in the export: one run serves all channels of a stream (see models/README.md).
    """

    def __init__(self, net: DenoiseNet, linked: bool = False):
        super().__init__()
        self.net = net
        self.linked = linked
        with torch.no_grad():
            for key, arr in factored_dft_constants().items():
                self.register_buffer("ct_" + key, torch.from_numpy(arr), persistent=False)
            # df_head rows are (tap, bin, re/im); reorder them to (re/im, tap, bin)
            t, b, ri = torch.meshgrid(torch.arange(DF_ORDER), torch.arange(DF_BINS), torch.arange(2), indexing="ij")
            old = (t * DF_BINS * 2 + b * 2 + ri).permute(2, 0, 1).reshape(-1)
            df_w, df_b = net.df_head.weight[old], net.df_head.bias[old]
            self.register_buffer("head_w", torch.cat([net.gain_head.weight, df_w,
                                                      net.vad_head.weight], dim=0).t().contiguous(), persistent=False)
            self.register_buffer("head_b", torch.cat([net.gain_head.bias, df_b, net.vad_head.bias]),
                                 persistent=False)
            self.register_buffer("swap_sign", torch.tensor([-1.0, 1.0]).reshape(1, 2, 1, 1), persistent=False)
            self.register_buffer("g_threshold", torch.cat([torch.full((net.hidden,), math.inf),
                                                           torch.zeros(net.hidden)]), persistent=False)

    def rdft(self, frame: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` -> windowed spectrum ``[B, 2, F]`` (re; im), two small stages."""
        x = frame.reshape(-1, CT_ROWS, CT_COLS) * self.ct_win
        s1 = torch.matmul(self.ct_f1, x).reshape(-1, CT_ROWS, 1, 2 * CT_COLS)
        s2 = torch.matmul(s1, self.ct_f2).reshape(-1, CT_ROWS * self.ct_f2.shape[-1])  # [B, k1 x (re k2 | im k2)]
        return s2[:, self.ct_fwd_take]

    def irdft(self, y_spec: torch.Tensor) -> torch.Tensor:
        """Spectrum ``[B, 2, F]`` (re; im) -> windowed, scaled frame ``[B, N]``."""
        full = y_spec.reshape(-1, 2 * N_BINS)[:, self.ct_inv_take] * self.ct_inv_sign  # [B, 32, 30]
        s1 = torch.matmul(self.ct_i1, full).reshape(-1, CT_ROWS, 1, 2 * CT_COLS)
        y = torch.matmul(s1, self.ct_i2).reshape(-1, CT_ROWS, CT_COLS)  # [B, c, d]
        return y.transpose(1, 2).reshape(-1, N_FFT)

    def state_shapes(self, batch: int = 1, groups: int | None = None) -> list[tuple[int, ...]]:
        """The state shapes for ``batch`` channels in ``groups`` link groups (default: one each)."""
        g = batch if groups is None else groups
        return [(batch, HOP), (g, N_BANDS), (g, DF_BINS), (g, self.net.layers * self.net.hidden),
                (batch, 2, DF_ORDER - 1, DF_BINS), (batch, N_FFT - HOP)] \
            + ([(g, N_BANDS)] if self._release else []) \
            + ([(g, self.net.context * self.net.enc.in_features)] if self.net.context else []) \
            + ([(batch, 2)] if self.linked else [])

    def group_states(self) -> list[bool]:
        """Per state, whether its rows are link groups (else channels; all, in the per-channel graph)."""
        if not self.linked:
            return [False] * len(self.state_shapes())
        return [False, True, True, True, False, False] + [True] * (self._release + bool(self.net.context)) + [False]

    @property
    def _release(self) -> bool:
        return self.net.postfilter is not None and "release" in self.net.postfilter

    def forward(self, audio_in, state_0, state_1, state_2, state_3, state_4, state_5, *rest):
        """One hop for ``B`` independent streams (the export's batch dimension is dynamic). ``rest``:
        the held band gains when the post-filter has a release, the encoder inputs of the last
        frames when the network has ``context``, the channels' reference levels, then ``atten_lim_db``."""
        net = self.net
        rest = list(rest)
        state_6 = rest.pop(0) if self._release else None
        past_in = rest.pop(0) if net.context else None
        level = rest.pop(0) if self.linked else None
        atten_lim_db = rest[0]
        frame = torch.cat([state_0, audio_in], dim=1)  # [C, N]
        if self.linked:
            spec_c = self.rdft(frame).reshape(state_1.shape[0], -1, 2, N_BINS)  # [G, C / G, 2, F]
            power_c = (spec_c * spec_c).sum(2)  # [G, C / G, F]
            spec, level_out = link_reference(spec_c, power_c, level)  # [G, 2, F]
        else:
            spec = self.rdft(frame)  # [B, 2, F]
        power = (spec * spec).sum(1)  # [G, F]
        feat = (10.0 / math.log(10.0)) * torch.log(power @ net.band + 1e-10)
        d1 = ALPHA * state_1 + (1.0 - ALPHA) * (feat - FEAT_INIT_DB)
        featn = (feat - FEAT_INIT_DB - d1) * (1.0 / 40.0)
        low = spec[:, :, :DF_BINS]  # [B, 2, BINS]
        mag = torch.sqrt(power[:, :DF_BINS] + 1e-12)
        d2 = ALPHA * state_2 + (1.0 - ALPHA) * (mag - UNIT_INIT)
        unit = (low * (1.0 / (UNIT_INIT + d2)).unsqueeze(1)).reshape(-1, 2 * DF_BINS)  # [re.. | im..]
        e = torch.cat([featn, unit], dim=-1)
        pre = net.enc(e)
        ctx_out = ()
        if past_in is not None:  # [inputs of t-1 | t-2 | ...]
            pre = pre + net.ctx(past_in)
            # widths as Python ints (not traced shapes), so the exported state has a fixed width
            n_in = net.enc.in_features
            ctx_out = (torch.cat([e, past_in[:, : (net.context - 1) * n_in]], dim=-1) if net.context > 1 else e,)
        h = torch.relu(pre)
        new = []
        hid = net.hidden
        for i, layer in enumerate(net.rnn):
            prev = state_3[:, i * hid:(i + 1) * hid]
            kc = layer.lin(h)
            # z = sigmoid(k) and g(c) = (c >= 0 ? c + 0.5 : sigmoid(c)) in one pass over [k | c]
            # (the threshold row is +inf over k): fewer graph nodes, the same numbers
            zg = torch.where(kc >= self.g_threshold, kc + 0.5, torch.sigmoid(kc))
            z, g = zg[:, :hid], zg[:, hid:]
            hn = prev + z * (g - prev)
            new.append(hn)
            h = hn if i == 0 else hn + h
        ho = h @ self.head_w + self.head_b  # [B, 32 + 288 + 1]
        gains = torch.sigmoid(ho[:, :N_BANDS])
        c = ho[:, N_BANDS : N_BANDS + DF_ORDER * DF_BINS * 2].reshape(-1, 2, DF_ORDER, DF_BINS)
        vad = torch.sigmoid(ho[:, -1:])  # [B, 1]
        if not self.linked:
            return self._per_channel(spec, low, power, gains, c, vad, state_4, state_5, state_6, atten_lim_db,
                                     audio_in, d1, d2, new, ctx_out)
        # every channel's own low bins of frames t, t-1, t-2: [G, C / G, 2, ORDER, BINS]
        past = torch.cat([spec_c[:, :, :, :DF_BINS].unsqueeze(3),
                          state_4.reshape(spec_c.shape[0], -1, 2, DF_ORDER - 1, DF_BINS)], dim=3)
        # complex multiply-accumulate over taps: [dr; di] = sum cr [pr; pi] + ci [-pi; pr]
        cg = c.unsqueeze(1)  # the group's filter for each of its channels
        df = (cg[:, :, 0:1] * past + cg[:, :, 1:2] * (past.flip(2) * self.swap_sign)).sum(3)  # [G, C/G, 2, BINS]
        y_spec = (gains @ net.interp)[:, None, None] * spec_c + torch.nn.functional.pad(df, (0, N_BINS - DF_BINS))
        held = ()
        pf = net.postfilter
        if pf is not None:  # from the group's mean power: the same factors for all its channels
            ey = (y_spec * y_spec).sum(2).mean(1) @ net.band
            raw = torch.sqrt(ey / (power @ net.band + 1e-10))
            f, h = postfilter_gain(torch.clamp(raw, 0.0, 1.0), vad, pf, state_6, raw)
            held = () if h is None else (h,)
            y_spec = y_spec * (f @ net.interp)[:, None, None]
        y_spec = y_spec + torch.pow(10.0, atten_lim_db * -0.05) * (spec_c - y_spec)
        y = self.irdft(y_spec.reshape(-1, 2, N_BINS))  # [C, N]
        audio_out = y[:, :HOP] + state_5
        return (audio_out, audio_in, d1, d2, torch.cat(new, dim=1),
                past[:, :, :, : DF_ORDER - 1].reshape(-1, 2, DF_ORDER - 1, DF_BINS), y[:, HOP:],
                *held, *ctx_out, level_out, vad, gains)

    def _per_channel(self, spec, low, power, gains, c, vad, state_4, state_5, state_6, atten_lim_db, audio_in,
                     d1, d2, new, ctx_out):
        """The rest of a hop in the per-channel graph (every row a stream of its own)."""
        net = self.net
        past = torch.cat([low.unsqueeze(2), state_4], dim=2)  # [B, 2, ORDER, BINS]: t, t-1, t-2
        # complex multiply-accumulate over taps: [dr; di] = sum cr [pr; pi] + ci [-pi; pr]
        df = (c[:, 0:1] * past + c[:, 1:2] * (past.flip(1) * self.swap_sign)).sum(2)  # [B, 2, BINS]
        y_spec = (gains @ net.interp).unsqueeze(1) * spec + torch.nn.functional.pad(df, (0, N_BINS - DF_BINS))
        held = ()
        pf = net.postfilter
        if pf is not None:
            ey = (y_spec * y_spec).sum(1) @ net.band
            raw = torch.sqrt(ey / (power @ net.band + 1e-10))
            f, h = postfilter_gain(torch.clamp(raw, 0.0, 1.0), vad, pf, state_6, raw)
            held = () if h is None else (h,)
            y_spec = y_spec * (f @ net.interp).unsqueeze(1)
        y_spec = y_spec + torch.pow(10.0, atten_lim_db * -0.05) * (spec - y_spec)
        y = self.irdft(y_spec)  # [B, N]
        audio_out = y[:, :HOP] + state_5
        return (audio_out, audio_in, d1, d2, torch.cat(new, dim=1), past[:, :, : DF_ORDER - 1], y[:, HOP:],
                *held, *ctx_out, vad, gains)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def macs_per_hop(net: DenoiseNet) -> int:
    """Multiply-accumulates per hop of the streaming graph (matmuls only; elementwise work is small)."""
    h = net.hidden
    c = factored_dft_constants()
    dft = (c["f1"].size * CT_COLS + c["f2"].size  # forward: stage 1 over rows, stage 2 per row
           + c["i1"].size * CT_COLS + c["i2"].size)  # inverse
    bands = 2 * N_BINS * N_BANDS
    enc = (N_BANDS + 2 * DF_BINS) * h * (1 + net.context)
    gru = net.layers * 2 * h * h
    heads = h * (N_BANDS + DF_ORDER * DF_BINS * 2 + 1)
    df = DF_ORDER * DF_BINS * 4
    pf = 2 * N_BINS * N_BANDS if net.postfilter is not None else 0  # band energies of Y, factors to bins
    return dft + bands + enc + gru + heads + df + pf
