"""The one check: who may see a patient's record, and why; deny by default, all audited.

A request for a patient's data is allowed only for a reason the server can
check, tried in this order:

- ``self``: the patient reading their own record;
- ``care_relationship``: a clinician (specialist, gp, nurse) of an institution
  that has *earned* a care relationship (:mod:`server.access.care`): the patient
  was present at its desk (a short-lived code from the patient's app), approved
  its link request in the app, booked a visit there, or arrived there on a
  referral. The relationship ends ``CARE_RELATIONSHIP_DAYS`` after the last such
  encounter. Registering a resident, knowing their ID number or pushing data about
  them earns nothing;
- ``consult`` / ``referral``: a clinician of an institution with an open,
  time-boxed window on the patient (opened by the consult or referral);
- ``consent``: the patient granted sharing with the clinician's institution
  (:mod:`server.access.consent`);
- ``emergency``: "break the glass" with a mandatory reason, flagged for review.

Pharmacists see the facts of the prescriptions sent to them, never the record;
administrators manage people and schedules, never clinical content. A patient's
explicit revocation for an institution removes every reason but ``self`` and
``emergency`` for it. Every decision — allowed or denied — is written to the audit
log with who, which patient, what, the reason and the client address. An unknown
patient and a refused one get the same answer, so ids cannot be probed.

A write that needs a reason (a prescription) decides inside its own transaction
through :meth:`AccessService.decisions`: the granted decision's audit entry is
queued on that transaction and commits with the write, so the request costs no
transaction of its own for the decision. A refusal, or a write that rolls back
after the decision, is audited afterwards in a short transaction of its own, so
no decision is ever left out of the log.

Patients are identity's rows: this module asks identity's directory, never its tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, NoReturn

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.access.care import AccessWindows, CareRelationships
from server.access.consent import Consents, RevocationListener
from server.access.models import Consent
from server.config import Settings
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx
from server.core.errors import Forbidden, ValidationFailed
from server.core.roles import CARE_ROLES, EMERGENCY_ROLES
from server.identity.directory import Directory

REASONS = ("self", "care_relationship", "consult", "referral", "consent", "emergency")
ACCESS = "record.access"


class AccessRefused(Forbidden):
    """No reason to access the patient: one answer for a forbidden patient and an unknown one.

    Carries what its audit entry needs, for a refusal decided inside a transaction that
    rolls back (:class:`AccessDecisions` audits it once the transaction is over).
    """

    def __init__(
        self, requester: Requester, patient_id: int | None, *, action: str, resources: str | None
    ) -> None:
        super().__init__(
            "no reason to access this patient's record (no care relationship, "
            "consult, referral or consent), or no such patient",
            code="record_access_denied",
        )
        self.requester = requester
        self.refused_patient_id = patient_id
        self.action = action
        self.resources = resources


def granted_entry(
    requester: Requester,
    patient_id: int,
    reason: str,
    *,
    action: str,
    resources: str | None,
    emergency_reason: str | None,
) -> dict[str, Any]:
    """The audit entry of an allowed access (``record.access``'s keyword arguments)."""
    details: dict[str, Any] = {"action": action}
    if requester.institution_id is not None:
        details["institution_id"] = requester.institution_id
    if reason == "emergency":
        details.update(break_the_glass=True, review="pending", statement=emergency_reason)
    return {
        "actor": requester,
        "patient_id": patient_id,
        "resource": resources,
        "reason": reason,
        "details": details,
    }


class AccessService(CareRelationships, AccessWindows, Consents):
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        settings: Settings,
        directory: Directory,
        revocation_listeners: Sequence[RevocationListener] = (),
    ) -> None:
        self.db = db
        self.audit = audit
        self.directory = directory
        self.care_lifetime = timedelta(days=settings.care_relationship_days)
        self.revocation_listeners = tuple(revocation_listeners)

    async def check_patient_access(
        self,
        requester: Requester,
        patient_id: int,
        *,
        action: str,
        resources: str | None = None,
        emergency_reason: str | None = None,
    ) -> str:
        """Deny by default; return the reason the access is allowed, audited either way."""
        async with self.db.read() as session:
            exists, reason = await self._decide(session, requester, patient_id, emergency_reason)
        if reason is None:
            await self.deny(
                requester, patient_id if exists else None, action=action, resources=resources
            )
        entry = granted_entry(
            requester,
            patient_id,
            reason,
            action=action,
            resources=resources,
            emergency_reason=emergency_reason,
        )
        await self.audit.record_alone(ACCESS, **entry)
        return reason

    @asynccontextmanager
    async def decisions(self) -> AsyncIterator[AccessDecisions]:
        """Access decided inside a write transaction opened within this block.

        Open it outside the transaction (``async with access.decisions() as decide,
        db.transaction() as tx``): what must be audited after a rollback is written
        once the transaction is over, when the audit head is free to take.
        """
        decide = AccessDecisions(self)
        try:
            yield decide
        finally:
            await decide.settle()

    async def deny(
        self,
        requester: Requester,
        patient_id: int | None,
        *,
        action: str,
        resources: str | None = None,
    ) -> NoReturn:
        """Refuse, audited: one answer for a forbidden patient and for an unknown one."""
        denied = AccessRefused(requester, patient_id, action=action, resources=resources)
        await self.audit_denied(denied)
        raise denied

    async def audit_denied(self, denied: AccessRefused) -> None:
        # An unknown patient is audited without one; the answer is the same.
        patient_id = denied.refused_patient_id
        await self.audit_refusal(
            denied.requester,
            patient_id,
            action=denied.action,
            resource=denied.resources,
            reason="no_reason" if patient_id is not None else "no_such_patient",
        )
        denied.audited = True

    async def _decide(
        self,
        session: AsyncSession,
        requester: Requester,
        patient_id: int,
        emergency_reason: str | None,
    ) -> tuple[bool, str | None]:
        """(the patient exists, the reason or None), read in ``session``."""
        patient = await self.directory.patient(session, patient_id)
        if patient is None or patient.merged_into_id is not None:
            return False, None
        if requester.role == "patient":
            return True, "self" if requester.patient_id == patient_id else None
        institution_id = requester.institution_id
        if requester.role not in CARE_ROLES or institution_id is None:
            return True, None
        consent = await session.scalar(
            select(Consent).where(
                Consent.patient_id == patient_id, Consent.institution_id == institution_id
            )
        )
        revoked = consent is not None and not consent.granted
        if not revoked:
            if await self.has_care(session, patient_id, institution_id):
                return True, "care_relationship"
            window = await self.open_window_source(session, patient_id, institution_id)
            if window is not None:
                return True, window
            if consent is not None and consent.granted:
                return True, "consent"
        if emergency_reason is not None:
            if not emergency_reason.strip():
                raise ValidationFailed.field(
                    "emergency_reason", "an emergency access needs a reason"
                )
            if requester.role in EMERGENCY_ROLES:
                return True, "emergency"
        return True, None


