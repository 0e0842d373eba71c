"""Test helpers: signing in as a persona, calling the API, real Socket.IO clients."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import socketio
from aiohttp.test_utils import TestClient

from chaos.clients import AMLODIPINE
from server.seed import DEMO_PASSWORD


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` across processes (pytest-xdist workers).

    ``npm ci`` and ``npm run build`` rewrite node_modules and dist: two workers running
    them at once in one directory would break each other's.
    """
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"yihao-tests-{digest}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SocketClient:
    """A real python-socketio client that keeps what the server pushed, deduplicated by seq."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[dict[str, Any]] = []
        self.positions: dict[str, int] = {}
        self.duplicates = 0
        self._arrived = asyncio.Event()
        self.sio.on("event", self._on_event)

    async def _on_event(self, envelope: dict[str, Any]) -> None:
        self.accept(envelope)

    def accept(self, envelope: dict[str, Any]) -> None:
        stream, seq = envelope["stream"], envelope["seq"]
        if seq <= self.positions.get(stream, 0):
            self.duplicates += 1
            return
        self.positions[stream] = seq
        self.events.append(envelope)
        self._arrived.set()

    async def connect(self, url: str, token: str) -> None:
        await self.sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=5)

    async def call(self, event: str, payload: Any = None, timeout: float = 5) -> dict[str, Any]:
        return await self.sio.call(event, payload, timeout=timeout)  # type: ignore[no-any-return]

    async def sync(self) -> dict[str, Any]:
        ack = await self.call("sync", {"positions": dict(self.positions)})
        assert ack["ok"], ack
        for envelope in ack["data"]["events"]:
            self.accept(envelope)
        return ack

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for envelope in self.events:
                if predicate(envelope):
                    return envelope
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {timeout}s; got {self.events}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


class Api:
    """Calls the API as named personas of the demo network."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.tokens: dict[str, str] = {}
        self.sockets: list[SocketClient] = []

    async def login(self, username: str, password: str = DEMO_PASSWORD) -> str:
        response = await self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        body = await response.json()
        assert response.status == 200, body
        self.tokens[username] = body["access_token"]
        return str(body["access_token"])

    async def token(self, username: str) -> str:
        return self.tokens.get(username) or await self.login(username)

    async def call(
        self, method: str, path: str, as_: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if as_ is not None:
            headers["Authorization"] = f"Bearer {await self.token(as_)}"
        response = await self.client.request(method, path, headers=headers, **kwargs)
        text = await response.text()
        body: Any = None
        if text:
            body = await response.json(content_type=None)
        return response.status, body

    async def get(self, path: str, as_: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, as_, **kwargs)

    async def post(self, path: str, as_: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, as_, **kwargs)

    async def present(self, desk: str, patient: str) -> dict[str, Any]:
        """``patient`` shows their app's presence code at ``desk``'s institution, which then
        cares for them (what a registration desk does: ``server.identity.care``)."""
        status, code = await self.post("/api/v1/me/presence-code", as_=patient)
        assert status == 201, code
        _, resident_id, digits = code["qr"].split(":")
        status, body = await self.post(
            "/api/v1/care/presence", as_=desk, json={"resident_id": resident_id, "code": digits}
        )
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    async def patient_app(self, resident_id: str, name: str, username: str) -> str:
        """An app account for a resident, made by the platform admin; returns the username."""
        status, body = await self.post(
            "/api/v1/users",
            as_="admin",
            json={"username": username, "password": DEMO_PASSWORD, "role": "patient",
                  "resident_id": resident_id, "name": name},
        )  # fmt: skip
        assert status == 201, body
        return username

    @property
    def url(self) -> str:
        return str(self.client.make_url("/"))

    async def socket(self, username: str) -> SocketClient:
        sock = SocketClient()
        await sock.connect(self.url, await self.token(username))
        self.sockets.append(sock)
        return sock

    async def close(self) -> None:
        for sock in self.sockets:
            await sock.close()


def amlodipine(**over: Any) -> dict[str, Any]:
    """A prescription item every check accepts for hypertension (I10): amlodipine 5 mg qd."""
    return AMLODIPINE | over
