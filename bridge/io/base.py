"""One Backend interface for every way audio reaches the engine (JACK, PortAudio, files).

A backend owns the device or file, asks the engine to ``prepare`` for the device's format,
calls ``engine.process(inp, out)`` with ``(channels, frames)`` float32 C-contiguous arrays for
every block, reports xruns with ``engine.note_xrun()``, and publishes the engine's latency where
the driver has a place for it. The engine never knows which backend runs it.

Callback contract (what a backend's driver callback must do, in this order)::

    copy the device's input into a preallocated (channels, frames) float32 array `inp`
    engine.process(inp, out)          # never raises; fills every sample of `out`
    copy `out` into the device's output buffers   (write into them: buf[:] = x, never buf = x)

No allocation, lock, logging, sleep or I/O may happen there.
"""
from __future__ import annotations

import abc
import threading

from hushbridge.engine import Engine

HOUSEKEEPING_S = 0.005       # upkeep interval while coalesced changes wait or a chain swap is under way
HOUSEKEEPING_IDLE_S = 0.25   # otherwise (retired chains, a fused-run switch); each wake-up takes the GIL


class Backend(abc.ABC):
    """Base class of audio backends. Use as a context manager: ``with JackBackend(engine) as b:``."""

    name = "backend"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._keeper: threading.Thread | None = None
        self._keeping = threading.Event()

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int: ...

    @property
    @abc.abstractmethod
    def block_size(self) -> int: ...

    def prepare(self) -> None:
        """Prepare the engine for the device's format now, before :meth:`start` (which then does
        not prepare it again): what must see the engine's first block (a recorder) attaches in
        between."""
        self.engine.prepare(self.sample_rate, self.block_size)

    @abc.abstractmethod
    def start(self) -> None:
        """Prepare the engine for the device format and start calling it."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop calling the engine. Safe to call twice."""

    def close(self) -> None:
        self.stop()

    @property
    def lost(self) -> str:
        """Why the device or server is gone ("" while it is there, as far as the backend knows)."""
        return ""

    def publish_latency(self, samples: int) -> None:
        """Tell the driver and hosts the engine's latency (default: nowhere to tell)."""

    # -- non-RT upkeep thread shared by live backends ------------------------------------------
    def _start_housekeeping(self, interval: float = HOUSEKEEPING_S, idle: float = HOUSEKEEPING_IDLE_S) -> None:
        self.engine.add_latency_listener(self.publish_latency)
        self._keeping.clear()
        engine, stop = self.engine, self._keeping
        waiting = engine.control.waiting

        def loop() -> None:
            while not stop.is_set():
                waiting.clear()
                engine.housekeeping()
                # changes wait for room in the full hand-off ring, or a swap's latency is to be
                # announced once the audio thread has done it
                if engine.control.pending or engine.swapping:
                    stop.wait(interval)
                else:  # asleep until a change starts to wait or a chain is loaded
                    waiting.wait(idle)

        self._keeper = threading.Thread(target=loop, name=f"{self.name}-housekeeping", daemon=True)
        self._keeper.start()

    def _stop_housekeeping(self) -> None:
        self._keeping.set()
        self.engine.control.waiting.set()
        if self._keeper is not None:
            self._keeper.join(timeout=1.0)
            self._keeper = None
        self.engine.remove_latency_listener(self.publish_latency)

    def __enter__(self) -> "Backend":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
