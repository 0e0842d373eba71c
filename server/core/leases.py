"""Background jobs that run exactly once per tick across the cluster, whatever the node count.

Every node runs the same code and the same schedule; a row per job in
``job_leases`` decides which node runs a given tick. A node *claims* tick ``T``
of a job with one conditional UPDATE: it succeeds only if no node has claimed
``T`` (or a later tick) and the previous holder's lease has run out or been
released. The row lock (PostgreSQL) or the single writer (SQLite) makes the
claim atomic, so two nodes never run the same tick, nor the same job at the
same time. The table works on both engines, unlike PostgreSQL advisory locks,
and a holder that dies simply lets its lease expire.

Capabilities declare their jobs (expiry, escalation, outbox relay,
retention) as :class:`Periodic` values in their capability's ``jobs``
(:mod:`server.core.capability`), and ``create_app`` adds each one::

    Periodic("prescriptions.expire", 60, expire_prescriptions)

A job must be written to catch up: if a node dies mid-tick that tick is not
retried, the next tick (on any node) finds whatever is still due. Ticks are
counted from the Unix epoch on each node's clock, so nodes need NTP; the
lease TTL must exceed the job's longest run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, String, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, Database, UTCDateTime, utcnow

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

JobFn = Callable[[int], Awaitable[None]]


class JobLease(Base):
    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Which node holds the lease ("host:pid:random"); empty when never claimed.
    holder: Mapped[str] = mapped_column(String(100), nullable=False)
    # The last tick claimed; a tick is claimed at most once, ever.
    tick: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


def node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Leases:
    """Claims of job ticks by this node, in the shared database."""

    def __init__(self, db: Database, holder: str | None = None) -> None:
        self.db = db
        self.holder = holder or node_id()

    async def claim(self, name: str, tick: int, ttl: float) -> bool:
        """Take tick ``tick`` of job ``name`` for ``ttl`` seconds; False if it is not ours to run."""
        now = utcnow()
        async with self.db.transaction() as tx:
            dialect = tx.session.get_bind().dialect.name
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            await tx.session.execute(
                insert(JobLease)
                .values(name=name, holder="", tick=-1, expires_at=EPOCH)
                .on_conflict_do_nothing()
            )
            result = await tx.session.execute(
                update(JobLease)
                .where(
                    JobLease.name == name,
                    JobLease.tick < tick,
                    or_(JobLease.expires_at <= now, JobLease.holder == self.holder),
                )
                .values(holder=self.holder, tick=tick, expires_at=now + timedelta(seconds=ttl))
                .returning(JobLease.tick)
            )
            return result.scalar_one_or_none() is not None

    async def release(self, name: str) -> None:
        """End our lease now (the tick stays claimed), so the next tick need not wait for the TTL."""
        async with self.db.transaction() as tx:
            await tx.session.execute(
                update(JobLease)
                .where(JobLease.name == name, JobLease.holder == self.holder)
                .values(expires_at=utcnow())
            )


@dataclass(frozen=True)
class Periodic:
    """A job a capability declares: run ``run(tick)`` every ``every`` seconds."""

    name: str
    every: float
    run: JobFn
    # How long a dead holder blocks the job (default: the period, at least 30 s).
    ttl: float | None = None


@dataclass
class Job:
    name: str
    every: float
    run: JobFn
    ttl: float


class Jobs:
    """Periodic jobs, each tick run by exactly one node of the cluster."""

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self.jobs: dict[str, Job] = {}
        # The ticks this node ran, per job (the latest ones): what operators and tests look at.
        self.ran: dict[str, deque[int]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, job: Periodic) -> None:
        self.every(job.name, job.every, job.run, job.ttl)

    def every(self, name: str, seconds: float, run: JobFn, ttl: float | None = None) -> None:
        """Run ``run(tick)`` every ``seconds``; ``ttl`` bounds how long a dead holder blocks it."""
        if name in self.jobs:
            raise ValueError(f"job {name} is registered twice")
        self.jobs[name] = Job(name, seconds, run, ttl or max(seconds, 30.0))

    async def run_tick(self, name: str, tick: int) -> bool:
        """Run tick ``tick`` of a job if this node wins it; True if it ran here."""
        job = self.jobs[name]
        if not await self.leases.claim(name, tick, job.ttl):
            return False
        self.ran.setdefault(name, deque(maxlen=1000)).append(tick)
        try:
            await job.run(tick)
        except Exception:
            # The tick is spent; the next one catches up with what is still due.
            logger.exception("background job failed", extra={"job": name, "tick": tick})
        finally:
            await self.leases.release(name)
        return True

    async def _loop(self, job: Job) -> None:
        while True:
            tick = int(time.time() // job.every) + 1
            await asyncio.sleep(tick * job.every - time.time())  # wait for the tick boundary
            try:
                await self.run_tick(job.name, tick)
            except Exception:  # the database is away: try again at the next tick
                logger.warning("job tick not claimed", extra={"job": job.name}, exc_info=True)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(job)) for job in self.jobs.values()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
