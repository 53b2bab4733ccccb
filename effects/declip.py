"""declip: finds clipped runs and rebuilds them (least-squares AR interpolation), in real time.

A clipped run is two or more consecutive, equal-sign, flat samples at or above ``threshold_db``
relative to the running peak (see :mod:`hushbridge.dsp.kernels.declip`). Each run up to
``max_run_ms`` long is re-estimated from an AR model fitted around it, keeping at least the clipped
magnitude. Audio without clipped runs passes bit-exactly, delayed by :attr:`Declip.latency_samples`
(the look-ahead: the longest run plus the context after it), which the Chain and hosts compensate.

Soft saturation (a ``tanh``-like curve) leaves no flat runs to rebuild; it is detected from the
amplitude distribution (:attr:`Declip.soft_saturation_events`, :attr:`Declip.soft_saturation`;
``hushbridge process`` prints it) and, with ``soft_repair`` on, undone by the inverse curve with a
drive estimated blind from the signal (:attr:`Declip.soft_drive`; see
:mod:`hushbridge.dsp.kernels.declip`, "Desaturate"). The inverse keeps the peaks where they are and
gives the rest back the dynamics the curve took, so the output gets quieter where the repair
engages: level it afterwards (``leveler``, ``normalize``). ``soft_repair`` is off by default because
the detector is a heuristic: it engaged on 4 of 167 clean speech files peaking at 0 dBFS (30 s each),
where the inverse expands their dynamics. What is before the first detection (at least one 1 s window)
stays as it was.

Clipping that then went through a lossy codec (MP3, AAC: a podcast recorded too hot and
uploaded) leaves its runs rippled rather than flat: ``flatness_pct`` (default 1e-4 %, exact
rails only) sets how far apart successive samples of a run may be, as a share of the peak. At 1 %
speech clipped at -6 dBFS and decoded from 192 kbit/s MP3 (ffmpeg's LAME) gains 0.6-1.8 dB SNR
where the default finds nothing; from AAC or 128 kbit/s MP3 it gains little (the codec smears
the runs past recognition). Looser flatness can take natural peaks for clips (3 % found 17 runs
in 27 s of clean VCTK speech, changed by up to 0.017), so it is not the default.

``max_run_ms`` sets the look-ahead, so it is applied at ``prepare``; changing it later only lowers
the longest run rebuilt, up to the value prepared for.

>>> from hushbridge.effects import Declip
>>> d = Declip(max_run_ms=4.0)
"""
from __future__ import annotations

import math

import numpy as np

from hushbridge.dsp.design import make_highpass
from hushbridge.dsp.kernels import declip as K
from hushbridge.effects.base import UNPREPARED_RATE, Effect, Param, ProcessSpec

DRIVES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0)
HIGH_BAND_HZ = 4000.0    # drive estimate: high-band share above this (or 0.4 of the rate)
DRIVE_XFADE_S = 0.02     # a new drive estimate is crossfaded in over this time
PEAK_RELEASE_S = 20.0    # running peak falls by 1/e in this time without new peaks
SOFT_WINDOW_S = 1.0      # soft-saturation analysis window
SOFT_RATIO = 0.35        # share of samples above 0.9 peak among those above 0.5 peak
SOFT_RELEASE_S = 0.2     # release of the fast peak the soft-saturation statistics use
SETTLE_S = 0.05          # the peak must have held this long before a flat run counts as clipped
DC_TIME_S = 0.2          # time constant of the running mean the soft-saturation statistics leave out


def ar_order(sample_rate: float) -> int:
    """Order of the AR model the runs are rebuilt with: 1 ms of samples, within MIN_ORDER..ORDER."""
    return int(min(K.ORDER, max(K.MIN_ORDER, round(1e-3 * sample_rate))))


