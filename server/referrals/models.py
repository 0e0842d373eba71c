"""Tables of referrals: the referral and its status history."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.core.db import Base, UTCDateTime, utcnow


class ReferralStatus(StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    ARRIVED = "arrived"
    COMPLETED = "completed"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Referral(Base):
    __tablename__ = "referrals"
    __table_args__ = (
        Index("ix_referrals_patient_purpose", "patient_id", "purpose"),
        Index("ix_referrals_status_expires", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), nullable=False)  # up | down
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False)
    purpose: Mapped[str] = mapped_column(String(100), nullable=False)
    from_institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id"), nullable=False, index=True
    )
    from_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    to_institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id"), nullable=False, index=True
    )
    to_department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    to_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    working_diagnosis: Mapped[str | None] = mapped_column(String(200))
    urgency: Mapped[str] = mapped_column(String(16), nullable=False)
    summary: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    discharge_summary: Mapped[str | None] = mapped_column(Text)
    follow_up: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    consult_id: Mapped[int | None] = mapped_column(Integer, index=True)
    consult_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    status_reason: Mapped[str | None] = mapped_column(String(500))
    appointment_id: Mapped[int | None] = mapped_column(Integer)
    superseded_by_id: Mapped[int | None] = mapped_column(ForeignKey("referrals.id"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    history: Mapped[list[ReferralHistory]] = relationship(
        lazy="raise_on_sql",
        order_by="ReferralHistory.id",
        foreign_keys="ReferralHistory.referral_id",
    )


class ReferralHistory(Base):
    __tablename__ = "referral_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[int] = mapped_column(
        ForeignKey("referrals.id", ondelete="CASCADE"), nullable=False, index=True
    )
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16), nullable=False)
    actor_user_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
