"""Tables of scheduling: weekly templates, holidays, slots and appointments; booking's
department profiles and per-institution policies."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class SlotStatus(StrEnum):
    OPEN = "open"
    CANCELLED = "cancelled"


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"


class ScheduleTemplate(Base):
    """A weekly rule: every <weekday> from <start> local time, <count> slots of <minutes>."""

    __tablename__ = "schedule_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id"), nullable=False, index=True
    )
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), nullable=False)
    practitioner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    weekday: Mapped[int] = mapped_column(Integer, nullable=False)  # 0 Monday … 6 Sunday
    start_time: Mapped[str] = mapped_column(String(5), nullable=False)  # "HH:MM", local
    slot_minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    slot_count: Mapped[int] = mapped_column(Integer, nullable=False)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    visit_type: Mapped[str] = mapped_column(String(16), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Holiday(Base):
    __tablename__ = "schedule_holidays"
    __table_args__ = (UniqueConstraint("institution_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False)


class Slot(Base):
    __tablename__ = "slots"
    __table_args__ = (
        # Generating a template's slots twice creates nothing new.
        UniqueConstraint("template_id", "start"),
        Index("ix_slots_department_start", "department_id", "start"),
        CheckConstraint("booked >= 0 AND booked <= capacity", name="booked_within_capacity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), nullable=False)
    practitioner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    template_id: Mapped[int | None] = mapped_column(ForeignKey("schedule_templates.id"))
    start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    minutes: Mapped[int] = mapped_column(Integer, nullable=False)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    booked: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    visit_type: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    cancel_reason: Mapped[str | None] = mapped_column(String(200))


class Appointment(Base):
    __tablename__ = "appointments"
    __table_args__ = (
        # ``holds`` is the slot id while the appointment is active, NULL once cancelled:
        # a patient holds at most one place on a slot, enforced by the database.
        UniqueConstraint("patient_id", "holds"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("slots.id"), nullable=False, index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False, index=True)
    booked_by: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    referral_id: Mapped[int | None] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="booked")
    holds: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_reason: Mapped[str | None] = mapped_column(String(200))
    # Booking (issue 19): the desk's attendance mark, the no-show job's mark, the reminder.
    attended: Mapped[bool | None] = mapped_column(Boolean)
    attendance_marked_by: Mapped[int | None] = mapped_column(Integer)
    attendance_marked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    no_show_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminder_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DepartmentProfile(Base):
    """What a patient needs to book a department: its specialty, where it is, its cut-off."""

    __tablename__ = "department_profiles"

    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), primary_key=True)
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id"), nullable=False, index=True
    )
    specialty: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    building: Mapped[str | None] = mapped_column(String(50))
    floor: Mapped[str | None] = mapped_column(String(20))
    room: Mapped[str | None] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(String(500))
    note: Mapped[str | None] = mapped_column(String(200))
    # Overrides the institution's policy when set.
    cancel_cutoff_hours: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class BookingPolicy(Base):
    """An institution's booking rules (the settings' defaults when it has no row)."""

    __tablename__ = "booking_policies"

    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), primary_key=True)
    cancel_cutoff_hours: Mapped[int] = mapped_column(Integer, nullable=False)
    no_show_limit: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_by: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
