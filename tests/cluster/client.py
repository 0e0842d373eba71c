"""Talking to a running cluster over real HTTP and Socket.IO, as the personas do."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio

from server.cluster import LocalCluster
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


async def platform_admin(http: aiohttp.ClientSession, url: str) -> tuple[str, int]:
    """The platform administrator's token and the id of QDSL (青岛市立医院)."""
    admin = await login(http, url, "admin")
    return admin, await institution_id(http, url, admin, "QDSL")


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
    """A client as a browser tab behaves: reconnects by itself, catches up by sequence number.

    After every reconnect, and whenever a pushed event skips a number (its
    predecessor's push was lost), it asks ``sync`` for what it missed.
    ``disconnected_at`` / ``recovered_at`` time the first outage: from losing
    the connection to having replayed what was missed.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=0.1,
            reconnection_delay_max=0.5,
            randomization_factor=0,
            **options,
        )
        self.sio.on("event", self._on_event)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.connects = 0
        self.gaps = 0
        self.disconnected_at: float | None = None
        self.recovered_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start_from_heads(self) -> None:
        """Take the current heads of the client's streams as the starting positions."""
        ack = await self.call("sync", {"positions": {}})
        assert ack["ok"], ack
        for stream, head in ack["data"]["heads"].items():
            self.positions[stream] = max(self.positions.get(stream, 0), head)

    def accept(self, envelope: dict[str, Any]) -> None:
        last = self.positions.get(envelope["stream"])
        if last is not None and envelope["seq"] > last + 1:
            # A push went missing: replay from the last number seen, in order.
            self.gaps += 1
            self._spawn(self._catch_up(reconnected=False))
            return
        super().accept(envelope)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_connect(self) -> None:
        self.connects += 1
        if self.connects > 1:
            # Not awaited here: the ack of sync arrives through the loop running this handler.
            self._spawn(self._catch_up(reconnected=True))

    async def _catch_up(self, reconnected: bool) -> None:
        try:
            await self.sync()
        except (socketio.exceptions.SocketIOError, TimeoutError):
            return  # disconnected again: the next connect catches up
        if reconnected and self.recovered_at is None:
            self.recovered_at = time.monotonic()

    async def _on_disconnect(self, reason: Any = None) -> None:
        if self.disconnected_at is None:
            self.disconnected_at = time.monotonic()

    def department_names(self) -> list[str]:
        return [
            e["data"]["department"]["name"] for e in self.events if e["op"] == "department_added"
        ]

    async def wait_for_departments(self, names: list[str], timeout: float = 30) -> None:
        """Wait until every department in ``names`` has been seen (live or replayed)."""
        wanted = set(names)
        deadline = asyncio.get_running_loop().time() + timeout
        while not wanted <= set(self.department_names()):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                missing = sorted(wanted - set(self.department_names()))
                raise AssertionError(f"missing after {timeout}s: {missing}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 0.5))

    async def close(self) -> None:
        await super().close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class PollingClient(ReconnectingClient):
    """A client on the HTTP long-polling transport, as behind proxies that block WebSocket.

    It keeps cookies as a browser does (aiohttp's default jar ignores those of an
    IP-address host), so nginx's sticky-routing cookie comes back on every poll.
    """

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        super().__init__(http_session=self.http)

    async def connect(self, url: str, token: str) -> None:
        await self.sio.connect(url, auth={"token": token}, transports=["polling"], wait_timeout=5)

    def cookies(self) -> set[str]:
        return {cookie.key for cookie in self.http.cookie_jar}

    async def close(self) -> None:
        # Closing the HTTP session first ends the pending long poll at once; a polite
        # disconnect would wait for it to time out (the 25 s ping interval).
        self.sio.reconnection = False
        await self.http.close()
        await super().close()
        # engine.io sends its goodbye through a session of its own once ours is closed.
        stray = self.sio.eio.http
        if stray is not None and stray is not self.http:
            await stray.close()


async def add_departments(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    institution: int,
    names: list[str],
    before_each: Callable[[int], Any] | None = None,
) -> int:
    """Add each department once, retrying through failures; returns the number of retries.

    A 409 on a retry means the earlier attempt committed before its node died.
    """
    retries = 0
    for index, name in enumerate(names):
        if before_each is not None:
            before_each(index)
        for attempt in range(100):
            try:
                status, body = await add_department(http, url, token, institution, name)
            except (aiohttp.ClientError, TimeoutError):
                status, body = 0, None
            if status == 201 or (attempt and status == 409):
                break
            assert status in (0, 502, 503, 504), (status, body)
            retries += 1
            await asyncio.sleep(0.05)  # back-off before retrying a failed request
        else:
            raise AssertionError(f"department {name} never committed")
    return retries


async def socket_counts(http: aiohttp.ClientSession, urls: list[str]) -> list[int]:
    """Connected Socket.IO clients per node, from each node's /metrics."""
    counts = []
    for url in urls:
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
        line = next(x for x in text.splitlines() if x.startswith("yihao_socketio_connections "))
        counts.append(int(float(line.split()[1])))
    return counts


async def place(
    http: aiohttp.ClientSession, cluster: LocalCluster, client: ReconnectingClient, token: str
) -> int:
    """Connect through nginx; which node took the socket (from the nodes' /metrics)."""
    urls = [m.url for m in cluster.members]
    before = await socket_counts(http, urls)
    await client.connect(cluster.url, token)
    await client.start_from_heads()
    after = await socket_counts(http, urls)
    return next(i for i, (b, a) in enumerate(zip(before, after, strict=True)) if a > b)
