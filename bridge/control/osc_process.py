"""OSC received in a process of its own, so a flood of fader moves never takes the GIL from the
audio callback (DESIGN §4: "move control into another process").

In-process, every datagram wakes a Python thread of the engine process, which takes the GIL the
audio callback needs, parses, validates and queues. Here a child process (``python -m
hushbridge.control.osc_process``, started by :class:`OscReceiveProcess`, which
:class:`~hushbridge.control.osc.OscServer` uses with ``process=True``) owns the receiving side
of the server's UDP socket and splits the traffic:

Fast path, handled entirely in the child
    A datagram that is one message ``/hb/<id>/<param>``, ``.../norm`` or ``/hb/<id>/bypass``
    with one ``f`` or ``i`` argument, finite, for an address of the parameter table the engine
    process sent (not a pattern; not a parameter whose effect checks values against its
    prepared state). The child clamps or scales it with the same :class:`~hushbridge.param.Param`
    and pushes it into a :class:`~hushbridge.control.params.ParamRing` in shared memory, which
    the audio callback drains at block start (:meth:`Engine.attach_ring`). So the engine process
    does nothing per message. When the ring is full, the child coalesces (latest value per
    parameter wins) and counts them, as :class:`~hushbridge.control.params.ControlPort` does.
    Every ``BATCH_S`` at most, the child sends the engine process the latest value per address
    with its sender (:meth:`Engine.record_remote_set`): ``/hb/get``, presets, MIDI feedback and
    the OSC feedback to registered clients (the sender excepted) follow from there. Feedback of
    fast-path changes is therefore coalesced to one message per address per batch: a tablet
    fader follows the final value, not every step of a 1,000 message/s flood.
Everything else, forwarded in order
    Commands (get, list, presets, register, subscribe, learn), bundles, patterns, malformed
    packets and values the fast path does not take go to the engine process unchanged; its
    :class:`~hushbridge.control.osc.OscController` handles them exactly as in-process and replies
    from the same socket (so to the sender's address and port). The pending batch goes first,
    and until the engine process has acknowledged a forwarded message (after a preset load: once
    the load is done) every later message is forwarded too: a ``/hb/get`` after a set reads the
    set value, and a set after a preset load reaches the loaded chain.

The engine process sends the table again whenever its generation changes (a chain or preset
loaded from any source); changes the child made against an older table are dropped by the audio
thread (generation check) and by :meth:`Engine.record_remote_set`, as for in-process changes
racing a swap.

If the child dies, the server goes on in-process (:class:`OscServer` starts its receive thread
on the same socket) and logs a warning; if the engine process dies, the child sees its pipe
close and exits.

.. note::
   The ring's indices are published with plain 8-byte stores in program order. That is a
   release store on x86-64 (TSO); on ARM64 it relies on the many instructions between the slot
   stores and the index store (there is no fence from Python).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

from hushbridge.control.osc_wire import _fast_message
from hushbridge.control.params import ParamRing
from hushbridge.param import Param

log = logging.getLogger(__name__)

ClientAddress = tuple[str, int]

BATCH_S = 0.02           # at most this often the child reports fast-path changes to the engine process
RING_CAPACITY = 1024     # slots of the shared ring
RETRY_MIN_MS = 2.0       # while changes wait for room in a full ring: retry this often,
RETRY_MAX_MS = 50.0      # backing off to this while nothing drains it
RECV_BURST = 256         # datagrams read per wake-up before the child looks at its pipe again
START_TIMEOUT_S = 10.0   # for the child to say it is ready
STOP_TIMEOUT_S = 2.0

SET, NORM, BYPASS_SET = 0, 1, 2
#: (address the change is reported under, chain slot, param index, Param, kind)
Entry = tuple[str, int, int, Param, int]


def table_entries(engine: Any) -> tuple[int, list[tuple[str, int, int, Param, int]]]:
    """The fast-path table of ``engine``'s current parameters: its generation and ``(address,
    slot, index, param, kind)`` rows, one per address the child may take (``/norm`` rows report under the
    parameter's address). Parameters whose effect refuses values by its prepared state
    (:meth:`Effect.check_value` overridden) are left out: the engine process checks those."""
    from hushbridge.control.params import BYPASS
    from hushbridge.effects.base import Effect

    rows: list[tuple[str, int, int, Param, int]] = []
    generation, chain, infos = engine.table_snapshot()
    for info in infos:
        if info.index <= BYPASS:  # the effect's bypass, or one channel's
            rows.append((info.address, info.slot, info.index, info.param, BYPASS_SET))
            rows.append((info.address + "/norm", info.slot, info.index, info.param, NORM))
            continue
        effect = chain[info.slot]
        if type(effect).check_value is not Effect.check_value:
            continue
        rows.append((info.address, info.slot, info.index, info.param, SET))
        rows.append((info.address + "/norm", info.slot, info.index, info.param, NORM))
    return generation, rows


class FastPath:
    """The child's routing, socket-free: :meth:`route` takes a datagram or says to forward it.

    Parameters
    ----------
    ring : ParamRing
        The shared ring the audio callback drains.
    """

    def __init__(self, ring: ParamRing) -> None:
        self.ring = ring
        self.generation = -1  # no table yet: forward everything
        self._table: dict[str, Entry] = {}
        self.forwarded = 0  # sequence number of the last forwarded message
        self.acked = 0      # the last one the engine process has finished with
        #: waiting for ring room, oldest first: (generation, slot, index) -> (value, order)
        self._pending: dict[tuple[int, int, int], tuple[float, float]] = {}
        self.coalesced = 0  # not yet reported
        #: latest per address, not yet reported: address -> (value, sender, order)
        self.batch: dict[str, tuple[float, ClientAddress, float]] = {}

    def set_table(self, generation: int, rows: list[tuple[str, int, int, Param, int]]) -> None:
        self._table = {address: (address[:-5] if kind == NORM else address, slot, index, param, kind)
                       for address, slot, index, param, kind in rows}
        self.generation = generation
        self.batch.clear()  # made against the old table: the engine process would drop them
        self._pending.clear()

    def route(self, data: bytes, client: ClientAddress) -> bool:
        """Apply ``data`` if it is a fast-path set (True); False: forward it."""
        if self.forwarded != self.acked or self.generation < 0:
            return False
        message = _fast_message(data)
        if message is None:
            return False
        entry = self._table.get(message.address)
        if entry is None:
            return False
        address, slot, index, param, kind = entry
        x = float(message.params[0])
        if not math.isfinite(x):
            return False  # the engine process answers /hb/error
        if kind == NORM:
            value = param.from_norm(x)
        elif kind == BYPASS_SET:
            if x not in (0.0, 1.0):
                return False
            value = x
        else:
            value = param.clamp(x)
        # when it was accepted: the engine keeps whichever change to a parameter was made last,
        # whichever way it came (this ring, its own, a flush of _pending after a newer one)
        order = time.monotonic()
        key = (self.generation, slot, index)
        if self._pending:
            self.flush_ring()
        if self._pending or not self.ring.push(self.generation, slot, index, value, 0.0, order):
            if key in self._pending:
                self.coalesced += 1
            self._pending[key] = (value, order)
        self.batch[address] = (value, client, order)
        return True

    def flush_ring(self) -> int:
        """Move waiting changes into the ring while it has room; return how many still wait."""
        pending = self._pending
        while pending:
            key = next(iter(pending))
            value, order = pending[key]
            if not self.ring.push(key[0], key[1], key[2], value, 0.0, order):
                break
            del pending[key]
        return len(pending)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def take_batch(self) -> tuple[int, list[tuple[str, float, ClientAddress, float]], int] | None:
        """``(generation, [(address, value, sender, order)...], coalesced)`` to report, or None."""
        if not self.batch and not self.coalesced:
            return None
        out = (self.generation, [(a, v, c, o) for a, (v, c, o) in self.batch.items()], self.coalesced)
        self.batch.clear()
        self.coalesced = 0
        return out


def _attach_shared(name: str) -> shared_memory.SharedMemory:
    """Open the engine process's shared memory without adopting it: before Python 3.13 every
    attach registers the segment with a resource tracker, which would unlink it when this
    process exits (the engine process owns and unlinks it)."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)  # type: ignore[call-arg]
    from multiprocessing import resource_tracker

    register = resource_tracker.register
    resource_tracker.register = lambda *a, **k: None  # type: ignore[assignment]
    try:
        return shared_memory.SharedMemory(name)
    finally:
        resource_tracker.register = register  # type: ignore[assignment]


def serve(sock: socket.socket, conn: Connection, ring: ParamRing) -> None:
    """The child's loop: receive, route, forward, report; returns when told to stop or when the
    engine process is gone (its end of the pipe closed)."""
    fast = FastPath(ring)
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN)
    next_report = time.monotonic()

    def report() -> None:
        nonlocal next_report
        batch = fast.take_batch()
        if batch is not None:
            conn.send(("set", *batch))
        next_report = time.monotonic() + BATCH_S

    retry_ms = RETRY_MIN_MS
    while True:
        timeout = None  # ms; None: until a datagram or a message from the engine process
        if fast.batch or fast.coalesced:
            timeout = max(0.0, next_report - time.monotonic()) * 1000.0
        if fast.waiting:  # retry the full ring about once a callback, less often while it stays full
            timeout = retry_ms if timeout is None else min(timeout, retry_ms)
        poller.poll(timeout)
        while conn.poll():
            msg = conn.recv()
            kind = msg[0]
            if kind == "table":
                if msg[1] >= fast.generation:  # generations only grow
                    fast.set_table(msg[1], msg[2])
            elif kind == "ack":
                fast.acked = max(fast.acked, msg[1])
            elif kind == "stop":
                return
        for _ in range(RECV_BURST):
            try:
                data, client = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ICMP port unreachable surfacing on some systems: keep going
                log.debug("OSC receive failed: %s", e)
                break
            if fast.route(data, client):
                continue
            report()  # what came before goes first
            fast.forwarded += 1
            conn.send(("raw", fast.forwarded, data, client))
        if fast.waiting:
            before = fast.waiting
            left = fast.flush_ring()
            # no room at all: the audio thread is not draining (stopped, device lost); back off
            retry_ms = RETRY_MIN_MS if left < before else min(RETRY_MAX_MS, retry_ms * 2)
        if (fast.batch or fast.coalesced) and time.monotonic() >= next_report:
            report()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="hushbridge OSC receive process (started by OscServer)")
    ap.add_argument("--sock-fd", type=int, required=True)
    ap.add_argument("--conn-fd", type=int, required=True)
    ap.add_argument("--ring", required=True, help="shared memory name of the ParamRing")
    ap.add_argument("--capacity", type=int, required=True)
    args = ap.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group, and so does the SIGTERM of
    # `timeout`, systemd or a container stop: the engine process decides when this one stops (it
    # sends "stop", or its end of the pipe closes when it dies), else it reported a lost receiver
    # while it was stopping cleanly
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    conn = Connection(args.conn_fd)
    sock = socket.socket(fileno=args.sock_fd)
    shm = _attach_shared(args.ring)
    ring = ParamRing(args.capacity, shm.buf)
    conn.send(("ready", os.getpid()))
    try:
        serve(sock, conn, ring)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the engine process is gone
    finally:
        del ring  # the ring's arrays view the segment: release them before closing it
        shm.close()
    return 0


