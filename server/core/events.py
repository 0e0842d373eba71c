"""Streams: committed, numbered events that realtime clients see and replay.

A stream is named like the Socket.IO room its readers sit in (``user:7``,
``institution:3``, ``consult:12``). A service appends an event inside its
transaction; the append is staged on the transaction and numbered just before
commit (streams in name order, before the audit entries: ``server/core/db.py``),
when the stream's head row is locked for the rest of the transaction. The event
gets the stream's next sequence number and is pushed to the room only after the
transaction commits. A client that was away asks
for what came after its last seen number and gets it, in order. Pushes may be
lost (Redis pub/sub is at-most-once) or arrive twice (a replay racing a live
push); clients keep the highest sequence number per stream and ignore
anything at or below it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import STREAMS, Base, Database, Tx, UTCDateTime, utcnow

Envelope = dict[str, Any]
Pusher = Callable[[str, Envelope], Awaitable[None]]

REPLAY_PAGE = 500


class StreamHead(Base):
    __tablename__ = "stream_heads"

    stream: Mapped[str] = mapped_column(String(100), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


class StreamEvent(Base):
    __tablename__ = "stream_events"
    __table_args__ = (Index("ux_stream_events_stream_seq", "stream", "seq", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(100), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    op: Mapped[str] = mapped_column(String(32), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    def envelope(self) -> Envelope:
        return {
            "stream": self.stream,
            "seq": self.seq,
            "type": self.type,
            "op": self.op,
            "data": self.data,
            "at": self.at.isoformat(),
        }


_HEADS: dict[tuple[str, int], Any] = {}  # (dialect, how many streams) → the upsert


def _heads_upsert(dialect: str, count: int) -> Any:
    """The upsert of ``count`` stream heads: a Core statement with bound parameters, built
    once per size, so SQLAlchemy compiles it once (not an ORM bulk insert every time)."""
    stmt = _HEADS.get((dialect, count))
    if stmt is None:
        table = StreamHead.metadata.tables["stream_heads"]
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        rows = insert(table).values(
            [{"stream": bindparam(f"stream_{n}", type_=String()),
              "seq": bindparam(f"count_{n}", type_=BigInteger())} for n in range(count)]
        )  # fmt: skip
        stmt = rows.on_conflict_do_update(
            index_elements=[table.c.stream], set_={"seq": table.c.seq + rows.excluded.seq}
        ).returning(table.c.stream, table.c.seq)
        _HEADS[(dialect, count)] = stmt
    return stmt


async def take_seqs(session: AsyncSession, counts: dict[str, int]) -> dict[str, int]:
    """Take each stream's next ``counts[stream]`` numbers; returns the last one of each.

    One upsert for every stream of the transaction: it creates the head rows or moves
    them on, and locks them until commit, which orders concurrent writers of a stream.
    The rows go in by stream name, so two transactions lock shared heads in one order.
    """
    streams = sorted(counts)
    params: dict[str, Any] = {}
    for n, stream in enumerate(streams):
        params[f"stream_{n}"], params[f"count_{n}"] = stream, counts[stream]
    upsert = _heads_upsert(session.get_bind().dialect.name, len(streams))
    return {stream: int(seq) for stream, seq in await session.execute(upsert, params)}


class Appended:
    """An event appended to a stream, numbered when its transaction flushes (before commit).

    Until then :attr:`seq` is None; a row that keeps the number (a chat message, a
    delivery) asks for it with :meth:`number_into`.
    """

    def __init__(self, stream: str, type_: str, op: str, data: dict[str, Any]) -> None:
        self.stream, self.type, self.op, self.data = stream, type_, op, data
        self.at = utcnow()
        self.seq: int | None = None
        self._into: list[tuple[Any, str]] = []

    def number_into(self, row: Any, attr: str = "seq") -> None:
        """Set ``row.<attr>`` to this event's number once it has one."""
        if self.seq is not None:
            setattr(row, attr, self.seq)
        else:
            self._into.append((row, attr))

    def _numbered(self, seq: int) -> None:
        self.seq = seq
        for row, attr in self._into:
            setattr(row, attr, seq)
        self._into.clear()

    def envelope(self) -> Envelope:
        if self.seq is None:
            raise RuntimeError(f"an event on {self.stream} is not numbered before its commit")
        return {
            "stream": self.stream,
            "seq": self.seq,
            "type": self.type,
            "op": self.op,
            "data": self.data,
            "at": self.at.isoformat(),
        }


