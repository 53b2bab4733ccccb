"""isolate (voice isolation): the shipped model as an Effect. Latency exact, block sizes, and what
it is for, on material made here (espeak-ng speech over synthesized music that no training or
evaluation set holds): music alone is taken away, music under a voice mostly, the voice stays.

The runtime itself is ModelEffect's, tested in test_denoise.py with small graphs."""
from __future__ import annotations

import numpy as np
import pytest

from speech_material import SR, music, si_sdr, stream, through, tts

from hushbridge.effects import EFFECTS, Denoise, ModelEffect, VoiceIsolation
from hushbridge.models.runtime import default_model_path

# what the shipped weights must do at the default 40 dB limit (step 7200, session 28, on the
# material below: music alone 26.1 dB down, where the denoiser takes 8.4; a voice 10 dB over the
# music 0.8 dB down, SI-SDR +1.6 dB. Not asserted, a weakness: at 0 dB SNR this espeak voice over
# these synthesized chords comes out 4.8 dB down, SI-SDR +0.3 dB over the input's; step 4350 had
# 6.5 dB down and -1.2 dB)
LEAD_DB = 20.0
GAIN_DB = 0.5

shipped = pytest.mark.skipif(not default_model_path("isolate.onnx").is_file(),
                             reason="models/isolate.onnx is not shipped")


def test_isolate_is_registered():
    assert EFFECTS["isolate"] is VoiceIsolation and issubclass(VoiceIsolation, ModelEffect)
    assert VoiceIsolation.model_file == "isolate.onnx"


@shipped
@pytest.mark.parametrize("block", [1, 128, 1000])
def test_latency_is_exact_and_block_sizes_give_the_same_output(block):
    e = VoiceIsolation(reduction_db=1e-3, overload_budget=0.0)
    x = np.zeros(9600, np.float32)
    x[3000] = 0.5
    y = stream(e, x, block)
    assert e.latency_samples == 479
    assert int(np.argmax(np.abs(y))) == 3000 + e.latency_samples
    m = music(1.5)
    v = tts("Blocks of any size.")
    m[:v.size] += v
    ref = through(VoiceIsolation(), m, 128)
    np.testing.assert_allclose(through(VoiceIsolation(), m, block), ref, atol=1e-6)


def _voice_over_music(snr_db: float, voice: str = "en-us"):
    """One second of music alone, then a phrase over it at ``snr_db`` (active speech against music)."""
    v = tts("Can you hear me now? Yes, loud and clear, but there is music playing behind me.", voice)
    m = music(1.0 + v.size / SR + 0.5)
    active = v[np.abs(v) > 1e-3]
    v = v * (np.sqrt(np.mean(m ** 2)) / np.sqrt(np.mean(active ** 2)) * 10 ** (snr_db / 20))
    speech = np.zeros_like(m)
    speech[SR:SR + v.size] = v
    return speech + m, speech


def _level(a, where):
    return 10 * np.log10(np.mean(a[where].astype(np.float64) ** 2) + 1e-20)


@shipped
def test_music_alone_goes_far_further_than_through_the_denoiser():
    x, _ = _voice_over_music(10.0)
    lead = slice(int(0.2 * SR), int(0.9 * SR))  # music alone (after the model's first 200 ms)
    cut = _level(x, lead) - _level(through(VoiceIsolation(), x), lead)
    assert cut > LEAD_DB
    assert cut > _level(x, lead) - _level(through(Denoise(), x), lead) + 10.0


@shipped
def test_a_voice_over_quieter_music_stays_and_comes_out_cleaner():
    x, speech = _voice_over_music(10.0)
    y = through(VoiceIsolation(), x)
    words = slice(SR, SR + int(np.nonzero(speech[SR:])[0][-1]))
    assert _level(y, words) > _level(speech, words) - 3.0
    assert si_sdr(speech, y) > si_sdr(speech, x) + GAIN_DB
