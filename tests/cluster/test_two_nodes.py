"""Two server processes on one PostgreSQL and Redis: an event committed on B reaches A."""

from __future__ import annotations

import aiohttp
import pytest

from tests.cluster.client import add_department, is_department, login, platform_admin
from tests.cluster.conftest import MakeCluster
from tests.helpers import SocketClient

pytestmark = pytest.mark.integration


async def test_event_committed_on_node_b_reaches_client_on_node_a(
    node_env: dict[str, str], make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(node_env, nodes=2)
    node_a, node_b = cluster.node_url(0), cluster.node_url(1)

    async with aiohttp.ClientSession() as http:
        qdsl_admin = await login(http, node_a, "admin_qdsl")
        admin, qdsl = await platform_admin(http, node_b)
        stream = f"institution:{qdsl}"

        live = SocketClient()
        offline = SocketClient()
        try:
            await live.connect(node_a, qdsl_admin)
            # The offline client saw the stream's head once, then went away.
            await offline.connect(node_b, qdsl_admin)
            heads = (await offline.sync())["data"]["heads"]
            await offline.close()

            status, body = await add_department(http, node_b, admin, qdsl, "老年医学科")
            assert status == 201, body
            envelope = await live.wait_for(is_department("老年医学科"), timeout=10)
            assert envelope["stream"] == stream
            assert envelope["seq"] == heads[stream] + 1

            back = SocketClient()
            back.positions = dict(heads)
            await back.connect(node_a, qdsl_admin)
            try:
                ack = await back.sync()
                assert [e["data"]["department"]["name"] for e in back.events] == ["老年医学科"]
                assert ack["data"]["heads"][stream] == heads[stream] + 1
            finally:
                await back.close()
        finally:
            await live.close()
            await offline.close()
