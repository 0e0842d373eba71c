"""Requests and answers of follow-up video visits (also the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from server.core.api import Strict
from server.core.types import PersonName, PlainText

Status = Literal[
    "requested", "accepted", "waiting", "in_progress", "completed", "declined", "cancelled"
]
Text = Annotated[PlainText, StringConstraints(min_length=1, max_length=4000, strip_whitespace=True)]
ShortText = Annotated[
    PlainText, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)
]
Relation = Annotated[
    PlainText, StringConstraints(min_length=1, max_length=20, strip_whitespace=True)
]


class Guardian(Strict):
    """The guardian present at a child's visit (a child under 6 is seen only so)."""

    name: PersonName
    relation: Relation = Field(description="e.g. 母亲, 父亲")
    resident_id: str = Field(min_length=15, max_length=18, description="GB 11643, an adult's")


class VisitCreate(Strict):
    doctor_id: int = Field(gt=0, description="the doctor asked (a specialist or gp)")
    condition_id: str = Field(
        min_length=1,
        max_length=64,
        description="a Condition of the patient's record diagnosed at an in-person encounter",
    )
    complaint: Text
    preferred_at: AwareDatetime | None = Field(
        default=None, description="when the patient would like it; none: as soon as possible"
    )
    guardian: Guardian | None = Field(default=None, description="required under 6")


class VisitDecline(Strict):
    reason: ShortText


class VisitOpen(Strict):
    """The doctor's authentication before the visit, unless the login is fresh enough."""

    password: str | None = Field(default=None, min_length=1, max_length=256)
    totp: Annotated[str, StringConstraints(pattern=r"^\d{6}$")] | None = None


class VisitRecord(Strict):
    """The visit record (a note): written by the doctor, kept in the patient's record."""

    complaint: Text
    findings: Text
    assessment: Text
    plan: Text


class VisitRecordOut(BaseModel):
    complaint: str
    findings: str
    assessment: str
    plan: str


class VisitPrescriptionLink(Strict):
    prescription_id: int = Field(gt=0, description="a prescription the doctor signed for it")


class GuardianOut(BaseModel):
    name: str
    relation: str
    resident_id_masked: str


class VisitOut(BaseModel):
    id: int
    status: Status
    patient_id: int
    patient_user_id: int
    patient_name: str | None
    doctor_id: int
    doctor_name: str | None
    doctor_title: str | None
    department: str | None
    institution_id: int
    institution_name: str | None
    condition_id: str
    condition_code: str | None
    condition_display: str
    complaint: str
    preferred_at: datetime | None
    guardian: GuardianOut | None
    decline_reason: str | None
    consult_id: int | None = Field(description="the visit's room (a consult of kind followup)")
    record: VisitRecordOut | None
    encounter_id: str | None = Field(description="the Encounter (class VR) in the record")
    prescription_ids: list[int]
    opened_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    record_retain_until: datetime
    media_retain_until: datetime
    created_at: datetime
    updated_at: datetime


class VisitList(BaseModel):
    items: list[VisitOut]


class FollowUpCondition(BaseModel):
    """A diagnosis in the patient's record, and whether it was made in person."""

    id: str
    code: str | None
    display: str
    in_person: bool


class FollowUpConditionList(BaseModel):
    items: list[FollowUpCondition]
    guardian_required: bool = Field(description="the patient is under 6: name a guardian")


class VisitDoctor(BaseModel):
    id: int
    name: str | None
    title: str | None
    department: str | None
    institution_id: int
    institution_name: str | None


class VisitDoctorList(BaseModel):
    items: list[VisitDoctor]
