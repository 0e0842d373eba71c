"""Reading consults: one, a list, the history, and the rooms a connecting socket belongs in."""

from __future__ import annotations

from sqlalchemy import or_, select

from server.access import AccessService
from server.consults import schemas
from server.consults.guards import consult_out, get_consult, get_participant, may_view
from server.consults.models import Consult, ConsultParticipant, ConsultTransition
from server.consults.states import ENDED, REMOTE_KIND, consult_stream
from server.consults.steps import history_entry
from server.core.auth import Requester
from server.core.db import Database
from server.core.errors import Forbidden, NotFound
from server.core.history import HistoryList, read_history
from server.core.roles import CLINICIAN_ROLES, Role


class ConsultReads:
    def __init__(self, db: Database, access: AccessService) -> None:
        self.db = db
        self.access = access

    async def get_consult(self, requester: Requester, consult_id: int) -> schemas.ConsultOut:
        """The consult, for those who may see it (404 for anyone else)."""
        async with self.db.read() as session:
            consult = await get_consult(session, consult_id)
            member = await get_participant(session, consult_id, requester.user_id)
            if not may_view(consult, requester, member is not None):
                raise NotFound(f"no consult {consult_id}")
        policy = await self.access.content_policy(requester, consult.patient_id)
        if policy.revoked:
            await self.access.record_refusal(
                requester,
                consult.patient_id,
                action="consult.read",
                resource=f"Consult/{consult_id}",
            )
        async with self.db.read() as session:
            return await consult_out(session, consult, revoked=policy.revoked)

    async def list_consults(
        self, requester: Requester, status: str | None
    ) -> list[schemas.ConsultOut]:
        # A follow-up visit's room is listed with the visits (server/visits), not here.
        query = (
            select(Consult)
            .where(Consult.kind == REMOTE_KIND)
            .order_by(Consult.id.desc())
            .limit(200)
        )
        if requester.role == Role.PATIENT:
            query = query.where(Consult.patient_id == requester.patient_id)
        elif requester.role in CLINICIAN_ROLES and requester.institution_id is not None:
            query = query.where(
                or_(
                    Consult.requesting_institution_id == requester.institution_id,
                    Consult.invited_institution_id == requester.institution_id,
                )
            )
        else:
            raise Forbidden(
                "consults are seen by the clinicians of the institutions taking part",
                code="not_a_clinician",
            )
        if status:
            query = query.where(Consult.status == status)
        async with self.db.read() as session:
            consults = list(await session.scalars(query))
        policies = await self.access.content_policies(requester, [c.patient_id for c in consults])
        async with self.db.read() as session:
            return [
                await consult_out(session, c, revoked=policies[c.patient_id].revoked)
                for c in consults
            ]

    async def history(self, requester: Requester, consult_id: int) -> HistoryList:
        await self.get_consult(requester, consult_id)
        async with self.db.read() as session:
            rows = await read_history(session, ConsultTransition.consult_id, consult_id)
            return HistoryList(items=[history_entry(row) for row in rows])

    async def open_consult_ids(self, patient_id: int) -> list[int]:
        """The patient's consults that have not ended (their rooms are live)."""
        async with self.db.read() as session:
            return list(
                await session.scalars(
                    select(Consult.id).where(
                        Consult.patient_id == patient_id, Consult.status.notin_(ENDED)
                    )
                )
            )

    async def consult_rooms(self, requester: Requester, consult_id: int | None = None) -> list[str]:
        """Room provider: the consult rooms a connecting socket belongs in (of one consult,
        or of all the user takes part in)."""
        query = (
            select(Consult.id, Consult.patient_id)
            .join(ConsultParticipant, ConsultParticipant.consult_id == Consult.id)
            .where(
                ConsultParticipant.user_id == requester.user_id,
                Consult.status.notin_(ENDED),
            )
        )
        if consult_id is not None:
            query = query.where(Consult.id == consult_id)
        async with self.db.read() as session:
            rows = list(await session.execute(query))
            # Not the rooms of patients who revoked the reader's institution: no chat pushes.
            policies = await self.access.content_policies(
                requester, [p for _, p in rows], session=session
            )
        return [consult_stream(c) for c, p in rows if not policies[p].revoked]
