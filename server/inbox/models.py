"""The inbox table: one row per notification, keyed to the stream event that carried it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String
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


class OutboundMessage(Base):
    """The outbox of messages sent outside the app (SMS, WeChat): one row per item and channel.

    Written in the transaction that wrote the inbox item, sent after commit by the
    ``notify.dispatch`` job: ``pending`` → ``sending`` (claimed, one attempt counted) →
    ``sent`` or back to ``pending`` with a later ``next_attempt_at``, ``failed`` when the
    attempts are spent. ``skipped_opt_out`` and ``skipped_no_address`` are never sent.
    """

    __tablename__ = "outbound_messages"
    __table_args__ = (
        Index("ux_outbound_messages_item_channel", "inbox_item_id", "channel", unique=True),
        Index("ix_outbound_messages_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inbox_item_id: Mapped[int] = mapped_column(Integer, nullable=False)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(48), nullable=False)
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    template_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # The template's parameters only (times, amounts): never the inbox item's title or data.
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(24), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NotificationPreference(Base):
    """A user's choice for one kind on one outbound channel (no row: enabled)."""

    __tablename__ = "notification_preferences"
    __table_args__ = (
        Index("ux_notification_preferences", "user_id", "kind", "channel", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(48), nullable=False)
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
