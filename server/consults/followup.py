"""The room of a follow-up video visit (互联网复诊): a consult room of kind ``followup``.

The visits capability (server/visits) owns the visit; the live session, lobby, presence,
signaling, chat and recording consent are the consult room's, unchanged. The room's host
is the visit's doctor (already a participant, admitted); its one guest is the patient's
own account (role ``patient``), who waits in the lobby until the doctor admits them.
Nothing here opens a record-access window: the visit does that for the doctor's
institution, and closes it when the visit ends.
"""

from __future__ import annotations

from datetime import datetime

from server.consults.guards import get_consult
from server.consults.lifecycle import ConsultLifecycle
from server.consults.models import Consult, ConsultParticipant
from server.consults.states import FOLLOWUP_KIND, ConsultStatus
from server.core.auth import Requester
from server.core.db import Tx, utcnow
from server.core.errors import Conflict

GUEST_ROLE = "patient"


class FollowupRooms:
    def __init__(self, lifecycle: ConsultLifecycle) -> None:
        self.lifecycle = lifecycle

    async def open(
        self,
        tx: Tx,
        *,
        patient_id: int,
        host: Requester,
        guest_user_id: int,
        summary: str,
        window_start: datetime,
        window_end: datetime,
    ) -> int:
        """A new room for the visit, accepted (live) at once, in the caller's transaction;
        its id. The doctor is its host; the patient's account its guest."""
        assert host.institution_id is not None
        now = utcnow()
        consult = Consult(
            kind=FOLLOWUP_KIND,
            patient_id=patient_id,
            requester_id=guest_user_id,
            requesting_institution_id=host.institution_id,
            invited_institution_id=host.institution_id,
            invited_specialist_id=host.user_id,
            host_id=host.user_id,
            reason=summary,
            purpose="互联网复诊",
            clinical_question=summary,
            case_summary=summary,
            urgency="routine",
            window_start=window_start,
            window_end=window_end,
            consent={"given_by": "patient", "method": "electronic", "given_at": now.isoformat()},
            snapshot={},
            status=ConsultStatus.ACCEPTED,
            scheduled_at=window_start,
            created_at=now,
            updated_at=now,
        )
        tx.session.add(consult)
        await tx.session.flush()
        tx.session.add_all(
            [
                ConsultParticipant(
                    consult_id=consult.id, user_id=host.user_id, role="host", admitted_at=now
                ),
                ConsultParticipant(consult_id=consult.id, user_id=guest_user_id, role=GUEST_ROLE),
            ]
        )
        await self.lifecycle.steps.record(
            tx, consult, "accept", host, None, details={"kind": FOLLOWUP_KIND}
        )
        await self.lifecycle.announce(tx, consult, "accepted", {"kind": FOLLOWUP_KIND})
        return consult.id

    async def finish(self, tx: Tx, consult_id: int, host: Requester) -> None:
        """The visit ended: its room closes (no more session, chat or signaling)."""
        consult = await get_consult(tx.session, consult_id, lock=True)
        if consult.kind != FOLLOWUP_KIND:
            raise Conflict("not a follow-up visit's room", code="invalid_transition")
        if consult.status != ConsultStatus.CLOSED:
            await self.lifecycle.move(tx, consult, "finish", host)
