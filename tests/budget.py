"""Counting what a piece of work costs the database (Zulip's ``queries_captured``, for us).

``count_queries(db)`` listens on the engines of a :class:`Database` and counts
the SQL statements sent and the transactions begun and committed while the
``with`` block runs. SQLite's ``BEGIN`` / ``BEGIN IMMEDIATE`` are sent by hand
(``server/core/db.py``), so they reach the cursor like any statement: they are
counted as the start of a transaction, not as a statement, the same as
PostgreSQL's ``BEGIN`` that asyncpg sends on its own.

Statements are also kept per transaction (:attr:`Counts.each`), with where the
transaction was opened, so a test can say what one transaction held (the audit
head locked in a transaction that does nothing else) and a failing budget can
name every transaction.
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
CURRENT = "budget.transaction"  # connection info key: the Transaction it is in
AUDIT_HEAD = ("UPDATE AUDIT_HEAD", "INSERT INTO AUDIT_EVENTS")
FRAMES = 3  # server frames named for a transaction, innermost first


def first_line(statement: str) -> str:
    return statement.splitlines()[0][:160]


@dataclass
class Transaction:
    opened_at: str  # the server frames that sent its first statement, innermost first
    sql: list[str] = field(default_factory=list)

    @property
    def locks_audit_head(self) -> bool:
        return any(statement.upper().startswith(AUDIT_HEAD[0]) for statement in self.sql)

    @property
    def only_audit(self) -> bool:
        """Nothing but an audit append: the head locked for the shortest time."""
        return bool(self.sql) and all(s.upper().startswith(AUDIT_HEAD) for s in self.sql)


@dataclass
class Counts:
    statements: int = 0
    transactions: int = 0  # every BEGIN, reads included
    writes: int = 0  # transactions that committed an INSERT, UPDATE or DELETE
    sql: list[str] = field(default_factory=list)
    each: list[Transaction] = field(default_factory=list)  # in the order they began

    @property
    def opened_at(self) -> list[str]:
        """Where each transaction began."""
        return [t.opened_at for t in self.each]

    @property
    def figures(self) -> tuple[int, int, int]:
        """(statements, transactions, committed writes): what a budget pins."""
        return self.statements, self.transactions, self.writes

    def __str__(self) -> str:
        return (
            f"{self.statements} statements in {self.transactions} transactions"
            f" ({self.writes} committed writes)"
        )

    def listing(self) -> str:
        """Each transaction, where it was opened, and its statements' first lines."""
        lines = []
        for number, transaction in enumerate(self.each, start=1):
            lines.append(f"transaction {number} from {transaction.opened_at}:")
            lines.extend(f"    {first_line(statement)}" for statement in transaction.sql)
        return "\n".join(lines)


def _caller() -> str:
    """The innermost server frames outside the database plumbing that opened a transaction.

    The engine's events run in SQLAlchemy's greenlet, whose stack ends there: the
    awaiting coroutines are on the stack of the greenlet that spawned it.
    """
    current = greenlet.getcurrent()
    frame = current.parent.gr_frame if current.parent is not None else None
    found: list[str] = []
    while frame is not None and len(found) < FRAMES:
        path = frame.f_code.co_filename.replace("\\", "/")
        if "/server/" in path and not path.endswith("/server/core/db.py"):
            name = path.rsplit("/server/", 1)[1]
            found.append(f"server/{name}:{frame.f_lineno} ({frame.f_code.co_name})")
        frame = frame.f_back
    return " < ".join(found) or "?"


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
        transaction = conn.info.get(CURRENT)
        if isinstance(transaction, Transaction):
            transaction.sql.append(statement.strip())
        if statement.lstrip().upper().startswith(WRITES):
            conn.info[WROTE] = True

    def on_begin(conn: Any) -> None:
        counts.transactions += 1
        transaction = Transaction(_caller())
        counts.each.append(transaction)
        conn.info[CURRENT] = transaction
        conn.info[WROTE] = False

    def on_commit(conn: Any) -> None:
        conn.info.pop(CURRENT, None)
        if conn.info.pop(WROTE, False):
            counts.writes += 1

    def on_rollback(conn: Any) -> None:
        conn.info.pop(CURRENT, None)
        conn.info.pop(WROTE, None)

    engines = [db.engine.sync_engine]
    if db.read_engine is not db.engine:
        engines.append(db.read_engine.sync_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "begin", on_begin)
        event.listen(engine, "commit", on_commit)
        event.listen(engine, "rollback", on_rollback)
    try:
        yield counts
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine, "begin", on_begin)
            event.remove(engine, "commit", on_commit)
            event.remove(engine, "rollback", on_rollback)
