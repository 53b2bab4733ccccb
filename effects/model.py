"""ModelEffect: any streaming ONNX model (models/README.md) as a real-time Effect.

Signal path, per channel (each channel has its own buffers; the network's state is the channel's
own, or its link group's, below)::

    block ──► [resample engine→model rate] ──► hop FIFO ──► model (one hop) ──► reduction limit ──►
          [resample model→engine rate] ──► output ring (absolute sample index) ──► mix ──► overload fade ──► block
      └──► dry delay line (latency_samples) ───────────────────────────────────────┘        ┘

Latency. Any host block size (1..4096 or more) works against any hop because the output ring is
read a fixed ``L_fifo`` samples behind the input: output sample ``t`` is pipeline sample
``t - L_fifo``, whatever the block boundaries. At the model's rate ``L_fifo = hop - 1`` (the least
any block size allows) and :attr:`latency_samples` = ``hop - 1 + D`` exactly (``D`` the graph's
``hushbridge.latency_samples``). At another engine rate the resamplers release their output in
bursts; ``L_fifo`` is the largest shortfall those bursts can cause (simulated once per rate pair at
prepare time over 8 s of input in 16-sample steps, bounded from above, then cached), the
resamplers' own signal delay is measured with an impulse, and the reported latency is
``round(L_fifo + resampler delay + D * engine_rate / model_rate)``: within one sample of the truth
with soxr; with our resampler (``"RT"``, the default) the output resampler adds the fraction of a
sample that makes that sum whole, so the reported latency is exact at every rate.
If the ring ever lacks a sample (it should not) it reads a zero and :attr:`ring_underruns` rises;
the delay never changes.

Resampling (``resample_quality``) defaults to ``"RT"``, our own allocation-free polyphase resampler
(:mod:`hushbridge.effects.resampler`: the round trip to a higher model rate and back is within 1 dB
to 0.45 x the engine rate (19.8 kHz at 44.1 kHz), -5 dB at 0.49; from a higher engine rate flat to
0.4 x the model rate with aliases down > 70 dB; the round trip 44.1↔48 kHz adds about 1.1 ms,
so the denoiser stays near 10 ms at 44.1 kHz). The soxr qualities are there too: ``"LQ"`` is flat to 16 kHz at 44.1 kHz and adds about 10.7 ms, ``"QQ"``
adds 0.1 ms but droops -3.5 dB at 16 kHz, ``"HQ"`` adds about 40 ms; soxr's ``resample_chunk``
returns a new small array per call (its API has no ``out=``), an allocation on the audio path.

``reduction_db`` limits how far the model may turn anything down. With an ``atten_lim_db`` input
the model gets the value, moved there in steps of one hop over the parameter's 50 ms (in dB;
the graph's overlap-add smooths each step across the window). Without it the effect mixes the
model's output with its own input delayed by ``D`` at the model rate (exactly aligned): ``out = wet + g * (dry - wet)`` with
``g = 10 ** (-reduction_db / 20)``, so a signal the model removes entirely still comes out at
``-reduction_db`` dB and what the model keeps is unchanged; at 100 dB the limit is off (``g = 0``).
``mix`` (0..1) then blends the result with the dry input delayed by ``latency_samples``;
``reduction_db = 0`` is that dry path (bit-exact at any engine rate, reached through the 20 ms
``mix`` ramp).

Channels. ``link`` chooses how the network hears them: ``"stereo"`` (default) links the two
channels of a stereo stream: the network hears the pair (one side's phase, both sides' power:
nothing cancels in opposite polarity or between spaced microphones) and its gains, deep filter
and post-filter apply to both alike, so the image stays where it is (per channel, each side's
noise moves its own gains and a centred voice can wander) and the network runs once; ``"all"``
links any number of channels; ``"none"`` runs every channel on its own. Other channel counts,
and graphs that cannot link (no ``groups`` dimension, models/README.md), run per channel. A
set-up option (:meth:`set_link`, a preset's ``link = "none"``, ``--set denoise.link=none``),
read at ``prepare``. Separate microphones want a chain run per channel
(``Chain(per_channel=True)``, ``--per-channel``), where each channel has an instance of its own
whatever ``link`` says. :attr:`linked` says what a prepared effect does.

Overload. Each hop's inference time (all channels; in a per-channel chain each channel's
instance gets its share, ``overload_budget / N``) is measured against ``overload_budget`` times
the hop's real-time duration. When :data:`OVERLOAD_MISSES` of the last :data:`OVERLOAD_WINDOW` hops
missed, the effect crossfades (:data:`FADE_MS`) to its latency-matched dry path, sets
:attr:`overloaded`, counts :attr:`overload_events` and stops inference (the pipeline keeps
running on the delayed input, so the delay never changes). Every :data:`PROBE_S` seconds it probes:
runs the model for :data:`PROBE_HOPS` hops without using the output; if fewer than
:data:`OVERLOAD_MISSES` of them miss, it crossfades back to the model and :attr:`recoveries` rises.

Silence. After :data:`REARM_S` of input at or under :data:`QUIET_DBFS` on every channel (nothing
plugged in, a stopped transport, a gate closed, an engine idling before the take), the first
sample above it finds the effect as a reset leaves it (model state, FIFOs, rings, resamplers),
its hop grid starting at that sample (on every channel together: a channel's output can
depend on where another's signal starts, by that grid only). The latency-matched dry path is not
reset, so ``mix`` 0 and ``reduction_db`` 0 stay the input itself through it. By then all the
previous signal left has played out but a tail under the quiet level, so nothing audible is cut. Two reasons: a live engine that idled on
digital silence gives the take exactly what an offline render of the take alone gives (they
differed by ~25 dB SNR: the recurrent state never settles in silence and the hop grid fell
anywhere on the take); and a model whose level normalisation (running means over about a second)
settled on near-silence took the noise that came back with the next phrase for speech for over a
second (-2 to -7 dB of reduction after a pause at a -90 dBFS floor, against -14 to -18 dB from a
fresh start). At the model's own rate only: a resampler restarted at the first sample of signal
places it a fraction of a sample off its steady-state delay (0.07 samples at 22.05 kHz, 0.17 at
44.1 kHz), so at other rates the grid runs on through silence as before.

Non-finite input is replaced by silence, the model state of the channels that had it is reset
(linked channels share the network's state: it plays on, hearing that channel silenced) and
:attr:`nonfinite_events` rises; a model that produces non-finite output or state for a channel
gets that channel's state (linked: its group's) reset and a silent hop. The model's input is clamped to
±:data:`INPUT_LIMIT` (+24 dBFS; the dry path keeps the input as it is) and each hop that needed it
counts in :attr:`overrange_hops`: a burst far over full scale would otherwise push the model's
running level means so high that it turned the speech after it down for seconds (10-24 dB for
5-8 s after 1.3 ms at +40 to +80 dBFS).

Offline (``non_realtime``) or with ``overload_budget`` 0 there is no deadline: an effect that fell
back to dry while live returns to the model at its next ``reset`` (at once) or block (a fade), and
``prepare`` for a new spec starts every effect on the model.
"""
from __future__ import annotations

