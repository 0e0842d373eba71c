"""Request, answer and socket payload models of remote consultations (also the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from server.core.api import Strict
from server.core.types import PersonName, PlainText
from server.identity.schemas import Title

Status = Literal[
    "requested",
    "accepted",
    "scheduled",
    "in_session",
    "opinion_written",
    "closed",
    "declined",
    "cancelled",
]
Urgency = Literal["routine", "urgent", "emergency"]
Text = Annotated[PlainText, StringConstraints(min_length=1, max_length=4000, strip_whitespace=True)]
ShortText = Annotated[
    PlainText, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)
]
ClientId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
ResourceType = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z]{1,63}$")]


class InformedConsent(Strict):
    """Who agreed to the consult, how and when (远程医疗服务管理规范: consent comes first)."""

    given_by: Literal["patient", "guardian", "close_relative"]
    name: PersonName | None = Field(default=None, description="required unless the patient")
    relation: ShortText | None = Field(default=None, description="e.g. 女儿; unless the patient")
    method: Literal["written", "electronic", "verbal_witnessed"]
    given_at: AwareDatetime


class RecordRef(Strict):
    resource_type: ResourceType
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]


class ConsultCreate(Strict):
    patient_id: int = Field(ge=1)
    consent: InformedConsent | None = Field(
        default=None, description="the patient's informed consent; required"
    )
    reason: Text
    purpose: Text
    clinical_question: Text
    case_summary: Text
    urgency: Urgency = "routine"
    window_start: AwareDatetime
    window_end: AwareDatetime
    invited_institution_id: int = Field(ge=1)
    invited_department: ShortText | None = None
    invited_specialty: ShortText | None = None
    invited_title: Title | None = None
    invited_specialist_id: int | None = Field(default=None, ge=1)
    record_items: list[RecordRef] = Field(default_factory=list, max_length=50)


class Accept(Strict):
    scheduled_at: AwareDatetime | None = Field(
        default=None, description="with a time the consult is scheduled at once"
    )


class Propose(Strict):
    proposed_at: AwareDatetime
    note: ShortText | None = None


class Schedule(Strict):
    scheduled_at: AwareDatetime


class Decline(Strict):
    reason: ShortText


class Cancel(Strict):
    reason: ShortText


class AddParticipant(Strict):
    user_id: int = Field(ge=1)


class OpinionIn(Strict):
    findings: Text
    diagnostic_opinion: Text
    treatment_advice: Text
    refer: bool
    refer_note: ShortText | None = None


class Participant(BaseModel):
    user_id: int
    role: str
    admitted: bool


class ConsultOut(BaseModel):
    id: int
    patient_id: int
    status: Status
    requester_id: int
    requesting_institution_id: int
    invited_institution_id: int
    invited_department: str | None
    invited_specialty: str | None
    invited_title: str | None
    invited_specialist_id: int | None
    host_id: int | None
    reason: str | None = Field(description="withheld (null) after the patient revoked you")
    purpose: str | None
    clinical_question: str | None
    case_summary: str | None
    urgency: Urgency
    window_start: datetime
    window_end: datetime
    consent: dict[str, Any]
    scheduled_at: datetime | None
    proposed_at: datetime | None
    decline_reason: str | None
    escalated_at: datetime | None
    opinion_document_id: str | None
    participants: list[Participant]
    created_at: datetime
    updated_at: datetime
    withheld: dict[str, Any] | None = Field(
        default=None,
        description='{"fields": [...], "reason": "consent"}: the clinical text left out '
        "because the patient revoked sharing with your institution",
    )


class ConsultList(BaseModel):
    items: list[ConsultOut]


class ConsultQuery(Strict):
    status: Status | None = None


class RecordPanel(BaseModel):
    snapshot: dict[str, Any]
    live: dict[str, Any]


class OpinionOut(BaseModel):
    consult_id: int
    opinion: dict[str, Any]
    signature: dict[str, Any]
    document_id: str | None
    verified: bool


class IceServers(BaseModel):
    ice_servers: list[dict[str, Any]]
    ttl: int


# --- socket payloads -----------------------------------------------------------------


class ConsultRef(Strict):
    consult_id: int = Field(ge=1)


class Join(Strict):
    consult_id: int = Field(ge=1)
    password: str | None = Field(default=None, min_length=1, max_length=256)
    totp: Annotated[str, StringConstraints(pattern=r"^\d{6}$")] | None = None


class Admit(Strict):
    consult_id: int = Field(ge=1)
    user_id: int = Field(ge=1)


class Media(Strict):
    consult_id: int = Field(ge=1)
    camera: bool
    mic: bool
    screen: bool = False


class ChatSend(Strict):
    consult_id: int = Field(ge=1)
    client_id: ClientId
    text: Annotated[PlainText, StringConstraints(min_length=1, max_length=4000)]
    attachments: list[RecordRef] = Field(default_factory=list, max_length=10)


class Signal(Strict):
    consult_id: int = Field(ge=1)
    to: int = Field(ge=1, description="the user id of the room member it is for")
    kind: Literal["offer", "answer", "candidate", "renegotiate", "bye"]
    data: dict[str, Any] = Field(description="SDP or ICE candidate, passed through as given")
