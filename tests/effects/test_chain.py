"""Chain: ids, list behaviour, latency sum, latency-preserving bypass, non-finite handling."""
import numpy as np
import pytest

from hushbridge.effects import Chain, Effect, Gain, Param, ProcessSpec, chain_from_names, create_effect
from hushbridge.errors import ChainError, ParamError


class Delay(Effect):
    """Test effect: a pure delay that reports its latency."""

    name = "delay"
    params = (Param("amount", 0.0, 1.0, 1.0),)

    def __init__(self, samples: int) -> None:
        self.samples = samples
        super().__init__()

    @property
    def latency_samples(self) -> int:
        return self.samples

    def _prepare(self, spec: ProcessSpec) -> None:
        self.buf = np.zeros((spec.channels, self.samples + spec.max_block_size), np.float32)

    def reset(self) -> None:
        self.buf.fill(0)

    def process(self, block):
        n = block.shape[1]
        s = self.samples
        self.buf[:, s : s + n] = block
        block[...] = self.buf[:, :n]
        self.buf[:, : s] = self.buf[:, n : n + s].copy()


def test_ids_are_names_then_numbered_and_explicit_ids_win():
    c = Chain([Gain(), Gain(), Gain()], ids=[None, None, "voice"])
    assert c.ids == ["gain", "gain_2", "voice"]
    assert c["voice"] is c[2]
    with pytest.raises(ChainError, match="no effect with id 'nope'"):
        c["nope"]
    with pytest.raises(ChainError, match="already used"):
        c.append(Gain(), id="voice")
    with pytest.raises(ChainError, match="must start with a letter"):
        c.append(Gain(), id="1bad")


def test_list_behaviour():
    c = Chain()
    c.append(Gain(gain_db=-1))
    c.insert(0, Gain(gain_db=-2))
    assert len(c) == 2 and [e.gain_db for e in c] == [-2, -1]
    del c[0]
    assert len(c) == 1 and c[0].gain_db == -1


def test_param_checked_with_range_in_message():
    g = Gain()
    with pytest.raises(ParamError, match=r"gain\.gain_db must be in \[-96, 24\] dB, got 30"):
        g.gain_db = 30
    with pytest.raises(ParamError, match="no parameter 'foo'"):
        g.set("foo", 1)
    with pytest.raises(ParamError, match="must be a number"):
        g.set("gain_db", "loud")
    assert "gain_db=0" in repr(g)


def test_latency_is_sum_and_render_compensates():
    c = Chain([Delay(10), Gain(), Delay(5)])
    assert c.latency_samples == 15
    x = np.random.default_rng(1).standard_normal(3000).astype(np.float32)
    y = c(x, 48000, block_size=64)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, x)


def test_a_look_ahead_latency_is_reported_before_prepare_as_at_48k_and_exactly_once_prepared():
    from hushbridge.effects import Declip, Gate, Limiter
    from hushbridge.presets import load_preset

    for make in (Limiter, lambda: Gate(lookahead_ms=5.0), Declip, lambda: load_preset("stream")):
        early = make()
        at48, at44 = make(), make()
        at48.prepare(ProcessSpec(48000, 128, 2))
        at44.prepare(ProcessSpec(44100, 128, 2))
        assert early.latency_samples == at48.latency_samples > 0  # a host sizing early is not told 0
        assert at44.latency_samples != at48.latency_samples  # and it is the rate's once prepared


@pytest.mark.parametrize("block", [1, 64, 128, 1000])
def test_block_size_invariance(block):
    c = Chain([Gain(gain_db=-3), Delay(7), Gain(gain_db=2)])
    x = np.random.default_rng(2).standard_normal((2, 5000)).astype(np.float32)
    ref = c(x, 48000, block_size=5000)
    np.testing.assert_array_equal(c(x, 48000, block_size=block), ref)


