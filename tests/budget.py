"""Counting what a piece of work costs the database (Zulip's ``queries_captured``, for us).

``count_queries(db)`` listens on the engines of a :class:`Database` and counts
the SQL statements sent and the transactions begun and committed while the
``with`` block runs. SQLite's ``BEGIN`` / ``BEGIN IMMEDIATE`` are sent by hand
(``server/core/db.py``), so they reach the cursor like any statement: they are
counted as the start of a transaction, not as a statement, the same as
PostgreSQL's ``BEGIN`` that asyncpg sends on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import greenlet
from sqlalchemy import event

from server.core.db import Database

WRITES = ("INSERT", "UPDATE", "DELETE")
WROTE = "budget.wrote"


@dataclass
class Counts:
    statements: int = 0
    transactions: int = 0  # every BEGIN, reads included
    writes: int = 0  # transactions that committed an INSERT, UPDATE or DELETE
    sql: list[str] = field(default_factory=list)
    opened_at: list[str] = field(default_factory=list)  # where each transaction began

    def __str__(self) -> str:
        return (
            f"{self.statements} statements in {self.transactions} transactions"
            f" ({self.writes} committed writes)"
        )

    def listing(self) -> str:
        """Each statement's first line, for a failing budget's message."""
        opened = "\n".join(f"  transaction from {where}" for where in self.opened_at)
        return "\n".join(line.splitlines()[0][:160] for line in self.sql) + "\n" + opened


def _caller() -> str:
    """The innermost server frame outside the database plumbing that opened a transaction.

    The engine's events run in SQLAlchemy's greenlet, whose stack ends there: the
    awaiting coroutines are on the stack of the greenlet that spawned it.
    """
    current = greenlet.getcurrent()
    frame = current.parent.gr_frame if current.parent is not None else None
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if "/server/" in path and not path.endswith("/server/core/db.py"):
            name = path.rsplit("/server/", 1)[1]
            return f"server/{name}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "?"


@contextmanager
def count_queries(db: Database) -> Iterator[Counts]:
    counts = Counts()

    def on_execute(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("BEGIN"):
            return  # counted by on_begin
        counts.statements += 1
        counts.sql.append(statement.strip())
        if statement.lstrip().upper().startswith(WRITES):
            conn.info[WROTE] = True

    def on_begin(conn: Any) -> None:
        counts.transactions += 1
        counts.opened_at.append(_caller())
        conn.info[WROTE] = False

    def on_commit(conn: Any) -> None:
        if conn.info.pop(WROTE, False):
            counts.writes += 1

    engines = [db.engine.sync_engine]
    if db.read_engine is not db.engine:
        engines.append(db.read_engine.sync_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "begin", on_begin)
        event.listen(engine, "commit", on_commit)
    try:
        yield counts
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine, "begin", on_begin)
            event.remove(engine, "commit", on_commit)
