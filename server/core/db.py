"""Persistence: the engine, transactions with after-commit hooks, migrations.

One model layer serves SQLite (embedded mode: WAL, foreign keys, a busy
timeout, write transactions that take the lock up front) and PostgreSQL.
Timestamps are stored in UTC and always come back timezone-aware.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import DateTime, MetaData, event, exc, text
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session, UOWTransaction
from sqlalchemy.types import TypeDecorator

from server.config import Settings
from server.core.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


def rowcount(result: object) -> int:
    """How many rows an UPDATE or DELETE matched.

    SQLAlchemy types ``execute`` as answering a ``Result``, which has no row count; for
    UPDATE and DELETE it answers a ``CursorResult``, which has.
    """
    if not isinstance(result, CursorResult):
        raise TypeError(f"not the result of an UPDATE or DELETE: {type(result).__name__}")
    return result.rowcount


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp kept in UTC; refuses naive datetimes going in."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store naive UTC, add the zone back on the way out.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


AfterCommit = Callable[[], Awaitable[None]]
StagedFlush = Callable[["Tx", list[Any]], Awaitable[None]]

# The shared rows every writer locks, in the one order all transactions lock them in:
# stream heads (by stream name), then the audit head, last and for the shortest time.
STREAMS = 0
AUDIT = 1

TX_KEY = "yihao.tx"  # session.info key: the Tx a session belongs to

# Work the request around a unit of work adds to that unit's writes: the idempotency key's
# row (server/core/idempotency.py) is written in the same transaction as the operation's
# first write, so the key and the write commit together or not at all. Called just before
# the staged writes are flushed, in each transaction that wrote something, while it is set.
WriteHook = Callable[["Tx"], Awaitable[None]]
before_write_commit: ContextVar[WriteHook | None] = ContextVar(
    "yihao.before_write_commit", default=None
)


@dataclass
class Tx:
    """A unit of work: a session inside one transaction, plus work for after commit.

    Writes to rows that many transactions share (stream heads, the audit head) are
    staged here and flushed just before commit, in one fixed order (``STREAMS`` by
    name, then ``AUDIT``), so two transactions never wait for each other's locks in
    opposite orders, and those rows stay locked only from the flush to the commit.
    """

    session: AsyncSession
    after_commit: list[AfterCommit] = field(default_factory=list)
    # Set when the session flushed changes or sent a statement other than a SELECT.
    wrote: bool = False
    _staged: dict[tuple[int, str], list[Any]] = field(default_factory=dict)
    _flushes: dict[tuple[int, str], StagedFlush] = field(default_factory=dict)

    def on_commit(self, callback: AfterCommit) -> None:
        self.after_commit.append(callback)

    def stage(self, rank: int, name: str, item: Any, flush: StagedFlush) -> None:
        """Queue ``item`` for the shared row ``(rank, name)``; ``flush`` writes that row's
        queue (in call order) when the transaction is about to commit."""
        self._staged.setdefault((rank, name), []).append(item)
        self._flushes[(rank, name)] = flush

    @property
    def writes(self) -> bool:
        """Whether committing this unit of work would write more than audit entries (a
        refusal's or a read's entry is on the record, but is not a write of the request)."""
        session = self.session
        return bool(
            self.wrote
            or session.new
            or session.dirty
            or session.deleted
            or any(rank != AUDIT for rank, _ in self._staged)
        )

    async def flush_staged(self) -> None:
        """Write the staged work in lock order. Called by :meth:`Database.transaction`."""
        if not self._staged:
            return
        # The transaction's own rows first: whatever they lock was taken in the body.
        await self.session.flush()
        while self._staged:
            key = min(self._staged)
            await self._flushes.pop(key)(self, self._staged.pop(key))

    @staticmethod
    def of(session: AsyncSession) -> Tx | None:
        """The unit of work ``session`` belongs to (None for a session made elsewhere)."""
        tx = session.info.get(TX_KEY)
        return tx if isinstance(tx, Tx) else None


class WriteSession(Session):
    """The session of a :meth:`Database.transaction`: it notes on its Tx that it wrote."""


def _note_write(session: Session) -> None:
    tx = session.info.get(TX_KEY)
    if isinstance(tx, Tx):
        tx.wrote = True


def _on_flush(session: Session, _context: UOWTransaction) -> None:
    _note_write(session)


def _on_execute(state: ORMExecuteState) -> None:
    # INSERT / UPDATE / DELETE statements, and any text (which might be one).
    if not state.is_select:
        _note_write(state.session)


event.listen(WriteSession, "after_flush", _on_flush)
event.listen(WriteSession, "do_orm_execute", _on_execute)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling is turned off so that we emit BEGIN
    # ourselves (see _sqlite_on_begin).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock at the start, so two writers queue on
    # the busy timeout instead of one failing when it upgrades a read lock.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_on_read_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


# A pooled connection that sat unused this long is pinged before it is handed out; one in
# steady use is not (the ping is three round trips on asyncpg: BEGIN, ";", ROLLBACK).
PING_AFTER_IDLE_SECONDS = 5.0


def ping_when_idle(engine: AsyncEngine, idle_seconds: float | None = None) -> None:
    """Pessimistic disconnect handling for connections that were idle, optimistic otherwise.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout. Here only a connection idle for
    ``idle_seconds`` is pinged; a dead one is discarded and the pool connects afresh. A
    connection in steady use that the server dropped fails its statement instead: that
    request answers 503 ``database_unavailable`` (Retry-After) and the pool invalidates every
    connection of that generation, so the requests after it connect afresh.
    """
    dialect = engine.sync_engine.dialect
    idle = PING_AFTER_IDLE_SECONDS if idle_seconds is None else idle_seconds

    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool closes this one and tries a new connection (whose failure, when the
            # database is away, is the request's 503).
            raise exc.DisconnectionError() from error

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)


class Database:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.effective_database_url
        self.is_sqlite = settings.is_sqlite
        if self.is_sqlite:
            path = self.url.split(":///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: AsyncEngine = create_async_engine(
                self.url, pool_size=5, max_overflow=0, pool_timeout=30, hide_parameters=True
            )
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_on_begin)
            # Reads take no write lock: under WAL they see the last committed state and never
            # wait for a writer, even one that is the same request's open transaction.
            self.read_engine = create_async_engine(
                self.url, pool_size=5, max_overflow=5, pool_timeout=30, hide_parameters=True
            )
            event.listen(self.read_engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(self.read_engine.sync_engine, "begin", _sqlite_on_read_begin)
        else:
            self.engine = create_async_engine(
                self.url,
                pool_size=settings.database_pool_size,
                max_overflow=settings.database_pool_size,
                pool_timeout=10,
                # Statement parameters hold patient data: never in an error message or a log.
                hide_parameters=True,
            )
            ping_when_idle(self.engine)
            self.read_engine = self.engine
        self.closed = False
        self.sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=WriteSession
        )
        self.read_sessionmaker = async_sessionmaker(self.read_engine, expire_on_commit=False)

    def _check_open(self) -> None:
        if self.closed:
            # Late work during shutdown (a socket's disconnect hook, a job's last tick) must
            # not open a connection that nothing would ever close.
            raise ServiceUnavailable("the server is shutting down", code="shutting_down")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """Run a unit of work; after-commit callbacks run only if it committed.

        The staged writes (stream appends, audit entries) are flushed after the body and
        before the commit; a body that raises leaves nothing of them behind. The request's
        :data:`before_write_commit` hook, if any, runs first when the body wrote.
        """
        self._check_open()
        async with self.sessionmaker() as session, session.begin():
            tx = Tx(session)
            session.info[TX_KEY] = tx
            yield tx
            hook = before_write_commit.get()
            if hook is not None and tx.writes:
                await hook(tx)
            await tx.flush_staged()
        for callback in tx.after_commit:
            try:
                await callback()
            except Exception:
                # The data is committed; a failed push is caught up by replay.
                logger.exception("after-commit callback failed")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work (nothing is committed from it)."""
        self._check_open()
        async with self.read_sessionmaker() as session, session.begin():
            yield session

    async def ping(self) -> None:
        # The read engine: on SQLite a write connection begins IMMEDIATE and would wait
        # behind the writers for the lock (a busy server reported as a missing database).
        async with self.read_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def migrate(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(run_migrations)

    async def dispose(self) -> None:
        self.closed = True
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # New revisions are named after their id (``0013_add_x.py``); ids are sequential.
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return cfg


def run_migrations(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def migrate_sync(settings: Settings) -> None:
    async def _run() -> None:
        db = Database(settings)
        try:
            await db.migrate()
        finally:
            await db.dispose()

    asyncio.run(_run())
