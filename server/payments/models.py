"""Tables of payments: the fee schedule, orders, payment events, the sandbox provider's trades.

Money is integer fen everywhere (``amount_fen``): no floats, no card data. The
``payment_events`` row of each payment or refund carries a unique ``event_key``
(provider, kind, the provider's transaction or refund id), so a notification
processed twice, or a notification and the reconciliation job both, record it once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class OrderStatus(StrEnum):
    CREATED = "created"
    PAID = "paid"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    CLOSED = "closed"


class Fee(Base):
    """One line of an institution's fee schedule: a service kind (in a department) costs so much."""

    __tablename__ = "payment_fees"
    __table_args__ = (CheckConstraint("amount_fen >= 0", name="fee_not_negative"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    # NULL: the institution's fee for the kind, whatever the department.
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    amount_fen: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Order(Base):
    __tablename__ = "payment_orders"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="order_amount_positive"),
        Index("ix_payment_orders_subject", "kind", "subject_id"),
        Index("ix_payment_orders_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False, index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    subject_id: Mapped[int] = mapped_column(Integer, nullable=False)
    # "<kind>:<subject_id>" while the order is active (created, paid, refunding), NULL once
    # closed or refunded: one active order per subject, enforced by the database.
    holds: Mapped[str | None] = mapped_column(String(64), unique=True)
    department_id: Mapped[int | None] = mapped_column(Integer)
    amount_fen: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=OrderStatus.CREATED)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    # Our trade number at the provider (out_trade_no), and theirs once paid (transaction_id).
    out_trade_no: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    provider_trade_no: Mapped[str | None] = mapped_column(String(64))
    # What the payer's client needs (the provider's page and code), while unpaid.
    pay_url: Mapped[str | None] = mapped_column(String(300))
    pay_code: Mapped[str | None] = mapped_column(String(32))
    refund_no: Mapped[str | None] = mapped_column(String(64))
    refund_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refund_reason: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PaymentEvent(Base):
    """A payment or refund as recorded: once per provider transaction (or refund) id."""

    __tablename__ = "payment_events"
    __table_args__ = (UniqueConstraint("event_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(
        ForeignKey("payment_orders.id"), nullable=False, index=True
    )
    # "<provider>:<paid|refunded>:<transaction or refund id>"
    event_key: Mapped[str] = mapped_column(String(140), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # paid | refunded
    amount_fen: Mapped[int] = mapped_column(Integer, nullable=False)
    # How we learned it: "notify" (the provider's notification), "query" (reconciliation),
    # "refund" (the provider's answer to our refund request).
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SandboxTrade(Base):
    """The built-in sandbox provider's own ledger (a real provider keeps this on its side)."""

    __tablename__ = "payment_sandbox_trades"

    out_trade_no: Mapped[str] = mapped_column(String(64), primary_key=True)
    amount_fen: Mapped[int] = mapped_column(Integer, nullable=False)
    description: Mapped[str] = mapped_column(String(128), nullable=False)
    # NOTPAY, SUCCESS, REFUND, CLOSED (WeChat Pay's trade_state names).
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="NOTPAY")
    transaction_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    code: Mapped[str] = mapped_column(String(16), nullable=False)
    charges: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    refund_id: Mapped[str | None] = mapped_column(String(64))
    refund_no: Mapped[str | None] = mapped_column(String(64))
    refunded_fen: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
