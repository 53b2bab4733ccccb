"""automix: gain sharing across separate microphones (Dugan's method)."""
import numpy as np
import pytest

from hushbridge.effects import EFFECTS, Automix, Chain, ProcessSpec

SR = 48000


def level_db(a):
    return 20 * np.log10(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def turns(seconds=4.0, bleed_db=-20.0, seed=0):
    """Two talkers taking turns a second each, each heard on the other's mic ``bleed_db`` under."""
    t = np.arange(int(seconds * SR)) / SR
    a = 0.3 * np.sin(2 * np.pi * 200 * t) * ((t % 2) < 1)
    b = 0.3 * np.sin(2 * np.pi * 310 * t) * ((t % 2) >= 1)
    k = 10 ** (bleed_db / 20)
    floor = 1e-4 * np.random.default_rng(seed).standard_normal((2, t.size))
    return (np.stack([a + k * b, b + k * a]) + floor).astype(np.float32)


def test_the_talkers_mic_stays_open_and_the_other_falls_by_its_bleed():
    # Dugan's sharing as it is (the level matching, on by default, moves these pure tones' cuts
    # 1-2 dB: their envelopes' ripple differs; see the matching's own test)
    x = turns()
    y = Chain([Automix(match_db=0.0)])(x, SR)
    settled_a, settled_b = slice(int(0.3 * SR), int(0.95 * SR)), slice(int(1.3 * SR), int(1.95 * SR))
    assert level_db(y[0, settled_a]) - level_db(x[0, settled_a]) > -0.1  # talker A's mic: open
    assert level_db(y[1, settled_a]) - level_db(x[1, settled_a]) == pytest.approx(-20.0, abs=0.5)
    assert level_db(y[1, settled_b]) - level_db(x[1, settled_b]) > -0.2  # the level matching's estimate: 0.1
    assert level_db(y[0, settled_b]) - level_db(x[0, settled_b]) == pytest.approx(-20.0, abs=0.5)
    # the new talker's mic opens within a few ms; the old one's closes over ~150 ms
    onset = slice(SR + int(0.005 * SR), SR + int(0.025 * SR))
    assert level_db(y[1, onset]) - level_db(x[1, onset]) > -3.0


def test_a_bed_after_the_microphones_takes_no_part_in_the_sharing():
    """`run --automix --duck 2`: a music bed on channel 3, louder than the voices, took the gain
    of the mic of whoever talked (QA, session 31: 7-16 dB off a quiet voice) and pumped with the
    syllables. With ``mics = 2`` the bed passes untouched and the voices share as without it."""
    x = turns()
    t = np.arange(x.shape[1]) / SR
    bed = (0.5 * np.sin(2 * np.pi * 110 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    with_bed = np.vstack([x, bed])
    y_all = Chain([Automix()])(with_bed, SR)
    y = Chain([Automix(mics=2)])(with_bed, SR)
    alone = Chain([Automix()])(x, SR)
    np.testing.assert_array_equal(y[2], bed)
    np.testing.assert_array_equal(y[:2], alone)
    settled_a = slice(int(0.3 * SR), int(0.95 * SR))
    assert level_db(y_all[0, settled_a]) - level_db(x[0, settled_a]) < -3.0  # what the bed did
    mixer = Automix(mics=2)
    mixer.prepare(ProcessSpec(SR, 128, 3))
    block = with_bed[:, :128].copy()
    mixer.process(block)
    assert mixer.gains_db[2] == 0.0


def test_mismatched_preamps_are_matched_so_double_talk_is_shared_by_the_voices():
    """Two talkers at the same acoustic level, one mic's preamp 12 dB hotter (QA, session 31:
    Dugan's sharing took the quiet mic's talker down 15 dB where both talked). The level matching
    learns each mic's speech while it holds the talk; after a turn each, double talk shares the
    gain as with matched gains (within 2 dB), where ``match_db = 0`` cuts the quiet mic 10 dB."""
    t = np.arange(int(7.0 * SR)) / SR
    rng = np.random.default_rng(5)
    syll = (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2  # speech-like: syllables
    a = 0.1 * np.sin(2 * np.pi * 180 * t) * syll * ((t < 2) | (t >= 4))
    b = 0.1 * np.sin(2 * np.pi * 260 * t + 1.0) * syll * (t >= 2)
    k = 10 ** (-20 / 20)
    floor = 1e-4 * rng.standard_normal((2, t.size))
    hot = 10 ** (12 / 20)
    x = (np.stack([a + k * b, hot * (b + k * a)]) + floor).astype(np.float32)
    both = slice(int(5.0 * SR), int(7.0 * SR))

    def gains(match_db):
        y = Chain([Automix(match_db=match_db)])(x, SR)
        return [level_db(y[c, both]) - level_db(x[c, both]) for c in (0, 1)]

    matched = Chain([Automix()])(x / np.array([[1.0], [hot]], dtype=np.float32), SR)
    ideal = [level_db(matched[c, both]) - level_db(x[c, both] / (1.0 if c == 0 else hot)) for c in (0, 1)]
    learnt, off = gains(12.0), gains(0.0)
    assert abs(learnt[0] - ideal[0]) < 2.0 and abs(learnt[1] - ideal[1]) < 2.0, (learnt, ideal)
    assert off[0] < ideal[0] - 8.0, (off, ideal)  # what the hot preamp did


def test_range_limits_the_cut_and_gains_share_the_power():
    x = turns(bleed_db=-40.0)
    mix = Automix(range_db=12.0)
    y = Chain([mix])(x, SR)
    a = slice(int(0.3 * SR), int(0.95 * SR))
    assert level_db(y[1, a]) - level_db(x[1, a]) == pytest.approx(-12.0, abs=0.3)
    shared = Automix()  # over the range's floor the gains' powers add up to 1: the noise sum holds
    Chain([shared])(turns(bleed_db=-20.0), SR)
    assert (10 ** (np.array(shared.gains_db) / 10)).sum() == pytest.approx(1.0, abs=1e-6)


def test_nobody_talking_every_mic_at_an_even_share_and_one_mic_untouched():
    quiet = (1e-3 * np.random.default_rng(1).standard_normal((4, SR))).astype(np.float32)
    y = Chain([Automix()])(quiet, SR)
    for c in range(4):  # four equal room tones: -6 dB each, the sum's noise unchanged
        assert level_db(y[c, SR // 2:]) - level_db(quiet[c, SR // 2:]) == pytest.approx(-6.0, abs=1.0)
    silence = np.zeros((3, 4800), np.float32)
    assert not np.any(Chain([Automix()])(silence, SR))
    mono = turns()[:1]
    np.testing.assert_array_equal(Chain([Automix()])(mono, SR), mono)


def test_registered_with_its_parameters():
    assert EFFECTS["automix"] is Automix
    assert [p.id for p in Automix.params] == ["range_db", "attack_ms", "release_ms", "priority_channel", "priority_db",
                                              "weight_db", "mics", "match_db"]
    fx = Automix()
    fx.prepare(ProcessSpec(SR, 128, 2))
    assert fx.latency_samples == 0 and fx.gains_db == (0.0, 0.0)


def test_a_priority_microphone_keeps_more_gain_in_double_talk_and_cuts_the_others_deeper():
    """A host's microphone weighted +6 dB (Dugan's weight): two equal talkers at once share
    -1.0 / -7.0 dB instead of -3.0 each; while the host talks alone the guest's mic falls 6 dB
    further under its bleed; without a talker the shares stay even."""
    t = np.arange(2 * SR) / SR
    both = np.stack([0.3 * np.sin(2 * np.pi * 200 * t), 0.3 * np.sin(2 * np.pi * 310 * t)]).astype(np.float32)
    settled = slice(SR // 2, None)
    y = Chain([Automix(match_db=0.0, priority_channel=1)])(both, SR)
    assert level_db(y[0, settled]) - level_db(both[0, settled]) == pytest.approx(-0.97, abs=0.05)
    assert level_db(y[1, settled]) - level_db(both[1, settled]) == pytest.approx(-6.99, abs=0.05)
    x = turns()
    a = slice(int(0.3 * SR), int(0.95 * SR))
    plain = Chain([Automix(match_db=0.0, range_db=40.0)])(x, SR)  # a range under the cut, which it would floor
    host = Chain([Automix(match_db=0.0, range_db=40.0, priority_channel=1, priority_db=6.0)])(x, SR)
    assert (level_db(host[1, a]) - level_db(plain[1, a])) == pytest.approx(-6.0, abs=0.3)
    b = slice(int(1.3 * SR), int(1.95 * SR))  # the guest talks: the host's mic falls by its bleed less 6 dB
    assert (level_db(host[0, b]) - level_db(plain[0, b])) == pytest.approx(6.0, abs=0.3)
    quiet = (1e-3 * np.random.default_rng(1).standard_normal((2, SR))).astype(np.float32)
    mix = Automix(match_db=0.0, priority_channel=2)
    Chain([mix])(np.zeros_like(quiet), SR)
    assert mix.gains_db == pytest.approx((-3.01, -3.01), abs=0.01)  # nobody: even shares
    from hushbridge.errors import ParamError

    mix = Automix(match_db=0.0)
    mix.prepare(ProcessSpec(SR, 128, 2))
    with pytest.raises(ParamError, match="beyond the 2 channels"):
        mix.check_value(3, 3.0)  # the control side refuses it before the audio thread sees it
    with pytest.raises(ParamError, match="beyond the 2 channels"):
        Automix(match_db=0.0, priority_channel=4).prepare(ProcessSpec(SR, 128, 2))


def test_a_weight_per_microphone_as_dugan_s_and_with_the_priority():
    """weight_db per channel (Automix.set_channel / Chain.set_channel, /hb/automix@2/weight_db):
    any number of microphones weighed up or down, in any chain (per channel or not). +6 dB on
    the host's mic is the priority's -1.0 / -7.0 in equal double talk; a weight and the priority
    add; the effect's own weight_db sets every channel again (and so weighs none above another)."""
    from hushbridge.errors import ChainError, ParamError

    t = np.arange(2 * SR) / SR
    both = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (200, 310, 420)]).astype(np.float32)
    settled = slice(SR // 2, None)
    cut = lambda y, c: level_db(y[c, settled]) - level_db(both[c, settled])  # noqa: E731
    mix = Automix(match_db=0.0)
    mix.set_channel(1, "weight_db", 6.0)
    y = Chain([mix])(both[:2], SR)
    assert (cut(y, 0), cut(y, 1)) == pytest.approx((-0.97, -6.99), abs=0.05)
    # three mics: weights +6, 0, -6 share the power as 4 : 1 : 0.25
    chain = Chain([Automix(match_db=0.0)], per_channel=True)
    chain.set_channel("automix", 1, "weight_db", 6.0)
    chain.set_channel("automix", 3, "weight_db", -6.0)
    y = chain(both, SR)
    shares = np.array([3.981, 1.0, 0.2512]) / 5.2322
    assert [cut(y, c) for c in range(3)] == pytest.approx(list(10 * np.log10(shares)), abs=0.05)
    assert chain.channel_values("automix") == {1: {"weight_db": 6.0}, 3: {"weight_db": -6.0}}
    # with the priority on channel 1 too: 6 + 6 dB
    both2 = both[:2]
    y = Chain([Automix(match_db=0.0, priority_channel=1, priority_db=6.0)])(both2, SR)
    weighted = Automix(match_db=0.0, priority_channel=1, priority_db=6.0)
    weighted.set_channel(1, "weight_db", 6.0)
    z = Chain([weighted])(both2, SR)
    assert cut(z, 1) < cut(y, 1) - 4.0
    weighted.weight_db = 0.0  # every channel again: only the priority is left
    np.testing.assert_array_equal(Chain([weighted])(both2, SR), y)
    # live, prepared: a change reaches the weights at once; channels beyond the stream refused
    live = Chain([Automix(match_db=0.0)])  # not run per channel: the automixer keeps its weights anyway
    live.prepare(ProcessSpec(SR, 128, 2))
    live.set_channel_index(0, 1, live[0]._index["weight_db"], 6.0)
    assert list(live[0]._weights) == pytest.approx([1.0, 10 ** 0.6])
    with pytest.raises(ChainError, match="not in the stream"):
        live.set_channel("automix", 3, "weight_db", 1.0)
    with pytest.raises(ChainError, match="no settings per channel but weight_db"):
        live.set_channel("automix", 1, "range_db", 1.0)
    with pytest.raises(ParamError, match="no settings per channel but weight_db"):
        Automix(match_db=0.0).set_channel(1, "range_db", 1.0)


def test_a_weight_set_on_the_automixer_inside_a_chain_is_the_chain_s():
    """Review, session 25: chain["automix"].set_channel(...) grew an array of the effect's own:
    the chain did not see the weight (nor saved it), and the next prepare dropped it."""
    chain = Chain([Automix()])
    chain["automix"].set_channel(2, "weight_db", 6.0)  # unprepared: the array grows
    assert chain.channel_values("automix") == {2: {"weight_db": 6.0}}
    chain.prepare(ProcessSpec(SR, 128, 2))
    assert list(chain["automix"]._weights) == pytest.approx([1.0, 10 ** 0.6])
    chain["automix"].set_channel(1, "weight_db", -6.0)  # prepared: the chain's array, no growth
    chain.prepare(ProcessSpec(SR, 128, 2))  # an equal spec: the weights still follow
    assert list(chain["automix"]._weights) == pytest.approx([10 ** -0.6, 10 ** 0.6])
    assert chain.get_channel("automix", 1, "weight_db") == -6.0
    assert Chain([Automix()])(np.zeros((2, 64), np.float32), SR).any() == False  # noqa: E712 - silence stays
    mix = Automix()
    Chain([mix])(turns(0.2), SR)
    assert mix.gain_reduction_db >= 0.0 and str(Automix().gain_reduction_db) == "0.0"  # never -0.0
