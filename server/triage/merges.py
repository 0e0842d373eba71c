"""The triage log follows a patient merge: the duplicate's suggestions move to the account
that stays, and back when the merge is undone (``server.identity.patients.MergeFollower``)."""

from __future__ import annotations

from sqlalchemy import select, update

from server.core.db import Tx
from server.triage.models import TriageLog


class TriageMerges:
    async def follow_merge(self, tx: Tx, source_id: int, target_id: int) -> list[int]:
        moved = list(
            await tx.session.scalars(select(TriageLog.id).where(TriageLog.patient_id == source_id))
        )
        if moved:
            await tx.session.execute(
                update(TriageLog).where(TriageLog.id.in_(moved)).values(patient_id=target_id)
            )
        return moved

    async def undo_merge(self, tx: Tx, source_id: int, target_id: int, moved: list[int]) -> None:
        if moved:
            await tx.session.execute(
                update(TriageLog).where(TriageLog.id.in_(moved)).values(patient_id=source_id)
            )
