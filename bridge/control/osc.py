"""OSC control of a running :class:`~hushbridge.engine.Engine` (DESIGN §3).

Routing is kept apart from transport (STYLE rule 7):

:class:`OscController`
    Socket-free. Owns a python-osc :class:`~pythonosc.dispatcher.Dispatcher` that maps every
    address to one small handler, and turns one datagram into engine calls plus replies:
    ``controller.handle_datagram(data, client_address) -> list[Reply]``.
:class:`OscServer`
    A thin UDP server: one thread doing blocking ``recvfrom`` (with a timeout so ``stop`` is
    prompt), feeding ``(bytes, client_address)`` to the controller and sending the replies back
    from the same socket, so they reach the sender's address *and* port.

Address space (requests → replies; "the sender" is the UDP source address and port):

===============================  =====================  ==============================================
request                          args                   reply / effect
===============================  =====================  ==============================================
``/hb/<id>/<param>``             number                 ``engine.set(..., clamp=True)``
``/hb/<id>/<param>/norm``        number 0..1            ``engine.set_norm``
``/hb/<id>/bypass``              0/1 (int, float, T/F)  bypass (smoothed by the chain); its
                                                        ``/norm`` takes 0..1 (on from 0.5)
``/hb/get``                      address                ``/hb/value <address> <value f> <display s>``
                                                        (``<param>/norm``: the fader position 0..1)
``/hb/list``                                            ``/hb/param <address> <min> <max> <default>
                                                        <value> <unit> <display>`` per parameter,
                                                        then ``/hb/list/end <count i>``
``/hb/preset/load``              name                   ``engine.load_preset(name)``
``/hb/preset/save``              name                   ``presets_save(name)`` (OscServer: the user
                                                        preset folder), then ``/hb/preset/saved
                                                        <name> [note]`` to the sender (the note:
                                                        it replaced a preset or shadows a built-in)
``/hb/register``                 [port] ["norm"]        feedback ``<address> <value f>`` of every
                                                        change to this client (``port``: another
                                                        port on the sender's host), except the
                                                        changes it made itself (with ``norm``,
                                                        each parameter's also as
                                                        ``<address>/norm <0..1 f>``, for faders
                                                        that only know 0..1); also
                                                        ``/hb/engine/latency_samples <f>`` when
                                                        the latency changes, and published values
                                                        (``/hb/transport/...``)
``/hb/unregister``               [port]                 stop that feedback
                                                        (one feedback port per sender: a second
                                                        ``/hb/register`` from the same send port
                                                        moves it, as an app whose receive port
                                                        was changed in its settings needs)
``/hb/subscribe``                address rate_hz        meters ``/hb/meter/<name> <values...>`` to
                                 [port]                 ``port`` on the sender's host, else its
                                                        registered port, else the sender; see
                                                        :mod:`hushbridge.control.meters`
``/hb/unsubscribe``              [address [port]]       stop one meter (all with no or an empty
                                                        address)
``/hb/learn``                    address                the learn handler (MIDI) maps the next
                                                        control moved to ``address`` (MIDI's:
                                                        ``/hb/learn/armed``, then ``/done``)
``/hb/learn/cancel``                                    the learn handler stops learning (MIDI's:
                                                        ``/hb/learn/cancelled``)
``/hb/host/transport``           tempo playing beat     an editor's transport (the Ableton Remote
                                                        Script), published as
                                                        ``/hb/transport/tempo_bpm``, ``playing``,
                                                        ``beat``
``/hb/host/track``               index name volume_db   an editor's track (index from 1), sent on to
                                                        the registered clients; ``track_count n``
                                                        forgets those past n; ``/hb/host/tracks``
                                                        answers them all, then ``/hb/host/tracks/end``
``/hb/record/start``                                    start a take (``run --record``), then
                                                        ``/hb/record/status`` to the sender (and
                                                        every registered client)
``/hb/record/stop``                                     end it, then the same
``/hb/record/status``                                   ``/hb/record/status <state s> <seconds f>
                                                        <file s> <lost_s f> <error s>``, state
                                                        ``recording``, ``stopped`` or ``armed``
(anything rejected)                                     ``/hb/error <text>``; ``dropped_messages`` += 1
===============================  =====================  ==============================================

Address patterns (``*``, ``?``, ``[a-z]``, ``[!x]``, ``{a,b}``) are matched against the parameter
addresses only (``/hb/<id>/<param>``, ``.../norm``, ``/hb/<id>/bypass``), never against commands:
``/hb/*/bypass 1`` bypasses every effect, ``/hb/{gain,gain_2}/gain_db -6`` sets two gains. A
pattern that matches nothing is rejected; a message counts once in ``dropped_messages`` however
many of its matches fail.

Bundles: a time tag in the future sets the ``stamp`` of the changes it carries, and the engine
applies them at the first block whose start time reaches it (block accuracy; the engine's block
clock is ``time.time()`` at each callback, python-osc converts the NTP time tag to the same
Unix time; see :mod:`hushbridge.engine`). "Immediately" and past time tags apply at the next
block. Only parameter changes are scheduled; other messages in a bundle run on arrival.
Feedback of a scheduled change is sent when it takes effect (when it is audible), as ``/hb/get``
reports it.

Hooks for other control sources (MIDI):

- :meth:`OscController.set_learn_handler` ``(fn)``: ``fn(address, client)`` for ``/hb/learn``
  (``address`` None for ``/hb/learn/cancel``); raise a HushbridgeError to answer ``/hb/error``.
  It may answer later with :meth:`OscController.notify` (to registered clients) or ``send``.
- :meth:`Engine.publish <hushbridge.engine.Engine.publish>` ``("/hb/transport/tempo_bpm", 120)``:
  readable with ``/hb/get``, echoed to registered clients, pushed by ``/hb/meter/transport``.
- :meth:`OscController.set_preset_midi` ``(fn)``: ``fn()`` returns the ``[midi]`` table that
  ``/hb/preset/save`` writes with the chain.
- :meth:`Engine.count_dropped <hushbridge.engine.Engine.count_dropped>` ``(n)``: count rejected
  messages from any thread (its own lock), so every source adds to one ``dropped_messages``.

Changes that wait in the hand-off's coalescing map (ring full) keep only the latest value *and*
stamp per parameter.

Example::

    from hushbridge.control.osc import OscServer
    with OscServer(engine, port=9000) as server:   # 127.0.0.1 by default
        ...                                        # oscsend localhost 9000 /hb/gain/gain_db f -12

.. note::
   Handlers run on the server thread and share the GIL with the audio callback, so each one is
   small: a parse, a dict look-up, ``engine.set`` (which only queues a ``ParamChange``) and a
   reply. With ``OscServer(..., process=True)`` plain parameter sets never reach them: a receive
   process applies those through shared memory (:mod:`hushbridge.control.osc_process`) and
   forwards the rest here. Preset loads and saves, which prepare a whole chain or write a file, run on a separate
   worker thread so the receive loop keeps going. Meters are computed and sent by a third
   thread (:class:`OscServer`) in small pieces, one subscription at a time.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import queue
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pythonosc.dispatcher import Dispatcher, Handler
from pythonosc.osc_message import OscMessage
from pythonosc.osc_packet import OscPacket, ParseError

from hushbridge.control.meters import MeterHub
from hushbridge.control.osc_wire import OscArg, _Message, _fast_message, check_packet, encode
from hushbridge.errors import ControlError, HushbridgeError, ParamError
from hushbridge.presets import preset_name_problem

log = logging.getLogger(__name__)

ClientAddress = tuple[str, int]
SendFn = Callable[[str, Sequence[OscArg], ClientAddress], None]

RECV_BUFFER = 1 << 20  # bytes of UDP receive buffer asked for
MAX_REGISTERED = 32  # feedback clients; caps how much traffic one UDP packet can cause
_BYPASS_NAMES = {"on": 1.0, "off": 0.0, "true": 1.0, "false": 0.0}
MAX_SENDERS_PER_CLIENT = 4  # send ports remembered per feedback port (see _on_register)
FIRST_POLL_S = 0.03  # after a subscription, before the meter thread polls (rows to report)
METER_IDLE_S = 1.0  # longest the meter thread sleeps with nothing due (a safety net, not a poll)
MAX_DEFERRED = 4096  # messages held behind a preset load (so they reach the new chain); more are refused
_PATTERN_CHARS = re.compile(r"[*?\[\]{}]")
_MAX_PATTERN = 256  # characters of an address pattern
_MAX_ERROR = 300  # characters of an /hb/error text
_PATTERN_CACHE_SIZE = 128
LearnHandler = Callable[[str | None, ClientAddress], object]


class Reply(NamedTuple):
    """One OSC message to send: ``address``, ``args`` and the destination ``(host, port)``."""

    address: str
    args: tuple[OscArg, ...]
    dest: ClientAddress


class OscRequestError(HushbridgeError, ValueError):
    """A request the OSC layer rejects (wrong types, unknown address); answered with ``/hb/error``."""


def _number(address: str, args: tuple[Any, ...], switch: bool = False) -> float:
    """The single numeric argument of a set message (int or float; T/F too where ``switch``: a
    bypass, an on/off parameter or a button), else OscRequestError."""
    if len(args) != 1:
        raise OscRequestError(f"{address} needs one number, got {len(args)} arguments")
    v = args[0]
    if isinstance(v, bool):
        if switch:
            return float(v)
        raise OscRequestError(f"{address} needs a number, got {'T' if v else 'F'} (true/false is for "
                              f"switches and bypass)")
    if isinstance(v, (int, float)):
        return float(v)
    raise OscRequestError(f"{address} needs a number, got {type(v).__name__} {v!r:.40}")


def _is_switch(p: Any) -> bool:
    """An on/off parameter or a button: T/F are its values too."""
    return bool(p.momentary or (p.min == 0.0 and p.max == 1.0 and p.step == 1))


def _string(address: str, args: tuple[Any, ...], what: str) -> str:
    if len(args) != 1 or not isinstance(args[0], str):
        raise OscRequestError(f"{address} needs one string argument ({what}), got {args!r:.80}")
    return args[0]


_ALL_CHANNELS = re.compile(r"@[0-9]+/")  # /hb/gate@2/x -> /hb/gate/x


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Compile an OSC 1.0 address pattern (``*``, ``?``, ``[a-z]``, ``[!a]``, ``{a,b}``) to a
    regular expression matching whole addresses (``*`` and ``?`` never cross ``/``).
    OscRequestError for a malformed pattern."""
    if len(pattern) > _MAX_PATTERN:
        raise OscRequestError(f"address pattern longer than {_MAX_PATTERN} characters")
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            body = pattern[i + 1:j] if j > 0 else ""
            neg = body.startswith("!")
            body = body[1:] if neg else body
            if j < 0 or not body or "/" in body:
                raise OscRequestError(f"malformed [...] in address pattern {pattern!r:.80}")
            chars = "".join("-" if ch == "-" and 0 < k < len(body) - 1 else re.escape(ch)
                            for k, ch in enumerate(body))
            out.append(f"[{'^' if neg else ''}{chars}]")
            i = j
        elif c == "{":
            j = pattern.find("}", i + 1)
            if j < 0 or "/" in pattern[i:j]:
                raise OscRequestError(f"malformed {{...}} in address pattern {pattern!r:.80}")
            out.append("(?:" + "|".join(re.escape(a) for a in pattern[i + 1:j].split(",")) + ")")
            i = j
        elif c in "]}":
            raise OscRequestError(f"unbalanced {c!r} in address pattern {pattern!r:.80}")
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error as e:
        raise OscRequestError(f"malformed address pattern {pattern!r:.80}: {e}") from e


