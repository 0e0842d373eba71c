"""Which server nodes are alive: a heartbeat row per node, and the clean-up of the dead ones.

Every node inserts a row in ``cluster_nodes`` at start (before it takes any
socket), refreshes it every ``node_heartbeat_seconds`` and deletes it when it
shuts down cleanly. A node killed with ``kill -9`` (or whose machine died)
leaves its row behind, and stops refreshing it: once it is older than
``node_dead_after_seconds`` the node is dead. The ``cluster.reap_nodes`` job
(a lease job, so one node runs each tick) then hands the ids of the live nodes
to the registered reapers, which delete whatever belonged to the others (the
consult presence rows of their sockets, see ``ConsultsService.reap_presence``),
and deletes the dead rows.

A reaper must not mistake "I could not see the heartbeats" for "they stopped":
after a database outage every node's row looks old until its next beat, so a
node reaps only after its own heartbeats have succeeded without a break for
``node_dead_after_seconds`` (by then every live node has beaten again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, Database, UTCDateTime, rowcount, utcnow

logger = logging.getLogger(__name__)

# Called with the ids of the live nodes (this one included): delete what belongs to others.
Reaper = Callable[[set[str]], Awaitable[None]]
# Called at start with this node's id and start time: delete what an earlier process of
# the same id left (before that time).
Forgetter = Callable[[str, datetime], Awaitable[None]]


class ClusterNode(Base):
    __tablename__ = "cluster_nodes"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Nodes:
    """This node's heartbeat, and the reaping of what dead nodes left behind."""

    def __init__(
        self,
        db: Database,
        node_id: str,
        heartbeat_seconds: float,
        dead_after_seconds: float,
        reapers: Sequence[Reaper] = (),
        forgetters: Sequence[Forgetter] = (),
    ) -> None:
        self.db = db
        self.id = node_id
        self.heartbeat_seconds = heartbeat_seconds
        self.dead_after = dead_after_seconds
        # ``reapers`` run in the reaping job; ``forgetters`` at this node's start.
        self.reapers = tuple(reapers)
        self.forgetters = tuple(forgetters)
        self.started_at = utcnow()
        self._forgotten = False
        # Monotonic time since when every heartbeat succeeded (None: the last one failed).
        self._healthy_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        """Refresh this node's row (insert it again if a reaper took it for dead)."""
        now = utcnow()
        try:
            if not self._forgotten:
                # A node id may be configured (YIHAO_NODE_ID, e.g. the pod name): what a
                # killed process of the same id left before we started is ours to clear.
                for forget in self.forgetters:
                    await forget(self.id, self.started_at)
                self._forgotten = True
            async with self.db.transaction() as tx:
                result = await tx.session.execute(
                    update(ClusterNode).where(ClusterNode.id == self.id).values(heartbeat_at=now)
                )
                if rowcount(result) == 0:
                    tx.session.add(ClusterNode(id=self.id, started_at=now, heartbeat_at=now))
        except Exception:
            self._healthy_since = None
            raise
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()

    async def live(self) -> set[str]:
        cutoff = utcnow() - timedelta(seconds=self.dead_after)
        async with self.db.read() as session:
            return set(
                await session.scalars(
                    select(ClusterNode.id).where(ClusterNode.heartbeat_at > cutoff)
                )
            )

    def may_judge(self) -> bool:
        """Have our own heartbeats gone through long enough to trust the others' rows?"""
        since = self._healthy_since
        return since is not None and time.monotonic() - since >= self.dead_after

    async def reap(self, tick: int = 0) -> None:
        """The ``cluster.reap_nodes`` job: clean up after dead nodes (if we may judge now)."""
        if not self.may_judge():
            return
        alive = await self.live()
        alive.add(self.id)
        for reaper in self.reapers:
            await reaper(alive)
        async with self.db.transaction() as tx:
            result = await tx.session.execute(
                delete(ClusterNode).where(ClusterNode.id.notin_(alive)).returning(ClusterNode.id)
            )
            dead = list(result.scalars())
        if dead:
            logger.warning("dead nodes reaped", extra={"nodes": dead})

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.beat()
            except Exception:  # the database is away: beat again next time
                logger.warning("node heartbeat failed", exc_info=True)

    async def start(self) -> None:
        try:
            await self.beat()
        except Exception:  # the database is away: the node starts anyway, not ready
            logger.warning("node not registered at start; retrying", exc_info=True)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):  # a database that is away: the row just ages
            async with self.db.transaction() as tx:
                await tx.session.execute(delete(ClusterNode).where(ClusterNode.id == self.id))

    def lifespan(self) -> Callable[[Any], AsyncIterator[None]]:
        """cleanup_ctx: registered before the first socket, gone after the last."""

        async def ctx(app: Any) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.stop()

        return ctx