def test_bypass_keeps_timing_and_crossfades():
    sr = 48000
    c = Chain([Delay(32), Gain(gain_db=-6)])
    c.prepare(ProcessSpec(sr, 256, 1))
    x = np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)[None, :]
    out = np.zeros_like(x)
    for i in range(0, sr, 256):
        if i == 256 * 40:
            c.set_bypass("gain", True)
        blk = x[:, i : i + 256].copy()
        c.process(blk)
        out[:, i : i + 256] = blk
    delayed = np.concatenate([np.zeros((1, 32), np.float32), x[:, :-32]], axis=1)
    # before: -6 dB; long after the toggle: unity, same timing
    np.testing.assert_allclose(out[:, 2000:9000], delayed[:, 2000:9000] * 10 ** (-6 / 20), atol=1e-6)
    np.testing.assert_allclose(out[:, 20000:], delayed[:, 20000:], atol=1e-6)
    # the toggle is smooth: no jump larger than the sine's own slope allows
    slope = 2 * np.pi * 440 / sr
    assert np.max(np.abs(np.diff(out[0, 256 * 40 - 10 : 256 * 40 + 2000]))) < slope * 1.05
    assert c.is_bypassed("gain")


def test_bypassing_a_delaying_effect_keeps_its_delay():
    c = Chain([Delay(20)])
    c.set_bypass(0, True)
    x = np.random.default_rng(3).standard_normal(2000).astype(np.float32)
    np.testing.assert_array_equal(c(x, 48000, block_size=100), x)


def test_a_bare_gain_turns_nonfinite_samples_into_silence():
    g = Gain(gain_db=-6.0)
    g.prepare(ProcessSpec(48000, 8, 1))
    x = np.array([[np.nan, np.inf, -np.inf, 1.0, 0.5, np.nan, 0.25, 1e38]], np.float32)
    g.process(x)
    assert np.isfinite(x).all() and x[0, 0] == x[0, 1] == 0.0 and x[0, 3] != 0.0
    g.gain_db = 24.0  # while it ramps, too; and a finite sample that overflows comes out as 0
    y = np.full((1, 8), np.nan, np.float32)
    y[0, 7] = 3e38
    g.process(y)
    assert np.isfinite(y).all()


def test_nonfinite_input_silenced_and_counted():
    c = Chain([Gain(gain_db=-6)])
    x = np.ones((2, 1000), np.float32)
    x[0, 10] = np.nan
    x[1, 500] = np.inf
    y = c(x, 48000, block_size=100)
    assert np.isfinite(y).all()
    assert c.nonfinite_events >= 1
    assert y[0, 10] == 0 and y[1, 500] == 0
    np.testing.assert_allclose(y[0, 11:], 10 ** (-6 / 20), rtol=1e-6)


class Exploder(Effect):
    name = "exploder"

    def __init__(self):
        super().__init__()
        self.resets = 0

    def reset(self):
        self.resets += 1

    def process(self, block):
        block[0, 0] = np.inf


def test_effect_that_emits_nonfinite_is_reset_and_block_silenced():
    e = Exploder()
    c = Chain([e])
    y = c(np.ones(64, np.float32), 48000, block_size=64)
    assert np.isfinite(y).all() and not y.any()
    assert e.resets >= 2 and c.nonfinite_events >= 1


def test_registry_and_chain_from_names():
    assert isinstance(create_effect("gain", gain_db=-3), Gain)
    with pytest.raises(ChainError, match="unknown effect 'fuzz'"):
        chain_from_names("gain,fuzz")
    with pytest.raises(ChainError, match="empty chain"):
        chain_from_names(" , ")
    assert chain_from_names("gain, gain").ids == ["gain", "gain_2"]


def test_param_norm_and_display():
    p = Param("cutoff_hz", 20.0, 20000.0, 80.0, scale="log")
    assert p.from_norm(0) == 20.0 and p.from_norm(1) == pytest.approx(20000.0)
    assert p.to_norm(p.from_norm(0.37)) == pytest.approx(0.37)
    assert p.display(80) == "80.0 Hz" and p.display(2500) == "2.50 kHz"
    assert Param("threshold_db", -60, 0, -18).display(-18) == "-18.0 dB"
    # seconds have a unit; a level that rounds to zero is not "-0.0 dB"
    t = Param("time_s", 0.3, 30.0, 3.0, scale="log")
    assert t.unit == "s" and t.display(3.0) == "3.00 s"
    assert Param("gain_db", -96, 24, 0).display(-0.04) == "0.0 dB" and Param("x_ms", -5, 5, 0).display(-0.0) == "0.0 ms"
    assert p.clamp(1e9) == 20000.0 and p.clamp(float("nan")) == 80.0
    # a gain at its minimum mutes: it says so rather than "-96.0 dB"
    gain = Gain(gain_db=-96.0)
    assert gain.param("gain_db").display(-96.0) == "-inf dB" and gain.param("gain_db").display(-95.9) == "-95.9 dB"
    gain.prepare(ProcessSpec(48000, 4800, 1))
    out = np.ones((1, 4800), np.float32)
    gain.process(out)
    assert out[0, -1] == 0.0


