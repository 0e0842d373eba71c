"""The chaos suite's cluster and the faults it breaks it with.

:class:`Lab` is a real cluster on this machine: 3 ``yihao serve`` nodes and nginx
(:class:`server.cluster.LocalCluster`, healing: a node killed is started again under its
id), a PostgreSQL database of its own (created on the given server and dropped at the end:
nobody else's data is touched), a private
``redis-server`` (so it can be killed), and a :class:`~chaos.proxy.TcpProxy` between the
nodes and each of the two, to slow or cut the link.

Each fault is a coroutine that breaks something, mends it, and returns the moment
(``time.monotonic()``) the fault ended: the node back and ready, Redis answering ``PING``,
the delay taken off, the link restored.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from chaos.proxy import TcpProxy
from server.cluster import HOST, LocalCluster, Process, admin_sql, cluster_env, free_port
from server.core.checkpoints import generate_key_file

HEARTBEAT, DEAD_AFTER = "0.5", "3"  # a node killed with -9 is found dead in seconds


def redis_process(workdir: Path) -> Process:
    """A redis-server of our own on a free port, without persistence, not yet started."""
    port = free_port()
    argv = [
        shutil.which("redis-server") or "/usr/bin/redis-server",
        "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    return Process("redis", port, workdir / "redis.log", argv, dict(os.environ))


async def wait_for_redis(server: Process, timeout: float = 10) -> None:
    """Until the redis-server answers PING (raises if it exited or time is up)."""
    client = Redis(host=HOST, port=server.port, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                await client.ping()
                return
            except RedisError:
                if time.monotonic() > deadline or not server.running:
                    raise
            await asyncio.sleep(0.05)  # polling a process that cannot notify us
    finally:
        await client.aclose()


@dataclass
class Lab:
    """The running cluster, its Redis and the two links the faults act on."""

    cluster: LocalCluster
    redis: Process
    redis_link: TcpProxy
    pg_link: TcpProxy
    database_url: str  # the scratch database, directly (not through the proxy)

    @property
    def node_urls(self) -> list[str]:
        return [m.url for m in self.cluster.members]

    async def wait_healthy(self, timeout: float = 60) -> None:
        """Between cases: every node ready again (the suite's own check, not a client's)."""
        await wait_for_redis(self.redis, timeout)
        for member in self.cluster.members:
            await self.cluster.wait_ready(member, timeout)


class lab_running:
    """``async with lab_running(admin_url, workdir, nodes) as lab``: set up, then torn down."""

    def __init__(self, admin_url: str, workdir: Path, nodes: int = 3) -> None:
        self.admin = make_url(admin_url)
        self.workdir = workdir
        self.nodes = nodes
        self.scratch = f"yihao_chaos_{uuid.uuid4().hex[:10]}"
        self.redis = redis_process(workdir)
        self.links: list[TcpProxy] = []
        self.cluster: LocalCluster | None = None
        self.created = False

    async def __aenter__(self) -> Lab:
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__()
            raise

    async def _start(self) -> Lab:
        await admin_sql(self.admin, f'CREATE DATABASE "{self.scratch}"')
        self.created = True
        self.redis.start()
        await wait_for_redis(self.redis)
        redis_link = await self._link(HOST, self.redis.port)
        pg_link = await self._link(self.admin.host or HOST, self.admin.port or 5432)
        database = self.admin.set(database=self.scratch)
        through = database.set(host=HOST, port=pg_link.port)
        key = self.workdir / "checkpoint_key"
        key.unlink(missing_ok=True)  # a --workdir kept from an earlier run
        generate_key_file(key)  # every node signs audit checkpoints with the same key
        env = cluster_env(
            through.render_as_string(hide_password=False),
            f"redis://{HOST}:{redis_link.port}/0",
            secrets.token_urlsafe(32),
            f"yihao-chaos-{uuid.uuid4().hex[:8]}",
            argon2_memory_kib="64",
            argon2_time_cost="1",
            log_level="WARNING",
            checkpoint_key_file=str(key),
            node_heartbeat_seconds=HEARTBEAT,
            node_dead_after_seconds=DEAD_AFTER,
        )
        self.cluster = LocalCluster(
            env=env, workdir=self.workdir / "cluster", nodes=self.nodes, nginx=True, heal=True
        )
        await self.cluster.run_cli("migrate")
        await self.cluster.run_cli("seed-demo")
        await self.cluster.start()
        return Lab(
            self.cluster,
            self.redis,
            redis_link,
            pg_link,
            database.render_as_string(hide_password=False),
        )

    async def _link(self, host: str, port: int) -> TcpProxy:
        link = await TcpProxy(host, port).start()
        self.links.append(link)
        return link

    async def __aexit__(self, *exc: object) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        for link in self.links:
            await link.close()
        self.redis.stop()
        if self.created:
            await admin_sql(self.admin, f'DROP DATABASE IF EXISTS "{self.scratch}" WITH (FORCE)')


# A fault: break, mend, return when it ended. ``before_kill`` lets the load put a write in
# flight on the node about to die.
Fault = Callable[["Lab", "Hooks"], Awaitable[float]]


@dataclass
class Hooks:
    """What a fault may ask of the running case."""

    victim: int  # the node holding the most clients
    in_flight: Callable[[str], Awaitable[None]]  # start a write on that node, return once sent


async def end_node_kill(cluster: LocalCluster, index: int) -> None:
    """The cluster heals: the node is started again under its id; this waits until it is
    ready (as a supervisor would bring it back: systemd, compose, Kubernetes)."""
    await cluster.wait_healed(index)


def node_kill() -> Fault:
    async def fault(lab: Lab, hooks: Hooks) -> float:
        await hooks.in_flight(lab.cluster.node_url(hooks.victim))
        lab.cluster.kill_node(hooks.victim)
        await end_node_kill(lab.cluster, hooks.victim)
        return time.monotonic()

    return fault


def redis_kill(seconds: float) -> Fault:
    async def fault(lab: Lab, hooks: Hooks) -> float:
        lab.redis.signal(9)
        assert lab.redis.popen is not None
        lab.redis.popen.wait(5)
        await asyncio.sleep(seconds)  # Redis stays away this long
        lab.redis.start()
        await wait_for_redis(lab.redis)
        return time.monotonic()

    return fault


def redis_delay(delay: float, seconds: float) -> Fault:
    async def fault(lab: Lab, hooks: Hooks) -> float:
        lab.redis_link.delay = delay  # each way: every chunk is held this long
        await asyncio.sleep(seconds)
        lab.redis_link.delay = 0.0
        return time.monotonic()

    return fault


def pg_cut(seconds: float) -> Fault:
    async def fault(lab: Lab, hooks: Hooks) -> float:
        await lab.pg_link.cut()  # refuse new connections and reset the open ones
        await asyncio.sleep(seconds)
        await lab.pg_link.restore()
        return time.monotonic()

    return fault
