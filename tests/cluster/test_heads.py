"""No silent lag on a real cluster: Redis killed and restarted under clients that only
follow docs/realtime.md (sync on connect, on a gap, on `heads`; never an extra sync).

Two `yihao serve` nodes on the test's PostgreSQL and a private redis-server. The
client sits on node 0; departments are added through node 1, so every push it gets
crossed Redis — or, while Redis is away, came from node 0's heads beacon.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from chaos.faults import wait_for_redis
from server.cluster import LocalCluster, Process
from tests.cluster.client import ReconnectingClient, add_department, login, platform_admin
from tests.cluster.conftest import MakeCluster


async def readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/readyz") as response:
        return response.status, await response.json(content_type=None)


async def until(check: Any, timeout: float, what: str) -> float:
    """Poll ``check()`` (an awaitable predicate) until it holds; returns the seconds taken."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)  # polling processes that cannot notify us
    return time.monotonic() - started


async def test_redis_outage_clients_stay_current_and_listeners_resubscribe_within_2s(
    node_env: dict[str, str], make_cluster: MakeCluster, private_redis: Process
) -> None:
    env = dict(node_env, YIHAO_REDIS_URL=f"redis://127.0.0.1:{private_redis.port}/0")
    cluster: LocalCluster = await make_cluster(env, nodes=2)
    here, there = cluster.node_url(0), cluster.node_url(1)
    async with aiohttp.ClientSession() as http:
        admin, qdsl = await platform_admin(http, there)
        client = ReconnectingClient()
        await client.connect(here, await login(http, here, "admin_qdsl"))
        try:
            await client.start_from_heads()
            status, _ = await add_department(http, there, admin, qdsl, "推拿科")
            assert status == 201
            await client.wait_for_departments(["推拿科"], timeout=5)
            assert client.heads == []  # pushes cross Redis: nothing to announce

            private_redis.signal(9)
            assert private_redis.popen is not None
            private_redis.popen.wait(5)

            async def listener_down() -> bool:
                status, body = await readyz(http, here)
                checks = body.get("checks", {})
                return status == 503 and checks.get("redis_listener", "ok") != "ok"

            noticed = await until(listener_down, 3, "/readyz reports the listener down")
            status, body = await readyz(http, here)
            assert body["checks"]["redis"].startswith("unavailable"), body
            assert body["checks"]["redis_listener"].startswith("unavailable"), body

            # While Redis is away: committed through node 1, held by the client on node 0
            # within seconds, through `heads` and a sync (no push can cross).
            names = ["中医科", "针灸科", "康复科"]
            committed = time.monotonic()
            for name in names:
                status, body = await add_department(http, there, admin, qdsl, name)
                assert status == 201, body
            await client.wait_for_departments(names, timeout=5)
            during = time.monotonic() - committed
            assert client.beacons >= 1 and client.connects == 1  # no reconnect either
            assert during < 3.5, during

            private_redis.start()
            await wait_for_redis(private_redis)
            back = time.monotonic()
            heads_before = len(client.heads)

            async def ready() -> bool:
                return all([(await readyz(http, url))[0] == 200 for url in (here, there)])

            resubscribed = await until(ready, 2.5, "both listeners subscribed again")

            # The node that subscribed again told its sockets where their streams are.
            async def announced() -> bool:
                return len(client.heads) > heads_before

            await until(announced, 2, "heads announced after the listener subscribed again")
            # And pushes cross Redis again.
            status, _ = await add_department(http, there, admin, qdsl, "治未病科")
            assert status == 201
            await client.wait_for_departments(["治未病科"], timeout=3)
            names.append("治未病科")
            assert client.department_names() == ["推拿科", *names]
            print(
                f"\nRedis killed: /readyz said so in {noticed * 1000:.0f} ms; events "
                f"committed during the outage held by the client in {during * 1000:.0f} ms; "
                f"both listeners subscribed again {resubscribed * 1000:.0f} ms after Redis "
                f"was back ({(time.monotonic() - back) * 1000:.0f} ms until the last check)"
            )
            assert resubscribed <= 2.0, resubscribed
        finally:
            await client.close()
