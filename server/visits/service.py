"""Follow-up video visits (互联网复诊): the rules of 互联网诊疗管理办法, the life cycle, the record.

A patient asks a doctor for a follow-up of a condition diagnosed in person; the doctor
accepts (which opens a record-access window for the doctor's institution, source
``visit``, closed when the visit ends) or declines; at the time the doctor, authenticated,
opens the visit's room — a consult room of kind ``followup``
(:mod:`server.consults.followup`), so the lobby, presence, signaling, chat and recording
consent are the consult room's — and the patient is told (inbox ``visit_ready``); the
doctor admits the patient from the lobby, writes the visit record (an Encounter of class
VR in the patient's record), may link the prescriptions signed for it, and ends it.

The rules, each a problem naming the field:

- follow-up only: ``condition_id`` names a Condition of the patient's record recorded at an
  in-person encounter (``422 not_a_follow_up``);
- real name: the patient account is real-name verified (``403 real_name_required``);
- a child under 6: a guardian present, with an adult's valid resident ID
  (``422 guardian_required``, ``422 invalid_guardian``);
- the doctor authenticated before the visit: a login younger than
  ``VISIT_DOCTOR_AUTH_MINUTES``, or the password / a TOTP code when opening the room
  (``403 doctor_reauth_required``).

Retention: each visit row carries ``record_retain_until`` (15 years) and
``media_retain_until`` (3 years: its room's chat and recordings); nothing purges before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessService
from server.config import Settings
from server.consults import schemas as consult_schemas
from server.consults.service import ConsultsService
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, utcnow
from server.core.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from server.core.events import Events
from server.core.ids import ResidentIdError, parse_resident_id
from server.core.leases import Periodic
from server.core.roles import PRESCRIBER_ROLES, Role
from server.identity.auth_service import AuthService
from server.identity.directory import Directory, InstitutionRef, PatientRef, UserRef
from server.inbox.service import InboxService
from server.prescriptions.record import CHINA, age_on, mask_resident_id, read_conditions
from server.prescriptions.service import PrescriptionService
from server.records.service import RecordsService
from server.visits import schemas
from server.visits.models import Visit
from server.visits.states import (
    GUARDIAN_BELOW_AGE,
    MEDIA_RETENTION_YEARS,
    RECORD_RETENTION_YEARS,
    SECURITY_LABELS,
    SECURITY_SYSTEM,
    VIRTUAL_CLASS,
    VisitStatus,
)
from server.visits.steps import check_doctor, visit_lifecycle

SOURCE = "visit"
ADULT_AGE = 18
# Visits reminded per run of the job (the rest on the next run).
REMINDER_BATCH = 200
# How long a visit's room is open for, once the doctor opens it.
ROOM_HOURS = 4
# A preferred time a little in the past still counts as "now" (the phone's clock).
PAST_GRACE = timedelta(minutes=5)
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


# (tx, visit ids, reason): a visit ended before its service (declined, cancelled).
VisitsCancelled = Callable[[Tx, list[int], str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class VisitFacts:
    """A visit as the payments capability needs it (fees): who, where, its state."""

    id: int
    institution_id: int
    doctor_id: int
    patient_id: int
    status: str


def years_after(at: datetime, years: int) -> datetime:
    try:
        return at.replace(year=at.year + years)
    except ValueError:  # 29 February
        return at.replace(year=at.year + years, day=28)


class VisitsService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        events: Events,
        access: AccessService,
        records: RecordsService,
        directory: Directory,
        auth: AuthService,
        consults: ConsultsService,
        prescriptions: PrescriptionService,
        inbox: InboxService,
        cancelled_listeners: Iterable[VisitsCancelled] = (),
    ) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        self.events = events
        self.access = access
        self.records = records
        self.directory = directory
        self.auth = auth
        self.consults = consults
        self.prescriptions = prescriptions
        self.inbox = inbox
        self.steps = visit_lifecycle(audit)
        # Called in the transaction that declines or cancels a visit (payments refunds its
        # paid order, closes an unpaid one).
        self.cancelled_listeners = tuple(cancelled_listeners)
        # VISIT_DOCTOR_AUTH_MINUTES (an attribute: a test shortens it).
        self.doctor_auth_minutes = settings.visit_doctor_auth_minutes

    # --- for other capabilities (payments) -------------------------------------------------

    async def visit_for_payment(self, session: AsyncSession, visit_id: int) -> VisitFacts:
        """The visit's plain facts for a fee, in the caller's session (``404`` if none)."""
        visit = await session.get(Visit, visit_id)
        if visit is None:
            raise NotFound(f"no visit {visit_id}")
        return VisitFacts(
            id=visit.id,
            institution_id=visit.institution_id,
            doctor_id=visit.doctor_id,
            patient_id=visit.patient_id,
            status=visit.status,
        )

    # --- jobs ------------------------------------------------------------------------------

    async def send_reminders(self) -> int:
        """One ``visit_reminder`` per accepted visit whose time is within the minutes."""
        now = utcnow()
        horizon = now + timedelta(minutes=self.settings.visit_reminder_minutes)
        async with self.db.transaction() as tx:
            due = list(
                await tx.session.scalars(
                    select(Visit)
                    .where(
                        Visit.status == VisitStatus.ACCEPTED,
                        Visit.reminder_sent_at.is_(None),
                        Visit.preferred_at > now,
                        Visit.preferred_at <= horizon,
                    )
                    .order_by(Visit.preferred_at, Visit.id)
                    .limit(REMINDER_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            doctors = await self.directory.users(tx.session, {v.doctor_id for v in due})
            for visit in due:
                visit.reminder_sent_at = now
                doctor = doctors.get(visit.doctor_id)
                assert visit.preferred_at is not None
                await self.inbox.notify(
                    tx,
                    kind="visit_reminder",
                    title=f"您与{doctor.name if doctor else '医生'}的在线复诊即将开始",
                    patients=[visit.patient_id],
                    resource=f"Visit/{visit.id}",
                    data={
                        "visit_id": visit.id,
                        "start": visit.preferred_at.isoformat(),
                        "title_en": "Your online follow-up visit starts soon",
                    },
                )
            return len(due)

    def periodic_jobs(self) -> list[Periodic]:
        interval = self.settings.visit_job_interval_seconds
        if interval <= 0:
            return []

        async def reminders(tick: int) -> None:
            await self.send_reminders()

        return [Periodic("visits.reminders", interval, reminders)]

    async def _cancelled(self, tx: Tx, visit: Visit, reason: str) -> None:
        for listener in self.cancelled_listeners:
            await listener(tx, [visit.id], reason)

    # --- what the patient chooses from ---------------------------------------------------

    async def doctors(self, requester: Requester) -> schemas.VisitDoctorList:
        """The doctors of the network who see patients online (specialists and gps)."""
        async with self.db.read() as session:
            users = await self.directory.prescribers(session)
            institutions = await self.directory.institutions(
                session, [u.institution_id for u in users if u.institution_id is not None]
            )
            departments = await self._department_names(session, users)
        return schemas.VisitDoctorList(
            items=[
                schemas.VisitDoctor(
                    id=u.id,
                    name=u.name,
                    title=u.title,
                    department=departments.get(u.department_id or 0),
                    institution_id=u.institution_id,
                    institution_name=institutions[u.institution_id].name
                    if u.institution_id in institutions
                    else None,
                )
                for u in users
                if u.institution_id is not None
            ]
        )

    async def _department_names(
        self, session: AsyncSession, users: list[UserRef]
    ) -> dict[int, str]:
        names: dict[int, str] = {}
        for department_id in sorted({u.department_id for u in users if u.department_id}):
            department = await self.directory.department(session, department_id)
            if department is not None:
                names[department_id] = department.name
        return names

    async def conditions(self, requester: Requester) -> schemas.FollowUpConditionList:
        """The patient's own diagnoses, each marked whether it was made in person."""
        patient_id = self._patient_of(requester)

        async def read(session: AsyncSession, excluded: frozenset[str]) -> Any:
            found = await self.records.resources_of_types(
                session, patient_id, ("Encounter", "Condition")
            )
            patient = await self.directory.patient(session, patient_id)
            assert patient is not None
            age = age_on(patient.birth_date, datetime.now(CHINA).date())
            return read_conditions(found["Encounter"], found["Condition"]), age

        _, (found, age) = await self.access.read_checked(
            requester, patient_id, read, action="visit.conditions", resources="Condition"
        )
        return schemas.FollowUpConditionList(
            guardian_required=age < GUARDIAN_BELOW_AGE,
            items=[
                schemas.FollowUpCondition(
                    id=c.id,
                    code=min(c.codes) if c.codes else None,
                    display=c.display or "—",
                    in_person=c.offline,
                )
                for c in found
                if c.id is not None
            ],
        )

    @staticmethod
    def _patient_of(requester: Requester) -> int:
        if requester.role != Role.PATIENT or requester.patient_id is None:
            raise Forbidden("follow-up visits are requested by the patient", code="not_a_patient")
        return requester.patient_id

    # --- request ---------------------------------------------------------------------------

    async def request(self, requester: Requester, data: schemas.VisitCreate) -> schemas.VisitOut:
        patient_id = self._patient_of(requester)
        now = utcnow()
        async with self.db.read() as session:
            patient = await self.directory.patient(session, patient_id)
            doctor = await self.directory.user(session, data.doctor_id)
            found = await self.records.resources_of_types(
                session, patient_id, ("Encounter", "Condition")
            )
        assert patient is not None, "a signed-in patient has an account"
        if not patient.real_name_verified:
            raise Forbidden(
                "a follow-up visit online needs a real-name verified account (实名认证)",
                code="real_name_required",
            )
        if (
            doctor is None
            or doctor.role not in PRESCRIBER_ROLES
            or not doctor.active
            or doctor.institution_id is None
        ):
            raise ValidationFailed.field(
                "doctor_id", "not a doctor of the network who sees patients", code="not_a_doctor"
            )
        conditions = read_conditions(found["Encounter"], found["Condition"])
        condition = next((c for c in conditions if c.id == data.condition_id), None)
        if condition is None or not condition.offline:
            raise ValidationFailed.field(
                "condition_id",
                "online visits are follow-ups only: name a diagnosis made at an in-person "
                "visit in your record",
                code="not_a_follow_up",
            )
        guardian = self._check_guardian(patient, data.guardian)
        sensitivity = (
            (await self.records.sensitivities([int(data.condition_id)])).get(int(data.condition_id))
            if data.condition_id.isdigit()
            else None
        )
        if data.preferred_at is not None and data.preferred_at < now - PAST_GRACE:
            raise ValidationFailed.field(
                "preferred_at", "the time has passed", code="preferred_at_past"
            )
        async with self.db.transaction() as tx:
            visit = Visit(
                patient_id=patient_id,
                patient_user_id=requester.user_id,
                doctor_id=doctor.id,
                institution_id=doctor.institution_id,
                condition_id=data.condition_id,
                condition_code=min(condition.codes) if condition.codes else None,
                condition_display=condition.display or data.condition_id,
                condition_sensitivity=sensitivity,
                complaint=data.complaint,
                preferred_at=data.preferred_at,
                guardian=guardian,
                status=VisitStatus.REQUESTED,
                prescription_ids=[],
                record_retain_until=years_after(now, RECORD_RETENTION_YEARS),
                media_retain_until=years_after(now, MEDIA_RETENTION_YEARS),
                created_at=now,
                updated_at=now,
            )
            tx.session.add(visit)
            await tx.session.flush()

            async def then() -> None:
                await self._announce(tx, visit, "requested")

            await self.steps.record(
                tx,
                visit,
                "request",
                requester,
                None,
                details={"doctor_id": doctor.id, "condition_id": data.condition_id},
                then=then,
            )
            return await self._out(tx.session, visit)

    @staticmethod
    def _check_guardian(
        patient: PatientRef, guardian: schemas.Guardian | None
    ) -> dict[str, Any] | None:
        today = datetime.now(CHINA).date()
        if age_on(patient.birth_date, today) >= GUARDIAN_BELOW_AGE:
            return guardian.model_dump() if guardian is not None else None
        if guardian is None:
            raise ValidationFailed.field(
                "guardian",
                f"a child under {GUARDIAN_BELOW_AGE} is seen online only with a guardian present",
                code="guardian_required",
            )
        try:
            parsed = parse_resident_id(guardian.resident_id)
        except ResidentIdError as exc:
            raise ValidationFailed.field(
                "guardian.resident_id", str(exc), code="invalid_guardian"
            ) from None
        if parsed.number == patient.resident_id or age_on(parsed.birth_date, today) < ADULT_AGE:
            raise ValidationFailed.field(
                "guardian.resident_id", "the guardian must be an adult", code="invalid_guardian"
            )
        return {**guardian.model_dump(), "resident_id": parsed.number}

    # --- the doctor's answer, the patient's cancel ---------------------------------------------

    async def accept(self, requester: Requester, visit_id: int) -> schemas.VisitOut:
        async with self.db.transaction() as tx:
            visit = await self._locked(tx, requester, visit_id)

            async def then() -> None:
                await self.access.open_window(
                    tx,
                    patient_id=visit.patient_id,
                    institution_id=visit.institution_id,
                    source=SOURCE,
                    source_id=visit.id,
                )
                await self._announce(tx, visit, "accepted")

            await self.steps.transition(tx, visit, "accept", requester, then=then)
            return await self._out(tx.session, visit)

    async def decline(
        self, requester: Requester, visit_id: int, data: schemas.VisitDecline
    ) -> schemas.VisitOut:
        async with self.db.transaction() as tx:
            visit = await self._locked(tx, requester, visit_id)

            async def then() -> None:
                await self._announce(tx, visit, "declined")
                await self._cancelled(tx, visit, "declined")

            await self.steps.transition(
                tx,
                visit,
                "decline",
                requester,
                reason=data.reason,
                values={"decline_reason": data.reason},
                then=then,
            )
            return await self._out(tx.session, visit)

    async def cancel(self, requester: Requester, visit_id: int) -> schemas.VisitOut:
        async with self.db.transaction() as tx:
            visit = await self._locked(tx, requester, visit_id)

            async def then() -> None:
                await self.access.close_window(tx, source=SOURCE, source_id=visit.id)
                await self._announce(tx, visit, "cancelled")
                await self._cancelled(tx, visit, "cancelled")

            await self.steps.transition(tx, visit, "cancel", requester, then=then)
            return await self._out(tx.session, visit)

    # --- the room ------------------------------------------------------------------------------

    async def open(
        self, requester: Requester, visit_id: int, data: schemas.VisitOpen
    ) -> schemas.VisitOut:
        """The doctor, authenticated, opens the visit's room; the patient is told."""
        async with self.db.read() as session:
            visit = await self._visible(session, requester, visit_id)
        check_doctor(requester, visit)
        self.steps.check(visit, "open", requester)
        minutes = self.doctor_auth_minutes
        try:
            method = await self.auth.reauthenticate(
                requester,
                password=data.password,
                totp=data.totp,
                fresh_seconds=minutes * 60,
                action="visit.reauth",
            )
        except Unauthorized as exc:
            if exc.code != "reauth_required":
                raise
            raise Forbidden(
                f"authenticate before the visit: your password (and TOTP code) or a TOTP "
                f"code; a login younger than {minutes} minutes also counts",
                code="doctor_reauth_required",
            ) from None
        now = utcnow()
        async with self.db.transaction() as tx:
            visit = await self._locked(tx, requester, visit_id)
            consult_id = await self.consults.followup.open(
                tx,
                patient_id=visit.patient_id,
                host=requester,
                guest_user_id=visit.patient_user_id,
                summary=f"{visit.condition_display}：{visit.complaint}"[:4000],
                window_start=now,
                window_end=now + timedelta(hours=ROOM_HOURS),
            )

            async def then() -> None:
                await self.inbox.notify(
                    tx,
                    kind="visit_ready",
                    title="医生已开启复诊诊室，请进入候诊",
                    patients=[visit.patient_id],
                    resource=f"Visit/{visit.id}",
                    data={
                        "visit_id": visit.id,
                        "consult_id": consult_id,
                        "title_en": "The doctor opened the visit room; please enter the waiting room",
                    },
                )
                await self._announce(tx, visit, "waiting")

            await self.steps.transition(
                tx,
                visit,
                "open",
                requester,
                details={"consult_id": consult_id, "auth": method},
                audit_details={"consult_id": consult_id, "auth": method},
                values={"consult_id": consult_id, "opened_at": now, "doctor_auth": method},
                then=then,
            )
            return await self._out(tx.session, visit)

    async def admit(self, requester: Requester, visit_id: int) -> schemas.VisitOut:
        """The doctor lets the patient in from the waiting room (the consult room's lobby)."""
        async with self.db.read() as session:
            visit = await self._visible(session, requester, visit_id)
        self.steps.check(visit, "admit", requester)
        assert visit.consult_id is not None, "an open visit has its room"
        await self.consults.room.admit(
            requester,
            consult_schemas.Admit(consult_id=visit.consult_id, user_id=visit.patient_user_id),
        )
        async with self.db.transaction() as tx:
            visit = await self._locked(tx, requester, visit_id)

            async def then() -> None:
                await self._announce(tx, visit, "in_progress")

            await self.steps.transition(
                tx, visit, "admit", requester, values={"started_at": utcnow()}, then=then
            )
            return await self._out(tx.session, visit)

    # --- the record, prescriptions, the end ------------------------------------------------

    async def write_record(
        self, requester: Requester, visit_id: int, data: schemas.VisitRecord
    ) -> schemas.VisitOut:
        """The visit record, kept as an Encounter (class VR) in the patient's record;
        written again, it replaces the earlier text (the same Encounter, a new version)."""
        async with self.db.transaction() as tx:
            visit = await self._locked(tx, requester, visit_id)
            check_doctor(requester, visit)
            if visit.status != VisitStatus.IN_PROGRESS:
                raise Conflict(
                    f"the visit is {visit.status}: the record is written during the visit",
                    code="visit_not_in_progress",
                )
            note = data.model_dump()
            stored = await self.records.add_resource(
                tx,
                patient_id=visit.patient_id,
                institution_id=visit.institution_id,
                resource=self._encounter(visit, note),
            )
            visit.record, visit.encounter_id, visit.updated_at = note, str(stored["id"]), utcnow()
            await self.audit.record(
                tx.session,
                "visit.record",
                actor=requester,
                patient_id=visit.patient_id,
                resource=f"Visit/{visit.id}",
                details={"encounter_id": visit.encounter_id},
            )
            await self._announce(tx, visit, "record")
            return await self._out(tx.session, visit)

    @staticmethod
    def _encounter(visit: Visit, note: dict[str, str]) -> dict[str, Any]:
        labels = {"complaint": "主诉", "findings": "检查所见", "assessment": "评估", "plan": "处理"}
        div = "".join(f"<p><b>{labels[k]}</b>：{escape(v)}</p>" for k, v in note.items())
        start = (visit.started_at or visit.opened_at or utcnow()).isoformat()
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": f"visit-{visit.id}",
            "status": "in-progress",
            "class": {"system": ACT_CODE, "code": VIRTUAL_CLASS, "display": "virtual"},
            "type": [{"text": "互联网复诊"}],
            "period": {"start": start},
            "reasonCode": [
                {
                    "coding": [{"code": visit.condition_code}] if visit.condition_code else [],
                    "text": visit.condition_display,
                }
            ],
            "participant": [{"individual": {"display": f"Practitioner user {visit.doctor_id}"}}],
            "text": {
                "status": "generated",
                "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{div}</div>',
            },
        }
        label = SECURITY_LABELS.get(visit.condition_sensitivity or "")
        if label is not None:
            resource["meta"] = {"security": [{"system": SECURITY_SYSTEM, "code": label}]}
        return resource

    async def link_prescription(
        self, requester: Requester, visit_id: int, data: schemas.VisitPrescriptionLink
    ) -> schemas.VisitOut:
        """A prescription the doctor signed for this patient, linked to the visit."""
        async with self.db.read() as session:
            visit = await self._visible(session, requester, visit_id)
        check_doctor(requester, visit)
        not_this_visit = ValidationFailed.field(
            "prescription_id",
            "not a prescription you signed for this visit's patient",
            code="not_this_visit",
        )
        try:
            prescription = await self.prescriptions.views.get(requester, data.prescription_id)
        except NotFound:  # unknown, or another prescriber's: the same answer
            raise not_this_visit from None
        if (
            prescription.prescriber_id != requester.user_id
            or prescription.patient_id != visit.patient_id
        ):
            raise not_this_visit
        async with self.db.transaction() as tx:
            visit = await self._locked(tx, requester, visit_id)
            if visit.status not in (VisitStatus.IN_PROGRESS, VisitStatus.COMPLETED):
                raise Conflict(
                    f"the visit is {visit.status}: prescribe during the visit",
                    code="visit_not_in_progress",
                )
            if data.prescription_id not in visit.prescription_ids:
                visit.prescription_ids = [*visit.prescription_ids, data.prescription_id]
                visit.updated_at = utcnow()
                await self.audit.record(
                    tx.session,
                    "visit.prescription",
                    actor=requester,
                    patient_id=visit.patient_id,
                    resource=f"Visit/{visit.id}",
                    details={"prescription_id": data.prescription_id},
                )
                await self._announce(tx, visit, "prescription")
            return await self._out(tx.session, visit)

    async def end(self, requester: Requester, visit_id: int) -> schemas.VisitOut:
        async with self.db.transaction() as tx:
            visit = await self._locked(tx, requester, visit_id)
            self.steps.check(visit, "end", requester)
            if visit.record is None:
                raise Conflict(
                    "write the visit record before ending the visit", code="visit_record_missing"
                )
            assert visit.consult_id is not None
            await self.consults.followup.finish(tx, visit.consult_id, requester)
            ended = utcnow()
            if visit.encounter_id is not None:
                resource = self._encounter(visit, visit.record)
                resource["status"] = "finished"
                resource["period"]["end"] = ended.isoformat()
                await self.records.add_resource(
                    tx,
                    patient_id=visit.patient_id,
                    institution_id=visit.institution_id,
                    resource=resource,
                )

            async def then() -> None:
                await self.access.close_window(tx, source=SOURCE, source_id=visit.id)
                await self._announce(tx, visit, "completed")

            await self.steps.transition(
                tx, visit, "end", requester, values={"ended_at": ended}, then=then
            )
            return await self._out(tx.session, visit)

    # --- reads -------------------------------------------------------------------------------

    async def get(self, requester: Requester, visit_id: int) -> schemas.VisitOut:
        async with self.db.transaction() as tx:
            visit = await self._visible(tx.session, requester, visit_id)
            await self.audit.record(
                tx.session,
                "visit.read",
                actor=requester,
                patient_id=visit.patient_id,
                resource=f"Visit/{visit.id}",
            )
            return await self._out(tx.session, visit)

    async def list_visits(self, requester: Requester, status: str | None) -> schemas.VisitList:
        query = select(Visit).order_by(Visit.id.desc()).limit(200)
        if requester.role == Role.PATIENT:
            query = query.where(Visit.patient_id == requester.patient_id)
        elif requester.role in PRESCRIBER_ROLES:
            query = query.where(Visit.doctor_id == requester.user_id)
        else:
            raise Forbidden("visits are seen by their patient and their doctor", code="not_a_party")
        if status:
            query = query.where(Visit.status == status)
        async with self.db.read() as session:
            visits = list(await session.scalars(query))
            return schemas.VisitList(items=await self._outs(session, visits))

    async def _visible(self, session: AsyncSession, requester: Requester, visit_id: int) -> Visit:
        """The visit, for its patient and its doctor; anyone else is refused (audited
        under the patient)."""
        visit = await session.get(Visit, visit_id)
        if visit is None:
            raise NotFound(f"no visit {visit_id}")
        self._check_party(requester, visit)
        return visit

    async def _locked(self, tx: Tx, requester: Requester, visit_id: int) -> Visit:
        visit = await tx.session.scalar(select(Visit).where(Visit.id == visit_id).with_for_update())
        if visit is None:
            raise NotFound(f"no visit {visit_id}")
        self._check_party(requester, visit)
        return visit

    @staticmethod
    def _check_party(requester: Requester, visit: Visit) -> None:
        if requester.user_id not in (visit.patient_user_id, visit.doctor_id):
            refused = Forbidden(
                f"visit {visit.id} is its patient's and its doctor's", code="not_a_party"
            )
            refused.patient_id = visit.patient_id
            raise refused

    async def _announce(self, tx: Tx, visit: Visit, op: str) -> None:
        """The visit's change, to its patient's and its doctor's sockets (``user:<id>``)."""
        data = {"visit_id": visit.id, "status": visit.status, "consult_id": visit.consult_id}
        for user_id in (visit.patient_user_id, visit.doctor_id):
            await self.events.append(tx, f"user:{user_id}", "visit", op, data)

    async def _out(self, session: AsyncSession, visit: Visit) -> schemas.VisitOut:
        return (await self._outs(session, [visit]))[0]

    async def _outs(self, session: AsyncSession, visits: list[Visit]) -> list[schemas.VisitOut]:
        """The visits as answered, their people and places read once for all of them."""
        doctors = await self.directory.users(session, {v.doctor_id for v in visits})
        institutions = await self.directory.institutions(
            session, {v.institution_id for v in visits}
        )
        patients = {
            pid: await self.directory.patient(session, pid)
            for pid in {v.patient_id for v in visits}
        }
        departments = await self._department_names(session, list(doctors.values()))
        return [self._visit_out(v, doctors, institutions, patients, departments) for v in visits]

    @staticmethod
    def _visit_out(
        visit: Visit,
        doctors: dict[int, UserRef],
        institutions: dict[int, InstitutionRef],
        patients: dict[int, PatientRef | None],
        departments: dict[int, str],
    ) -> schemas.VisitOut:
        doctor = doctors.get(visit.doctor_id)
        patient = patients.get(visit.patient_id)
        department = departments.get(doctor.department_id or 0) if doctor is not None else None
        guardian = visit.guardian
        return schemas.VisitOut(
            id=visit.id,
            status=visit.status,
            patient_id=visit.patient_id,
            patient_user_id=visit.patient_user_id,
            patient_name=patient.name if patient else None,
            doctor_id=visit.doctor_id,
            doctor_name=doctor.name if doctor else None,
            doctor_title=doctor.title if doctor else None,
            department=department,
            institution_id=visit.institution_id,
            institution_name=institutions[visit.institution_id].name
            if visit.institution_id in institutions
            else None,
            condition_id=visit.condition_id,
            condition_code=visit.condition_code,
            condition_display=visit.condition_display,
            complaint=visit.complaint,
            preferred_at=visit.preferred_at,
            guardian=schemas.GuardianOut(
                name=guardian["name"],
                relation=guardian["relation"],
                resident_id_masked=mask_resident_id(guardian["resident_id"]),
            )
            if guardian
            else None,
            decline_reason=visit.decline_reason,
            consult_id=visit.consult_id,
            record=schemas.VisitRecordOut(**visit.record) if visit.record else None,
            encounter_id=visit.encounter_id,
            prescription_ids=list(visit.prescription_ids or []),
            opened_at=visit.opened_at,
            started_at=visit.started_at,
            ended_at=visit.ended_at,
            record_retain_until=visit.record_retain_until,
            media_retain_until=visit.media_retain_until,
            created_at=visit.created_at,
            updated_at=visit.updated_at,
        )
