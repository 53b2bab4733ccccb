"""gate: static curve (with hysteresis), attack / hold / release from step responses, linking,
side-chain filter, look-ahead latency."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hushbridge.effects import EFFECTS, Gate, ProcessSpec
from hushbridge.errors import ParamError

SR = 48000


def alternating(level_db: float, frames: int) -> np.ndarray:
    return (10 ** (level_db / 20) * np.where(np.arange(frames) % 2 == 0, 1.0, -1.0)).astype(np.float32)


def run(fx: Gate, x: np.ndarray, block: int = 256) -> np.ndarray:
    x2 = np.atleast_2d(x).astype(np.float32)
    fx.prepare(ProcessSpec(SR, block, x2.shape[0]))
    y = x2.copy()
    for s in range(0, y.shape[1], block):
        fx.process(y[:, s : s + block])
    return y


def expected(level: float, thr: float, ratio: float, rng: float) -> float:
    """Closed-state gain (dB), written out: expander below threshold, floored at -range."""
    return max(-rng, min(0.0, (level - thr) * (ratio - 1)))


@pytest.mark.parametrize("thr, hyst, ratio, rng", [(-40.0, 6.0, 2.0, 30.0), (-30.0, 0.0, 100.0, 40.0),
                                                   (-50.0, 10.0, 4.0, 20.0)])
def test_static_curve_with_hysteresis(thr: float, hyst: float, ratio: float, rng: float) -> None:
    for level in np.arange(-80.0, 0.1, 2.0):
        for start in (0.0, -90.0):  # approached from above (open) and from below (closed)
            x = np.concatenate([alternating(start, SR // 4), alternating(level, SR)])
            y = run(Gate(threshold_db=thr, hysteresis_db=hyst, ratio=ratio, range_db=rng, attack_ms=1.0,
                         hold_ms=10.0, release_ms=20.0), x)
            g = 20 * np.log10(abs(y[0, -1]) / abs(x[-1]))
            was_open = start >= thr
            if level >= thr or (was_open and level >= thr - hyst):
                want = 0.0
            else:
                want = expected(level, thr, ratio, rng)
            assert g == pytest.approx(want, abs=0.02), f"level {level} from {start}"


def crossing(g: np.ndarray, target: float, rising: bool) -> float:
    idx = int(np.argmax(g >= target) if rising else np.argmax(g <= target))
    assert idx > 0
    a, b = g[idx - 1], g[idx]
    return idx - 1 + (target - a) / (b - a)


@pytest.mark.parametrize("attack_ms, hold_ms, release_ms", [(1.0, 0.0, 50.0), (5.0, 100.0, 200.0),
                                                            (20.0, 50.0, 1000.0)])
def test_attack_hold_release_from_steps(attack_ms: float, hold_ms: float, release_ms: float) -> None:
    rng = 40.0
    n1, n2, n3 = int(SR * max(1.0, release_ms * 0.012)), SR, SR * 6
    x = np.concatenate([alternating(-80.0, n1), alternating(-10.0, n2), alternating(-80.0, n3)])
    fx = Gate(threshold_db=-40.0, ratio=100.0, range_db=rng, attack_ms=attack_ms, hold_ms=hold_ms,
              release_ms=release_ms)
    y = run(fx, x, block=100)
    g = 20 * np.log10(np.abs(y[0]) / np.abs(x))
    assert g[n1 - 1] == pytest.approx(-rng, abs=1e-3)
    t_att = (crossing(g[n1:], -rng * math.exp(-1), rising=True) + 1) / SR * 1e3
    assert t_att == pytest.approx(attack_ms, rel=0.03, abs=0.05)
    assert g[n1 + n2 - 1] == 0.0
    seg = g[n1 + n2 :]
    # the 10 ms detector falls below the close threshold (-46 dB) after 36 dB of decay
    det_ms = 36.0 / (20 / math.log(10)) * 10.0
    start = int(np.argmax(seg < 0.0))
    assert start / SR * 1e3 == pytest.approx(det_ms + hold_ms, abs=0.1)
    t_rel = (crossing(seg[start - 1 :], -rng * (1 - math.exp(-1)), rising=False)) / SR * 1e3
    assert t_rel == pytest.approx(release_ms, rel=0.03, abs=0.05)


def test_linked_sidechain_and_lookahead() -> None:
    quiet, loud = alternating(-70.0, SR // 2), alternating(-10.0, SR // 2)
    y = run(Gate(threshold_db=-40.0), np.stack([quiet, loud]))
    np.testing.assert_allclose(y[0] / quiet, y[1] / loud, rtol=2e-7)  # one gain for all channels
    t = np.arange(SR) / SR
    rumble = (0.3 * np.sin(2 * np.pi * 40.0 * t)).astype(np.float32)
    assert np.abs(run(Gate(threshold_db=-30.0, range_db=30.0), rumble)[0, -4800:]).max() > 0.29
    gated = run(Gate(threshold_db=-30.0, range_db=30.0, sidechain_hpf_hz=1000.0), rumble)[0, -4800:]
    assert np.abs(gated).max() < 0.3 * 10 ** (-29 / 20)
    # look-ahead: reported latency, and a burst after silence comes out with its start open
    fx = Gate(threshold_db=-40.0, attack_ms=0.5, lookahead_ms=2.0)
    x = np.concatenate([np.zeros(SR // 2), alternating(-10.0, SR // 10)]).astype(np.float32)
    y = run(fx, x)
    assert fx.latency_samples == 96
    out = y[0, 96:]
    onset = SR // 2
    assert abs(out[onset]) / abs(x[onset]) > 10 ** (-6 / 20)  # first sample of the burst is within 6 dB
    fx.lookahead_ms = 1.0
    assert fx.latency_samples == 96  # until the next prepare
    fx.prepare(ProcessSpec(SR, 256, 1))
    assert fx.latency_samples == 48


def test_sidechain_low_pass_keys_the_gate_to_the_voice_band() -> None:
    """A key filter: with ``sidechain_lpf_hz`` a 4 kHz burst (a keyboard's clicks sit at 1-4 kHz)
    counts for ~20 dB less, a 300 Hz one (a voice's fundamental and first formant) for nothing."""
    t = np.arange(SR) / SR

    def gain_db(freq: float, lpf: float) -> float:
        x = (10 ** (-30 / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        y = run(Gate(threshold_db=-40.0, ratio=2.0, range_db=40.0, hold_ms=0.0, sidechain_lpf_hz=lpf), x)
        return 20 * np.log10(np.abs(y[0, -4800:]).max() / np.abs(x[-4800:]).max())

    assert gain_db(4000.0, 20000.0) == 0.0 and gain_db(300.0, 20000.0) == 0.0  # off: both open
    assert gain_db(300.0, 1000.0) > -0.01
    closed = gain_db(4000.0, 1000.0)  # 12 dB/oct: 2 octaves over the corner, ~24 dB down in the key
    assert -18.0 < closed < -12.0  # (level - threshold) x (ratio - 1): -30 - 24 + 40 = -14 dB
    # off is the identity: bit-exact with the filter the kernel skips
    noise = (np.random.default_rng(1).standard_normal(SR) * 0.05).astype(np.float32)
    a = run(Gate(threshold_db=-30.0, adaptive_db=15.0), noise)
    b = run(Gate(threshold_db=-30.0, adaptive_db=15.0, sidechain_lpf_hz=20000.0), noise)
    assert np.array_equal(a, b)
    fx = Gate(sidechain_lpf_hz=1000.0)
    run(fx, noise)
    fx.sidechain_lpf_hz = 20000.0  # switched off live: the identity again
    assert list(fx._sc_coefs[5:]) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_params() -> None:
    fx = Gate()
    assert [p.id for p in fx.params] == ["threshold_db", "hysteresis_db", "ratio", "range_db", "attack_ms",
                                         "hold_ms", "release_ms", "sidechain_hpf_hz", "lookahead_ms", "adaptive_db",
                                         "sidechain_lpf_hz"]
    assert EFFECTS["gate"] is Gate and fx.latency_samples == 0
    with pytest.raises(ParamError, match="range_db"):
        fx.range_db = 100.0
    y = run(Gate(threshold_db=-40.0, range_db=20.0, release_ms=5.0, hold_ms=0.0), alternating(-70.0, SR))
    assert fx.gain_reduction_db == 0.0
    assert 20 * np.log10(abs(y[0, -1]) / 10 ** (-70 / 20)) == pytest.approx(-20.0, abs=1e-3)


def test_starts_closed_so_leading_room_tone_starts_quiet_and_a_first_word_opens_like_any_other() -> None:
    sr = 48000
    rng = np.random.default_rng(4)
    room = (rng.standard_normal(sr // 2) * 10 ** (-55 / 20)).astype(np.float32)
    t = np.arange(sr // 4) / sr
    word = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    x = np.concatenate([room, word, room, word])[None, :]
    fx = Gate(threshold_db=-30.0, ratio=4.0, range_db=18.0, attack_ms=2.0, lookahead_ms=2.0)
    fx.prepare(ProcessSpec(sr, 128, 1))
    y = x.copy()
    for s in range(0, y.shape[1], 128):
        fx.process(y[:, s:s + 128])
    lat = fx.latency_samples
    first = y[0, lat:lat + sr // 20]  # the first 50 ms of room tone: already down, not faded down
    assert 20 * np.log10(np.sqrt(np.mean(first ** 2)) / np.sqrt(np.mean(room[:sr // 20] ** 2))) < -15.0
    n = len(room) + len(word)

    def opening(at: int) -> np.ndarray:  # gain (dB) per ms over the word's first 20 ms
        out, ref = y[0, lat + at:lat + at + sr // 50], x[0, at:at + sr // 50]
        return np.array([10 * np.log10(np.mean(out[i:i + 48] ** 2) / np.mean(ref[i:i + 48] ** 2))
                         for i in range(0, len(ref), 48)])

    # the first word opens the gate as a word after a pause does (that one starts 0.3 dB higher,
    # the release still under way)
    np.testing.assert_allclose(opening(len(room)), opening(n + len(room)), atol=0.5)


@pytest.mark.parametrize("adaptive, ratio, rng", [(6.0, 2.0, 30.0), (12.0, 4.0, 20.0)])
def test_adaptive_threshold_takes_a_steady_level_as_the_floor(adaptive: float, ratio: float, rng: float) -> None:
    """A constant detector level is its own floor: above ``threshold - adaptive`` the gate works
    at ``floor + adaptive``, so the steady level gets the curve's gain at ``-adaptive`` below it;
    further down the fixed threshold rules, exactly as without adaptation."""
    thr = -40.0
    for level in np.arange(-70.0, -9.0, 4.0):
        x = alternating(level, 2 * SR)
        # no hysteresis: a level over the fixed threshold opens the gate before the floor is known
        # (the first 0.3 s), and hysteresis would then hold it open at the floor's own level
        y = run(Gate(threshold_db=thr, hysteresis_db=0.0, ratio=ratio, range_db=rng, adaptive_db=adaptive,
                     attack_ms=1.0, hold_ms=10.0, release_ms=20.0), x)
        g = 20 * np.log10(abs(y[0, -1]) / abs(x[-1]))
        want = expected(level, max(thr, level + adaptive), ratio, rng)
        assert g == pytest.approx(want, abs=0.02), f"level {level}"
        if level + adaptive <= thr:  # the fixed threshold rules: bit-identical to no adaptation
            fixed = run(Gate(threshold_db=thr, hysteresis_db=0.0, ratio=ratio, range_db=rng, attack_ms=1.0,
                             hold_ms=10.0, release_ms=20.0), x)
            np.testing.assert_array_equal(y, fixed)


def _segment_gain_db(x: np.ndarray, y: np.ndarray, a: float, b: float) -> float:
    sl = slice(int(a * SR), int(b * SR))
    return float(10 * np.log10(np.mean(y[0, sl].astype(np.float64) ** 2) / np.mean(x[sl].astype(np.float64) ** 2)))


def test_adaptive_gate_closes_on_room_noise_above_the_threshold_and_follows_it_up() -> None:
    """Noise at -35 dBFS RMS crosses a -40 dB threshold all the time: a fixed gate stays open in
    every pause. With ``adaptive_db`` the pauses are attenuated by the range while word-like
    bursts 20 dB over the noise pass whole; when the noise then rises by 10 dB, the gate closes
    on it again within 3.5 s."""
    rng_ = np.random.default_rng(3)
    n = 12 * SR
    noise = rng_.standard_normal(n) * 10 ** (-35 / 20)
    noise[7 * SR:] *= 10 ** (10 / 20)  # the room gets louder at 7 s
    t = np.arange(n) / SR
    bursts = np.zeros(n)
    for start in (1.0, 2.5, 4.0, 5.5):  # 300 ms "words", 20 dB over the first noise (peaks 23 dB)
        sl = slice(int(start * SR), int((start + 0.3) * SR))
        bursts[sl] = np.sin(2 * np.pi * 300 * t[sl]) * 10 ** (-15 / 20) * math.sqrt(2)
    x = (noise + bursts).astype(np.float32)
    # the noise's peak detector stays within 13 dB of its RMS floor: close above that (20 - 4 = 16)
    params = dict(threshold_db=-40.0, hysteresis_db=4.0, ratio=4.0, range_db=18.0, hold_ms=80.0, release_ms=100.0,
                  lookahead_ms=5.0)
    fixed = run(Gate(**params), x)
    adaptive = run(Gate(**params, adaptive_db=20.0), x)
    for a, b in ((1.8, 2.4), (3.3, 3.9), (4.8, 5.4)):  # pauses between the words
        assert _segment_gain_db(x, fixed, a, b) > -0.5
        assert _segment_gain_db(x, adaptive, a, b) < -16.0
    for start in (2.5, 4.0, 5.5):  # the words (after the first, which set no floor yet)
        assert _segment_gain_db(x, adaptive, start + 0.01, start + 0.29) > -0.3
    # louder room from 7 s: open on it at first, closed again once the old floor has left the
    # window (3 s, and up to one 0.5 s slot more)
    assert _segment_gain_db(x, adaptive, 7.2, 8.0) > -3.0
    assert _segment_gain_db(x, adaptive, 11.0, 12.0) < -16.0


def test_adaptive_gate_is_block_size_invariant() -> None:
    rng_ = np.random.default_rng(5)
    x = (rng_.standard_normal((2, 5 * SR)) * 0.02).astype(np.float32)
    x[:, SR:SR + SR // 2] *= 20.0
    outs = [run(Gate(threshold_db=-50.0, adaptive_db=10.0, lookahead_ms=2.0), x, block) for block in (1, 64, 1000)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_adaptive_floor_falls_6_db_a_second_at_most_so_a_ringing_tail_does_not_take_it_down() -> None:
    """Between two stretches of room tone, 1 s in which the level decays by 80 dB (what the
    filters before a gate leave of an edit's digital silence): the floor may fall 6 dB in that
    second, not 80. Without the limit it followed the tail down and the gate stayed fully open on
    the room tone after it for 3 s."""
    rng_ = np.random.default_rng(11)
    n = 8 * SR
    x = rng_.standard_normal(n) * 10 ** (-35 / 20)
    x[4 * SR:5 * SR] *= np.exp(np.linspace(0.0, math.log(10 ** (-80 / 20)), SR))
    x = x.astype(np.float32)[None]
    gate = Gate(threshold_db=-40.0, hysteresis_db=4.0, ratio=4.0, range_db=18.0, adaptive_db=20.0)
    y, floor_db = _floor_trace(gate, x, SR // 2)
    before, after = floor_db[7], floor_db[9]  # at 4.0 s and at 5.0 s (the end of the tail)
    assert before - 7.0 < after <= before, floor_db
    assert _segment_gain_db(x[0], y, 3.0, 4.0) < -16.0  # closed on the room before the tail
    assert _segment_gain_db(x[0], y, 5.2, 7.5) < -4.0  # after it: still attenuating (0 dB without the limit)


def _floor_trace(gate: Gate, x: np.ndarray, block: int) -> tuple[np.ndarray, list[float]]:
    """``x`` (1, frames) through ``gate`` in ``block``-frame blocks: the output and the adaptive
    floor (dB) after each block."""
    from hushbridge.dsp.kernels.gate import F_FLOOR

    gate.prepare(ProcessSpec(SR, block, 1))
    y = x.copy()
    floor_db = []
    for s in range(0, x.shape[1], block):
        gate.process(y[:, s:s + block])
        floor_db.append(10 * math.log10(gate._fstate[F_FLOOR]))
    return y, floor_db


def test_adaptive_floor_rises_4_db_a_second_at_most_under_unbroken_speech() -> None:
    """2 s of room tone at -60 dBFS, then 8 s of a voice that never pauses (syllables at 4 Hz
    swinging -20..-32 dB). Once the room tone has left the 3 s window, the window's minimum is
    the voice's own dips; the floor follows them up by 4 dB/s at most, so the voice passes
    whole all the way. (The floor used to be that minimum: at 5.25 s it jumped 32 dB to the
    dips, and from 6 s the expander cut the voice by its full range.)"""
    from hushbridge.dsp.kernels.gate import FLOOR_MAX_RISE_DB_PER_S

    rng_ = np.random.default_rng(7)
    n = 10 * SR
    t = np.arange(n) / SR
    x = rng_.standard_normal(n) * 10 ** (-60 / 20)
    voice = slice(2 * SR, n)
    level_db = -26.0 + 6.0 * np.sin(2 * np.pi * 4.0 * t[voice])
    x[voice] += np.sin(2 * np.pi * 300.0 * t[voice]) * math.sqrt(2) * 10 ** (level_db / 20)
    x = x.astype(np.float32)[None]
    gate = Gate(threshold_db=-50.0, hysteresis_db=4.0, ratio=4.0, range_db=18.0, adaptive_db=20.0, hold_ms=80.0)
    y, floor_db = _floor_trace(gate, x, SR // 4)
    room = floor_db[7]  # at 2 s
    assert room == pytest.approx(-60.0, abs=1.5)
    steps = np.diff(floor_db[8:])
    assert steps.max() <= FLOOR_MAX_RISE_DB_PER_S / 4 + 0.01, floor_db  # per 0.25 s block
    assert floor_db[-1] > room + 10.0, floor_db  # it does follow, at that rate
    for a in range(3, 10):
        assert _segment_gain_db(x[0], y, a, a + 1) > -0.1, a
