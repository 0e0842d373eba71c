"""Redis and PostgreSQL outages between real nodes: slower delivery or 503s, never loss or 500s.

The machine's PostgreSQL and Redis are never stopped: Redis restarts are done
on a redis-server of the test's own, links are broken with a TCP proxy.
Figures are printed; run with ``-s`` to read them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from server.cluster import Process
from tests.cluster.client import (
    ReconnectingClient,
    add_department,
    add_departments,
    is_department,
    login,
    platform_admin,
)
from tests.cluster.conftest import MakeCluster, wait_for_redis
from tests.cluster.proxy import TcpProxy
from tests.cluster.test_failover import assert_exactly_once

pytestmark = pytest.mark.integration

MakeProxy = Callable[[str, int], Awaitable[TcpProxy]]
PROBLEM = "application/problem+json"


async def connected_clients(url: str, token: str, count: int) -> list[ReconnectingClient]:
    clients = [ReconnectingClient() for _ in range(count)]
    for client in clients:
        await client.connect(url, token)
        await client.start_from_heads()
    return clients


def summary(what: str, names: list[str], clients: list[ReconnectingClient]) -> str:
    received = sum(len(c.department_names()) for c in clients)
    return (
        f"\n{what}: sent {len(names)}, received {received} (= {len(names)} x {len(clients)}), "
        f"duplicated 0, gaps caught up by replay {sum(c.gaps for c in clients)}"
    )


async def test_redis_restart_mid_traffic_loses_nothing(
    node_env: dict[str, str], make_cluster: MakeCluster, private_redis: Process
) -> None:
    env = dict(node_env, YIHAO_REDIS_URL=f"redis://127.0.0.1:{private_redis.port}/0")
    cluster = await make_cluster(env, nodes=2)
    node_a, node_b = cluster.node_url(0), cluster.node_url(1)
    names = [f"检验科{i:03d}" for i in range(45)]

    async def redis_down_then_up(index: int) -> None:
        if index == 15:
            private_redis.signal(9)
            assert private_redis.popen is not None
            private_redis.popen.wait(5)
        if index == 25:
            private_redis.start()
            await wait_for_redis(private_redis)
        if index == 30:
            # Both listeners subscribe again (python-socketio's retry loop): /readyz says so.
            for member in cluster.members:
                await cluster.wait_ready(member, timeout=90)

    async with aiohttp.ClientSession() as http:
        admin, qdsl = await platform_admin(http, node_b)
        clients = await connected_clients(node_a, await login(http, node_a, "admin_qdsl"), 3)
        try:
            for index, name in enumerate(names):
                await redis_down_then_up(index)
                status, body = await add_department(http, node_b, admin, qdsl, name)
                assert status == 201, body
            await asyncio.gather(*(c.wait_for_departments(names) for c in clients))
            assert_exactly_once(clients, names)
            assert all(c.connects == 1 for c in clients)  # the sockets never dropped
        finally:
            for client in clients:
                await client.close()
    print(summary("Redis killed and restarted mid-traffic", names, clients))


async def test_delay_and_reset_between_nodes_and_redis_lose_nothing(
    node_env: dict[str, str], make_cluster: MakeCluster, proxies: MakeProxy
) -> None:
    target = urlsplit(node_env["YIHAO_REDIS_URL"])
    link = await proxies(target.hostname or "127.0.0.1", target.port or 6379)
    env = dict(node_env, YIHAO_REDIS_URL=f"redis://127.0.0.1:{link.port}{target.path}")
    cluster = await make_cluster(env, nodes=2)
    node_a, node_b = cluster.node_url(0), cluster.node_url(1)
    names = [f"影像科{i:03d}" for i in range(40)]

    async with aiohttp.ClientSession() as http:
        admin, qdsl = await platform_admin(http, node_b)
        clients = await connected_clients(node_a, await login(http, node_a, "admin_qdsl"), 3)
        try:
            for index, name in enumerate(names):
                if index == 10:
                    link.delay = 0.2  # a slow link: pushes arrive late, still in order
                if index == 20:
                    link.delay = 0.0
                    await link.reset()  # every node's Redis connections reset at once
                if index == 30:
                    for member in cluster.members:
                        await cluster.wait_ready(member, timeout=90)
                status, body = await add_department(http, node_b, admin, qdsl, name)
                assert status == 201, body
            await asyncio.gather(*(c.wait_for_departments(names) for c in clients))
            assert_exactly_once(clients, names)
        finally:
            for client in clients:
                await client.close()
    print(
        summary(f"Redis link delayed 200 ms, then reset ({link.connections} links)", names, clients)
    )


async def test_database_outage_gives_503_problems_and_a_retry_commits_once(
    node_env: dict[str, str], make_cluster: MakeCluster, proxies: MakeProxy
) -> None:
    target = make_url(node_env["YIHAO_DATABASE_URL"])
    link = await proxies(target.host or "127.0.0.1", target.port or 5432)
    url = target.set(host="127.0.0.1", port=link.port).render_as_string(hide_password=False)
    cluster = await make_cluster(dict(node_env, YIHAO_DATABASE_URL=url), nodes=2)
    node_a, node_b = cluster.node_url(0), cluster.node_url(1)

    async with aiohttp.ClientSession() as http:
        admin, qdsl = await platform_admin(http, node_b)
        (client,) = await connected_clients(node_a, await login(http, node_a, "admin_qdsl"), 1)
        try:
            await link.cut()
            for _ in range(3):
                async with http.post(
                    f"{node_b}/api/v1/institutions/{qdsl}/departments",
                    json={"name": "发热门诊"},
                    headers={"Authorization": f"Bearer {admin}"},
                ) as response:
                    assert response.status == 503
                    assert response.content_type == PROBLEM
                    assert response.headers["Retry-After"]
                    assert (await response.json())["code"] == "database_unavailable"
            async with http.get(f"{node_a}/readyz") as response:
                assert response.status == 503
                checks = (await response.json(content_type=None))["checks"]
                assert checks["database"].startswith("unavailable")
            await link.restore()
            retries = await add_departments(http, node_b, admin, qdsl, ["发热门诊"])
            status, body = await add_department(http, node_b, admin, qdsl, "发热门诊")
            assert status == 409, body  # exactly one exists
            await client.wait_for(is_department("发热门诊"), timeout=10)
            assert client.department_names() == ["发热门诊"]
        finally:
            await client.close()
    print(f"\nPostgreSQL cut: 3 requests answered 503 database_unavailable, retries {retries}")