class OscReceiveProcess:
    """The engine-process side: starts the child, keeps its table current, handles what it
    forwards and reports. Used by :class:`~hushbridge.control.osc.OscServer` (``process=True``).

    Parameters
    ----------
    server : OscServer
        Its socket (the child receives, this process sends), controller and ``send``.
    on_lost : callable
        Called (relay thread) when the child died while the server was running.
    """

    def __init__(self, server: Any, on_lost: Any) -> None:
        self.server = server
        self.engine = server.controller.engine
        self.on_lost = on_lost
        self._shm = shared_memory.SharedMemory(create=True, size=ParamRing.nbytes(RING_CAPACITY))
        self.ring = ParamRing(RING_CAPACITY, self._shm.buf)
        self._send_lock = threading.Lock()
        self._table_lock = threading.Lock()
        self._ack_lock = threading.Lock()
        self._sent_generation = -1
        self._ack_owed = 0
        self._stopping = False
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._relay: threading.Thread | None = None

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        sock_fd = self.server._sock.fileno()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hushbridge.control.osc_process", "--sock-fd", str(sock_fd),
                 "--conn-fd", str(theirs.fileno()), "--ring", self._shm.name, "--capacity", str(RING_CAPACITY)],
                pass_fds=(sock_fd, theirs.fileno()), stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        if not self._conn.poll(START_TIMEOUT_S):
            self._kill()
            raise RuntimeError(f"the OSC receive process did not start within {START_TIMEOUT_S:g} s")
        hello = self._conn.recv()
        if hello[0] != "ready":
            self._kill()
            raise RuntimeError(f"the OSC receive process answered {hello!r}")
        self.engine.attach_ring(self.ring)
        self.engine.add_listener(self._on_change)
        self._send_table()
        self._relay = threading.Thread(target=self._run, name=f"hushbridge-osc-relay:{self.server.port}", daemon=True)
        self._relay.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _send(self, msg: tuple[Any, ...]) -> None:
        conn = self._conn
        if conn is None:
            return
        with self._send_lock:
            try:
                conn.send(msg)
            except OSError:  # the child is gone: the relay thread notices and falls back
                pass

    def _send_table(self) -> None:
        with self._table_lock:  # taken and sent in one go: the child gets tables in order
            generation, rows = table_entries(self.engine)
            self._sent_generation = generation
            self._send(("table", generation, rows))

    def _on_change(self, address: str, value: float, source: object) -> None:
        """Engine listener: a change from any source; after a chain swap the table is new."""
        if self.engine.table_generation != self._sent_generation:
            self._send_table()

    def slow_done(self) -> None:
        """The OSC worker finished a slow request: acknowledge what waited for it."""
        with self._ack_lock:  # the relay and the worker both call this
            if not self._ack_owed or self.server.controller.slow_pending:
                return
            owed, self._ack_owed = self._ack_owed, 0
        if self.engine.table_generation != self._sent_generation:
            self._send_table()
        self._send(("ack", owed))

    def _run(self) -> None:
        conn, server = self._conn, self.server
        controller = server.controller
        engine = self.engine
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "set":
                _, generation, changes, coalesced = msg
                if coalesced:
                    engine.control.count_coalesced(coalesced)
                heard = set()
                for address, value, client, order in changes:
                    if client not in heard:
                        heard.add(client)
                        controller.meters.heard(client)
                    engine.record_remote_set(address, value, generation, order, source=client)
            elif kind == "raw":
                _, seq, data, client = msg
                try:
                    replies = controller.handle_datagram(data, client)
                except Exception:  # noqa: BLE001 - handle_datagram does not raise; belt and braces
                    log.exception("OSC datagram from %s failed", client)
                    replies = []
                for r in replies:
                    server.send(r.address, r.args, r.dest)
                if controller.slow_pending:
                    with self._ack_lock:
                        self._ack_owed = seq  # slow_done acknowledges once the load is in
                    self.slow_done()  # it may have finished already
                else:
                    if engine.table_generation != self._sent_generation:
                        self._send_table()
                    self._send(("ack", seq))
        if not self._stopping:
            log.warning("the OSC receive process exited (code %s); OSC goes on in the engine process",
                        self.proc.poll() if self.proc else None)
            self.engine.detach_ring(self.ring)
            self.engine.remove_listener(self._on_change)
            self.on_lost()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the child and the relay; free the shared ring. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._send(("stop",))
        if self.proc is not None:
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill()
        if self._conn is not None:
            self._conn.close()
        if self._relay is not None and self._relay is not threading.current_thread():
            self._relay.join(STOP_TIMEOUT_S)
        self.engine.detach_ring(self.ring)
        try:
            self.engine.remove_listener(self._on_change)
        except ValueError:
            pass
        # the audio thread may be inside one drain of the ring: let that callback finish
        time.sleep(0.01)
        self.ring = None  # type: ignore[assignment]
        try:
            self._shm.close()
        except BufferError:  # a view is still alive somewhere: leave the mapping, free the name
            pass
        self._shm.unlink()


if __name__ == "__main__":
    sys.exit(main())
