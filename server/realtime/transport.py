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
import logging
from typing import Any

import socketio
from aiohttp import web
from engineio.async_drivers.aiohttp import WebSocket

logger = logging.getLogger(__name__)


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
        await self.handler(self)
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
    websocket with a close frame; the handler aiohttp waits for ends with it.
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
    return len(sockets)
