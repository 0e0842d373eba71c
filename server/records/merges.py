"""Records follow a patient merge: the duplicate's entries move to the account that stays.

A merge follower of the patient index (``server.identity.patients.MergeFollower``):
it moves rows and repoints their ``Patient/<id>`` references inside the merge's
transaction, and moves them back when the merge is undone.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import select

from server.core.db import Tx
from server.records.fhir import walk_references
from server.records.models import RecordEntry


class RecordMerges:
    async def follow_merge(self, tx: Tx, source_id: int, target_id: int) -> list[int]:
        rows = list(
            await tx.session.scalars(select(RecordEntry).where(RecordEntry.patient_id == source_id))
        )
        for row in rows:
            row.patient_id = target_id
            row.resource = _repoint(row.resource, source_id, target_id)
        return [row.id for row in rows]

    async def undo_merge(self, tx: Tx, source_id: int, target_id: int, moved: list[int]) -> None:
        if not moved:
            return
        rows = await tx.session.scalars(select(RecordEntry).where(RecordEntry.id.in_(moved)))
        for row in rows:
            row.patient_id = source_id
            row.resource = _repoint(row.resource, target_id, source_id)


def _repoint(resource: dict[str, Any], old: int, new: int) -> dict[str, Any]:
    resource = copy.deepcopy(resource)
    for ref, _ in walk_references(resource, ""):
        if ref["reference"] == f"Patient/{old}":
            ref["reference"] = f"Patient/{new}"
    return resource
