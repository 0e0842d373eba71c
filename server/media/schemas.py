"""Payloads of the pre-call check's Socket.IO events and their acks."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from server.core.api import Strict

Verdict = Literal["measuring", "good", "poor", "failed"]


class SessionDescription(Strict):
    # A browser offer with audio, video and a data channel is a few kB; 64 kB leaves room.
    sdp: str = Field(min_length=1, max_length=65536)
    type: Literal["offer"]


class PrecallAnswer(BaseModel):
    peer_id: str
    sdp: str
    type: Literal["answer"]
    # Seconds before the server closes the check on its own.
    expires_in: int


class StreamStats(BaseModel):
    kind: str
    packets_received: int
    packets_lost: int
    jitter_ms: float


class PrecallStats(BaseModel):
    peer_id: str
    state: str
    elapsed_s: float
    round_trip_ms: float | None
    # Fraction (0…1) of the packets the client sent that never reached the server.
    packet_loss: float
    jitter_ms: float
    # What the server received since the previous stats call (or since the start).
    bitrate_kbps: float
    streams: list[StreamStats]
    verdict: Verdict
    reasons: list[str]


# --- consult recording ---------------------------------------------------------------

RecordingState = Literal["starting", "recording", "stopping", "finished", "failed", "purged"]


class RecordingRef(Strict):
    consult_id: int = Field(ge=1)


class ConsentIn(Strict):
    consult_id: int = Field(ge=1)
    agree: bool


class ConsentItem(BaseModel):
    user_id: int
    agree: bool
    at: datetime


class ConsentsOut(BaseModel):
    consult_id: int
    consents: list[ConsentItem]


class RecordingOut(BaseModel):
    recording_id: int
    consult_id: int
    state: RecordingState
    started_by: int
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float | None
    # Hex SHA-256 of the WebM file, once finished.
    sha256: str | None
    bytes: int | None
    # The DocumentReference in the patient's record that points at the file.
    document_id: str | None
    failure: str | None
    media_url: str | None


class RecordingList(BaseModel):
    items: list[RecordingOut]
