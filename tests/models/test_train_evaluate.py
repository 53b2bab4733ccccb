"""The training side's torch-free measures (models/train/evaluate.py), which the benchmarks use too."""

from __future__ import annotations

import numpy as np
import pytest

from hushbridge.models.train.evaluate import onset_level_db


def test_onset_level_counts_a_cut_word_start():
    rng = np.random.default_rng(4)
    ref = np.zeros(48000, np.float32)
    ref[24000:] = 0.1 * rng.standard_normal(24000)  # a "word" after 0.5 s of silence
    assert onset_level_db(ref, ref) == pytest.approx(0.0, abs=1e-9)
    cut = ref.copy()
    cut[24000:24000 + 1440] *= 10 ** (-6 / 20)  # its first 30 ms 6 dB down
    assert onset_level_db(cut, ref) == pytest.approx(-6.0, abs=0.01)
    late = ref.copy()
    late[24000 + 1440:] *= 0.1  # later speech does not count
    assert onset_level_db(late, ref) == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(onset_level_db(ref[24000:], ref[24000:]))  # no silence before it: no onset


def test_onset_level_at_16_khz_takes_a_5_ms_hop():
    rng = np.random.default_rng(5)
    ref = np.zeros(16000, np.float32)
    ref[8000:] = 0.1 * rng.standard_normal(8000)
    cut = ref.copy()
    cut[8000:8000 + 480] *= 10 ** (-10 / 20)  # the first 30 ms at 16 kHz
    assert onset_level_db(cut, ref, hop=80) == pytest.approx(-10.0, abs=0.01)
    assert onset_level_db(ref * 2.0, ref, hop=80) == pytest.approx(6.02, abs=0.01)  # louder: above 0


def test_a_word_that_rises_over_several_hops_is_a_word_start_from_where_it_rises():
    from hushbridge.models.train.evaluate import word_starts

    e = np.full(100, 1e-9)
    e[40:] = 1.0
    e[37:40] = [3e-4, 1e-3 * 0.9, 0.02]  # -35, -30.5, -17 dB: a soft lead-in
    assert word_starts(e) == [37]
    e[37:40] = 1e-9
    assert word_starts(e) == [40]  # straight from silence: the hop over -30 dB
    e[20:30] = 1e-3 * 0.5  # not 100 ms quiet before the rise: no word start
    assert word_starts(e) == []
    rng = np.random.default_rng(7)
    ref = np.zeros(48000, np.float32)
    ref[24000:] = 0.1 * rng.standard_normal(24000)
    ref[24000 - 720:24000] = 0.1 * 10 ** (-35 / 20) * rng.standard_normal(720)  # 15 ms lead-in
    cut = ref.copy()
    cut[24000 - 720:24000 - 720 + 1440] *= 10 ** (-6 / 20)
    assert onset_level_db(cut, ref) == pytest.approx(-6.0, abs=0.01)


def test_onset_level_counts_only_settled_word_starts_and_a_muted_one_as_60_db():
    rng = np.random.default_rng(6)
    ref = np.zeros(3 * 48000, np.float32)
    ref[24000:48000] = 0.1 * rng.standard_normal(24000)  # a word at 0.5 s
    ref[96000:120000] = 0.1 * rng.standard_normal(24000)  # another at 2 s
    est = ref.copy()
    est[:48000] = 0.0  # a system muted for its first second
    assert onset_level_db(est, ref) == pytest.approx((-60.0 + 0.0) / 2, abs=0.01)
    assert onset_level_db(est, ref, settle_s=1.0) == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(onset_level_db(est, ref, settle_s=2.5))