import math
import os
import time
from typing import ClassVar

import numpy as np

from hushbridge.dsp.kernels.model import clamp_block, fifo_fill, ring_read, ring_write, signal_span
from hushbridge.dsp.kernels.model import warm_up as _warm_model_kernels
from hushbridge.dsp.kernels.util import delay_through, ramp_mix, sanitize, sanitize_rows
from hushbridge.effects.base import Effect, Param, ProcessSpec, ramp_step
from hushbridge.dsp.resample import CUTOFF, ROUND_TRIP_CUTOFF
from hushbridge.effects.resampler import RESAMPLE_QUALITIES, make_stream
from hushbridge.models.runtime import ModelError, StreamingModel, linked_path

FADE_MS = 20.0
OVERLOAD_WINDOW = 16
OVERLOAD_MISSES = 4
PROBE_S = 1.0
PROBE_HOPS = 16
REARM_S = 0.5  # silence after which the next signal starts from a reset (see module doc)
QUIET_DBFS = -70.0  # ... counted as silence: under a microphone's own noise, a gate's closed level
INPUT_LIMIT = 16.0  # the model's input clamp (+24 dBFS); see the module doc
WARM_RUNS = 128
LINK_MODES = ("stereo", "all", "none")
_PLAN_SECONDS = 8.0  # simulated round trip, long enough for the resamplers' burst patterns to repeat
_PLAN_CHUNK = 16

_plans: dict[tuple[int, int, int, str], tuple[int, float]] = {}


def round_trip_cutoff(engine_rate: int, model_rate: int) -> float:
    """Low-pass of our resamplers for the round trip engine→model→engine rate: up to a higher
    model rate and back, images fold back onto their own frequency and the wide
    :data:`~hushbridge.dsp.resample.ROUND_TRIP_CUTOFF` keeps the band to 0.45 x the engine rate;
    down to a lower model rate, the one-way cutoff keeps aliases out."""
    return ROUND_TRIP_CUTOFF if engine_rate < model_rate else CUTOFF


