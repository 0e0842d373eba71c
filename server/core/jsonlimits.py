"""Limits before parsing: the size and nesting depth of JSON are checked before it is decoded.

Python's ``json`` decoder (and every validator after it) recurses once per
nesting level, so a body of ten thousand ``[`` is a ``RecursionError`` — a 500
on the REST API and silence on the socket — however small it is. The scan here
measures the bracket depth of the raw bytes without recursion and without
decoding anything: escapes are dropped, then everything but brackets and
quotes, then what lies inside strings, and the running depth is a C-level
``accumulate`` (a Synthea bundle of 4 MB: about 0.05 s, less than decoding it;
linear however hostile the bytes), and a body with fewer brackets than the
limit is not scanned at all.

:func:`loads` is the one decoder of client JSON: size (413), then depth (422
``json_too_deep``), then ``json.loads``. The Socket.IO server decodes packets
with :class:`SocketJson`, which turns a payload over a limit into a
:class:`RefusedPayload` marker instead of raising: python-socketio would
otherwise drop the packet without an ack, so the gateway answers the marker
with the problem in the ack (see :mod:`server.realtime.gateway`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import engineio.packet
import orjson
import socketio
from engineio import json as engineio_json

from server.core.errors import MalformedJSON, PayloadTooLarge, ValidationFailed, YihaoError

# A run of 19 digits may be an integer beyond 64 bits, which orjson would read as a float.
_LONG_NUMBER = re.compile(r"\d{19}")
_LONG_NUMBER_BYTES = re.compile(rb"\d{19}")
_NAME = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# What the scan keeps of the raw bytes: brackets, and the quotes that say which are in strings.
_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b'[]{}"')
# Brackets are counted a slice at a time, so a body too deep is given up on early.
_SLICE = 65536
# By byte: an opening bracket goes one level down, a closing one one up (only these remain).
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


class JsonTooDeep(ValidationFailed):
    default_code = "json_too_deep"


def nesting_depth(raw: bytes, give_up_above: int | None = None) -> int:
    """The deepest bracket nesting of ``raw`` outside strings (0 for a scalar).

    Only C-level steps over the raw bytes: escaped backslashes, then escaped
    quotes are dropped (a run of backslashes pairs from the left, as in JSON),
    everything but brackets and quotes is dropped, and what lies between
    quote pairs is inside strings. An unterminated string runs to the end; the
    decoder stops there anyway. Stops early once deeper than ``give_up_above``.
    """
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.translate(None, _NOT_STRUCTURAL).split(b'"')[::2])
    depth = deepest = 0
    for start in range(0, len(outside), _SLICE):
        steps = map(_STEP.__getitem__, outside[start : start + _SLICE])
        levels = list(accumulate(steps, initial=depth))
        deepest, depth = max(deepest, max(levels)), levels[-1]
        if give_up_above is not None and deepest > give_up_above:
            break
    return deepest


def too_deep(data: bytes, max_depth: int) -> bool:
    # Fewer brackets than the limit cannot nest deeper than it (most bodies end here).
    opening = data.count(b"[") + data.count(b"{")
    return opening > max_depth and nesting_depth(data, give_up_above=max_depth) > max_depth


def check(
    raw: bytes | str, *, max_bytes: int, max_depth: int, field: str = "body", wrapping: int = 0
) -> None:
    """Raise the 413 or 422 problem for ``raw`` over a limit; nothing is decoded.

    ``wrapping``: levels around the client's value that are not its own (the
    ``[name, payload]`` array of a Socket.IO event).
    """
    if isinstance(raw, str):
        # A code point is at most 4 bytes of UTF-8 (a lone surrogate 3), and brackets are
        # ASCII: most text is measured without encoding it.
        if len(raw) * 4 <= max_bytes and raw.count("[") + raw.count("{") <= max_depth + wrapping:
            return
        data = raw.encode("utf-8", "surrogatepass")
    else:
        data = raw
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field} may be at most {max_bytes} bytes")
    if too_deep(data, max_depth + wrapping):
        raise JsonTooDeep(
            f"{field}: JSON nested deeper than {max_depth} levels",
            errors=[{"field": field, "reason": f"nested deeper than {max_depth} levels"}],
        )


def loads(raw: bytes | str, *, max_bytes: int, max_depth: int, field: str = "body") -> Any:
    """Decode client JSON once it is known to be within the size and depth limits."""
    check(raw, max_bytes=max_bytes, max_depth=max_depth, field=field)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJSON(f"the {field} is not valid JSON: {exc}") from None


def dumps_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON, keys in their order, by orjson; what orjson refuses goes to ``json``.

    orjson refuses what the standard library writes (integers beyond 64 bits, keys that
    are not strings, lone surrogates): those go through ``json`` (ASCII escapes, so a lone
    surrogate is written too), so nothing that was sent before fails now. Non-ASCII is
    written as UTF-8 rather than ``\\u`` escapes (the same text once decoded). NaN and
    infinities become ``null`` (``json`` wrote ``NaN``, which no JavaScript client parses).
    """
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def dumps_text(obj: Any) -> str:
    """:func:`dumps_bytes` as text (python-socketio's packets are text)."""
    return dumps_bytes(obj).decode()


