"""Scheduling: weekly templates → slots, holidays and cancellations, bookings that never overbook.

A slot has a capacity and a ``booked`` count. Booking takes a place with one
conditional ``UPDATE slots SET booked = booked + 1 WHERE id = … AND status =
'open' AND booked < capacity AND start > now``: the database decides, so
concurrent bookings on any number of nodes cannot overbook (PostgreSQL locks
the row for the update; SQLite serialises writers with ``BEGIN IMMEDIATE``);
a ``CHECK (booked <= capacity)`` guards the invariant as well. A patient holds
at most one place per slot (a unique key that is NULL once cancelled).
Cancelling an appointment frees its place; a slot cancelled by the hospital —
or falling on a holiday added later — cancels its appointments and notifies
every patient booked on it through the inbox.

Booking (预约挂号, :mod:`server.scheduling.booking`) adds the rules a patient meets:
no booking while suspended for no-shows, no cancelling after the institution's
cut-off, a notification on each, and the desk's attendance mark on the day.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessService
from server.config import Settings
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, rowcount, utcnow
from server.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.core.roles import DESK_ROLES, Role
from server.identity.directory import Directory
from server.inbox.service import InboxService
from server.scheduling import schemas
from server.scheduling.booking import BookingService, place_of
from server.scheduling.models import (
    Appointment,
    AppointmentStatus,
    DepartmentProfile,
    Holiday,
    ScheduleTemplate,
    Slot,
    SlotStatus,
)


@dataclass(frozen=True, slots=True)
class BookedAppointment:
    """An appointment as other capabilities see it (never the row: scheduling owns it)."""

    id: int
    slot_id: int
    patient_id: int
    referral_id: int | None


def booked(appointment: Appointment) -> BookedAppointment:
    return BookedAppointment(
        id=appointment.id,
        slot_id=appointment.slot_id,
        patient_id=appointment.patient_id,
        referral_id=appointment.referral_id,
    )


SlotCancelled = Callable[[Tx, list[BookedAppointment]], Awaitable[None]]
# Called in the transaction that cancels one appointment (payments refunds its paid order).
AppointmentCancelled = Callable[[Tx, list[BookedAppointment]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class AppointmentFacts:
    """Where and when an appointment is, for other capabilities (payments' fee and refund)."""

    id: int
    patient_id: int
    institution_id: int
    department_id: int
    start: datetime
    status: str


def slot_out(slot: Slot) -> schemas.SlotOut:
    return schemas.SlotOut(
        id=slot.id,
        institution_id=slot.institution_id,
        department_id=slot.department_id,
        practitioner_id=slot.practitioner_id,
        start=slot.start,
        minutes=slot.minutes,
        capacity=slot.capacity,
        booked=slot.booked,
        available=max(slot.capacity - slot.booked, 0) if slot.status == SlotStatus.OPEN else 0,
        visit_type=slot.visit_type,
        status=slot.status,
        cancel_reason=slot.cancel_reason,
    )


def appointment_out(appointment: Appointment, slot: Slot, **details: Any) -> schemas.AppointmentOut:
    return schemas.AppointmentOut(
        id=appointment.id,
        slot=slot_out(slot),
        patient_id=appointment.patient_id,
        booked_by=appointment.booked_by,
        referral_id=appointment.referral_id,
        status=appointment.status,
        created_at=appointment.created_at,
        cancelled_at=appointment.cancelled_at,
        cancel_reason=appointment.cancel_reason,
        attended=appointment.attended,
        no_show=appointment.no_show_at is not None,
        **details,
    )


@dataclass(frozen=True, slots=True)
class UpcomingAppointment:
    """A booked appointment and its slot, as other capabilities see it (reminders, visits)."""

    id: int
    patient_id: int
    slot_id: int
    institution_id: int
    department_id: int
    practitioner_id: int | None
    start: datetime
    minutes: int
    visit_type: str


async def appointments_starting_between(
    tx: Tx, start: datetime, end: datetime
) -> list[UpcomingAppointment]:
    """The appointments still booked whose slot starts in ``[start, end)``, by start."""
    rows = await tx.session.execute(
        select(Appointment, Slot)
        .join(Slot, Slot.id == Appointment.slot_id)
        .where(
            Appointment.status == AppointmentStatus.BOOKED,
            Slot.status == SlotStatus.OPEN,
            Slot.start >= start,
            Slot.start < end,
        )
        .order_by(Slot.start, Appointment.id)
        .limit(5000)
    )
    return [
        UpcomingAppointment(
            id=a.id, patient_id=a.patient_id, slot_id=s.id, institution_id=s.institution_id,
            department_id=s.department_id, practitioner_id=s.practitioner_id, start=s.start,
            minutes=s.minutes, visit_type=s.visit_type,
        )
        for a, s in rows
    ]  # fmt: skip


def template_out(template: ScheduleTemplate) -> schemas.TemplateOut:
    return schemas.TemplateOut(
        id=template.id,
        institution_id=template.institution_id,
        department_id=template.department_id,
        practitioner_id=template.practitioner_id,
        weekday=template.weekday,
        start_time=template.start_time,
        slot_minutes=template.slot_minutes,
        slot_count=template.slot_count,
        capacity=template.capacity,
        visit_type=template.visit_type,
    )


def check_desk(requester: Requester, institution_id: int) -> None:
    """Only the institution's own staff run its schedule and desk."""
    if requester.role not in DESK_ROLES or requester.institution_id != institution_id:
        raise Forbidden("only the institution's staff may do this", code="not_institution_staff")


def _own_institution(requester: Requester) -> int:
    """The institution whose schedule a desk member runs."""
    if requester.institution_id is None:
        raise Forbidden("only the institution's staff may do this", code="not_institution_staff")
    check_desk(requester, requester.institution_id)
    return requester.institution_id


async def load_slot(session: AsyncSession, slot_id: int, *, lock: bool = False) -> Slot:
    query = select(Slot).where(Slot.id == slot_id).execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    slot = await session.scalar(query)
    if slot is None:
        raise NotFound(f"no slot {slot_id}", code="slot_not_found")
    return slot


class SchedulingService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        inbox: InboxService,
        access: AccessService,
        directory: Directory,
        slot_cancelled_listeners: Sequence[SlotCancelled] = (),
        appointment_cancelled_listeners: Sequence[AppointmentCancelled] = (),
    ) -> None:
        self.db = db
        self.audit = audit
        self.inbox = inbox
        self.access = access
        self.directory = directory
        self.zone = ZoneInfo(settings.schedule_timezone)
        # Called in the transaction that cancels a slot (referrals re-open their scheduling).
        self.slot_cancelled_listeners = tuple(slot_cancelled_listeners)
        # The directory, profiles, policies and jobs of booking (预约挂号).
        self.booking = BookingService(settings, db, audit, inbox, directory)
        self.appointment_cancelled_listeners = tuple(appointment_cancelled_listeners)

    # --- templates, generation, holidays ---------------------------------------

    async def _department(self, session: AsyncSession, requester: Requester, dept: int) -> int:
        department = await self.directory.department(session, dept)
        if department is None:
            raise ValidationFailed.field("department_id", f"no department {dept}")
        check_desk(requester, department.institution_id)
        return department.institution_id

    async def create_template(
        self, requester: Requester, data: schemas.TemplateCreate
    ) -> schemas.TemplateOut:
        async with self.db.transaction() as tx:
            institution_id = await self._department(tx.session, requester, data.department_id)
            if data.practitioner_id is not None:
                practitioner = await self.directory.user(tx.session, data.practitioner_id)
                if practitioner is None or practitioner.institution_id != institution_id:
                    raise ValidationFailed.field(
                        "practitioner_id", "not a practitioner of this institution"
                    )
            template = ScheduleTemplate(institution_id=institution_id, **data.model_dump())
            tx.session.add(template)
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "schedule.template_create",
                actor=requester,
                resource=f"ScheduleTemplate/{template.id}",
            )
            return template_out(template)

    async def list_templates(
        self, requester: Requester, query: schemas.TemplateQuery
    ) -> list[schemas.TemplateOut]:
        """My institution's active templates (a department's, when named)."""
        institution_id = _own_institution(requester)
        stmt = select(ScheduleTemplate).where(
            ScheduleTemplate.institution_id == institution_id,
            ScheduleTemplate.active.is_(True),
        )
        if query.department_id is not None:
            stmt = stmt.where(ScheduleTemplate.department_id == query.department_id)
        order = (ScheduleTemplate.department_id, ScheduleTemplate.weekday,
                 ScheduleTemplate.start_time, ScheduleTemplate.id)  # fmt: skip
        async with self.db.read() as session:
            return [template_out(t) for t in await session.scalars(stmt.order_by(*order))]

    async def list_holidays(
        self, requester: Requester, query: schemas.HolidayQuery
    ) -> list[schemas.HolidayItem]:
        """My institution's closed days, in date order (from a day, when given)."""
        institution_id = _own_institution(requester)
        stmt = select(Holiday).where(Holiday.institution_id == institution_id)
        if query.day_from is not None:
            stmt = stmt.where(Holiday.day >= query.day_from)
        async with self.db.read() as session:
            rows = await session.scalars(stmt.order_by(Holiday.day).limit(500))
            return [schemas.HolidayItem(day=h.day, reason=h.reason) for h in rows]

    def _local_start(self, day: date, start_time: str, offset_minutes: int) -> datetime:
        hour, minute = (int(part) for part in start_time.split(":"))
        local = datetime.combine(day, time(hour, minute), tzinfo=self.zone)
        return local + timedelta(minutes=offset_minutes)

    async def generate_slots(
        self, requester: Requester, data: schemas.GenerateSlots
    ) -> schemas.GenerateResult:
        """Create the slots of the department's templates for a date range (idempotent)."""
        now = utcnow()
        async with self.db.transaction() as tx:
            institution_id = await self._department(tx.session, requester, data.department_id)
            templates = list(
                await tx.session.scalars(
                    select(ScheduleTemplate).where(
                        ScheduleTemplate.department_id == data.department_id,
                        ScheduleTemplate.active.is_(True),
                    )
                )
            )
            holidays = set(
                await tx.session.scalars(
                    select(Holiday.day).where(
                        Holiday.institution_id == institution_id,
                        Holiday.day >= data.from_date,
                        Holiday.day <= data.to_date,
                    )
                )
            )
            existing = {
                (template_id, start)
                for template_id, start in await tx.session.execute(
                    select(Slot.template_id, Slot.start).where(
                        Slot.template_id.in_([t.id for t in templates])
                    )
                )
            }
            created = 0
            day = data.from_date
            while day <= data.to_date:
                for template in templates:
                    if day in holidays or template.weekday != day.weekday():
                        continue
                    for i in range(template.slot_count):
                        start = self._local_start(
                            day, template.start_time, i * template.slot_minutes
                        )
                        if start <= now or (template.id, start) in existing:
                            continue
                        tx.session.add(
                            Slot(
                                institution_id=institution_id,
                                department_id=template.department_id,
                                practitioner_id=template.practitioner_id,
                                template_id=template.id,
                                start=start,
                                minutes=template.slot_minutes,
                                capacity=template.capacity,
                                booked=0,
                                visit_type=template.visit_type,
                                status=SlotStatus.OPEN,
                            )
                        )
                        created += 1
                day += timedelta(days=1)
            await self.audit.record(
                tx.session,
                "schedule.generate",
                actor=requester,
                details={"department_id": data.department_id, "created": created},
            )
        return schemas.GenerateResult(created=created, holidays=sorted(holidays))

    async def add_holiday(
        self, requester: Requester, data: schemas.HolidayCreate
    ) -> schemas.HolidayOut:
        """A closed day: no slots are generated on it, and its open slots are cancelled."""
        if requester.institution_id is None:
            raise Forbidden("only an institution's staff may add its holidays")
        institution_id = requester.institution_id
        check_desk(requester, institution_id)
        day_start = datetime.combine(data.day, time(0), tzinfo=self.zone)
        async with self.db.transaction() as tx:
            if await tx.session.scalar(
                select(Holiday.id).where(
                    Holiday.institution_id == institution_id, Holiday.day == data.day
                )
            ):
                raise Conflict(f"{data.day} is already a holiday", code="duplicate_holiday")
            tx.session.add(Holiday(institution_id=institution_id, day=data.day, reason=data.reason))
            slots = list(
                await tx.session.scalars(
                    select(Slot).where(
                        Slot.institution_id == institution_id,
                        Slot.status == SlotStatus.OPEN,
                        Slot.start >= day_start,
                        Slot.start < day_start + timedelta(days=1),
                    )
                )
            )
            for slot in slots:
                await self._cancel_slot_in(tx, requester, slot, f"holiday: {data.reason}")
            await self.audit.record(
                tx.session,
                "schedule.holiday_add",
                actor=requester,
                details={"day": data.day.isoformat(), "cancelled_slots": len(slots)},
            )
        return schemas.HolidayOut(
            day=data.day, reason=data.reason, cancelled_slots=[s.id for s in slots]
        )

    # --- slots ----------------------------------------------------------------

    async def list_slots(self, query: schemas.SlotQuery) -> list[schemas.SlotOut]:
        async with self.db.read() as session:
            stmt = select(Slot)
            if query.institution_id is not None:
                stmt = stmt.where(Slot.institution_id == query.institution_id)
            if query.department_id is not None:
                stmt = stmt.where(Slot.department_id == query.department_id)
            if query.visit_type is not None:
                stmt = stmt.where(Slot.visit_type == query.visit_type)
            if query.start_from is not None:
                stmt = stmt.where(Slot.start >= query.start_from)
            if query.start_to is not None:
                stmt = stmt.where(Slot.start < query.start_to)
            if query.available:
                stmt = stmt.where(
                    Slot.status == SlotStatus.OPEN,
                    Slot.booked < Slot.capacity,
                    Slot.start > utcnow(),
                )
            rows = await session.scalars(stmt.order_by(Slot.start, Slot.id).limit(500))
            return [slot_out(slot) for slot in rows]

    async def get_slot(self, slot_id: int) -> schemas.SlotOut:
        async with self.db.read() as session:
            return slot_out(await load_slot(session, slot_id))

    async def cancel_slot(self, requester: Requester, slot_id: int, reason: str) -> schemas.SlotOut:
        async with self.db.transaction() as tx:
            slot = await load_slot(tx.session, slot_id, lock=True)
            check_desk(requester, slot.institution_id)
            if slot.status != SlotStatus.OPEN:
                raise Conflict("the slot is already cancelled", code="slot_cancelled")
            await self._cancel_slot_in(tx, requester, slot, reason)
            return slot_out(slot)

    async def _cancel_slot_in(self, tx: Tx, actor: Requester, slot: Slot, reason: str) -> None:
        appointments = list(
            await tx.session.scalars(
                select(Appointment).where(
                    Appointment.slot_id == slot.id, Appointment.status == AppointmentStatus.BOOKED
                )
            )
        )
        slot.status, slot.cancel_reason, slot.booked = SlotStatus.CANCELLED, reason, 0
        for appointment in appointments:
            self._mark_cancelled(appointment, f"slot cancelled: {reason}")
        await tx.session.flush()
        await self.audit.record(
            tx.session,
            "slot.cancel",
            actor=actor,
            resource=f"Slot/{slot.id}",
            reason=reason,
            details={"appointments": [a.id for a in appointments]},
        )
        for appointment in appointments:
            await self.inbox.notify(
                tx,
                kind="appointment.cancelled",
                title="Your appointment was cancelled by the hospital",
                patients=[appointment.patient_id],
                users=[appointment.booked_by] if appointment.booked_by != actor.user_id else [],
                resource=f"Appointment/{appointment.id}",
                data={"appointment_id": appointment.id, "slot_id": slot.id,
                      "start": slot.start.isoformat(), "reason": reason},
            )  # fmt: skip
        for listener in self.slot_cancelled_listeners:
            await listener(tx, [booked(a) for a in appointments])

    @staticmethod
    def _mark_cancelled(appointment: Appointment, reason: str | None) -> None:
        appointment.status = AppointmentStatus.CANCELLED
        appointment.holds = None
        appointment.cancelled_at = utcnow()
        appointment.cancel_reason = reason

    # --- appointments -----------------------------------------------------------

    async def book(
        self, requester: Requester, data: schemas.AppointmentCreate
    ) -> schemas.AppointmentOut:
        """A patient books for themself (预约挂号); a desk books for a patient."""
        if requester.role == Role.PATIENT:
            if data.patient_id not in (None, requester.patient_id):
                raise Forbidden("a patient books for themself only")
            patient_id = requester.patient_id
        else:
            if data.patient_id is None:
                raise ValidationFailed.field("patient_id", "a desk names the patient it books")
            patient_id = data.patient_id
        if patient_id is None:
            raise Forbidden("this account has no patient record")
        async with self.db.transaction() as tx:
            if requester.role == Role.PATIENT:
                slot = await load_slot(tx.session, data.slot_id)
                await self.booking.check_not_suspended(tx.session, patient_id, slot.institution_id)
            appointment, slot = await self.book_in(tx, requester, data.slot_id, patient_id)
            [out] = await self._describe(tx.session, [(appointment, slot)])
            local = slot.start.astimezone(self.zone)
            await self.inbox.notify(
                tx,
                kind="booking_confirmed",
                title=f"预约成功：{local:%m月%d日 %H:%M} {out.institution_name} {out.department_name}",
                patients=[patient_id],
                resource=f"Appointment/{appointment.id}",
                data={"appointment_id": appointment.id, "slot_id": slot.id,
                      "start": slot.start.isoformat(), "institution": out.institution_name,
                      "department": out.department_name},
            )  # fmt: skip
            return out

    async def book_in(
        self,
        tx: Tx,
        requester: Requester,
        slot_id: int,
        patient_id: int,
        *,
        referral_id: int | None = None,
    ) -> tuple[Appointment, Slot]:
        """Take one place on the slot inside the caller's transaction, or raise with nothing taken."""
        slot = await load_slot(tx.session, slot_id)
        if requester.role != Role.PATIENT:
            check_desk(requester, slot.institution_id)
        if slot.status != SlotStatus.OPEN:
            raise Conflict("the slot was cancelled", code="slot_cancelled")
        now = utcnow()
        if slot.start <= now:
            raise ValidationFailed.field("slot_id", "the slot is in the past", code="slot_in_past")
        if not await self.directory.patient_exists(tx.session, patient_id):
            raise ValidationFailed.field("patient_id", f"no patient {patient_id}")
        taken = await tx.session.execute(
            update(Slot)
            .where(
                Slot.id == slot_id,
                Slot.status == SlotStatus.OPEN,
                Slot.booked < Slot.capacity,
                Slot.start > now,
            )
            .values(booked=Slot.booked + 1)
            .execution_options(synchronize_session=False)
        )
        if rowcount(taken) != 1:
            raise Conflict("the slot is full", code="slot_full")
        appointment = Appointment(
            slot_id=slot_id,
            patient_id=patient_id,
            booked_by=requester.user_id,
            referral_id=referral_id,
            status=AppointmentStatus.BOOKED,
            holds=slot_id,
            created_at=now,
        )
        tx.session.add(appointment)
        try:
            await tx.session.flush()
        except IntegrityError:
            raise Conflict(
                "the patient already holds a place on this slot", code="already_booked"
            ) from None
        await self.audit.record(
            tx.session,
            "appointment.book",
            actor=requester,
            patient_id=patient_id,
            resource=f"Appointment/{appointment.id}",
            details={"slot_id": slot_id, "referral_id": referral_id},
        )
        if requester.role == Role.PATIENT:
            # The patient chose to be seen there: that institution may read the record.
            await self.access.record_encounter(
                tx, patient_id=patient_id, institution_id=slot.institution_id, reason="appointment"
            )
        return appointment, await load_slot(tx.session, slot_id)

    async def book_for_referral(
        self,
        tx: Tx,
        requester: Requester,
        slot_id: int,
        patient_id: int,
        *,
        referral_id: int,
        institution_id: int,
        department_id: int | None,
    ) -> BookedAppointment:
        """Book a referred patient on a slot of the receiving institution (and department)."""
        slot = await load_slot(tx.session, slot_id)
        if slot.institution_id != institution_id:
            raise ValidationFailed.field("slot_id", "not a slot of the receiving institution")
        if department_id not in (None, slot.department_id):
            raise ValidationFailed.field("slot_id", "not a slot of the receiving department")
        appointment, _ = await self.book_in(
            tx, requester, slot_id, patient_id, referral_id=referral_id
        )
        return booked(appointment)

    async def cancel_booked(
        self, tx: Tx, requester: Requester, appointment_id: int, reason: str
    ) -> None:
        """Cancel an appointment still booked (a cancelled one is left as it is)."""
        appointment = await tx.session.get(Appointment, appointment_id)
        if appointment is not None and appointment.status == AppointmentStatus.BOOKED:
            await self.cancel_appointment_in(tx, requester, appointment, reason)

    async def appointment_facts(
        self, session: AsyncSession, appointment_id: int
    ) -> AppointmentFacts | None:
        """An appointment's patient, place and time (None: no such appointment)."""
        row = (
            await session.execute(
                select(Appointment, Slot)
                .join(Slot, Slot.id == Appointment.slot_id)
                .where(Appointment.id == appointment_id)
            )
        ).first()
        if row is None:
            return None
        appointment, slot = row
        return AppointmentFacts(
            id=appointment.id,
            patient_id=appointment.patient_id,
            institution_id=slot.institution_id,
            department_id=slot.department_id,
            start=slot.start,
            status=appointment.status,
        )

    async def _appointment(self, session: AsyncSession, appointment_id: int) -> Appointment:
        appointment = await session.get(Appointment, appointment_id)
        if appointment is None:
            raise NotFound(f"no appointment {appointment_id}")
        return appointment

    async def cancel_appointment(
        self, requester: Requester, appointment_id: int, reason: str | None
    ) -> schemas.AppointmentOut:
        async with self.db.transaction() as tx:
            appointment = await self._appointment(tx.session, appointment_id)
            slot = await load_slot(tx.session, appointment.slot_id)
            if requester.role == Role.PATIENT:
                if requester.patient_id != appointment.patient_id:
                    raise NotFound(f"no appointment {appointment_id}")
                if appointment.status == AppointmentStatus.BOOKED:
                    await self.booking.check_cutoff(tx.session, slot)
            else:
                check_desk(requester, slot.institution_id)
            await self.cancel_appointment_in(tx, requester, appointment, reason)
            slot = await load_slot(tx.session, slot.id)
            [out] = await self._describe(tx.session, [(appointment, slot)])
            if requester.role == Role.PATIENT:
                local = slot.start.astimezone(self.zone)
                await self.inbox.notify(
                    tx,
                    kind="booking_cancelled",
                    title=f"已取消预约：{local:%m月%d日 %H:%M} {out.institution_name} "
                    f"{out.department_name}",
                    patients=[appointment.patient_id],
                    resource=f"Appointment/{appointment.id}",
                    data={"appointment_id": appointment.id, "slot_id": slot.id,
                          "start": slot.start.isoformat(), "reason": reason},
                )  # fmt: skip
            return out

    async def cancel_appointment_in(
        self, tx: Tx, requester: Requester, appointment: Appointment, reason: str | None
    ) -> None:
        """Cancel and free the place; a conditional update, so two cancels free it once."""
        freed = await tx.session.execute(
            update(Appointment)
            .where(Appointment.id == appointment.id, Appointment.status == AppointmentStatus.BOOKED)
            .values(
                status=AppointmentStatus.CANCELLED,
                holds=None,
                cancelled_at=utcnow(),
                cancel_reason=reason,
            )
            .execution_options(synchronize_session=False)
        )
        if rowcount(freed) != 1:
            raise Conflict("the appointment is already cancelled", code="appointment_cancelled")
        await tx.session.execute(
            update(Slot)
            .where(Slot.id == appointment.slot_id, Slot.booked > 0)
            .values(booked=Slot.booked - 1)
            .execution_options(synchronize_session=False)
        )
        await tx.session.refresh(appointment)
        await self.audit.record(
            tx.session,
            "appointment.cancel",
            actor=requester,
            patient_id=appointment.patient_id,
            resource=f"Appointment/{appointment.id}",
            reason=reason,
        )
        for listener in self.appointment_cancelled_listeners:
            await listener(tx, [booked(appointment)])
        if requester.role != Role.PATIENT:
            await self.inbox.notify(
                tx,
                kind="appointment.cancelled",
                title="Your appointment was cancelled",
                patients=[appointment.patient_id],
                resource=f"Appointment/{appointment.id}",
                data={"appointment_id": appointment.id, "reason": reason},
            )

    async def list_appointments(self, requester: Requester) -> list[schemas.AppointmentOut]:
        """A patient's own appointments; a desk's appointments at its institution."""
        stmt: Any = select(Appointment, Slot).join(Slot, Slot.id == Appointment.slot_id)
        if requester.role == Role.PATIENT:
            stmt = stmt.where(Appointment.patient_id == requester.patient_id)
        else:
            if requester.institution_id is None:
                return []
            check_desk(requester, requester.institution_id)
            stmt = stmt.where(Slot.institution_id == requester.institution_id)
        async with self.db.transaction() as tx:
            rows = list(
                await tx.session.execute(stmt.order_by(Slot.start, Appointment.id).limit(500))
            )
            await self.audit.record(
                tx.session,
                "appointment.list",
                actor=requester,
                patient_id=requester.patient_id,
                details={"count": len(rows)},
            )
            return await self._describe(tx.session, [(a, s) for a, s in rows])

    async def _describe(
        self, session: AsyncSession, rows: list[tuple[Appointment, Slot]]
    ) -> list[schemas.AppointmentOut]:
        """Appointments with where and with whom: institution, department, place, doctor."""
        slots = [slot for _, slot in rows]
        institutions = await self.directory.institutions(session, {s.institution_id for s in slots})
        department_ids = {s.department_id for s in slots}
        departments = {
            d: await self.directory.department(session, d) for d in sorted(department_ids)
        }
        profiles = {
            p.department_id: p
            for p in await session.scalars(
                select(DepartmentProfile).where(DepartmentProfile.department_id.in_(department_ids))
            )
        } if department_ids else {}  # fmt: skip
        doctors = await self.directory.users(
            session, {s.practitioner_id for s in slots if s.practitioner_id is not None}
        )
        policies = await self.booking.policies(session, {s.institution_id for s in slots})
        out = []
        for appointment, slot in rows:
            institution = institutions.get(slot.institution_id)
            department = departments.get(slot.department_id)
            profile = profiles.get(slot.department_id)
            doctor = doctors.get(slot.practitioner_id) if slot.practitioner_id else None
            out.append(
                appointment_out(
                    appointment,
                    slot,
                    institution_name=institution.name if institution else None,
                    department_name=department.name if department else None,
                    specialty=profile.specialty if profile else None,
                    place=place_of(profile),
                    note=profile.note if profile else None,
                    doctor_name=doctor.name if doctor else None,
                    doctor_title=doctor.title if doctor else None,
                    cancel_cutoff_at=slot.start
                    - timedelta(
                        hours=self.booking.effective_cutoff(profile, policies[slot.institution_id])
                    ),
                )
            )
        return out

    async def mark_attendance(
        self, requester: Requester, appointment_id: int, attended: bool
    ) -> schemas.AppointmentOut:
        """The desk (or a clinician) of the institution marks on the day whether the patient came."""
        async with self.db.transaction() as tx:
            appointment = await self._appointment(tx.session, appointment_id)
            slot = await load_slot(tx.session, appointment.slot_id)
            check_desk(requester, slot.institution_id)
            if appointment.status != AppointmentStatus.BOOKED:
                raise Conflict("the appointment was cancelled", code="appointment_cancelled")
            today = datetime.now(self.zone).date()
            day = slot.start.astimezone(self.zone).date()
            if day != today:
                raise Conflict(
                    f"attendance is marked on the day of the appointment ({day.isoformat()})",
                    code="attendance_not_today",
                    extra={"day": day.isoformat()},
                )
            now = utcnow()
            appointment.attended = attended
            appointment.attendance_marked_by = requester.user_id
            appointment.attendance_marked_at = now
            appointment.no_show_at = None if attended else (appointment.no_show_at or now)
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "appointment.attendance",
                actor=requester,
                patient_id=appointment.patient_id,
                resource=f"Appointment/{appointment.id}",
                details={"attended": attended},
            )
            [out] = await self._describe(tx.session, [(appointment, slot)])
            return out
