"""The shared record: every FHIR resource pushed by an institution, kept as JSON.

Clinical resources are also indexed (patient, type, code, date, status,
sensitive category) for searches and the clinician views. A resource is
identified in its source by (institution, type, source id); pushing it again
updates the same row and raises its version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class RecordEntry(Base):
    __tablename__ = "record_entries"
    __table_args__ = (
        UniqueConstraint("institution_id", "resource_type", "source_id"),
        Index("ix_record_entries_patient_type_date", "patient_id", "resource_type", "date"),
        Index("ix_record_entries_patient_code", "patient_id", "code"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(64), nullable=False)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    source_id: Mapped[str] = mapped_column(String(128), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    code: Mapped[str | None] = mapped_column(String(128))
    code_system: Mapped[str | None] = mapped_column(String(200))
    display: Mapped[str | None] = mapped_column(String(300))
    date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str | None] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(64))
    sensitivity: Mapped[str | None] = mapped_column(String(32))
    resource: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