def test_a_block_of_the_wrong_shape_is_refused_not_written_past_the_state():
    from hushbridge.effects import Denoise, HighPass, Limiter

    for effect in (HighPass(), Limiter(), Chain([HighPass(), Limiter()]), Denoise()):
        effect.prepare(ProcessSpec(48000, 128, 1))
        with pytest.raises(ValueError, match="block has 2 channels, prepared for 1"):
            effect.process(np.ones((2, 64), np.float32))
        with pytest.raises(ValueError, match=r"\(channels, frames\)|prepared for 1"):
            effect.process(np.ones(64, np.float32))
        with pytest.raises(ValueError, match=r"pass its \.T"):
            effect.process(np.ones((64, 1), np.float32))
        block = np.full((1, 64), 0.1, np.float32)
        effect.process(block)  # the right shape still runs
        assert np.isfinite(block).all()


def test_render_refuses_integer_and_transposed_audio():
    chain = Chain([Gain(gain_db=-6.0)])
    with pytest.raises(ValueError, match="integer \\(int16\\).*32768"):
        chain((np.ones(100) * 1000).astype(np.int16), 48000)
    with pytest.raises(ValueError, match=r"looks like \(frames, channels\).*audio\.T"):
        chain(np.zeros((48000, 2), np.float32), 48000)
    assert chain(np.zeros((2, 48000), np.float32), 48000).shape == (2, 48000)


def test_a_misspelt_parameter_attribute_is_an_error():
    from hushbridge.effects import Compressor

    c = Compressor()
    with pytest.raises(AttributeError, match="no parameter 'makeup_Db'; did you mean 'makeup_db'"):
        c.makeup_Db = 6.0
    c.makeup_db = 6.0
    assert c.makeup_db == 6.0
    # nor is a name that is no near miss (QA: limiter.ceiling = -6 set nothing audible, silently)
    from hushbridge.effects import HighPass, Limiter

    with pytest.raises(AttributeError, match="no parameter 'ceiling'; did you mean 'ceiling_dbtp'"):
        Limiter().ceiling = -6.0
    with pytest.raises(AttributeError, match=r"no parameter 'freq_hz' \(parameters: cutoff_hz, q, slope\)"):
        HighPass().freq_hz = 120.0
    with pytest.raises(AttributeError, match="chain.set_bypass"):
        Limiter().bypass = True
    # a user's own effect keeps attributes of its own (Delay above sets self.buf in _prepare)
    d = Delay(3)
    d.label = "kept"
    assert d.label == "kept"
    with pytest.raises(AttributeError, match="did you mean 'amount'"):
        d.Amount = 0.5


def test_membership_and_one_instance_per_chain():
    g = Gain()
    chain = Chain([g])
    assert "gain" in chain and g in chain and "gain_2" not in chain and Gain() not in chain
    with pytest.raises(ChainError, match="already in the chain"):
        chain.append(g)
    with pytest.raises(TypeError, match="not sliced"):
        chain[0:1]


def test_a_prepared_chain_pickles_for_worker_processes():
    import pickle

    from hushbridge.effects import Compressor, Denoise, HighPass, Limiter

    x = (np.random.default_rng(0).standard_normal((2, 24000)) * 0.2).astype(np.float32)
    chain = Chain([HighPass(cutoff_hz=120), Denoise(reduction_db=20), Compressor(threshold_db=-30), Limiter()])
    expected = chain(x, 48000)  # prepared, fused runs compiled
    copy = pickle.loads(pickle.dumps(chain))
    assert copy.spec is None and copy["compressor"].threshold_db == -30.0  # comes back unprepared
    assert np.array_equal(copy(x, 48000), expected)
    hp = HighPass()
    hp.prepare(ProcessSpec(48000, 128, 1))
    again = pickle.loads(pickle.dumps(hp))  # a bare prepared effect stays prepared
    a, b = np.ones((1, 128), np.float32), np.ones((1, 128), np.float32)
    hp.process(a)
    again.process(b)
    assert np.array_equal(a, b)


