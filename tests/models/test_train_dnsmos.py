"""The DNSMOS loss term: the torch port of DNSMOS P.835 scores what speechmos scores, passes
gradients to the audio, and enters the training loss only where the config asks for it.

Needs the ``[train]`` extra (torch) and speechmos ([dev]); skipped cleanly where either is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("speechmos")
pytest.importorskip("onnx")

from helpers import shared_data_dir  # noqa: E402

from hushbridge.models.train.dnsmos import DnsmosP835, default_model_path  # noqa: E402
from hushbridge.models.train.train import Loss  # noqa: E402

pytestmark = pytest.mark.train


def _dfn_file(name: str):
    """A file of the real 48 kHz DeepFilterNet pair (only scored here, never trained on)."""
    data = shared_data_dir()
    if data is None or not (data / "deepfilternet" / name).exists():
        pytest.skip(f"../shared/data/deepfilternet/{name} not present")
    return data / "deepfilternet" / name


@pytest.fixture(scope="module")
def scorer():
    return DnsmosP835().eval()


def _real_48k() -> np.ndarray:
    sf = pytest.importorskip("soundfile")
    audio, sr = sf.read(_dfn_file("noisy_snr0.wav"), dtype="float32")
    assert sr == 48000
    return audio


def test_port_scores_like_speechmos_on_a_real_recording(scorer):
    soxr = pytest.importorskip("soxr")
    from speechmos import dnsmos

    x16 = soxr.resample(_real_48k(), 48000, 16000).astype(np.float32)[:144160]  # one 9.01 s segment
    ref = dnsmos.run(x16, sr=16000)
    with torch.no_grad():
        got = scorer(torch.from_numpy(x16)[None], rate=16000)[0].numpy()
    want = np.array([ref["sig_mos"], ref["bak_mos"], ref["ovrl_mos"]])
    np.testing.assert_allclose(got, want, atol=1e-4)
    # the in-graph 48 -> 16 kHz decimator stays close to soxr's
    with torch.no_grad():
        got48 = scorer(torch.from_numpy(_real_48k()[: 3 * 144160])[None])[0].numpy()
    np.testing.assert_allclose(got48, want, atol=0.05)


def test_scores_tell_noisy_from_clean_speech_and_pass_gradients(scorer):
    sf = pytest.importorskip("soundfile")
    clean, _ = sf.read(_dfn_file("clean_freesound_33711.wav"), dtype="float32", frames=48000 * 4)
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(clean.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2))  # white noise at 0 dB SNR
    x = torch.from_numpy(np.stack([clean, clean + noise])).requires_grad_(True)
    scores = scorer(x)
    assert scores.shape == (2, 3)
    sig_bak_ovrl = scores.detach().numpy()
    assert sig_bak_ovrl[0, 1] > sig_bak_ovrl[1, 1] + 0.5  # BAK
    assert sig_bak_ovrl[0, 2] > sig_bak_ovrl[1, 2] + 0.3  # OVRL
    scores[:, 2].sum().backward()
    g = x.grad
    assert torch.isfinite(g).all() and float(g[0].abs().sum()) > 0 and float(g[1].abs().sum()) > 0
    assert all(not p.requires_grad for p in scorer.parameters())


def test_short_input_is_a_clear_error(scorer):
    with pytest.raises(ValueError, match="17 frames"):
        scorer(torch.zeros(1, 2000), rate=16000)
    with pytest.raises(ValueError, match="48 or 16 kHz"):
        scorer(torch.zeros(1, 48000), rate=44100)


def _batch(n=4, seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = int(48000 * seconds)
    target = 0.1 * torch.randn(n, t, generator=g) * torch.sin(torch.linspace(0, 20, t)).abs()
    noisy = target + 0.03 * torch.randn(n, t, generator=g)
    return noisy, target, torch.full((n,), 24000.0)


def test_loss_adds_the_term_only_from_its_step_and_never_in_validation():
    noisy, target, band = _batch()
    out = (0.8 * noisy).requires_grad_(True)
    vad = torch.full((noisy.shape[0], noisy.shape[1] // 240), 0.5)
    base = {"loss": {"resolutions": [[480, 240]]}}
    plain = Loss(base)
    with_d = Loss({"loss": dict(base["loss"], dnsmos_weight=0.01, dnsmos_from_step=100, dnsmos_examples=2,
                                dnsmos_model=default_model_path())})
    ref = float(plain(out, vad, noisy, target, band, step=200)[0].detach())
    assert float(with_d(out, vad, noisy, target, band, step=99)[0].detach()) == pytest.approx(ref)
    assert float(with_d(out, vad, noisy, target, band)[0].detach()) == pytest.approx(ref)  # validation: step None
    assert with_d.last_dnsmos is None
    total = with_d(out, vad, noisy, target, band, step=100)[0]
    ovrl = float(with_d.last_dnsmos[2])
    assert 1.0 < ovrl < 5.0
    # the term is -weight x the mean OVRL of the first dnsmos_examples mixtures (the default weights)
    assert float(total.detach()) == pytest.approx(ref - 0.01 * ovrl, abs=1e-5)
    total.backward()
    assert torch.isfinite(out.grad).all()
    assert float(out.grad[2:].abs().sum()) > 0  # the spectral terms still reach every mixture


def test_tiling_scores_the_clip_repeated_to_the_scorers_segment():
    noisy, target, band = _batch(n=2, seconds=2.0, seed=1)
    out = 0.8 * noisy
    vad = torch.full((2, noisy.shape[1] // 240), 0.5)
    lf = Loss({"loss": {"resolutions": [[480, 240]], "dnsmos_weight": 0.01, "dnsmos_tile_s": 9.01}})
    lf(out, vad, noisy, target, band, step=0)
    y = out[:, 240:][:2]  # what the loss scores: the output aligned with the target
    want = lf.dnsmos(torch.cat([y] * 5, 1)[:, :432480]).mean(0)
    assert torch.allclose(lf.last_dnsmos, want, atol=1e-5)
    plain = Loss({"loss": {"resolutions": [[480, 240]], "dnsmos_weight": 0.01}})
    plain(out, vad, noisy, target, band, step=0)
    assert not torch.allclose(plain.last_dnsmos, want, atol=1e-3)  # tiling is not a no-op


def test_weights_from_npz_score_like_the_onnx_file(scorer, tmp_path):
    from hushbridge.models.train import dnsmos

    out = tmp_path / "dnsmos.npz"
    assert dnsmos.main(["--npz", str(out)]) == 0
    x = torch.from_numpy(_real_48k()[: 48000 * 3])[None]
    with torch.no_grad():
        np.testing.assert_array_equal(DnsmosP835(str(out))(x).numpy(), scorer(x).numpy())
