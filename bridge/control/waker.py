"""A wake-up that a real-time thread can give without blocking, taking a lock or letting go of
the GIL: a self-pipe.

The JACK MIDI input's process hook runs inside the audio callback; the service thread that
parses what it queued used to poll every millisecond (a thousand wake-ups a second, idle or
not, and up to a millisecond of added latency). Now the hook wakes it when a cycle brought
events. ``threading.Event.set`` takes a lock the waiting thread holds; ``os.write`` lets the
GIL go, after which the audio thread would have to win it back from whichever thread took it.
So :meth:`Waker.set` writes one byte to a non-blocking pipe through libc called with the GIL
kept (``ctypes.PyDLL``), at most once until the reader clears it.

POSIX only (:data:`AVAILABLE`); elsewhere callers keep polling.
"""
from __future__ import annotations

import ctypes
import os
import select

try:
    _write = ctypes.PyDLL(None).write  # PyDLL: the call keeps the GIL
    _write.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
    _write.restype = ctypes.c_ssize_t
    AVAILABLE = os.name == "posix"
except (OSError, AttributeError, TypeError):  # no libc symbol table (Windows)
    _write = None
    AVAILABLE = False


class Waker:
    """``set`` / ``wait`` / ``clear`` like :class:`threading.Event`, with ``set`` safe in a
    real-time callback (see the module docstring). One waiting thread."""

    def __init__(self) -> None:
        if not AVAILABLE:
            raise OSError("Waker needs POSIX pipes and libc")
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)  # a full pipe already means "awake": never wait on it
        self._byte = ctypes.create_string_buffer(1)
        self._pending = False
        self._poll = select.poll()
        self._poll.register(self._r, select.POLLIN)

    def set(self) -> None:
        if not self._pending:
            self._pending = True
            _write(self._w, self._byte, 1)  # -1 (EAGAIN, EBADF after close) needs no handling

    def is_set(self) -> bool:
        return self._pending

    def wait(self, timeout: float | None = None) -> bool:
        """Until :meth:`set` or ``timeout`` seconds; True when set."""
        if self._pending:
            return True
        if self._r < 0:  # closed
            return True
        # poll, not select: select refuses descriptors from FD_SETSIZE (1024) on, which a busy
        # process reaches, and a wait that fails at once would spin
        self._poll.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
        return self._pending

    def clear(self) -> None:
        """Clear before looking at what the setter published: a set after this wakes again."""
        self._pending = False
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        """Close the pipe, once no thread can call :meth:`set` any more (a closed number can be
        reused by the next file opened); dropping the last reference closes it too."""
        fds = (getattr(self, "_r", -1), getattr(self, "_w", -1))  # also after a failed __init__
        self._r = self._w = -1
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __del__(self) -> None:
        self.close()
