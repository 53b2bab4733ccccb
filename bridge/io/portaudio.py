"""PortAudio backend (through sounddevice): any device PortAudio knows, on any OS.

>>> from hushbridge.engine import Engine
>>> from hushbridge.effects import Chain, Gain
>>> engine = Engine(Chain([Gain(gain_db=-6)]), channels=2)
>>> with PortAudioBackend(engine, device="USB Audio", blocksize=128) as backend:  # doctest: +SKIP
...     print(backend.latency)

sounddevice hands the callback ``(frames, channels)`` arrays; the engine works on
``(channels, frames)``. The conversion happens here and only here, into arrays allocated when
the stream opens. The callback follows :mod:`hushbridge.io.base`::

    callback(indata, outdata, frames, time, status) -> None     # PortAudio's audio thread
        inp[:, :frames] = indata.T             # preallocated (channels, frames) float32
        engine.process(inp, out)               # never raises, fills all of `out`
        outdata[:] = out.T                     # write into PortAudio's buffer, never rebind it

``status.input_overflow`` or ``status.output_underflow`` count as an xrun
(``engine.note_xrun()``). PortAudio has no place to publish latency to other programs;
:attr:`PortAudioBackend.latency` reports the stream's own input and output latency.

PortAudio scans its host APIs once, when it is initialised (at ``import sounddevice``). A JACK
server started later appears only after :func:`refresh_devices`.
"""
from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable

import numpy as np

from hushbridge.effects.base import MAX_BLOCK
from hushbridge.engine import Engine
from hushbridge.errors import BackendError
from hushbridge.io.base import Backend

_FALLBACK_MAX_BLOCK = 1024  # engine block size when PortAudio picks the buffer size itself
_CAPACITY = 8192  # largest callback handled when the block size is left to PortAudio
STOP_TIMEOUT_S = 2.0  # how long stop/close may wait for PortAudio before giving up on the stream
log = logging.getLogger(__name__)


def _sd():
    """sounddevice, imported lazily (importing it initialises PortAudio)."""
    try:
        import sounddevice
    except OSError as e:  # the PortAudio library is missing
        raise BackendError(f"PortAudio is not available ({e})", "loading PortAudio") from e
    return sounddevice


def refresh_devices() -> None:
    """Re-initialise PortAudio so that devices and host APIs that appeared since (a JACK server,
    a USB interface) are listed. Only call it while no PortAudio stream is open."""
    sd = _sd()
    sd._terminate()
    sd._initialize()


def _device_infos(sd, device) -> list[tuple[str, dict]]:  # noqa: ANN001
    """``(kind, info)`` of the input and the output device that ``device`` (as
    :class:`PortAudioBackend` takes it) opens, for the ones PortAudio can name."""
    infos = []
    for kind, dev in zip(("input", "output"), device if isinstance(device, tuple) else (device, device)):
        try:
            infos.append((kind, sd.query_devices(dev, kind)))
        except (ValueError, sd.PortAudioError):
            continue
    return infos


def _channels_of(sd, device) -> str:  # noqa: ANN001
    """``device`` named, with the channels it has in and out."""
    infos = _device_infos(sd, device)
    if not infos:
        return "the device"
    names = " / ".join(dict.fromkeys(repr(info["name"]) for _, info in infos))
    counts = " and ".join(f"{info[f'max_{kind}_channels']} {kind}" for kind, info in infos)
    return f"the device {names} has {counts} channels"


def _rates_of(sd, device) -> str:  # noqa: ANN001
    """``device`` named, with its default sample rate(s)."""
    parts = dict.fromkeys(f"{info['name']!r} ({info['default_samplerate']:g} Hz)" for _, info in _device_infos(sd, device))
    return "the device " + " / ".join(parts) if parts else "the device"


