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

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar, cast

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.access.care import AccessWindows, CareRelationships, care_match, window_match
from server.access.consent import Consents, RevocationListener
from server.access.models import AccessWindow, CareRelationship, Consent
from server.config import Settings
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, UTCDateTime, utcnow
from server.core.errors import Forbidden, ValidationFailed
from server.core.roles import CARE_ROLES, EMERGENCY_ROLES
from server.identity.directory import Directory


def _reasons_query() -> Select[Any]:
    """What decides a clinician's access, in one statement of one row: the institution's
    consent (``granted``, ``excluded``: null when there is none), an active care relationship
    (``care``: null when none), the source of an open window (``window``)."""
    patient: Any = bindparam("patient")
    institution: Any = bindparam("institution")
    consent = (Consent.patient_id == patient) & (Consent.institution_id == institution)
    cutoff = bindparam("cutoff", type_=UTCDateTime)
    now = bindparam("now", type_=UTCDateTime)
    return select(
        select(Consent.granted).where(consent).scalar_subquery().label("granted"),
        select(Consent.excluded_categories).where(consent).scalar_subquery().label("excluded"),
        select(CareRelationship.id)
        .where(care_match(patient, institution, cutoff))
        .limit(1)
        .scalar_subquery()
        .label("care"),
        select(AccessWindow.source)
        .where(window_match(patient, institution, now))
        .limit(1)
        .scalar_subquery()
        .label("window"),
    )


_REASONS = _reasons_query()  # built once: it runs on every read of a record
REASONS = ("self", "care_relationship", "consult", "referral", "consent", "emergency")
ACCESS = "record.access"


T = TypeVar("T")


async def excluded_only(_: AsyncSession, categories: frozenset[str]) -> frozenset[str]:
    """A ``read`` for :meth:`AccessService.read_checked` that reads nothing: the reader's
    excluded categories, for a caller that reads in a session of its own."""
    return categories


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


@dataclass(frozen=True)
class ReadDecision:
    """A read of a patient's record decided inside the reader's session, not yet audited.

    ``excluded`` are the sensitive categories this reader must not see (none for the
    patient and for a break-the-glass access). :meth:`AccessService.settle_read`
    audits it once the session is over (and refuses when ``reason`` is None).
    """

    requester: Requester
    patient_id: int
    exists: bool
    reason: str | None
    excluded: frozenset[str]
    action: str
    resources: str | None
    emergency_reason: str | None


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
        reason, _ = await self.read_checked(
            requester,
            patient_id,
            excluded_only,
            action=action,
            resources=resources,
            emergency_reason=emergency_reason,
        )
        return reason

    async def read_checked(
        self,
        requester: Requester,
        patient_id: int,
        read: Callable[[AsyncSession, frozenset[str]], Awaitable[T]],
        *,
        action: str,
        resources: str | None = None,
        emergency_reason: str | None = None,
    ) -> tuple[str, T]:
        """Decide the access and ``read(session, excluded categories)`` what it allows, in
        one read session; then audit the decision in a short transaction of its own, so the
        audit head is never held while the record is read. Refused: nothing is read, the
        refusal is audited and raised. A decision is audited even when the read fails."""
        decision: ReadDecision | None = None
        try:
            async with self.db.read() as session:
                decision = await self.decide_read(
                    session,
                    requester,
                    patient_id,
                    action=action,
                    resources=resources,
                    emergency_reason=emergency_reason,
                )
                found = (
                    await read(session, decision.excluded) if decision.reason is not None else None
                )
        finally:
            if decision is not None:
                await self.settle_read(decision)
        assert decision.reason is not None  # settle_read raised otherwise
        return decision.reason, cast(T, found)

    async def decide_read(
        self,
        session: AsyncSession,
        requester: Requester,
        patient_id: int,
        *,
        action: str,
        resources: str | None = None,
        emergency_reason: str | None = None,
    ) -> ReadDecision:
        """The access decision and the reader's excluded categories, read in the caller's
        session (one read: the consent row that decides is the one that excludes). Nothing
        is audited yet: the caller passes the decision to :meth:`settle_read` once its read
        session is over, and reads nothing of the patient when ``reason`` is None."""
        exists, reason, consent = await self._decide_with(
            session, requester, patient_id, emergency_reason
        )
        excluded = (
            frozenset(consent.excluded or ())
            if consent is not None and reason not in (None, "self", "emergency")
            else frozenset()
        )
        return ReadDecision(
            requester, patient_id, exists, reason, excluded, action, resources, emergency_reason
        )

    async def settle_read(self, decision: ReadDecision) -> str:
        """Audit a decision of :meth:`decide_read` in a short transaction of its own (the
        audit head is never held while the record is read); refuse when it was refused."""
        requester, patient_id = decision.requester, decision.patient_id
        if decision.reason is None:
            await self.deny(
                requester,
                patient_id if decision.exists else None,
                action=decision.action,
                resources=decision.resources,
            )
        entry = granted_entry(
            requester,
            patient_id,
            decision.reason,
            action=decision.action,
            resources=decision.resources,
            emergency_reason=decision.emergency_reason,
        )
        await self.audit.record_alone(ACCESS, **entry)
        return decision.reason

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
        exists, reason, _ = await self._decide_with(
            session, requester, patient_id, emergency_reason
        )
        return exists, reason

    async def _decide_with(
        self,
        session: AsyncSession,
        requester: Requester,
        patient_id: int,
        emergency_reason: str | None,
    ) -> tuple[bool, str | None, Any]:
        """:meth:`_decide`, with the reader's institution's consent it read (if any: a row of
        ``granted`` and ``excluded``), all the reasons read in one statement."""
        if await self.directory.patient_standing(session, patient_id) != 0:  # none, or merged
            return False, None, None
        if requester.role == "patient":
            return True, "self" if requester.patient_id == patient_id else None, None
        institution_id = requester.institution_id
        if requester.role not in CARE_ROLES or institution_id is None:
            return True, None, None
        now = utcnow()
        found = (
            await session.execute(
                _REASONS,
                {
                    "patient": patient_id,
                    "institution": institution_id,
                    "cutoff": now - self.care_lifetime,
                    "now": now,
                },
            )
        ).one()
        consent = None if found.granted is None else found
        if found.granted is not False:  # not revoked: in this order
            if found.care is not None:
                return True, "care_relationship", consent
            if found.window is not None:
                return True, str(found.window), consent
            if found.granted:
                return True, "consent", consent
        if emergency_reason is not None:
            if not emergency_reason.strip():
                raise ValidationFailed.field(
                    "emergency_reason", "an emergency access needs a reason"
                )
            if requester.role in EMERGENCY_ROLES:
                return True, "emergency", consent
        return True, None, consent


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
