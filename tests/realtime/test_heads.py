"""No silent lag: a push that never reached a node's sockets is announced with `heads`.

Two app instances on one database are two nodes. Where they share no pub/sub (SQLite
without Redis; on PostgreSQL, Redis channels of their own) every push of one is lost to
the other's sockets — what a Redis outage does to a cluster — and only the database
knows. The client is the documented-rule client (``chaos/clients.py``): it syncs on
connect, on a gap and on `heads`, and nothing more.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from tests.cluster.client import ReconnectingClient
from tests.helpers import Api

FAST = 0.2  # SOCKET_HEADS_SECONDS for the node under test


async def node(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    """Another node on the test's database, with a quick beacon and a pub/sub of its own."""
    changes: dict[str, Any] = {"socket_heads_seconds": FAST}
    if settings.redis_url:
        changes["redis_channel"] = f"yihao-test-alone-{uuid.uuid4().hex[:8]}"
    return await aiohttp_client(create_app(settings.with_overrides(**changes)))  # type: ignore[no-any-return]


async def client_on(node: TestClient[Any, Any], token: str) -> ReconnectingClient:
    """A client on ``node``, starting from its streams' heads (it holds what came before)."""
    sock = ReconnectingClient()
    await sock.connect(str(node.make_url("/")), token)
    await sock.start_from_heads()
    return sock


async def qdsl(api: Api) -> int:
    return int((await api.get("/api/v1/me", as_="admin_qdsl"))[1]["institution"]["id"])


async def test_a_push_lost_between_nodes_reaches_the_client_as_heads_and_a_sync(
    api: Api, network: Services, settings: Settings, aiohttp_client: Any
) -> None:
    quiet = await node(aiohttp_client, settings)
    sock = await client_on(quiet, await api.token("admin_qdsl"))
    try:
        institution = await qdsl(api)
        stream = f"institution:{institution}"
        before = sock.positions[stream]

        # Committed through the other node: its push goes to that node's sockets only.
        status, _ = await api.post(
            f"/api/v1/institutions/{institution}/departments", as_="admin", json={"name": "疼痛科"}
        )
        assert status == 201
        started = asyncio.get_running_loop().time()
        await sock.wait_for_departments(["疼痛科"], timeout=3)
        took = asyncio.get_running_loop().time() - started

        assert [e["seq"] for e in sock.events] == [before + 1]
        assert sock.heads == [{stream: before + 1}], sock.heads
        assert sock.beacons == 1 and sock.gaps == 0 and sock.duplicates == 0
        # Found within two looks (one of grace for a push in flight), then the sync.
        assert took < 4 * FAST + 1, took
        assert quiet.app[SERVICES].gateway.heads.sent == 1
    finally:
        await sock.close()


async def test_a_node_whose_pushes_arrive_sends_no_heads(
    api: Api, network: Services, settings: Settings, aiohttp_client: Any
) -> None:
    here = await node(aiohttp_client, settings)
    local = Api(here)
    sock = await client_on(here, await local.token("admin_qdsl"))
    try:
        institution = await qdsl(local)
        names = ["老年医学科", "全科医学科", "营养科"]
        for name in names:
            status, _ = await local.post(
                f"/api/v1/institutions/{institution}/departments", as_="admin", json={"name": name}
            )
            assert status == 201
            await sock.wait_for_departments([name], timeout=5)
        await asyncio.sleep(6 * FAST)  # several looks
        assert sock.department_names() == names
        assert sock.heads == []
        assert here.app[SERVICES].gateway.heads.sent == 0
    finally:
        await sock.close()
        await local.close()
