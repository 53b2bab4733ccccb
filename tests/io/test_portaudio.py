"""PortAudioBackend. There is no audio hardware on the test machines, but PortAudio's JACK host
API reaches the session's JACK dummy server, so the backend is tested with real streams there.

Measured through-delay via PortAudio's JACK host API (player -> PortAudio stream -> recorder,
blocksize 128 at 48 kHz): 128 frames, one period, added by PortAudio's JACK host API; the engine
adds only its chain's latency on top.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import JackRigProcess, db_to_gain, find_delay, wait_until

from hushbridge.effects import Chain, Gain
from hushbridge.engine import Engine
from hushbridge.errors import BackendError
from hushbridge.io.portaudio import PortAudioBackend, list_devices

KEYS = {"name", "index", "hostapi", "max_input_channels", "max_output_channels", "default_samplerate"}


def test_list_devices_shape():
    devices = list_devices()
    assert isinstance(devices, list)  # [] without devices, never an error
    for d in devices:
        assert set(d) == KEYS
        assert isinstance(d["index"], int) and isinstance(d["name"], str)


@pytest.fixture
def jack_device(jack_server):
    """Index of PortAudio's device on the session JACK server (PortAudio rescanned first)."""
    devices = list_devices(refresh=True)  # JACK appears only if the server ran at PortAudio init
    jack_devs = [d for d in devices if d["hostapi"].startswith("JACK")]
    if not jack_devs:
        pytest.skip("this PortAudio build has no JACK host API")
    d = jack_devs[0]
    assert d["max_input_channels"] >= 2 and d["max_output_channels"] >= 2
    assert d["default_samplerate"] == jack_server.sample_rate
    return d["index"]


def test_missing_device_is_a_clear_error(jack_device):
    engine = Engine(Chain([Gain()]), channels=2)
    with pytest.raises(BackendError, match=r"Error opening PortAudio stream on device 'no-such-device'.*devices: "):
        PortAudioBackend(engine, device="no-such-device")
    with pytest.raises(BackendError, match=r"device 4242.*devices: "):  # a bad index lists them too
        PortAudioBackend(engine, device=4242)
    with pytest.raises(ValueError, match="blocksize"):
        PortAudioBackend(engine, device=jack_device, blocksize=-1)


def test_bad_arguments_are_clear_errors_before_any_stream_opens():
    engine = Engine(Chain([Gain()]), channels=2)
    with pytest.raises(ValueError, match="device must be an index, a name"):
        PortAudioBackend(engine, device=0.5)
    with pytest.raises(ValueError, match=r"blocksize must be an int in 0\.\.65536"):
        PortAudioBackend(engine, blocksize=100_000)


def test_no_devices_at_all_says_so():
    if list_devices(refresh=True):
        pytest.skip("this machine has PortAudio devices")
    with pytest.raises(BackendError, match="PortAudio finds no audio devices"):
        PortAudioBackend(Engine(Chain([Gain()]), channels=2))


def test_callback_converts_layout_and_counts_xruns(jack_device):
    """The callback alone: (frames, channels) in -> engine -> (frames, channels) out, and the
    overflow/underflow flags become engine xruns."""
    engine = Engine(Chain([Gain(gain_db=-6)]), channels=2)
    backend = PortAudioBackend(engine, device=jack_device, blocksize=128)
    try:
        engine.prepare(backend.sample_rate, 128)
        indata = np.empty((128, 2), dtype=np.float32)
        indata[:, 0] = np.linspace(-1, 1, 128)
        indata[:, 1] = 0.25
        outdata = np.full((128, 2), np.nan, dtype=np.float32)
        ok = SimpleNamespace(input_overflow=False, output_underflow=False)
        backend._callback(indata, outdata, 128, None, ok)
        np.testing.assert_allclose(outdata, indata * db_to_gain(-6), rtol=1e-6)
        assert engine.xruns == 0
        backend._callback(indata, outdata, 128, None, SimpleNamespace(input_overflow=True, output_underflow=False))
        backend._callback(indata, outdata, 128, None, SimpleNamespace(input_overflow=False, output_underflow=True))
        assert engine.xruns == 2
        # a shorter callback than the block size still converts exactly
        out64 = np.zeros((64, 2), dtype=np.float32)
        backend._callback(indata[:64], out64, 64, None, ok)
        np.testing.assert_allclose(out64, indata[:64] * db_to_gain(-6), rtol=1e-6)
    finally:
        backend.close()


def test_stream_through_jack_host_api(jack_device):
    """A real PortAudio stream: the output is the input x gain, delayed by a fixed amount."""
    import jack

    engine = Engine(Chain([Gain(gain_db=-6)]), channels=2)
    clients = JackRigProcess(2, names=("hb-pa-player", "hb-pa-recorder"))
    probe = jack.Client("hb-pa-probe", no_start_server=True)
    try:
        with PortAudioBackend(engine, device=jack_device, blocksize=128) as backend:
            assert backend.active and backend.sample_rate == 48000 and backend.block_size == 128
            lat_in, lat_out = backend.latency
            assert lat_in >= 0 and lat_out > 0
            assert wait_until(lambda: engine.blocks > 10, 2.0)
            ours = [p for p in probe.get_ports(is_audio=True) if p.name.startswith("PortAudio")]
            ins = sorted(p.name for p in ours if p.is_input)
            outs = sorted(p.name for p in ours if p.is_output)
            assert len(ins) == 2 and len(outs) == 2, [p.name for p in ours]
            clients.connect(ins, outs)
            time.sleep(0.3)
            sig = (np.random.default_rng(7).standard_normal((2, 4800)) * 0.1).astype(np.float32)
            for attempt in range(5):  # retake if an xrun disturbed the take
                x0 = engine.xruns
                y, complete = clients.take(sig, extra=1024)
                if complete and engine.xruns == x0:
                    break
            assert complete
            d = find_delay(sig[0], y[0], 1024)
            assert d in (0, backend.block_size), f"through-delay {d} frames"
            np.testing.assert_allclose(y[:, d:d + sig.shape[1]], sig * db_to_gain(-6), rtol=1e-6, atol=1e-9)
            assert engine.callback_errors == 0
        assert not backend.active
        backend.close()  # idempotent
        assert not any(p.name.startswith("PortAudio") for p in probe.get_ports())
    finally:
        probe.close()
        clients.close()
