"""Earning a care relationship: the patient present at the desk, or agreeing in the app.

Knowing a resident's ID number and name proves nothing (both are printed on every
form), so registering a resident gives an institution no reading of the record.
A care relationship (``server.access``) is earned by:

- **presence**: the patient's app shows a short-lived 一号通 code
  (``POST /api/v1/me/presence-code``; digits and a QR payload); the desk scans or
  types it with the resident ID (``POST /api/v1/care/presence``). A code works once,
  for ``PRESENCE_CODE_TTL_SECONDS``; five wrong tries burn it. A wrong code, an
  expired one and an unknown resident get the same answer;
- **agreement**: the desk asks (``POST /api/v1/patients/{id}/care-requests``), the
  patient approves or declines in the app; a request lapses after
  ``CARE_REQUEST_TTL_HOURS``;
- real encounters recorded by other capabilities (a visit the patient booked, a
  referral's arrival).

Break-the-glass reads (``server.access``, reason ``emergency``) earn no
relationship; each is listed for review by the clinician's institution
administrator or a platform administrator (``GET /api/v1/emergency-accesses``),
who records a verdict; the review reaches the patient's access log.

The patient sees every active relationship, its reason and when it ends
(``GET /api/v1/patients/{id}/care-relationships``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.access import AccessService
from server.config import Settings
from server.core.audit import AuditEvent, AuditLog
from server.core.auth import Requester
from server.core.db import Base, Database, UTCDateTime, utcnow
from server.core.errors import Forbidden, NotFound, ValidationFailed
from server.core.roles import DESK_ROLES
from server.identity import schemas
from server.identity.models import Institution, Patient, User
from server.identity.service import checked_resident_id
from server.inbox.service import InboxService

# Who may record a patient's presence or ask for a link: an institution's clinicians and
# its administrator at the desk. Pharmacies never earn a care relationship (pharmacists
# see the prescriptions sent to them, not the record).
CODE_DIGITS = 8
MAX_CODE_ATTEMPTS = 5
QR_PREFIX = "yihao-presence"


class PresenceCode(Base):
    """The one live presence code of a patient (only its hash is kept)."""

    __tablename__ = "presence_codes"

    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class CareRequest(Base):
    """An institution's request to care for the patient, waiting for the patient's answer."""

    __tablename__ = "care_requests"
    __table_args__ = (Index("ix_care_requests_patient_status", "patient_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    requested_by: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    note: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EmergencyReview(Base):
    """An administrator's verdict on one break-the-glass read (the audit entry's seq)."""

    __tablename__ = "emergency_reviews"

    audit_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    verdict: Mapped[str] = mapped_column(String(16), nullable=False)
    note: Mapped[str] = mapped_column(String(500), nullable=False)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


def _code_hash(patient_id: int, code: str) -> str:
    return hashlib.sha256(f"{patient_id}:{code}".encode()).hexdigest()


def _no_match() -> ValidationFailed:
    # One answer for a wrong code, an expired or burnt one and an unknown resident.
    return ValidationFailed.field(
        "code", "does not match a live presence code of this resident", code="presence_mismatch"
    )


class CareService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        access: AccessService,
        inbox: InboxService,
    ) -> None:
        self.db = db
        self.audit = audit
        self.access = access
        self.inbox = inbox
        self.code_ttl = timedelta(seconds=settings.presence_code_ttl_seconds)
        self.request_ttl = timedelta(hours=settings.care_request_ttl_hours)

    # --- presence -------------------------------------------------------------

    async def issue_presence_code(self, requester: Requester) -> schemas.PresenceCodeOut:
        """A new code for the signed-in patient; the previous one stops working."""
        if requester.role != "patient" or requester.patient_id is None:
            raise Forbidden("a presence code comes from the patient's own app")
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        expires = utcnow() + self.code_ttl
        async with self.db.transaction() as tx:
            patient = await tx.session.get(Patient, requester.patient_id)
            assert patient is not None
            await tx.session.execute(
                delete(PresenceCode).where(PresenceCode.patient_id == patient.id)
            )
            tx.session.add(
                PresenceCode(
                    patient_id=patient.id,
                    code_hash=_code_hash(patient.id, code),
                    expires_at=expires,
                    attempts=0,
                )
            )
            await self.audit.record(
                tx.session, "care.presence_code", actor=requester, patient_id=patient.id
            )
            resident_id = patient.resident_id
        return schemas.PresenceCodeOut(
            code=code, qr=f"{QR_PREFIX}:{resident_id}:{code}", expires_at=expires
        )

    async def confirm_presence(
        self, requester: Requester, data: schemas.PresenceConfirm
    ) -> schemas.CareRelationshipOut:
        """The desk read the patient's code: the institution now cares for the patient."""
        institution_id = await self._check_desk(requester)
        number = checked_resident_id(data.resident_id).number
        now = utcnow()
        async with self.db.transaction() as tx:
            patient = await tx.session.scalar(select(Patient).where(Patient.resident_id == number))
            held = None if patient is None else await tx.session.get(PresenceCode, patient.id)
            if patient is None or held is None or held.expires_at <= now:
                raise _no_match()
            if not hmac.compare_digest(held.code_hash, _code_hash(patient.id, data.code)):
                held.attempts += 1
                if held.attempts >= MAX_CODE_ATTEMPTS:
                    await tx.session.delete(held)
                await self.audit.record(
                    tx.session,
                    "care.presence",
                    actor=requester,
                    outcome="denied",
                    patient_id=patient.id,
                    reason="code_mismatch",
                    details={"institution_id": institution_id},
                )
                # Commit the count (the refusal is raised after the transaction).
                failed = True
            else:
                failed = False
                await tx.session.delete(held)
                await self.access.record_encounter(
                    tx, patient_id=patient.id, institution_id=institution_id, reason="presence"
                )
                await self.audit.record(
                    tx.session,
                    "care.presence",
                    actor=requester,
                    patient_id=patient.id,
                    resource=f"Patient/{patient.id}",
                    reason="presence",
                    details={"institution_id": institution_id},
                )
            patient_id = patient.id
        if failed:
            error = _no_match()
            error.audited = True
            raise error
        return await self._relationship(patient_id, institution_id)

    # --- link requests ----------------------------------------------------------

    async def request_care(
        self, requester: Requester, patient_id: int, data: schemas.CareRequestCreate
    ) -> schemas.CareRequestOut:
        institution_id = await self._check_desk(requester)
        now = utcnow()
        async with self.db.transaction() as tx:
            patient = await tx.session.get(Patient, patient_id)
            if patient is None or patient.merged_into_id is not None:
                raise NotFound(f"no patient {patient_id}", code="patient_not_found")
            # One open request per institution and patient: asking again renews it.
            await tx.session.execute(
                update(CareRequest)
                .where(
                    CareRequest.patient_id == patient_id,
                    CareRequest.institution_id == institution_id,
                    CareRequest.status == "pending",
                )
                .values(status="superseded", decided_at=now)
            )
            request = CareRequest(
                patient_id=patient_id,
                institution_id=institution_id,
                requested_by=requester.user_id,
                note=data.note,
                status="pending",
                created_at=now,
                expires_at=now + self.request_ttl,
            )
            tx.session.add(request)
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "care.request",
                actor=requester,
                patient_id=patient_id,
                resource=f"CareRequest/{request.id}",
                details={"institution_id": institution_id},
            )
            name = await tx.session.scalar(
                select(Institution.name).where(Institution.id == institution_id)
            )
            await self.inbox.notify(
                tx,
                kind="care.request",
                title=f"{name} asks to see your health record",
                patients=[patient_id],
                resource=f"CareRequest/{request.id}",
                data={"care_request_id": request.id, "institution_id": institution_id},
            )
            return await self._request_out(tx.session, request)

    async def list_requests(self, requester: Requester, patient_id: int) -> schemas.CareRequestList:
        self._check_self(requester, patient_id)
        async with self.db.read() as session:
            rows = await session.scalars(
                select(CareRequest)
                .where(CareRequest.patient_id == patient_id, CareRequest.status != "superseded")
                .order_by(CareRequest.id.desc())
                .limit(100)
            )
            return schemas.CareRequestList(
                items=[await self._request_out(session, r) for r in rows]
            )

    async def decide(
        self, requester: Requester, request_id: int, data: schemas.CareDecision
    ) -> schemas.CareRequestOut:
        """The patient's answer; approving starts the care relationship."""
        now = utcnow()
        async with self.db.transaction() as tx:
            request = await tx.session.get(CareRequest, request_id)
            # Someone else's request and no request at all answer alike.
            if (
                request is None
                or requester.role != "patient"
                or request.patient_id != requester.patient_id
            ):
                raise NotFound(f"no care request {request_id}", code="care_request_not_found")
            status = self._status(request, now)
            if status != "pending":
                raise ValidationFailed.field(
                    "approve", f"the request is {status}", code="care_request_closed"
                )
            request.status = "approved" if data.approve else "declined"
            request.decided_at = now
            if data.approve:
                await self.access.record_encounter(
                    tx,
                    patient_id=request.patient_id,
                    institution_id=request.institution_id,
                    reason="patient_approved",
                )
            await self.audit.record(
                tx.session,
                "care.approve" if data.approve else "care.decline",
                actor=requester,
                patient_id=request.patient_id,
                resource=f"CareRequest/{request.id}",
                details={"institution_id": request.institution_id},
            )
            await self.inbox.notify(
                tx,
                kind="care.decision",
                title="The patient " + ("approved" if data.approve else "declined") + " access",
                users=[request.requested_by],
                resource=f"CareRequest/{request.id}",
                data={"care_request_id": request.id, "approved": data.approve},
            )
            return await self._request_out(tx.session, request)

    # --- what the patient sees ---------------------------------------------------

    async def list_relationships(
        self, requester: Requester, patient_id: int
    ) -> schemas.CareRelationshipList:
        self._check_self(requester, patient_id)
        async with self.db.read() as session:
            states = await self.access.care_relationships(session, patient_id)
            names = await self._institutions(session, [s.institution_id for s in states])
        return schemas.CareRelationshipList(
            items=[
                schemas.CareRelationshipOut(
                    institution=names[s.institution_id],
                    reason=s.reason,
                    since=s.since,
                    last_encounter_at=s.last_encounter_at,
                    ends_at=s.ends_at,
                )
                for s in states
            ]
        )

    # --- break-the-glass review ----------------------------------------------------

    async def list_emergencies(
        self, requester: Requester, query: schemas.EmergencyQuery
    ) -> schemas.EmergencyAccessList:
        """Break-the-glass reads for review: an institution's own clinicians', or all."""
        institution_id = self._check_reviewer(requester)
        return schemas.EmergencyAccessList(
            items=await self._emergencies(institution_id, query.status, query.limit)
        )

    async def _emergencies(
        self, institution_id: int | None, status: str, limit: int, seq: int | None = None
    ) -> list[schemas.EmergencyAccessOut]:
        stmt = (
            select(AuditEvent, User, EmergencyReview)
            .join(User, User.id == AuditEvent.actor_user_id)
            .outerjoin(EmergencyReview, EmergencyReview.audit_seq == AuditEvent.seq)
            .where(
                AuditEvent.action == "record.access",
                AuditEvent.reason == "emergency",
                AuditEvent.outcome == "success",
            )
        )
        if institution_id is not None:
            stmt = stmt.where(User.institution_id == institution_id)
        if seq is not None:
            stmt = stmt.where(AuditEvent.seq == seq)
        if status == "pending":
            stmt = stmt.where(EmergencyReview.audit_seq.is_(None))
        elif status == "reviewed":
            stmt = stmt.where(EmergencyReview.audit_seq.is_not(None))
        async with self.db.read() as session:
            rows = (await session.execute(stmt.order_by(AuditEvent.seq.desc()).limit(limit))).all()
            names = await self._institutions(
                session, [u.institution_id for _, u, _ in rows if u.institution_id]
            )
            reviewer_ids = [r.reviewer_id for _, _, r in rows if r is not None]
            reviewers: dict[int, str | None] = {
                uid: name
                for uid, name in await session.execute(
                    select(User.id, User.name).where(User.id.in_(reviewer_ids))
                )
            }
        return [
            schemas.EmergencyAccessOut(
                seq=event.seq,
                at=event.at,
                user_id=user.id,
                user_name=user.name,
                role=user.role,
                institution=names.get(user.institution_id or 0),
                patient_id=event.patient_id,
                statement=str(event.details.get("statement") or ""),
                resources=event.resource,
                review=None
                if review is None
                else schemas.EmergencyReviewOut(
                    verdict=review.verdict,
                    note=review.note,
                    reviewer=reviewers.get(review.reviewer_id),
                    reviewed_at=review.reviewed_at,
                ),
            )
            for event, user, review in rows
        ]

    async def review_emergency(
        self, requester: Requester, seq: int, data: schemas.EmergencyReviewSet
    ) -> schemas.EmergencyAccessOut:
        institution_id = self._check_reviewer(requester)
        async with self.db.transaction() as tx:
            found = (
                await tx.session.execute(
                    select(AuditEvent, User)
                    .join(User, User.id == AuditEvent.actor_user_id)
                    .where(
                        AuditEvent.seq == seq,
                        AuditEvent.action == "record.access",
                        AuditEvent.reason == "emergency",
                        AuditEvent.outcome == "success",
                    )
                )
            ).first()
            if found is None or (
                institution_id is not None and found[1].institution_id != institution_id
            ):
                raise NotFound(f"no emergency access {seq}", code="emergency_access_not_found")
            if await tx.session.get(EmergencyReview, seq) is not None:
                raise ValidationFailed.field(
                    "verdict", "this access was reviewed already", code="already_reviewed"
                )
            tx.session.add(
                EmergencyReview(
                    audit_seq=seq,
                    verdict=data.verdict,
                    note=data.note,
                    reviewer_id=requester.user_id,
                    reviewed_at=utcnow(),
                )
            )
            await self.audit.record(
                tx.session,
                "emergency.review",
                actor=requester,
                patient_id=found[0].patient_id,
                resource=f"AuditEvent/{seq}",
                reason=data.verdict,
                details={"note": data.note, "clinician_id": found[1].id},
            )
        return (await self._emergencies(institution_id, "reviewed", 1, seq=seq))[0]

    # --- helpers -------------------------------------------------------------------

    @staticmethod
    def _check_reviewer(requester: Requester) -> int | None:
        """The institution whose clinicians' emergencies the reviewer sees (None: all)."""
        if requester.role == "platform_admin":
            return None
        if requester.role == "institution_admin" and requester.institution_id is not None:
            return requester.institution_id
        raise Forbidden("institution and platform administrators review emergency access")

    async def _check_desk(self, requester: Requester) -> int:
        if requester.role not in DESK_ROLES or requester.institution_id is None:
            raise Forbidden(
                "the clinicians and the administrator of a care institution do this at the desk"
            )
        async with self.db.read() as session:
            kind = await session.scalar(
                select(Institution.kind).where(Institution.id == requester.institution_id)
            )
        if kind == "pharmacy":
            raise Forbidden("pharmacies see prescriptions, not the record")
        return requester.institution_id

    @staticmethod
    def _check_self(requester: Requester, patient_id: int) -> None:
        if requester.role != "patient" or requester.patient_id != patient_id:
            raise Forbidden("only the patient sees this")

    @staticmethod
    def _status(request: CareRequest, now: datetime) -> str:
        if request.status == "pending" and request.expires_at <= now:
            return "expired"
        return request.status

    async def _relationship(
        self, patient_id: int, institution_id: int
    ) -> schemas.CareRelationshipOut:
        async with self.db.read() as session:
            states = await self.access.care_relationships(session, patient_id)
            names = await self._institutions(session, [institution_id])
        state = next(s for s in states if s.institution_id == institution_id)
        return schemas.CareRelationshipOut(
            institution=names[institution_id],
            reason=state.reason,
            since=state.since,
            last_encounter_at=state.last_encounter_at,
            ends_at=state.ends_at,
            patient_id=patient_id,
        )

    async def _request_out(
        self, session: AsyncSession, request: CareRequest
    ) -> schemas.CareRequestOut:
        names = await self._institutions(session, [request.institution_id])
        by = await session.scalar(select(User.name).where(User.id == request.requested_by))
        return schemas.CareRequestOut(
            id=request.id,
            patient_id=request.patient_id,
            institution=names[request.institution_id],
            requested_by=by,
            note=request.note,
            status=self._status(request, utcnow()),
            created_at=request.created_at,
            expires_at=request.expires_at,
            decided_at=request.decided_at,
        )

    @staticmethod
    async def _institutions(
        session: AsyncSession, ids: list[int]
    ) -> dict[int, schemas.InstitutionRef]:
        rows = await session.scalars(select(Institution).where(Institution.id.in_(ids)))
        return {
            i.id: schemas.InstitutionRef(id=i.id, code=i.code, name=i.name, kind=i.kind)
            for i in rows
        }
