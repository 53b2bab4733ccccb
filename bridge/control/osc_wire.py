"""OSC wire format: build one message, check a packet strictly, parse the common ``,f``/``,i`` case.

Light on imports (no engine, no effects): the OSC receive process
(:mod:`hushbridge.control.osc_process`) parses with it as well as :mod:`hushbridge.control.osc`.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

from pythonosc.osc_message_builder import OscMessageBuilder

from hushbridge.control.meters import Double

OscArg = float | int | str | bool


def encode(address: str, args: Sequence[OscArg]) -> bytes:
    """The datagram of one OSC message. Floats are sent as ``f``, ints as ``i``, str as ``s``,
    :class:`~hushbridge.control.meters.Double` as ``d``, bools as ``T``/``F``."""
    builder = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, bool):
            builder.add_arg(a)
        elif isinstance(a, int):
            builder.add_arg(a, OscMessageBuilder.ARG_TYPE_INT)
        elif isinstance(a, Double):
            builder.add_arg(float(a), OscMessageBuilder.ARG_TYPE_DOUBLE)
        elif isinstance(a, float):
            builder.add_arg(a, OscMessageBuilder.ARG_TYPE_FLOAT)
        else:
            builder.add_arg(str(a), OscMessageBuilder.ARG_TYPE_STRING)
    return builder.build().dgram


_FIXED_SIZE = {"i": 4, "f": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8, "T": 0, "F": 0, "N": 0, "[": 0, "]": 0}
_MAX_BUNDLE_DEPTH = 8


def _string_end(data: bytes, start: int) -> int:
    """Index after the 4-byte padded OSC string starting at ``start``, or -1 if unterminated."""
    nul = data.find(b"\0", start)
    return -1 if nul < 0 else (nul // 4 + 1) * 4


def check_packet(data: bytes, depth: int = 0) -> str:
    """Why ``data`` is not a well-formed OSC 1.0 packet, or ``""`` if it is.

    Stricter than python-osc's parser, which pads truncated numbers (a Reaktor quirk), skips
    unknown type tags and reads past bundle element sizes; a control message that was cut short
    must not silently set a parameter to 0.
    """
    n = len(data)
    if n == 0 or n % 4:
        return f"{n} bytes, not a positive multiple of 4"
    if data.startswith(b"#bundle\0"):
        if depth >= _MAX_BUNDLE_DEPTH:
            return "bundles nested too deep"
        i = 16
        if n < i:
            return "bundle without a time tag"
        while i < n:
            if i + 4 > n:
                return "bundle element without a size"
            size = int.from_bytes(data[i:i + 4], "big", signed=True)
            i += 4
            if size <= 0 or size % 4 or i + size > n:
                return f"bundle element size {size} does not fit the {n}-byte bundle"
            problem = check_packet(data[i:i + size], depth + 1)
            if problem:
                return problem
            i += size
        return ""
    if data[:1] != b"/":
        return "not an OSC message or bundle (must start with '/' or '#bundle')"
    i = _string_end(data, 0)
    if i < 0 or i > n:
        return "unterminated address"
    if i == n:
        return ""  # no type tag string: no arguments (old OSC senders)
    if data[i:i + 1] != b",":
        return "type tag string must start with ','"
    end = _string_end(data, i)
    if end < 0 or end > n:
        return "unterminated type tag string"
    tags = data[i + 1:data.index(b"\0", i)].decode("ascii", "replace")
    i = end
    for tag in tags:
        if tag == "r":  # python-osc reads it as an int, which a set would take as a number
            return "OSC type tag 'r' (an RGBA colour): no hushbridge address takes a colour"
        size = _FIXED_SIZE.get(tag)
        if size is not None:
            i += size
        elif tag == "s":
            i = _string_end(data, i) if i < n else -1
            if i < 0:
                return "unterminated string argument"
        elif tag == "b":
            if i + 4 > n:
                return "blob without a size"
            blob = int.from_bytes(data[i:i + 4], "big", signed=True)
            if blob < 0:
                return "negative blob size"
            i += 4 + (blob + 3) // 4 * 4
        else:
            return f"unsupported OSC type tag {tag!r}"
        if i > n:
            return f"arguments ({tags}) need more than {n} bytes"
    if i != n:
        return f"{n - i} bytes after the arguments ({tags})"
    return ""


class _Message(NamedTuple):
    """A parsed message of the fast path (duck-types python-osc's OscMessage for dispatch)."""

    address: str
    params: tuple[Any, ...]


_FLOAT = struct.Struct(">f")
_INT = struct.Struct(">i")


def _fast_message(data: bytes) -> _Message | None:
    """The common case, ``<address> ,f`` or ``,i`` with one number, parsed without python-osc
    (a third of the per-message cost); None for anything else. ``data`` passed check_packet."""
    if data[:1] != b"/":
        return None
    nul = data.find(b"\0")
    i = (nul // 4 + 1) * 4
    if len(data) != i + 8 or data[i:i + 4] not in (b",f\0\0", b",i\0\0"):
        return None
    try:
        address = data[:nul].decode("ascii")
    except UnicodeDecodeError:
        return None
    unpack = _FLOAT.unpack_from if data[i + 1] == 0x66 else _INT.unpack_from
    return _Message(address, unpack(data, i + 4))


__all__ = ["OscArg", "check_packet", "encode"]
