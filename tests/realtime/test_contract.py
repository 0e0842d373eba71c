"""The gateway's contract at its edges, as docs/realtime.md states it.

Unknown events count toward the rate limit; a payload over the size limit is refused
with a 413 ack on either transport and the connection stays; an event with extra
payload arguments is refused (400) instead of going unanswered; the libraries' own
errors reach the JSON log; and the doc's table of common problem codes is the
gateway's registry.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.core.observability import JsonFormatter
from server.realtime.acks import GATEWAY_PROBLEMS
from server.seed import seed_demo
from tests.helpers import Api

DOC = Path(__file__).resolve().parents[2] / "docs" / "realtime.md"
LIMIT = 20_000  # socket_max_message_bytes for these tests: large payloads stay cheap


@pytest.fixture
async def small(aiohttp_client: Any, settings: Settings) -> AsyncIterator[Api]:
    """The demo network on an app with a small message limit and a small event budget."""
    app = create_app(settings.with_overrides(socket_max_message_bytes=LIMIT))
    api = Api(await aiohttp_client(app))
    await seed_demo(app[SERVICES])
    yield api
    await api.close()


async def _client(api: Api, username: str, transport: str) -> socketio.AsyncClient:
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(
        api.url, auth={"token": await api.token(username)}, transports=[transport], wait_timeout=5
    )
    return sio


async def test_unknown_events_spend_the_same_budget_as_known_ones(
    aiohttp_client: Any, settings: Settings
) -> None:
    app = create_app(settings.with_overrides(socket_events_per_10s=20))
    api = Api(await aiohttp_client(app))
    await seed_demo(app[SERVICES])
    flooder = await api.socket("gp_zhang")
    acks = await asyncio.gather(*(flooder.call("no.such.event", {}) for _ in range(40)))
    codes = [a["problem"]["code"] for a in acks]
    assert set(codes) == {"unknown_event", "too_many_requests"}
    assert codes.count("too_many_requests") >= 15
    # The budget is the connection's: a known event is refused now too.
    ack = await flooder.call("sync", {"positions": {}})
    assert (ack["ok"], ack["problem"]["status"]) == (False, 429)
    assert flooder.sio.connected
    await api.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_payload_over_the_limit_gets_413_and_the_connection_stays(
    small: Api, transport: str
) -> None:
    sio = await _client(small, "gp_zhang", transport)
    try:
        for size in (LIMIT + 1, 2 * LIMIT, 3 * LIMIT):
            ack = await sio.call("sync", {"positions": {}, "pad": "x" * size}, timeout=10)
            assert (ack["ok"], ack["problem"]["status"]) == (False, 413), (size, ack)
            assert ack["problem"]["code"] == "payload_too_large"
            # Not decoded, so not even the unknown field was seen; the socket still works.
            ack = await sio.call("sync", {"positions": {}}, timeout=10)
            assert ack["ok"], ack
            assert sio.connected
        # Multi-byte text counts in bytes, as the limit says.
        ack = await sio.call("sync", {"positions": {}, "pad": "医" * (LIMIT // 3 + 10)})
        assert ack["problem"]["code"] == "payload_too_large"
    finally:
        await sio.disconnect()


async def test_a_frame_beyond_four_times_the_limit_closes_the_connection(small: Api) -> None:
    """What the doc says: the transport reads frames up to 4x the limit; beyond, it closes."""
    sio = await _client(small, "gp_zhang", "websocket")
    gone = asyncio.Event()
    sio.on("disconnect", lambda *args: gone.set())
    with pytest.raises(socketio.exceptions.TimeoutError):
        await sio.call("sync", {"positions": {}, "pad": "x" * (5 * LIMIT)}, timeout=3)
    await asyncio.wait_for(gone.wait(), 10)
    assert not sio.connected


async def test_extra_payload_arguments_are_refused_with_a_problem(
    api: Api, network: Services
) -> None:
    sock = await api.socket("gp_zhang")
    ack = await sock.sio.call("sync", ({"positions": {}}, {"more": 1}), timeout=5)
    assert (ack["ok"], ack["problem"]["status"]) == (False, 400)
    assert ack["problem"]["code"] == "bad_request"
    assert "one payload" in ack["problem"]["detail"]
    # No payload at all is a bad payload, not a crash.
    ack = await sock.sio.call("sync", timeout=5)
    assert ack["problem"]["code"] == "bad_request"
    assert (await sock.sync())["ok"]


async def test_library_errors_reach_the_json_log(
    client: TestClient[Any, Any], api: Api, network: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handler error inside engine.io is logged as JSON (never a plain-text traceback)."""
    sio = network.gateway.sio
    assert sio.logger.name == "server.realtime.socketio"
    assert sio.eio.logger.name == "server.realtime.engineio"

    async def boom(sid: str, *args: Any) -> None:
        raise RuntimeError("boom in a library handler")

    # A raw handler, past the gateway's own error handling: the library logs its failure.
    sio.on("test.boom", boom)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    # Ours the only handler while the library fails: whatever else reaches stderr is the
    # library's own printing (the app's handler would print it as text under test settings).
    ours = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        sock = await api.socket("gp_zhang")
        await sock.sio.emit("test.boom", {})
        for _ in range(50):
            if "boom in a library handler" in stream.getvalue():
                break
            await asyncio.sleep(0.1)
    finally:
        root.handlers[:] = ours
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failure = next(line for line in lines if "boom in a library handler" in line.get("exc", ""))
    # python-socketio runs the handler as a task; its failure is the loop's to report.
    assert failure["logger"] in ("asyncio", "server.realtime.socketio", "server.realtime.engineio")
    assert failure["level"] == "ERROR"
    assert "Traceback" not in capsys.readouterr().err
    # Given loggers of ours, the libraries attach no plain-text handler of their own.
    for name in ("socketio.server", "engineio.server"):
        assert not logging.getLogger(name).handlers, name


def test_the_docs_list_the_gateways_problem_codes() -> None:
    """docs/realtime.md's table of common problem codes is the gateway's registry."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("Common problem codes:", 1)[1].split("\n\n", 2)[1]
    listed: set[tuple[int, str]] = set()
    for row in re.finditer(r"^\| (\d{3}) \| ([^|]+) \|", table, re.MULTILINE):
        for code in re.findall(r"`(\w+)`", row.group(2)):
            listed.add((int(row.group(1)), code))
    assert listed == set(GATEWAY_PROBLEMS)