class OscController:
    """Routes OSC messages to an engine; no sockets (see the module docstring).

    Parameters
    ----------
    engine : Engine
        The engine to control.
    presets_save : callable or "user", optional
        ``presets_save(name)`` saves the running chain as preset ``name``; ``"user"`` saves it
        in the user preset folder (with the ``[midi]`` table of :meth:`set_preset_midi`).
        Without it ``/hb/preset/save`` is refused: writing files on request of a UDP packet is
        opt-in (:class:`OscServer` opts in with ``"user"``).
    send : callable, optional
        ``send(address, args, dest)`` for messages made outside :meth:`handle_datagram` (which
        returns its replies, feedback included): feedback of changes from other sources (CLI,
        MIDI, preset loads on ``run_slow``) and errors of slow requests. Without it those are not
        sent. :class:`OscServer` sets it.
    run_slow : callable, optional
        ``run_slow(fn)`` runs ``fn()`` for a slow request (preset load) elsewhere, e.g. on a worker
        thread; replies then go through ``send``. Default: inline.

    Examples
    --------
    >>> ctl = OscController(engine)                                  # doctest: +SKIP
    >>> ctl.handle_datagram(encode("/hb/get", ["/hb/gain/gain_db"]), ("127.0.0.1", 5000))  # doctest: +SKIP
    [Reply(address='/hb/value', args=('/hb/gain/gain_db', 0.0, '0.0 dB'), dest=('127.0.0.1', 5000))]
    """

    def __init__(self, engine: Any, presets_save: Callable[[str], object] | str | None = None, *,
                 send: SendFn | None = None, run_slow: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.engine = engine
        if presets_save == "user":
            presets_save = self._save_user_preset
        elif isinstance(presets_save, str):
            raise ValueError(f"presets_save must be a callable, 'user' or None, got {presets_save!r}")
        self.presets_save = presets_save
        self.send = send
        self.run_slow = run_slow
        self.dispatcher = Dispatcher(strict_timing=False)
        self._exact: dict[str, Handler] = {}  # literal address -> handler: the fast path
        self._address_of: dict[int, str] = {}  # id(handler) -> its address, for pattern matches
        self._param_routes: dict[str, list[tuple[str, Handler]]] = {}
        self._routes_dirty = True
        self._registered: dict[ClientAddress, ClientAddress] = {}  # sender -> feedback destination
        # senders that asked for /norm feedback: a destination gets it while any of its senders does
        self._norm_senders: set[ClientAddress] = set()
        self._norm_dests: frozenset[ClientAddress] = frozenset()
        self._local = threading.local()  # .replies: the list for the datagram this thread handles
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._learn: LearnHandler | None = None
        self._preset_midi: Callable[[], dict[str, Any] | None] | None = None
        self.meters = MeterHub(engine)
        self._closed = False
        # slow requests (preset load/save) queued or running on run_slow; while any is, later
        # messages queue behind it, so a change sent after a load reaches the loaded chain
        self._slow_pending = 0
        self._slow_lock = threading.Lock()
        self.map("/hb/get", self._on_get)
        self.map("/hb/list", self._on_list)
        self.map("/hb/preset/load", self._on_preset_load)
        self.map("/hb/preset/save", self._on_preset_save)
        self.map("/hb/register", self._on_register)
        self.map("/hb/unregister", self._on_unregister)
        self.map("/hb/subscribe", self._on_subscribe)
        self.map("/hb/unsubscribe", self._on_unsubscribe)
        self.map("/hb/learn", self._on_learn)
        self.map("/hb/learn/cancel", self._on_learn_cancel)
        self.map("/hb/host/transport", self._on_host_transport)
        self.map("/hb/host/track", self._on_host_track)
        self.map("/hb/host/track_count", self._on_host_track_count)
        self.map("/hb/host/tracks", self._on_host_tracks)
        #: the editor's tracks (the Ableton Remote Script): index -> (name, volume dB)
        self.host_tracks: dict[int, tuple[str, float]] = {}
        self._recorder: Any = None
        for action in ("start", "stop", "status"):
            self.map(f"/hb/record/{action}", self._on_record)
        self.dispatcher.set_default_handler(self._on_unknown, needs_reply_address=True)
        self._sync_routes()
        engine.add_listener(self._on_change)
        engine.add_latency_listener(self._on_latency)
        if hasattr(engine, "add_preset_listener"):
            engine.add_preset_listener(self._on_preset_loaded)

    # == hooks for other control sources =========================================================
    def set_learn_handler(self, fn: LearnHandler | None) -> None:
        """``fn(address, client)`` runs for ``/hb/learn <address>`` (``address`` is a checked
        parameter address) and ``fn(None, client)`` for ``/hb/learn/cancel``; ``None`` removes it.
        A HushbridgeError it raises becomes ``/hb/error`` to the client."""
        self._learn = fn

    def set_recorder(self, recorder: Any) -> None:
        """Route ``/hb/record/start``, ``/stop`` and ``/status`` to ``recorder`` (a
        :class:`hushbridge.record.Recorder`); every take started or ended is announced to the
        registered clients as ``/hb/record/status``."""
        self._recorder = recorder
        recorder.add_listener(lambda _take: self.notify("/hb/record/status", record_status(recorder)))

    def set_preset_midi(self, fn: Callable[[], dict[str, Any] | None] | None) -> None:
        """``fn()`` gives the ``[midi]`` table that ``/hb/preset/save`` stores with the chain."""
        self._preset_midi = fn

    def notify(self, address: str, args: Sequence[OscArg], *, also: ClientAddress | None = None) -> None:
        """Send ``address args`` to every registered client (and to ``also``), e.g. a learn
        result ``/hb/learn/done <address> <source>``; any thread."""
        dests = set(self._registered.values())
        if also is not None:
            dests.add(also)
        for dest in dests:
            self._reply(address, tuple(args), dest)

    @property
    def slow_pending(self) -> int:
        """Slow requests (preset loads and saves) queued or running; later messages wait behind them."""
        return self._slow_pending

    # == routing table ===========================================================================
    def map(self, address: str, callback: Callable[..., None]) -> Handler:
        """Route ``address`` to ``callback(client_address, address, *args)``; returns the handle
        :meth:`unmap` takes."""
        handler = self.dispatcher.map(address, callback, needs_reply_address=True)
        self._exact[address] = handler
        self._address_of[id(handler)] = address
        return handler

    def unmap(self, address: str, handler: Handler) -> None:
        self.dispatcher.unmap(address, handler)
        self._address_of.pop(id(handler), None)
        if self._exact.get(address) is handler:
            del self._exact[address]

    def _sync_routes(self) -> None:
        """Map ``/hb/<id>/<param>`` (and ``/norm``) for the engine's current chain."""
        self._routes_dirty = False
        wanted = {info.address: info for info, _ in self.engine.parameters()}
        for address in [a for a in self._param_routes if a not in wanted]:
            for addr, handler in self._param_routes.pop(address):
                self.unmap(addr, handler)
        for address, info in wanted.items():
            if address in self._param_routes:
                continue
            # a bypass has its /norm too (0..1, from 0.5 on), so that a surface bound to /norm
            # throughout (TouchOSC) can bypass
            setter = self._on_bypass if address.endswith("/bypass") and info.param.id == "bypass" else self._on_set
            routes = [(address, self.map(address, setter)),
                      (address + "/norm", self.map(address + "/norm", self._on_set_norm))]
            self._param_routes[address] = routes

    def close(self) -> None:
        """Stop listening to the engine (no more feedback). Idempotent."""
        if not self._closed:
            self._closed = True
            self.engine.remove_listener(self._on_change)
            self.engine.remove_latency_listener(self._on_latency)
            if hasattr(self.engine, "remove_preset_listener"):
                self.engine.remove_preset_listener(self._on_preset_loaded)

    # == datagrams ===============================================================================
    def handle_datagram(self, data: bytes, client_address: ClientAddress) -> list[Reply]:
        """Parse one UDP datagram, run its messages in order and return the replies for it.

        Never raises for bad input: a malformed packet or a rejected message becomes a
        ``/hb/error`` reply to ``client_address`` and counts in ``engine.dropped_messages``.
        """
        replies: list[Reply] = []
        self._local.replies = replies
        self.meters.heard(client_address)
        try:
            messages = self._parse(data, client_address)
            for message, stamp in messages:
                if self._slow_pending:  # behind a preset load: in order, after it
                    self._defer(message, stamp, client_address)
                    continue
                if self._routes_dirty:
                    self._sync_routes()
                self._local.stamp = stamp
                self._dispatch(message, client_address)
        finally:
            self._local.replies = None
            self._local.stamp = 0.0
        return replies

    def _run_slow(self, fn: Callable[[], None]) -> None:
        if getattr(self._local, "in_slow", False):  # a deferred load: already on the worker, in order
            fn()
            return
        with self._slow_lock:
            self._slow_pending += 1

        def task() -> None:
            self._local.in_slow = True
            try:
                fn()
            finally:
                self._local.in_slow = False
                with self._slow_lock:
                    self._slow_pending -= 1

        self.run_slow(task)

    def _defer(self, message: OscMessage | _Message, stamp: float, client: ClientAddress) -> None:
        if self._slow_pending >= MAX_DEFERRED:
            self._reject(client, f"{message.address}: refused while a preset loads ({MAX_DEFERRED} messages "
                                 "already wait for it)")
            return

        def later() -> None:  # on the run_slow worker: replies go out at once
            self._local.replies = None
            self._local.stamp = stamp
            try:
                if self._routes_dirty:
                    self._sync_routes()
                self._dispatch(message, client)
            finally:
                self._local.stamp = 0.0

        self._run_slow(later)

    def _parse(self, data: bytes, client: ClientAddress) -> list[tuple[OscMessage | _Message, float]]:
        """Messages with their stamps: a future bundle time tag (Unix s), else 0 (at once)."""
        problem = check_packet(data)
        if problem:
            self._reject(client, f"malformed packet: {problem}")
            return []
        fast = _fast_message(data)
        if fast is not None:
            return [(fast, 0.0)]
        try:
            timed = OscPacket(data).messages
            if data[:1] == b"/":
                return [(timed[0].message, 0.0)]
            now = time.time()  # python-osc stamps "immediately" and past tags with its own now
            return [(t.message, t.time if t.time > now else 0.0) for t in timed]
        except ParseError as e:
            self._reject(client, f"malformed packet: {e}")
        except Exception as e:  # noqa: BLE001 - python-osc raises assorted errors on garbage
            self._reject(client, f"malformed packet: {type(e).__name__}: {e}")
        return []

    def _dispatch(self, message: OscMessage | _Message, client: ClientAddress) -> None:
        address = message.address
        args = tuple(message.params)
        handler = self._exact.get(address)
        if handler is not None:
            self._call(handler.callback, client, address, args)
        elif _PATTERN_CHARS.search(address):  # an OSC address pattern: /hb/*/bypass
            self._dispatch_pattern(address, client, args)
        else:
            self._call(self._on_unknown, client, address, args)

    def _dispatch_pattern(self, pattern: str, client: ClientAddress, args: tuple[Any, ...]) -> None:
        """Run a pattern against the parameter addresses only; one rejection per message."""
        try:
            rx = self._patterns.get(pattern)
            if rx is None:
                rx = pattern_regex(pattern)
                if len(self._patterns) >= _PATTERN_CACHE_SIZE:
                    self._patterns.clear()
                self._patterns[pattern] = rx
        except OscRequestError as e:
            self._reject(client, str(e))
            return
        matches = [(addr, h) for routes in list(self._param_routes.values()) for addr, h in routes if rx.match(addr)]
        if not matches:
            self._reject(client, f"address pattern {pattern!r:.80} matches no parameter (send /hb/list)")
            return
        # /hb/gate*/threshold_db: the effect's own address sets every channel already, so its
        # channels' addresses (/hb/gate@2/...) are not set again (nor echoed twice)
        every = {addr for addr, _ in matches if "@" not in addr}
        if len(every) < len(matches):
            matches = [(addr, h) for addr, h in matches if "@" not in addr or _ALL_CHANNELS.sub("/", addr, 1) not in every]
        failed: list[str] = []
        for addr, handler in matches:
            try:
                handler.callback(client, addr, *args)
            except HushbridgeError as e:
                failed.append(str(e))
            except Exception as e:  # noqa: BLE001 - a bug: logged, answered, server lives on
                log.error("OSC handler for %s failed", addr, exc_info=e)
                failed.append(f"{addr}: internal error: {type(e).__name__}: {e}")
        if failed:
            self._reject(client, f"{pattern}: {len(failed)} of {len(matches)} matches failed: {failed[0]}")

    def _call(self, callback: Callable[..., None], client: ClientAddress, address: str, args: tuple[Any, ...]) -> None:
        """Run one handler; a failure becomes ``/hb/error`` (other handlers of a pattern still run)."""
        try:
            callback(client, address, *args)
        except Exception as e:  # noqa: BLE001 - reported by _failed
            self._failed(client, address, e)

    def _failed(self, client: ClientAddress, address: str, e: Exception) -> None:
        if isinstance(e, HushbridgeError):  # ParamError, PresetError, ChainError, OscRequestError
            self._reject(client, str(e))
        else:  # a bug: log it with its traceback, answer, keep the server thread alive
            log.error("OSC handler for %s failed", address, exc_info=e)
            self._reject(client, f"{address}: internal error: {type(e).__name__}: {e}")

    def _reply(self, address: str, args: Sequence[OscArg], dest: ClientAddress) -> None:
        """Answer the datagram being handled, or send at once when called from elsewhere."""
        replies = getattr(self._local, "replies", None)
        if replies is not None:
            replies.append(Reply(address, tuple(args), dest))
        elif self.send is not None:
            self.send(address, args, dest)

    def _reject(self, client: ClientAddress, text: str) -> None:
        self.engine.count_dropped()
        if len(text) > _MAX_ERROR:  # never echo a huge request back (amplification, UDP size)
            text = text[:_MAX_ERROR - 3] + "..."
        self._reply("/hb/error", (text,), client)

    def _stamp(self) -> float:
        """The target time of the message being handled (0: at once)."""
        return getattr(self._local, "stamp", 0.0)

    # == handlers (server thread; keep them small) ===============================================
    def _on_set(self, client: ClientAddress, address: str, *args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], str) and self.engine.info(address).param.choices:
            value: Any = args[0]  # a mode or switch by name ("equal", "on"): the engine checks it
        else:
            switch = len(args) == 1 and isinstance(args[0], bool) and _is_switch(self.engine.info(address).param)
            value = _number(address, args, switch)
        self.engine.set(address, value, clamp=True, source=client, stamp=self._stamp())

    def _on_set_norm(self, client: ClientAddress, address: str, *args: Any) -> None:
        switch = len(args) == 1 and isinstance(args[0], bool) \
            and _is_switch(self.engine.info(address[: -len("/norm")]).param)
        norm = _number(address, args, switch)
        if not math.isfinite(norm):
            raise OscRequestError(f"{address} needs a finite number 0..1, got {norm!r}")
        self.engine.set_norm(address[: -len("/norm")], norm, source=client, stamp=self._stamp())

    def _on_bypass(self, client: ClientAddress, address: str, *args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], str) and args[0].strip().lower() in _BYPASS_NAMES:
            value = _BYPASS_NAMES[args[0].strip().lower()]  # as /hb/get and /hb/list display it
        elif len(args) == 1 and isinstance(args[0], str):
            raise OscRequestError(f"{address} needs a number 0 or 1, OSC true/false (T/F), or the word on, off, "
                                  f"true or false, got {args[0]!r:.40}")
        else:
            value = _number(address, args, switch=True)
        if value not in (0.0, 1.0):
            raise OscRequestError(f"{address} needs 0 or 1, got {value:g}")
        self.engine.set(address, value, clamp=True, source=client, stamp=self._stamp())

    def _on_get(self, client: ClientAddress, address: str, *args: Any) -> None:
        target = _string(address, args, "an address such as /hb/gain/gain_db or /hb/engine/xruns")
        if target.endswith("/norm") and target.startswith("/hb/") and not target.startswith("/hb/engine/"):
            base = target[: -len("/norm")]
            try:
                param = self.engine.info(base).param
            except ParamError:
                raise OscRequestError(f"unknown address {target!r:.120} (send /hb/list for the parameters)") from None
            value = float(self.engine.get(base))
            self._reply("/hb/value", (target, float(param.to_norm(value)), self.engine.display(base, value)), client)
            return
        value = float(self.engine.get(target))
        self._reply("/hb/value", (target, value, self.engine.display(target, value)), client)

    def _on_list(self, client: ClientAddress, address: str, *args: Any) -> None:
        if args:
            raise OscRequestError(f"{address} takes no arguments, got {args!r:.80}")
        params = self.engine.parameters()
        for info, value in params:
            p = info.param
            self._reply("/hb/param", (info.address, float(p.min), float(p.max), float(p.default),
                                      float(value), p.unit, p.display(value)), client)
        self._reply("/hb/list/end", (len(params),), client)

    def _on_preset_load(self, client: ClientAddress, address: str, *args: Any) -> None:
        name = _string(address, args, "a preset name")
        problem = preset_name_problem(name)
        if problem is not None:
            raise OscRequestError(f"{address}: {problem}")
        if self._stamp():
            raise OscRequestError(f"{address} cannot be timed (its bundle's time tag is in the future): a load "
                                  "takes time to prepare; send it when it should happen")
        # source=None: every registered client, the requester included, gets the new values.
        # a registered requester that listens on its send port heard of it with everyone
        # (_on_preset_loaded); any other requester gets the reply
        if self.run_slow is None or self.send is None:
            self.engine.load_preset(name, source=None)
            if client not in self._registered.values():
                self._reply("/hb/preset/loaded", (name,), client)
            return

        def load() -> None:
            try:
                self.engine.load_preset(name, source=None)
            except Exception as e:  # noqa: BLE001 - reported by _failed; the worker lives on
                self._failed(client, address, e)
            else:
                if client not in self._registered.values():
                    self._reply("/hb/preset/loaded", (name,), client)

        self._run_slow(load)

    def _on_preset_save(self, client: ClientAddress, address: str, *args: Any) -> None:
        name = _string(address, args, "a preset name")
        save = self.presets_save
        if save is None:
            raise OscRequestError(f"{address}: saving presets over OSC is not enabled")
        problem = preset_name_problem(name)
        if problem is not None:
            raise OscRequestError(f"{address}: {problem}")

        def saved(note: object) -> tuple[str, ...]:
            # what else the save did (replaced a preset, shadows a built-in) as a second argument
            return (name, note) if isinstance(note, str) and note else (name,)

        if self.run_slow is None or self.send is None:
            self._reply("/hb/preset/saved", saved(save(name)), client)
            return

        def write() -> None:
            try:
                note = save(name)
            except Exception as e:  # noqa: BLE001 - reported by _failed; the worker lives on
                self._failed(client, address, e)
            else:
                self._reply("/hb/preset/saved", saved(note), client)

        self._run_slow(write)

    def _save_user_preset(self, name: str) -> str | None:
        from hushbridge.presets import save_note, save_preset

        midi = self._preset_midi() if self._preset_midi is not None else None
        note = save_note(name)
        save_preset(self.engine.snapshot(), name, midi=midi)  # values as set (timed ones once audible)
        return note

    def _on_record(self, client: ClientAddress, address: str, *args: Any) -> None:
        if args:
            raise OscRequestError(f"{address} takes no arguments (file names are set where hushbridge "
                                  "is started: `run --record`)")
        recorder = self._recorder
        if recorder is None:
            raise OscRequestError(f"{address}: recording is not set up; start `hushbridge run` with "
                                  "--record FILE.wav or --record FOLDER")
        if address.endswith("/status"):
            self._reply("/hb/record/status", record_status(recorder), client)
            return
        if self._stamp():
            raise OscRequestError(f"{address} cannot be timed (its bundle's time tag is in the future)")

        def act() -> None:  # opening or closing files: on the worker, not the receive thread
            try:
                if address.endswith("/start"):
                    recorder.start()
                elif recorder.stop() is None:
                    raise OscRequestError(f"{address}: not recording")
            except Exception as e:  # noqa: BLE001 - reported by _failed; the worker lives on
                self._failed(client, address, e)
            else:  # registered clients heard it from the recorder's announcement
                if client not in self._registered.values():
                    self._reply("/hb/record/status", record_status(recorder), client)

        self._run_slow(act)

    def _on_register(self, client: ClientAddress, address: str, *args: Any) -> None:
        """Registrations are kept per sender, so that no sender gets its own changes back. One
        feedback port registered from several senders (an app restarted on a new send port,
        ``oscsend`` run twice) is one client: it gets each change once, none of the changes any of
        those senders made, and takes one of the MAX_REGISTERED places; it keeps its
        MAX_SENDERS_PER_CLIENT latest senders."""
        norm = bool(args) and args[-1] == "norm"
        if norm:
            args = args[:-1]
        dest = (client[0], self._port_arg(address, args, client))
        reg = self._registered
        if client in reg:
            del reg[client]  # re-registered: now the latest
        senders = [s for s, d in reg.items() if d == dest]
        if senders:
            for s in senders[: max(0, len(senders) - MAX_SENDERS_PER_CLIENT + 1)]:
                reg.pop(s, None)
        elif len(set(reg.values())) >= MAX_REGISTERED:
            raise OscRequestError(f"{address}: too many registered clients ({MAX_REGISTERED})")
        reg[client] = dest
        if norm:
            self._norm_senders.add(client)
        else:
            self._norm_senders.discard(client)
        self._update_norm_dests()

    def _on_unregister(self, client: ClientAddress, address: str, *args: Any) -> None:
        if args and args[-1] == "norm":  # as it was registered: the same message, un-
            args = args[:-1]
        dest = (client[0], self._port_arg(address, args, client))
        for sender, d in list(self._registered.items()):
            if sender == client or d == dest:
                del self._registered[sender]
        self._update_norm_dests()

    def _update_norm_dests(self) -> None:
        reg = self._registered
        self._norm_senders &= set(reg)
        self._norm_dests = frozenset(reg[s] for s in self._norm_senders)

    @staticmethod
    def _port_arg(address: str, args: tuple[Any, ...], client: ClientAddress) -> int:
        if not args:
            return client[1]
        if len(args) == 1 and isinstance(args[0], (int, float)) and not isinstance(args[0], bool):
            port = args[0]
            if float(port).is_integer() and 1 <= port <= 65535:
                return int(port)
        extra = ' (and "norm")' if address == "/hb/register" else ""
        raise OscRequestError(f"{address} takes an optional port 1..65535{extra}, got {args!r:.80}")

    def _meter_dest(self, client: ClientAddress) -> ClientAddress:
        return self._registered.get(client, client)

    def _meter_target(self, address: str, client: ClientAddress, port_args: tuple[Any, ...]) -> ClientAddress:
        """An explicit port (on the sender's host), else the registered port, else the sender."""
        if port_args:
            return (client[0], self._port_arg(address, port_args, client))
        return self._meter_dest(client)

    def _on_subscribe(self, client: ClientAddress, address: str, *args: Any) -> None:
        if len(args) not in (2, 3) or not isinstance(args[0], str) or isinstance(args[1], (str, bytes, bool)) \
                or not isinstance(args[1], (int, float)):
            raise OscRequestError(f"{address} needs a meter address and a rate in Hz (and optionally a port), "
                                  f"e.g. /hb/meter/peak 30; got {args!r:.80}")
        dest = self._meter_target(address, client, args[2:])
        self.meters.subscribe(dest, args[0], float(args[1]), owner=client)

    def _on_unsubscribe(self, client: ClientAddress, address: str, *args: Any) -> None:
        if len(args) > 2 or (args and not isinstance(args[0], str)):
            raise OscRequestError(f"{address} takes an optional meter address (and port), got {args!r:.80}")
        dest = self._meter_target(address, client, args[1:])
        # without a port: every meter this client asked for, wherever they go
        self.meters.unsubscribe(dest, args[0] or None if args else None, owner=None if args[1:] else client)

    def _on_learn(self, client: ClientAddress, address: str, *args: Any) -> None:
        target = _string(address, args, "a parameter address such as /hb/compressor/threshold_db")
        self.engine.info(target)  # ParamError for anything but a parameter address
        if self._learn is None:
            raise OscRequestError(f"{address}: MIDI learn needs a MIDI input; none is running")
        self._learn(target, client)

    def _on_host_transport(self, client: ClientAddress, address: str, *args: Any) -> None:
        """An editor's transport (the Ableton Remote Script): published as /hb/transport/... for
        every client, as MIDI clock is."""
        if len(args) != 3 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) \
                or not all(math.isfinite(a) for a in args):
            raise OscRequestError(f"{address} needs <tempo_bpm f> <playing i> <beat f>, got {args!r:.80}")
        tempo, playing, beat = (float(a) for a in args)
        if not 1.0 <= tempo <= 999.0:
            raise OscRequestError(f"{address}: tempo {tempo:g} BPM is outside 1..999")
        self.engine.publish("/hb/transport/tempo_bpm", round(tempo, 2), source=client)
        self.engine.publish("/hb/transport/playing", 1.0 if playing else 0.0, source=client)
        self.engine.publish("/hb/transport/beat", float(beat), source=client)

    def _on_host_track(self, client: ClientAddress, address: str, *args: Any) -> None:
        """An editor's track (index from 1, name, fader in dB): kept for /hb/host/tracks and sent on
        to every registered client but the sender."""
        if len(args) != 3 or not isinstance(args[0], int) or isinstance(args[0], bool) or not isinstance(args[1], str) \
                or not isinstance(args[2], (int, float)) or isinstance(args[2], bool) or not 1 <= args[0] <= 4096:
            raise OscRequestError(f"{address} needs <index i (1..4096)> <name s> <volume_db f>, got {args!r:.80}")
        if math.isnan(args[2]):
            raise OscRequestError(f"{address}: volume_db is NaN")
        db = min(float(args[2]), 100.0) if args[2] > -1000.0 else -math.inf
        self.host_tracks[args[0]] = (args[1][:256], db)
        for dest in set(self._registered.values()) - {self._registered.get(client)}:
            self._reply("/hb/host/track", (args[0], args[1][:256], db if math.isfinite(db) else -1000.0), dest)

    def _on_host_track_count(self, client: ClientAddress, address: str, *args: Any) -> None:
        if len(args) != 1 or not isinstance(args[0], int) or isinstance(args[0], bool) or not 0 <= args[0] <= 4096:
            raise OscRequestError(f"{address} needs <count i (0..4096)>, got {args!r:.80}")
        for index in [i for i in self.host_tracks if i > args[0]]:
            del self.host_tracks[index]
        for dest in set(self._registered.values()) - {self._registered.get(client)}:
            self._reply("/hb/host/track_count", (args[0],), dest)

    def _on_host_tracks(self, client: ClientAddress, address: str, *args: Any) -> None:
        if args:
            raise OscRequestError(f"{address} takes no arguments")
        for index in sorted(self.host_tracks):
            name, db = self.host_tracks[index]
            self._reply("/hb/host/track", (index, name, db if math.isfinite(db) else -1000.0), client)
        self._reply("/hb/host/tracks/end", (len(self.host_tracks),), client)

    def _on_learn_cancel(self, client: ClientAddress, address: str, *args: Any) -> None:
        if args:
            raise OscRequestError(f"{address} takes no arguments, got {args!r:.80}")
        if self._learn is None:
            raise OscRequestError(f"{address}: MIDI learn needs a MIDI input; none is running")
        self._learn(None, client)

    def _on_unknown(self, client: ClientAddress, address: str, *args: Any) -> None:
        if address.startswith("/hb/engine/") or self.engine.is_published(address):
            raise OscRequestError(f"{address} is read-only: ask with /hb/get {address}")
        why = self.engine.why_unknown(address) if "@" in address else ""
        raise OscRequestError(f"unknown address {address!r:.120}{why} (send /hb/list for the parameters)")

    # == feedback ================================================================================
    def _on_preset_loaded(self, preset: Any) -> None:
        """Engine preset listener: every registered client hears of a load, whoever made it (a
        MIDI program change, another client), so a layout built for the old chain can rebuild."""
        from hushbridge.presets import user_preset_dir

        source = str(getattr(preset, "source", ""))
        if source.startswith("built-in:"):
            name = source[len("built-in:"):-len(".toml")]
        elif source.endswith(".toml") and os.path.dirname(os.path.abspath(source)) == str(user_preset_dir().absolute()):
            name = os.path.splitext(os.path.basename(source))[0]
        else:  # a file elsewhere (run --preset /path/x.toml): its path, the name alone loads nothing
            name = source or str(preset.name)
        self.notify("/hb/preset/loaded", (name,))  # the name it is loaded by (the file's), not its title

    def _on_latency(self, latency: int) -> None:
        """Engine latency listener (housekeeping thread): announce to every registered client."""
        self.notify("/hb/engine/latency_samples", (float(latency),))

    @property
    def registered(self) -> dict[ClientAddress, ClientAddress]:
        """Feedback clients: sender address -> destination of its feedback."""
        return dict(self._registered)

    def _on_change(self, address: str, value: float, source: object) -> None:
        """Engine listener: echo ``<address> <value>`` to registered clients but the source."""
        if address not in self._param_routes and not self.engine.is_published(address):
            self._routes_dirty = True  # a new chain: remap on the next datagram
        if not self._registered:
            return
        items = list(self._registered.items())
        # a feedback port registered from several senders is one client: skip it whole if any of
        # them (or the port itself) made the change, else send it once
        skip = {dest for sender, dest in items if sender == source or dest == source}
        norm: float | None = None
        if self._norm_dests:
            try:
                norm = float(self.engine.info(address).param.to_norm(float(value)))
            except ParamError:
                norm = None  # a published value (transport), not a parameter
        for _, dest in items:
            if dest not in skip:
                skip.add(dest)
                self._reply(address, (float(value),), dest)
                if norm is not None and dest in self._norm_dests:
                    self._reply(address + "/norm", (norm,), dest)


