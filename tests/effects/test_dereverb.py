"""dereverb: the shipped model as an Effect. Latency exact, block sizes and stereo, and what it
is for, on material made here (espeak-ng speech, a room from a seed no training run used):
the room's tail after a phrase goes, a dry voice passes.

The runtime itself (resampling, overload, reduction limit...) is ModelEffect's, tested in
test_denoise.py with small graphs."""
from __future__ import annotations

import numpy as np
import pytest

from speech_material import SR, convolve, room, si_sdr, stream, through, tts

from hushbridge.effects import EFFECTS, Dereverb, ModelEffect
from hushbridge.models.runtime import default_model_path

# what the shipped weights must do at the default 18 dB limit (step 4100, session 27: the tail
# 15.3-15.7 dB down, SI-SDR against the 20 ms target +1.6 dB, where the denoiser loses 0.5-1.3 dB;
# a dry voice out at 27.7 dB SI-SDR, -0.05 dB in level)
TAIL_DB = 12.0
GAIN_DB = 1.0
DRY_SI_SDR = 20.0

shipped = pytest.mark.skipif(not default_model_path("dereverb.onnx").is_file(),
                             reason="models/dereverb.onnx is not shipped")


def test_dereverb_is_registered():
    assert EFFECTS["dereverb"] is Dereverb and issubclass(Dereverb, ModelEffect)
    assert Dereverb.model_file == "dereverb.onnx"


@shipped
@pytest.mark.parametrize("block", [1, 128, 1000])
def test_latency_is_exact_and_block_sizes_give_the_same_output(block):
    e = Dereverb(reduction_db=1e-3, overload_budget=0.0)  # analysis and synthesis only (see test_denoise)
    x = np.zeros(9600, np.float32)
    x[3000] = 0.5
    y = stream(e, x, block)
    assert e.latency_samples == 479
    assert int(np.argmax(np.abs(y))) == 3000 + e.latency_samples
    s = convolve(tts("Blocks of any size."), room(0.5))
    ref = through(Dereverb(), s, 128)
    np.testing.assert_allclose(through(Dereverb(), s, block), ref, atol=1e-6)


@shipped
def test_stereo_channels_unlinked_are_each_their_own():
    from hushbridge.effects import render

    a = convolve(tts("Left channel."), room(0.6))
    b = convolve(tts("Right channel speaks longer than the left."), room(0.9, seed=5))
    n = max(a.size, b.size)
    # a floor above the effect's silence level on both: after silence the effect restarts every
    # channel on the grid of the first channel to sound (ModelEffect), which a mono run cannot match
    floor = 1e-3 * np.random.default_rng(1).standard_normal((2, n)).astype(np.float32)
    floor[:, 0] = 1e-2  # both start sounding at sample 0
    x = np.stack([np.pad(a, (0, n - a.size)), np.pad(b, (0, n - b.size))]) + floor
    y = render(Dereverb(overload_budget=0.0, link="none"), x, SR, block_size=128)
    np.testing.assert_allclose(y[0], through(Dereverb(), x[0]), atol=1e-6)
    np.testing.assert_allclose(y[1], through(Dereverb(), x[1]), atol=1e-6)
    # linked (the default for a stereo pair) the network hears both rooms' mid: not each alone
    linked = render(Dereverb(overload_budget=0.0), x, SR, block_size=128)
    assert np.abs(linked - y).max() > 1e-3


@shipped
@pytest.mark.parametrize("rt60", [0.5, 0.9])
def test_the_rooms_tail_after_a_phrase_goes_and_the_phrase_stays(rt60):
    from hushbridge.models.train.data import early_part

    s = np.concatenate([tts("The quick brown fox jumps over the lazy dog near the river bank."),
                        np.zeros(SR, np.float32)])
    h = room(rt60).astype(np.float32)
    wet, target = convolve(s, h), convolve(s, early_part(h, 20.0))
    y = through(Dereverb(), wet)
    end = int(np.nonzero(np.abs(s) > 1e-3)[0][-1])
    tail = slice(end + 2400, end + 2400 + int(0.3 * SR))  # 50..350 ms after the last word

    def level(x, where):
        return 10 * np.log10(np.mean(x[where].astype(np.float64) ** 2) + 1e-20)

    assert level(y, tail) < level(wet, tail) - TAIL_DB, (level(y, tail), level(wet, tail))
    speech = slice(0, end)
    assert level(y, speech) > level(target, speech) - 3.0  # the words are not turned down with the room
    assert si_sdr(target, y) > si_sdr(target, wet) + GAIN_DB


@shipped
def test_a_dry_voice_passes():
    s = tts("A voice recorded close to the microphone, in a dead room, needs nothing taken away.", "en-gb+f3")
    y = through(Dereverb(), s)
    assert si_sdr(s, y) > DRY_SI_SDR
    assert abs(10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(s.astype(np.float64) ** 2))) < 1.5