# -- per channel (separate microphones) --------------------------------------------------------
def _turns(seconds: float = 3.0, sr: int = 48000) -> np.ndarray:
    """Two microphones taking turns 24 dB apart, each with its own faint noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(5)
    talk = lambda level, start: (10 ** (level / 20) * np.sin(2 * np.pi * 170 * t) * (1 + np.sin(2 * np.pi * 4 * t))  # noqa: E731
                                 * ((t % 1.0 >= start) & (t % 1.0 < start + 0.45)))
    x = np.stack([talk(-12.0, 0.0), talk(-36.0, 0.5)]) + 10 ** (-60 / 20) * rng.standard_normal((2, t.size))
    return x.astype(np.float32)


def _render(chain: Chain, x: np.ndarray, block: int = 128) -> np.ndarray:
    chain.prepare(ProcessSpec(48000, block, x.shape[0]))
    y = x.copy()
    for i in range(0, y.shape[1], block):
        chain.process(y[:, i:i + block])
    return y


def test_per_channel_runs_each_channel_as_if_it_were_alone():
    from hushbridge.effects import Compressor, Denoise, Gate, HighPass, Leveler, Limiter

    def make(per_channel=False):
        return Chain([HighPass(cutoff_hz=90), Denoise(reduction_db=20), Leveler(), Gate(threshold_db=-50),
                      Compressor(threshold_db=-30), Limiter()], per_channel=per_channel)

    x = _turns()
    apart = make(per_channel=True)
    y = _render(apart, x)
    for c in range(2):
        np.testing.assert_array_equal(y[c:c + 1], _render(make(), x[c:c + 1]))
    # every effect runs an instance per channel (so that each may have settings of its own)
    assert [len(apart.instances(k)) for k in range(len(apart))] == [2, 2, 2, 2, 2, 2]
    linked = _render(make(), x)
    quiet = slice(int(2.55 * 48000), int(2.9 * 48000))  # the quiet speaker talks, the loud one pauses
    lift = lambda z: 20 * np.log10(np.sqrt(np.mean(np.square(z[1, quiet], dtype=np.float64))))  # noqa: E731
    assert lift(y) > lift(linked) + 6.0  # levelled for itself, not by the loud speaker's gain


def test_per_channel_instances_follow_every_change_reset_together_and_meter_the_largest():
    from hushbridge.effects import Compressor

    class Counting(Effect):
        name = "counting"

        def reset(self):
            self.__dict__["resets"] = self.__dict__.get("resets", 0) + 1

        def process(self, block):
            if self.__dict__.get("explode"):
                block[0, 3] = np.inf

    chain = Chain([Compressor(threshold_db=-30, ratio=4), Counting()], per_channel=True)
    x = _turns(1.0)
    _render(chain, x)
    comp, other = chain.instances("compressor")
    assert other is not comp and other.values() == comp.values() == chain["compressor"].values()
    assert chain["compressor"] not in (comp, other)  # the chain's effect holds the settings every channel takes
    with pytest.raises(ParamError, match="channel 2's instance"):  # it would be undone at the next prepare
        other.threshold_db = -40.0
    chain["compressor"].threshold_db = -20.0  # set on the chain's effect, after prepare
    chain["compressor"].set_index(1, 8.0)  # as the engine applies a change
    assert other.threshold_db == -20.0 and other.ratio == 8.0
    y = x.copy()
    chain.process(y[:, :4800])
    assert chain.reading(0, "gain_reduction_db") == max(comp.gain_reduction_db, other.gain_reduction_db) > 0.0
    assert comp.gain_reduction_db != other.gain_reduction_db  # each channel measured its own
    # a non-finite sample from one channel's instance silences and resets that channel alone
    # (QA, session 24: the whole block was silenced and every instance reset)
    counts = [e.resets for e in chain.instances("counting")]
    chain.instances("counting")[1].__dict__["explode"] = True
    bad = x[:, 4800:4928].copy()
    ahead = Chain([Compressor(threshold_db=-20, ratio=8)])  # channel 1 alone, from the same state
    ahead.prepare(ProcessSpec(48000, 128, 1))
    ahead[0]._env[:], ahead[0]._sc_state[:], ahead[0]._rms_state[:] = comp._env, comp._sc_state, comp._rms_state
    ahead[0]._ramp[:] = comp._ramp
    alone = bad[:1].copy()
    ahead.process(alone)
    chain.process(bad)
    assert np.isfinite(bad).all() and chain.nonfinite_events == 1 and not bad[1].any()
    np.testing.assert_array_equal(bad[0], alone[0])
    assert [e.resets for e in chain.instances("counting")] == [counts[0], counts[1] + 1]
    # a copy of a prepared per-channel chain follows nobody and comes back unprepared
    import copy as copy_module

    twin = copy_module.deepcopy(chain)
    twin["compressor"].threshold_db = -50.0
    assert comp.threshold_db == -20.0 and twin.spec is None and twin.per_channel
    assert len(twin.instances("compressor")) == 1  # made again at its prepare, not carried stale


def test_per_channel_runs_joint_effects_on_every_channel_and_splits_unknown_ones():
    from hushbridge.effects import Automix, Compressor, HighPass, Limiter
    from hushbridge.effects.fused import FusedRun

    class Mine(Effect):  # says nothing about its channels: split, which is never wrong
        name = "mine"

        def process(self, block):
            block *= 0.5

    x = _turns(1.0)
    chain = Chain([Automix(), Limiter(), Mine()], per_channel=True)
    y = _render(chain, x)
    assert [len(chain.instances(k)) for k in range(3)] == [1, 2, 2]
    shared = _render(Chain([Automix()]), x)  # the gain shared across both channels, then each alone
    for c in range(2):
        np.testing.assert_array_equal(y[c:c + 1], _render(Chain([Limiter(), Mine()]), shared[c:c + 1]))
    # kernel effects that need no split still run fused around a split one
    fused = Chain([Automix(), Automix(), Compressor(), Automix(), Automix()], per_channel=True)
    _render(fused, x)
    if fused.fuse:
        assert [type(u) for u in fused._units] == [FusedRun, int, FusedRun]
    # a filter is split too (its channels may have settings of their own): no fused run left
    filters = Chain([HighPass(), HighPass()], per_channel=True)
    _render(filters, x)
    assert [type(u) for u in filters._units] == [int, int]
    # per_channel is a setting of the chain, checked
    with pytest.raises(TypeError, match="per_channel"):
        Chain([], per_channel="yes")


def test_per_channel_instances_share_the_deadline_and_keep_offline_offline():
    """Review, session 24: a denoiser's copies came back live (rebuilt from the model file) in
    an offline render, so channel 2 fell back to its dry path under load; and each copy took
    the whole hop's budget, so N channels could spend N budgets per hop."""
    from hushbridge.effects import Denoise

    linked = Chain([Denoise()])
    linked.prepare(ProcessSpec(48000, 128, 3))
    apart = Chain([Denoise()], per_channel=True)
    apart.set_non_realtime(True)
    apart.prepare(ProcessSpec(48000, 128, 3))
    instances = apart.instances("denoise")
    assert len(instances) == 3 and all(e.non_realtime for e in instances)
    assert [e._budget for e in instances] == pytest.approx([linked["denoise"]._budget / 3] * 3)
    apart.per_channel = False  # unprepares; the one instance gets the whole budget again
    assert apart.spec is None and len(apart.instances("denoise")) == 1
    apart.prepare(ProcessSpec(48000, 128, 3))
    assert apart["denoise"]._budget == pytest.approx(linked["denoise"]._budget)


