"""The inbox table: one row per notification, keyed to the stream event that carried it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime


class InboxItem(Base):
    __tablename__ = "inbox_items"
    __table_args__ = (
        Index("ux_inbox_items_stream_seq", "stream", "seq", unique=True),
        Index("ix_inbox_items_stream_read", "stream", "read_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # ``user:<id>`` or ``institution:<id>`` (the desk): the stream the notification was pushed on.
    stream: Mapped[str] = mapped_column(String(100), nullable=False)
    # Set right after the row exists: the notification event carries the row id.
    seq: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(48), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    resource: Mapped[str | None] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_by: Mapped[int | None] = mapped_column(Integer)