def list_devices(refresh: bool = False) -> list[dict]:
    """Every PortAudio device as a dict, ``[]`` when there are none (or no PortAudio).

    Keys: ``name``, ``index``, ``hostapi`` (host API name), ``max_input_channels``,
    ``max_output_channels``, ``default_samplerate``. ``refresh=True`` rescans first
    (see :func:`refresh_devices`).
    """
    try:
        sd = _sd()
        if refresh:
            refresh_devices()
        apis = sd.query_hostapis()
        devices = sd.query_devices()
    except BackendError:
        return []
    except sd.PortAudioError:
        return []
    result = []
    for d in devices:
        result.append({
            "name": d["name"],
            "index": int(d["index"]),
            "hostapi": apis[d["hostapi"]]["name"],
            "max_input_channels": int(d["max_input_channels"]),
            "max_output_channels": int(d["max_output_channels"]),
            "default_samplerate": float(d["default_samplerate"]),
        })
    return result


class PortAudioBackend(Backend):
    """Run an :class:`~hushbridge.engine.Engine` on a PortAudio duplex stream.

    Parameters
    ----------
    engine : Engine
        The engine; ``engine.channels`` channels in and out.
    device : int or str or pair, optional
        Device index, or a (sub)string of its name as sounddevice matches it
        (``"JACK"``, ``"USB Audio"``), or an ``(input, output)`` pair. Default: PortAudio's
        default devices.
    samplerate : int, optional
        Default: the device's default sample rate.
    blocksize : int, optional
        Frames per callback; ``None`` or ``0`` lets PortAudio choose (and vary) it.
    latency : {"low", "high"} or float
        Suggested latency, as sounddevice takes it.

    Raises
    ------
    BackendError
        The device does not exist, lacks the channels, or PortAudio refuses the stream; the
        message names the operation and the device.
    """

    name = "portaudio"

    def __init__(
        self,
        engine: Engine,
        device: int | str | tuple | None = None,
        samplerate: int | None = None,
        blocksize: int | None = None,
        latency: str | float = "low",
    ) -> None:
        super().__init__(engine)
        if blocksize is not None and (not isinstance(blocksize, (int, np.integer)) or not 0 <= blocksize <= MAX_BLOCK):
            raise ValueError(f"blocksize must be an int in 0..{MAX_BLOCK} or None, got {blocksize!r}")
        if device is not None and (isinstance(device, bool) or not isinstance(device, (int, np.integer, str, tuple))):
            raise ValueError(f"device must be an index, a name, an (input, output) pair or None, got {device!r}")
        self.device = device
        self._blocksize = int(blocksize or 0)
        self._stream = None
        self._active = False
        self._abandoned = False
        sd = _sd()
        op = f"opening PortAudio stream on {'the default device' if device is None else f'device {device!r}'}"
        try:
            self._stream = sd.Stream(
                device=device,
                samplerate=samplerate,
                blocksize=self._blocksize,
                channels=engine.channels,
                dtype="float32",
                latency=latency,
                callback=self._callback,
                prime_output_buffers_using_stream_callback=False,
            )
        except (ValueError, sd.PortAudioError) as e:  # no such device, ambiguous name, bad channel count
            devices = list_devices()
            if not devices:
                raise BackendError("PortAudio finds no audio devices on this machine (no sound card or sound "
                                   "server; --backend jack runs on a JACK server)", op) from e
            if "number of channels" in str(e).lower():
                raise BackendError(f"{_channels_of(sd, device)}: {engine.channels} asked for ({e}); ask for fewer "
                                   "(--channels) or pick a device that has them (`hushbridge devices`)", op) from e
            if samplerate and "sample rate" in str(e).lower():
                raise BackendError(f"{_rates_of(sd, device)} does not take {samplerate} Hz ({e}); leave the rate "
                                   "out to use the device's own, or pick one that has it (`hushbridge devices` "
                                   "lists each device's rate)", op) from e
            names = ", ".join(f"{d['index']}: {d['name']!r}" for d in devices)
            raise BackendError(f"{e} (devices: {names})", op) from e
        capacity = self._blocksize or _CAPACITY
        self._inp = np.zeros((engine.channels, capacity), dtype=np.float32)
        self._out = np.zeros((engine.channels, capacity), dtype=np.float32)
        # views for the nominal size, so the usual callback slices nothing
        self._nominal = (self._inp, self._out) if self._blocksize else None

    # == properties =============================================================================
    @property
    def stream(self):
        """The underlying :class:`sounddevice.Stream`."""
        return self._stream

    @property
    def sample_rate(self) -> int:
        return int(self._stream.samplerate)

    @property
    def block_size(self) -> int:
        """Frames per callback (0: PortAudio chooses and may vary it)."""
        return int(self._stream.blocksize)

    @property
    def latency(self) -> tuple[float, float]:
        """``(input, output)`` latency of the stream in seconds, as PortAudio reports it."""
        lat = self._stream.latency
        return (float(lat[0]), float(lat[1])) if isinstance(lat, tuple) else (float(lat), float(lat))

    @property
    def active(self) -> bool:
        return self._active

    # == lifecycle ==============================================================================
    def prepare(self) -> None:
        """Prepare the engine for the stream's format (nothing when it is already)."""
        spec = self.engine.spec
        size = self._blocksize or _FALLBACK_MAX_BLOCK
        if spec is None or spec.sample_rate != self.sample_rate or spec.max_block_size != size:
            self.engine.prepare(self.sample_rate, size)

    def start(self) -> None:
        """Prepare the engine for the stream's format and start the stream."""
        if self._active:
            return
        if self._stream is None or self._stream.closed:
            raise BackendError("the stream is closed", "starting PortAudio stream")
        self.prepare()
        self.engine.freeze_gc()
        try:
            self._stream.start()
        except _sd().PortAudioError as e:
            raise BackendError(str(e), f"starting PortAudio stream on device {self.device!r}") from e
        self._active = True
        lat_in, lat_out = self.latency
        self.engine.device_latency_samples = round((lat_in + lat_out) * self.sample_rate)
        self.engine.attach(True)
        self._start_housekeeping()
        self.engine.freeze_gc()

    def stop(self) -> None:
        """Stop the stream (PortAudio plays out what is queued). Idempotent."""
        if not self._active:
            return
        self._active = False
        self._stop_housekeeping()
        if self._stream is not None and not self._stream.closed:
            if self._call_with_timeout(self._stream.stop, "stop"):
                self.engine.attach(False)

    def close(self) -> None:
        """Stop and close the stream. Idempotent."""
        self.stop()
        if self._stream is not None and not self._stream.closed and not self._abandoned:
            self._call_with_timeout(self._stream.close, "close")

    def _call_with_timeout(self, fn: Callable[..., object], what: str) -> bool:
        """``fn(ignore_errors=True)``, given up after :data:`STOP_TIMEOUT_S`: PortAudio waits
        forever for a device or sound server that has gone (its JACK host API does, after the
        server dies), which would make Ctrl-C and SIGTERM hang."""
        t = threading.Thread(target=fn, kwargs={"ignore_errors": True}, name=f"portaudio-{what}", daemon=True)
        t.start()
        t.join(STOP_TIMEOUT_S)
        if t.is_alive():
            if not self._abandoned:
                # sounddevice's exit hook stops and closes the last stream and terminates PortAudio:
                # the same wait, at interpreter exit, where nothing times it out (the process hung
                # for good after its JACK server was killed, deaf to SIGTERM)
                atexit.unregister(_sd()._exit_handler)
            self._abandoned = True
            log.warning("PortAudio did not %s the stream within %.0f s (device or sound server gone?); "
                        "leaving it", what, STOP_TIMEOUT_S)
            return False
        return True

    # == real time ==============================================================================
    def _callback(self, indata: np.ndarray, outdata: np.ndarray, frames: int, time: object, status: object) -> None:
        """sounddevice stream callback. See the module docstring for the contract."""
        if status.input_overflow or status.output_underflow:
            self.engine.note_xrun()
        nominal = self._nominal
        if nominal is not None and frames == nominal[0].shape[1]:
            inp, out = nominal
        elif frames <= self._inp.shape[1]:
            inp, out = self._inp[:, :frames], self._out[:, :frames]
        else:
            outdata.fill(0.0)
            self.engine.late_blocks += 1
            return
        np.copyto(inp, indata.T)
        self.engine.process(inp, out)
        outdata[:] = out.T
