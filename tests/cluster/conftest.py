"""Fixtures for multi-node tests: real ``yihao serve`` processes on the session's PostgreSQL.

Every cluster a test starts is stopped by the fixture's finalizer, whatever the
test did; nodes get a Redis channel of their own so parallel runs never hear
each other.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from chaos.faults import redis_process, wait_for_redis
from chaos.proxy import TcpProxy
from server.cluster import LocalCluster, Process, cluster_env
from tests.conftest import SECRET, _truncate

MakeCluster = Callable[..., Awaitable[LocalCluster]]


@pytest.fixture
async def node_env(
    pg_database_url: str, redis_url: str, checkpoint_key_file: Path
) -> dict[str, str]:
    """Settings shared by the nodes of one test's cluster, on emptied tables."""
    await _truncate(pg_database_url)
    return cluster_env(
        pg_database_url,
        redis_url,
        SECRET,
        f"yihao-cluster-{uuid.uuid4().hex[:8]}",
        argon2_memory_kib="64",
        argon2_time_cost="1",
        log_level="WARNING",
        checkpoint_key_file=str(checkpoint_key_file),
        # A node killed with -9 is found dead (and its sockets' presence reaped) in seconds.
        node_heartbeat_seconds="0.5",
        node_dead_after_seconds="3",
    )


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[MakeCluster]:
    """Start clusters on the demo network; all are stopped at the end of the test."""
    made: list[LocalCluster] = []

    async def make(
        env: dict[str, str], nodes: int = 2, nginx: bool = False, **kwargs: Any
    ) -> LocalCluster:
        cluster = LocalCluster(
            env=env, workdir=tmp_path / f"cluster{len(made)}", nodes=nodes, nginx=nginx, **kwargs
        )
        made.append(cluster)
        await cluster.run_cli("seed-demo")
        await cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[Process]:
    """A redis-server of this test's own, which the test may kill and restart at will."""
    server = redis_process(tmp_path)
    server.start()
    await wait_for_redis(server)
    yield server
    server.stop()


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[[str, int], Awaitable[TcpProxy]]]:
    """Start TCP proxies in front of real services; all are closed at the end of the test."""
    made: list[TcpProxy] = []

    async def make(host: str, port: int) -> TcpProxy:
        proxy = await TcpProxy(host, port).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        await proxy.close()
