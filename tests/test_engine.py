"""Engine without a device: the hand-off, coalescing, live swap, stats, non-finite guard."""
import threading

import numpy as np
import pytest

from hushbridge.control.params import ControlPort, ParamChange, ParamRing
from hushbridge.engine import Engine
from hushbridge.effects import Chain, Gain
from hushbridge.errors import ChainError, ParamError


def run_blocks(engine, x, block=128):
    out = np.zeros_like(x)
    for i in range(0, x.shape[1], block):
        engine.process(x[:, i : i + block], out[:, i : i + block])
    return out


def make_engine(*effects, channels=2):
    e = Engine(Chain(list(effects)), channels=channels)
    e.prepare(48000, 128)
    return e


def test_set_reaches_audio_at_next_block_and_is_smoothed():
    e = make_engine(Gain())
    x = np.ones((2, 128 * 40), np.float32)
    e.set("/hb/gain/gain_db", -6.0)
    assert e.get("/hb/gain/gain_db") == -6.0
    y = run_blocks(e, x)
    assert y[0, 0] > 0.99  # ramp starts from the old value: no jump
    assert np.all(np.diff(y[0, :1000]) <= 0)  # monotone ramp down
    np.testing.assert_allclose(y[:, -1], 10 ** (-6 / 20), rtol=1e-6)
    assert e.chain["gain"].gain_db == -6.0


def test_set_checks_range_unless_clamped():
    e = make_engine(Gain())
    with pytest.raises(ParamError, match=r"\[-96, 24\]"):
        e.set("/hb/gain/gain_db", 50)
    assert e.set("/hb/gain/gain_db", 50, clamp=True) == 24.0
    with pytest.raises(ParamError, match="unknown address"):
        e.set("/hb/nope/gain_db", 1)
    with pytest.raises(ParamError, match="finite"):
        e.set("/hb/gain/gain_db", float("nan"), clamp=True)


def test_norm_bypass_and_engine_stats():
    e = make_engine(Gain(), Gain())
    assert e.set_norm("/hb/gain_2/gain_db", 1.0) == 24.0
    e.set_bypass("gain_2", True)
    assert e.get("/hb/gain_2/bypass") == 1.0
    run_blocks(e, np.zeros((2, 128 * 10), np.float32))
    assert e.chain.is_bypassed("gain_2")
    for stat in ("xruns", "cpu_load", "latency_samples", "sample_rate", "block_size",
                 "dropped_messages", "coalesced_changes"):
        assert isinstance(e.get(f"/hb/engine/{stat}"), float)
    assert e.get("/hb/engine/sample_rate") == 48000.0
    assert e.display("/hb/gain/gain_db", -6) == "-6.0 dB"
    with pytest.raises(ParamError, match="unknown engine stat"):
        e.get("/hb/engine/bogus")


def test_ring_is_bounded_and_full_ring_coalesces_latest_wins():
    ring = ParamRing(4)
    port = ControlPort(ring)
    for v in range(10):
        port.submit(ParamChange(0, 0, 0, float(v)))
    assert len(ring) == 4 and port.pending == 1
    assert port.coalesced_changes == 5  # values 5..9 folded into one pending slot
    seen = []
    ring.drain(lambda g, s, p, v, t, o: seen.append(v))
    assert seen == [0.0, 1.0, 2.0, 3.0]
    assert port.flush() == 0
    ring.drain(lambda g, s, p, v, t, o: seen.append(v))
    assert seen[-1] == 9.0  # latest value wins


def test_flood_from_threads_while_audio_runs_ends_at_last_value():
    e = make_engine(Gain())
    stop = threading.Event()
    x = np.full((2, 128), 0.5, np.float32)
    y = np.zeros_like(x)

    def audio():
        while not stop.is_set():
            e.process(x, y)

    t = threading.Thread(target=audio)
    t.start()
    try:
        for i in range(20000):
            e.set("/hb/gain/gain_db", -float(i % 50), clamp=True)
        e.set("/hb/gain/gain_db", -12.0)
        for _ in range(100):
            e.housekeeping()
            if e.control.pending == 0 and len(e.ring) == 0 and e.chain["gain"].gain_db == -12.0:
                break
            threading.Event().wait(0.01)
    finally:
        stop.set()
        t.join()
    assert e.chain["gain"].gain_db == -12.0
    assert np.isfinite(y).all()