def test_per_channel_settings_of_a_channel_s_own():
    """Separate microphones want settings of their own (a quiet guest mic needs a lower gate
    threshold, a boomy one a higher cut): ``set_channel`` gives one channel a value, the
    others keep the effect's, and setting the effect itself sets every channel again."""
    import copy as copy_module
    import pickle

    from hushbridge.effects import Automix, Gate, HighPass

    x = _turns(1.0)

    def make(threshold_db=-20.0):
        return Chain([HighPass(cutoff_hz=90), Gate(threshold_db=threshold_db)])

    chain = make()
    chain.per_channel = True
    chain.set_channel("gate", 2, "threshold_db", -50.0)  # before prepare: kept for it
    chain.set_channel("highpass", 1, "cutoff_hz", 150.0)
    assert chain.channel_values("gate") == {2: {"threshold_db": -50.0}}
    assert chain.get_channel("gate", 1, "threshold_db") == -20.0 == chain["gate"].threshold_db
    y = _render(chain, x)
    one = make()
    one["highpass"].cutoff_hz = 150.0
    np.testing.assert_array_equal(y[:1], _render(one, x[:1]))
    np.testing.assert_array_equal(y[1:], _render(make(threshold_db=-50.0), x[1:]))
    # the quiet mic at -36 dBFS opens only under its own, lower threshold
    rms = lambda z: np.sqrt(np.mean(np.square(z, dtype=np.float64)))  # noqa: E731
    assert rms(y[1]) > 10 * rms(_render(make(), x[1:]))
    # live (prepared): a channel's value reaches its instance at once; the effect's sets all again
    chain.set_channel("gate", 1, "threshold_db", -40.0)
    assert [g.threshold_db for g in chain.instances("gate")] == [-40.0, -50.0]
    assert chain["gate"].threshold_db == -20.0  # what the other channels, and a new one, take
    chain.set_channel_index(1, 1, chain["gate"]._index["threshold_db"], -60.0)  # as the engine does
    assert chain.instances("gate")[1].threshold_db == -60.0 == chain.get_channel("gate", 2, "threshold_db")
    chain["gate"].threshold_db = -45.0
    assert [g.threshold_db for g in chain.instances("gate")] == [-45.0, -45.0]
    assert chain.channel_values("gate") == {} and chain.channel_values("highpass") == {1: {"cutoff_hz": 150.0}}
    # copies keep them (a pickled chain comes back unprepared with its values)
    chain.set_channel("gate", 2, "range_db", 20.0)
    for twin in (copy_module.deepcopy(chain), pickle.loads(pickle.dumps(chain))):
        assert twin.spec is None and twin.channel_values("gate") == {2: {"range_db": 20.0}}
        twin["gate"].threshold_db = -10.0  # its own effect, its own values
        assert chain["gate"].threshold_db == -45.0 and chain.channel_values("gate") == {2: {"range_db": 20.0}}
        _render(twin, x[:, :1280])
        assert [g.range_db for g in twin.instances("gate")] == [twin["gate"].range_db, 20.0]
    # an effect moved (within a chain or to another) brings a copy of its channel values
    moved = copy_module.deepcopy(chain)
    gate = moved["gate"]
    del moved["gate"]
    moved.insert(0, gate)
    assert moved.channel_values("gate") == {2: {"range_db": 20.0}}
    del moved["gate"]
    other = Chain([gate], per_channel=True)
    assert other.channel_values("gate") == {2: {"range_db": 20.0}}
    gate.range_db = 30.0  # every channel again, in the chain it is in now
    assert other.channel_values("gate") == {}
    # refused: a channel the stream lacks, a joint effect, a chain prepared as one, range
    with pytest.raises(ChainError, match="channel 3 is not in the stream"):
        chain.set_channel("gate", 3, "threshold_db", -40.0)
    with pytest.raises(ChainError, match="whole numbers from 1"):
        chain.set_channel("gate", 0, "threshold_db", -40.0)
    with pytest.raises(ParamError, match="threshold_db"):
        chain.set_channel("gate", 2, "threshold_db", 40.0)
    with pytest.raises(ParamError, match="no parameter"):
        chain.set_channel("gate", 2, "treshold_db", -40.0)
    mixed = Chain([Automix(), Gate()], per_channel=True)
    with pytest.raises(ChainError, match="all channels together"):
        mixed.set_channel("automix", 1, "range_db", -6.0)
    plain = make()
    _render(plain, x)
    with pytest.raises(ChainError, match="per_channel=True"):
        plain.set_channel("gate", 2, "threshold_db", -40.0)
    # a channel's instance points at set_channel
    with pytest.raises(ParamError, match=r"set_channel\(id, 2, 'threshold_db'"):
        chain.instances("gate")[1].threshold_db = -40.0


