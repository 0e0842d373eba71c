"""The triage log: every suggestion given, with what was said and what matched."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime


class TriageLog(Base):
    __tablename__ = "triage_logs"
    __table_args__ = (Index("ix_triage_logs_patient_id_id", "patient_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The patient it was for (their own data); None for a practitioner trying the triage.
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    # What the patient wrote (at most 500 characters) and what the form said.
    text: Mapped[str] = mapped_column(Text, nullable=False)
    age: Mapped[int | None] = mapped_column(Integer)
    sex: Mapped[str | None] = mapped_column(String(8))
    pregnant: Mapped[bool | None] = mapped_column(Boolean)
    # Symptom ids that matched, and red flag ids raised.
    matched: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    red_flags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    urgency: Mapped[str] = mapped_column(String(16), nullable=False)
    # The whole answer as it was given (departments, words, disclaimer), for the history.
    suggestion: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    knowledge_version: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
