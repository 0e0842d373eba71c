"""Request and answer models of the identity capability (they also make the OpenAPI document)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from server.core.api import Strict
from server.core.ids import ResidentIdError, check_region
from server.core.types import Code, OrgName, Password, PersonName, Phone, Region, Username

InstitutionKind = Literal["tertiary", "secondary", "community", "pharmacy", "lab"]
RoleName = Literal[
    "specialist", "gp", "pharmacist", "nurse", "institution_admin", "platform_admin", "patient"
]
DOCTOR_TITLES = ("主任医师", "副主任医师", "主治医师", "住院医师")
PHARMACIST_TITLES = ("主任药师", "副主任药师", "主管药师", "药师", "药士")
NURSE_TITLES = ("主任护师", "副主任护师", "主管护师", "护师", "护士")
Title = Literal[
    "主任医师", "副主任医师", "主治医师", "住院医师",
    "主任药师", "副主任药师", "主管药师", "药师", "药士",
    "主任护师", "副主任护师", "主管护师", "护师", "护士",
]  # fmt: skip
TotpCode = Annotated[str, StringConstraints(pattern=r"^\d{6}$")]


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    totp: TotpCode | None = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str


class RefreshRequest(Strict):
    refresh_token: str = Field(min_length=10, max_length=200)


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: Password


class TotpSetup(BaseModel):
    secret: str
    otpauth_uri: str


CurrentPassword = Annotated[str, Field(min_length=1, max_length=256)]


class TotpSetupRequest(Strict):
    """Enrolling a second factor is a credential change: the password is asked again."""

    current_password: CurrentPassword


class TotpConfirm(Strict):
    code: TotpCode
    current_password: CurrentPassword


class AccountState(BaseModel):
    """An account's access state, as an administrator sees it after a change."""

    user_id: int
    username: str
    active: bool
    locked: bool
    sessions_ended: int = Field(description="sessions this change ended (their sockets closed)")


class InstitutionCreate(Strict):
    code: Code
    name: OrgName
    kind: InstitutionKind
    region: Region | None = None

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_region(value)
            except ResidentIdError as exc:
                raise ValueError(str(exc)) from None
        return value


class DepartmentCreate(Strict):
    name: OrgName = Field(max_length=50)


class DepartmentOut(BaseModel):
    id: int
    name: str


class InstitutionOut(BaseModel):
    id: int
    code: str
    name: str
    kind: InstitutionKind
    region: str | None
    departments: list[DepartmentOut]


class InstitutionList(BaseModel):
    items: list[InstitutionOut]


class InstitutionQuery(Strict):
    kind: InstitutionKind | None = None


class InstitutionRef(BaseModel):
    id: int
    code: str
    name: str
    kind: InstitutionKind


class UserCreate(Strict):
    username: Username
    password: Password
    role: RoleName
    name: PersonName | None = None
    institution: Code | None = Field(default=None, description="institution code")
    department: OrgName | None = Field(default=None, max_length=50)
    title: Title | None = None
    can_prescribe: bool | None = Field(
        default=None, description="defaults to true for specialists and community doctors"
    )
    resident_id: str | None = Field(default=None, max_length=18, description="patients only")
    sex: Literal["male", "female"] | None = None
    birth_date: date | None = None
    phone: Phone | None = None


class UserOut(BaseModel):
    id: int
    username: str
    role: RoleName
    name: str | None
    institution: InstitutionRef | None
    department: str | None
    title: str | None
    can_prescribe: bool
    patient_id: int | None
    totp_enabled: bool
    active: bool
    created_at: datetime


class UserList(BaseModel):
    items: list[UserOut]


class UserQuery(Strict):
    institution: Code | None = None
    role: RoleName | None = None


LinkKind = Literal["mrn", "card"]


class PatientRegister(Strict):
    """Register a resident at the caller's institution (links to the account if it exists)."""

    resident_id: str = Field(min_length=15, max_length=18)
    name: PersonName
    sex: Literal["male", "female"] | None = None
    birth_date: date | None = None
    phone: Phone | None = None
    mrn: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[\w.:-]+$")
    card_number: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[\w.:-]+$"
    )


class PatientLinkOut(BaseModel):
    institution: InstitutionRef
    kind: LinkKind
    number: str


class PatientOut(BaseModel):
    id: int
    resident_id: str
    name: str
    sex: Literal["male", "female"]
    birth_date: date
    phone: str | None
    real_name_verified: bool
    merged_into_id: int | None
    links: list[PatientLinkOut]


