"""The record panel of a consult room: the frozen snapshot and the live shared record."""

from __future__ import annotations

from server.consults import schemas
from server.consults.guards import ConsultAccess, check_participant
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database
from server.records.service import RecordsService


class RecordPanel:
    def __init__(
        self, db: Database, audit: AuditLog, records: RecordsService, checks: ConsultAccess
    ) -> None:
        self.db = db
        self.audit = audit
        self.records = records
        self.checks = checks

    async def get_panel(self, requester: Requester, consult_id: int) -> schemas.RecordPanel:
        """The snapshot as this reader may see it now, and the live summary through the
        record's access rules (participants only)."""
        async with self.db.read() as session:
            consult, _ = await check_participant(session, consult_id, requester)
            policy = await self.checks.policy(requester, consult, session)
        if policy.revoked:
            raise await self.checks.refuse(requester, consult, "consult.snapshot_read")
        snapshot = await self.records.withhold_snapshot(policy, consult.snapshot)
        await self.audit.record_alone(
            "consult.snapshot_read",
            actor=requester,
            patient_id=consult.patient_id,
            resource=f"Consult/{consult_id}",
        )
        live = await self.records.clinical_summary(requester, consult.patient_id)
        return schemas.RecordPanel(snapshot=snapshot, live=live.model_dump(mode="json"))