def test_per_channel_values_survive_copies_edits_and_re_prepares_and_refuse_shared_params():
    """Review, session 25: a deep-copied chain's denoiser (rebuilt from its model file) lost the
    link that lets a change to the effect clear the channels' values; set_channel after an edit
    raised IndexError; a gate@2 look-ahead was stored but never used (the latency is shared);
    the model counters went back to 0 at every re-prepare (JACK buffer change)."""
    import copy as copy_module

    from hushbridge.effects import Declip, Denoise, Gate

    chain = Chain([Denoise(), Gate()], per_channel=True)
    chain.set_channel("denoise", 2, "reduction_db", 6.0)
    twin = copy_module.deepcopy(chain)
    twin["denoise"].reduction_db = 30.0  # every channel again, in the copy
    assert twin.channel_values("denoise") == {} and chain.channel_values("denoise") == {2: {"reduction_db": 6.0}}
    spec = ProcessSpec(48000, 128, 2)
    chain.prepare(spec)
    chain.instances("denoise")[1]._rt.overload_events = 3
    chain.prepare(ProcessSpec(48000, 256, 2))  # a new buffer size: new instances, counters kept
    assert [e.overload_events for e in chain.instances("denoise")] == [0, 3]
    assert chain.instances("denoise")[1].reduction_db == 6.0
    chain.append(Gate(), id="gate_2")  # an edit unprepares; a channel the old stream lacked is fine now
    chain.set_channel("gate", 3, "threshold_db", -60.0)
    assert chain.channels_beyond(2) == ["gate@3"] and chain.channels_beyond(3) == []
    for effect, pid in ((Gate(), "lookahead_ms"), (Declip(), "max_run_ms")):
        with pytest.raises(ChainError, match="same on every channel"):
            Chain([effect], per_channel=True).set_channel(0, 2, pid, 5.0)


