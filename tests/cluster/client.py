"""Talking to a running cluster over real HTTP and Socket.IO, as the personas do."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp

import chaos.clients
from chaos.clients import login, socket_counts
from server.cluster import LocalCluster

__all__ = [
    "PollingClient",
    "ReconnectingClient",
    "add_department",
    "add_departments",
    "institution_id",
    "is_department",
    "login",
    "place",
    "platform_admin",
    "socket_counts",
]


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


class ReconnectingClient(chaos.clients.ReconnectingClient):
    """The documented-rule client of ``chaos/clients.py``, watching departments being added."""

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


async def place(
    http: aiohttp.ClientSession, cluster: LocalCluster, client: ReconnectingClient, token: str
) -> int:
    """Connect through the cluster's nginx; which node took the socket (from /metrics)."""
    urls = [m.url for m in cluster.members]
    return await chaos.clients.place(http, cluster.url, urls, client, token)
