"""Training-side pieces that decide what the shipped weights learn: the lr schedule with warm
restarts, the band-gain loss, the factored DFT of the streaming export.

Needs the ``[train]`` extra (torch); skipped cleanly where torch is absent (CI installs only [dev]).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hushbridge.models.train import model as md  # noqa: E402
from hushbridge.models.train.train import Loss, batch_size_at, cpu_state, lr_at  # noqa: E402

pytestmark = pytest.mark.train


def test_lr_warm_restart_leaves_earlier_steps_alone():
    base = {"lr": 1e-3, "lr_min": 1e-4, "warmup_steps": 50, "lr_halflife_steps": 600}
    restarted = dict(base, restarts=[[2500, 5e-4, 1500.0]])
    for step in (0, 49, 50, 700, 2499):
        assert lr_at(step, restarted) == lr_at(step, base)
    assert lr_at(2499, restarted) == pytest.approx(1e-4)
    assert lr_at(2500, restarted) == pytest.approx(5e-4)
    assert lr_at(4000, restarted) == pytest.approx(2.5e-4)  # one halflife of the restart
    assert lr_at(20000, restarted) == pytest.approx(1e-4)  # the floor still holds
    tail = dict(restarted, restarts=[[2500, 5e-4, 1500.0], [6000, 1e-4, 500.0, 1e-5]])
    assert lr_at(5999, tail) == lr_at(5999, restarted)
    assert lr_at(6500, tail) == pytest.approx(5e-5)
    assert lr_at(60000, tail) == pytest.approx(1e-5)  # the tail's own floor


def test_batch_size_schedule_changes_only_from_its_step():
    tc = {"batch_size": 16, "batch_sizes": [[9250, 64]]}
    assert [batch_size_at(s, tc) for s in (0, 9249, 9250, 20000)] == [16, 16, 64, 64]
    assert batch_size_at(5, {"batch_size": 8}) == 8


def test_cpu_state_is_a_copy_that_training_does_not_change():
    net = torch.nn.Linear(3, 2)
    snap = cpu_state(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not torch.equal(snap["weight"], net.weight)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    st = cpu_state(opt)
    assert all(v.device.type == "cpu" for s in st["state"].values() for v in s.values() if torch.is_tensor(v))


def _mixture(seed=0, seconds=1.0):
    rng = np.random.default_rng(seed)
    n = int(seconds * md.SR) // md.HOP * md.HOP
    t = np.arange(n) / md.SR
    speech = 0.3 * np.sin(2 * np.pi * 300 * t) * (t > 0.5)  # silent first half
    noise = 0.02 * rng.standard_normal(n)
    return (torch.from_numpy((speech + noise)[None].astype(np.float32)),
            torch.from_numpy(speech[None].astype(np.float32)))


def test_gain_loss_is_zero_at_the_ideal_gain_and_grows_with_leftover_noise():
    loss = Loss({"loss": {"gain_weight": 1.0}})
    noisy, clean = _mixture()
    k = noisy.shape[1] // md.HOP
    band_hz = torch.tensor([24000.0])
    es, ex = loss._band_energy(clean, k), loss._band_energy(noisy, k)
    ideal = torch.sqrt(torch.clamp(es / (ex + 1e-10), 0.0, 1.0))
    assert float(loss.gain(ideal, noisy, clean, band_hz)) < 1e-6
    # the noise-only first half has an ideal gain near 0: a model that keeps it at 0.5 pays for it
    leaky = ideal.clone()
    leaky[:, : k // 3] = 0.5
    worse = float(loss.gain(leaky, noisy, clean, band_hz))
    assert worse > 0.1
    # bands above a band-limited clip's real bandwidth do not count while speech is active, but
    # noise-only frames still count everywhere
    assert float(loss.gain(leaky, noisy, clean, torch.tensor([4000.0]))) > 0.1


def test_gain_loss_only_from_its_start_step():
    loss = Loss({"loss": {"gain_weight": 1.0, "gain_from_step": 100, "resolutions": [[480, 240]]}})
    noisy, clean = _mixture()
    k = noisy.shape[1] // md.HOP
    out = noisy.clone()
    vad = torch.full((1, k), 0.5)
    gains = torch.full((1, k, md.N_BANDS), 0.5)
    band_hz = torch.tensor([24000.0])
    before = loss(out, vad, noisy, clean, band_hz, gains, step=99)[0]
    after = loss(out, vad, noisy, clean, band_hz, gains, step=100)[0]
    assert float(after) > float(before) + 0.05


def test_factored_dft_equals_the_dft_matrices():
    net = md.DenoiseNet()
    step = md.StreamingDenoise(net)
    fr, fi, ir, ii = md.dft_matrices()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, md.N_FFT)).astype(np.float32)
    want = np.concatenate([x @ fr, x @ fi], 1)
    got = step.rdft(torch.from_numpy(x)).numpy().reshape(1, -1)  # [re; im] rows
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max())
    y = rng.standard_normal((1, 2 * md.N_BINS)).astype(np.float32)
    want = y[:, : md.N_BINS] @ ir + y[:, md.N_BINS:] @ ii
    got = step.irdft(torch.from_numpy(y.reshape(2, md.N_BINS))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_pyroomacoustics_rooms_start_at_the_direct_path_and_decay(tmp_path, monkeypatch):
    pytest.importorskip("pyroomacoustics")
    from hushbridge.models.train import data

    monkeypatch.setenv("HUSHBRIDGE_TRAIN_CACHE", str(tmp_path))
    rooms = data.pra_rirs(3, seed=5)
    assert len(rooms) == 3 and (tmp_path / "pra-rirs-3-5.npz").exists()
    for h in rooms:
        assert int(np.argmax(np.abs(h))) <= 4  # prepare_rir puts the direct path at the start
        n = len(h) // 10
        assert np.sum(h[-n:] ** 2) < 1e-3 * np.sum(h[:n] ** 2)  # a decaying room, not noise
    again = data.pra_rirs(3, seed=5)  # from the cache, identical
    for a, b in zip(rooms, again):
        np.testing.assert_array_equal(a, b)


def test_silence_penalty_counts_only_pauses_and_grows_in_db():
    """The silence term sees only frames where the target is silent, is 0 for a silent output
    there, and rises by about ln(10) per 10 dB of residual (each halving of the residual counts
    the same), whatever the output does where the target is active."""
    lossf = Loss({"loss": {"silence_weight": 0.002, "silence_floor_db": -70.0}})
    hop = md.HOP
    n = 40 * hop
    t = torch.arange(n) / md.SR
    target = (0.3 * torch.sin(2 * torch.pi * 300 * t) * (t < 20 * hop / md.SR))[None]  # speech, then pause
    noisy = target + 0.01 * torch.randn(1, n, generator=torch.Generator().manual_seed(1))
    assert float(lossf.silence(torch.zeros(1, n), target, noisy)) == 0.0
    loud_speech = target * 3.0  # wrong where the target is active: not this term's business
    assert float(lossf.silence(loud_speech, target, noisy)) == 0.0
    pause = (t >= 20 * hop / md.SR).float()[None]
    res = [float(lossf.silence(pause * 0.3 * 10 ** (-db / 20) * torch.sin(2 * torch.pi * 1000 * t), target, noisy))
           for db in (30, 40, 50)]
    assert res[0] > res[1] > res[2] > 0
    assert res[0] - res[1] == pytest.approx(np.log(10), rel=0.05)
    # an all-silent target (a noise-only mixture): the floor follows the noisy input's level
    noise = 0.01 * torch.randn(1, n, generator=torch.Generator().manual_seed(2))
    assert float(lossf.silence(noise * 0.1, torch.zeros(1, n), noise)) == pytest.approx(np.log1p(0.01 * 1e7), rel=0.05)


def test_snapshots_of_a_short_run_are_scored_by_select(tmp_path):
    """``train --pack --snapshot-every`` keeps each snapshot's own weights in one file, and
    ``select.load_all`` turns that file into one checkpoint per step."""
    from test_train_pack import _Pools

    from hushbridge.models.train import select, train
    from hushbridge.models.train.pack import write_pack

    write_pack(_Pools(), tmp_path / "pack")
    cfg = (tmp_path / "c.toml")
    cfg.write_text('seed = 1\n[model]\nhidden = 16\nlayers = 1\n[data]\nseconds = 0.25\npra_from_step = 100\n'
                   '[train]\nbatch_size = 2\nlr = 1e-3\nval_batches = 1\nval_every = 100\ncheckpoint_every = 100\n'
                   'log_every = 100\n')
    out = tmp_path / "ck"
    assert train.main(["--config", str(cfg), "--pack", str(tmp_path / "pack"), "--out", str(out), "--steps", "3",
                       "--snapshot-every", "1"]) == 0
    nets = select.load_all(str(out / "denoise_snapshots.pt"))
    assert [ck["step"] for _, ck in nets.values()] == [1, 2, 3]
    w = [next(iter(net.state_dict().values())) for net, _ in nets.values()]
    assert not torch.equal(w[0], w[2])  # each snapshot holds its own step's weights
    last = torch.load(out / "denoise_last.pt", weights_only=False)["model"]
    assert torch.equal(next(iter(last.values())), w[2])
    picked = select.load_all(str(out / "denoise_snapshots.pt") + "#1,3")
    assert [ck["step"] for _, ck in picked.values()] == [1, 3]
    with pytest.raises(ValueError, match=r"no snapshot of step\(s\) \[7\]"):
        select.load_all(str(out / "denoise_snapshots.pt") + "#7")
    # and select scores them on mixtures from the same pack (a machine without ../shared/data)
    assert select.main([str(out / "denoise_snapshots.pt"), "--clips", "1", "--seconds", "1.0", "--pack",
                        str(tmp_path / "pack"), "--json", str(tmp_path / "sel.json")]) == 0
    import json

    rep = json.loads((tmp_path / "sel.json").read_text())
    assert len(rep) == 4 and "noisy" in rep  # the input and the three steps
    assert all(np.isfinite(r["si_sdr"]) and 1.0 <= r["dnsmos_ovrl"] <= 5.0 for r in rep.values())


def test_batch_plan_uses_every_batch_k_times_and_keeps_ids_consecutive():
    from hushbridge.models.train.train import batch_plan

    assert [batch_plan(s, {}) for s in range(3)] == [(0, 0), (1, 0), (2, 0)]
    tc = {"remix": [[10, 3], [20, 2]]}
    plan = [batch_plan(s, tc) for s in range(26)]
    assert plan[:10] == [(s, 0) for s in range(10)]  # steps before the first remix keep their batches
    assert plan[10:13] == [(10, 0), (10, 1), (10, 2)]
    assert plan[19] == (13, 0) and plan[20:22] == [(14, 0), (14, 1)]  # a new k starts a new batch
    ids = [b for b, _ in plan]
    assert all(b - a in (0, 1) for a, b in zip(ids, ids[1:]))  # a DataLoader walks them in order
    from hushbridge.models.train.train import first_step_of

    for step, (bid, r) in enumerate(plan):  # the inverse: where each batch is first used
        if r == 0:
            assert first_step_of(bid, tc) == step
    # batch sizes go by the step a batch is first used at, not by its (smaller) id
    tc = {"remix": [[100, 4]], "batch_size": 16, "batch_sizes": [[50, 64], [300, 8]]}
    bid, r = batch_plan(300, tc)
    assert bid < 300 and r == 0 and batch_size_at(first_step_of(bid, tc), tc) == 8


def test_remix_moves_noises_between_mixtures_and_keeps_their_snr():
    from hushbridge.models.train.train import remix

    g = torch.Generator().manual_seed(0)
    b, n = 6, 4800
    speech = torch.randn(b, n) * torch.tensor([0.01, 0.02, 0.05, 0.04, 0.06, 0.03])[:, None]
    level = speech.pow(2).mean(1).sqrt()
    snr_db = torch.tensor([-5.0, 0.0, 5.0, 10.0, 15.0, 20.0])
    noise = torch.randn(b, n)
    noise = noise / noise.pow(2).mean(1, keepdim=True).sqrt() * (level * 10 ** (-snr_db / 20))[:, None]
    target = speech * 0.9
    noisy2, target2 = remix(speech + noise, speech, target, level, g)
    assert torch.equal(target2, target)  # no peak over 0.99 here: targets untouched
    new_noise = noisy2 - speech
    got_snr = 20 * torch.log10(level / new_noise.pow(2).mean(1).sqrt())
    # every mixture got another one's noise (no fixed point), at that noise's own SNR
    moved = []
    for i in range(b):
        j = int(torch.argmax(torch.stack([torch.nn.functional.cosine_similarity(new_noise[i], noise[k], 0)
                                          for k in range(b)])))
        assert j != i
        assert float(got_snr[i]) == pytest.approx(float(snr_db[j]), abs=1e-3)
        moved.append(j)
    assert sorted(moved) == list(range(b))  # a permutation: each noise used once
    # peaks over 0.99 are scaled down with the target
    loud, _ = remix(speech * 40 + noise * 40, speech * 40, target, level * 40, torch.Generator().manual_seed(1))
    assert float(loud.abs().max()) <= 0.99 + 1e-6


def test_sampler_parts_add_up_to_the_mixture(tmp_path):
    from hushbridge.models.train.data import MixConfig, MixtureSampler, active_rms
    from hushbridge.models.train.pack import write_pack
    from tests.models.test_train_pack import _Pools

    write_pack(_Pools(), tmp_path)
    cfg = MixConfig(seconds=0.5, p_bandlimit=0.5, p_no_speech=0.2, pra_from_step=100)
    s = MixtureSampler(cfg, seed=3, pack=tmp_path, verbose=False)
    plain = s.batch(5, 8)
    noisy, target, band, speech, level = s.batch(5, 8, parts=True)
    for a, b in zip(plain, (noisy, target, band)):
        assert np.array_equal(a, b)  # the same draws with or without parts
    for i in range(8):
        if np.any(speech[i]):
            # the level the SNR refers to is the active RMS of the speech part
            assert 20 * np.log10(level[i] / active_rms(speech[i])) == pytest.approx(0.0, abs=0.3)
            assert np.max(np.abs(noisy[i] - speech[i])) > 0  # some noise is left


def test_log_space_scan_equals_the_step_loop():
    net = md.DenoiseNet()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = 0.05 * torch.randn(2, 240 * 300)
    outs, grads = [], []
    for scan in ("loop", "log"):
        for layer in net.rnn:
            layer.scan = scan
        net.zero_grad()
        out, vad, _ = net(x)
        (out.pow(2).sum() + vad.sum()).backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    scale = outs[0].abs().max()
    assert float((outs[0] - outs[1]).abs().max()) < 1e-5 * float(scale)
    assert float((grads[0] - grads[1]).abs().max()) < 1e-4 * float(grads[0].abs().max())


def test_config_overrides_parse_toml_values():
    from hushbridge.models.train.train import apply_overrides

    cfg = {"loss": {"gain_weight": 0.1}}
    apply_overrides(cfg, ["loss.silence_weight=0.002", "train.remix=[[10, 4]]", "data.extra.x = \"y\""])
    assert cfg["loss"] == {"gain_weight": 0.1, "silence_weight": 0.002}
    assert cfg["train"]["remix"] == [[10, 4]] and cfg["data"]["extra"]["x"] == "y"
    with pytest.raises(SystemExit, match="TOML"):
        apply_overrides(cfg, ["loss.x=not toml"])
    with pytest.raises(SystemExit, match="TABLE.KEY"):
        apply_overrides(cfg, ["novalue"])


def test_band_lsd_counts_a_speech_loss_and_a_noise_excess_in_db():
    lf = Loss({"loss": {"lsd_weight": 1e-3, "lsd_floor_db": -40.0}})
    torch.manual_seed(0)
    s = 0.1 * torch.randn(2, 24000)
    noisy = s + 0.01 * torch.randn(2, 24000)
    full = torch.tensor([24000.0, 24000.0])
    assert float(lf.lsd(s, s, noisy, full)) == 0.0
    # 3 dB too quiet everywhere: (3 dB)^2 in every cell (white signals sit far above the floor)
    assert float(lf.lsd(s * 10 ** (-3 / 20), s, noisy, full)) == pytest.approx(9.0, rel=0.05)
    # residual noise where the target is silent costs its level above the floor, in dB
    quiet = torch.cat([s[:, :12000], torch.zeros(2, 12000)], 1)
    leak = quiet + torch.cat([torch.zeros(2, 12000), 0.01 * torch.randn(2, 12000)], 1)
    assert float(lf.lsd(leak, quiet, noisy, full)) > 5.0
    # bands above a clip's band limit are ignored where its speech is active
    limited = torch.tensor([4000.0, 4000.0])
    hf = s + 0.05 * torch.sin(torch.arange(24000) * (2 * torch.pi * 15000 / 48000))
    assert float(lf.lsd(hf, s, noisy, limited)) < 0.05 * float(lf.lsd(hf, s, noisy, full))


def test_band_lsd_floor_deepens_from_a_step_on():
    lf = Loss({"loss": {"lsd_weight": 1e-3, "lsd_floor_db": -40.0, "lsd_floor_steps": [[100, -55.0]]}})
    assert (lf.lsd_floor_at(None), lf.lsd_floor_at(99), lf.lsd_floor_at(100), lf.lsd_floor_at(10**6)) \
        == (-40.0, -40.0, -55.0, -55.0)
    torch.manual_seed(1)
    s = 0.1 * torch.randn(1, 24000)
    quiet = torch.cat([s[:, :12000], torch.zeros(1, 12000)], 1)
    # residual noise 45 dB under the speech: under a -40 dB floor it hardly counts, under -55 dB it does
    leak = quiet + torch.cat([torch.zeros(1, 12000), 10 ** (-45 / 20) * 0.1 * torch.randn(1, 12000)], 1)
    full = torch.tensor([24000.0])
    before, after = float(lf.lsd(leak, quiet, s, full, step=99)), float(lf.lsd(leak, quiet, s, full, step=100))
    assert after > 3.0 * before


def test_select_scores_at_the_effects_default_attenuation_limit():
    from hushbridge.effects.denoise import Denoise
    from hushbridge.models.train.select import ATTEN_LIM_DB

    assert ATTEN_LIM_DB == next(p.default for p in Denoise.params if p.id == "reduction_db")


def test_validation_mixtures_do_not_depend_on_speed_perturbation(tmp_path):
    """An A/B of a run with speed perturbation against one without is scored on the same mixtures."""
    from test_train_pack import _Pools

    from hushbridge.models.train.data import MixtureSampler
    from hushbridge.models.train.pack import write_pack
    from hushbridge.models.train.select import STREAM, validation_clips
    from hushbridge.models.train.train import mix_config

    write_pack(_Pools(), tmp_path)
    plain = {"seed": 3, "data": {"seconds": 0.5, "pra_from_step": 100}}
    sped = {"seed": 3, "data": dict(plain["data"], p_speed=1.0, speed_range=[1.2, 1.2])}
    a = validation_clips(plain, 4, 0.5, pack=str(tmp_path))
    b = validation_clips(sped, 4, 0.5, pack=str(tmp_path))
    for (xa, ta), (xb, tb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)
    # the training sampler of the second run does draw other mixtures
    ms = MixtureSampler(mix_config(sped), seed=3, pack=tmp_path, verbose=False)
    mp = MixtureSampler(mix_config(plain), seed=3, pack=tmp_path, verbose=False)
    assert not np.array_equal(ms.batch(0, 4, stream=STREAM)[1], mp.batch(0, 4, stream=STREAM)[1])


def test_dev_noise_validation_is_the_same_for_every_run_and_only_dev_noise(tmp_path):
    """select --dev-noises N: runs with and without noise augmentation or a dev split are scored on
    the same mixtures, whose noise is only the dev recording(s)."""
    from test_train_pack import _Pools

    from hushbridge.models.train.pack import write_pack
    from hushbridge.models.train.select import validation_clips

    write_pack(_Pools(), tmp_path)  # noises n.ogg (white noise), loud.wav (a 127 Hz sine): dev = loud.wav
    plain = {"seed": 3, "data": {"seconds": 0.5, "pra_from_step": 100, "p_reverb": 0.0, "p_eq": 0.0,
                                 "p_bandlimit": 0.0}}
    aug = {"seed": 3, "data": dict(plain["data"], p_noise_aug=0.5, dev_noise_every=2)}
    a = validation_clips(plain, 4, 0.5, pack=str(tmp_path), dev_noises=2)
    b = validation_clips(aug, 4, 0.5, pack=str(tmp_path), dev_noises=2)
    for (xa, ta), (xb, tb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)
    for noisy, target in a:  # dry mixtures: noisy - target is the noise, a pure tone here
        spec = np.abs(np.fft.rfft((noisy - target).astype(np.float64)))
        assert np.argmax(spec) * 48000 / noisy.size == pytest.approx(127.3, abs=4.0)
        assert spec.max() ** 2 / np.sum(spec**2) > 0.5
    c = validation_clips(plain, 4, 0.5, pack=str(tmp_path))
    assert not all(np.array_equal(x, y) for (x, _), (y, _) in zip(a, c))


def test_resume_warm_starts_a_context_network_from_a_checkpoint_without_one():
    from hushbridge.models.train.train import load_resumed

    old = md.DenoiseNet()
    opt_old = torch.optim.AdamW(old.parameters(), lr=1e-3)
    old(torch.randn(1, 4800) * 0.1)[0].pow(2).mean().backward()
    opt_old.step()
    ck = {"model": old.state_dict(), "opt": opt_old.state_dict()}
    new = md.DenoiseNet(context=2)
    opt = torch.optim.AdamW(new.parameters(), lr=1e-3)
    assert load_resumed(new, opt, ck) == ["ctx.weight"]
    # the old parameters keep their Adam moments, the new branch has none yet
    assert torch.equal(opt.state[new.enc.weight]["exp_avg"], opt_old.state[old.enc.weight]["exp_avg"])
    assert new.ctx.weight not in opt.state
    new(torch.randn(1, 4800) * 0.1)[0].pow(2).mean().backward()
    opt.step()
    assert "exp_avg" in opt.state[new.ctx.weight]
    # a checkpoint of another shape is still refused
    with pytest.raises(RuntimeError):
        load_resumed(md.DenoiseNet(hidden=64), torch.optim.AdamW(md.DenoiseNet(hidden=64).parameters()), ck)


def test_config_keys_and_kinds_are_checked():
    from pathlib import Path

    from hushbridge.models.train.train import apply_overrides, check_config, load_config

    shipped = load_config(Path(md.__file__).parent / "denoise.toml")
    check_config(shipped, shipped)  # the shipped config is valid
    for item, words in (("loss.silence_wieght=0.5", "did you mean loss.silence_weight"),
                        ("foo.bar=1", "'foo': unknown"), ("train.batch_size=\"two\"", "must be an integer"),
                        ("data.snr_db=5", "must be a list"), ("data.p_reverb=\"0.5\"", "must be a number"),
                        ("model.hiddn=32", "did you mean model.hidden")):
        cfg = apply_overrides(load_config(Path(md.__file__).parent / "denoise.toml"), [item])
        with pytest.raises(SystemExit, match=words):
            check_config(cfg, shipped)


def test_resume_fresh_and_log_are_honest(tmp_path, capsys):
    """A resumed run with another config says what changed and keeps the old one in
    config_history; log rows written after the last checkpoint (a killed run) are not doubled;
    --fresh leaves nothing of the earlier run (best, snapshots, log); a warm start that changes
    the network leaves snapshots select can still read."""
    import csv

    from test_train_pack import _Pools

    from hushbridge.models.train import select, train
    from hushbridge.models.train.pack import write_pack

    write_pack(_Pools(), tmp_path / "pack")
    cfg = tmp_path / "c.toml"
    cfg.write_text('seed = 1\n[model]\nhidden = 16\nlayers = 1\n[data]\nseconds = 0.25\npra_from_step = 100\n'
                   '[train]\nbatch_size = 2\nlr = 1e-3\nval_batches = 1\nval_every = 100\ncheckpoint_every = 2\n'
                   'log_every = 1\n')
    out = tmp_path / "ck"
    run = ["--config", str(cfg), "--pack", str(tmp_path / "pack"), "--out", str(out), "--snapshot-every", "2"]
    assert train.main(run + ["--steps", "4"]) == 0
    with open(out / "denoise_log.csv", "a", newline="") as f:  # what a run killed at step 5 leaves
        csv.writer(f).writerow([5, "0.01", "0.001", "9.9", "0.1", ""])
    capsys.readouterr()
    assert train.main(run + ["--steps", "6", "--set", "seed=2", "--set", "model.context=2"]) == 0
    err = capsys.readouterr().err
    assert "config differs" in err and "seed: 1 -> 2" in err and "model.context: '(unset)' -> 2" in err
    ck = torch.load(out / "denoise_last.pt", weights_only=False)
    assert ck["config"]["seed"] == 2 and [(s, c["seed"]) for s, c in ck["config_history"]] == [(4, 1)]
    steps = [r[0] for r in csv.reader(open(out / "denoise_log.csv"))][1:]
    assert steps == ["1", "2", "3", "4", "5", "6"]
    nets = select.load_all(str(out / "denoise_snapshots.pt"))  # steps 2, 4 without context, 6 with
    assert [ck["step"] for _, ck in nets.values()] == [2, 4, 6]
    assert train.main(run + ["--steps", "1", "--fresh"]) == 0
    assert torch.load(out / "denoise_best.pt", weights_only=False)["step"] == 1
    assert not (out / "denoise_snapshots.pt").exists()
    assert [r[0] for r in csv.reader(open(out / "denoise_log.csv"))][1:] == ["1"]


def test_active_rms_of_digital_silence_is_finite():
    from hushbridge.models.train.data import active_rms

    assert np.isfinite(active_rms(np.zeros(48000, np.float32)))
    assert active_rms(np.zeros(48000, np.float32)) < 1e-6


def _tiny_run(tmp_path):
    from test_train_pack import _Pools

    from hushbridge.models.train.pack import write_pack

    write_pack(_Pools(), tmp_path / "pack")
    cfg = tmp_path / "c.toml"
    cfg.write_text('seed = 1\n[model]\nhidden = 16\nlayers = 1\n[data]\nseconds = 0.25\npra_from_step = 100\n'
                   '[train]\nbatch_size = 2\nlr = 1e-3\nval_batches = 1\nval_every = 100\ncheckpoint_every = 2\n'
                   'log_every = 1\n')
    return ["--config", str(cfg), "--pack", str(tmp_path / "pack")]


def test_a_run_without_its_last_checkpoint_refuses_to_mix_into_the_old_files(tmp_path):
    """With denoise_last.pt gone (or --fresh killed before its first checkpoint), a new run
    appended to the old log and left the old best beside its own."""
    from hushbridge.models.train import train

    run = _tiny_run(tmp_path) + ["--out", str(tmp_path / "ck")]
    assert train.main(run + ["--steps", "4"]) == 0
    (tmp_path / "ck" / "denoise_last.pt").unlink()
    with pytest.raises(SystemExit, match="holds files of an earlier run .*--fresh"):
        train.main(run + ["--steps", "2"])
    assert train.main(run + ["--steps", "2", "--fresh"]) == 0
    (tmp_path / "ck" / "denoise_last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(SystemExit, match="cannot be read .*--fresh"):
        train.main(run + ["--steps", "3"])
    # --fresh deletes the old last checkpoint at once: a run killed before its first checkpoint
    # leaves nothing that passes for a continuation
    assert train.main(run + ["--steps", "1", "--fresh"]) == 0
    assert torch.load(tmp_path / "ck" / "denoise_last.pt", weights_only=False)["step"] == 1


def test_an_interrupted_run_picks_the_same_best_as_an_uninterrupted_one(tmp_path):
    """Runs too short to validate leave a provisional best: the last step. A run stopped at
    step 3 and resumed to 6 kept step 3 as its best, where a run straight to 6 had step 6."""
    from hushbridge.models.train import train

    run = _tiny_run(tmp_path)
    assert train.main(run + ["--out", str(tmp_path / "a"), "--steps", "6"]) == 0
    assert train.main(run + ["--out", str(tmp_path / "c"), "--steps", "3"]) == 0
    assert train.main(run + ["--out", str(tmp_path / "c"), "--steps", "6"]) == 0
    a = torch.load(tmp_path / "a" / "denoise_best.pt", weights_only=False)
    c = torch.load(tmp_path / "c" / "denoise_best.pt", weights_only=False)
    assert a["step"] == c["step"] == 6 and a["provisional"] and a["val_loss"] == c["val_loss"]
    for k, v in a["model"].items():
        assert torch.equal(v, c["model"][k]), k


def test_a_failed_export_leaves_the_model_file_alone(tmp_path, monkeypatch):
    from hushbridge.models.train import export as ex

    net = md.DenoiseNet(hidden=16, layers=1).eval()
    ck = tmp_path / "ck.pt"
    torch.save({"step": 3, "model": net.state_dict(), "config": {"model": {"hidden": 16, "layers": 1}}}, ck)
    out = tmp_path / "denoise.onnx"
    out.write_bytes(b"the model that ships")
    monkeypatch.setattr(ex, "parity", lambda *a, **k: 1.0)
    assert ex.main(["--checkpoint", str(ck), "--out", str(out), "--postfilter", "none"]) == 1
    assert out.read_bytes() == b"the model that ships"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt", "denoise.onnx"]  # no temp file left
    monkeypatch.undo()
    assert ex.main(["--checkpoint", str(ck), "--out", str(out), "--postfilter", "none"]) == 0
    # and its link-group graph beside it
    assert out.read_bytes()[:4] != b"the " and sorted(p.name for p in tmp_path.iterdir()) == [
        "ck.pt", "denoise.linked.onnx", "denoise.onnx"]


def test_init_starts_a_run_of_another_name_from_a_checkpoints_weights(tmp_path):
    """``--init``: the dereverb and isolate runs start from the denoiser's weights: step 0, the
    weights as they were before the first step, files named after the config's name, where they
    came from kept in config_history; a run already there is resumed, never re-initialised."""
    from hushbridge.models.train import train

    run = _tiny_run(tmp_path)
    assert train.main(run + ["--out", str(tmp_path / "dn"), "--steps", "3"]) == 0
    src = torch.load(tmp_path / "dn" / "denoise_last.pt", weights_only=False)
    out = tmp_path / "dr"
    named = run + ["--out", str(out), "--set", 'name="dereverb"', "--init", str(tmp_path / "dn" / "denoise_last.pt")]
    # lr 0: the weights after two steps are still the --init weights
    assert train.main(named + ["--steps", "2", "--set", "train.lr=0.0", "--set", "train.lr_min=0.0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["dereverb_best.pt", "dereverb_last.pt", "dereverb_log.csv"]
    ck = torch.load(out / "dereverb_last.pt", weights_only=False)
    assert ck["step"] == 2 and ck["config"]["name"] == "dereverb"
    (first, origin), = ck["config_history"]
    assert first == 0 and origin["init_from"].endswith("denoise_last.pt") and origin["init_step"] == 3
    for k, v in src["model"].items():
        assert torch.equal(v, ck["model"][k]), k
    with pytest.raises(SystemExit, match="--init starts a new run"):
        train.main(named + ["--steps", "4"])
    assert train.main(run + ["--out", str(out), "--set", 'name="dereverb"', "--steps", "4"]) == 0
    assert torch.load(out / "dereverb_last.pt", weights_only=False)["step"] == 4
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="x.pt cannot be read"):
        train.main(run + ["--out", str(tmp_path / "y"), "--init", str(tmp_path / "x.pt"), "--steps", "1"])
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="not a checkpoint of the network"):
        train.main(run + ["--out", str(tmp_path / "y"), "--init", str(tmp_path / "other.pt"), "--steps", "1"])
    # --fresh --init: the weights are read before --fresh deletes the run's files, even its own
    # best; a mistyped --init deletes nothing
    kept = sorted(p.name for p in out.iterdir())
    with pytest.raises(SystemExit, match="no such file"):
        train.main(named[:-1] + [str(tmp_path / "dn" / "denoise_lats.pt"), "--fresh", "--steps", "1"])
    assert sorted(p.name for p in out.iterdir()) == kept
    best = torch.load(out / "dereverb_best.pt", weights_only=False)["model"]
    assert train.main(named[:-1] + [str(out / "dereverb_best.pt"), "--fresh", "--steps", "1",
                                    "--set", "train.lr=0.0", "--set", "train.lr_min=0.0"]) == 0
    for k, v in best.items():
        assert torch.equal(v, torch.load(out / "dereverb_last.pt", weights_only=False)["model"][k]), k