def orjson_or(raw: str | bytes, fallback: Callable[[Any], Any]) -> Any:
    """Decode ``raw`` by orjson where it reads it exactly as the standard library would,
    else by ``fallback`` (which decodes it as before, or refuses it as before).

    orjson reads an integer beyond 64 bits as a float and refuses ``NaN``, lone surrogates
    and numbers beyond a double: text that may hold those goes to ``fallback``.
    """
    long = _LONG_NUMBER.search(raw) if isinstance(raw, str) else _LONG_NUMBER_BYTES.search(raw)
    if not long:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return fallback(raw)


def loads_text(text: str | bytes) -> Any:
    """Decode JSON as engine.io's ``json.loads`` does (integers of more than 100 digits are
    refused: ``int()`` is quadratic), by orjson where the two agree."""
    return orjson_or(text, engineio_json.loads)


class RefusedPayload:
    """What a Socket.IO payload over a limit decodes to: the problem to answer with.

    Truthy, so python-socketio passes a refused connect ``auth`` on to the
    connect handler rather than treating it as absent.
    """

    def __init__(self, error: YihaoError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"RefusedPayload({self.error.code})"


class SocketJson:
    """The ``json`` module of the Socket.IO packets: checked ``loads``, plain ``dumps``.

    An event packet's JSON is ``["name", arg, …]``; over a limit it decodes to
    ``["name", RefusedPayload]`` (the name read without decoding the rest), so
    the event's own handler — or the unknown-event handler — answers the ack
    that the client asked for, and the connection stays up. A connect packet's
    JSON is the ``auth`` object, which becomes the marker itself.
    """

    def __init__(self, *, max_bytes: int, max_depth: int) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        # python-socketio asks for compact separators, which is what orjson writes.
        return dumps_text(obj)

    def loads(self, text: str | bytes, **kwargs: Any) -> Any:
        # An event (or ack) is an array around the payload; a connect packet is the auth itself.
        wrapping = 1 if text[:1] in ("[", b"[") else 0
        try:
            check(
                text,
                max_bytes=self.max_bytes,
                max_depth=self.max_depth,
                field="payload",
                wrapping=wrapping,
            )
        except YihaoError as exc:
            refused = RefusedPayload(exc)
            name = _event_name(text)
            return refused if name is None else [name, refused]
        # engine.io's loads: integers of more than 100 digits are refused (int() is quadratic).
        return loads_text(text)


def _event_name(text: str | bytes) -> str | None:
    """The leading ``"name"`` of an event array, decoded alone; None for anything else."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    head = text.lstrip()
    if not head.startswith("["):
        return None
    body = head[1:].lstrip()
    match = _NAME.match(body)
    if match is None:
        return ""  # an event array without a name at its head: the unknown-event answer
    try:
        name = json.loads(match.group(0))
    except ValueError:
        return ""
    return name if isinstance(name, str) else ""


def socket_packet_class(*, max_bytes: int, max_depth: int) -> type[socketio.packet.Packet]:
    """The Socket.IO packet class of one server, decoding with :class:`SocketJson`.

    A subclass rather than ``AsyncServer(json=…)``, which would set the module
    on python-socketio's and engine.io's shared classes for every server and
    client in the process.
    """

    class CheckedPacket(socketio.packet.Packet):  # type: ignore[misc]  # socketio is untyped
        json = SocketJson(max_bytes=max_bytes, max_depth=max_depth)
        data: Any

        def decode(self, encoded_packet: str | bytes) -> int:
            attachments: int = super().decode(encoded_packet)
            if self.packet_type in (socketio.packet.EVENT, socketio.packet.BINARY_EVENT):
                self.data = event_data(self.data)
            return attachments

    return CheckedPacket


# The server's own handlers: python-socketio runs them for a client's event of that name too.
RESERVED_EVENTS = frozenset(socketio.AsyncServer.reserved_events)


def event_data(data: Any) -> list[Any]:
    """An event packet's ``[name, *args]`` that reaches only client → server handlers.

    python-socketio dispatches a client's event named ``connect`` or
    ``disconnect`` to the server's connect and disconnect handlers (a second
    sign-in on a live socket, presence torn down on one still connected), and
    fails without an ack on an event that is not ``[name, …]``. Both now reach
    the unknown-event handler, which answers them.
    """
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        return ["", data]
    if data[0] in RESERVED_EVENTS:
        return [f"client:{data[0]}", *data[1:]]
    return data


# engine.io packets carry JSON only in the server's open packet; a client's (a message
# that is not Socket.IO) is never legitimate, so a small fixed limit does.
ENGINEIO_MAX_DEPTH = 32


class EngineJson:
    """engine.io's ``json``: a payload too deep is "not JSON" (kept as text), not a crash.

    engine.io decodes every text packet that does not start with a digit as JSON,
    outside any error handling: ``4[[[…`` (a message that is not Socket.IO) was a
    ``RecursionError`` that killed the connection's handler. Refused here with a
    ``ValueError``, engine.io keeps the text, and python-socketio drops it as a
    packet it does not know, with the connection still up.
    """

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        return dumps_text(obj)

    @staticmethod
    def loads(text: str | bytes, **kwargs: Any) -> Any:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        if too_deep(data, ENGINEIO_MAX_DEPTH):
            raise ValueError(f"JSON nested deeper than {ENGINEIO_MAX_DEPTH} levels")
        return loads_text(text)


def guard_engineio() -> None:
    """Decode engine.io packets with :class:`EngineJson` (idempotent).

    engine.io has no per-server hook: its packet class is shared by the process
    (``AsyncServer(json=…)`` sets it the same way), and the guard is right for
    every server and client in it.
    """
    engineio.packet.Packet.json = EngineJson
