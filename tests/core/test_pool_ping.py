"""A pooled PostgreSQL connection the server dropped: replaced before use when it sat idle.

SQLAlchemy's ``pool_pre_ping`` cost three round trips on every checkout; the pool now pings
only a connection that was idle (``server.core.db.ping_when_idle``). What a client sees must
not change: a connection the database closed while it sat in the pool is found dead and
replaced, and the read on it succeeds; one closed in steady use fails that one statement as
a lost connection (the 503 of the error middleware), and the pool connects afresh after.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.config import Settings
from server.core import db as dbmodule
from server.core.db import Database

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("backend", ["postgres"])]


async def _pid(database: Database) -> int:
    async with database.read() as session:
        return int(await session.scalar(text("SELECT pg_backend_pid()")))


async def _terminate(settings: Settings, pid: int) -> None:
    """Close one server connection from outside the pool under test (as a restart would)."""
    other = Database(settings)
    try:
        async with other.read() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.engine.dispose()


async def test_an_idle_connection_closed_by_the_server_is_replaced_before_use(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbmodule, "PING_AFTER_IDLE_SECONDS", 0.2)
    database = Database(settings)
    try:
        first = await _pid(database)
        await _terminate(settings, first)
        await asyncio.sleep(0.5)  # idle past the ping threshold
        pids = {await _pid(database) for _ in range(3)}
        assert first not in pids
    finally:
        await database.engine.dispose()


async def test_a_connection_closed_in_steady_use_fails_once_then_the_pool_recovers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbmodule, "PING_AFTER_IDLE_SECONDS", 3600)
    database = Database(settings)
    try:
        first = await _pid(database)
        await _terminate(settings, first)
        failures = 0
        pids = []
        for _ in range(4):
            try:
                pids.append(await _pid(database))
            except DBAPIError as error:
                assert error.connection_invalidated
                failures += 1
        assert failures <= 1
        assert pids and first not in pids
    finally:
        await database.engine.dispose()
