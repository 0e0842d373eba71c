"""Request and answer models of the shared record's clinician views and consent."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal, get_args

from pydantic import BaseModel, Field

from server.access import SENSITIVE_CATEGORIES
from server.core.api import Strict
from server.core.types import Code

SensitiveCategory = Literal[
    "mental_health", "reproductive_health", "hiv", "substance_use", "genetic"
]
assert set(get_args(SensitiveCategory)) == set(SENSITIVE_CATEGORIES)


class SourceInstitution(BaseModel):
    id: int
    code: str
    name: str


class RecordItem(BaseModel):
    """One entry of the shared record, as a clinician sees it."""

    id: int
    resource_type: str
    code: str | None
    code_system: str | None
    display: str | None
    date: datetime | None
    status: str | None
    category: str | None
    institution: SourceInstitution
    ingested_at: datetime


class TrendPoint(BaseModel):
    date: datetime | None
    value: float | None


class LabResult(RecordItem):
    value: float | str | None
    unit: str | None
    interpretation: str | None = Field(description="the abnormal flag (H, L, HH, LL, A …)")
    abnormal: bool
    reference_range: str | None
    trend: list[TrendPoint] = Field(description="earlier results of the same code, newest first")
    direction: Literal["up", "down", "stable"] | None


class ClinicalSummary(BaseModel):
    patient_id: int
    active_problems: list[RecordItem]
    recent_labs: list[LabResult]
    current_medications: list[RecordItem]
    allergies: list[RecordItem]
    access_reason: str


class Timeline(BaseModel):
    patient_id: int
    items: list[RecordItem]
    total: int
    next_offset: int | None
    access_reason: str


class TimelineQuery(Strict):
    type: str | None = Field(default=None, pattern=r"^[A-Z][A-Za-z]{1,63}$")
    date_from: date | None = Field(default=None, alias="from")
    date_to: date | None = Field(default=None, alias="to")
    institution: Code | None = None
    code: str | None = Field(default=None, max_length=128)
    limit: int = Field(default=100, ge=1, le=500)
    offset: int = Field(default=0, ge=0)


class ConsentSet(Strict):
    granted: bool
    excluded_categories: list[SensitiveCategory] = Field(default_factory=list)


class ConsentOut(BaseModel):
    institution: SourceInstitution
    granted: bool
    excluded_categories: list[str]
    updated_at: datetime


class ConsentList(BaseModel):
    items: list[ConsentOut]


class AccessLogQuery(Strict):
    before: int | None = Field(
        default=None, ge=1, le=2**62, description="the `next_before` of the previous page"
    )
    limit: int = Field(default=50, ge=1, le=200)
    grouped: bool = Field(
        default=False,
        description="one line per session of access: consecutive entries of the same person, "
        "institution and kind within 30 minutes are one item (`count`, `first_at`, `actions`); "
        "`limit` then counts sessions",
    )


AccessKind = Literal["read", "write", "denied", "emergency", "other"]


class AccessLogEntry(BaseModel):
    seq: int = Field(description="the audit entry's sequence number")
    at: datetime
    user_id: int | None
    user_name: str | None
    role: str | None
    institution: SourceInstitution | None
    action: str
    outcome: str
    reason: str | None
    resources: str | None
    ip: str | None
    emergency: bool
    kind: AccessKind = Field(
        description="what was done: read (查阅), write (上传: a push or an import), denied "
        "(拒绝), emergency (紧急访问: break the glass), other (an action on a consult, "
        "prescription, appointment … about the patient)"
    )
    count: int = Field(default=1, description="entries in this session (1 when not grouped)")
    first_at: datetime = Field(description="the session's first entry (`at` is its last)")
    first_seq: int = Field(description="the session's first entry's `seq` (`seq` is its last)")
    actions: list[str] = Field(description="the distinct actions of the session, newest first")


class AccessLog(BaseModel):
    items: list[AccessLogEntry]
    next_before: int | None = Field(
        description="pass as `before` for the next (older) page; null on the last page"
    )
