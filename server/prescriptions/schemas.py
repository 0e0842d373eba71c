"""Request and answer models of the prescriptions capability."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from server.core.api import Strict
from server.core.types import PlainText
from server.prescriptions.models import PrescriptionStatus

Kind = Literal["normal", "emergency", "long_term"]
Route = Literal["口服", "舌下", "吸入", "外用", "皮下注射", "肌内注射", "静脉注射", "经皮", "滴眼"]
Frequency = Literal["qd", "bid", "tid", "qid", "q8h", "q12h", "qn", "qw", "prn"]
Status = PrescriptionStatus
QueueStatus = Literal["new", "under_review", "approved", "ready", "rejected", "dispensed", "all"]
District = Literal["市南区", "市北区", "黄岛区", "崂山区", "李沧区", "城阳区"]
Severity = Literal["minor", "moderate", "severe"]

# Administrations per day; prn counts as at most four a day for the dose check.
TIMES_PER_DAY: dict[str, float] = {
    "qd": 1, "bid": 2, "tid": 3, "qid": 4, "q8h": 3, "q12h": 2, "qn": 1, "qw": 1 / 7, "prn": 4,
}  # fmt: skip


class Diagnosis(Strict):
    system: Literal["ICD-10"] = "ICD-10"
    code: str = Field(pattern=r"^[A-Z]\d{2}(\.\d{1,4})?$", description="ICD-10 code, e.g. I10")
    display: PlainText = Field(min_length=1, max_length=100)


class Item(Strict):
    drug_code: str = Field(min_length=1, max_length=32)
    drug_name: PlainText = Field(min_length=1, max_length=100)
    strength: PlainText = Field(min_length=1, max_length=32)
    dose: float = Field(gt=0, le=100000, description="per administration, in dose_unit")
    dose_unit: str = Field(min_length=1, max_length=8)
    route: Route
    frequency: Frequency
    days: int = Field(ge=1, le=366)
    quantity: int = Field(ge=1, le=1000, description="packs or units handed out")
    unit: PlainText = Field(default="盒", min_length=1, max_length=8)


class PrescriptionBody(Strict):
    diagnosis: Diagnosis
    items: list[Item] = Field(min_length=1, max_length=5)
    kind: Kind = "normal"
    validity_days: int = Field(
        default=1, ge=1, le=30, description="1 = the day of issue; at most 3"
    )
    stable_condition: bool = Field(
        default=False, description="long-term only: the doctor attests a stable chronic condition"
    )
    evaluation: PlainText | None = Field(
        default=None, max_length=2000, description="documented evaluation (long-term > 4 weeks)"
    )
    notes: PlainText | None = Field(default=None, max_length=2000)
    override_reason: PlainText | None = Field(
        default=None, max_length=500, description="why severe check findings are overridden"
    )

    @model_validator(mode="after")
    def _distinct_drugs(self) -> PrescriptionBody:
        codes = [item.drug_code for item in self.items]
        if len(set(codes)) != len(codes):
            raise ValueError("a drug appears twice; write one item per drug")
        return self


class PrescriptionCreate(PrescriptionBody):
    patient_id: int = Field(gt=0)
    pharmacy_id: int | None = Field(
        default=None, gt=0, description="the pharmacy the patient chose (doctor routes for them)"
    )


class Finding(BaseModel):
    code: Literal["allergy", "interaction", "duplicate_therapy", "dose_over_maximum"]
    severity: Severity
    message: str
    drugs: list[str]


class CheckResult(BaseModel):
    findings: list[Finding]
    blocking: bool


class RouteRequest(Strict):
    pharmacy_id: int = Field(gt=0)
    patient_choice: bool = Field(
        default=False, description="a doctor routing confirms this is the patient's choice"
    )


class ReviewRequest(Strict):
    decision: Literal["start", "approve", "reject"]
    reason: PlainText | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _reason(self) -> ReviewRequest:
        if self.decision == "reject" and not self.reason:
            raise ValueError("a rejection needs a reason")
        return self


class PrescriptionCancel(Strict):
    reason: PlainText = Field(min_length=1, max_length=1000)


class DispensedItem(Strict):
    drug_code: str = Field(min_length=1, max_length=32)
    quantity: int = Field(ge=1, le=1000)
    batch: PlainText | None = Field(default=None, max_length=40)


class DispenseRequest(Strict):
    items: list[DispensedItem] = Field(min_length=1, max_length=5)
    note: PlainText | None = Field(default=None, max_length=1000)


class AckRequest(Strict):
    prescription_id: int = Field(gt=0)
    version: int = Field(ge=1)


class Receipt(BaseModel):
    """The answer to a receipt (``POST …/receipt`` and the ``prescription.ack`` event)."""

    prescription_id: int
    version: int
    first: bool = Field(description="false when this version was already acknowledged")


class PatientView(BaseModel):
    """The patient as the pharmacy sees them: what review and dispensing need, not the record."""

    name: str
    resident_id_masked: str = Field(description="e.g. 3702**********0267")
    sex: Literal["male", "female"]
    age: int = Field(description="full years today (the birth date is not shown)")
    weight_kg: float | None = Field(description="the latest body weight (LOINC 29463-7)")
    weight_at: str | None = Field(description="when that weight was measured")
    allergies: list[str] = Field(description="the record's active allergies and intolerances")


class PrescriberView(BaseModel):
    user_id: int
    name: str | None
    title: str | None
    institution_id: int | None
    institution_name: str | None


class Dosing(BaseModel):
    drug_code: str
    zh: str = Field(description="e.g. 每日3次，每次1片（5mg），口服，共7天")
    en: str = Field(
        description="e.g. 3 times a day, 1 tablet (5 mg) each time, by mouth, for 7 days"
    )


class PrescriptionOut(BaseModel):
    """A prescription. The pharmacy's copy (``patient`` and ``prescriber`` set) carries the
    resident ID masked, in ``content`` too: check its signature with ``GET …/verify``."""

    id: int
    version: int
    status: Status
    patient_id: int
    prescriber_id: int
    institution_id: int
    pharmacy_id: int | None
    content: dict[str, Any]
    signature: dict[str, Any]
    findings: list[Finding]
    valid_until: datetime
    review_reason: str | None
    received: bool
    dispensation: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    patient: PatientView | None = Field(
        default=None, description="the pharmacy's view of the patient (pharmacists only)"
    )
    prescriber: PrescriberView | None = Field(
        default=None, description="who signed it (the pharmacy's view)"
    )
    dosing: list[Dosing] = Field(
        default_factory=list, description="each item's dosing in plain words, zh and en"
    )


class PrescriptionList(BaseModel):
    items: list[PrescriptionOut]


class VerifyResult(BaseModel):
    valid: bool
    key_id: str
    signed_at: datetime


class QueueQuery(Strict):
    status: QueueStatus = "all"
    patient: str | None = Field(
        default=None, max_length=100, description="patient name or resident ID"
    )
    limit: int = Field(default=50, ge=1, le=200)


class MineQuery(Strict):
    status: Status | None = None
    limit: int = Field(default=50, ge=1, le=200)


class PendingList(BaseModel):
    items: list[dict[str, Any]] = Field(description="stream envelopes not yet acknowledged")


class ReadyRequest(Strict):
    note: PlainText | None = Field(default=None, max_length=500, description="e.g. 取药窗口 3")


class PharmacyQuery(Strict):
    district: District | None = Field(
        default=None, description="the patient's district: nearest first (else their profile's)"
    )
    open_now: bool = Field(default=False, description="only pharmacies open right now")


class OpeningHours(BaseModel):
    days: list[int] = Field(description="ISO weekdays, Monday 1 … Sunday 7")
    opens: str = Field(pattern=r"^\d{2}:\d{2}$", description="local time (China), e.g. 08:00")
    closes: str = Field(pattern=r"^\d{2}:\d{2}$", description="e.g. 21:00; 24:00 is midnight")


class PharmacyOut(BaseModel):
    id: int = Field(description="the pharmacy's institution id (route a prescription to it)")
    code: str
    name: str
    district: str | None = Field(description="e.g. 市南区")
    district_code: str | None = Field(description="the district's region code, e.g. 370202")
    address: str | None
    phone: str | None
    hours: list[OpeningHours] = Field(description="weekly opening hours")
    open_now: bool
    distance: Literal["same_district", "neighbouring", "other"] | None = Field(
        description="by district, from the patient's; null when no district is known"
    )


class PharmacyList(BaseModel):
    items: list[PharmacyOut] = Field(description="same district first, then neighbouring")
    district: str | None = Field(description="the district the distances are from")
    district_source: Literal["query", "profile"] | None = Field(
        description="given in the query, or the patient's registered address"
    )