class AccessDecisions:
    """Access decisions taken inside one write transaction (:meth:`AccessService.decisions`).

    A granted decision's entry rides in the caller's transaction: it is queued there and
    chained with the write's own entries just before commit. A refusal cannot ride in a
    transaction that rolls back, and neither can a granted entry whose write then
    fails (the checks found something, a key was reused): :meth:`settle` appends those
    alone after the transaction, so every decision is in the log, once.
    """

    def __init__(self, access: AccessService) -> None:
        self.access = access
        self._uncommitted: list[dict[str, Any]] = []
        self._refused: list[AccessRefused] = []

    async def check(
        self,
        tx: Tx,
        requester: Requester,
        patient_id: int,
        *,
        action: str,
        resources: str | None = None,
        emergency_reason: str | None = None,
    ) -> str:
        """:meth:`AccessService.check_patient_access`, decided and audited inside ``tx``."""
        exists, reason = await self.access._decide(
            tx.session, requester, patient_id, emergency_reason
        )
        if reason is None:
            refused = AccessRefused(
                requester, patient_id if exists else None, action=action, resources=resources
            )
            self._refused.append(refused)
            raise refused
        entry = granted_entry(
            requester,
            patient_id,
            reason,
            action=action,
            resources=resources,
            emergency_reason=emergency_reason,
        )
        await self.access.audit.record(tx.session, ACCESS, **entry)
        self._uncommitted.append(entry)

        async def committed() -> None:
            self._uncommitted.remove(entry)

        tx.on_commit(committed)
        return reason

    async def settle(self) -> None:
        """Audit, each in a short transaction, what the caller's transaction did not keep."""
        entries, self._uncommitted = self._uncommitted, []
        for entry in entries:
            await self.access.audit.record_alone(ACCESS, **entry)
        refusals, self._refused = self._refused, []
        for refused in refusals:
            if not refused.audited:
                await self.access.audit_denied(refused)
