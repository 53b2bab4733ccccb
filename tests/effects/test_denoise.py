"""ModelEffect and denoise: latency, block-size independence, resampling, stereo, reset,
reduction/mix, overload fallback, non-finite input, allocation; the shipped model when present.

Test graphs are small real ONNX graphs built with onnx.helper (tests/onnx_graphs.py): a delay line
whose state is its buffer (known latency ``D``) and a recurrent leaky-integrator gain.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_graphs import contract_graph, reference  # noqa: E402

from hushbridge.effects import EFFECTS, Chain, Denoise, ModelEffect, ProcessSpec, create_effect, render  # noqa: E402
from hushbridge.effects import model as model_mod  # noqa: E402
from hushbridge.effects.model import INPUT_LIMIT  # noqa: E402
from hushbridge.models.runtime import ModelNotFoundError, default_model_path  # noqa: E402

HOP, D = 160, 37  # the 16 kHz test graphs
SHIPPED = default_model_path("denoise.onnx")


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    return {
        "delay": contract_graph(d / "delay.onnx", hop=HOP, delay=D),
        "delay48": contract_graph(d / "delay48.onnx", sample_rate=48000, hop=240, delay=240),
        "leaky": contract_graph(d / "leaky.onnx", hop=HOP, delay=D, leaky=0.9, activity=True),
        "half": contract_graph(d / "half.onnx", hop=HOP, delay=D, gain=0.5),
        "supp": contract_graph(d / "supp.onnx", hop=HOP, delay=D, suppress=True),
        "supp_atten": contract_graph(d / "supp_atten.onnx", hop=HOP, delay=D, suppress=True, atten=True),
        "leaky_b": contract_graph(d / "leaky_b.onnx", hop=HOP, delay=D, leaky=0.9, activity=True, batched=True),
    }


def ME(path, **kw) -> ModelEffect:
    """A ModelEffect for exact-output tests: the overload fallback off, so a busy test machine
    cannot switch it to the dry path (the overload tests turn it on)."""
    kw.setdefault("overload_budget", 0.0)
    return ModelEffect(path, **kw)


def stream(effect, x: np.ndarray, sr: int, block: int) -> np.ndarray:
    """Prepare ``effect`` and run ``x`` (channels, n) through it in blocks of ``block``."""
    x = np.atleast_2d(x).astype(np.float32)
    effect.prepare(ProcessSpec(sr, block, x.shape[0]))
    y = np.empty_like(x)
    buf = np.zeros((x.shape[0], block), np.float32)
    for i in range(0, x.shape[1], block):
        m = min(block, x.shape[1] - i)
        v = buf[:, :m]
        v[...] = x[:, i:i + m]
        effect.process(v)
        y[:, i:i + m] = v
    return y


def impulse(n: int, at: int, channels: int = 1) -> np.ndarray:
    x = np.zeros((channels, n), np.float32)
    x[:, at] = 1.0
    return x


def noise(n: int, channels: int = 1, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((channels, n)) * amp).astype(np.float32)


# == latency ==================================================================================
@pytest.mark.parametrize("block", [1, 64, 128, 1000])
def test_latency_exact_at_model_rate(g, block):
    e = ME(g["delay"], reduction_db=100.0)
    n = 1200 if block == 1 else 4000
    for at in (0, 77, 1003):
        y = stream(e, impulse(n, at), 16000, block)
        assert e.latency_samples == D + HOP - 1 == 196
        assert int(np.argmax(y[0])) == at + e.latency_samples
        assert y[0].max() == 1.0 and np.count_nonzero(y) == 1


def test_latency_exact_for_a_48k_graph_at_48k(g):
    e = ME(g["delay48"], reduction_db=100.0)
    y = stream(e, impulse(3000, 321), 48000, 128)
    assert e.latency_samples == 240 + 239 == 479
    assert int(np.argmax(y[0])) == 321 + 479 and np.count_nonzero(y) == 1


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
@pytest.mark.parametrize("block", [1, 128, 1000])
def test_latency_within_one_sample_when_resampling(g, sr, block):
    e = ME(g["delay"], reduction_db=100.0)
    n = sr // 10 if block == 1 else sr // 2
    for at in (0, 1234):
        if at >= n // 3:
            continue
        y = stream(e, impulse(n, at), sr, block)
        peak = int(np.argmax(np.abs(y[0])))
        assert abs(peak - at - e.latency_samples) <= 1, (sr, block, at, peak - at, e.latency_samples)
        assert abs(e.model_latency_exact - e.latency_samples) <= 0.5
        assert e.ring_underruns == 0


@pytest.mark.parametrize("sr", [16000, 32000, 44100])
def test_round_trip_to_the_model_rate_keeps_the_top_of_the_band(g, sr):
    """Through a 48 kHz identity graph, the wet path at a lower engine rate keeps the band to
    0.45 x the rate within 1 dB, and nothing else comes out above -60 dB (images fold back)."""
    for share, floor_db in ((0.2, -0.3), (0.45, -1.0), (0.49, -6.5)):
        f = share * sr
        x = (0.5 * np.sin(2 * np.pi * f * np.arange(sr // 2) / sr))[None].astype(np.float32)
        y = stream(ME(g["delay48"], reduction_db=100.0), x, sr, 128)[0, sr // 8:]
        tone_db = 20 * np.log10(np.sqrt(2 * np.mean(y ** 2)) / 0.5)
        w = np.hanning(len(y))
        spec = np.abs(np.fft.rfft(y * w)) / (w.sum() / 2) / 0.5
        k = int(round(f * len(y) / sr))
        spec[max(k - 8, 0):k + 9] = 0.0
        assert floor_db < tone_db < 0.1, (sr, share, tone_db)
        assert 20 * np.log10(spec.max() + 1e-12) < -60, (sr, share)


def test_latency_through_chain_and_render(g):
    e = ME(g["delay"], reduction_db=100.0)
    chain = Chain([e])
    chain.prepare(ProcessSpec(16000, 128, 1))
    assert chain.latency_samples == e.latency_samples == 196
    x = noise(8000)
    y = render(Chain([ME(g["delay"], reduction_db=100.0)]), x[0], 16000, block_size=100)
    np.testing.assert_array_equal(y, x[0])  # render trims exactly the reported latency


# == block-size independence ==================================================================
@pytest.mark.parametrize("sr", [16000, 44100])
def test_block_sizes_give_identical_output(g, sr):
    x = noise(sr // 4, channels=2, seed=3)
    x[:, sr // 8:] *= 0.05  # level change, so the recurrent gain moves
    outs = {b: stream(ME(g["leaky"], reduction_db=20.0, mix=0.8), x, sr, b)
            for b in (1, 64, 128, 1000, 4096)}
    for b, y in outs.items():
        np.testing.assert_allclose(y, outs[128], atol=1e-6, err_msg=f"block {b}")
    assert np.abs(outs[128]).max() > 0.01


def test_output_matches_the_graph_at_model_rate(g):
    x = noise(HOP * 40, seed=4)
    e = ME(g["leaky"], reduction_db=100.0)
    y = stream(e, x, 16000, 100)
    ref = reference(x[0], hop=HOP, delay=D, leaky=0.9)
    np.testing.assert_allclose(y[0, HOP - 1:HOP - 1 + len(ref)], ref[:len(y[0]) - HOP + 1], atol=2e-6)
    assert 0.0 < e.activity < 1.0


# == channels, reset ==========================================================================
def test_stereo_channels_are_independent(g):
    x = noise(16000, channels=2, seed=5)
    x[1] *= 0.02
    both = stream(ME(g["leaky"], reduction_db=100.0), x, 44100, 128)
    for c in (0, 1):
        solo = stream(ME(g["leaky"], reduction_db=100.0), x[c:c + 1], 44100, 128)
        np.testing.assert_array_equal(both[c], solo[0])


@pytest.mark.parametrize("sr", [16000, 44100])
@pytest.mark.parametrize("block", [1, 128, 1000])
def test_batched_graph_runs_all_channels_at_once_with_the_same_output(g, sr, block):
    x = noise(sr // 4 if block == 1 else sr, channels=3, seed=21)
    x[1] *= 0.2
    e = ME(g["leaky_b"], reduction_db=100.0)
    calls = [0]
    real = e._infer_all

    def counted():
        calls[0] += 1
        return real()

    e._infer_all = counted
    got = stream(e, x, sr, block)
    assert e.model.info.batched and calls[0] > 0
    want = stream(ME(g["leaky"], reduction_db=100.0), x, sr, block)  # the same graph, channel by channel
    np.testing.assert_allclose(got, want, atol=1e-6)
    hops = -(-x.shape[1] * 16000 // sr) // HOP
    assert abs(calls[0] - hops) <= 2  # one run per hop for all three channels
    assert e.activity == pytest.approx(max(e._act))


def test_batched_graph_nonfinite_output_resets_only_that_channel(g):
    e = ME(g["leaky_b"], reduction_db=100.0)
    e.prepare(ProcessSpec(16000, 160, 2))
    blk = noise(160, channels=2, seed=22)
    for _ in range(5):
        e.process(blk.copy())
    real = e._infer_all

    def poisoned():
        out = real()
        out[1, 3] = np.nan
        return out

    e._infer_all = poisoned
    y = blk.copy()
    e.process(y)
    assert np.isfinite(y).all() and e.nonfinite_events == 1
    assert not any(s.any() for s in e.model.state(1)) and any(s.any() for s in e.model.state(0))


@pytest.mark.parametrize("sr", [16000, 48000])
def test_reset_restarts_from_clean_state(g, sr):
    e = ME(g["leaky"], reduction_db=100.0)
    x = noise(sr // 4, seed=6)
    first = stream(e, x, sr, 128)
    stream_again = np.empty_like(x)
    e.process(noise(128, seed=7))  # some history
    e.reset()
    buf = np.zeros((1, 128), np.float32)
    for i in range(0, x.shape[1], 128):
        m = min(128, x.shape[1] - i)
        buf[:, :m] = x[:, i:i + m]
        e.process(buf[:, :m])
        stream_again[:, i:i + m] = buf[:, :m]
    np.testing.assert_array_equal(stream_again, first)


# == reduction and mix ========================================================================
@pytest.mark.parametrize("name", ["supp", "supp_atten"])
def test_reduction_limits_attenuation(g, name):
    """A model that removes everything comes out at -reduction_db, by mixing (no atten input) or
    through the graph's atten_lim_db input; same delay either way."""
    x = noise(8000, seed=8)
    for red in (0.0, 20.0, 40.0):
        e = ME(g[name], reduction_db=red)
        y = stream(e, x, 16000, 128)
        L = e.latency_samples
        np.testing.assert_allclose(y[0, L:], x[0, :-L] * 10 ** (-red / 20), rtol=1e-4, atol=1e-7)
    e = ME(g["supp"], reduction_db=100.0)
    assert np.abs(stream(e, x, 16000, 128)).max() == 0.0


