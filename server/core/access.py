"""Who may see a patient's record, and why: deny by default, every decision audited.

A request for a patient's data is allowed only for a reason the server can
check, tried in this order:

- ``self``: the patient reading their own record;
- ``care_relationship``: a clinician (specialist, gp, nurse) of an institution
  that has *earned* a care relationship: the patient was present at its desk
  (a short-lived code from the patient's app), approved its link request in
  the app, booked a visit there, or arrived there on a referral. The
  relationship ends ``CARE_RELATIONSHIP_DAYS`` after the last such encounter.
  Registering a resident, knowing their ID number or pushing data about them
  earns nothing;
- ``consult`` / ``referral``: a clinician of an institution with an open,
  time-boxed window on the patient (opened by the consult or referral);
- ``consent``: the patient granted sharing with the clinician's institution;
- ``emergency``: "break the glass" with a mandatory reason, flagged for review.

Pharmacists see the facts of the prescriptions sent to them, never the record;
administrators manage people and schedules, never clinical content.
A patient's explicit revocation for an institution removes every reason but
``self`` and ``emergency`` for it, from the next request on. Consent rows also
carry the sensitive categories the patient excluded; readers other than the
patient see the record without them (:meth:`AccessService.excluded_categories`).
Every decision — allowed or denied — is written to the audit log with who,
which patient, what, the reason and the client address. An unknown patient and
a refused one get the same answer, so ids cannot be probed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from server.config import Settings
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Base, Database, Tx, UTCDateTime, utcnow
from server.core.errors import Forbidden, ValidationFailed
from server.core.roles import CARE_ROLES, EMERGENCY_ROLES
from server.identity.models import Patient

# Roles that read clinical records for care. Pharmacists see the prescriptions sent
# to them (the prescriptions capability), administrators manage the network; neither
# reads patients' records.
# The encounters that start or renew a care relationship.
ENCOUNTERS = ("presence", "patient_approved", "appointment", "referral", "merged", "demo")
SENSITIVE_CATEGORIES = ("mental_health", "reproductive_health", "hiv", "substance_use", "genetic")
REASONS = ("self", "care_relationship", "consult", "referral", "consent", "emergency")


class CareRelationship(Base):
    """The institution met the patient (see ``ENCOUNTERS``); active until it lapses."""

    __tablename__ = "care_relationships"
    __table_args__ = (UniqueConstraint("patient_id", "institution_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False, index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_encounter_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class AccessWindow(Base):
    """A time-boxed view of a patient's record for an institution (consult, referral)."""

    __tablename__ = "access_windows"
    __table_args__ = (
        Index("ix_access_windows_patient_institution", "patient_id", "institution_id"),
        Index("ix_access_windows_source", "source", "source_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    source_id: Mapped[int] = mapped_column(Integer, nullable=False)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Consent(Base):
    """The patient's decision about sharing with one institution."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("patient_id", "institution_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False, index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    granted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    excluded_categories: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


@dataclass(frozen=True)
class ConsentState:
    institution_id: int
    granted: bool
    excluded_categories: list[str]
    updated_at: datetime


def _insert(tx: Tx) -> Any:
    return pg_insert if tx.session.get_bind().dialect.name == "postgresql" else sqlite_insert


@dataclass(frozen=True)
class CareState:
    institution_id: int
    reason: str
    since: datetime
    last_encounter_at: datetime
    ends_at: datetime


class AccessService:
    def __init__(self, db: Database, audit: AuditLog, settings: Settings) -> None:
        self.db = db
        self.audit = audit
        self.care_lifetime = timedelta(days=settings.care_relationship_days)
        # Called (patient, institution) after a patient revoked sharing with an institution.
        self.revocation_listeners: list[Callable[[int, int], Awaitable[None]]] = []

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
        exists, reason = await self._decide(requester, patient_id, emergency_reason)
        details: dict[str, Any] = {"action": action}
        if requester.institution_id is not None:
            details["institution_id"] = requester.institution_id
        if reason is None:
            await self.deny(
                requester, patient_id if exists else None, action=action, resources=resources
            )
        if reason == "emergency":
            details.update(break_the_glass=True, review="pending", statement=emergency_reason)
        await self.audit.record_alone(
            "record.access",
            actor=requester,
            patient_id=patient_id,
            resource=resources,
            reason=reason,
            details=details,
        )
        return reason

    async def deny(
        self,
        requester: Requester,
        patient_id: int | None,
        *,
        action: str,
        resources: str | None = None,
    ) -> NoReturn:
        """Refuse, audited: one answer for a forbidden patient and for an unknown one."""
        # An unknown patient is audited without one; the answer is the same.
        await self._audit_refusal(
            requester,
            patient_id,
            action=action,
            resource=resources,
            reason="no_reason" if patient_id is not None else "no_such_patient",
        )
        denied = Forbidden(
            "no reason to access this patient's record (no care relationship, "
            "consult, referral or consent), or no such patient",
            code="record_access_denied",
        )
        denied.audited = True
        raise denied

    async def _audit_refusal(
        self,
        requester: Requester,
        patient_id: int | None,
        *,
        action: str,
        resource: str | None,
        reason: str,
    ) -> None:
        """A refused read of patient data, in the patient's access log (when there is one)."""
        details: dict[str, Any] = {"action": action}
        if requester.institution_id is not None:
            details["institution_id"] = requester.institution_id
        await self.audit.record_alone(
            "record.access",
            actor=requester,
            outcome="denied",
            patient_id=patient_id,
            resource=resource,
            reason=reason,
            details=details,
        )

    async def _decide(
        self, requester: Requester, patient_id: int, emergency_reason: str | None
    ) -> tuple[bool, str | None]:
        """(the patient exists, the reason or None)."""
        async with self.db.read() as session:
            patient = await session.get(Patient, patient_id)
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
                now = utcnow()
                window = await session.scalar(
                    select(AccessWindow.source)
                    .where(
                        AccessWindow.patient_id == patient_id,
                        AccessWindow.institution_id == institution_id,
                        AccessWindow.closed_at.is_(None),
                        AccessWindow.opened_at <= now,
                        or_(AccessWindow.until.is_(None), AccessWindow.until > now),
                    )
                    .limit(1)
                )
                if window is not None:
                    return True, str(window)
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

    async def excluded_categories(self, requester: Requester, patient_id: int) -> frozenset[str]:
        """Categories this reader must not see (the patient always sees everything)."""
        if requester.role == "patient" or requester.institution_id is None:
            return frozenset()
        async with self.db.read() as session:
            excluded = await session.scalar(
                select(Consent.excluded_categories).where(
                    Consent.patient_id == patient_id,
                    Consent.institution_id == requester.institution_id,
                )
            )
        return frozenset(excluded or ())

    async def has_care(self, session: Any, patient_id: int, institution_id: int) -> bool:
        """An active care relationship, checked inside a caller's session (SQLite: one
        writer, so no second connection)."""
        found = await session.scalar(
            select(CareRelationship.id).where(
                CareRelationship.patient_id == patient_id,
                CareRelationship.institution_id == institution_id,
                CareRelationship.last_encounter_at > utcnow() - self.care_lifetime,
            )
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

    async def care_relationships(self, session: Any, patient_id: int) -> list[CareState]:
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

    # --- consent ------------------------------------------------------------

    async def set_consent(
        self,
        requester: Requester,
        patient_id: int,
        institution_id: int,
        *,
        granted: bool,
        excluded_categories: list[str],
    ) -> ConsentState:
        """The patient's own decision; effective from the next request."""
        if requester.role != "patient" or requester.patient_id != patient_id:
            raise Forbidden("only the patient decides about sharing their record")
        now = utcnow()
        async with self.db.transaction() as tx:
            consent = await tx.session.scalar(
                select(Consent).where(
                    Consent.patient_id == patient_id, Consent.institution_id == institution_id
                )
            )
            if consent is None:
                consent = Consent(patient_id=patient_id, institution_id=institution_id)
                tx.session.add(consent)
            consent.granted = granted
            consent.excluded_categories = sorted(set(excluded_categories))
            consent.updated_at = now
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "consent.grant" if granted else "consent.revoke",
                actor=requester,
                patient_id=patient_id,
                resource=f"Consent/{consent.id}",
                details={
                    "institution_id": institution_id,
                    "excluded_categories": consent.excluded_categories,
                },
            )
            state = ConsentState(institution_id, granted, consent.excluded_categories, now)
        if not granted:  # after commit: live views of the patient close for that institution
            for listener in self.revocation_listeners:
                await listener(patient_id, institution_id)
        return state

    async def list_consents(self, patient_id: int) -> list[ConsentState]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Consent).where(Consent.patient_id == patient_id).order_by(Consent.id)
            )
            return [
                ConsentState(c.institution_id, c.granted, list(c.excluded_categories), c.updated_at)
                for c in rows
            ]

    # --- content policy: the one check for record content that travels ----------------
    #
    # Record content leaves the record service in many shapes: consult snapshots,
    # chat attachments, consult and referral documents. Each of them asks this one
    # question, so an exclusion or a revocation holds wherever the content goes.

    async def content_policy(self, reader: Requester | int, patient_id: int) -> ContentPolicy:
        """What record content about the patient may reach a reader (or an institution, by id).

        The patient always sees everything; a reader without an institution has no
        consent row to honour (their role decides elsewhere whether they read at all).
        """
        return (await self.content_policies(reader, [patient_id]))[patient_id]

    async def content_policies(
        self, reader: Requester | int, patient_ids: Sequence[int]
    ) -> dict[int, ContentPolicy]:
        """:meth:`content_policy` for several patients in one query (lists of consults, …)."""
        wanted = set(patient_ids)
        if isinstance(reader, Requester):
            if reader.role == "patient":
                return {p: OPEN if reader.patient_id == p else CLOSED for p in wanted}
            if reader.institution_id is None:
                return dict.fromkeys(wanted, OPEN)
            institution_id = reader.institution_id
        else:
            institution_id = reader
        policies = dict.fromkeys(wanted, OPEN)
        if not wanted:
            return policies
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Consent).where(
                    Consent.patient_id.in_(sorted(wanted)), Consent.institution_id == institution_id
                )
            )
            for consent in rows:
                policies[consent.patient_id] = ContentPolicy(
                    revoked=not consent.granted, excluded=frozenset(consent.excluded_categories)
                )
        return policies

    async def check_not_revoked(
        self, requester: Requester, patient_id: int, *, action: str, resource: str
    ) -> ContentPolicy:
        """The reader's policy; a revoked institution is refused, audited with the patient."""
        policy = await self.content_policy(requester, patient_id)
        if policy.revoked:
            raise await self.record_refusal(requester, patient_id, action=action, resource=resource)
        return policy

    async def record_refusal(
        self, requester: Requester, patient_id: int, *, action: str, resource: str
    ) -> Forbidden:
        """Audit (into the patient's access log) that revoked content was kept from a reader."""
        await self._audit_refusal(
            requester, patient_id, action=action, resource=resource, reason="consent_revoked"
        )
        refused = Forbidden(
            "the patient has revoked sharing with your institution", code="consent_revoked"
        )
        refused.audited = True
        return refused


@dataclass(frozen=True)
class ContentPolicy:
    """The patient's consent as it applies to one reader: revoked, or categories left out."""

    revoked: bool
    excluded: frozenset[str]

    def allows(self, sensitivity: str | None) -> bool:
        return not self.revoked and (sensitivity is None or sensitivity not in self.excluded)

    def stricter(self, other: ContentPolicy) -> ContentPolicy:
        """Content shown to two institutions at once (a consult's chat) obeys both."""
        return ContentPolicy(self.revoked or other.revoked, self.excluded | other.excluded)


OPEN = ContentPolicy(revoked=False, excluded=frozenset())
CLOSED = ContentPolicy(revoked=True, excluded=frozenset())


def withheld_marker(count: int) -> dict[str, Any] | None:
    """What a payload says about items left out: how many, never of which category."""
    return {"count": count, "reason": "consent"} if count else None


T = TypeVar("T")


def withhold(
    items: Sequence[T], policy: ContentPolicy, sensitivity_of: Callable[[T], str | None]
) -> tuple[list[T], int]:
    """The items the policy allows, and how many it left out."""
    kept = [item for item in items if policy.allows(sensitivity_of(item))]
    return kept, len(items) - len(kept)
