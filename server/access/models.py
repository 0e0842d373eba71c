"""Access's tables: care relationships, access windows and the patient's consents."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


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
