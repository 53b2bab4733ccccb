"""``hushbridge latency``: measure the round trip from JACK ports and back, as a host needs it
(Ableton Live's External Audio Effect asks for its "Hardware Latency").

Two JACK clients, so the graph has no loop (one client that both feeds and records forms one,
which JACK may resolve a period late): ``hushbridge-latency-out`` plays a test signal into the
ports named by ``send`` (hushbridge's inputs, an interface's playback ports wired back to its
capture), ``hushbridge-latency-in`` records the port named by ``ret``. Each knows the JACK
frame time of every cycle, so the delay is the frame at which the signal comes back less the
frame at which it went out, found by cross-correlation: a logarithmic sweep (speech band, 20 dB
under full scale), sent ``repeats`` times; the median is reported, with how well the returns
matched (a chain that changes the signal much, such as a denoiser, makes a poor match: bypass it
or measure the route without it).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from hushbridge.errors import BackendError

SWEEP_S = 0.5
MAX_LATENCY_S = 1.0  # the longest round trip looked for (each sweep is followed by this much silence and more)
TAIL_S = 0.25  # silence beyond it: the decay of a reverb or filter in the way
LEVEL_DB = -20.0


@dataclass(frozen=True)
class RoundTrip:
    samples: int  # the median delay, JACK frames
    sample_rate: int
    period: int  # JACK's buffer size while measuring
    match: float  # 0..1: normalised correlation at the delay (1: the signal came back unchanged)
    delays: tuple[int, ...]  # each repeat's
    inverted: bool = False  # it came back upside down (a wiring or an interface that flips polarity)

    @property
    def ms(self) -> float:
        return 1000.0 * self.samples / self.sample_rate


def sweep(sample_rate: int, seconds: float = SWEEP_S, f0: float = 100.0, f1: float = 8000.0) -> np.ndarray:
    """A logarithmic sine sweep f0..f1 with 5 ms fades, at LEVEL_DB peak."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    k = np.log(f1 / f0)
    x = np.sin(2 * np.pi * f0 * seconds / k * (np.exp(t / seconds * k) - 1.0))
    fade = int(0.005 * sample_rate)
    ramp = np.sin(np.linspace(0, np.pi / 2, fade)) ** 2
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    return (10 ** (LEVEL_DB / 20) * x).astype(np.float32)


class _Take:
    """The two clients' shared state: what to play from which frame, what was heard when."""

    def __init__(self, signal: np.ndarray, record_frames: int) -> None:
        self.signal = signal
        self.start: int | None = None  # JACK frame the signal starts at (set by the player)
        self.heard = np.zeros(record_frames, dtype=np.float32)
        self.filled = 0
        self.done = threading.Event()
        self.missed = 0  # recorder cycles that skipped frames (xruns): the take is not trusted


