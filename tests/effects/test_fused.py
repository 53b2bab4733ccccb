"""Fused runs: a Chain's one-call-per-block path gives exactly the slot-by-slot output."""
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from hushbridge.effects import (EFFECTS, Chain, Compressor, DeEsser, Effect, Gain, Gate, HighPass, Leveler, Limiter,
                                Param, PeakingEQ, ProcessSpec, create_effect)
from hushbridge.effects.fused import FusedRun

SR = 48000


@njit(cache=False)
def _poison(block, state):
    """Test kernel: scales by state[0] and writes NaN at sample 0 while state[1] != 0."""
    ch, n = block.shape
    for c in range(ch):
        for i in range(n):
            block[c, i] *= state[0]
    if state[1] != 0.0 and n:
        block[0, 0] = np.nan


class Poison(Effect):
    """A kernel effect that produces NaN on demand; resetting it stops the NaN."""

    name = "poison"
    params = (Param("scale", 0.0, 2.0, 1.0),)

    def __init__(self) -> None:
        object.__setattr__(self, "_state", np.array([1.0, 0.0]))
        object.__setattr__(self, "resets", 0)
        super().__init__()

    def _param_changed(self, index: int) -> None:
        self._state[0] = self._values[0]

    def reset(self) -> None:
        self._state[1] = 0.0
        object.__setattr__(self, "resets", self.resets + 1)

    def kernel(self):
        return _poison, (self._state,)


class PythonGain(Effect):
    """A Python effect (no kernel): it splits a chain's fused runs."""

    name = "pygain"

    def process(self, block):
        block *= np.float32(0.5)


