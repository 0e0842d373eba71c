"""Tables of remote consultations: the consult, its history, participants, chat, presence."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, UTCDateTime, utcnow


class Consult(Base):
    """A consult request and everything it became; ``status`` follows the state machine."""

    __tablename__ = "consults"
    __table_args__ = (
        Index("ix_consults_status_created", "status", "created_at"),
        Index("ix_consults_invited_institution", "invited_institution_id"),
        Index("ix_consults_requesting_institution", "requesting_institution_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False, index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    requesting_institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id"), nullable=False
    )
    invited_institution_id: Mapped[int] = mapped_column(
        ForeignKey("institutions.id"), nullable=False
    )
    invited_department: Mapped[str | None] = mapped_column(String(50))
    invited_specialty: Mapped[str | None] = mapped_column(String(100))
    invited_title: Mapped[str | None] = mapped_column(String(20))
    invited_specialist_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    purpose: Mapped[str] = mapped_column(Text, nullable=False)
    clinical_question: Mapped[str] = mapped_column(Text, nullable=False)
    case_summary: Mapped[str] = mapped_column(Text, nullable=False)
    urgency: Mapped[str] = mapped_column(String(16), nullable=False)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    consent: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # "remote" (远程会诊, doctor to doctor) or "followup": the room of a follow-up video
    # visit (server/visits), whose guest is the patient.
    kind: Mapped[str] = mapped_column(
        String(16), nullable=False, default="remote", server_default="remote"
    )
    host_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    proposed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decline_reason: Mapped[str | None] = mapped_column(Text)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opinion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    opinion_signature: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    opinion_document_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ConsultTransition(Base):
    """One step of a consult's life cycle: who moved it from where to where, and why."""

    __tablename__ = "consult_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consult_id: Mapped[int] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), nullable=False, index=True
    )
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16), nullable=False)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    note: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ConsultParticipant(Base):
    """Who belongs to the consult room; ``admitted_at`` is the host letting them in."""

    __tablename__ = "consult_participants"
    __table_args__ = (UniqueConstraint("consult_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consult_id: Mapped[int] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # host, requester, invitee
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    waiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ConsultMessage(Base):
    """A chat message; ``seq`` is its number on the ``consult:<id>`` stream."""

    __tablename__ = "consult_messages"
    __table_args__ = (UniqueConstraint("consult_id", "sender_id", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consult_id: Mapped[int] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), nullable=False, index=True
    )
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ConsultPresence(Base):
    """A socket that is in a live session now (any node); removed when it leaves or drops."""

    __tablename__ = "consult_presence"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    consult_id: Mapped[int] = mapped_column(
        ForeignKey("consults.id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    camera: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    mic: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    screen: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # "person", or "recorder": the server's recording worker (it never sends media).
    kind: Mapped[str] = mapped_column(
        String(16), nullable=False, default="person", server_default="person"
    )
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # The node holding the socket (cluster_nodes.id): a dead node's rows are reaped.
    node: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
