"""The status history of a clinical object (consult, prescription, referral), read one way.

Each capability keeps its own history table, since what a step records differs (a consult
step carries a structured note, a prescription step its version and details, a referral
step a short note). The answer is one model, :class:`HistoryEntry`, the same for every
kind: when the step was taken, the status it left and the one it reached, who took it,
why, and the step's details. Reading a history is the same everywhere too: rows in the
order they were written (:func:`read_history`), each turned into an entry by its kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute


class HistoryEntry(BaseModel):
    """One step of a status history (a consult's, a prescription's, a referral's)."""

    at: datetime
    from_status: str | None = Field(description="the status the step left (none: created)")
    to_status: str = Field(description="the status reached, or what the step recorded")
    actor_user_id: int | None = Field(description="who took the step (none: the system)")
    reason: str | None = Field(default=None, description="why, as the actor gave it")
    details: dict[str, Any] = Field(default_factory=dict)
    # Names earlier answers used, kept so that no client loses a field it reads.
    status: str | None = Field(default=None, description="prescriptions: same as to_status")
    version: int | None = Field(default=None, description="prescriptions: the version")
    actor_id: int | None = Field(default=None, description="consults: same as actor_user_id")
    note: str | dict[str, Any] | None = Field(
        default=None,
        description="referrals: same as reason (text); consults: same as details (an object)",
    )


class HistoryList(BaseModel):
    items: list[HistoryEntry]


async def read_history(
    session: AsyncSession, owner: InstrumentedAttribute[int], owner_id: int
) -> list[Any]:
    """The history rows of one object, oldest first (``owner`` is the table's owner column)."""
    model = owner.class_
    rows = await session.scalars(select(model).where(owner == owner_id).order_by(model.id))
    return list(rows)
