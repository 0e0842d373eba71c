"""Talking to a running cluster over real HTTP and Socket.IO, as the personas do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio

from server.seed import DEMO_PASSWORD
from tests.helpers import SocketClient


async def login(http: aiohttp.ClientSession, url: str, username: str) -> str:
    async with http.post(
        f"{url}/api/v1/auth/login", json={"username": username, "password": DEMO_PASSWORD}
    ) as response:
        body = await response.json()
        assert response.status == 200, body
        return str(body["access_token"])


async def institution_id(http: aiohttp.ClientSession, url: str, token: str, code: str) -> int:
    async with http.get(
        f"{url}/api/v1/institutions", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        body = await response.json()
        assert response.status == 200, body
    return next(int(item["id"]) for item in body["items"] if item["code"] == code)


async def add_department(
    http: aiohttp.ClientSession, url: str, token: str, institution: int, name: str
) -> tuple[int, Any]:
    async with http.post(
        f"{url}/api/v1/institutions/{institution}/departments",
        json={"name": name},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        return response.status, await response.json(content_type=None)


def is_department(name: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the institution event announcing the department ``name``."""

    def match(envelope: dict[str, Any]) -> bool:
        return (
            envelope["type"] == "institution"
            and envelope["op"] == "department_added"
            and envelope["data"]["department"]["name"] == name
        )

    return match


class ReconnectingClient(SocketClient):
    """A client that reconnects by itself (through nginx) and then catches up with ``sync``.

    ``disconnected_at`` / ``recovered_at`` time the outage: from losing the
    connection to having replayed what was missed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=0.1,
            reconnection_delay_max=0.5,
            randomization_factor=0,
        )
        self.sio.on("event", self._on_event)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.connects = 0
        self.disconnected_at: float | None = None
        self.recovered_at: float | None = None
        self.recovered = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _on_connect(self) -> None:
        self.connects += 1
        if self.connects > 1:
            # Not awaited here: the ack of sync arrives through the loop running this handler.
            task = asyncio.create_task(self._catch_up())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _catch_up(self) -> None:
        await self.sync()
        self.recovered_at = time.monotonic()
        self.recovered.set()

    async def _on_disconnect(self, reason: Any = None) -> None:
        if self.disconnected_at is None:
            self.disconnected_at = time.monotonic()
