"""Streams: committed, numbered events that realtime clients see and replay.

A stream is named like the Socket.IO room its readers sit in (``user:7``,
``institution:3``, ``consult:12``). A service appends an event inside its
transaction; the event gets the stream's next sequence number and is pushed
to the room only after the transaction commits. A client that was away asks
for what came after its last seen number and gets it, in order. Pushes may be
lost (Redis pub/sub is at-most-once) or arrive twice (a replay racing a live
push); clients keep the highest sequence number per stream and ignore
anything at or below it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, Database, Tx, UTCDateTime, utcnow

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


async def next_seq(session: AsyncSession, stream: str) -> int:
    """Take the stream's next number; the head row's lock orders concurrent writers."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(insert(StreamHead).values(stream=stream, seq=0).on_conflict_do_nothing())
    result = await session.execute(
        update(StreamHead)
        .where(StreamHead.stream == stream)
        .values(seq=StreamHead.seq + 1)
        .returning(StreamHead.seq)
    )
    return int(result.scalar_one())


class Events:
    def __init__(self, db: Database, push: Pusher) -> None:
        self.db = db
        self._push = push

    async def append(
        self, tx: Tx, stream: str, type_: str, op: str, data: dict[str, Any]
    ) -> Envelope:
        event = StreamEvent(
            stream=stream,
            seq=await next_seq(tx.session, stream),
            type=type_,
            op=op,
            data=data,
            at=utcnow(),
        )
        tx.session.add(event)
        envelope = event.envelope()

        async def push() -> None:
            await self._push(stream, envelope)

        tx.on_commit(push)
        return envelope

    async def replay(self, stream: str, after: int, limit: int = REPLAY_PAGE) -> list[Envelope]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(StreamEvent)
                .where(StreamEvent.stream == stream, StreamEvent.seq > after)
                .order_by(StreamEvent.seq)
                .limit(limit)
            )
            return [row.envelope() for row in rows]

    async def heads(self, streams: list[str]) -> dict[str, int]:
        async with self.db.read() as session:
            rows = await session.execute(
                select(StreamHead.stream, StreamHead.seq).where(StreamHead.stream.in_(streams))
            )
            found = {stream: int(seq) for stream, seq in rows}
        return {stream: found.get(stream, 0) for stream in streams}
