"""Tables of scheduling: weekly templates, holidays, slots and appointments."""

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
