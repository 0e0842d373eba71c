"""``yihao serve --workers 2`` as a real process: two nodes on one port, one supervisor.

A client is put on a given worker by asking ``/readyz`` (which names the node that
answered) over a session with a single keep-alive connection, and then using that
same connection: HTTP requests, or the Socket.IO websocket (aiohttp opens it on the
idle pooled connection).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import psutil
import pytest
import socketio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from server.cluster import HOST, Process, free_port, node_environ
from server.config import Settings, load_settings
from server.workers import (
    RESTART_MAX_DELAY,
    RESTART_RESET_AFTER,
    Backoff,
    WorkersError,
    available_cores,
    event_loop_factory,
    resolve_workers,
)
from tests.cluster.client import add_department, is_department, login, platform_admin
from tests.helpers import SocketClient

DEADLINE = 60.0  # generous: the machine is shared; nothing here asserts a time


class Served:
    """``yihao serve --workers N`` and what the test learns about its workers."""

    def __init__(self, env: dict[str, str], workdir: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        argv = [
            sys.executable, "-m", "server.cli", "serve",
            "--host", HOST, "--port", str(self.port), "--workers", str(workers),
        ]  # fmt: skip
        self.process = Process("serve", self.port, workdir / "serve.log", argv, node_environ(env))

    @property
    def pid(self) -> int:
        assert self.process.popen is not None
        return self.process.popen.pid

    def workers(self) -> dict[int, psutil.Process]:
        """The live worker processes by index (``--worker INDEX:FD`` on their command line)."""
        found = {}
        for child in psutil.Process(self.pid).children():
            try:
                argv = child.cmdline()
            except psutil.Error:
                continue
            if "--worker" in argv:
                found[int(argv[argv.index("--worker") + 1].split(":")[0])] = child
        return found

    async def nodes_seen(self, wanted: int) -> set[str]:
        """Ask /readyz over fresh connections until ``wanted`` different nodes answered."""
        seen: set[str] = set()
        deadline = time.monotonic() + DEADLINE
        while len(seen) < wanted:
            assert self.process.running, self.process.tail()
            assert time.monotonic() < deadline, f"only {seen} answered:\n{self.process.tail()}"
            async with aiohttp.ClientSession() as http:
                try:
                    async with http.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            seen.add((await response.json())["node"])
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2)  # not listening yet: nothing to be notified by
        return seen

    @asynccontextmanager
    async def pinned(self, node: str) -> AsyncIterator[aiohttp.ClientSession]:
        """A session whose one keep-alive connection is served by worker ``node``."""
        deadline = time.monotonic() + DEADLINE
        while True:
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            async with http.get(f"{self.url}/readyz") as response:
                answered = (await response.json())["node"]
            if answered == node:
                break
            await http.close()
            assert time.monotonic() < deadline, f"no connection reached {node}"
        try:
            yield http
        finally:
            await http.close()


@pytest.fixture
async def serve(node_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Served]:
    """The demo network served by two workers; whatever is left is killed at the end."""
    env = node_environ(node_env)
    seeded = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "seed-demo", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert await seeded.wait() == 0
    served = Served(node_env, tmp_path)
    served.process.start()
    try:
        yield served
    finally:
        if served.process.running:
            left = list(served.workers().values())
            served.process.signal(signal.SIGKILL)
            for worker in left:
                worker.kill()
        served.process.reap(time.monotonic() + 10)


@pytest.mark.integration
async def test_two_workers_share_the_port_fan_out_and_stop_together(serve: Served) -> None:
    nodes = sorted(await serve.nodes_seen(2))
    base = nodes[0].rsplit("/", 1)[0]
    assert nodes == [f"{base}/w0", f"{base}/w1"]

    async with serve.pinned(nodes[0]) as on_w0, serve.pinned(nodes[1]) as on_w1:
        qdsl_admin = await login(on_w0, serve.url, "admin_qdsl")
        admin, qdsl = await platform_admin(on_w1, serve.url)
        live = SocketClient()
        live.sio = socketio.AsyncClient(reconnection=False, http_session=on_w0)
        live.sio.on("event", live._on_event)
        try:
            await live.connect(serve.url, qdsl_admin)  # over w0's connection
            status, body = await add_department(on_w1, serve.url, admin, qdsl, "老年医学科")
            assert status == 201, body
            async with on_w1.get(f"{serve.url}/readyz") as response:
                assert (await response.json())["node"] == nodes[1]  # w1 committed it
            envelope = await live.wait_for(is_department("老年医学科"), timeout=DEADLINE)
            assert envelope["stream"] == f"institution:{qdsl}"
        finally:
            await live.close()

    # Long-polling cannot follow a session across workers: refused with the rule.
    polling = f"{serve.url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http, http.get(polling) as response:
        assert response.status == 400
        problem = await response.json()
        assert problem["code"] == "websocket_required"
        assert "websocket" in problem["detail"]

    workers = serve.workers()
    assert sorted(workers) == [0, 1]
    serve.process.signal(signal.SIGTERM)
    assert serve.process.popen is not None
    # 0: every worker shut down gracefully (the supervisor says 1 otherwise).
    assert await asyncio.to_thread(serve.process.popen.wait, DEADLINE) == 0
    _, alive = psutil.wait_procs(list(workers.values()), timeout=DEADLINE)
    assert not alive


@pytest.mark.integration
async def test_a_killed_worker_is_restarted_as_the_same_node(
    serve: Served, node_env: dict[str, str]
) -> None:
    nodes = sorted(await serve.nodes_seen(2))
    before = serve.workers()
    # Two workers, two nodes: each beats under its own id in cluster_nodes.
    engine = create_async_engine(node_env["YIHAO_DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT id FROM cluster_nodes ORDER BY id"))
            assert [row[0] for row in rows] == nodes
        # The periodic jobs' ticks are claimed on leases by the workers, as by nodes.
        deadline = time.monotonic() + DEADLINE
        while True:
            async with engine.connect() as conn:
                rows = await conn.execute(text("SELECT holder FROM job_leases WHERE holder <> ''"))
                holders = {row[0] for row in rows}
            if holders & set(nodes):  # (`seed-demo` may have claimed some before)
                break
            assert time.monotonic() < deadline, f"no worker claimed a job tick: {holders}"
            await asyncio.sleep(0.5)  # the next tick of some job; nothing notifies us
    finally:
        await engine.dispose()

    before[1].send_signal(signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE
    while (restarted := serve.workers().get(1)) is None or restarted.pid == before[1].pid:
        assert time.monotonic() < deadline, serve.process.tail()
        await asyncio.sleep(0.2)  # the supervisor restarts it; we cannot be notified
    # The new process answers as the same node; the other worker never stopped.
    async with serve.pinned(nodes[1]) as on_w1, on_w1.get(f"{serve.url}/readyz") as response:
        assert response.status == 200
    assert serve.workers()[0].pid == before[0].pid
    assert "restarting it under the same node id" in serve.process.tail(100)

    # A supervisor killed outright leaves no worker holding the port.
    left = list(serve.workers().values())
    serve.process.signal(signal.SIGKILL)
    _, alive = psutil.wait_procs(left, timeout=DEADLINE)
    assert not alive


def test_several_workers_on_sqlite_are_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIHAO_")}
    env["YIHAO_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--workers 2: the embedded mode (SQLite) runs one process" in result.stderr


def _settings(tmp_path: Path, **values: str) -> Settings:
    return load_settings(environ={"YIHAO_DATA_DIR": str(tmp_path)}).with_overrides(**values)


PG = "postgresql+asyncpg://yihao@db/yihao"


def test_the_worker_count_follows_the_deployment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embedded = _settings(tmp_path)
    assert resolve_workers(embedded, None) == 1  # the default: quietly one on SQLite
    assert resolve_workers(embedded, 1) == 1
    assert resolve_workers(_settings(tmp_path, database_url=PG), None) == 1
    assert "YIHAO_REDIS_URL" in caplog.text  # said, since PostgreSQL alone is half a cluster
    with pytest.raises(WorkersError, match="--workers 3: several workers fan events out"):
        resolve_workers(_settings(tmp_path, database_url=PG, workers=3), None)
    distributed = _settings(tmp_path, database_url=PG, redis_url="redis://r:6379/0")
    assert resolve_workers(distributed, None) == available_cores()
    assert resolve_workers(distributed, 4) == 4
    assert resolve_workers(distributed.with_overrides(workers=3), None) == 3
    assert resolve_workers(distributed.with_overrides(workers=3), 2) == 2  # the flag wins


def test_the_event_loop_setting() -> None:
    assert event_loop_factory("asyncio") is None
    loop = event_loop_factory("uvloop")
    assert loop is not None and type(loop()).__module__.startswith("uvloop")


def test_a_process_that_keeps_dying_waits_longer_each_time() -> None:
    """The back-off of the workers and of ``yihao cluster``'s nodes (server/cluster.py)."""
    backoff = Backoff()
    quick = [backoff.delay(lived=1.0) for _ in range(9)]
    assert quick == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, *[RESTART_MAX_DELAY] * 3]
    # One that ran a while before it died is restarted at once again.
    assert backoff.delay(lived=RESTART_RESET_AFTER) == 0.5
    assert backoff.delay(lived=0.2) == 0.5
    assert backoff.delay(lived=0.2) == 1.0