def resample_plan(engine_rate: int, model_rate: int, hop: int, quality: str) -> tuple[int, float]:
    """``(L_fifo, signal_delay)`` for a resampling round trip engine→model→engine rate with ``hop``.

    ``L_fifo`` (engine samples) is how far behind the input the output ring must be read so that
    no block size ever finds it short. ``signal_delay`` is the round trip's own delay of an impulse
    (engine samples, fractional). Computed once per argument set and cached (0.1-0.4 s)."""
    key = (int(engine_rate), int(model_rate), int(hop), quality)
    if key in _plans:
        return _plans[key]
    # Simulate the round trip: input fed CHUNK samples at a time, the output stream one hop at a
    # time as the model would. Within a chunk the input stream's output may appear at any sample,
    # so the shortfall is bounded as if it appeared at the chunk's end (at most CHUNK - 1 too high).
    fc = round_trip_cutoff(engine_rate, model_rate)
    rs_in = make_stream(engine_rate, model_rate, quality, _PLAN_CHUNK, cutoff=fc)
    rs_out = make_stream(model_rate, engine_rate, quality, hop, cutoff=fc)
    chunk = np.zeros(_PLAN_CHUNK, dtype=np.float32)
    zeros = np.zeros(hop, dtype=np.float32)
    fill = w = worst = 0
    for j in range(1, int(_PLAN_SECONDS * engine_rate) // _PLAN_CHUNK + 1):
        end = j * _PLAN_CHUNK
        w_before = w
        fill += len(rs_in.resample_chunk(chunk))
        while fill >= hop:
            fill -= hop
            w += len(rs_out.resample_chunk(zeros))
        worst = max(worst, end - 1 - w_before, end - w)
    l_fifo = worst
    # signal delay of the round trip: an impulse, located to a fraction of a sample
    n = 8 * int(engine_rate / 100) + 4096
    x = np.zeros(n, dtype=np.float32)
    at = n // 4
    x[at] = 1.0
    mid = make_stream(engine_rate, model_rate, quality, 4096, cutoff=fc).resample_chunk(x, last=True)
    y = make_stream(model_rate, engine_rate, quality, 4096, cutoff=fc).resample_chunk(mid, last=True)
    k = int(np.argmax(np.abs(y)))
    frac = 0.0
    if 0 < k < len(y) - 1:
        a, b, c = (float(v) for v in y[k - 1:k + 2])
        den = a - 2 * b + c
        frac = 0.5 * (a - c) / den if den != 0 else 0.0
    _plans[key] = (l_fifo, k + frac - at)
    return _plans[key]


class _RTState:
    """Mutable audio-thread state and counters (plain attributes: cheaper than Effect.__setattr__)."""

    __slots__ = ("t", "dpos", "t_inf", "hops_block", "idle_hops", "probing", "probe_done", "probe_misses",
                 "hist_pos", "miss_count", "activity", "overloaded", "overload_events", "recoveries",
                 "nonfinite_events", "ring_underruns", "overrange_hops", "last_inference_s", "zeros", "idle")

    def __init__(self) -> None:
        self.t = self.dpos = self.hops_block = self.idle_hops = self.probe_done = self.probe_misses = 0
        self.hist_pos = self.miss_count = 0
        self.t_inf = self.last_inference_s = 0.0
        self.probing = self.overloaded = False
        self.activity = float("nan")
        self.overload_events = self.recoveries = self.nonfinite_events = self.ring_underruns = 0
        self.overrange_hops = 0
        self.zeros = 0  # samples of digital silence in a row at the end of the input so far
        self.idle = True  # the next sample of signal starts from a reset


class ModelEffect(Effect):
    """A streaming ONNX model as an Effect; see the module docstring.

    Parameters
    ----------
    model_path : str or os.PathLike, optional
        The ``.onnx`` file; default: the class's shipped model (:meth:`default_model_path`).
    resample_quality : {"RT", "QQ", "LQ", "MQ", "HQ", "VHQ"}
        Resampler when the engine rate is not the model's: ``"RT"`` ours (default), the others
        soxr's qualities (latency against quality, see above).
    overload_budget : float
        Share of a hop's real-time duration one hop's inference (all channels) may take before it
        counts as a miss. ``0`` disables the overload fallback.
    link : {"stereo", "all", "none"}
        Which channels the network hears as one (see above): a stereo pair (default), any
        number, or none.
    **values
        Parameter values (``reduction_db``, ``mix``).

    Attributes
    ----------
    activity : float
        The model's latest speech probability (``activity`` output, largest over channels; NaN
        when the graph has none).
    overloaded : bool
        True while the effect runs on its dry path because inference missed its budget.
    linked : bool
        Whether the prepared effect runs its channels as one link group.
    overload_events, recoveries, nonfinite_events, ring_underruns, overrange_hops : int
        Counters.
    last_inference_s : float
        Inference time of the latest hop, all channels, seconds.
    """

    name: ClassVar[str] = "model"
    params = (
        Param("reduction_db", 0.0, 100.0, 40.0, smoothing_ms=50.0),
        Param("mix", 0.0, 1.0, 1.0, smoothing_ms=20.0),
    )
    model_file: ClassVar[str] = ""
    # each channel has its own model state, but the silence restart and the overload fallback
    # hear all channels together: one instance per channel runs a channel as if it were alone
    channel_coupling = "linked"

    def __init__(self, model_path: str | os.PathLike | None = None, *, resample_quality: str = "RT",
                 overload_budget: float = 0.5, link: str = "stereo", **values: float) -> None:
        if resample_quality not in RESAMPLE_QUALITIES:
            raise ValueError(f"resample_quality must be one of {RESAMPLE_QUALITIES}, got {resample_quality!r}")
        self.set_link(link)  # checked before a model file is opened
        if not (isinstance(overload_budget, (int, float)) and 0.0 <= overload_budget):
            raise ValueError(f"overload_budget must be a number >= 0, got {overload_budget!r}")
        path = self.default_model_path() if model_path is None else model_path
        model = StreamingModel(path)
        info = model.info
        object.__setattr__(self, "model", model)  # the one running: this, or the linked graph's
        object.__setattr__(self, "_base", model)
        object.__setattr__(self, "_linked_model", None)
        self.resample_quality = resample_quality
        self.overload_budget = float(overload_budget)
        self._mix_state = np.array([1.0, 1.0, 1.0], dtype=np.float64)
        self._on_state = np.array([1.0, 1.0, 1.0], dtype=np.float64)
        self._red_target = 1.0
        self._red_state = np.ones((1, 3), dtype=np.float64)
        # an atten_lim_db input's [current, target, step per hop] in dB (see _step_limit)
        self._lim = np.zeros(3, dtype=np.float64)
        self._lim_hops = max(1, round(self.params[0].smoothing_ms * 1e-3 * info.sample_rate / info.hop))
        self._latency = info.latency_samples + info.hop - 1
        self._l_fifo = info.hop - 1
        self._rt = _RTState()
        self.resampler_delay = 0.0
        self._frac = 0.0
        super().__init__(**values)

    def __reduce__(self):
        # an onnxruntime session does not pickle: a copy opens the same model file again and
        # comes back unprepared, with the same settings and parameter values
        return (_rebuild, (type(self), self._base.info.path, self.resample_quality, self.overload_budget,
                           self.values(), self.link))

    @classmethod
    def default_model_path(cls):
        """The shipped model of this effect inside ``hushbridge.models``."""
        from hushbridge.models.runtime import ModelNotFoundError, default_model_path

        if not cls.model_file:
            raise TypeError(f"{cls.__name__} has no shipped model: pass model_path=")
        path = default_model_path(cls.model_file)
        if not path.is_file():
            raise ModelNotFoundError(
                f"{cls.name}: the shipped model {cls.model_file} is not installed (looked in {path}); "
                f"train and export it (models/train/, see models/README.md) or pass model_path=")
        return path

    # -- reporting ----------------------------------------------------------------------------
    @property
    def activity(self):
        return self._rt.activity

    @property
    def overloaded(self):
        return self._rt.overloaded

    @property
    def overload_events(self):
        return self._rt.overload_events

    @property
    def linked(self) -> bool:
        return self.model.linked

    def _model_for(self, channels: int) -> StreamingModel:
        """The model that runs ``channels`` channels as ``link`` says, prepared: the graph itself, or
        the link-group graph beside it (``<name>.linked.onnx``, opened once) when the channels
        link and it does not; without one, per channel."""
        base = model = self._base
        link = self.link == "all" and channels > 1 or self.link == "stereo" and channels == 2
        if link and not base.info.linkable:
            if self._linked_model is None:
                sibling = linked_path(base.info.path)
                if sibling.is_file():
                    other = StreamingModel(sibling)
                    a, b = base.info, other.info
                    if (a.sample_rate, a.hop, a.latency_samples) != (b.sample_rate, b.hop, b.latency_samples):
                        raise ModelError(f"{sibling}: rate, hop or latency differ from {a.path}'s; a linked graph "
                                         "must be the same model")
                    object.__setattr__(self, "_linked_model", other)
            model = self._linked_model or base
        if model is not self.model and model.atten_lim_db is not None:
            model.atten_lim_db[0] = self._lim[0]  # where reduction_db has brought the other one
        object.__setattr__(self, "model", model)
        model.prepare(channels, linked=link and model.info.linkable)
        return model

    def set_link(self, link: str) -> None:
        """Choose ``link`` (see above); a set-up option: it takes effect at the next ``prepare``
        (a preset's ``link = "none"``, ``--set denoise.link=none``), never in a running stream."""
        link = link.lower() if isinstance(link, str) else link
        if link not in LINK_MODES:
            raise ValueError(f"{self.name}: link must be one of {', '.join(LINK_MODES)}, got {link!r}")
        self.link = link

    def preset_keys(self) -> dict[str, str]:
        """What a preset keeps besides the parameters: ``link`` when it is not the default."""
        return {} if self.link == "stereo" else {"link": self.link}

    def _carry_counters(self, previous: Effect) -> None:
        old, rt = previous.__dict__.get("_rt"), self._rt
        if old is not None:
            for name in ("overload_events", "recoveries", "nonfinite_events", "ring_underruns", "overrange_hops"):
                setattr(rt, name, getattr(rt, name) + getattr(old, name))

    @property
    def recoveries(self):
        return self._rt.recoveries

    @property
    def nonfinite_events(self):
        return self._rt.nonfinite_events

    @property
    def ring_underruns(self):
        return self._rt.ring_underruns

    @property
    def overrange_hops(self):
        return self._rt.overrange_hops

    @property
    def last_inference_s(self):
        return self._rt.last_inference_s

    @property
    def latency_samples(self) -> int:
        """Delay in samples at the engine rate (after ``prepare``; before it, at the model rate)."""
        return self._latency

    @property
    def model_latency_exact(self) -> float:
        """The unrounded latency at the prepared rate (engine samples)."""
        spec = self._spec
        info = self.model.info
        if spec is None or spec.sample_rate == info.sample_rate:
            return float(self._latency)
        return (self._l_fifo + self.resampler_delay + self._frac
                + info.latency_samples * spec.sample_rate / info.sample_rate)

    def __repr__(self) -> str:
        base = super().__repr__()
        return base.replace(" at 0x", f" model={self.model.info.name!r} at 0x")

    # -- parameters ---------------------------------------------------------------------------
    def _param_changed(self, index: int) -> None:
        v = float(self._values[index])
        if index == 0:
            if self.model.atten_lim_db is not None:
                lim = self._lim
                lim[1] = v
                if self._spec is None:
                    lim[0] = v
                    self.model.atten_lim_db[0] = v
                lim[2] = abs(v - lim[0]) / self._lim_hops
                self._red_target = 1.0
            else:
                self._red_target = 1.0 if v >= 100.0 else 1.0 - 10.0 ** (-v / 20.0)
            self._red_state[:, 1] = self._red_target
            if self._spec is None:
                self._red_state[:, 0] = self._red_target
        # reduction_db = 0 promises the input untouched: the latency-matched dry path, since the wet
        # path at another engine rate goes through a resampling round trip that rolls off the top
        mix = float(self._values[1]) if float(self._values[0]) > 0.0 else 0.0
        self._mix_state[1] = mix
        if self._spec is None:
            self._mix_state[0] = mix

    # -- lifecycle ----------------------------------------------------------------------------
    def _prepare(self, spec: ProcessSpec) -> None:
        model, info = self.model, self.model.info
        hop, d, ch = info.hop, info.latency_samples, spec.channels
        sr, msr = spec.sample_rate, info.sample_rate
        if sr == msr:
            self._rs_in = self._rs_out = None
            self._l_fifo = hop - 1
            self.resampler_delay = self._frac = 0.0
            self._latency = d + hop - 1
            hop_e = hop
        else:
            q = self.resample_quality
            self._l_fifo, self.resampler_delay = resample_plan(sr, msr, hop, q)
            exact = self._l_fifo + self.resampler_delay + d * sr / msr
            # our resampler adds the fraction that makes the total a whole number of samples: the
            # reported latency is then exact at every rate, not only within one sample
            frac = math.ceil(exact - 1e-6) - exact if q == "RT" else 0.0
            self._frac = frac if frac > 1e-6 else 0.0
            fc = round_trip_cutoff(sr, msr)
            self._rs_in = [make_stream(sr, msr, q, spec.max_block_size, cutoff=fc) for _ in range(ch)]
            self._rs_out = [make_stream(msr, sr, q, hop, self._frac, fc) for _ in range(ch)]
            self._latency = int(round(exact + self._frac))
            hop_e = int(math.ceil(hop * sr / msr))
        model = self._model_for(ch)
        self._fifo = np.zeros((ch, hop), dtype=np.float32)
        self._fill = [0] * ch
        # the model-rate dry lines: all channels at once for a batched graph (one call serves every
        # channel, their FIFOs fill in step), or row by row (views) for one call per channel
        self._batched = model.info.batched
        self._mline_all = np.zeros((ch, d + hop + 1), dtype=np.float32)
        self._mpos_all = 0
        self._mline = [self._mline_all[c:c + 1] for c in range(ch)]
        self._mpos = [0] * ch
        self._dryhop = np.zeros((1, hop), dtype=np.float32)
        self._dryhop_all = np.zeros((ch, hop), dtype=np.float32)
        self._xs: list[np.ndarray] = [self._dryhop_all[0]] * ch
        size = self._l_fifo + spec.max_block_size + 4 * hop_e + 1024
        self._ring = np.zeros((ch, size), dtype=np.float32)
        self._w = [0] * ch
        self._rt.t = 0
        self._dline = np.zeros((ch, self._latency + spec.max_block_size + 1), dtype=np.float32)
        self._rt.dpos = 0
        self._dry = np.zeros((ch, spec.max_block_size), dtype=np.float32)
        self._bad_rows = np.zeros(ch, dtype=np.int64)
        self._act = np.full(ch, np.nan, dtype=np.float64)
        red = self._red_target
        self._red_state = np.tile(np.array([red, red, ramp_step(ProcessSpec(msr, hop, 1), 50.0)]), (ch, 1))
        self._mix_state[2] = ramp_step(spec, self.params[1].smoothing_ms)
        self._on_state[2] = ramp_step(spec, FADE_MS)
        self._history = np.zeros(OVERLOAD_WINDOW, dtype=np.int8)
        self._rt.hist_pos = 0
        self._rt.miss_count = 0
        self._rt.overloaded = False  # a new start is on the model; a fallback from before is over
        self._on_state[0] = self._on_state[1] = 1.0
        # one instance of a per-channel chain's N gets 1/N of the hop: together they keep its deadline
        self._budget = self.overload_budget * self._channel_share * hop / msr
        self._probe_every = max(1, int(PROBE_S * msr / hop))
        self._rt.idle_hops = 0
        self._rt.probing = False
        self._rt.probe_done = 0
        self._rt.probe_misses = 0
        self._rt.t_inf = 0.0
        self._rt.hops_block = 0
        self._rearm = max(1, int(REARM_S * sr))
        self._quiet = 10.0 ** (QUIET_DBFS / 20.0)
        _warm_model_kernels()
        # the first onnxruntime runs of a session are slow and allocate (for about 100 runs with a
        # dynamic batch): do them here, not in a callback; a pooled session that ran this batch
        # size before needs none
        rows = (ch, model.linked) if self._batched else 1
        if rows not in model.warmed:
            for _ in range(WARM_RUNS):
                if self._batched:
                    model.run_all()
                else:
                    for c in range(ch):
                        model.run_hop(c)
            model.warmed.add(rows)
        model.reset()

    def reset(self) -> None:
        """Clear model state, FIFOs, resamplers and delay lines (transport jump); keep parameters
        and the overload state."""
        if self._spec is None:
            return
        self._restart()
        self._dline.fill(0.0)
        self._rt.dpos = 0

    def _restart(self) -> None:
        """What :meth:`reset` clears but the latency-matched dry line: the silence rule restarts
        the model path with this, and the dry path (``mix`` 0, ``reduction_db`` 0) plays on."""
        if self._rt.overloaded and (self.non_realtime or self.overload_budget <= 0):
            self._resume_model()  # and the fade is skipped below: an offline render starts on the model
        self.model.reset()
        self._fifo.fill(0.0)
        for c in range(self._spec.channels):
            self._fill[c] = 0
            self._mpos[c] = 0
            self._w[c] = 0
        self._mline_all.fill(0.0)  # every channel's dry line (the per-channel ones are its rows)
        self._mpos_all = 0
        if self._rs_in is not None:
            for r in self._rs_in:
                r.clear()
            for r in self._rs_out:
                r.clear()
        self._ring.fill(0.0)
        self._rt.t = 0
        self._act.fill(np.nan)
        self._snap_limit()
        self._red_state[:, 0] = self._red_state[:, 1]
        self._mix_state[0] = self._mix_state[1]
        self._on_state[0] = self._on_state[1]
        self._history.fill(0)
        self._rt.miss_count = 0
        self._rt.zeros = 0
        self._rt.idle = True  # the first sample of signal starts the hop grid

    # -- audio --------------------------------------------------------------------------------
    def process(self, block: np.ndarray) -> None:
        """Run the model on ``block`` (channels, frames) float32 in place; the output is delayed by
        :attr:`latency_samples`."""
        spec = self._require_prepared(block)
        n = block.shape[1]
        if sanitize_rows(block, self._bad_rows):
            self._rt.nonfinite_events += 1
            for c in range(spec.channels):  # only the channels that had them: the others play on
                if self._bad_rows[c] and not self.model.linked:  # (linked they share the network: it
                    self.model.reset(c)                           # hears the channel silenced, and plays on)
        if self._rs_in is None:  # silence rules at the model's rate only (module docstring)
            if n > self._rearm:  # a whole pause may lie inside: pieces in which none can
                for start in range(0, n, self._rearm):
                    self._process_at_model_rate(spec, block[:, start : start + self._rearm])
                return
            self._process_at_model_rate(spec, block)
            return
        self._run_block(spec, block)

    def _process_at_model_rate(self, spec: ProcessSpec, block: np.ndarray) -> None:
        """The silence rules (module docstring) on a block no longer than the pause they need."""
        n = block.shape[1]
        first, last = signal_span(block, self._quiet)
        rt = self._rt
        # the pause counts up to the block's first sound, wherever in the block it lies
        # (without the frames before it, a pause was judged by where the blocks fell)
        if first < n and (rt.idle or rt.zeros + first >= self._rearm):
            if first > 0:  # the silence before it, as silence was processed so far
                self._run_block(spec, block[:, :first])
            self._restart()
            rt.idle = False
            rt.zeros = n - 1 - last
            self._run_block(spec, block[:, first:])
            return
        rt.zeros = rt.zeros + n if first == n else n - 1 - last
        self._run_block(spec, block)

    def _run_block(self, spec: ProcessSpec, block: np.ndarray) -> None:
        n = block.shape[1]
        if self._rt.overloaded and (self.non_realtime or self.overload_budget <= 0):
            self._resume_model()  # no deadline now (module doc)
        dry = self._dry[:, :n]
        self._rt.dpos = delay_through(block, self._dline, self._rt.dpos, self._latency, dry)
        run = not self._rt.overloaded or self._rt.probing or self._on_state[0] > 0.0
        self._rt.t_inf = 0.0
        self._rt.hops_block = 0
        rs_in = self._rs_in
        if self._batched:
            xs = self._xs
            for c in range(spec.channels):
                xs[c] = block[c] if rs_in is None else rs_in[c].resample_chunk(block[c])
            self._feed_all(xs, run)
        else:
            for c in range(spec.channels):
                x = block[c]
                if rs_in is not None:
                    x = rs_in[c].resample_chunk(x)
                self._feed(c, x, run)
        r = self._rt.t - self._l_fifo
        for c in range(spec.channels):
            missing = ring_read(self._ring[c], self._w[c], r, block[c])
            if missing:
                self._rt.ring_underruns += 1
        self._rt.t += n
        if self._mix_state[0] != 1.0 or self._mix_state[1] != 1.0:
            ramp_mix(block, dry, self._mix_state)
        if self._on_state[0] != 1.0 or self._on_state[1] != 1.0:
            ramp_mix(block, dry, self._on_state)
        if self._rt.hops_block:
            self._account(run)

    def _feed(self, c: int, x: np.ndarray, run: bool) -> None:
        """Push model-rate samples ``x`` of channel ``c`` through the hop FIFO, one hop at a time."""
        fifo = self._fifo[c]
        hop = fifo.shape[0]
        m = x.shape[0]
        i = 0
        fill = self._fill[c]
        while i < m:
            k = fifo_fill(x, i, fifo, fill)
            i += k
            fill += k
            if fill == hop:
                fill = 0
                self._hop(c, fifo, run)
        self._fill[c] = fill

    def _feed_all(self, xs: list[np.ndarray], run: bool) -> None:
        """Batched graphs: push every channel's model-rate samples (equal counts: the channels'
        resamplers see the same number of samples) through the FIFOs, one batched hop at a time."""
        fifo = self._fifo
        hop = fifo.shape[1]
        m = xs[0].shape[0]
        fill = self._fill[0]
        i = 0
        while i < m:
            k = 0
            for c in range(len(xs)):
                k = fifo_fill(xs[c], i, fifo[c], fill)
            i += k
            fill += k
            if fill == hop:
                fill = 0
                self._hop_all(run)
        for c in range(len(xs)):
            self._fill[c] = fill

    def _hop_all(self, run: bool) -> None:
        model = self.model
        ain = model.audio_in
        ain[...] = self._fifo
        dryhop = self._dryhop_all
        self._mpos_all = delay_through(ain, self._mline_all, self._mpos_all, model.info.latency_samples, dryhop)
        if clamp_block(ain, INPUT_LIMIT):
            self._rt.overrange_hops += 1
        if model.atten_lim_db is not None:
            self._step_limit()
        self._rt.hops_block += 1
        ch = ain.shape[0]
        if run:
            t0 = time.perf_counter()
            out = self._infer_all()
            self._rt.t_inf += time.perf_counter() - t0
            for c in range(ch):
                if sanitize(out[c:c + 1]) or not model.state_finite(c):
                    out[c].fill(0.0)
                    model.reset(c)
                    self._rt.nonfinite_events += 1
                if model.info.has_activity:
                    self._act[c] = model.extras[c]["activity"].flat[0]
            if model.atten_lim_db is None:
                ramp_mix(out, dryhop, self._red_state[0])
            src = out
        else:
            src = dryhop
        rs_out = self._rs_out
        for c in range(ch):
            row = src[c] if rs_out is None else rs_out[c].resample_chunk(src[c])
            self._w[c] = ring_write(self._ring[c], self._w[c], row)

    def _infer_all(self) -> np.ndarray:
        """One batched hop of inference for every channel (tests wrap this to simulate load)."""
        return self.model.run_all()

    def _hop(self, c: int, fifo: np.ndarray, run: bool) -> None:
        model = self.model
        ain = model.audio_in
        ain[0] = fifo
        dryhop = self._dryhop
        self._mpos[c] = delay_through(ain, self._mline[c], self._mpos[c], model.info.latency_samples, dryhop)
        if clamp_block(ain, INPUT_LIMIT):
            self._rt.overrange_hops += 1
        if c == 0:
            self._rt.hops_block += 1
            if model.atten_lim_db is not None:
                self._step_limit()
        if run:
            t0 = time.perf_counter()
            out = self._infer(c)
            self._rt.t_inf += time.perf_counter() - t0
            if sanitize(out) or not model.state_finite(c):
                out.fill(0.0)
                model.reset(c)
                self._rt.nonfinite_events += 1
            if model.info.has_activity:
                self._act[c] = model.extras[c]["activity"].flat[0]
            if model.atten_lim_db is None:
                ramp_mix(out, dryhop, self._red_state[c])
            src = out[0]
        else:
            src = dryhop[0]
        if self._rs_out is not None:
            src = self._rs_out[c].resample_chunk(src)
        self._w[c] = ring_write(self._ring[c], self._w[c], src)

    def _step_limit(self) -> None:
        """Move an ``atten_lim_db`` input one hop's step toward ``reduction_db`` (once per hop, for
        every channel)."""
        lim = self._lim
        cur, target = lim[0], lim[1]
        if cur != target:
            step = lim[2]
            cur = min(cur + step, target) if cur < target else max(cur - step, target)
            lim[0] = cur
            self.model.atten_lim_db[0] = cur

    def _snap_limit(self) -> None:
        if self.model.atten_lim_db is not None:
            self._lim[0] = self._lim[1]
            self.model.atten_lim_db[0] = self._lim[1]

    def _resume_model(self) -> None:
        """Leave the dry fallback without a probe (offline, or the fallback turned off): fade back
        to a model started afresh."""
        rt = self._rt
        rt.overloaded = rt.probing = False
        rt.idle_hops = 0
        self._history.fill(0)
        rt.miss_count = 0
        self.model.reset()
        self._on_state[1] = 1.0
        rt.recoveries += 1

    def _infer(self, c: int) -> np.ndarray:
        """One hop of inference for channel ``c`` (tests wrap this to simulate a slow machine)."""
        return self.model.run_hop(c)

    def _account(self, run: bool) -> None:
        """Overload bookkeeping after a block that completed ``_hops_block`` hops."""
        nh = self._rt.hops_block
        rt = self._rt
        if self.model.info.has_activity:
            act = self._act
            a = act[0]
            for c in range(1, act.shape[0]):
                a = max(a, act[c])
            rt.activity = float(a)
        if not run:
            self._rt.idle_hops += nh
            if self._rt.idle_hops >= self._probe_every and self.overload_budget > 0:
                self._rt.idle_hops = 0
                self._rt.probing = True
                self._rt.probe_done = self._rt.probe_misses = 0
                self.model.reset()
            return
        per_hop = self._rt.t_inf / nh
        self._rt.last_inference_s = per_hop
        if self.overload_budget <= 0 or self.non_realtime:
            return  # offline there is no deadline: never fall back to dry
        miss = 1 if per_hop > self._budget else 0
        if self._rt.probing:
            self._rt.probe_done += nh
            self._rt.probe_misses += miss * nh
            if self._rt.probe_misses >= OVERLOAD_MISSES:
                self._rt.probing = False  # still too slow: wait for the next probe
            elif self._rt.probe_done >= PROBE_HOPS:
                self._rt.probing = False
                self._rt.overloaded = False
                self._rt.recoveries += 1
                self._history.fill(0)
                rt.miss_count = 0
                self._on_state[1] = 1.0
            return
        if self._rt.overloaded:
            return  # fading out to dry; inference stops when the fade has finished
        hist = self._history
        for _ in range(min(nh, OVERLOAD_WINDOW)):
            pos = rt.hist_pos
            rt.miss_count += miss - int(hist[pos])
            hist[pos] = miss
            rt.hist_pos = (pos + 1) % OVERLOAD_WINDOW
        if rt.miss_count >= OVERLOAD_MISSES:
            self._rt.overloaded = True
            self._rt.overload_events += 1
            self._rt.idle_hops = 0
            self._on_state[1] = 0.0


def _rebuild(cls: type, path: str, resample_quality: str, overload_budget: float, values: dict,
             link: str = "stereo") -> ModelEffect:
    """Unpickle a :class:`ModelEffect` (see ``ModelEffect.__reduce__``)."""
    return cls(path, resample_quality=resample_quality, overload_budget=overload_budget, link=link, **values)