def test_an_effect_bypassed_on_one_channel_alone():
    """The gate off on one mic only: set_channel_bypass crossfades that channel to its delayed
    dry signal (the latency kept), the others run on; back, the channel's instance starts from
    clean state; the effect's own bypass stays the master, for every channel."""
    from hushbridge.effects import Gain, Limiter

    x = np.full((2, 48000), 0.5, np.float32)
    chain = Chain([Gain(gain_db=-6.0), Limiter()], per_channel=True)
    chain.set_channel_bypass("gain", 2, True)  # before prepare: kept for it
    y = chain(x, 48000)
    np.testing.assert_allclose(y[:, -1], [0.5 * 10 ** (-6 / 20), 0.5], rtol=1e-5)
    assert chain.is_channel_bypassed("gain", 2) and chain.channel_values("gain") == {2: {"bypass": 1.0}}
    chain.prepare(ProcessSpec(48000, 128, 2))
    z = x.copy()
    for i in range(0, z.shape[1], 128):
        if i == 128 * 50:
            chain.set_channel_bypass("gain", 2, False)  # back: a 20 ms fade to the effect
            chain.set_channel_bypass("gain", 1, True)
        chain.process(z[:, i:i + 128])
    lat = chain.latency_samples
    np.testing.assert_allclose(z[:, -1], [0.5, 0.5 * 10 ** (-6 / 20)], rtol=1e-5)
    edge = 128 * 50 + lat
    assert np.all(np.abs(np.diff(z[0, edge:edge + 960])) < 0.01)  # a fade, not a step
    chain.set_bypass("gain", True)  # the effect's own: every channel
    w = chain(x, 48000)
    np.testing.assert_allclose(w[:, -1], [0.5, 0.5], rtol=1e-5)
    with pytest.raises(ChainError, match="not in the stream"):
        chain.set_channel_bypass("gain", 3, True)
    # its meter reads 0 on the channel bypassed (its instance does not run), the others as before
    from hushbridge.effects import Compressor

    tone = np.tile(0.5 * np.sin(2 * np.pi * 200 * np.arange(48000) / 48000), (2, 1)).astype(np.float32)
    squeeze = Chain([Compressor(threshold_db=-30.0)], per_channel=True)
    _render(squeeze, tone)
    squeeze.set_channel_bypass("compressor", 2, True)
    for i in range(0, 4800, 128):
        squeeze.process(tone[:, i:i + 128].copy())
    out = np.full(3, np.nan)
    squeeze.reading_into(0, "gain_reduction_db", out)
    assert out[1] > 10.0 and out[2] == 0.0 and out[0] == out[1]
    from hushbridge.effects import Automix

    with pytest.raises(ChainError, match="works on all channels together"):
        Chain([Automix()], per_channel=True).set_channel_bypass("automix", 1, True)