def test_live_swap_crossfades_and_old_generation_changes_are_ignored():
    e = make_engine(Gain())
    sr = 48000
    t = np.arange(sr // 2) / sr
    x = np.tile(np.sin(2 * np.pi * 220 * t).astype(np.float32), (2, 1))
    out = np.zeros_like(x)
    old_gen = e.generation
    swapped = threading.Event()

    def swap():
        e.load_chain(Chain([Gain(gain_db=-1.0)]))
        swapped.set()

    th = threading.Thread(target=swap)
    for i in range(0, x.shape[1], 128):
        if i == 128 * 20:
            th.start()
            while e._incoming is None:  # the control thread prepares, then hands over
                th.join(0.001)
        e.process(x[:, i : i + 128], out[:, i : i + 128])
    th.join()
    assert swapped.is_set()
    assert e.generation == old_gen + 1
    slope = 2 * np.pi * 220 / sr
    assert np.max(np.abs(np.diff(out[0]))) < slope * 1.1  # no click
    np.testing.assert_allclose(out[0, -100:], x[0, -100:] * 10 ** (-1 / 20), atol=1e-5)
    # a change addressed to the old chain is dropped, not applied to the new one
    e.control.submit(ParamChange(old_gen, 0, 0, -40.0))
    run_blocks(e, x[:, :256])
    assert e.chain["gain"].gain_db == -1.0


def _swap_at(e, new, x, at_block, block=128):
    out = np.zeros_like(x)
    for k, i in enumerate(range(0, x.shape[1], block)):
        if k == at_block:
            e.load_chain(new)
        e.process(x[:, i:i + block], out[:, i:i + block])
    return out


def test_swap_to_a_chain_of_other_latency_fades_out_then_in():
    """Old and new outputs are not time-aligned when the latency changes: a crossfade of the two
    combs (a 330 Hz tone shifted by 72 samples nearly cancels). The old chain fades out, the new
    one fades in once its delay line holds signal: no step, no overlap."""
    from hushbridge.effects import Limiter

    sr, f, at = 48000, 330.0, 100
    t = np.arange(sr // 2) / sr
    x = np.tile((0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), (2, 1))
    e = make_engine(Gain())
    new = Chain([Gain(), Limiter(ceiling_dbtp=0.0)])
    y = _swap_at(e, new, x, at)
    s, fade, lat = at * 128, e._fade_len, new.latency_samples
    assert lat > 0 and fade == 960
    slope = 0.5 * 2 * np.pi * f / sr
    assert np.abs(np.diff(y[0, s - 500:s + 3 * fade])).max() < slope * 1.05
    assert np.abs(y[0, s + fade - 20:s + fade]).max() < 0.02  # the old chain has gone ...
    assert np.abs(y[0, s + fade:s + fade + 20]).max() < 0.02  # ... before the new one comes in
    late = slice(s + 2 * fade + lat, y.shape[1])
    np.testing.assert_allclose(y[0, late], x[0, late.start - lat:x.shape[1] - lat], atol=1e-4)


def test_swap_between_chains_of_equal_latency_crossfades_aligned():
    """Same latency: the new chain comes in once its output is real, crossfading with the old
    one in time (a level change, never a dip)."""
    from hushbridge.effects import Limiter

    x = np.full((2, 128 * 60), 0.25, np.float32)
    e = make_engine(Gain(), Limiter(ceiling_dbtp=0.0))
    run_blocks(e, x)  # the limiter's delay line is full
    y = _swap_at(e, Chain([Gain(gain_db=-1.0), Limiter(ceiling_dbtp=0.0)]), x, 0)
    low = 0.25 * 10 ** (-1 / 20)
    assert y[0].min() > low - 1e-4 and y[0].max() < 0.25 + 1e-4
    assert np.abs(np.diff(y[0])).max() < (0.25 - low) / e._fade_len * 1.5
    np.testing.assert_allclose(y[:, -1], low, rtol=1e-4)


def test_a_chain_swapped_in_while_a_backend_runs_is_not_fused():
    """Loading a fused run's compiled code holds the GIL for 50-100 ms (tens of periods): a chain
    loaded while a backend calls the engine runs effect by effect, with the same output."""
    from hushbridge.effects import Compressor, HighPass

    def chain():
        return Chain([HighPass(cutoff_hz=90.0), Compressor(threshold_db=-25.0), Gain(gain_db=-1.0)], fuse=True)

    e = make_engine(Gain())
    e.attach(True)
    live = chain()
    e.load_chain(live)
    assert live.fuse and all(isinstance(u, int) for u in live._units) and not live.uncompiled
    assert e._fuse_job is None  # no background compile either
    x = (np.random.default_rng(3).standard_normal((2, 128 * 30)) * 0.2).astype(np.float32)
    ref = chain()
    ref.prepare(e.spec)
    y = run_blocks(e, x)
    expect = x.copy()
    for i in range(0, x.shape[1], 128):
        ref.process(expect[:, i:i + 128])
    np.testing.assert_allclose(y[:, -128 * 5:], expect[:, -128 * 5:], atol=1e-6)


def test_a_running_chain_cannot_be_loaded_again():
    e = make_engine(Gain())
    with pytest.raises(ChainError, match="running in this engine"):
        e.load_chain(e.chain)
    with pytest.raises(ChainError, match="running in another engine"):
        Engine(e.chain)
    import copy

    old = e.chain
    e.load_chain(copy.deepcopy(old))  # a copy is a new chain
    run_blocks(e, np.zeros((2, 128 * 20), np.float32))
    assert e.wait_for_swap(0.1) and e.chain is not old
    other = Engine(old)  # retired: free to run elsewhere
    assert other.chain is old


def test_a_load_after_the_backend_stopped_swaps_at_once():
    e = make_engine(Gain())
    e.attach(True)
    e.attach(False)  # no more callbacks: a swap must not wait for a block boundary
    new = Chain([Gain(gain_db=-3.0)])
    e.load_chain(new)
    assert e.chain is new and e.wait_for_swap(0.01)
    newer = Chain([Gain(gain_db=-6.0)])
    e.load_chain(newer)
    assert e.chain is newer and e.get("/hb/gain/gain_db") == -6.0


def test_nonfinite_never_reaches_output_and_exceptions_are_contained():
    e = make_engine(Gain())
    x = np.full((2, 128), np.nan, np.float32)
    y = np.ones_like(x)
    e.process(x, y)
    assert np.isfinite(y).all() and not y.any()
    assert e.nonfinite_events >= 1

    class Broken(Gain):
        name = "broken"

        armed = False

        def process(self, block):
            if self.armed:
                raise RuntimeError("boom")
            super().process(block)

    broken = Broken()
    e2 = make_engine(broken)
    broken.armed = True
    y = np.ones((2, 128), np.float32)
    e2.process(np.ones((2, 128), np.float32), y)
    assert e2.callback_errors == 1 and "boom" in e2.last_callback_error and not y.any()


def test_blocks_larger_than_prepared_are_split():
    e = make_engine(Gain(gain_db=-6))
    x = np.ones((2, 1000), np.float32)
    y = np.zeros_like(x)
    e.process(x, y)
    np.testing.assert_allclose(y, 10 ** (-6 / 20), rtol=1e-6)


def test_change_sent_between_handover_and_swap_reaches_the_new_chain():
    e = make_engine(Gain())
    x = np.ones((2, 128), np.float32)
    y = np.zeros_like(x)
    e.process(x, y)
    e.load_chain(Chain([Gain(), Gain()], ids=["a", "b"]))  # handed over, not yet swapped in
    e.set("/hb/b/gain_db", -20.0)  # slot 1 exists only in the new chain
    for _ in range(20):
        e.process(x, y)
    assert e.callback_errors == 0 and e.chain.ids == ["a", "b"]
    assert e.chain["b"].gain_db == -20.0
    np.testing.assert_allclose(y[:, -1], 0.1, rtol=1e-5)


def test_live_engine_compiles_fused_runs_in_the_background_and_switches_seamlessly(tmp_path, monkeypatch):
    """Compiling a fused run holds the GIL for seconds, so the engine never does it in prepare:
    the chain starts effect by effect, a background process fills the disk cache, and
    housekeeping switches the running chain to the fused call with bit-identical output."""
    import time

    from hushbridge.effects import Compressor, DeEsser, HighPass, Leveler

    monkeypatch.setenv("HUSHBRIDGE_FUSED_DIR", str(tmp_path))

    def chain(fuse):  # a combination no other test uses, so nothing is loaded in this process
        return Chain([HighPass(cutoff_hz=120.0), DeEsser(), Leveler(), Gain(gain_db=-2.0),
                      Compressor(threshold_db=-30.0, knee_db=2.0)], fuse=fuse)

    live, reference = Engine(chain(True), channels=2), Engine(chain(False), channels=2)
    t0 = time.monotonic()
    live.prepare(48000, 128)
    reference.prepare(48000, 128)
    assert time.monotonic() - t0 < 5.0
    assert live.chain.uncompiled and all(isinstance(u, int) for u in live.chain._units)
    rng = np.random.default_rng(5)
    out_live, out_ref = [], []
    fused_at = None
    deadline = time.monotonic() + 240.0
    k = 0
    while time.monotonic() < deadline and (fused_at is None or k < fused_at + 50):
        x = (rng.standard_normal((2, 128)) * 0.2).astype(np.float32)
        a, b = np.zeros_like(x), np.zeros_like(x)
        live.process(x.copy(), a)
        reference.process(x.copy(), b)
        out_live.append(a)
        out_ref.append(b)
        live.housekeeping()
        if fused_at is None and not live.chain.uncompiled:
            fused_at = k
        k += 1
        if fused_at is None:
            time.sleep(0.005)
    assert fused_at is not None, "the background compile did not finish in 240 s"
    assert type(live.chain._units[0]).__name__ == "FusedRun"
    np.testing.assert_array_equal(np.hstack(out_live), np.hstack(out_ref))


def test_a_per_channel_engine_runs_every_chain_per_channel_and_meters_the_busiest_channel():
    """Separate microphones live: the engine's per_channel holds for each chain it loads (a
    preset is a chain of effects, not a statement about the input), control reaches every
    channel's instance, and the gain-reduction meter shows the channel reduced most."""
    from hushbridge.effects import Automix, Compressor

    e = Engine(Chain([Compressor(threshold_db=-30.0, ratio=4.0)]), channels=2, per_channel=True)
    assert e.chain.per_channel
    fixed = []
    e.add_chain_filter(lambda chain: fixed.append(chain) or chain.insert(0, Automix()))
    e.prepare(48000, 128)
    t = np.arange(48000) / 48000
    x = np.stack([0.5 * np.sin(2 * np.pi * 300 * t), 0.01 * np.sin(2 * np.pi * 300 * t)]).astype(np.float32)
    e.set("/hb/compressor/threshold_db", -20.0)
    y = run_blocks(e, x)
    loud, quiet = e.chain.instances("compressor")
    assert quiet.threshold_db == -20.0 and quiet.gain_reduction_db == 0.0 < loud.gain_reduction_db
    np.testing.assert_array_equal(y[1], x[1])  # the quiet mic is not turned down with the loud one
    row = (e.meter.seq - 1) % e.meter.slots
    np.testing.assert_allclose(e.meter.extra[row, 0], [loud.gain_reduction_db, loud.gain_reduction_db, 0.0])
    with pytest.raises(ChainError, match="running"):
        e.load_chain(e.chain)  # refused before any filter touched it
    assert fixed == [] and e.chain.ids == ["compressor"]
    new = Chain([Compressor()])
    e.load_chain(new)
    assert fixed == [new] and new.per_channel and new.ids == ["automix", "compressor"]
    run_blocks(e, x[:, :4096])
    assert e.chain is new and len(new.instances("compressor")) == 2 and len(new.instances("automix")) == 1
    assert e.get("/hb/engine/per_channel") == 1.0 and e.get("/hb/engine/channels") == 2.0
    assert make_engine(Gain()).get("/hb/engine/per_channel") == 0.0
    with pytest.raises(TypeError, match="per_channel"):
        Engine(Chain([Gain()]), per_channel=1)


def test_model_counters_count_every_channel_of_a_per_channel_denoiser():
    from hushbridge.effects import Denoise

    e = Engine(Chain([Denoise()]), channels=2, per_channel=True)
    e.prepare(48000, 128)
    assert len(e._models()) == 2
    e.chain.instances("denoise")[1]._rt.overload_events = 3
    assert e.model_overloads == 3


def test_a_channel_s_own_settings_by_address_with_feedback_presets_and_order(tmp_path):
    """/hb/<id>@<n>/<param>: channel n's own value in an engine run per channel. A change to
    /hb/<id>/<param> sets every channel again (and says so to listeners for each channel's
    address); the latest change wins whichever way it came; presets save and load them."""
    import time

    from hushbridge.control.params import CHANNEL_STRIDE
    from hushbridge.effects import Automix, Gate
    from hushbridge.presets import find_preset, save_preset

    e = Engine(Chain([Automix(), Gate(threshold_db=-40.0)]), channels=2, per_channel=True)
    e.prepare(48000, 128)
    heard = []
    e.add_listener(lambda a, v, s: heard.append((a, v)))
    addresses = {info.address for info, _ in e.parameters()}
    assert {"/hb/gate@1/threshold_db", "/hb/gate@2/threshold_db", "/hb/gate@2/range_db"} <= addresses
    # all channels together: only the automixer's weight per microphone
    assert {a for a in addresses if a.startswith("/hb/automix@")} == {"/hb/automix@1/weight_db", "/hb/automix@2/weight_db"}
    x = np.zeros((2, 256), np.float32)
    e.set("/hb/gate@2/threshold_db", -55.0)
    e.set_norm("/hb/gate@1/range_db", 0.0)
    assert heard == [("/hb/gate@2/threshold_db", -55.0), ("/hb/gate@1/range_db", 0.0)]
    run_blocks(e, x)
    one, two = e.chain.instances("gate")
    assert (one.threshold_db, two.threshold_db, one.range_db, two.range_db) == (-40.0, -55.0, 0.0, e.chain["gate"].range_db)
    assert e.get("/hb/gate@2/threshold_db") == -55.0 and e.get("/hb/gate/threshold_db") == -40.0
    assert e.display("/hb/gate@2/threshold_db", -55.0) == "-55.0 dB"
    with pytest.raises(ParamError, match=r"\[-90, 0\]"):
        e.set("/hb/gate@2/threshold_db", 10.0)
    with pytest.raises(ParamError, match="unknown address"):
        e.set("/hb/gate@3/threshold_db", -50.0)  # a stereo stream
    # preset: saved with the channel's values, loaded back with them
    save_preset(e.snapshot(), "mics", folder=tmp_path)
    text = (tmp_path / "mics.toml").read_text()
    assert "channels" in text and "-55.0" in text
    e.load_preset(str(tmp_path / "mics.toml"))
    run_blocks(e, x)
    assert [g.threshold_db for g in e.chain.instances("gate")] == [-40.0, -55.0]
    assert e.get("/hb/gate@2/threshold_db") == -55.0 and e.get("/hb/gate@1/range_db") == 0.0
    assert find_preset(str(tmp_path / "mics.toml")).build().channel_values("gate") == {
        1: {"range_db": 0.0}, 2: {"threshold_db": -55.0}}
    # the effect's own address sets every channel again, and says so for each channel
    heard.clear()
    e.set("/hb/gate/threshold_db", -30.0)
    run_blocks(e, x)
    assert [g.threshold_db for g in e.chain.instances("gate")] == [-30.0, -30.0]
    assert heard == [("/hb/gate/threshold_db", -30.0), ("/hb/gate@1/threshold_db", -30.0),
                     ("/hb/gate@2/threshold_db", -30.0)]
    assert e.get("/hb/gate@2/threshold_db") == -30.0 and e.snapshot().channel_values(1) == {1: {"range_db": 0.0}}
    # the latest change wins: an older change to every channel that comes later (another
    # ring: the OSC receive process) leaves a newer channel value in place, and vice versa
    index = e.info("/hb/gate/threshold_db").index
    gen = e.generation
    now = time.monotonic()
    e._apply(gen, 1, index + 2 * CHANNEL_STRIDE, -60.0, 0.0, now + 1.0)
    e._apply(gen, 1, index, -20.0, 0.0, now + 0.5)
    assert [g.threshold_db for g in e.chain.instances("gate")] == [-20.0, -60.0]
    e._apply(gen, 1, index + 1 * CHANNEL_STRIDE, -70.0, 0.0, now + 0.2)  # older than the change to all
    assert e.chain.instances("gate")[0].threshold_db == -20.0
    e._apply(gen, 1, index + 3 * CHANNEL_STRIDE, -70.0, 0.0, now + 2.0)  # no channel 3: ignored
    assert [g.threshold_db for g in e.chain.instances("gate")] == [-20.0, -60.0]
    # an engine not run per channel has no such addresses
    assert not any("@" in info.address for info, _ in make_engine(Gate()).parameters())


def test_a_timed_change_to_every_channel_keeps_a_later_channel_value_on_both_sides():
    """Review, session 25: the control side counted a timed change as made when it was settled,
    the audio side when it became due; a channel's value set between the two was kept by the
    audio thread but overwritten in get(), feedback and the next preset save."""
    import time

    from hushbridge.effects import Gate

    e = Engine(Chain([Gate(threshold_db=-40.0)]), channels=2, per_channel=True)
    e.prepare(48000, 128)
    x = np.zeros((2, 128), np.float32)
    e.set("/hb/gate/threshold_db", -30.0, stamp=time.time() + 0.05)
    run_blocks(e, x)  # queued on the audio side
    time.sleep(0.08)  # due now, not yet settled on the control side
    e.set("/hb/gate@2/threshold_db", -60.0)
    run_blocks(e, x)
    assert [g.threshold_db for g in e.chain.instances("gate")] == [-30.0, -60.0]
    assert e.get("/hb/gate@2/threshold_db") == -60.0 and e.get("/hb/gate@1/threshold_db") == -30.0
    assert e.snapshot().channel_values(0) == {2: {"threshold_db": -60.0}}
    # one bundle, one time tag: every channel, then channel 2 (QA, session 25: each message took
    # its own order from the clocks, so channel 2's could count as the older one)
    for _ in range(5):
        e.set("/hb/gate/threshold_db", -70.0)
        stamp = time.time() + 0.03
        e.set("/hb/gate/threshold_db", -30.0, stamp=stamp)
        e.set("/hb/gate@2/threshold_db", -80.0, stamp=stamp)
        run_blocks(e, x)
        time.sleep(0.05)
        run_blocks(e, x)
        assert [g.threshold_db for g in e.chain.instances("gate")] == [-30.0, -80.0]
        assert e.get("/hb/gate@2/threshold_db") == -80.0 and e.get("/hb/gate/threshold_db") == -30.0


def test_an_engine_takes_a_per_channel_chain_prepared_for_fewer_channels_and_explains_addresses():
    from hushbridge.effects import Automix, Gate

    chain = Chain([Automix(), Gate()], per_channel=True)
    chain.prepare(__import__("hushbridge.effects", fromlist=["ProcessSpec"]).ProcessSpec(48000, 128, 1))
    e = Engine(chain, channels=2, per_channel=True)  # raised: channel 2 was not in the stream
    e.prepare(48000, 128)
    assert e.get("/hb/gate@2/threshold_db") == chain["gate"].threshold_db
    for address, why in (("/hb/gate@3/threshold_db", "channels are 1 to 2 here"),
                         ("/hb/automix@1/range_db", "works on all channels together"),
                         ("/hb/gate@1/lookahead_ms", "same on every channel")):
        with pytest.raises(ParamError, match=why):
            e.set(address, 1.0)
    with pytest.raises(ParamError, match="need an engine run per channel"):
        make_engine(Gate()).set("/hb/gate@1/threshold_db", -50.0)


def test_automix_weights_per_microphone_by_address_kept_across_a_live_preset_load(tmp_path):
    """/hb/automix@<n>/weight_db in any engine (the automixer works on all channels together:
    it keeps a weight per channel whether or not the chain runs per channel); saved with the
    preset; `run --automix` keeps the weights when a preset is loaded live."""
    from hushbridge.cli import _automix_keeper
    from hushbridge.effects import Automix, Gate
    from hushbridge.presets import find_preset, save_preset

    e = Engine(Chain([Automix(), Gate()]), channels=3)
    e.add_chain_filter(_automix_keeper(e))
    e.prepare(48000, 128)
    assert "/hb/automix@3/weight_db" in e._table and "/hb/gate@1/threshold_db" not in e._table
    e.set("/hb/automix@1/weight_db", 6.0)
    e.set("/hb/automix@3/weight_db", -3.0)
    run_blocks(e, np.zeros((3, 256), np.float32))
    assert list(e.chain["automix"]._weights) == pytest.approx([10 ** 0.6, 1.0, 10 ** -0.3])
    save_preset(e.snapshot(), "weights", folder=tmp_path)
    assert find_preset(str(tmp_path / "weights.toml")).build().channel_values("automix") == {
        1: {"weight_db": 6.0}, 3: {"weight_db": -3.0}}
    e.load_chain(Chain([Gate()]))  # a preset without an automixer: the kept one has the weights
    run_blocks(e, np.zeros((3, 256), np.float32))
    assert e.chain.ids == ["automix", "gate"]
    assert list(e.chain["automix"]._weights) == pytest.approx([10 ** 0.6, 1.0, 10 ** -0.3])
    assert e.get("/hb/automix@1/weight_db") == 6.0 and e.get("/hb/automix@2/weight_db") == 0.0


def test_timed_changes_of_one_time_tag_count_in_the_order_sent_even_interleaved():
    """Review, session 25: only the latest time tag shared its order, so nested bundles (tags S,
    S2, S) gave the third message an order of its own from the clocks: reported wrong in about
    3 of 4 tries while the audio thread applied it."""
    import time

    from hushbridge.effects import Automix, Gain

    e = Engine(Chain([Automix(), Gain()]), channels=2)
    e.prepare(48000, 128)
    x = np.zeros((2, 128), np.float32)
    for _ in range(20):
        e.set("/hb/automix/weight_db", 3.0)
        stamp = time.time() + 0.02
        e.set("/hb/automix/weight_db", 0.0, stamp=stamp)
        e.set("/hb/gain/gain_db", -1.0, stamp=stamp + 0.001)
        e.set("/hb/automix@2/weight_db", 6.0, stamp=stamp)
        run_blocks(e, x)
        time.sleep(0.03)
        run_blocks(e, x)
        assert e.get("/hb/automix@2/weight_db") == 6.0 and e.get("/hb/automix@1/weight_db") == 0.0
        assert list(e.chain["automix"]._weights) == pytest.approx([1.0, 10 ** 0.6])
    assert len(e._timed_orders) <= 2  # forgotten once due


def test_run_names_the_values_per_channel_it_starts_with():
    from hushbridge.cli import _channel_values_line
    from hushbridge.effects import Automix, Gate

    chain = Chain([Automix(), Gate()])
    chain.set_channel("automix", 1, "weight_db", 6.0)
    chain.set_channel("gate", 2, "threshold_db", -55.0)
    chain.set_channel("gate", 3, "threshold_db", -60.0)  # beyond a stereo stream: warned elsewhere
    e = Engine(chain, channels=2, per_channel=True)
    assert _channel_values_line(e) == "automix@1 weight_db=6; gate@2 threshold_db=-55"
    linked = Chain([Automix(), Gate()])
    linked.set_channel("automix", 2, "weight_db", -3.0)
    linked.set_channel("gate", 2, "threshold_db", -55.0)
    assert _channel_values_line(Engine(linked, channels=2)) == "automix@2 weight_db=-3"  # the gate's wait for --per-channel
    assert _channel_values_line(make_engine(Gate())) == ""


def test_a_channel_s_own_bypass_by_address_preset_and_cli_set():
    """/hb/<id>@<n>/bypass in an engine run per channel; saved as `channels = { 2 = { bypass =
    true } }`; the effect's own /hb/<id>/bypass stays the master and does not touch it."""
    import tempfile
    from pathlib import Path

    from hushbridge.effects import Gain
    from hushbridge.presets import find_preset, save_preset

    e = Engine(Chain([Gain(gain_db=-6.0)]), channels=2, per_channel=True)
    e.prepare(48000, 128)
    x = np.full((2, 128 * 20), 0.5, np.float32)
    e.set("/hb/gain@2/bypass", "on")
    y = run_blocks(e, x)
    np.testing.assert_allclose(y[:, -1], [0.5 * 10 ** (-6 / 20), 0.5], rtol=1e-5)
    assert e.get("/hb/gain@2/bypass") == 1.0 and e.display("/hb/gain@2/bypass", 1.0) == "on"
    e.set("/hb/gain/bypass", 1.0)
    e.set("/hb/gain/bypass", 0.0)
    assert e.get("/hb/gain@2/bypass") == 1.0  # the master's toggle left the channel's alone
    folder = Path(tempfile.mkdtemp())
    save_preset(e.snapshot(), "one-off", folder=folder)
    assert "bypass = true" in (folder / "one-off.toml").read_text()
    assert find_preset(str(folder / "one-off.toml")).build().is_channel_bypassed(0, 2)
    e.load_preset(str(folder / "one-off.toml"))
    y = run_blocks(e, x)
    np.testing.assert_allclose(y[:, -1], [0.5 * 10 ** (-6 / 20), 0.5], rtol=1e-5)
    with pytest.raises(ParamError, match="unknown address"):
        make_engine(Gain()).set("/hb/gain@1/bypass", 1.0)  # not run per channel


@pytest.mark.parametrize("how,warned", [("SIGTERM", False), ("SIGINT", False), ("exit 1", True)])
def test_a_background_compile_stopped_by_the_process_group_s_signal_is_not_a_failure(caplog, how, warned):
    """`timeout`, systemd or Ctrl-C signal the whole process group: the compile process ending
    on that signal was logged as "compiling fused runs failed" while `run` stopped cleanly (QA,
    session 30); a compile that really fails still says so."""
    import logging
    import signal
    import subprocess
    import sys

    e = make_engine(Gain())
    code = "import time; time.sleep(30)" if how.startswith("SIG") else "raise SystemExit(1)"
    job = subprocess.Popen([sys.executable, "-c", code])
    if how.startswith("SIG"):
        job.send_signal(getattr(signal, how))
    job.wait(10)
    e._fuse_job = (job, e.chain)
    with caplog.at_level(logging.INFO, logger="hushbridge.engine"):
        e.housekeeping()
    assert e._fuse_job is None
    failed = [r for r in caplog.records if "compiling fused runs failed" in r.getMessage()]
    assert bool(failed) == warned and all(r.levelno == logging.WARNING for r in failed)
