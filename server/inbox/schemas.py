"""Shapes of the inbox API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from server.core.api import Strict


class InboxItemOut(BaseModel):
    id: int
    stream: str
    seq: int
    kind: str
    title: str
    resource: str | None
    data: dict[str, Any]
    created_at: datetime
    read: bool
    read_at: datetime | None
    read_by: int | None


class InboxList(BaseModel):
    items: list[InboxItemOut]
    unread: int


class InboxQuery(Strict):
    unread: bool = False
    limit: int = Field(default=100, ge=1, le=500)


class MarkRead(Strict):
    ids: list[int] = Field(min_length=1, max_length=500)


class MarkedRead(BaseModel):
    ids: list[int]
