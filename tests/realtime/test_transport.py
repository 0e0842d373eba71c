"""The Socket.IO transport: per-message deflate as configured, shutdown, the packets' JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.jsonlimits import socket_packet_class
from server.realtime.transport import Manager
from tests.helpers import Api

WS_PATH = "/socket.io/?EIO=4&transport=websocket"


async def _extensions(client: TestClient[Any, Any]) -> str | None:
    """What the server answers a browser-like websocket that offers per-message deflate."""
    async with aiohttp.ClientSession() as http:
        url = str(client.make_url(WS_PATH)).replace("http", "ws", 1)
        async with http.ws_connect(url, compress=15) as ws:
            assert (await ws.receive_str(timeout=5)).startswith("0")  # the engine.io open
            return ws._response.headers.get("Sec-WebSocket-Extensions")


async def test_websockets_do_not_negotiate_deflate_by_default(
    client: TestClient[Any, Any],
) -> None:
    assert await _extensions(client) is None


async def test_deflate_is_negotiated_when_switched_on(
    settings: Settings, aiohttp_client: Any
) -> None:
    compressed = await aiohttp_client(create_app(settings.with_overrides(socket_compression=True)))
    extensions = await _extensions(compressed)
    assert extensions is not None and "permessage-deflate" in extensions


async def _open(
    url: str, token: str, http: aiohttp.ClientSession
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url.replace("http", "ws", 1) + WS_PATH.lstrip("/"))
    assert (await ws.receive_str(timeout=5)).startswith("0")
    await ws.send_str("40" + json.dumps({"token": token}))
    answer = await ws.receive_str(timeout=5)
    assert answer.startswith("40{"), answer
    return ws


async def _closing(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
    """Every text frame until the server closes the websocket (pings answered)."""
    frames: list[str] = []
    while True:
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            return frames
        if msg.data == "2":
            await ws.send_str("3")
        else:
            frames.append(msg.data)


async def test_shutdown_closes_every_socket_so_clients_reconnect(
    client: TestClient[Any, Any], api: Api, network: Services
) -> None:
    token = await api.login("dr_li")
    url = api.url
    # A python-socketio client, which reconnects after a transport close.
    reasons: list[str] = []
    sio = socketio.AsyncClient(reconnection=True, reconnection_attempts=1)

    @sio.event
    async def disconnect(reason: str = "") -> None:
        reasons.append(reason)

    await sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=5)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = []
        for start in range(0, 200, 50):
            sockets += await asyncio.gather(
                *(_open(url, token, http) for _ in range(start, min(start + 50, 200)))
            )
        watching = [asyncio.ensure_future(_closing(ws)) for ws in sockets]
        await client.close()  # the server shuts down with 201 sockets open
        frames = await asyncio.wait_for(asyncio.gather(*watching), 60)
        # Every socket got a websocket close, and no Socket.IO or engine.io close packet
        # (after which a client would not reconnect).
        assert len(frames) == 200
        assert all(ws.closed for ws in sockets)
        assert not [f for fs in frames for f in fs if f == "1" or f.startswith("41")]
    for _ in range(100):
        if reasons:
            break
        await asyncio.sleep(0.05)
    # Not a server disconnect (the one reason the client does not reconnect after).
    assert reasons == [socketio.AsyncClient.reason.TRANSPORT_ERROR]
    await sio.shutdown()


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "王芳", "note": "复诊 · café ✓ 🙂", "n": -3},
        {"big": 2**70, "negative": -(10**40), "edge": 2**64 - 1, "below": -(2**63) - 1},
        {"float": 0.1, "exp": 1e300, "nested": [[{"a": [1, 2, {"b": None}]}]], "t": True},
        {"id": 123456789012345678901234567890, "digits_in_text": "1234567890123456789012"},
    ],
)
def test_packets_round_trip_their_json_as_before(payload: dict[str, Any]) -> None:
    packet_class = socket_packet_class(max_bytes=1 << 20, max_depth=64)
    encoded = packet_class(socketio.packet.EVENT, data=["consult.chat", payload]).encode()
    decoded = packet_class(encoded_packet=encoded)
    assert decoded.data == ["consult.chat", payload]
    # The same values as the standard library read and wrote before.
    assert json.loads(encoded[1:]) == ["consult.chat", payload]
    stdlib = "2" + json.dumps(["consult.chat", payload], separators=(",", ":"))
    assert packet_class(encoded_packet=stdlib).data == ["consult.chat", payload]


def test_an_integer_of_more_than_100_digits_is_still_refused() -> None:
    packet_class = socket_packet_class(max_bytes=1 << 20, max_depth=64)
    with pytest.raises(ValueError):
        packet_class(encoded_packet='2["consult.chat",{"n":' + "9" * 101 + "}]")


async def test_the_room_index_keeps_the_rooms_python_socketio_keeps() -> None:
    ours, theirs = Manager(), socketio.AsyncManager()
    for manager in (ours, theirs):
        manager.set_server(socketio.AsyncServer(async_mode="aiohttp"))
        manager.initialize()

    async def both(method: str, *args: Any) -> None:
        for manager in (ours, theirs):
            await getattr(manager, method)(*args)

    sids = []
    for n in range(4):
        sid_ours = await ours.connect(f"eio{n}", "/")
        sid_theirs = await theirs.connect(f"eio{n}", "/")
        # Same sids in both, so the two tables can be compared.
        theirs.rooms["/"][None].pop(sid_theirs)
        theirs.rooms["/"].pop(sid_theirs)
        theirs.basic_enter_room(sid_ours, "/", None, eio_sid=f"eio{n}")
        theirs.basic_enter_room(sid_ours, "/", sid_ours, eio_sid=f"eio{n}")
        sids.append(sid_ours)
    for sid in sids:
        await both("enter_room", sid, "/", "user:1")
    await both("enter_room", sids[0], "/", "consult:7")
    await both("enter_room", sids[1], "/", "consult:7")
    await both("leave_room", sids[1], "/", "user:1")
    await both("disconnect", sids[2], "/")
    await both("close_room", "consult:7", "/")
    for sid in sids:
        assert sorted(ours.get_rooms(sid, "/")) == sorted(theirs.get_rooms(sid, "/"))
    assert {r: dict(m) for r, m in ours.rooms["/"].items()} == {
        r: dict(m) for r, m in theirs.rooms["/"].items()
    }
    assert ours.get_rooms(sids[2], "/") == []
    assert sorted(ours.get_rooms(sids[0], "/")) == sorted([sids[0], "user:1"])
