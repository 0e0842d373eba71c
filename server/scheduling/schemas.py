"""Shapes of the scheduling API: templates, holidays, slots, appointments."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from server.core.api import Strict
from server.scheduling.models import AppointmentStatus, SlotStatus

VisitType = Literal["in_person", "remote"]
MAX_GENERATE_DAYS = 92


class TemplateCreate(Strict):
    department_id: int
    practitioner_id: int | None = None
    weekday: int = Field(ge=0, le=6, description="0 Monday … 6 Sunday")
    start_time: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, local")
    slot_minutes: int = Field(ge=5, le=240)
    slot_count: int = Field(ge=1, le=48)
    capacity: int = Field(ge=1, le=500)
    visit_type: VisitType = "in_person"


class TemplateOut(BaseModel):
    id: int
    institution_id: int
    department_id: int
    practitioner_id: int | None
    weekday: int
    start_time: str
    slot_minutes: int
    slot_count: int
    capacity: int
    visit_type: VisitType


class TemplateQuery(Strict):
    department_id: int | None = None


class TemplateList(BaseModel):
    items: list[TemplateOut]


class GenerateSlots(Strict):
    department_id: int
    from_date: date
    to_date: date

    @model_validator(mode="after")
    def _range(self) -> GenerateSlots:
        if self.to_date < self.from_date:
            raise ValueError("to_date is before from_date")
        if (self.to_date - self.from_date).days >= MAX_GENERATE_DAYS:
            raise ValueError(f"generate at most {MAX_GENERATE_DAYS} days at a time")
        return self


class GenerateResult(BaseModel):
    created: int
    holidays: list[date]


class HolidayCreate(Strict):
    day: date
    reason: str = Field(min_length=1, max_length=200)


class HolidayOut(BaseModel):
    day: date
    reason: str
    cancelled_slots: list[int]


class HolidayItem(BaseModel):
    day: date
    reason: str


class HolidayQuery(Strict):
    day_from: date | None = Field(default=None, alias="from")


class HolidayList(BaseModel):
    items: list[HolidayItem]


class SlotQuery(Strict):
    institution_id: int | None = None
    department_id: int | None = None
    visit_type: VisitType | None = None
    start_from: datetime | None = None
    start_to: datetime | None = None
    available: bool = False


class SlotOut(BaseModel):
    id: int
    institution_id: int
    department_id: int
    practitioner_id: int | None
    start: datetime
    minutes: int
    capacity: int
    booked: int
    available: int
    visit_type: VisitType
    status: SlotStatus
    cancel_reason: str | None


class SlotList(BaseModel):
    items: list[SlotOut]


class SlotCancel(Strict):
    reason: str = Field(min_length=1, max_length=200)


class AppointmentCreate(Strict):
    slot_id: int
    patient_id: int | None = Field(
        default=None, description="required when a desk books; a patient books for themself"
    )


class AppointmentOut(BaseModel):
    id: int
    slot: SlotOut
    patient_id: int
    booked_by: int
    referral_id: int | None
    status: AppointmentStatus
    created_at: datetime
    cancelled_at: datetime | None
    cancel_reason: str | None


class AppointmentList(BaseModel):
    items: list[AppointmentOut]


class AppointmentCancel(Strict):
    reason: str | None = Field(default=None, max_length=200)
