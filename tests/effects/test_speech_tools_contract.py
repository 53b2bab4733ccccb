"""The Effect contract for humremove, gate, deesser, leveler and the typed eq: NaN/Inf input,
no subnormal state after decay, block-size invariance, no allocation in process (Python and
numba NRT)."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir

from hushbridge.effects import EFFECTS, DeEsser, Gate, HumRemover, Leveler, PeakingEQ, ProcessSpec

SPEECH = (shared_data_dir() or Path("/nonexistent")) / "speech"

FACTORIES = {
    "humremove": lambda: HumRemover(harmonics=8, auto=1),
    "humremove_switch": lambda: HumRemover(mains_hz=60, auto=1),  # finds the 50 Hz hum, glides mid-signal
    "humremove60": lambda: HumRemover(mains_hz=60, harmonics=3, q=10.0, depth_db=40.0),
    "gate": lambda: Gate(threshold_db=-35.0, ratio=10.0, range_db=30.0, hold_ms=20.0, release_ms=50.0,
                         sidechain_hpf_hz=100.0),
    "gate_lookahead": lambda: Gate(threshold_db=-35.0, lookahead_ms=2.0),
    "deesser": lambda: DeEsser(threshold_db=-40.0, range_db=12.0),
    "deesser_wide": lambda: DeEsser(threshold_db=-40.0, mode=1),
    "leveler": lambda: Leveler(target_lufs=-18.0, time_s=1.0),
    "eq_types": lambda: PeakingEQ(band1_type=4, band1_freq_hz=120.0, band2_type=5, band2_freq_hz=1000.0,
                                  band3_type=2, band3_gain_db=-6.0, band4_type=3, band4_freq_hz=9000.0),
}


def signal(channels: int = 2, frames: int = 60000, sr: int = 48000) -> np.ndarray:
    """Real speech (with a little hum and a burst of noise) in every channel; noise if absent."""
    import soundfile as sf

    files = sorted(SPEECH.glob("vctk_p2*.wav")) if SPEECH.is_dir() else []
    rng = np.random.default_rng(0)
    if files:
        x, _ = sf.read(str(files[0]), frames=frames, dtype="float64")
        x = np.pad(x, (0, max(0, frames - len(x))))
    else:
        x = rng.standard_normal(frames) * 0.1
    t = np.arange(frames) / sr
    x = x + 0.02 * np.sin(2 * np.pi * 50.0 * t) + 0.05 * rng.standard_normal(frames) * (t > 0.6) * (t < 0.7)
    out = np.stack([x * (0.7 + 0.3 * k) for k in range(channels)])
    return np.ascontiguousarray(out, dtype=np.float32)


def run(fx, x: np.ndarray, block: int, sr: int = 48000) -> np.ndarray:
    fx.prepare(ProcessSpec(sr, block, x.shape[0]))
    y = x.copy()
    for start in range(0, y.shape[1], block):
        fx.process(y[:, start : start + block])
    return y


def test_registered() -> None:
    for name, cls in [("humremove", HumRemover), ("gate", Gate), ("deesser", DeEsser), ("leveler", Leveler)]:
        assert EFFECTS[name] is cls


@pytest.mark.parametrize("which", FACTORIES)
def test_block_size_invariance(which: str) -> None:
    x = signal()
    whole = run(FACTORIES[which](), x, x.shape[1])
    assert not np.array_equal(whole, x) or which.startswith("deesser")
    for block in (1, 64, 128, 1000):
        np.testing.assert_array_equal(run(FACTORIES[which](), x, block), whole, err_msg=f"block {block}")


@pytest.mark.parametrize("which", FACTORIES)
def test_nonfinite_input_gives_finite_output(which: str) -> None:
    fx = FACTORIES[which]()
    x = signal(frames=4096)
    x[0, 100] = np.nan
    x[1, 200] = np.inf
    x[0, 300:310] = -np.inf
    y = run(fx, x, 512)
    assert np.all(np.isfinite(y))
    z = signal(frames=4096)
    fx.process(z[:, :512])
    assert np.all(np.isfinite(z))


def _state_arrays(fx) -> list[np.ndarray]:
    return [v for k, v in vars(fx).items() if isinstance(v, np.ndarray) and v.dtype == np.float64
            and k not in ("_values", "_consts", "_coefs", "_old_coefs", "_sc_coefs", "_xo_coefs", "_kw_coefs",
                          "_ramp", "_old_ramp", "_det", "_meter")]


@pytest.mark.parametrize("which", FACTORIES)
def test_no_subnormal_state_after_decay(which: str) -> None:
    fx = FACTORIES[which]()
    fx.prepare(ProcessSpec(48000, 4096, 2))
    fx.process(signal(frames=4096))
    silence = np.zeros((2, 4096), dtype=np.float32)
    for _ in range(240):  # ~20 s
        silence.fill(0.0)
        fx.process(silence)
    tiny = np.finfo(np.float64).tiny
    for arr in _state_arrays(fx) + ([fx._det] if hasattr(fx, "_det") else []):
        assert not np.any((arr != 0.0) & (np.abs(arr) < tiny)), f"subnormal state in {which}"
        assert np.all(np.isfinite(arr))
    for name in ("_state", "_sc_state", "_xo_state", "_kw_state", "_ms", "_old_state"):
        if hasattr(fx, name):
            assert np.all(getattr(fx, name) == 0.0), f"{which}.{name} not flushed to zero"
    assert np.all(silence == 0.0)


@pytest.mark.parametrize("which", FACTORIES)
def test_process_does_not_allocate(which: str) -> None:
    fx = FACTORIES[which]()
    fx.prepare(ProcessSpec(48000, 128, 2))
    x = signal(frames=128 * 400)
    for k in range(10):
        fx.process(x[:, k * 128 : (k + 1) * 128])  # warm up
    if isinstance(fx, PeakingEQ):
        fx.band2_type = 0  # the type crossfade path too
    tracemalloc.start()
    try:
        for k in range(10, 400):
            fx.process(x[:, k * 128 : (k + 1) * 128])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2048, f"process allocated {peak} bytes"


@pytest.mark.parametrize("which", FACTORIES)
def test_kernels_do_not_allocate(which: str) -> None:
    """numba's NRT counts one meminfo per array argument crossing into a kernel (unboxing, freed on
    return); a kernel that allocated inside would add to that per call or per sample. So: every
    allocation is freed, and the count per call is the same for 1-frame and 128-frame blocks (and
    across the hum detector's window ends, which 1 s of 128-frame blocks crosses)."""
    from numba.core.runtime import _nrt_python, rtsys

    was = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        per_call = []
        for block in (1, 128):
            fx = FACTORIES[which]()
            fx.prepare(ProcessSpec(48000, block, 2))
            x = signal(frames=block * 400)
            fx.process(x[:, :block])
            before = rtsys.get_allocation_stats()
            for k in range(1, 400):
                fx.process(x[:, k * block : (k + 1) * block])
            after = rtsys.get_allocation_stats()
            per_call.append((after.alloc - before.alloc) / 399)
            assert after.alloc - before.alloc == after.free - before.free
    finally:
        if not was:
            _nrt_python.memsys_disable_stats()
    assert per_call[0] == per_call[1], f"allocations per call depend on the block length: {per_call}"
