"""The status history of a clinical object (consult, prescription, referral), read one way.

Each capability keeps its own history table, since what a step records differs (a consult
step carries a structured note, a prescription step its version and details, a referral
step a short note). Reading a history and turning its rows into the answer's entries is
the same everywhere, so it is done here: rows in the order they were written, each turned
into the capability's entry model by attribute name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

Entry = TypeVar("Entry", bound=BaseModel)


async def read_history(
    session: AsyncSession, owner: InstrumentedAttribute[int], owner_id: int
) -> list[Any]:
    """The history rows of one object, oldest first (``owner`` is the table's owner column)."""
    model = owner.class_
    rows = await session.scalars(select(model).where(owner == owner_id).order_by(model.id))
    return list(rows)


def entries(entry: type[Entry], rows: Iterable[Any]) -> list[Entry]:
    """History rows as answer entries: each field of ``entry`` read from the row's attribute."""
    return [entry.model_validate(row, from_attributes=True) for row in rows]
