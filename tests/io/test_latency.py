"""hushbridge.io.latency's reading of a round trip (the JACK part is tested live in test_cli_run)."""
import numpy as np
import pytest

from hushbridge.errors import BackendError
from hushbridge.io.latency import _delays, sweep

SR = 48000


def heard_after(delay: int, sign: float = 1.0, repeats: int = 3, max_lag: int = SR, missing: int | None = None):
    one = sweep(SR)
    every = len(one) + max_lag + SR // 4
    heard = np.zeros(every * repeats + max_lag, np.float32)
    for r in range(repeats):
        if r == missing:
            continue
        at = r * every + delay
        heard[at:at + len(one)] += sign * one[:len(heard) - at]
    return heard, one, every


def test_a_delay_either_polarity_and_refusals_instead_of_wrong_numbers():
    heard, one, every = heard_after(1234)
    trip = _delays(heard, one, every, 3, SR, SR, 128)
    assert trip.samples == 1234 and trip.delays == (1234, 1234, 1234) and not trip.inverted and trip.match > 0.999
    heard, one, every = heard_after(72, sign=-1.0)  # a wiring that flips polarity
    trip = _delays(heard, one, every, 3, SR, SR, 128)
    assert trip.samples == 72 and trip.inverted is True  # a plain bool: it goes into --json
    for late in (SR // 4 + 50, SR // 2):  # later than looked for: an error naming the option, never a number
        heard, one, every = heard_after(late, max_lag=SR // 4)
        with pytest.raises(BackendError, match="--max-latency"):
            _delays(heard, one, every, 3, SR // 4, SR, 128)
    heard, one, every = heard_after(500, missing=1)
    with pytest.raises(BackendError, match="only 2 of 3 sweeps"):
        _delays(heard, one, every, 3, SR, SR, 128)
    with pytest.raises(BackendError, match="nothing like the test signal"):
        _delays(np.zeros_like(heard), one, every, 3, SR, SR, 128)