@pytest.mark.parametrize("sr", [16000, 44100])
def test_mix_zero_is_the_latency_matched_input(g, sr):
    x = noise(sr // 4, seed=9)
    e = ME(g["half"], mix=0.0)
    y = stream(e, x, sr, 128)
    L = e.latency_samples
    np.testing.assert_array_equal(y[0, L:], x[0, :-L])
    e = ME(g["half"], mix=0.5, reduction_db=100.0)
    y = stream(e, x, 16000, 128)
    np.testing.assert_allclose(y[0, 2000:], 0.75 * x[0, 2000 - e.latency_samples:-e.latency_samples], atol=1e-6)


def test_params_are_declared_and_checked(g):
    from hushbridge.errors import ParamError

    e = ME(g["delay"])
    assert [p.id for p in e.params] == ["reduction_db", "mix"]
    assert e.reduction_db == 40.0 and e.mix == 1.0
    with pytest.raises(ParamError, match=r"reduction_db must be in \[0, 100\] dB"):
        e.reduction_db = 120
    with pytest.raises(ValueError, match="resample_quality"):
        ME(g["delay"], resample_quality="best")
    assert "model='testgraph'" in repr(e)


# == robustness ===============================================================================
def test_nonfinite_input_gives_finite_output_and_resets_state(g):
    e = ME(g["leaky"], reduction_db=100.0)
    x = noise(HOP * 20, seed=10)
    stream(e, x, 16000, 64)
    assert any(np.any(a != 0) for a in e.model.state(0))
    bad = np.full((1, 10), np.nan, np.float32)
    bad[0, 3] = np.inf
    e.process(bad)
    assert np.isfinite(bad).all()
    assert e.nonfinite_events == 1
    assert all(np.all(a == 0) for a in e.model.state(0))  # reset, and no hop completed since
    blk = x[:, :64].copy()
    e.process(blk)
    assert np.isfinite(blk).all()


def test_nonfinite_model_output_is_silenced_and_state_reset(g):
    e = ME(g["leaky"], reduction_db=100.0)
    e.prepare(ProcessSpec(16000, 160, 1))
    real = e._infer

    def broken(c):
        out = real(c)
        out[0, 5] = np.nan
        e.model.state(c)[1][0, 0] = np.inf
        return out

    e._infer = broken
    blk = noise(160, seed=11)
    for _ in range(3):
        e.process(blk)
        assert np.isfinite(blk).all()
    assert e.nonfinite_events == 3
    assert e.model.state_finite(0)


@pytest.mark.parametrize("sr", [16000, 48000])
def test_process_does_not_grow_memory(g, sr):
    e = ME(g["leaky"], reduction_db=20.0, mix=0.9)
    e.prepare(ProcessSpec(sr, 128, 2))
    blk = noise(128, channels=2, seed=12)
    work = blk.copy()
    for _ in range(200):
        work[...] = blk
        e.process(work)
    tracemalloc.start()
    try:
        s0 = tracemalloc.take_snapshot()
        for _ in range(3000):
            work[...] = blk
            e.process(work)
        s1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(st.size_diff for st in s1.compare_to(s0, "filename"))
    assert growth < 8192, growth


# == overload fallback ========================================================================
def run_realtime_ish(e, x, block, slow):
    """Stream ``x`` through ``e`` (prepared) with inference made slow while ``slow(frame)`` is true."""
    real = e._infer
    pos = [0]

    def infer(c):
        if slow(pos[0]):
            time.sleep(e._budget * 1.6)
        return real(c)

    e._infer = infer
    y = np.empty_like(x)
    buf = np.zeros((x.shape[0], block), np.float32)
    states = []
    for i in range(0, x.shape[1], block):
        pos[0] = i
        v = buf[:, :block]
        v[...] = x[:, i:i + block]
        e.process(v)
        y[:, i:i + block] = v
        states.append((i, e.overloaded))
    return y, states


def test_overload_crossfades_to_dry_with_the_same_delay_and_recovers(g):
    sr, block = 16000, 160
    n = sr * 4
    t = np.arange(n) / sr
    x = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
    e = ME(g["half"], reduction_db=100.0, overload_budget=0.5)  # wet = 0.5 x delayed, dry = x delayed
    e.prepare(ProcessSpec(sr, block, 1))
    L = e.latency_samples
    slow_from, slow_to = sr // 2, sr  # inference is slow for 0.5 s
    y, states = run_realtime_ish(e, x, block, lambda i: slow_from <= i < slow_to)
    assert e.overload_events == 1 and e.recoveries == 1 and not e.overloaded
    assert e.ring_underruns == 0
    ov = [i for i, o in states if o]
    assert ov[0] >= slow_from and ov[0] < slow_from + 8 * HOP  # detected within a few hops
    dry = np.zeros_like(x)
    dry[:, L:] = x[:, :-L]
    # before: wet; while overloaded (after the 20 ms fade): exactly the dry path, same delay
    np.testing.assert_allclose(y[0, L + 1000:slow_from], 0.5 * dry[0, L + 1000:slow_from], atol=1e-6)
    a, b = ov[0] + int(0.03 * sr), ov[-1]
    np.testing.assert_array_equal(y[0, a:b], dry[0, a:b])
    # after recovery: wet again
    np.testing.assert_allclose(y[0, -sr // 2:], 0.5 * dry[0, -sr // 2:], atol=1e-6)
    # continuous: no step larger than the sine's own slope plus the fade's
    step = np.abs(np.diff(y[0])).max()
    assert step <= np.abs(np.diff(x[0])).max() + 0.5 * 0.5 / (0.02 * sr) + 1e-6


def test_overload_probe_stays_on_dry_while_still_slow(g):
    sr, block = 16000, 320
    x = noise(sr * 3, seed=13)
    e = ME(g["half"], reduction_db=100.0, overload_budget=0.5)
    e.prepare(ProcessSpec(sr, block, 1))
    y, states = run_realtime_ish(e, x, block, lambda i: True)
    assert e.overloaded and e.overload_events == 1 and e.recoveries == 0
    L = e.latency_samples
    np.testing.assert_array_equal(y[0, sr:], x[0, sr - L:-L])  # never left the dry path


def test_the_engine_reports_a_model_on_its_dry_fallback(g):
    """What is heard, the model's output or its dry fallback, must be visible to the user: the
    engine's model_dry / model_overloads stats (/hb/get /hb/engine/...), the status line and the
    pushed /hb/meter/model."""
    from hushbridge.control.meters import MeterError, MeterHub
    from hushbridge.engine import Engine

    e = ME(g["half"], reduction_db=100.0, overload_budget=0.5)
    engine = Engine(Chain([e, create_effect("gain")], ids=["nr", "gain"]), channels=1)
    engine.prepare(16000, 320)
    hub = MeterHub(engine)
    hub.subscribe(("127.0.0.1", 9999), "/hb/meter/model", 10.0)
    t = time.monotonic()
    assert engine.get("/hb/engine/model_dry") == 0.0 and "model on" in engine.status_line()
    assert [(a, args) for a, args, _ in hub.poll(t)] == [("/hb/meter/model", (0, 0, "nr", 0))]
    run_realtime_ish(e, noise(16000 * 3, seed=13), 320, lambda i: True)
    assert engine.get("/hb/engine/model_dry") == 1.0 and engine.get("/hb/engine/model_overloads") == 1.0
    assert "model DRY (overloaded), 1 overloads" in engine.status_line()
    assert [(a, args) for a, args, _ in hub.poll(t + 1.0)] == [("/hb/meter/model", (1, 1, "nr", 1))]
    bare = Engine(Chain([]), channels=1)
    assert "model" not in bare.status_line()
    with pytest.raises(MeterError, match="needs a model effect"):
        MeterHub(bare).check_available("model")


def test_overload_budget_zero_disables_the_fallback(g):
    e = ME(g["half"], reduction_db=100.0, overload_budget=0.0)
    e.prepare(ProcessSpec(16000, 160, 1))
    y, _ = run_realtime_ish(e, noise(16000 // 4, seed=14), 160, lambda i: True)
    assert not e.overloaded and e.overload_events == 0


def test_offline_rendering_never_falls_back_to_dry(g):
    e = ME(g["half"], reduction_db=100.0, overload_budget=0.5)
    e.set_non_realtime(True)  # what OfflineRenderer and the FileBackend do
    e.prepare(ProcessSpec(16000, 160, 1))
    run_realtime_ish(e, noise(16000, seed=15), 160, lambda i: True)  # every hop "too slow"
    assert not e.overloaded and e.overload_events == 0
    chain = Chain([ME(g["half"], reduction_db=100.0, overload_budget=0.5)])
    chain(noise(1600, seed=16), 16000)
    assert chain[0].non_realtime


# == the denoise effect =======================================================================
def test_denoise_is_registered():
    assert EFFECTS["denoise"] is Denoise and issubclass(Denoise, ModelEffect)


@pytest.mark.skipif(SHIPPED.is_file(), reason="the shipped model exists")
def test_denoise_without_shipped_model_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match=r"denoise: the shipped model denoise.onnx is not installed"):
        Denoise()
    with pytest.raises(FileNotFoundError):
        create_effect("denoise")


def test_denoise_runs_any_contract_graph(g):
    e = Denoise(model_path=g["leaky"], reduction_db=12.0)
    y = stream(e, noise(4800, channels=2), 48000, 128)
    assert np.isfinite(y).all() and e.name == "denoise"


@pytest.mark.parametrize("sr", [22050, 32000, 44100, 88200, 96000])
def test_latency_exact_at_any_rate_with_our_resampler(g, sr):
    """The RT resampler adds the fraction that makes the round trip a whole number of samples: an
    impulse comes out as a symmetric band-limited pulse centred exactly on ``latency_samples``."""
    e = ME(g["delay"], reduction_db=100.0)
    at = 1000
    y = stream(e, impulse(sr // 2, at), sr, 128)[0].astype(np.float64)
    k = int(np.argmax(np.abs(y)))
    assert k == at + e.latency_samples
    a, b, c = y[k - 1:k + 2]
    assert abs(0.5 * (a - c) / (a - 2 * b + c)) < 0.02  # the peak sits on the sample, not between
    assert e.model_latency_exact == pytest.approx(e.latency_samples, abs=0.02)


@pytest.mark.parametrize("sr", [44100, 32000])
def test_own_resampler_is_the_default_and_keeps_latency_near_10_ms(g, sr):
    rt = ME(g["delay48"], reduction_db=100.0)
    lq = ME(g["delay48"], reduction_db=100.0, resample_quality="LQ")
    assert rt.resample_quality == "RT"
    for e in (rt, lq):
        e.prepare(ProcessSpec(sr, 128, 1))
    # 479 samples at 48 kHz plus the resampler's lookahead and a hop FIFO at the engine rate
    assert rt.latency_samples / sr < 0.012 < lq.latency_samples / sr
    y = stream(rt, impulse(sr // 2, 1000), sr, 128)
    assert abs(int(np.argmax(np.abs(y[0]))) - 1000 - rt.latency_samples) <= 1


def test_resample_plan_is_cached(g):
    model_mod.resample_plan(44100, 16000, HOP, "LQ")
    t0 = time.perf_counter()
    model_mod.resample_plan(44100, 16000, HOP, "LQ")
    assert time.perf_counter() - t0 < 0.01


# == the shipped model (models/denoise.onnx, when the training side has shipped it) ============
shipped = pytest.mark.skipif(not SHIPPED.is_file(), reason="models/denoise.onnx is not shipped yet")


@shipped
def test_shipped_model_latency_within_10_ms_at_48k():
    e = Denoise(overload_budget=0.0)
    e.prepare(ProcessSpec(48000, 128, 2))
    assert e.latency_samples <= 480
    assert e.latency_samples == e.model.latency_samples + e.model.hop - 1


@shipped
@pytest.mark.parametrize("block", [128, 1000])
def test_shipped_model_impulse_and_speech_onset_come_out_latency_samples_later(block):
    from helpers import find_delay, shared_data_dir

    # a trained model rightly treats a lone click as noise, so the impulse goes through the
    # shipped graph with a 0.001 dB attenuation limit: analysis, synthesis and overlap-add only
    # (exactly 0 dB takes the dry path, which would prove nothing about the model's delay)
    e = Denoise(reduction_db=1e-3, overload_budget=0.0)
    x = np.zeros((1, 9600), np.float32)
    x[0, 3000] = 0.5
    y = stream(e, x, 48000, block)
    assert int(np.argmax(np.abs(y[0]))) == 3000 + e.latency_samples
    np.testing.assert_allclose(y[0, 3000 + e.latency_samples], 0.5, rtol=1e-3)
    data = shared_data_dir()
    if data is None or not (data / "speech" / "vctk_p301_102.wav").is_file():
        pytest.skip("held-out speech file not found in ../shared/data")
    import soundfile as sf
    import soxr

    s, sr = sf.read(str(data / "speech" / "vctk_p301_102.wav"), dtype="float32")
    s = soxr.resample(s, sr, 48000).astype(np.float32)[:96000]
    onset = 14400
    x = np.concatenate([np.zeros(onset, np.float32), s])[None]
    y = stream(Denoise(reduction_db=100.0, overload_budget=0.0), x, 48000, block)
    assert find_delay(x[0, onset:onset + 48000], y[0, onset:], 1500) == e.latency_samples


@shipped
def test_shipped_model_speech_comes_out_latency_samples_later_at_44k1():
    from helpers import shared_data_dir

    data = shared_data_dir()
    if data is None or not (data / "speech" / "vctk_p301_102.wav").is_file():
        pytest.skip("held-out speech file not found in ../shared/data")
    import soundfile as sf
    import soxr

    sr = 44100
    # exact: an impulse through the shipped graph and both resamplers, 0.001 dB attenuation limit
    e = Denoise(reduction_db=1e-3, overload_budget=0.0)
    imp = np.zeros((1, 8820), np.float32)
    imp[0, 2000] = 0.5
    yi = stream(e, imp, sr, 128)[0]
    assert int(np.argmax(np.abs(yi))) == 2000 + e.latency_samples
    assert e.latency_samples / sr < 0.0115  # our resampler: 11.4 ms (soxr LQ: 20.8 ms)
    # speech through the trained model: the deep filter (3 taps over 5 ms frames) and the
    # post-filter reshape the spectrum and the low band's phase, and speech's cross-correlation is
    # low-frequency heavy and broad, so its argmax is no sample-exact probe (step 26974 put it 83
    # samples late at 44.1 kHz, step 28067 9 samples, at 94.5 % of the peak at the reported delay):
    # the reported delay must sit on the main lobe, within 10 % of its top and 2 ms of its argmax
    s, r0 = sf.read(str(data / "speech" / "vctk_p301_102.wav"), dtype="float32")
    s = soxr.resample(s, r0, sr).astype(np.float32)[:2 * sr]
    onset = 13230
    x = np.concatenate([np.zeros(onset, np.float32), s])[None]
    y = stream(Denoise(reduction_db=100.0, overload_budget=0.0), x, sr, 128)[0].astype(np.float64)
    a = x[0, onset:onset + sr].astype(np.float64)
    c = np.array([np.dot(a, y[onset + lag:onset + lag + a.size]) for lag in range(1500)])
    assert c[e.latency_samples] >= 0.9 * c.max()
    assert abs(int(np.argmax(c)) - e.latency_samples) <= 0.002 * sr


@shipped
@pytest.mark.parametrize("sr", [44100, 48000])
def test_reduction_0_db_is_the_input_delayed_at_any_rate(sr):
    # at 44.1 kHz the wet path is a resampling round trip that keeps 0.4x the rate: 0 dB must not
    # go through it
    x = noise(int(0.5 * sr), channels=2, seed=21, amp=0.3)
    e = Denoise(reduction_db=0.0, overload_budget=0.0)
    y = stream(e, x, sr, 128)
    d = e.latency_samples
    np.testing.assert_array_equal(y[:, d:], x[:, :-d])
    assert not np.any(y[:, :d])
    # the same at a limit just above 0 runs the model's path: not bit-exact (the check can fail)
    y2 = stream(Denoise(reduction_db=1e-3, overload_budget=0.0), x, sr, 128)
    assert np.max(np.abs(y2[:, d:] - x[:, :-d])) > 1e-4
    # a fader pulled to 0 during playback fades to the dry path without a jump
    e = Denoise(reduction_db=12.0, overload_budget=0.0)
    e.prepare(ProcessSpec(sr, 128, 2))
    out = []
    for i in range(0, x.shape[1] - 127, 128):
        if i == 128 * 40:
            e.set("reduction_db", 0.0)
        b = x[:, i:i + 128].copy()
        e.process(b)
        out.append(b)
    y3 = np.concatenate(out, axis=1)
    tail = y3[:, -2048:]
    np.testing.assert_array_equal(tail, x[:, y3.shape[1] - 2048 - d:y3.shape[1] - d])


@shipped
def test_shipped_model_block_sizes_identical_and_stereo():
    x = noise(24000, channels=2, seed=20, amp=0.1)
    outs = {b: stream(Denoise(overload_budget=0.0), x, 48000, b) for b in (1, 64, 128, 1000)}
    for b, y in outs.items():
        np.testing.assert_allclose(y, outs[128], atol=1e-6, err_msg=f"block {b}")
    assert np.isfinite(outs[128]).all()


@shipped
def test_shipped_model_state_decays_to_zero_not_subnormal():
    # the post-filter's held band gains fall by the release factor every hop of silence: they must
    # end at exactly zero, never as subnormal numbers (slow on x86, and never decaying further)
    from hushbridge.models.runtime import StreamingModel

    m = StreamingModel(SHIPPED)
    m.prepare(1)
    x = np.concatenate([noise(48000 * 2, seed=21, amp=0.1)[0], np.zeros(48000 * 12, np.float32)])
    hop = m.hop
    for k in range(x.size // hop):
        m.audio_in[0] = x[k * hop:(k + 1) * hop]
        m.run_hop(0)
    tiny = np.finfo(np.float32).tiny
    for i, arr in enumerate(m.state(0)):
        assert not np.any((arr != 0.0) & (np.abs(arr) < tiny)), f"subnormal values in state_{i}"


@shipped
def test_bare_effect_refuses_long_and_integer_blocks():
    # its kernels fill buffers of max_block_size frames: a longer block corrupted memory
    e = Denoise(overload_budget=0.0)
    e.prepare(ProcessSpec(48000, 128, 1))
    with pytest.raises(ValueError, match="exceeds the prepared max_block_size 128"):
        e.process(np.zeros((1, 4096), np.float32))
    with pytest.raises(TypeError, match="takes a float32 block, got int16"):
        e.process(np.zeros((1, 128), np.int16))
    x = np.zeros((1, 128), np.float32)
    e.process(x)  # and it still runs
    assert np.isfinite(x).all()


@shipped
@pytest.mark.parametrize("link", ["none", "stereo"])
def test_nan_in_one_channel_leaves_the_others_alone(link):
    x = noise(48000, channels=2, seed=22, amp=0.1)
    ref = stream(Denoise(overload_budget=0.0, link=link), x, 48000, 256)
    bad = x.copy()
    bad[1, 30000] = np.nan
    e = Denoise(overload_budget=0.0, link=link)
    y = stream(e, bad, 48000, 256)
    assert np.isfinite(y).all() and e.nonfinite_events >= 1
    if link == "none":
        np.testing.assert_array_equal(y[0], ref[0])  # the clean channel, bit for bit
    else:  # linked, the network heard one silenced sample in the pair's mid (a click for a few
        # hops) and played on: no restart of the pair (its level memory would take seconds)
        np.testing.assert_array_equal(y[:, :30000], ref[:, :30000])
        err = y[0, 31000:] - ref[0, 31000:]
        assert 10 * np.log10(np.mean(err ** 2) / np.mean(ref[0, 31000:] ** 2)) < -40.0


def _centred_voice(seconds: float = 6.0, seed: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """The bundled demo (a noisy voice, mono) in the middle of a stereo image, with noise of its
    own on each side, on the left in bursts (a fan switching on and off near that microphone):
    (the pair, the demo)."""
    import soundfile as sf
    from importlib.resources import files

    voice, sr = sf.read(str(files("hushbridge.data") / "demo.flac"), dtype="float32")
    voice = voice[: int(seconds * sr)]
    t = np.arange(voice.size) / sr
    rng = np.random.default_rng(seed)
    side = 0.01 * rng.standard_normal((2, voice.size))
    side[0] *= 1 + 3 * (np.sin(2 * np.pi * 0.5 * t) > 0.5)
    return (voice + side).astype(np.float32), voice


@shipped
def test_a_stereo_pair_is_linked_by_default_and_keeps_its_image():
    """Linked, the network hears the pair's mid and treats both sides alike: a centred voice with
    noise of its own on each side stays in the middle (per channel, each side's noise moved its
    own gains and the voice wandered between the speakers); identical sides stay the mono output."""
    x, voice = _centred_voice()
    linked = Denoise(overload_budget=0.0)
    y = stream(linked, x, 48000, 128)
    apart = Denoise(overload_budget=0.0, link="none")
    z = stream(apart, x, 48000, 128)
    assert linked.linked and not apart.linked

    def image_spread(out):  # the level difference between the sides over 20 ms frames of voice, dB
        d = linked.latency_samples
        frames = out[:, d:d + (x.shape[1] - d) // 960 * 960].reshape(2, -1, 960)
        v = (voice[: frames.shape[1] * 960].reshape(-1, 960) ** 2).mean(1)
        on = v > v.max() * 10 ** -2.5
        lv = 10 * np.log10((frames ** 2).mean(2) + 1e-12)
        return float(np.std(lv[0, on] - lv[1, on]))

    # measured: 0.37 dB linked against 1.9 dB per channel
    assert image_spread(y) < 0.5 * image_spread(z), (image_spread(y), image_spread(z))
    same = np.stack([x[0], x[0]])
    mono = stream(Denoise(overload_budget=0.0), x[:1], 48000, 128)
    np.testing.assert_allclose(stream(Denoise(overload_budget=0.0), same, 48000, 128), np.vstack([mono, mono]),
                               atol=1e-6)


@shipped
def test_link_modes_and_what_they_link():
    x = noise(9600, channels=3, seed=31, amp=0.05)
    for link, channels, want in (("stereo", 2, True), ("stereo", 3, False), ("all", 3, True),
                                 ("none", 2, False), ("all", 1, False)):
        e = Denoise(overload_budget=0.0, link=link)
        y = stream(e, x[:channels], 48000, 128)
        assert e.linked is want and np.isfinite(y).all(), (link, channels)
    with pytest.raises(ValueError, match="link must be one of"):
        Denoise(link="left")
    import copy
    import pickle
    e = Denoise(link="none", reduction_db=20.0)
    for twin in (copy.deepcopy(e), pickle.loads(pickle.dumps(e))):
        assert twin.link == "none" and twin.get("reduction_db") == 20.0
    # a per-channel chain gives every channel its own instance: nothing to link
    chain = Chain([Denoise(overload_budget=0.0)], per_channel=True)
    chain.prepare(ProcessSpec(48000, 128, 2))
    blk = x[:2, :128].copy()
    chain.process(blk)
    assert np.isfinite(blk).all()


def test_a_graph_without_groups_runs_per_channel_whatever_link_says(g):
    for graph in ("leaky_b", "leaky"):  # batched, and one call per channel
        e = ME(g[graph])
        y = stream(e, noise(3200, channels=2, seed=32), 16000, 160)
        assert not e.linked and np.isfinite(y).all()


def test_after_silence_the_take_comes_out_as_an_offline_render_of_it():
    """A live engine idles on digital silence before the take; offline the take starts at its
    first sample. With the shipped model at 48 kHz the two give the same samples (the recurrent
    state never settles in silence and the hop grid fell anywhere on the take: ~25 dB SNR apart
    before). Short silences inside the signal change nothing."""
    rng = np.random.default_rng(7)
    sr = 48000
    t = np.arange(2 * sr) / sr
    take = (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
            + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    fresh = stream(Denoise(), take, sr, 128)
    lead = 3 * sr + 77
    idle = stream(Denoise(), np.concatenate([np.zeros(lead, np.float32), take]), sr, 128)
    np.testing.assert_array_equal(idle[:, lead:], fresh)
    assert np.abs(idle[:, :lead]).max() == 0.0
    # a gate's closed level or an idle interface's floor (-90 dBFS) is silence too: a model that
    # settled on it let the noise of the next phrase through for over a second
    floor = (rng.standard_normal(lead) * 10 ** (-90 / 20)).astype(np.float32)
    after_floor = stream(Denoise(), np.concatenate([floor, take]), sr, 128)
    start = lead + int(np.argmax(np.abs(take) > 10 ** (-70 / 20)))  # the take's first sample above it
    np.testing.assert_array_equal(after_floor[:, start:], fresh[:, start - lead:])
    assert np.abs(after_floor[:, lead:start]).max() < 1e-5  # the floor's own tail, before the reset
    gap = take.copy()
    gap[sr:sr + sr // 10] = 0.0  # 100 ms of digital silence: not a new take
    with_gap = stream(Denoise(), gap, sr, 128)
    np.testing.assert_array_equal(with_gap[:, :sr], fresh[:, :sr])
    assert not np.array_equal(with_gap[:, sr + sr // 10 + 2000:], stream(Denoise(), gap[sr + sr // 10:], sr, 128)[:, 2000:])


@pytest.mark.parametrize("pause", [24000, 26000, 28000])
def test_a_pause_restarts_the_model_whatever_the_block_size(pause):
    """A pause of 0.5 s or more restarts the model at the next sound, whichever block holds it:
    the silent frames before the sound in that block count (they did not: with 4096-frame blocks,
    the offline default, a 0.54 s pause was no pause, with 128-frame blocks it was; QA, session 23).
    Blocks longer than the pause (offline, up to 65536 frames) hold a whole pause, and count too."""
    rng = np.random.default_rng(3)
    sr = 48000
    t = np.arange(sr) / sr
    take = (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
            + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    x = np.concatenate([take, np.zeros(pause, np.float32), take])
    alone = stream(Denoise(), take, sr, 128)
    for block in (128, 4096, 30000):
        y = stream(Denoise(), x, sr, block)
        np.testing.assert_array_equal(y[:, take.size + pause:], alone, err_msg=f"block {block}")


# == session 19: smoothing, offline after a fallback, over-range input, dry path through a rearm ==
def test_reduction_changes_through_the_graph_input_are_smoothed(g):
    """``reduction_db`` reaches an ``atten_lim_db`` input over its 50 ms, one step per hop: it
    jumped within one hop (34 dB in about 4 ms with the shipped model)."""
    sr, block = 16000, 160
    n = sr
    t = np.arange(n) / sr
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None]
    e = ME(g["supp_atten"], reduction_db=6.0)  # output = input x 10^(-atten_lim_db / 20)
    e.prepare(ProcessSpec(sr, block, 1))
    y = np.empty_like(x)
    for i in range(0, n, block):
        if i == n // 2:
            e.set("reduction_db", 40.0)
        v = x[:, i:i + block].copy()
        e.process(v)
        y[:, i:i + block] = v
    L = e.latency_samples
    xd, yd = x[0, :-L], y[0, L:]
    at = np.nonzero(np.abs(xd) > 0.2)[0]
    gain_db = 20 * np.log10(np.abs(yd[at]) / np.abs(xd[at]))
    np.testing.assert_allclose(gain_db[at < n // 2 - 2 * block], -6.0, atol=0.01)
    np.testing.assert_allclose(gain_db[at > n // 2 + int(0.08 * sr)], -40.0, atol=0.01)
    moving = at[(gain_db < -6.5) & (gain_db > -39.5)]
    assert moving.size and moving.max() - moving.min() >= int(0.03 * sr)  # tens of ms, not a hop
    levels = np.unique(np.round(gain_db[(gain_db < -6.5) & (gain_db > -39.5)], 1))
    assert levels.size >= 3 and np.all(np.diff(levels) < 12.0)  # steps, none of them the whole jump
    # a reset or a new prepare starts at the value set, with no ramp
    e.set("reduction_db", 20.0)
    e.reset()
    v = x[:, :block].copy()
    e.process(v)
    assert float(e.model.atten_lim_db[0]) == 20.0


def test_an_effect_that_fell_back_live_renders_on_the_model_offline(g):
    """An instance that fell back to dry while live, then used offline (hushbridge process,
    render, the FileBackend): it stayed on the dry path for good, a probe that never finished."""
    sr, block = 16000, 320
    live = ME(g["half"], reduction_db=100.0, overload_budget=0.5)
    live.prepare(ProcessSpec(sr, block, 1))
    run_realtime_ish(live, noise(2 * sr, seed=13), block, lambda i: True)
    assert live.overloaded
    x = noise(sr, seed=17)
    ref = stream(ME(g["half"], reduction_db=100.0), x, sr, block)
    live.set_non_realtime(True)
    np.testing.assert_array_equal(stream(live, x, sr, block), ref)  # prepare starts on the model
    assert not live.overloaded

    again = ME(g["half"], reduction_db=100.0, overload_budget=0.5)
    again.prepare(ProcessSpec(sr, block, 1))
    run_realtime_ish(again, noise(2 * sr, seed=13), block, lambda i: True)
    assert again.overloaded
    again.set_non_realtime(True)  # no new prepare: back on the model after its fade
    y = np.empty_like(x)
    for i in range(0, x.shape[1], block):
        v = x[:, i:i + block].copy()
        again.process(v)
        y[:, i:i + block] = v
    L = again.latency_samples
    assert not again.overloaded and again.recoveries == 1
    np.testing.assert_allclose(y[0, sr // 2:], 0.5 * x[0, sr // 2 - L:-L], atol=1e-6)


def test_the_model_input_is_clamped_and_the_dry_path_is_not(g):
    x = noise(8000, seed=23, amp=0.1)
    x[0, 3000:3064] = 1e4
    e = ME(g["half"], reduction_db=100.0)  # wet = 0.5 x the model's input, delayed
    y = stream(e, x, 16000, 128)
    L = e.latency_samples
    np.testing.assert_allclose(y[0, 3000 + L:3064 + L], 0.5 * INPUT_LIMIT)
    np.testing.assert_allclose(y[0, 4000 + L:], 0.5 * x[0, 4000:-L], atol=1e-7)
    assert e.overrange_hops >= 1
    dry = ME(g["half"], mix=0.0)
    np.testing.assert_array_equal(stream(dry, x, 16000, 128)[0, L:], x[0, :-L])


@shipped
def test_shipped_model_speech_after_a_burst_far_over_full_scale_is_not_turned_down():
    """1.3 ms at +80 dBFS pushed the model's running level means so high that the speech after it
    came out 10-24 dB low for 5-8 s."""
    from pathlib import Path

    import soundfile as sf

    import hushbridge

    s, sr = sf.read(str(Path(hushbridge.__file__).parent / "data" / "demo.flac"), dtype="float32",
                    frames=6 * 48000)
    assert sr == 48000
    x = s[None].copy()
    ref = stream(Denoise(overload_budget=0.0), x, sr, 256)
    x[0, sr:sr + 64] = 1e4
    e = Denoise(overload_budget=0.0)
    y = stream(e, x, sr, 256)
    for k in range(2, 6):  # every second after the burst: the same level as without it
        seg = slice(k * sr, (k + 1) * sr)
        diff_db = 10 * np.log10(np.mean(y[0, seg] ** 2) / np.mean(ref[0, seg] ** 2))
        assert abs(diff_db) < 1.0, (k, diff_db)
    assert e.overrange_hops >= 1


def test_mix_zero_stays_the_input_through_a_restart_after_silence(g):
    """At the model's rate the first signal after 0.5 s of silence restarts the model path; the
    dry path must play on (it lost the last latency_samples of the quiet tail to zeros)."""
    sr = 48000
    rng = np.random.default_rng(24)
    quiet = (rng.uniform(-1, 1, sr) * 10 ** (-72 / 20)).astype(np.float32)  # under -70 dBFS
    x = np.concatenate([quiet, (0.3 * rng.standard_normal(sr // 2)).astype(np.float32)])[None]
    for kw in ({"mix": 0.0}, {"reduction_db": 0.0}):
        e = ME(g["delay48"], **kw)
        y = stream(e, x, sr, 128)
        L = e.latency_samples
        np.testing.assert_array_equal(y[0, L:], x[0, :-L], err_msg=str(kw))


@shipped
@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="needs espeak-ng")
def test_shipped_model_leaves_clean_speech_no_louder_than_it_came_in():
    """The deep filter raised clean speech under 4.7 kHz by 0.4-1.1 dB (peaks over full scale
    on material normalized to 0 dBFS); the post-filter's ceiling keeps every band at or under
    unity gain."""
    import io
    import subprocess

    import soundfile as sf
    import soxr
    from scipy.signal import stft

    from helpers import shared_data_dir

    clips = []
    for voice in ("en-us", "en-gb+f3"):
        wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", "Speech that is already clean should "
                              "come out of the denoiser no louder than it went in, in every band."],
                             capture_output=True, check=True).stdout
        s, sr = sf.read(io.BytesIO(wav), dtype="float32")
        clips.append(soxr.resample(s, sr, 48000).astype(np.float32))
    data = shared_data_dir()
    if data is not None and (data / "speech" / "vctk_p301_102.wav").is_file():  # held out, full band
        clips.append(sf.read(str(data / "speech" / "vctk_p301_102.wav"), dtype="float32")[0])
    edges = (0, 250, 500, 1000, 2000, 4000, 8000)
    for s in clips:
        x = (0.99 * s / np.abs(s).max())[None]
        e = Denoise(overload_budget=0.0)
        y = stream(e, np.concatenate([x, np.zeros((1, 1000), np.float32)], axis=1), 48000, 128)
        y = y[:, e.latency_samples:][:, :x.shape[1]]
        f, _, X = stft(x[0], 48000, nperseg=1024)
        _, _, Y = stft(y[0], 48000, nperseg=1024)
        for lo, hi in zip(edges[:-1], edges[1:]):
            band = (f >= lo) & (f < hi)
            ratio_db = 10 * np.log10((np.abs(Y[band]) ** 2).sum() / (np.abs(X[band]) ** 2).sum())
            assert ratio_db < 0.1, (lo, hi, ratio_db)
        assert 20 * np.log10(np.abs(y).max()) < 0.3  # no peak far over full scale
