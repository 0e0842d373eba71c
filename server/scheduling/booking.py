"""Booking (预约挂号): the network's directory of departments, doctors and free slots; the
institutions' department profiles and booking policies; the reminder and no-show jobs.

The booking rules themselves (a taken or past slot, the cut-off, the no-show
suspension) are checked by :class:`~server.scheduling.service.SchedulingService` when
it books and cancels, with the helpers here. Nothing here is clinical: the directory
names departments, places, doctors' titles and free places, never a patient.

- **Cut-off.** A patient cancels until ``cancel_cutoff_hours`` before the slot: the
  department's profile's, else the institution's policy's, else
  ``BOOKING_CANCEL_CUTOFF_HOURS``. A desk may cancel later (the hospital's decision).
- **No-shows.** An appointment still booked, never marked, whose slot has ended is a
  no-show (the ``booking.no_shows`` job marks it); so is one the desk marked
  ``attended: false``. A patient with the institution's limit of no-shows there within
  ``BOOKING_NO_SHOW_DAYS`` may not book there (``booking_suspended_no_shows``).
- **Reminders.** The ``booking.reminders`` job sends each booked appointment one
  ``appointment_reminder`` ``BOOKING_REMINDER_HOURS`` ahead; the appointment records it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.config import Settings
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, rowcount, utcnow
from server.core.errors import Conflict, Forbidden, NotFound
from server.core.leases import Periodic
from server.core.roles import Role
from server.identity.directory import Directory
from server.inbox.service import InboxService
from server.scheduling import schemas
from server.scheduling.models import (
    Appointment,
    AppointmentStatus,
    BookingPolicy,
    DepartmentProfile,
    Slot,
    SlotStatus,
)
from server.scheduling.specialties import BY_CODE, SPECIALTIES

JOB_BATCH = 500


@dataclass(frozen=True, slots=True)
class Policy:
    cancel_cutoff_hours: int
    no_show_limit: int
    default: bool


def place_of(profile: DepartmentProfile | None) -> schemas.Place:
    if profile is None:
        return schemas.Place()
    return schemas.Place(building=profile.building, floor=profile.floor, room=profile.room)


def _check_admin(requester: Requester, institution_id: int | None) -> int:
    if requester.role != Role.INSTITUTION_ADMIN or requester.institution_id is None:
        raise Forbidden(
            "only the institution's administrator may do this", code="not_institution_admin"
        )
    if institution_id is not None and institution_id != requester.institution_id:
        raise Forbidden(
            "only the institution's administrator may do this", code="not_institution_admin"
        )
    return requester.institution_id


class BookingService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        inbox: InboxService,
        directory: Directory,
    ) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        self.inbox = inbox
        self.directory = directory
        self.zone = ZoneInfo(settings.schedule_timezone)

    # --- rules the scheduling service applies ---------------------------------------------

    async def policy(self, session: AsyncSession, institution_id: int) -> Policy:
        return (await self.policies(session, [institution_id]))[institution_id]

    async def policies(
        self, session: AsyncSession, institution_ids: Iterable[int]
    ) -> dict[int, Policy]:
        """Several institutions' policies in one query (the defaults where none is set)."""
        ids = sorted(set(institution_ids))
        rows = {
            p.institution_id: p
            for p in (
                await session.scalars(
                    select(BookingPolicy).where(BookingPolicy.institution_id.in_(ids))
                )
                if ids
                else []
            )
        }
        default = Policy(
            self.settings.booking_cancel_cutoff_hours, self.settings.booking_no_show_limit, True
        )
        return {
            i: Policy(rows[i].cancel_cutoff_hours, rows[i].no_show_limit, False)
            if i in rows
            else default
            for i in ids
        }

    @staticmethod
    def effective_cutoff(profile: DepartmentProfile | None, policy: Policy) -> int:
        if profile is not None and profile.cancel_cutoff_hours is not None:
            return profile.cancel_cutoff_hours
        return policy.cancel_cutoff_hours

    async def cutoff_hours(self, session: AsyncSession, slot: Slot) -> int:
        profile = await session.get(DepartmentProfile, slot.department_id)
        return self.effective_cutoff(profile, await self.policy(session, slot.institution_id))

    async def check_cutoff(self, session: AsyncSession, slot: Slot) -> None:
        """A patient's cancellation after the cut-off is refused (409, with the cut-off)."""
        hours = await self.cutoff_hours(session, slot)
        cutoff_at = slot.start - timedelta(hours=hours)
        if utcnow() > cutoff_at:
            stamp = cutoff_at.isoformat().replace("+00:00", "Z")
            raise Conflict(
                f"appointments here are cancelled at least {hours} hours ahead (until {stamp})",
                code="cancel_cutoff_passed",
                extra={"cutoff_hours": hours, "cutoff_at": stamp},
            )

    async def check_not_suspended(
        self, session: AsyncSession, patient_id: int, institution_id: int
    ) -> None:
        """A patient with the institution's limit of recent no-shows there may not book."""
        limit = (await self.policy(session, institution_id)).no_show_limit
        days = self.settings.booking_no_show_days
        since = utcnow() - timedelta(days=days)
        starts = list(
            await session.scalars(
                select(Slot.start)
                .join(Appointment, Appointment.slot_id == Slot.id)
                .where(
                    Appointment.patient_id == patient_id,
                    Appointment.no_show_at.is_not(None),
                    Slot.institution_id == institution_id,
                    Slot.start >= since,
                )
                .order_by(Slot.start.desc())
                .limit(limit)
            )
        )
        if len(starts) >= limit:
            until = (starts[-1] + timedelta(days=days)).isoformat().replace("+00:00", "Z")
            raise Conflict(
                f"{len(starts)} missed appointments here in {days} days: booking is suspended "
                f"until {until}",
                code="booking_suspended_no_shows",
                extra={"no_shows": len(starts), "limit": limit, "days": days,
                       "until": until},
            )  # fmt: skip

    async def no_show_count(self, session: AsyncSession, patient_id: int) -> int:
        since = utcnow() - timedelta(days=self.settings.booking_no_show_days)
        count = await session.scalar(
            select(func.count(Appointment.id))
            .join(Slot, Slot.id == Appointment.slot_id)
            .where(
                Appointment.patient_id == patient_id,
                Appointment.no_show_at.is_not(None),
                Slot.start >= since,
            )
        )
        return int(count or 0)

    # --- the directory ---------------------------------------------------------------------

    def specialties(self) -> schemas.SpecialtyList:
        return schemas.SpecialtyList(
            items=[schemas.SpecialtyOut(code=s.code, zh=s.zh, en=s.en) for s in SPECIALTIES]
        )

    async def directory_view(self, query: schemas.DirectoryQuery) -> schemas.DirectoryOut:
        """Institutions → departments → doctors → their next free slots (bounded, paged)."""
        today = datetime.now(self.zone).date()
        date_from = query.date_from or today
        date_to = query.date_to or (date_from + timedelta(days=13))
        if (date_to - date_from).days >= schemas.MAX_DIRECTORY_DAYS:
            date_to = date_from + timedelta(days=schemas.MAX_DIRECTORY_DAYS - 1)
        start = max(datetime.combine(date_from, time(0), tzinfo=self.zone), utcnow())
        end = datetime.combine(date_to + timedelta(days=1), time(0), tzinfo=self.zone)
        async with self.db.read() as session:
            departments = await self.directory.departments_of(session, query.institution)
            profiles = {
                p.department_id: p
                for p in await session.scalars(
                    select(DepartmentProfile).where(
                        DepartmentProfile.department_id.in_([d.id for d in departments])
                    )
                )
            }
            if query.specialty is not None:
                departments = [
                    d
                    for d in departments
                    if (p := profiles.get(d.id)) is not None and p.specialty == query.specialty
                ]
            by_institution: dict[int, list[Any]] = defaultdict(list)
            for department in departments:
                by_institution[department.institution_id].append(department)
            institution_ids = sorted(by_institution)
            page = institution_ids[query.offset : query.offset + query.limit]
            institutions = await self.directory.institutions(session, page)
            shown = [d for i in page for d in by_institution[i]]
            doctors = await self.directory.doctors_in(session, [d.id for d in shown])
            slots = await self._free_slots(
                session, [d.id for d in shown], start, end, query.slots_per_doctor
            )
            policies = await self.policies(session, page)
        free: dict[tuple[int, int | None], list[schemas.FreeSlot]] = defaultdict(list)
        for slot in slots:
            free[(slot.department_id, slot.practitioner_id)].append(
                schemas.FreeSlot(
                    id=slot.id,
                    start=slot.start,
                    minutes=slot.minutes,
                    available=slot.capacity - slot.booked,
                    visit_type=slot.visit_type,
                )
            )
        doctors_of: dict[int, list[Any]] = defaultdict(list)
        for doctor in doctors:
            if doctor.department_id is not None:
                doctors_of[doctor.department_id].append(doctor)
        items = []
        for institution_id in page:
            ref = institutions[institution_id]
            entries = []
            for department in by_institution[institution_id]:
                profile = profiles.get(department.id)
                specialty = BY_CODE.get(profile.specialty) if profile else None
                cards = [
                    schemas.DoctorEntry(
                        id=d.id,
                        name=d.name,
                        title=d.title,
                        slots=free.get((department.id, d.id), []),
                    )
                    for d in doctors_of[department.id]
                ]
                clinic = free.get((department.id, None))
                if clinic:
                    cards.append(schemas.DoctorEntry(id=None, name=None, title=None, slots=clinic))
                cutoff = self.effective_cutoff(profile, policies[institution_id])
                entries.append(
                    schemas.DepartmentEntry(
                        id=department.id,
                        name=department.name,
                        specialty=specialty.code if specialty else None,
                        specialty_zh=specialty.zh if specialty else None,
                        specialty_en=specialty.en if specialty else None,
                        place=place_of(profile),
                        description=profile.description if profile else None,
                        note=profile.note if profile else None,
                        cancel_cutoff_hours=cutoff,
                        doctors=cards,
                    )
                )
            items.append(
                schemas.InstitutionEntry(
                    id=ref.id, code=ref.code, name=ref.name, kind=ref.kind, region=ref.region,
                    departments=entries,
                )
            )  # fmt: skip
        following = query.offset + query.limit
        return schemas.DirectoryOut(
            items=items,
            total=len(institution_ids),
            offset=query.offset,
            limit=query.limit,
            next_offset=following if following < len(institution_ids) else None,
            date_from=date_from,
            date_to=date_to,
        )

    async def _free_slots(
        self,
        session: AsyncSession,
        department_ids: list[int],
        start: datetime,
        end: datetime,
        per_doctor: int,
    ) -> list[Slot]:
        """The first ``per_doctor`` free slots of each (department, doctor) in the window."""
        if not department_ids:
            return []
        rank = (
            func.row_number()
            .over(
                partition_by=(Slot.department_id, Slot.practitioner_id),
                order_by=(Slot.start, Slot.id),
            )
            .label("rank")
        )
        ranked = (
            select(Slot.id, rank)
            .where(
                Slot.department_id.in_(department_ids),
                Slot.status == SlotStatus.OPEN,
                Slot.booked < Slot.capacity,
                Slot.start > start,
                Slot.start < end,
            )
            .subquery()
        )
        ids = select(ranked.c.id).where(ranked.c.rank <= per_doctor)
        rows = await session.scalars(
            select(Slot).where(Slot.id.in_(ids)).order_by(Slot.start, Slot.id)
        )
        return list(rows)

    # --- administration --------------------------------------------------------------------

    async def set_department(
        self, requester: Requester, department_id: int, data: schemas.DepartmentProfileIn
    ) -> schemas.DepartmentProfileOut:
        async with self.db.transaction() as tx:
            department = await self.directory.department(tx.session, department_id)
            if department is None:
                raise NotFound(f"no department {department_id}", code="department_not_found")
            _check_admin(requester, department.institution_id)
            profile = await tx.session.get(DepartmentProfile, department_id)
            if profile is None:
                profile = DepartmentProfile(
                    department_id=department_id, institution_id=department.institution_id
                )
                tx.session.add(profile)
            for key, value in data.model_dump().items():
                setattr(profile, key, value)
            profile.updated_at = utcnow()
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "booking.department_profile",
                actor=requester,
                resource=f"Department/{department_id}",
                details=data.model_dump(),
            )
            return schemas.DepartmentProfileOut(
                department_id=department_id,
                institution_id=department.institution_id,
                name=department.name,
                specialty=profile.specialty,
                place=place_of(profile),
                description=profile.description,
                note=profile.note,
                cancel_cutoff_hours=profile.cancel_cutoff_hours,
            )

    def _policy_out(self, institution_id: int, policy: Policy) -> schemas.PolicyOut:
        return schemas.PolicyOut(
            institution_id=institution_id,
            cancel_cutoff_hours=policy.cancel_cutoff_hours,
            no_show_limit=policy.no_show_limit,
            no_show_days=self.settings.booking_no_show_days,
            reminder_hours=self.settings.booking_reminder_hours,
            default=policy.default,
        )

    async def get_policy(self, requester: Requester) -> schemas.PolicyOut:
        institution_id = _check_admin(requester, None)
        async with self.db.read() as session:
            return self._policy_out(institution_id, await self.policy(session, institution_id))

    async def set_policy(self, requester: Requester, data: schemas.PolicyIn) -> schemas.PolicyOut:
        institution_id = _check_admin(requester, None)
        async with self.db.transaction() as tx:
            row = await tx.session.get(BookingPolicy, institution_id)
            if row is None:
                row = BookingPolicy(institution_id=institution_id)
                tx.session.add(row)
            row.cancel_cutoff_hours = data.cancel_cutoff_hours
            row.no_show_limit = data.no_show_limit
            row.updated_by = requester.user_id
            row.updated_at = utcnow()
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "booking.policy",
                actor=requester,
                resource=f"Institution/{institution_id}",
                details=data.model_dump(),
            )
            return self._policy_out(institution_id, Policy(row.cancel_cutoff_hours,
                                                           row.no_show_limit, False))  # fmt: skip

    # --- jobs ----------------------------------------------------------------------------

    async def send_reminders(self) -> int:
        """One ``appointment_reminder`` per booked appointment starting within the hours."""
        now = utcnow()
        horizon = now + timedelta(hours=self.settings.booking_reminder_hours)
        sent = 0
        async with self.db.transaction() as tx:
            rows = list(
                await tx.session.execute(
                    select(Appointment.id, Appointment.patient_id, Slot)
                    .join(Slot, Slot.id == Appointment.slot_id)
                    .where(
                        Appointment.status == AppointmentStatus.BOOKED,
                        Appointment.reminder_sent_at.is_(None),
                        Slot.start > now,
                        Slot.start <= horizon,
                    )
                    .order_by(Slot.start, Appointment.id)
                    .limit(JOB_BATCH)
                )
            )
            departments = {
                d.id: d
                for d in await self.directory.departments_of(tx.session)
                if d.id in {slot.department_id for _, _, slot in rows}
            }
            institutions = await self.directory.institutions(
                tx.session, {slot.institution_id for _, _, slot in rows}
            )
            for appointment_id, patient_id, slot in rows:
                marked = await tx.session.execute(
                    update(Appointment)
                    .where(Appointment.id == appointment_id, Appointment.reminder_sent_at.is_(None))
                    .values(reminder_sent_at=now)
                    .execution_options(synchronize_session=False)
                )
                if rowcount(marked) != 1:
                    continue
                department = departments.get(slot.department_id)
                institution = institutions.get(slot.institution_id)
                local = slot.start.astimezone(self.zone)
                where = " ".join(
                    x for x in (institution.name if institution else None,
                                department.name if department else None) if x
                )  # fmt: skip
                await self.inbox.notify(
                    tx,
                    kind="appointment_reminder",
                    title=f"就诊提醒：{local:%m月%d日 %H:%M} {where}",
                    patients=[patient_id],
                    resource=f"Appointment/{appointment_id}",
                    data={"appointment_id": appointment_id, "slot_id": slot.id,
                          "start": slot.start.isoformat(),
                          "institution": institution.name if institution else None,
                          "department": department.name if department else None},
                )  # fmt: skip
                sent += 1
        return sent

    async def mark_no_shows(self) -> int:
        """Appointments still booked and never marked, whose slot has ended: no-shows."""
        now = utcnow()
        async with self.db.transaction() as tx:
            rows = list(
                await tx.session.execute(
                    select(Appointment.id, Appointment.patient_id, Slot.start, Slot.minutes)
                    .join(Slot, Slot.id == Appointment.slot_id)
                    .where(
                        Appointment.status == AppointmentStatus.BOOKED,
                        Appointment.attended.is_(None),
                        Appointment.no_show_at.is_(None),
                        Slot.start < now,
                    )
                    .order_by(Slot.start, Appointment.id)
                    .limit(JOB_BATCH)
                )
            )
            ended = [
                a for a, _, start, minutes in rows if start + timedelta(minutes=minutes) <= now
            ]
            if not ended:
                return 0
            marked = await tx.session.execute(
                update(Appointment)
                .where(
                    Appointment.id.in_(ended),
                    Appointment.attended.is_(None),
                    Appointment.no_show_at.is_(None),
                )
                .values(no_show_at=now)
                .execution_options(synchronize_session=False)
            )
            await self.audit.record(tx.session, "booking.no_shows", details={"appointments": ended})
            return rowcount(marked)

    def periodic_jobs(self) -> list[Periodic]:
        interval = self.settings.booking_job_interval_seconds
        if interval <= 0:
            return []

        async def reminders(tick: int) -> None:
            await self.send_reminders()

        async def no_shows(tick: int) -> None:
            await self.mark_no_shows()

        return [
            Periodic("booking.reminders", interval, reminders),
            Periodic("booking.no_shows", interval, no_shows),
        ]
