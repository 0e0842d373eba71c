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
    # Pass as ``before`` for the next (older) page; None: this was the last.
    next_before: int | None = None


class InboxQuery(Strict):
    unread: bool = False
    limit: int = Field(default=100, ge=1, le=500)
    # The previous page's ``next_before``: the items older than that one.
    before: int | None = Field(default=None, ge=1)


class MarkRead(Strict):
    ids: list[int] = Field(min_length=1, max_length=500)


class MarkedRead(BaseModel):
    ids: list[int]


class KindPreference(BaseModel):
    kind: str
    # Always true: what happens is always in the app's messages.
    in_app: bool
    # Channel name → sent outside the app (SMS, WeChat, log).
    outbound: dict[str, bool]


class PreferencesOut(BaseModel):
    channels: list[str]
    kinds: list[KindPreference]


class PreferenceChange(Strict):
    kind: str = Field(min_length=1, max_length=48)
    channel: str = Field(min_length=1, max_length=16)
    enabled: bool


class PreferencesIn(Strict):
    preferences: list[PreferenceChange] = Field(min_length=1, max_length=100)
