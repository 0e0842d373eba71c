"""Shapes of the scheduling API: templates, holidays, slots, appointments; booking's
directory, department profiles, policy and attendance."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from server.core.api import Strict
from server.scheduling.models import AppointmentStatus, SlotStatus
from server.scheduling.specialties import CODES

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


class Place(BaseModel):
    building: str | None = None
    floor: str | None = None
    room: str | None = None


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
    # Where and with whom (what the patient reads), and the booking marks.
    institution_name: str | None = None
    department_name: str | None = None
    specialty: str | None = None
    place: Place | None = None
    note: str | None = None
    doctor_name: str | None = None
    doctor_title: str | None = None
    cancel_cutoff_at: datetime | None = Field(
        default=None, description="a patient may cancel until then (the institution's cut-off)"
    )
    attended: bool | None = None
    no_show: bool = False


class AppointmentList(BaseModel):
    items: list[AppointmentOut]


class AppointmentCancel(Strict):
    reason: str | None = Field(default=None, max_length=200)


# --- booking (预约挂号) ------------------------------------------------------------------

MAX_DIRECTORY_DAYS = 31


def _specialty(value: str | None) -> str | None:
    if value is not None and value not in CODES:
        raise ValueError(f"not a specialty code: {value!r}")
    return value


class DirectoryQuery(Strict):
    specialty: str | None = Field(default=None, description="a specialty code (GET /specialties)")
    institution: int | None = Field(default=None, description="an institution id")
    date_from: date | None = Field(default=None, description="local day; default today")
    date_to: date | None = Field(default=None, description="local day; default 13 days later")
    slots_per_doctor: int = Field(default=6, ge=1, le=20)
    limit: int = Field(default=20, ge=1, le=50, description="institutions per page")
    offset: int = Field(default=0, ge=0, le=10_000)

    _check_specialty = field_validator("specialty")(_specialty)

    @model_validator(mode="after")
    def _range(self) -> DirectoryQuery:
        if self.date_from and self.date_to:
            if self.date_to < self.date_from:
                raise ValueError("date_to is before date_from")
            if (self.date_to - self.date_from).days >= MAX_DIRECTORY_DAYS:
                raise ValueError(f"look at most {MAX_DIRECTORY_DAYS} days at a time")
        return self


class FreeSlot(BaseModel):
    id: int
    start: datetime
    minutes: int
    available: int
    visit_type: VisitType


class DoctorEntry(BaseModel):
    id: int | None = Field(description="null: the department's clinic (普通门诊), no named doctor")
    name: str | None
    title: str | None
    slots: list[FreeSlot]


class DepartmentEntry(BaseModel):
    id: int
    name: str
    specialty: str | None
    specialty_zh: str | None
    specialty_en: str | None
    place: Place
    description: str | None
    note: str | None
    cancel_cutoff_hours: int
    doctors: list[DoctorEntry]


class InstitutionEntry(BaseModel):
    id: int
    code: str
    name: str
    kind: str
    region: str | None
    departments: list[DepartmentEntry]


class DirectoryOut(BaseModel):
    items: list[InstitutionEntry]
    total: int = Field(description="institutions matching, over all pages")
    offset: int
    limit: int
    next_offset: int | None
    date_from: date
    date_to: date


class SpecialtyOut(BaseModel):
    code: str
    zh: str
    en: str


class SpecialtyList(BaseModel):
    items: list[SpecialtyOut]


class DepartmentProfileIn(Strict):
    specialty: str
    building: str | None = Field(default=None, max_length=50)
    floor: str | None = Field(default=None, max_length=20)
    room: str | None = Field(default=None, max_length=50)
    description: str | None = Field(default=None, max_length=500)
    note: str | None = Field(default=None, max_length=200, description="shown on appointments")
    cancel_cutoff_hours: int | None = Field(
        default=None, ge=0, le=24 * 14, description="null: the institution's policy"
    )

    _check_specialty = field_validator("specialty")(_specialty)


class DepartmentProfileOut(BaseModel):
    department_id: int
    institution_id: int
    name: str
    specialty: str
    place: Place
    description: str | None
    note: str | None
    cancel_cutoff_hours: int | None


class PolicyIn(Strict):
    cancel_cutoff_hours: int = Field(ge=0, le=24 * 14)
    no_show_limit: int = Field(ge=1, le=100)


class PolicyOut(BaseModel):
    institution_id: int
    cancel_cutoff_hours: int
    no_show_limit: int
    no_show_days: int
    reminder_hours: float
    default: bool = Field(description="true: the settings' defaults (the institution set none)")


class Attendance(Strict):
    attended: bool