class PatientRegistered(BaseModel):
    """What the desk learns: the account id and what it sent itself, nothing else of the
    resident's (their other institutions' numbers, phone and record stay hidden)."""

    id: int
    resident_id: str
    name: str
    sex: Literal["male", "female"]
    birth_date: date
    links: list[PatientLinkOut] = Field(description="this institution's own numbers")
    created: bool = Field(description="false when the resident already had an account")
    care: Literal["active", "none"] = Field(
        description="whether this institution may read the record now; 'none' until the "
        "patient shows a presence code (POST /api/v1/care/presence) or approves a "
        "request (POST /api/v1/patients/{id}/care-requests)"
    )


class PatientLookup(Strict):
    institution: Code
    number: str = Field(min_length=1, max_length=64)
    kind: LinkKind | None = None


class PatientMergeRequest(Strict):
    source_patient_id: int = Field(ge=1, description="the duplicate; its record moves")
    target_patient_id: int = Field(ge=1, description="the account that stays")
    reason: str = Field(min_length=3, max_length=500)


class PatientMergeOut(BaseModel):
    id: int
    source_patient_id: int
    target_patient_id: int
    moved: dict[str, list[int]]
    merged_at: datetime
    unmerged_at: datetime | None


class VerificationSet(Strict):
    verified: bool


# --- my institution's patients (the clinician's list) --------------------------------


class MyPatientsQuery(Strict):
    q: str | None = Field(
        default=None, min_length=1, max_length=64, description="part of the name or number"
    )
    limit: int = Field(default=50, ge=1, le=200)


class MyPatient(BaseModel):
    id: int
    name: str
    sex: Literal["male", "female"]
    birth_date: date
    numbers: list[str] = Field(description="my institution's record and card numbers")
    since: datetime = Field(description="when the care relationship with my institution began")


class MyPatientList(BaseModel):
    items: list[MyPatient]


# --- earning a care relationship (presence, the patient's agreement) -------------------

CareReason = Literal[
    "presence", "patient_approved", "appointment", "referral", "merged", "demo", "registered"
]


class PresenceCodeOut(BaseModel):
    code: str = Field(description="8 digits the desk types, or reads from the QR")
    qr: str = Field(description="the QR payload: yihao-presence:<resident ID>:<code>")
    expires_at: datetime


class PresenceConfirm(Strict):
    """What the desk read from the patient's app: the resident ID and the code."""

    resident_id: str = Field(min_length=15, max_length=18)
    code: str = Field(pattern=r"^\d{8}$")


class CareRelationshipOut(BaseModel):
    institution: InstitutionRef
    reason: CareReason = Field(description="the encounter that started or last renewed it")
    since: datetime
    last_encounter_at: datetime
    ends_at: datetime = Field(description="it lapses then unless another encounter renews it")
    patient_id: int | None = Field(default=None, description="set on the desk's confirmation")


class CareRelationshipList(BaseModel):
    items: list[CareRelationshipOut]


class CareRequestCreate(Strict):
    note: str | None = Field(default=None, min_length=1, max_length=500)


class CareRequestOut(BaseModel):
    id: int
    patient_id: int
    institution: InstitutionRef
    requested_by: str | None = Field(description="the name of who asked")
    note: str | None
    status: Literal["pending", "approved", "declined", "expired"]
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None


class CareRequestList(BaseModel):
    items: list[CareRequestOut]


class CareDecision(Strict):
    approve: bool


# --- break-the-glass review -------------------------------------------------------------


class EmergencyQuery(Strict):
    status: Literal["pending", "reviewed", "all"] = "pending"
    limit: int = Field(default=50, ge=1, le=200)


class EmergencyReviewSet(Strict):
    verdict: Literal["justified", "unjustified"]
    note: str = Field(min_length=2, max_length=500)


class EmergencyReviewOut(BaseModel):
    verdict: Literal["justified", "unjustified"]
    note: str
    reviewer: str | None
    reviewed_at: datetime


class EmergencyAccessOut(BaseModel):
    seq: int = Field(description="the audit entry of the read")
    at: datetime
    user_id: int
    user_name: str | None
    role: str
    institution: InstitutionRef | None
    patient_id: int | None
    statement: str = Field(description="the clinician's stated emergency")
    resources: str | None
    review: EmergencyReviewOut | None


class EmergencyAccessList(BaseModel):
    items: list[EmergencyAccessOut]
