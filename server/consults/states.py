"""What other capabilities may know of a consult: its statuses, its rooms, its plain facts.

This module imports no table of consults, so media (and anyone else) may import it freely;
the rows stay behind :class:`server.consults.service.ConsultsService`, which answers with a
:class:`ConsultFacts` (plain values, never an ORM row).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ConsultStatus(StrEnum):
    """The states of a consult's life cycle (the transitions: server/consults/lifecycle.py)."""

    REQUESTED = "requested"
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    IN_SESSION = "in_session"
    OPINION_WRITTEN = "opinion_written"
    CLOSED = "closed"
    DECLINED = "declined"
    CANCELLED = "cancelled"


# The consult is over: no chat, no session, the record window closed.
ENDED = frozenset({ConsultStatus.CLOSED, ConsultStatus.DECLINED, ConsultStatus.CANCELLED})
CHAT_STATES = frozenset(
    {
        ConsultStatus.ACCEPTED,
        ConsultStatus.SCHEDULED,
        ConsultStatus.IN_SESSION,
        ConsultStatus.OPINION_WRITTEN,
    }
)
# A live session (video, presence, signaling) may be joined.
LIVE_STATES = frozenset({ConsultStatus.ACCEPTED, ConsultStatus.SCHEDULED, ConsultStatus.IN_SESSION})
# The kinds of consult room: a remote consultation, or a follow-up visit's (server/visits).
REMOTE_KIND = "remote"
FOLLOWUP_KIND = "followup"
# A follow-up visit's chat, audio and video are kept at least this long (互联网诊疗管理办法),
# whatever shorter retention an operator sets for recordings.
FOLLOWUP_MEDIA_RETENTION_DAYS = 3 * 366
# The role of the system account whose worker records consults (server/media/recording.py).
RECORDER_ROLE = "recorder"


def consult_stream(consult_id: int) -> str:
    """The consult's room and stream: its participants, its life cycle, lobby, chat."""
    return f"consult:{consult_id}"


def live_room(consult_id: int) -> str:
    """The sockets in the consult's live session (a Socket.IO room, not a stream)."""
    return f"consult:{consult_id}:live"


@dataclass(frozen=True, slots=True)
class ConsultFacts:
    """A consult as another capability needs it: who and where, and its status."""

    id: int
    patient_id: int
    status: str
    requester_id: int
    host_id: int | None
    requesting_institution_id: int
    invited_institution_id: int
    kind: str = REMOTE_KIND

    @property
    def ended(self) -> bool:
        return self.status in ENDED
