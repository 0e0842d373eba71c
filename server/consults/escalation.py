"""Escalation: requests the invited institution leaves unanswered too long reach its
administrators (ids and urgency only). Run on a lease, one node a round (jobs.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from server.config import Settings
from server.consults.lifecycle import ConsultLifecycle
from server.consults.models import Consult
from server.consults.states import ConsultStatus
from server.core.audit import AuditLog
from server.core.db import Database, utcnow
from server.core.events import Events
from server.identity.directory import Directory


class ConsultEscalation:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        events: Events,
        directory: Directory,
        lifecycle: ConsultLifecycle,
    ) -> None:
        self.db = db
        self.audit = audit
        self.events = events
        self.directory = directory
        self.lifecycle = lifecycle
        self.answer_timeout = timedelta(seconds=settings.consult_answer_timeout_seconds)

    async def escalate_overdue(self, now: datetime | None = None) -> list[int]:
        """Notify the invited institution's admins of requests unanswered too long; run-once-safe.

        Each consult is escalated once: the rows are locked (PostgreSQL: skipping rows
        another node holds; SQLite: one writer at a time) and ``escalated_at`` is set in
        the same transaction as the notifications.
        """
        now = now or utcnow()
        async with self.db.transaction() as tx:
            consults = list(
                await tx.session.scalars(
                    select(Consult)
                    .where(
                        Consult.status == ConsultStatus.REQUESTED,
                        Consult.escalated_at.is_(None),
                        Consult.created_at < now - self.answer_timeout,
                    )
                    .order_by(Consult.id)
                    .limit(100)
                    .with_for_update(skip_locked=True)
                )
            )
            for consult in consults:
                consult.escalated_at = now
                admins = await self.directory.institution_admin_ids(
                    tx.session, consult.invited_institution_id
                )
                data = {
                    "consult_id": consult.id,
                    "status": consult.status,
                    "urgency": consult.urgency,
                }
                for admin_id in admins:
                    await self.events.append(tx, f"user:{admin_id}", "consult", "escalated", data)
                await self.lifecycle.announce(
                    tx, consult, "escalated", {"urgency": consult.urgency}
                )
                await self.audit.record(
                    tx.session,
                    "consult.escalate",
                    patient_id=consult.patient_id,
                    resource=f"Consult/{consult.id}",
                )
            return [c.id for c in consults]