def measure_round_trip(send: list[str], ret: str, *, server: str | None = None, repeats: int = 3,
                       max_latency_s: float = MAX_LATENCY_S) -> RoundTrip:
    """Play the sweep into ``send`` (JACK port names) ``repeats`` times, record ``ret``, return
    the delay (up to ``max_latency_s``). Raises :class:`BackendError` when JACK or the ports are
    not there, nothing like the sweep comes back, or it comes back later than that."""
    from hushbridge.io.jack import _open_client

    if not send:
        raise BackendError("name at least one port to send the test signal to", "measuring latency")
    if len(set(send)) != len(send):
        raise BackendError("a port is named twice in --send", "measuring latency")
    # not exact names: two measurements at once each get a client of their own
    player = _open_client("hushbridge-latency-out", server, "measuring latency", exact=False)
    try:
        recorder = _open_client("hushbridge-latency-in", server, "measuring latency", exact=False)
    except BaseException:
        player.close()
        raise
    try:
        sr, period = player.samplerate, player.blocksize
        one = sweep(sr)
        max_lag = int(max_latency_s * sr)
        gap = max_lag + int(TAIL_S * sr)  # the next sweep starts only after the latest return looked for
        signal = np.concatenate([np.concatenate([one, np.zeros(gap, np.float32)]) for _ in range(repeats)])
        take = _Take(signal, len(signal) + gap)
        out = player.outports.register("out")
        inp = recorder.inports.register("in")
        armed = threading.Event()

        def play(frames: int) -> None:
            buf = out.get_array()
            if not armed.is_set():
                buf.fill(0.0)
                return
            now = player.last_frame_time
            if take.start is None:
                take.start = now + frames  # from the next cycle: the recorder is surely running
            i = now - take.start
            buf.fill(0.0)
            if -frames < i < len(signal):
                a, b = max(i, 0), min(i + frames, len(signal))
                buf[a - i:b - i] = signal[a:b]

        def record(frames: int) -> None:
            start = take.start
            if start is None or take.done.is_set():
                return
            i = recorder.last_frame_time - start
            if i + frames <= 0:
                return
            if i > take.filled:  # a cycle went by unheard
                take.missed += 1
            a, b = max(i, 0), min(i + frames, len(take.heard))
            if b > a:
                take.heard[a:b] = inp.get_array()[a - i:b - i]
                take.filled = b
            if b >= len(take.heard):
                take.done.set()

        player.set_process_callback(play)
        recorder.set_process_callback(record)
        player.activate()
        recorder.activate()
        try:
            for port in send:
                player.connect(out, port)
            recorder.connect(ret, inp)
        except Exception as e:  # noqa: BLE001 - jack.JackError, or a name that is no port
            raise BackendError(f"cannot connect the test ports ({e}); see `hushbridge devices` for port names",
                               "measuring latency") from e
        time.sleep(0.2)  # the connections settle before the sweep starts
        armed.set()
        if not take.done.wait(len(take.heard) / sr + 5.0):
            raise BackendError("the recording did not finish (is the JACK server running its clock?)",
                               "measuring latency")
    finally:
        for client in (player, recorder):
            try:
                client.deactivate()
                client.close()
            except Exception:  # noqa: BLE001 - closing after an error
                pass
    if take.missed:
        raise BackendError(f"the recorder missed {take.missed} JACK cycles (xruns): measure again",
                           "measuring latency")
    return _delays(take.heard, one, len(one) + gap, repeats, max_lag, sr, period)


def _delays(heard: np.ndarray, one: np.ndarray, every: int, repeats: int, max_lag: int, sr: int,
            period: int) -> RoundTrip:
    """Each sweep's delay in 0..max_lag, by normalised cross-correlation (either polarity)."""
    delays, matches, signs = [], [], []
    ref = one.astype(np.float64)
    energy = float(np.dot(ref, ref))
    for r in range(repeats):
        seg = heard[r * every:r * every + len(one) + max_lag].astype(np.float64)
        if len(seg) < len(one) + max_lag or not np.any(seg):
            continue
        corr = np.correlate(seg, ref, mode="valid")  # lag 0..max_lag
        window = np.convolve(seg * seg, np.ones(len(ref)), mode="valid")
        norm = corr / np.sqrt(np.maximum(window * energy, 1e-30))
        lag = int(np.argmax(np.abs(norm)))
        if abs(norm[lag]) < 0.3:
            continue
        delays.append(lag)
        matches.append(float(abs(norm[lag])))
        signs.append(bool(norm[lag] < 0))
    if len(delays) < repeats:
        what = "nothing like the test signal came back" if not delays else \
            f"only {len(delays)} of {repeats} sweeps came back"
        raise BackendError(f"{what} within {max_lag / sr:g} s (is the return port wired to the send, the path not "
                           "muted or gated? a longer route: --max-latency)", "measuring latency")
    if max(delays) >= max_lag - 1:  # at the window's edge: the real delay is longer
        raise BackendError(f"the signal comes back {max_lag / sr:g} s or more later: measure with a larger "
                           "--max-latency", "measuring latency")
    return RoundTrip(int(np.median(delays)), int(sr), int(period), float(np.median(matches)), tuple(delays),
                     inverted=bool(sum(signs) > len(signs) / 2))