def speech_like(channels, seconds=1.5, seed=0):
    rng = np.random.default_rng(seed)
    n = int(SR * seconds)
    t = np.arange(n) / SR
    env = (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    x = env * (0.4 * np.sin(2 * np.pi * 180 * t) + 0.1 * rng.standard_normal(n))
    x[int(0.6 * SR): int(0.8 * SR)] *= 0.001  # a pause for the gate
    x = np.stack([x * (1.0 - 0.2 * c) for c in range(channels)])
    return x.astype(np.float32)


def build(fuse, channels, extra=()):
    chain = Chain([HighPass(cutoff_hz=90), Gate(threshold_db=-45), Compressor(threshold_db=-24, ratio=3),
                   PeakingEQ(band2_gain_db=4), *extra, DeEsser(), Leveler(), Limiter(ceiling_dbtp=-1)], fuse=fuse)
    chain.prepare(ProcessSpec(SR, 512, channels))
    return chain


def run(chain, x, events=(), seed=1, max_block=512):
    """Process ``x`` in random block sizes; ``events`` are (sample, callable(chain)) applied
    at the first block boundary at or after that sample."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(x)
    pending = sorted(events, key=lambda e: e[0])
    i = 0
    while i < x.shape[1]:
        while pending and pending[0][0] <= i:
            pending.pop(0)[1](chain)
        n = min(int(rng.integers(1, max_block + 1)), x.shape[1] - i)
        block = x[:, i: i + n].copy()  # a copy: a mono slice would already count as contiguous
        chain.process(block)
        out[:, i: i + n] = block
        i += n
    return out


@pytest.mark.parametrize("channels", [1, 2])
def test_fused_chain_equals_slot_by_slot(channels):
    fused, plain = build(True, channels), build(False, channels)
    assert [type(u) for u in fused._units] == [FusedRun]
    assert plain._units == list(range(len(plain)))
    x = speech_like(channels)
    events = [
        (10000, lambda c: c.set_bypass("compressor", True)),
        (20000, lambda c: c["gate"].set("threshold_db", -30.0)),
        (26000, lambda c: c.set_bypass("limiter", True)),  # a latency-carrying effect: dry line path
        (30000, lambda c: c["eq"].set("band2_type", 1.0)),  # type change: the EQ needs Python for 20 ms
        (40000, lambda c: c.set_bypass("compressor", False)),
        (50000, lambda c: c.set_bypass("limiter", False)),
        (60000, lambda c: c["compressor"].set("ratio", 8.0)),
    ]
    a, b = run(fused, x, events), run(plain, x, events)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 0.05
    assert fused.latency_samples == plain.latency_samples > 0


def test_python_effect_splits_the_runs_and_output_is_unchanged():
    fused, plain = build(True, 2, extra=[PythonGain()]), build(False, 2, extra=[PythonGain()])
    kinds = [type(u) if not isinstance(u, int) else int for u in fused._units]
    assert kinds == [FusedRun, int, FusedRun]
    assert fused._units[0].start == 0 and len(fused._units[0].effects) == 4 and fused._units[2].start == 5
    x = speech_like(2, seconds=0.5)
    np.testing.assert_array_equal(run(fused, x), run(plain, x))


def test_nonfinite_inside_a_fused_run_is_silenced_and_the_effect_reset():
    results = []
    for fuse in (True, False):
        poison = Poison()
        chain = Chain([Gain(gain_db=-3.0), poison, Gain(gain_db=1.0)], fuse=fuse)
        chain.prepare(ProcessSpec(SR, 256, 2))
        assert (type(chain._units[0]) is FusedRun) == fuse
        x = speech_like(2, seconds=0.1)
        x[1, 700] = np.inf  # non-finite input as well
        events = [(1000, lambda c: c["poison"]._state.__setitem__(1, 1.0))]
        resets_before = poison.resets
        out = run(chain, x, events, seed=3, max_block=256)
        assert np.isfinite(out).all()
        assert chain.nonfinite_events == 2 and poison.resets == resets_before + 1
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])


def test_blocks_that_are_not_contiguous_float32_take_the_slot_path():
    fused, plain = build(True, 2), build(False, 2)
    x = speech_like(2, seconds=0.2)
    wide = np.zeros((2, 2 * x.shape[1]), np.float32)
    wide[:, ::2] = x
    a = wide[:, ::2]  # strided view
    fused.process(a)
    b = x.copy()
    plain.process(b)
    np.testing.assert_array_equal(a, b)


def test_kernel_arrays_stay_the_same_objects_when_parameters_change():
    """The fused code holds raw addresses of every kernel array, so an effect may replace its
    arrays only in _prepare (after which the Chain fuses again)."""
    spec = ProcessSpec(SR, 256, 2)
    checked = 0
    for name, cls in sorted(EFFECTS.items()):
        if cls.kernel is Effect.kernel:
            continue
        effect = create_effect(name)
        effect.prepare(spec)
        binding = effect.kernel()
        if binding is None:
            continue
        before = [id(a) for a in binding[1] if isinstance(a, np.ndarray)]
        rng = np.random.default_rng(0)
        for p in effect.params:
            if p.id.startswith("lookahead"):
                continue  # a latency change re-prepares (the engine swaps a re-prepared chain)
            effect.set(p.id, float(rng.uniform(p.min, p.max)))
            effect.process(np.zeros((2, 64), np.float32))
        after = [id(a) for a in effect.kernel()[1] if isinstance(a, np.ndarray)]
        assert before == after, name
        checked += 1
    assert checked >= 7


def test_generated_code_is_cached_on_disk_for_the_next_process(tmp_path):
    code = ("import time; t = time.perf_counter();"
            "from hushbridge.effects import Chain, Gain, HighPass, ProcessSpec;"
            "c = Chain([HighPass(), Gain(gain_db=-2.0), HighPass(cutoff_hz=50)]);"
            "c.prepare(ProcessSpec(44100, 64, 3));"
            "import numpy as np; b = np.ones((3, 64), np.float32); c.process(b);"
            "print(type(c._units[0]).__name__, float(b[0, -1]))")
    env = {**__import__("os").environ, "HUSHBRIDGE_FUSED_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert any(f.startswith("fused_") and f.endswith(".py") for f in files)
    assert any(f.endswith(".nbi") for f in files) and any(f.endswith(".nbc") for f in files)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("FusedRun ")


def test_a_subclass_that_overrides_process_is_not_fused():
    class Counting(Gain):
        name = "counting"
        calls = 0

        def process(self, block):
            Counting.calls += 1
            super().process(block)

    chain = Chain([Gain(), Counting(), Gain()])
    chain.prepare(ProcessSpec(SR, 64, 1))
    assert [u if isinstance(u, int) else type(u).__name__ for u in chain._units] == ["FusedRun", 1, "FusedRun"]
    chain.process(np.ones((1, 64), np.float32))
    assert Counting.calls == 1
    eq = Chain([PeakingEQ(), Gain()])  # overrides process but declares python_needed: fused
    eq.prepare(ProcessSpec(SR, 64, 1))
    assert type(eq._units[0]) is FusedRun and len(eq._units) == 1


def test_an_unwritable_cache_folder_means_unfused_not_broken(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HUSHBRIDGE_FUSED_DIR", str(blocker / "fused"))  # mkdir fails: a file is in the way
    chain = Chain([Gain(gain_db=-1.0), HighPass(cutoff_hz=123.0), Gain(gain_db=0.5)])
    chain.prepare(ProcessSpec(SR, 64, 1))
    assert chain._units == [0, 1, 2] and "cannot fuse" in caplog.text
    block = np.ones((1, 64), np.float32)
    chain.process(block)
    assert np.isfinite(block).all() and block[0, -1] != 1.0
