"""Shapes of the payments API: the fee schedule, orders, notifications, the sandbox payer."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, StrictInt, model_validator

from server.core.api import Strict
from server.payments.models import OrderStatus

ServiceKind = Literal["visit", "consult", "prescription", "appointment"]
# The largest fee or order: 100,000 yuan, in fen.
MAX_FEN = 10_000_000


class FeeItem(Strict):
    kind: ServiceKind
    department_id: StrictInt | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="the department's own fee; absent: the institution's",
    )
    amount_fen: StrictInt = Field(ge=0, le=MAX_FEN, description="integer fen (1 yuan = 100)")


class FeeSchedule(Strict):
    items: list[FeeItem] = Field(max_length=200)

    @model_validator(mode="after")
    def _unique(self) -> FeeSchedule:
        seen: set[tuple[str, int | None]] = set()
        for index, item in enumerate(self.items):
            key = (item.kind, item.department_id)
            if key in seen:
                raise ValueError(f"items.{index}: {item.kind} is listed twice for one department")
            seen.add(key)
        return self


class FeeOut(BaseModel):
    kind: ServiceKind
    department_id: int | None
    amount_fen: int
    updated_at: datetime


class FeeScheduleOut(BaseModel):
    institution_id: int
    items: list[FeeOut]


class OrderCreate(Strict):
    kind: ServiceKind
    subject_id: StrictInt = Field(ge=1, le=2**31 - 1)
    provider: str = Field(default="sandbox", min_length=1, max_length=32)


class PayInfo(BaseModel):
    """What the client needs to pay at the provider (never card data: the provider asks)."""

    provider: str
    pay_url: str
    code: str


class OrderOut(BaseModel):
    id: int
    kind: ServiceKind
    subject_id: int
    patient_id: int
    institution_id: int
    department_id: int | None
    amount_fen: int
    status: OrderStatus
    provider: str
    out_trade_no: str
    provider_trade_no: str | None
    pay: PayInfo | None
    refundable: bool = Field(description="whether the requester may ask for a refund now")
    refund_reason: str | None
    created_at: datetime
    paid_at: datetime | None
    refunded_at: datetime | None
    closed_at: datetime | None


class OrderList(BaseModel):
    items: list[OrderOut]


class RefundRequest(Strict):
    reason: str | None = Field(default=None, max_length=200)


class NotifyAnswer(BaseModel):
    """The answer a provider expects (WeChat Pay: 2xx with code SUCCESS)."""

    code: Literal["SUCCESS"] = "SUCCESS"
    order_id: int
    status: OrderStatus
    duplicate: bool


class SandboxPaid(BaseModel):
    out_trade_no: str
    state: str
    transaction_id: str | None


class SettlementLine(BaseModel):
    institution_id: int
    paid_count: int
    paid_fen: int
    refunded_count: int
    refunded_fen: int


class Mismatch(BaseModel):
    order_id: int
    out_trade_no: str
    ours: str
    provider: str
    reason: str


class Reconciliation(BaseModel):
    day: date
    settlement: list[SettlementLine]
    mismatches: list[Mismatch]