class Declip(Effect):
    """De-clipper; see the module docstring."""

    name = "declip"
    shared_params = frozenset({"max_run_ms"})  # sizes the look-ahead, the latency every channel shares
    params = (
        Param("threshold_db", -12.0, 0.0, -0.1, scale="db", smoothing_ms=0.0),
        Param("max_run_ms", 0.25, 10.0, 4.0, scale="log", smoothing_ms=0.0),
        Param("soft_repair", 0.0, 1.0, 0.0, step=1.0, smoothing_ms=0.0, choices=("off", "on")),
        Param("flatness_pct", 1e-4, 5.0, 1e-4, scale="log", smoothing_ms=0.0),
    )

    def __init__(self, threshold_db: float = -0.1, max_run_ms: float = 4.0, soft_repair: float = 0.0,
                 flatness_pct: float = 1e-4) -> None:
        object.__setattr__(self, "_consts", np.zeros(K.N_K, dtype=np.float64))
        object.__setattr__(self, "_g", np.zeros(K.N_G, dtype=np.int64))
        object.__setattr__(self, "_latency", 0)
        object.__setattr__(self, "_alloc_run", 0)
        object.__setattr__(self, "_drives", np.array([[k, math.tanh(k)] for k in DRIVES], dtype=np.float64))
        super().__init__(threshold_db=threshold_db, max_run_ms=max_run_ms, soft_repair=soft_repair,
                         flatness_pct=flatness_pct)

    @property
    def latency_samples(self) -> int:
        """Look-ahead in samples: the longest run plus its context (before ``prepare``, at 48 kHz)."""
        if self._spec is None:
            run, ctx = self._run_and_context(UNPREPARED_RATE)
            return run + ctx
        return self._latency

    def _run_and_context(self, sample_rate: int) -> tuple[int, int]:
        """The longest run repaired and the context around it, in samples at ``sample_rate``."""
        run = max(2, int(round(self._values[1] * 1e-3 * sample_rate)))
        return run, max(4 * ar_order(sample_rate), run)

    # -- counters -------------------------------------------------------------------------------
    @property
    def runs_repaired(self) -> int:
        """Clipped runs rebuilt since the last reset."""
        return int(self._g[K.G_REPAIRED])

    @property
    def samples_repaired(self) -> int:
        """Samples rebuilt since the last reset."""
        return int(self._g[K.G_SAMPLES])

    @property
    def runs_too_long(self) -> int:
        """Clipped runs longer than ``max_run_ms``, left as they were."""
        return int(self._g[K.G_TOO_LONG])

    @property
    def soft_saturation_events(self) -> int:
        """Analysis windows (1 s, per channel) whose amplitude distribution looks soft-clipped."""
        return int(self._g[K.G_SOFT])

    @property
    def soft_saturation(self) -> bool:
        """Whether soft saturation has been detected since the last reset."""
        return self._g[K.G_SOFT] > 0

    @property
    def soft_drive(self) -> float:
        """Drive of the inverse ``tanh`` curve applied now (largest over channels; 0: none)."""
        if self._spec is None:
            return 0.0
        return float(self._cf[:, K.C_DRIVE].max())

    @property
    def samples_desaturated(self) -> int:
        """Samples passed through the inverse curve since the last reset."""
        return int(self._g[K.G_DESAT])

    @property
    def nonfinite_samples(self) -> int:
        """NaN/Inf input samples replaced by silence."""
        return int(self._g[K.G_NONFINITE])

    def file_notes(self) -> list[str]:
        """One line per finding since the last reset, for ``hushbridge process`` to print."""
        notes = []
        if self.runs_repaired or self.runs_too_long:
            notes.append(f"declip: {self.runs_repaired} clipped runs rebuilt ({self.samples_repaired} samples)"
                         + (f", {self.runs_too_long} longer than max_run_ms left as they were"
                            if self.runs_too_long else ""))
        if self.soft_saturation:
            if self.samples_desaturated:
                notes.append(f"declip: soft saturation found and undone from its detection on "
                             f"({self.samples_desaturated} samples, drive {self.soft_drive:g} at the end)")
            elif self.get("soft_repair") >= 0.5:
                notes.append(f"declip: soft saturation found in {self.soft_saturation_events} windows; "
                             "no drive made the signal cleaner, left as it was")
            else:
                notes.append(f"declip: soft saturation found in {self.soft_saturation_events} windows; "
                             "--set declip.soft_repair=on undoes it")
        return notes

    # -- lifecycle --------------------------------------------------------------------------------
    def _param_changed(self, index: int) -> None:
        v = self._values
        self._consts[K.K_THR] = 10.0 ** (v[0] / 20.0)
        self._consts[K.K_DESAT] = 1.0 if v[2] >= 0.5 else 0.0
        self._consts[K.K_FLAT] = v[3] / 100.0
        if self._spec is not None:
            run = max(2, int(round(v[1] * 1e-3 * self._spec.sample_rate)))
            self._consts[K.K_MAXRUN] = min(run, self._alloc_run)

    def _prepare(self, spec: ProcessSpec) -> None:
        sr = spec.sample_rate
        run, ctx = self._run_and_context(sr)
        order = ar_order(sr)
        delay = run + ctx
        size = delay + ctx + 2
        ch = spec.channels
        w = 2 * ctx + run
        maxu = run + run // 2 + 8
        object.__setattr__(self, "_alloc_run", run)
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_latency", delay)
        object.__setattr__(self, "_ring", np.zeros((ch, size), dtype=np.float32))
        object.__setattr__(self, "_flags", np.zeros((ch, size), dtype=np.int8))
        object.__setattr__(self, "_queue", np.zeros((ch, K.QUEUE, 2), dtype=np.int64))
        object.__setattr__(self, "_ci", np.zeros((ch, K.N_CI), dtype=np.int64))
        object.__setattr__(self, "_cf", np.zeros((ch, K.N_CF), dtype=np.float64))
        object.__setattr__(self, "_work", np.zeros(w, dtype=np.float64))
        object.__setattr__(self, "_unknown", np.zeros(w, dtype=np.int8))
        object.__setattr__(self, "_idx", np.zeros(maxu, dtype=np.int64))
        object.__setattr__(self, "_r", np.zeros(K.ORDER + 1, dtype=np.float64))
        object.__setattr__(self, "_a", np.zeros(K.ORDER + 1, dtype=np.float64))
        object.__setattr__(self, "_tmp", np.zeros(K.ORDER + 1, dtype=np.float64))
        object.__setattr__(self, "_ek", np.zeros(w, dtype=np.float64))
        object.__setattr__(self, "_band", np.zeros((maxu, K.ORDER + 1), dtype=np.float64))
        object.__setattr__(self, "_rhs", np.zeros(maxu, dtype=np.float64))
        c = self._consts
        c[K.K_ORDER] = order
        c[K.K_DC] = 1.0 - math.exp(-1.0 / (DC_TIME_S * sr))
        c[K.K_REL] = math.exp(-1.0 / (PEAK_RELEASE_S * sr))
        c[K.K_MAXRUN] = run
        c[K.K_SOFT_WIN] = max(1, int(round(SOFT_WINDOW_S * sr)))
        c[K.K_SOFT_RATIO] = SOFT_RATIO
        c[K.K_SETTLE] = max(1, int(round(SETTLE_S * sr)))
        c[K.K_FAST_REL] = math.exp(-1.0 / (SOFT_RELEASE_S * sr))
        c[K.K_HP_B0:K.K_HP_A2 + 1] = make_highpass(sr, min(HIGH_BAND_HZ, 0.4 * sr))
        c[K.K_XFADE] = max(1, int(round(DRIVE_XFADE_S * sr)))
        object.__setattr__(self, "_soft", np.zeros((ch, len(DRIVES), K.N_SD), dtype=np.float64))

    def reset(self) -> None:
        """Clear the delay line, run detection, running peak and counters."""
        self._g.fill(0)
        if self._spec is None:
            return
        self._ring.fill(0.0)
        self._flags.fill(0)
        self._queue.fill(0)
        self._ci.fill(0)
        self._ci[:, K.C_RUN_START] = -1
        self._cf.fill(0.0)
        self._soft.fill(0.0)

    def kernel(self):
        """De-clip a block (channels, frames) float32 in place; output delayed by ``latency_samples``."""
        return K.declip, (self._ring, self._flags, self._queue, self._ci, self._cf, self._g, self._consts,
                          self._ctx, self._work, self._unknown, self._idx, self._r, self._a, self._tmp, self._ek,
                          self._band, self._rhs, self._drives, self._soft)
