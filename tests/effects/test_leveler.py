"""leveler: two real speakers 10 dB apart come out within 3 dB; the gain stays frozen through a
3 s noise-only pause; K-weighted target reached."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir

from hushbridge.effects import EFFECTS, Leveler, ProcessSpec
from hushbridge.errors import ParamError

SPEECH = (shared_data_dir() or Path("/nonexistent")) / "speech"
SR = 16000


def utterance(name: str) -> np.ndarray:
    import soundfile as sf

    files = sorted(SPEECH.glob(name)) if SPEECH.is_dir() else []
    if not files:
        pytest.skip(f"real speech not found in {SPEECH}")
    x, sr = sf.read(str(files[0]), dtype="float64")
    assert sr == SR
    return x / np.sqrt(np.mean(x**2))


def run(fx: Leveler, x: np.ndarray, block: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Output and the gain (dB) after every block."""
    fx.prepare(ProcessSpec(SR, block, 1))
    y = x[None, :].astype(np.float32).copy()
    gains = []
    for s in range(0, y.shape[1], block):
        fx.process(y[:, s : s + block])
        gains.append(fx.gain_db)
    return y[0].astype(np.float64), np.array(gains)


def active_rms_db(x: np.ndarray) -> float:
    """RMS over the 20 ms frames within 20 dB of the loudest (speech, not pauses)."""
    f = x[: len(x) // 320 * 320].reshape(-1, 320)
    e = 10 * np.log10(np.mean(f**2, axis=1) + 1e-20)
    return float(10 * np.log10(np.mean(10 ** (e[e > e.max() - 20] / 10))))


def test_two_speakers_10_db_apart_and_frozen_in_pause() -> None:
    a = utterance("librispeech_1034-*.flac") * 10 ** (-20 / 20)
    b = utterance("librispeech_1040-*.flac") * 10 ** (-30 / 20)
    pause = 3 * SR
    rng = np.random.default_rng(0)
    x = np.concatenate([a, np.zeros(pause), b])
    x = x + rng.standard_normal(len(x)) * 10 ** (-60 / 20)  # room noise throughout
    fx = Leveler(target_lufs=-23.0, max_gain_db=15.0, max_cut_db=15.0, time_s=1.0)  # speaker A is 7.9 s
    y, gains = run(fx, x)
    ya, yb = y[len(a) // 2 : len(a)], y[len(a) + pause + len(b) // 2 :]
    xa, xb = x[len(a) // 2 : len(a)], x[len(a) + pause + len(b) // 2 :]
    assert active_rms_db(xa) - active_rms_db(xb) == pytest.approx(10.0, abs=0.5)
    spread = abs(active_rms_db(ya) - active_rms_db(yb))
    assert spread < 3.0, f"speakers {spread:.1f} dB apart after leveling"
    # the pause: noise only for 3 s, the gain may not rise more than 1 dB above where speech left it
    i0, i1 = len(a) // 160, (len(a) + pause) // 160
    rise = gains[i0 + 10 : i1].max() - gains[i0 - 1]
    assert rise < 1.0, f"gain rose {rise:.2f} dB in the pause"


def test_a_quiet_take_is_at_level_within_its_first_second_of_speech() -> None:
    """The fast start: until 1 s of speech has been heard since the reset, the gain moves with
    a 0.3 s time constant, then with ``time_s``. A take 16 dB under the target is within 3 dB of
    it after its first second of speech (with ``time_s`` = 3 s alone it was 10 dB under: the
    first words of a quiet take stayed under a following expander's threshold), and after that
    the gain settles (it moves less than 2 dB in the next second; 3 dB with ``time_s`` alone)."""
    from hushbridge.dsp.kernels.leveler import FAST_START_S

    a = utterance("librispeech_1034-*.flac") * 10 ** (-36 / 20)
    fx = Leveler(target_lufs=-20.0, max_gain_db=18.0, max_cut_db=12.0, time_s=3.0)
    fx.prepare(ProcessSpec(SR, 160, 1))
    y = a[None, :].astype(np.float32).copy()
    gains, heard = [], []
    spoken = 0
    for s in range(0, y.shape[1], 160):
        fx.process(y[:, s : s + 160])
        spoken += 160 if fx.active else 0
        gains.append(fx.gain_db)
        heard.append(spoken / SR)
    gains, heard = np.array(gains), np.array(heard)
    one_s = int(np.argmax(heard >= FAST_START_S))
    two_s = int(np.argmax(heard >= 2 * FAST_START_S))
    assert gains[one_s] > 16.0 - 3.0 - 2.0, gains[one_s]  # -36 dB RMS is about -34 LUFS here
    assert abs(gains[two_s] - gains[one_s]) < 2.0, (gains[one_s], gains[two_s])
    out = active_rms_db(y[0, one_s * 160:].astype(np.float64))
    assert out == pytest.approx(active_rms_db(a[one_s * 160:]) + gains[-1], abs=2.0)


def test_a_door_slam_before_a_quiet_take_does_not_set_its_level() -> None:
    """A 0.25 s slam near full scale, then a take 16 dB under the target. The slam is loud and
    short: the speech reference climbs toward it with a 0.5 s time constant instead of jumping
    to it, so the voice 35 dB under the slam still counts as speech and is lifted: 8 dB 3 s into
    the speech (16.5 without the slam: the slam's energy in the 400 ms level still holds the
    fast start back for about 2 s). The slam used to be the reference: the voice stayed out of
    the relative gate for about 15 s and the gain sat at -0.5 dB (-3.7 with the fast start
    cutting at its pace). A hot take is cut at the ``time_s`` pace, not the fast start's: a
    cough at its start is not its level."""
    rng = np.random.default_rng(4)
    a = utterance("librispeech_1034-*.flac") * 10 ** (-36 / 20)
    room = rng.standard_normal(len(a) + SR) * 10 ** (-75 / 20)
    t = np.arange(SR // 4) / SR
    slam = rng.standard_normal(SR // 4) * np.exp(-t / 0.04) * 0.9
    lead = np.concatenate([np.zeros(SR * 3 // 10), slam, np.zeros(SR // 4)])  # room tone around it
    with_slam = room.copy()
    with_slam[:len(lead)] += lead
    with_slam[len(lead):len(lead) + len(a)] += a
    without = room.copy()
    without[len(lead):len(lead) + len(a)] += a
    params = dict(target_lufs=-20.0, max_gain_db=18.0, max_cut_db=12.0, time_s=3.0)
    _, g_slam = run(Leveler(**params), with_slam)
    _, g_plain = run(Leveler(**params), without)
    at = (len(lead) + 3 * SR) // 160
    assert g_plain[at] > 14.0, g_plain[at]
    assert g_slam[at] > 6.0, (g_slam[at], g_plain[at])
    hot = utterance("librispeech_1034-*.flac") * 10 ** (-8 / 20)
    _, g_hot = run(Leveler(**params), hot)
    assert -3.0 < g_hot[SR // 160] < 0.0, g_hot[SR // 160]  # 1 s in: cutting, at the time_s pace


def test_breath_before_the_first_word_is_not_lifted() -> None:
    """A real take (VCTK p301, 48 kHz, -21.2 LUFS) whose first half second is breath and murmur,
    10 dB over the room and 30 dB under the voice: taken for speech, the fast start lifted it
    10 dB and the voice came out at -12.3 LUFS for a -20 target (QA, session 30). Until a first
    voice the leveler asks for voicing: the take now comes out near the target. A synthetic breath
    (band-passed noise) then the same voice: not lifted either; and a take that never voices (a
    whisper: noise at speech level) is levelled after 2 s all the same."""
    import soundfile as sf

    from hushbridge.measure import integrated_loudness

    path = SPEECH / "vctk_p301_102.wav"
    if not path.is_file():
        pytest.skip(f"real speech not found: {path}")
    x, sr = sf.read(str(path), dtype="float64")
    fx = Leveler(target_lufs=-20.0)
    fx.prepare(ProcessSpec(sr, 480, 1))
    y = x[None, :].astype(np.float32).copy()
    for s in range(0, y.shape[1], 480):
        fx.process(y[:, s:s + 480])
    assert abs(integrated_loudness(x, sr) + 21.2) < 0.2
    assert abs(integrated_loudness(y[0].astype(np.float64), sr) + 20.0) < 1.5  # was -12.3

    rng = np.random.default_rng(11)
    from scipy.signal import butter, sosfilt

    voice = utterance("librispeech_1553-*.flac") * 10 ** (-24 / 20)
    breath = sosfilt(butter(2, [600, 3000], btype="band", fs=SR, output="sos"), rng.standard_normal(SR * 6 // 10))
    breath *= np.sin(np.pi * np.arange(len(breath)) / len(breath)) * 10 ** (-50 / 20) / np.sqrt(np.mean(breath**2))
    lead = np.concatenate([np.zeros(SR * 3 // 10), breath, np.zeros(SR // 10)])
    take = np.concatenate([lead, voice]) + rng.standard_normal(len(lead) + len(voice)) * 10 ** (-65 / 20)
    _, g = run(Leveler(target_lufs=-20.0), take)
    assert abs(g[len(lead) // 160 - 1]) < 0.5, g[len(lead) // 160 - 1]  # the breath lifted nothing
    # a DC offset 10 dB over the voice (a LibriSpeech file has one 0 dB over) does not hide its voicing:
    # without the analysis's high-pass the take waited 2 s for the whisper rule, unlevelled
    quiet = take * 10 ** (-12 / 20)
    _, g_q = run(Leveler(target_lufs=-20.0), quiet)
    _, g_dc = run(Leveler(target_lufs=-20.0), quiet + 3.0 * np.sqrt(np.mean(quiet[len(lead):] ** 2)))
    at = (len(lead) + SR) // 160
    assert g_dc[at] > g_q[at] - 1.0 and g_q[at] > 6.0, (g_dc[at], g_q[at])
    t = np.arange(SR * 4) / SR
    syllables = np.sin(np.pi * 3.0 * t) ** 2 * (t > 0.5)  # unvoiced "speech": noise in syllables
    whisper = rng.standard_normal(t.size) * (10 ** (-35 / 20) * syllables + 10 ** (-65 / 20))
    _, g = run(Leveler(target_lufs=-20.0, time_s=1.0), whisper)
    assert abs(g[SR * 3 // 2 // 160]) < 0.5 and g[-1] > 6.0, (g[SR * 3 // 2 // 160], g[-1])


def test_a_cough_in_a_quiet_take_s_first_seconds_does_not_take_its_lift_back() -> None:
    """A quiet take lifted by the fast start, a 350 ms cough 2 s in: the cough is not the take's
    level, so the gain after it stays near where it was (session 30 tried taking a lift back
    fast when the voice came out 6 dB over the target, for a take whose breath before the first
    word had been lifted 10 dB; the review found it dropping the gain 8 dB here: not shipped)."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(5)
    a = utterance("librispeech_1034-*.flac") * 10 ** (-36 / 20)
    n = int(0.35 * SR)
    t = np.arange(n)
    burst = sosfilt(butter(2, [300, 4000], btype="band", fs=SR, output="sos"), rng.standard_normal(n))
    burst *= np.exp(-t / (0.08 * SR)) * (1 - np.exp(-t / (0.005 * SR)))
    at = 2 * SR
    x = a.copy()
    x[at:at + n] += burst / np.abs(burst).max() * 10 ** (-6 / 20)
    x += rng.standard_normal(len(x)) * 10 ** (-65 / 20)
    fx = Leveler(target_lufs=-20.0, max_gain_db=18.0, max_cut_db=12.0, time_s=3.0)
    _, gains = run(fx, x)
    before, after = gains[at // 160 - 1], gains[(at + n + SR) // 160]
    assert before > 8.0, before  # lifted by the fast start
    # the cough's energy in the 400 ms level moves the gain at the time_s pace only: about 2.5 dB
    # (the fast undo tried in session 30: 8)
    assert before - after < 3.5, (before, after)


def test_typing_in_a_pause_does_not_raise_the_gain() -> None:
    """Clicks far under the voice clear the noise floor, but not the relative gate: the gain
    stays where the speech left it (it climbed 10 dB in a 6 s pause of typing before)."""
    a = utterance("librispeech_1034-*.flac") * 10 ** (-26 / 20)
    pause = 6 * SR
    rng = np.random.default_rng(1)
    clicks = np.zeros(pause)
    for at in rng.integers(0, pause - 200, 40):  # keys: 5 ms bursts, 30 dB under the speech
        clicks[at:at + 80] += rng.standard_normal(80) * 10 ** (-50 / 20) * np.hanning(80) * 4
    x = np.concatenate([a, clicks, a])
    x = x + rng.standard_normal(len(x)) * 10 ** (-70 / 20)
    fx = Leveler(target_lufs=-20.0, max_gain_db=18.0, max_cut_db=12.0, time_s=3.0)
    y, gains = run(fx, x)
    i0, i1 = len(a) // 160, (len(a) + pause) // 160
    rise = gains[i0 + 10 : i1].max() - gains[i0 - 1]
    assert rise < 1.0, f"gain rose {rise:.2f} dB while typing in the pause"


def test_target_and_limits() -> None:
    a = utterance("librispeech_1088-*.flac") * 10 ** (-30 / 20)
    y, gains = run(Leveler(target_lufs=-20.0, max_gain_db=6.0, time_s=1.0), a)
    assert gains[-1] == pytest.approx(6.0, abs=0.3)  # wanted ~+10 dB, limited to max_gain_db
    assert gains.max() <= 6.0 + 1e-9
    y, gains = run(Leveler(target_lufs=-40.0, max_cut_db=30.0, time_s=1.0), a)
    assert -20.0 < gains[-1] < -5.0  # cut toward the target
    assert np.all(np.isfinite(y))


def test_silence_keeps_unity_and_params() -> None:
    y, gains = run(Leveler(), np.zeros(SR * 3))
    assert np.all(gains == 0.0) and np.all(y == 0.0)
    fx = Leveler()
    assert fx.values() == {"target_lufs": -20.0, "max_gain_db": 12.0, "max_cut_db": 12.0, "time_s": 3.0,
                           "activity_db": 10.0}
    assert EFFECTS["leveler"] is Leveler and fx.latency_samples == 0
    with pytest.raises(ParamError, match="time_s"):
        fx.time_s = 0.0


def test_digital_silence_puts_the_detector_back_to_a_fresh_start() -> None:
    """A live engine idles on digital silence before anyone speaks; offline the file starts at
    its first sample. Both must level the same: after REARM_MS of exact zeros the leveler's
    output equals a freshly reset one's, sample for sample. A room that comes on after the
    silence sets the floor (it is not counted as speech while the floor climbs from -90 LUFS)."""
    x = utterance("librispeech_1034-*.flac") * 10 ** (-30 / 20)
    fresh, _ = run(Leveler(), x)
    idle = np.concatenate([np.zeros(3 * SR), x])
    after_idle, _ = run(Leveler(), idle)
    np.testing.assert_array_equal(after_idle[3 * SR:], fresh)
    # short gaps of silence inside speech do not re-arm it: the same as before this rule
    gap = np.concatenate([x[: 2 * SR], np.zeros(SR // 4), x[2 * SR:]])
    with_gap, _ = run(Leveler(), gap)
    assert np.array_equal(with_gap[: 2 * SR], fresh[: 2 * SR])

    rng = np.random.default_rng(0)
    room = rng.standard_normal(4 * SR) * 10 ** (-50 / 20)  # -50 dBFS room tone, no speech
    fx = Leveler()
    _, gains = run(fx, np.concatenate([np.zeros(2 * SR), room]))
    assert abs(gains[-1]) < 0.5, gains[-1]  # the room did not pull the gain up


def test_room_tone_after_an_edit_is_not_speech() -> None:
    """A take cut on a timeline: speech over a room 15 dB under it, then 1 s of exact zeros (the
    edit), then 4 s of the same room. The zeros say nothing about the room, so the floor holds
    through them (and through the short level's rise after them): the room tone is not counted as
    speech and the gain stays where the speech left it. The floor used to fall to -90 LUFS in
    the zeros, the room then passed for speech for all 4 s, and the gain climbed 6 dB (9.5 on
    a real ceiling fan)."""
    rng = np.random.default_rng(2)
    a = utterance("librispeech_1034-*.flac") * 10 ** (-26 / 20)
    room = 10 ** (-41 / 20)
    x = np.concatenate([a, np.zeros(SR), np.zeros(4 * SR)])
    x += rng.standard_normal(len(x)) * room
    x[len(a):len(a) + SR] = 0.0
    fx = Leveler(target_lufs=-20.0, max_gain_db=18.0, max_cut_db=12.0, time_s=3.0)
    y, gains = run(fx, x)
    i0, i1 = len(a) // 160, len(x) // 160
    rise = gains[i0:i1].max() - gains[i0 - 1]
    assert rise < 0.5, f"gain rose {rise:.2f} dB on the room tone after the edit"
    assert np.any(gains[:i0] != 0.0)  # it did level the speech before


def test_a_gated_source_levels_as_one_with_a_faint_floor_in_its_pauses() -> None:
    """A hardware gate sends exact zeros in every pause; another source a faint floor. Between
    phrases the leveler must not start over (it forgot the voice and the relative gate, and the
    phrases came out 2.5-6 dB louder than with the floor), so the two come out alike."""
    a = utterance("librispeech_1034-*.flac")[: 3 * SR] * 10 ** (-20 / 20)
    b = utterance("librispeech_1040-*.flac")[: 3 * SR] * 10 ** (-38 / 20)  # 18 dB quieter
    pause = np.zeros(SR)  # 1 s: longer than REARM_MS
    take = np.concatenate([a, pause, b, pause, a, pause, b, pause, a])
    gated = take.copy()
    gated[np.abs(take) < 1e-7] = 0.0
    floor = take + np.where(np.abs(take) < 1e-7, np.random.default_rng(1).standard_normal(len(take)) * 1e-5, 0.0)
    y_gated, _ = run(Leveler(), gated)
    y_floor, _ = run(Leveler(), floor)
    step = len(a) + len(pause)
    for k in range(5):
        phrase = slice(k * step, k * step + len(a))
        assert abs(active_rms_db(y_gated[phrase]) - active_rms_db(y_floor[phrase])) < 0.5, k
