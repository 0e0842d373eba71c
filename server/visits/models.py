"""Tables of follow-up video visits (互联网复诊): the visit and its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class Visit(Base):
    """A patient's request for a follow-up video visit, and everything it became.

    ``consult_id`` is its room (a consult of kind ``followup``), opened by the doctor.
    ``record_retain_until`` (15 years) and ``media_retain_until`` (3 years: chat, audio,
    video) are the dates before which nothing of the visit may be purged.
    """

    __tablename__ = "visits"
    __table_args__ = (
        Index("ix_visits_doctor_status", "doctor_id", "status"),
        Index("ix_visits_patient", "patient_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False)
    patient_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    doctor_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    # The diagnosis made in person that this visit follows up (a Condition of the record).
    condition_id: Mapped[str] = mapped_column(String(64), nullable=False)
    condition_code: Mapped[str | None] = mapped_column(String(64))
    condition_display: Mapped[str] = mapped_column(String(300), nullable=False)
    # The condition's sensitive category (as the record classified it): the visit's
    # Encounter carries it, so a reader excluded from it never sees the visit either.
    condition_sensitivity: Mapped[str | None] = mapped_column(String(32))
    complaint: Mapped[str] = mapped_column(Text, nullable=False)
    # None: as soon as possible ("now").
    preferred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    guardian: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    decline_reason: Mapped[str | None] = mapped_column(Text)
    consult_id: Mapped[int | None] = mapped_column(ForeignKey("consults.id"))
    doctor_auth: Mapped[str | None] = mapped_column(String(16))
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    encounter_id: Mapped[str | None] = mapped_column(String(64))
    prescription_ids: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the patient was reminded of the visit's time (job ``visits.reminders``); once.
    reminder_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    record_retain_until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    media_retain_until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class VisitTransition(Base):
    """One step of a visit's life cycle: who moved it from where to where, and why."""

    __tablename__ = "visit_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    visit_id: Mapped[int] = mapped_column(
        ForeignKey("visits.id", ondelete="CASCADE"), nullable=False, index=True
    )
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16), nullable=False)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    note: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
