"""The per-band post-filter fit (models/train/fit_postfilter.py) on real training-split mixtures."""
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("speechmos")

from hushbridge.models.train import fit_postfilter as fp  # noqa: E402
from hushbridge.models.train.export import resolve_postfilter  # noqa: E402
from hushbridge.models.train.model import N_BANDS  # noqa: E402

pytestmark = pytest.mark.train

CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "train" / "checkpoints" / "denoise_shipped.pt"


def test_band_params_start_at_the_config_in_every_band():
    init = resolve_postfilter("config")
    table = fp.BandParams(init).table()
    for key in fp.FITTED:
        assert len(table[key]) == N_BANDS
        assert all(math.isclose(v, init[key], rel_tol=1e-4) for v in table[key]), key
    assert table["vad_power"] == init["vad_power"] and table["kind"] == "expand"


def test_band_params_refuse_a_post_filter_without_release_or_floor():
    with pytest.raises(ValueError, match="release and vad_floor"):
        fp.BandParams({"kind": "expand", "k": 10.0, "pivot": 0.4, "lo": 0.2, "hi": 1.5})


def test_a_short_fit_moves_every_band_within_range(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "pf.json"
    assert fp.main([str(CHECKPOINT), "--clips", "4", "--seconds", "1.2", "--steps", "2", "--batch", "2",
                    "--lr", "0.05", "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    init = resolve_postfilter("config")
    for key in fp.FITTED:
        assert len(table[key]) == N_BANDS
        assert any(abs(v - init[key]) > 1e-3 for v in table[key]), f"{key} did not move"
    assert all(0 < v < 1 for key in ("pivot", "lo", "release", "vad_floor") for v in table[key])
    assert all(v > 1 for v in table["hi"]) and all(v > 0 for v in table["k"])
