"""Fixtures for multi-node tests: real ``yihao serve`` processes on the session's PostgreSQL.

Every cluster a test starts is stopped by the fixture's finalizer, whatever the
test did; nodes get a Redis channel of their own so parallel runs never hear
each other.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server.cluster import LocalCluster, cluster_env
from tests.conftest import SECRET, _truncate

MakeCluster = Callable[..., LocalCluster]


@pytest.fixture
async def node_env(pg_database_url: str, redis_url: str) -> dict[str, str]:
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
    )


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[MakeCluster]:
    """Build clusters (not started); all are stopped at the end of the test."""
    made: list[LocalCluster] = []

    def make(
        env: dict[str, str], nodes: int = 2, nginx: bool = False, **kwargs: Any
    ) -> LocalCluster:
        cluster = LocalCluster(
            env=env, workdir=tmp_path / f"cluster{len(made)}", nodes=nodes, nginx=nginx, **kwargs
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
