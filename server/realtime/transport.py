"""The Socket.IO transport under the gateway: per-message deflate, and closing at shutdown.

Per-message deflate. engine.io's aiohttp driver opens every websocket with
aiohttp's default ``compress=True``: each connection that offers
``permessage-deflate`` (every browser does) gets its own zlib compressor and
decompressor, tens of KiB a socket and CPU on every frame. Like Node's Socket.IO 4,
Yihao accepts it only when ``SOCKET_COMPRESSION`` is on: :func:`use_compression`
gives the server a websocket class that says so.

Shutdown. aiohttp waits for every request handler to end, up to the shutdown
timeout, and a websocket's handler ends only when its connection does: N open
sockets held the process for the whole timeout (twice: once waiting, once
cancelling), whatever N. :func:`close_all` (an ``on_shutdown`` hook, which aiohttp
runs after the listening socket closed and before it waits for handlers) closes every
socket at once, the way Node's ``io.close()`` does: the disconnect work runs (our
handlers and hooks) and the websocket gets a close frame, with no engine.io or
Socket.IO close packet, so a client sees "transport close" and reconnects — to
another node, or to this one when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import socketio
from aiohttp import web
from engineio.async_drivers.aiohttp import WebSocket

logger = logging.getLogger(__name__)


# How long close_all waits for the websockets' close handshakes (a client that does not
# answer its close frame is left to aiohttp's shutdown timeout).
CLOSE_WAIT_SECONDS = 5.0


def _websocket_tasks(eio: Any) -> set[asyncio.Task[Any]]:
    """The request tasks serving an engine.io server's open websockets."""
    tasks: set[asyncio.Task[Any]] | None = eio.__dict__.get("_yihao_websocket_tasks")
    if tasks is None:
        tasks = eio.__dict__["_yihao_websocket_tasks"] = set()
    return tasks


class _WebSocket(WebSocket):  # type: ignore[misc]  # engineio is untyped
    """engine.io's aiohttp websocket, with per-message deflate as configured."""

    compress = False

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=self.compress
        )
        await self._sock.prepare(request)
        self.environ = environ
        task = asyncio.current_task()
        running = _websocket_tasks(self.server)
        if task is not None:
            running.add(task)
        try:
            await self.handler(self)
        finally:
            if task is not None:
                running.discard(task)
        return self._sock


class _DeflateWebSocket(_WebSocket):
    compress = True


def use_compression(sio: socketio.AsyncServer, compression: bool) -> None:
    """Accept per-message deflate on this server's websockets only when ``compression``."""
    eio = sio.eio
    # The driver's table is shared by every server of the process: this one gets a copy.
    eio._async = {**eio._async, "websocket": _DeflateWebSocket if compression else _WebSocket}


async def close_all(sio: socketio.AsyncServer) -> int:
    """Close every socket of this server at once (at shutdown); returns how many.

    Each socket runs its disconnect work (python-socketio's, then the gateway's
    handler and hooks) concurrently with the others, then its writer closes the
    websocket with a close frame; the handler aiohttp waits for ends with it, and
    this waits (at most ``CLOSE_WAIT_SECONDS``) for those handlers to end.
    """
    eio = sio.eio
    sockets = [s for s in list(eio.sockets.values()) if not s.closed and not s.closing]
    if not sockets:
        return 0

    async def close(socket: Any) -> None:
        try:
            # abort: no engine.io CLOSE packet (a client that gets one does not reconnect).
            await socket.close(wait=False, abort=True, reason=eio.reason.SERVER_DISCONNECT)
        except Exception:
            logger.exception("could not close a socket at shutdown", extra={"sid": socket.sid})
        finally:
            # Ends the writer, which closes the websocket (polling: ends the long poll).
            socket.queue.put_nowait(None)
            eio.sockets.pop(socket.sid, None)

    await asyncio.gather(*(close(s) for s in sockets))
    # Wait for the close handshakes: a websocket whose handler ended closes its connection,
    # so aiohttp has no handler left to wait for (and no per-connection timeout to arm).
    running = [t for t in _websocket_tasks(eio) if not t.done()]
    if running:
        await asyncio.wait(running, timeout=CLOSE_WAIT_SECONDS)
    return len(sockets)


