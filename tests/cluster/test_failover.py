"""Failures of real processes behind nginx: clients reconnect, catch up, lose and repeat nothing.

Figures (events sent/received/duplicated, recovery time) are printed; run with
``-s`` to read them.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.cluster.client import (
    PollingClient,
    ReconnectingClient,
    add_departments,
    login,
    platform_admin,
    socket_counts,
)
from tests.cluster.conftest import MakeCluster

pytestmark = pytest.mark.integration

CLIENTS = 9
EVENTS = 60
KILL_AT = 20


def assert_exactly_once(clients: list[ReconnectingClient], names: list[str]) -> None:
    for client in clients:
        received = client.department_names()
        assert sorted(received) == sorted(names), "lost or duplicated events"
        seqs = [e["seq"] for e in client.events]
        assert seqs == sorted(set(seqs)), "events out of order or repeated"


async def test_kill_9_one_of_three_nodes_behind_nginx(
    node_env: dict[str, str], make_cluster: MakeCluster
) -> None:
    cluster = await make_cluster(node_env, nodes=3, nginx=True)
    names = [f"远程会诊中心{i:03d}" for i in range(EVENTS)]
    clients = [ReconnectingClient() for _ in range(CLIENTS)]
    async with aiohttp.ClientSession() as http:
        admin, qdsl = await platform_admin(http, cluster.url)
        qdsl_admin = await login(http, cluster.url, "admin_qdsl")
        try:
            for client in clients:
                await client.connect(cluster.url, qdsl_admin)
                await client.start_from_heads()
            counts = await socket_counts(http, [m.url for m in cluster.members])
            assert sum(counts) == CLIENTS
            # nginx spread the clients; the node holding the most of them dies.
            victim = counts.index(max(counts))
            killed_at = 0.0

            def kill_midway(index: int) -> None:
                nonlocal killed_at
                if index == KILL_AT:
                    cluster.kill_node(victim)
                    killed_at = time.monotonic()

            retries = await add_departments(
                http, cluster.url, admin, qdsl, names, before_each=kill_midway
            )
            await asyncio.gather(*(c.wait_for_departments(names) for c in clients))
            moved = [c for c in clients if c.connects > 1]
            assert len(moved) == max(counts)
            assert all(c.recovered_at is not None for c in moved)
            assert_exactly_once(clients, names)
            after = await socket_counts(
                http, [m.url for i, m in enumerate(cluster.members) if i != victim]
            )
            assert sum(after) == CLIENTS
        finally:
            for client in clients:
                await client.close()
    recovery = max(c.recovered_at - killed_at for c in moved if c.recovered_at)
    print(
        f"\nkill -9 node {victim} of 3 ({max(counts)} of {CLIENTS} clients on it): "
        f"sent {EVENTS}, received {sum(len(c.department_names()) for c in clients)} "
        f"(= {EVENTS} x {CLIENTS}), duplicated 0 (raw repeats filtered by seq: "
        f"{sum(c.duplicates for c in clients)}), gaps replayed {sum(c.gaps for c in clients)}, "
        f"producer retries {retries}, recovery {recovery * 1000:.0f} ms"
    )


async def test_long_polling_sessions_stick_to_one_node_through_nginx(
    node_env: dict[str, str], make_cluster: MakeCluster
) -> None:
    """Without sticky routing, the polls of one session would land on nodes that do not know it."""
    cluster = await make_cluster(node_env, nodes=3, nginx=True)
    names = [f"日间病房{i:02d}" for i in range(10)]
    async with aiohttp.ClientSession() as http:
        admin, qdsl = await platform_admin(http, cluster.url)
        token = await login(http, cluster.url, "admin_qdsl")
        clients = [PollingClient() for _ in range(3)]
        try:
            for client in clients:
                await client.connect(cluster.url, token)
                assert "yihao_route" in client.cookies()
            await add_departments(http, cluster.url, admin, qdsl, names)
            await asyncio.gather(*(c.wait_for_departments(names) for c in clients))
            assert_exactly_once(clients, names)
            assert all(c.connects == 1 and c.disconnected_at is None for c in clients)
            counts = await socket_counts(http, [m.url for m in cluster.members])
            assert sum(counts) == len(clients)
        finally:
            await asyncio.gather(*(c.close() for c in clients))
