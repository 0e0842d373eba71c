"""Tables of the prescriptions capability: the drug catalogue, prescriptions, their
status history, deliveries to pharmacies, dispensations and the pharmacies' profiles."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class PrescriptionStatus(StrEnum):
    SIGNED = "signed"
    SENT = "sent"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    READY = "ready"  # ready for pickup at the chosen pharmacy
    REJECTED = "rejected"
    DISPENSED = "dispensed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Drug(Base):
    __tablename__ = "drugs"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    drug_class: Mapped[str] = mapped_column(String(64), nullable=False)
    strength: Mapped[str] = mapped_column(String(32), nullable=False)
    dose_unit: Mapped[str] = mapped_column(String(8), nullable=False)
    max_daily_dose: Mapped[float] = mapped_column(Float, nullable=False)
    # narcotic / psychotropic / toxic: never prescribed online
    restricted: Mapped[str | None] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class DrugInteraction(Base):
    __tablename__ = "drug_interactions"

    # Stored with drug_a < drug_b so one pair has one row.
    drug_a: Mapped[str] = mapped_column(String(32), primary_key=True)
    drug_b: Mapped[str] = mapped_column(String(32), primary_key=True)
    severity: Mapped[str] = mapped_column(String(16), nullable=False)
    description: Mapped[str] = mapped_column(String(500), nullable=False)


class ChronicCondition(Base):
    __tablename__ = "chronic_conditions"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)  # ICD-10 category
    display: Mapped[str] = mapped_column(String(100), nullable=False)


class Prescription(Base):
    __tablename__ = "prescriptions"
    __table_args__ = (
        UniqueConstraint("prescriber_id", "idempotency_key"),
        Index("ix_prescriptions_pharmacy_status", "pharmacy_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False, index=True)
    prescriber_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    pharmacy_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id"))
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # The signed canonical form (what the signature covers) and the signature.
    content: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    signature: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    review_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class PrescriptionHistory(Base):
    """Every status change, who made it and why: the full trail (全程留痕)."""

    __tablename__ = "prescription_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prescription_id: Mapped[int] = mapped_column(
        ForeignKey("prescriptions.id"), nullable=False, index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    actor_user_id: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)


class Delivery(Base):
    """A version of a prescription sent to a pharmacy; pending until the pharmacy acknowledges.

    The committed stream event (``stream``/``seq``) is the outbox: the relay and
    the pending query read from here, so nothing depends on the live push.
    """

    __tablename__ = "prescription_deliveries"
    __table_args__ = (UniqueConstraint("prescription_id", "pharmacy_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prescription_id: Mapped[int] = mapped_column(ForeignKey("prescriptions.id"), nullable=False)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    stream: Mapped[str] = mapped_column(String(100), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acked_by: Mapped[int | None] = mapped_column(Integer)


Index("ix_prescription_deliveries_pending", Delivery.pharmacy_id, Delivery.acked_at)


class Dispensation(Base):
    """What was handed out. One per prescription, enforced by the database."""

    __tablename__ = "prescription_dispensations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prescription_id: Mapped[int] = mapped_column(
        ForeignKey("prescriptions.id"), nullable=False, unique=True
    )
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    pharmacist_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class PharmacyProfile(Base):
    """What a patient needs to choose a pharmacy: where it is, when it is open, its phone.

    One per pharmacy institution; the name is the institution's. ``hours`` is the weekly
    opening hours, ``[{"days": [1, 2, 3, 4, 5], "opens": "08:00", "closes": "21:00"}]``
    (ISO weekdays, Monday 1; local time, China; ``"24:00"`` closes at midnight).
    """

    __tablename__ = "pharmacy_profiles"

    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), primary_key=True)
    district: Mapped[str] = mapped_column(String(6), nullable=False, index=True)  # region code
    address: Mapped[str] = mapped_column(String(200), nullable=False)
    phone: Mapped[str | None] = mapped_column(String(20))
    hours: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