class RoomIndex:
    """python-socketio's room bookkeeping with the rooms of each socket indexed.

    The manager keeps ``rooms[namespace][room] = {sid: eio_sid}`` only, so a
    disconnect (and ``rooms(sid)``) scans every room of the namespace, each socket's
    own room included: closing N sockets cost O(N²) (10,000 at shutdown: over a minute
    of CPU before the last one was closed). This mixin keeps ``sid → rooms`` beside it,
    so both are as cheap as the socket's own rooms. Mixed in before the manager class.
    """

    rooms: dict[str, dict[str | None, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, list[str]]
    pending_disconnect: dict[str, list[str]]

    def _rooms_of(self) -> dict[str, dict[str, set[str | None]]]:
        index: dict[str, dict[str, set[str | None]]] | None = self.__dict__.get("_room_index")
        if index is None:
            index = self.__dict__["_room_index"] = {}
        return index

    def basic_enter_room(
        self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        self._rooms_of().setdefault(namespace, {}).setdefault(sid, set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: str | None) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        by_sid = self._rooms_of().get(namespace, {})
        rooms = by_sid.get(sid)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del by_sid[sid]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        # python-socketio's basic_disconnect (5.x), with the rooms looked up, not scanned.
        rooms = self._rooms_of().get(namespace, {}).pop(sid, set())
        if namespace not in self.rooms:
            return
        for room in rooms:
            super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[str]:
        rooms = self._rooms_of().get(namespace, {}).get(sid, ())
        return [room for room in rooms if room is not None]


# Called for every event this node delivers to its own sockets: (event name, argument).
OnDelivery = Callable[[str, Any], None]


class Manager(RoomIndex, socketio.AsyncManager):  # type: ignore[misc]
    """One process's manager (embedded mode), rooms indexed by socket."""

    on_delivery: OnDelivery | None = None

    async def emit(
        self, event: str, data: Any, namespace: str, room: Any = None, **kwargs: Any
    ) -> Any:
        if self.on_delivery is not None:
            self.on_delivery(event, data)
        return await super().emit(event, data, namespace, room=room, **kwargs)


# The Redis listener: how soon it tries again after losing Redis (doubling up to the cap:
# python-socketio's own loop waits up to 60 s), how long the subscribed connection may be
# silent before it is pinged, and how long a ping may go unanswered before the link is
# taken for dead and opened again.
LISTEN_RETRY_FIRST = 0.1
LISTEN_RETRY_MAX = 1.0
LISTEN_IDLE_PING = 1.0
LISTEN_PING_TIMEOUT = 2.0


class RedisManager(RoomIndex, socketio.AsyncRedisManager):  # type: ignore[misc]
    """The cluster's manager (fan-out through Redis), rooms indexed by socket.

    Its listener is our own loop, not python-socketio's: on a connection of its own
    (the publisher reconnecting must not swap the listener's connection under it), it
    subscribes again within a second of Redis coming back, pings a silent link so that
    a dead one is noticed, says truthfully whether it is subscribed
    (:meth:`listener_status`, ``/readyz``) and, after subscribing again, runs
    :attr:`on_resubscribed` (the heads beacon tells this node's clients to catch up).
    """

    on_delivery: OnDelivery | None = None
    on_resubscribed: Callable[[], Coroutine[Any, Any, None]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listening = False
        self.listener_error = "not started"
        self.listener_pubsub: Any = None
        self.listener_redis: Any = None
        self.resubscriptions = 0
        self._resubscribed_tasks: set[asyncio.Task[None]] = set()

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if self.on_delivery is not None:
            data = message.get("data")
            if not message.get("binary") and isinstance(data, list) and len(data) == 1:
                self.on_delivery(message.get("event", ""), data[0])
        await super()._handle_emit(message)

    def listener_status(self) -> str:
        """``"ok"`` while subscribed on a live connection, else ``"unavailable: <why>"``."""
        task = getattr(self, "thread", None)
        if not isinstance(task, asyncio.Task) or task.done():
            return "unavailable: listener not running"
        if not self.listening:
            return f"unavailable: {self.listener_error}"
        return "ok"

    async def _close_listener(self) -> None:
        for resource in (self.listener_pubsub, self.listener_redis):
            if resource is not None:
                with contextlib.suppress(Exception):
                    await resource.aclose()
        self.listener_pubsub = self.listener_redis = None

    async def _subscribe(self) -> Any:
        await self._close_listener()
        module = self._get_redis_module()
        self.listener_redis = module.Redis.from_url(self.redis_url, **self.redis_options)
        self.listener_pubsub = self.listener_redis.pubsub(ignore_subscribe_messages=True)
        await self.listener_pubsub.subscribe(self.channel)
        return self.listener_pubsub

    async def _redis_listen_with_retries(self) -> AsyncIterator[dict[str, Any]]:
        retry = LISTEN_RETRY_FIRST
        subscribed_before = False
        while True:
            try:
                pubsub = await self._subscribe()
                self.listening, self.listener_error = True, ""
                retry = LISTEN_RETRY_FIRST
                if subscribed_before:
                    self.resubscriptions += 1
                    logger.warning("redis listener subscribed again")
                    self._after_resubscribe()
                subscribed_before = True
                async for message in self._messages(pubsub):
                    yield message
            except asyncio.CancelledError:
                self.listening, self.listener_error = False, "stopped"
                await self._close_listener()
                raise
            except Exception as exc:
                if self.listening:
                    logger.warning(
                        "redis listener lost its connection; subscribing again",
                        extra={"redis_exception": f"{type(exc).__name__}: {exc}"},
                    )
                self.listening, self.listener_error = (
                    False,
                    f"not subscribed ({type(exc).__name__})",
                )
                await asyncio.sleep(retry)
                retry = min(retry * 2, LISTEN_RETRY_MAX)

    async def _messages(self, pubsub: Any) -> AsyncIterator[dict[str, Any]]:
        """The subscription's messages; a silent link is pinged, an unanswered ping ends it."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged: float | None = None
        while True:
            message = await pubsub.get_message(timeout=LISTEN_IDLE_PING / 2)
            now = loop.time()
            if message is not None:
                heard, pinged = now, None
                if message.get("type") == "message":
                    yield message
                continue
            if pinged is not None and now - pinged > LISTEN_PING_TIMEOUT:
                raise ConnectionError(f"no answer from Redis in {LISTEN_PING_TIMEOUT:.0f} s")
            if pinged is None and now - heard > LISTEN_IDLE_PING:
                await pubsub.ping()
                pinged = now

    def _after_resubscribe(self) -> None:
        hook = self.on_resubscribed
        if hook is None:
            return
        task = asyncio.get_running_loop().create_task(hook())
        self._resubscribed_tasks.add(task)
        task.add_done_callback(self._resubscribed_tasks.discard)
