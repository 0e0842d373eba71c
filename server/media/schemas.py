"""Payloads of the pre-call check's Socket.IO events and their acks."""

from __future__ import annotations

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
