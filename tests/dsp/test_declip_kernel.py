"""The de-clipper's least-squares AR interpolation (``_lsar``) against a dense solve.

``_lsar`` factors the normal matrix in band storage; here the same problem is solved densely with
numpy's least squares: every prediction error ``e[n] = sum_i a[i] x[n - i]`` for ``n`` in
``[p, w)``, with the unknown samples free, is minimised over them.
"""
from __future__ import annotations

import numpy as np
import pytest

from hushbridge.dsp.kernels import declip as K


def _dense_solution(x: np.ndarray, idx: np.ndarray, a: np.ndarray, p: int) -> np.ndarray:
    w = x.size
    known = x.copy()
    known[idx] = 0.0
    rows = w - p
    conv = np.zeros((rows, w))  # conv @ x = prediction errors
    for r, n in enumerate(range(p, w)):
        conv[r, n - np.arange(p + 1)] = a[: p + 1]
    solved, *_ = np.linalg.lstsq(conv[:, idx], -(conv @ known), rcond=None)
    return solved


@pytest.mark.parametrize("p,layout", [(48, "runs"), (24, "runs"), (48, "edges"), (8, "one")])
def test_band_solve_equals_a_dense_least_squares_solve(p: int, layout: str) -> None:
    rng = np.random.default_rng(p + len(layout))
    w = 576
    x = np.cumsum(rng.standard_normal(w)) * 0.01 + rng.standard_normal(w) * 0.1
    if layout == "runs":  # several runs with gaps shorter and longer than p between them
        idx = np.concatenate([np.arange(150, 190), np.arange(200, 230), np.arange(300, 420), np.arange(430, 433)])
    elif layout == "edges":  # unknowns closer than p to the window's ends (the matrix is not Toeplitz there)
        idx = np.concatenate([np.arange(p + 2, p + 30), np.arange(w - p - 20, w - p + 10)])
    else:
        idx = np.array([w // 2])
    idx = idx.astype(np.int64)
    unknown = np.zeros(w, dtype=np.int8)
    unknown[idx] = 1
    a = np.zeros(K.ORDER + 1)
    a[0] = 1.0
    a[1: p + 1] = rng.standard_normal(p) * (0.5 / p)
    nu = idx.size
    got = x.copy()
    ok = K._lsar(got, unknown, idx, nu, w, p, a, np.zeros(w), np.zeros((nu, K.ORDER + 1)), np.zeros(nu),
                 np.zeros(K.ORDER + 1))
    assert ok
    want = _dense_solution(x, idx, a, p)
    assert np.allclose(got[idx], want, rtol=1e-6, atol=1e-8 * np.abs(want).max())
    keep = np.setdiff1d(np.arange(w), idx)
    assert np.array_equal(got[keep], x[keep])  # the known samples are not touched
