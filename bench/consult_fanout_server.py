"""The Yihao side of the fan-out benchmark: our Socket.IO gateway on aiohttp, the peer's protocol.

The same three events as ``bench/node_peer/server.js`` (``join``, ``msg``,
``echo``), registered through :class:`server.realtime.gateway.Gateway`, so every
event pays what a Yihao event pays: payload validation with pydantic, the rate
limiter, the requester lookup and the ``{"ok", "data"}`` ack. Authentication is
a stub (no database): this measures the realtime layer, not login.

It is built like ``server/app.py`` builds Yihao's: the same JSON (orjson) packet
class, per-message deflate off unless ``--compression``, every socket closed at once at
shutdown; and it runs on uvloop where installed.

    python bench/consult_fanout_server.py --port 3101 [--redis redis://…] [--compression]
    python bench/consult_fanout_server.py --port 3101 --reuse-port --redis …   # one of N
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import socketio
from aiohttp import web
from pydantic import Field

from server.config import load_settings
from server.core.api import Strict
from server.core.auth import Requester
from server.core.jsonlimits import guard_engineio, socket_packet_class
from server.core.observability import Metrics
from server.realtime.gateway import Gateway
from server.realtime.transport import Manager, RedisManager, close_all, use_compression


class Join(Strict):
    room: str = Field(max_length=64)


class Message(Strict):
    room: str = Field(max_length=64)
    t: int
    pad: str = Field(max_length=4096)


def build(redis_url: str | None, raw: bool = False, compression: bool = False) -> web.Application:
    settings = load_settings(
        environ={},
        secret_key="b" * 40,
        socket_events_per_10s=1_000_000,
        data_dir="/tmp/yihao-bench",
    )
    manager = RedisManager(redis_url) if redis_url else Manager()
    guard_engineio()
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        serializer=socket_packet_class(
            max_bytes=settings.socket_max_message_bytes, max_depth=settings.json_max_depth
        ),
        logger=False,
        engineio_logger=False,
    )
    use_compression(sio, compression)
    app = web.Application()
    sio.attach(app, socketio_path="socket.io")

    async def close_sockets(app: web.Application) -> None:
        await close_all(sio)

    app.on_shutdown.append(close_sockets)

    async def authenticate(token: str) -> Requester:
        return Requester(user_id=int(token), role="specialist", session_id=token)

    gateway = Gateway(settings, sio, authenticate, None, Metrics())  # type: ignore[arg-type]

    async def join(sid: str, requester: Requester, data: Join) -> Any:
        await sio.enter_room(sid, data.room)
        return {"room": data.room}

    async def msg(sid: str, requester: Requester, data: Message) -> Any:
        await sio.emit("msg", data.model_dump(), room=data.room, skip_sid=sid)
        return None

    async def echo(sid: str, requester: Requester, data: Any) -> Any:
        return data

    if raw:
        # Plain python-socketio handlers: what the gateway's checks cost, by difference.
        async def raw_join(sid: str, data: Any) -> Any:
            await sio.enter_room(sid, data["room"])
            return {"ok": True, "data": {"room": data["room"]}}

        async def raw_msg(sid: str, data: Any) -> Any:
            await sio.emit("msg", data, room=data["room"], skip_sid=sid)
            return {"ok": True, "data": None}

        async def raw_echo(sid: str, data: Any) -> Any:
            return {"ok": True, "data": data}

        sio.on("join", raw_join)
        sio.on("msg", raw_msg)
        sio.on("echo", raw_echo)
    else:
        gateway.on("join", Join, join)
        gateway.on("msg", Message, msg)
        gateway.on("echo", None, echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=3101)
    parser.add_argument("--redis", default=None)
    parser.add_argument("--raw", action="store_true", help="bare python-socketio handlers")
    parser.add_argument("--compression", action="store_true", help="accept per-message deflate")
    parser.add_argument("--reuse-port", action="store_true", help="share the port (SO_REUSEPORT)")
    args = parser.parse_args()
    app = build(args.redis, args.raw, args.compression)

    async def ready(app: web.Application) -> None:
        print(f"ready {args.port}", flush=True)

    app.on_startup.append(ready)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        reuse_port=args.reuse_port or None,
        shutdown_timeout=10,
    )


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    main()