def record_status(recorder: Any) -> tuple[str, float, str, float, str]:
    """``/hb/record/status`` arguments: state (``recording``, ``stopped``, ``armed``: no take
    yet), seconds, the output's file (the raw one when only that is recorded; the part being
    written), seconds lost to a slow disk, and why the take stopped early ("" if it did not)."""
    take = recorder.take
    if take is None:
        return ("armed", 0.0, "", 0.0, "")
    paths = take.paths or take.raw_paths
    return ("recording" if recorder.recording else "stopped", float(take.seconds), str(paths[-1]),
            take.lost_frames / take.sample_rate if take.sample_rate else 0.0, take.error)


class OscServer:
    """UDP transport for an :class:`OscController`: one receive thread, replies from the same socket.

    Parameters
    ----------
    engine : Engine
        The engine to control.
    host : str
        Address to bind; ``127.0.0.1`` by default (OSC has no authentication).
    port : int
        UDP port; ``0`` picks a free one (see :attr:`port`).
    presets_save : callable, "user" or None
        Passed to :class:`OscController`; default ``"user"``: ``/hb/preset/save <name>`` writes
        ``<name>.toml`` in the user preset folder (names only, never paths).
    process : bool
        Receive in a separate process (:mod:`hushbridge.control.osc_process`): parameter sets
        reach the audio callback without waking this process, so a flood of them cannot take
        the GIL from it; everything else is handled here as before. Needs a Python interpreter
        to run the child and POSIX descriptor passing (not in a frozen build nor on Windows:
        there it receives on a thread, logged).

    Examples
    --------
    >>> with OscServer(engine, port=0) as server:   # doctest: +SKIP
    ...     print(server.port)
    """

    def __init__(self, engine: Any, host: str = "127.0.0.1", port: int = 9000,
                 presets_save: Callable[[str], object] | str | None = "user", *, poll_s: float = 0.1,
                 process: bool = False) -> None:
        try:  # IPv4 or IPv6, whichever the host names (127.0.0.1, ::1, 0.0.0.0, ::, a name)
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except (socket.gaierror, UnicodeError) as e:
            raise ControlError(f"cannot listen for OSC on {host!r}: {e}") from e
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # room for bursts while the receive thread waits for the GIL (the kernel caps it)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            self._sock.bind(sockaddr)
        except OSError as e:
            self._sock.close()
            hint = " (another hushbridge? --osc-port 0 picks a free port)" if e.errno == errno.EADDRINUSE else ""
            raise ControlError(f"cannot listen for OSC on {host}:{port}: {e.strerror or e}{hint}") from e
        self._sock.settimeout(poll_s)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"hushbridge-osc:{self.port}", daemon=True)
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name=f"hushbridge-osc-worker:{self.port}", daemon=True)
        self._meter_thread = threading.Thread(target=self._push_meters, name=f"hushbridge-osc-meters:{self.port}",
                                              daemon=True)
        self.controller = OscController(engine, presets_save, send=self.send, run_slow=self._tasks.put)
        self._meter_wake = threading.Event()
        self._subscribed = False  # a subscription came: its first poll waits FIRST_POLL_S
        self.controller.meters.on_change = self._on_subscription
        engine.add_timed_listener(self._meter_wake.set)
        # the child is `python -m ...` with the socket passed by descriptor (POSIX)
        self.process = bool(process) and not getattr(sys, "frozen", False) and os.name == "posix"
        if process and not self.process:
            log.info("OSC: a receive process needs a Python interpreter and POSIX descriptor passing; "
                     "receiving on a thread")
        self.receiver: Any = None  # the OscReceiveProcess while the child runs
        self._started = False
        self._closed = False
        self.send_errors = 0

    def start(self) -> OscServer:
        if self._closed:
            raise RuntimeError("OscServer is closed; create a new one")
        if not self._started:
            self._started = True
            self._worker.start()
            self._meter_thread.start()
            if self.process:
                from hushbridge.control.osc_process import OscReceiveProcess

                receiver = OscReceiveProcess(self, on_lost=self._receive_here)
                try:
                    receiver.start()
                except Exception as e:  # noqa: BLE001 - OSC still works, on a thread: say so
                    receiver.stop()
                    log.warning("OSC: the receive process did not start (%s); receiving on a thread", e)
                    self._thread.start()
                else:
                    self.receiver = receiver
            else:
                self._thread.start()
        return self

    def _receive_here(self) -> None:
        """The receive process is gone: receive on a thread of this process from now on."""
        if not self._stop.is_set() and not self._thread.is_alive():
            self._thread.start()

    def stop(self) -> None:
        """Stop the threads and close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._meter_wake.set()
        self.controller.engine.remove_timed_listener(self._meter_wake.set)
        self.controller.close()
        if self.receiver is not None:
            self.receiver.stop()
        if self._started:
            if self._thread.is_alive():
                self._thread.join()
            self._meter_thread.join()
            self._tasks.put(None)
            self._worker.join()
        self._sock.close()

    close = stop

    def __enter__(self) -> OscServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send(self, address: str, args: Sequence[OscArg], dest: ClientAddress) -> None:
        """Send one message from the server's socket (any thread)."""
        try:
            self._sock.sendto(encode(address, args), dest)
        except OSError as e:  # closed socket, unreachable client: count it, keep serving
            self.send_errors += 1
            log.debug("OSC send of %s to %s failed: %s", address, dest, e)

    def _serve(self) -> None:
        sock, handle = self._sock, self.controller.handle_datagram
        while not self._stop.is_set():
            try:
                data, client = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError as e:
                if self._stop.is_set():
                    break
                log.warning("OSC receive failed: %s", e)  # e.g. ICMP error on Windows; keep going
                continue
            try:
                replies = handle(data, client)
            except Exception:  # noqa: BLE001 - handle_datagram does not raise; belt and braces
                log.exception("OSC datagram from %s failed", client)
                continue
            for r in replies:
                self.send(r.address, r.args, r.dest)

    def _on_subscription(self) -> None:
        self._subscribed = True
        self._meter_wake.set()

    def _push_meters(self) -> None:
        """Meter thread: sleep until the next subscription or timed change is due, then send what
        is due."""
        hub, engine, wake = self.controller.meters, self.controller.engine, self._meter_wake
        while not self._stop.is_set():
            wake.clear()  # before looking: a subscription made from here on wakes the wait below
            if self._subscribed:
                # a new meter is due at once, but with no rows published yet it would have
                # nothing to say and wait a whole period (10 s at 0.1 Hz): give audio a moment
                self._subscribed = False
                self._stop.wait(FIRST_POLL_S)
            # a bundle's future change is echoed (and read by /hb/get) when it becomes audible
            engine.settle_timed()
            wait = min(hub.next_due() - time.monotonic(), engine.next_timed() - time.time())
            if wait > 0:
                # asleep until something is due, a subscription changes or a change is timed
                # (each wake-up takes the GIL the audio callback needs)
                wake.wait(min(wait, METER_IDLE_S))
                continue
            try:
                messages = hub.poll()
            except Exception:  # noqa: BLE001 - a meter bug must not stop the others; logged
                log.exception("OSC meter poll failed")
                self._stop.wait(0.05)
                continue
            for address, args, dest in messages:
                self.send(address, args, dest)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                task()
            except Exception:  # noqa: BLE001 - tasks report their own errors; log anything else
                log.exception("OSC worker task failed")
            receiver = self.receiver
            if receiver is not None:
                receiver.slow_done()


__all__ = ["OscController", "OscRequestError", "OscServer", "Reply", "check_packet", "encode"]