# A Core INSERT of plain rows (no ORM objects to track, no ids to read back).
EVENT_ROWS = insert(StreamEvent.metadata.tables["stream_events"])


async def _flush_streams(tx: Tx, events: list[Any]) -> None:
    """Number the transaction's staged events (per stream, in append order) and insert
    their rows: every head in one statement, every event row in one more."""
    by_stream: dict[str, list[Appended]] = {}
    for event in events:
        by_stream.setdefault(event.stream, []).append(event)
    rows = []
    # The transaction's own rows were flushed already (Tx.flush_staged): nothing to
    # autoflush while the heads are locked.
    with tx.session.no_autoflush:
        last = await take_seqs(tx.session, {s: len(e) for s, e in by_stream.items()})
        for stream in sorted(by_stream):
            appended = by_stream[stream]
            for seq, event in enumerate(appended, start=last[stream] - len(appended) + 1):
                event._numbered(seq)
                rows.append(
                    {"stream": stream, "seq": seq, "type": event.type, "op": event.op,
                     "data": event.data, "at": event.at}
                )  # fmt: skip
        await tx.session.execute(EVENT_ROWS, rows)


class Events:
    def __init__(self, db: Database, push: Pusher) -> None:
        self.db = db
        self._push = push

    async def append(
        self, tx: Tx, stream: str, type_: str, op: str, data: dict[str, Any]
    ) -> Appended:
        """Stage an event on ``stream``; it is numbered before commit, pushed after it."""
        event = Appended(stream, type_, op, data)
        # One queue for all streams: their heads are taken in one statement (by name).
        tx.stage(STREAMS, "", event, _flush_streams)

        async def push() -> None:
            await self._push(stream, event.envelope())

        tx.on_commit(push)
        return event

    async def replay(self, stream: str, after: int, limit: int = REPLAY_PAGE) -> list[Envelope]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(StreamEvent)
                .where(StreamEvent.stream == stream, StreamEvent.seq > after)
                .order_by(StreamEvent.seq)
                .limit(limit)
            )
            return [row.envelope() for row in rows]

    async def heads(
        self, streams: list[str], *, session: AsyncSession | None = None
    ) -> dict[str, int]:
        """The last number of each stream (0 for one with no events); given a ``session``,
        read in it (the caller's read of what it answers with)."""
        query = select(StreamHead.stream, StreamHead.seq).where(StreamHead.stream.in_(streams))
        if session is not None:
            rows = list(await session.execute(query))
        else:
            async with self.db.read() as own:
                rows = list(await own.execute(query))
        found = {stream: int(seq) for stream, seq in rows}
        return {stream: found.get(stream, 0) for stream in streams}

    async def last_event_id(self) -> int:
        """The id of the newest event row (0 for none): where a look for new events starts."""
        async with self.db.read() as session:
            newest = await session.scalar(select(func.max(StreamEvent.id)))
            return int(newest or 0)

    async def heads_since(self, after_id: int) -> tuple[dict[str, int], int]:
        """The streams that have events with ids above ``after_id``, each with its highest
        number, and the highest id read (``after_id`` when nothing is new). One range read
        on the primary key: the cost follows what was written since, not how many streams
        exist."""
        query = (
            select(StreamEvent.stream, func.max(StreamEvent.seq), func.max(StreamEvent.id))
            .where(StreamEvent.id > after_id)
            .group_by(StreamEvent.stream)
        )
        async with self.db.read() as session:
            rows = list(await session.execute(query))
        newest = max((int(last_id) for _, _, last_id in rows), default=after_id)
        return {stream: int(seq) for stream, seq, _ in rows}, newest
