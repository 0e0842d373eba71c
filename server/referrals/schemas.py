"""Shapes of the referrals API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from server.core.api import Strict
from server.core.history import HistoryEntry
from server.referrals.models import ReferralStatus

Direction = Literal["up", "down"]
Urgency = Literal["routine", "urgent", "emergency"]
Status = ReferralStatus


class FollowUpTask(Strict):
    title: str = Field(min_length=1, max_length=200)
    due_date: date | None = None
    detail: str | None = Field(default=None, max_length=1000)


class ReferralCreate(Strict):
    direction: Direction
    patient_id: int
    purpose: str = Field(
        min_length=1,
        max_length=100,
        description="what the referral is for; a newer open referral of the patient "
        "with the same direction and purpose supersedes this one",
    )
    to_institution_id: int
    to_department_id: int | None = Field(default=None, description="required going up")
    to_user_id: int | None = Field(default=None, description="a named receiving doctor")
    reason: str = Field(min_length=1, max_length=4000)
    working_diagnosis: str | None = Field(default=None, max_length=200)
    urgency: Urgency = "routine"
    summary: str | None = Field(default=None, max_length=20000)
    attachments: list[str] = Field(
        default_factory=list, max_length=50, description='record items, e.g. "Observation/12"'
    )
    discharge_summary: str | None = Field(
        default=None, max_length=20000, description="required going down"
    )
    follow_up: list[FollowUpTask] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _direction_fields(self) -> ReferralCreate:
        for ref in self.attachments:
            if not _is_record_ref(ref):
                raise ValueError(f"attachment '{ref}' is not a record item reference (Type/id)")
        if self.direction == "up" and self.to_department_id is None:
            raise ValueError("an up-referral names the receiving department (to_department_id)")
        if self.direction == "down" and not self.discharge_summary:
            raise ValueError("a down-referral carries a discharge summary")
        return self


def _is_record_ref(ref: str) -> bool:
    kind, _, number = ref.partition("/")
    return kind[:1].isupper() and kind.isalpha() and number.isdigit()


class AcceptRequest(Strict):
    slot_id: int | None = Field(default=None, description="book this slot and schedule at once")
    note: str | None = Field(default=None, max_length=500)


class ScheduleRequest(Strict):
    slot_id: int


class ReasonRequest(Strict):
    reason: str = Field(min_length=1, max_length=500)


class NoteRequest(Strict):
    note: str | None = Field(default=None, max_length=500)


class ReferralQuery(Strict):
    box: Literal["received", "sent"] = "received"
    status: Status | None = None


class ReferralOut(BaseModel):
    id: int
    direction: Direction
    patient_id: int
    purpose: str
    from_institution_id: int
    from_user_id: int
    to_institution_id: int
    to_department_id: int | None
    to_user_id: int | None
    reason: str | None = Field(description="withheld (null) after the patient revoked you")
    working_diagnosis: str | None
    urgency: Urgency
    summary: str | None
    attachments: list[str]
    discharge_summary: str | None
    follow_up: list[dict[str, Any]]
    consult_id: int | None
    consult_snapshot: dict[str, Any] | None
    status: Status
    status_reason: str | None
    appointment_id: int | None
    superseded_by_id: int | None
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    history: list[HistoryEntry]
    withheld: dict[str, Any] | None = Field(
        default=None,
        description='what consent kept out: {"count": n, "reason": "consent"} (attachments, '
        'snapshot items) or, after a revocation, {"fields": [...], "reason": "consent"}',
    )


class ReferralList(BaseModel):
    items: list[ReferralOut]
