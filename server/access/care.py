"""Care relationships and access windows: the reasons an institution earns and is given.

A care relationship is earned by an encounter (``ENCOUNTERS``) and lapses
``care_relationship_days`` after the last one; an access window is opened by a
consult or referral for its time box. Both are read by the one check in
:mod:`server.access.service`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Subquery, and_, bindparam, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.access.models import AccessWindow, CareRelationship
from server.core.db import Database, Tx, UTCDateTime, utcnow

# The encounters that start or renew a care relationship.
ENCOUNTERS = ("presence", "patient_approved", "appointment", "referral", "merged", "demo")


def care_match(patient: Any, institution: Any, cutoff: Any) -> ColumnElement[bool]:
    """An active care relationship of the institution with the patient (values or bindparams)."""
    return and_(
        CareRelationship.patient_id == patient,
        CareRelationship.institution_id == institution,
        CareRelationship.last_encounter_at > cutoff,
    )


def window_match(patient: Any, institution: Any, now: Any) -> ColumnElement[bool]:
    """An open access window of the institution on the patient at ``now``."""
    return and_(
        AccessWindow.patient_id == patient,
        AccessWindow.institution_id == institution,
        AccessWindow.closed_at.is_(None),
        AccessWindow.opened_at <= now,
        or_(AccessWindow.until.is_(None), AccessWindow.until > now),
    )


# Built once: the check runs on every read of a record.
_HAS_CARE = select(CareRelationship.id).where(
    care_match(
        bindparam("patient"), bindparam("institution"), bindparam("cutoff", type_=UTCDateTime)
    )
)


@dataclass(frozen=True)
class CareState:
    institution_id: int
    reason: str
    since: datetime
    last_encounter_at: datetime
    ends_at: datetime


def _insert(tx: Tx) -> Any:
    return pg_insert if tx.session.get_bind().dialect.name == "postgresql" else sqlite_insert


class CareRelationships:
    """The earned reason: start, renew, list and carry over care relationships."""

    db: Database
    care_lifetime: timedelta

    async def has_care(self, session: AsyncSession, patient_id: int, institution_id: int) -> bool:
        """An active care relationship, checked inside a caller's session (SQLite: one
        writer, so no second connection)."""
        found = await session.scalar(
            _HAS_CARE,
            {"patient": patient_id, "institution": institution_id, "cutoff": self.care_cutoff()},
        )
        return found is not None

    async def has_care_relationship(self, patient_id: int, institution_id: int) -> bool:
        async with self.db.read() as session:
            return await self.has_care(session, patient_id, institution_id)

    async def record_encounter(
        self, tx: Tx, *, patient_id: int, institution_id: int, reason: str
    ) -> None:
        """The institution met the patient: start the care relationship, or renew it."""
        assert reason in ENCOUNTERS, reason
        now = utcnow()
        await tx.session.execute(
            _insert(tx)(CareRelationship)
            .values(
                patient_id=patient_id,
                institution_id=institution_id,
                reason=reason,
                created_at=now,
                last_encounter_at=now,
            )
            .on_conflict_do_update(
                index_elements=["patient_id", "institution_id"],
                set_={"reason": reason, "last_encounter_at": now},
            )
        )

    async def care_relationships(self, session: AsyncSession, patient_id: int) -> list[CareState]:
        """The patient's active care relationships (what the patient is shown)."""
        rows = await session.scalars(
            select(CareRelationship)
            .where(
                CareRelationship.patient_id == patient_id,
                CareRelationship.last_encounter_at > utcnow() - self.care_lifetime,
            )
            .order_by(CareRelationship.last_encounter_at.desc())
        )
        return [
            CareState(
                r.institution_id,
                r.reason,
                r.created_at,
                r.last_encounter_at,
                r.last_encounter_at + self.care_lifetime,
            )
            for r in rows
        ]

    def care_cutoff(self) -> datetime:
        """Care relationships whose last encounter is older than this have lapsed."""
        return utcnow() - self.care_lifetime

    def cared_for(self, institution_id: int) -> Subquery:
        """The patients in the institution's active care, as a subquery a caller joins:
        columns ``patient_id`` and ``since`` (when the relationship started)."""
        return (
            select(
                CareRelationship.patient_id.label("patient_id"),
                CareRelationship.created_at.label("since"),
            )
            .where(
                CareRelationship.institution_id == institution_id,
                CareRelationship.last_encounter_at > self.care_cutoff(),
            )
            .subquery("cared_for")
        )

    async def follow_merge(self, tx: Tx, source_id: int, target_id: int) -> list[int]:
        """The institutions that cared for the duplicate now care for the account that stays."""
        have = set(
            await tx.session.scalars(
                select(CareRelationship.institution_id).where(
                    CareRelationship.patient_id == target_id
                )
            )
        )
        sources = await tx.session.scalars(
            select(CareRelationship).where(CareRelationship.patient_id == source_id)
        )
        # The duplicate's relationships carry over as they were: a merge is no encounter.
        added = [
            CareRelationship(
                patient_id=target_id,
                institution_id=c.institution_id,
                reason="merged",
                created_at=c.created_at,
                last_encounter_at=c.last_encounter_at,
            )
            for c in sources
            if c.institution_id not in have
        ]
        tx.session.add_all(added)
        await tx.session.flush()
        return [row.id for row in added]

    async def undo_merge(self, tx: Tx, source_id: int, target_id: int, moved: list[int]) -> None:
        if moved:
            await tx.session.execute(delete(CareRelationship).where(CareRelationship.id.in_(moved)))


class AccessWindows:
    """The given reason: time-boxed windows a consult or referral opens and closes."""

    async def open_window(
        self,
        tx: Tx,
        *,
        patient_id: int,
        institution_id: int,
        source: str,
        source_id: int,
        until: datetime | None = None,
    ) -> None:
        tx.session.add(
            AccessWindow(
                patient_id=patient_id,
                institution_id=institution_id,
                source=source,
                source_id=source_id,
                opened_at=utcnow(),
                until=until,
            )
        )
        await tx.session.flush()

    async def close_window(self, tx: Tx, *, source: str, source_id: int) -> None:
        await tx.session.execute(
            update(AccessWindow)
            .where(
                AccessWindow.source == source,
                AccessWindow.source_id == source_id,
                AccessWindow.closed_at.is_(None),
            )
            .values(closed_at=utcnow())
        )

    async def open_window_source(
        self, session: AsyncSession, patient_id: int, institution_id: int
    ) -> str | None:
        """The source of an open window on the patient for the institution, if any."""
        source = await session.scalar(
            select(AccessWindow.source)
            .where(window_match(patient_id, institution_id, utcnow()))
            .limit(1)
        )
        return None if source is None else str(source)
