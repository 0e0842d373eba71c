"""The loaders and guards every consult concept shares: find the consult, check who asks.

``check_*`` raise the problem a client sees (``403 not_a_participant``, ``not_host``,
``not_requester``); ``get_*`` read. All take the caller's session, so they join its unit of
work (and, with ``lock=True``, its row lock).
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessService, ContentPolicy
from server.consults import schemas
from server.consults.models import Consult, ConsultParticipant
from server.consults.states import ConsultFacts
from server.core.auth import Requester
from server.core.errors import Forbidden, NotFound, ValidationFailed
from server.core.roles import CLINICIAN_ROLES, Role
from server.records.service import RecordsService

# What a reader of a revoked institution no longer gets (ConsultOut, see consult_out).
CLINICAL_TEXT = ("reason", "purpose", "clinical_question", "case_summary", "decline_reason")


class Hosted(Protocol):
    @property
    def host_id(self) -> int | None: ...


class Requested(Protocol):
    @property
    def requester_id(self) -> int: ...


async def get_consult(session: AsyncSession, consult_id: int, lock: bool = False) -> Consult:
    query = select(Consult).where(Consult.id == consult_id)
    if lock:
        query = query.with_for_update()
    consult = await session.scalar(query)
    if consult is None:
        raise NotFound(f"no consult {consult_id}")
    return consult


async def get_participant(
    session: AsyncSession, consult_id: int, user_id: int
) -> ConsultParticipant | None:
    return await session.scalar(
        select(ConsultParticipant).where(
            ConsultParticipant.consult_id == consult_id, ConsultParticipant.user_id == user_id
        )
    )


def not_a_participant(consult_id: int) -> Forbidden:
    return Forbidden(f"you are not a participant of consult {consult_id}", code="not_a_participant")


async def check_participant(
    session: AsyncSession, consult_id: int, requester: Requester, lock: bool = False
) -> tuple[Consult, ConsultParticipant]:
    """The consult and the requester's place in it, in one statement (404, then 403)."""
    query = (
        select(Consult, ConsultParticipant)
        .outerjoin(
            ConsultParticipant,
            and_(
                ConsultParticipant.consult_id == Consult.id,
                ConsultParticipant.user_id == requester.user_id,
            ),
        )
        .where(Consult.id == consult_id)
    )
    if lock:
        query = query.with_for_update(of=Consult)
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound(f"no consult {consult_id}")
    consult, participant = row
    if participant is None:
        raise not_a_participant(consult_id)
    return consult, participant


def check_host(consult: Hosted, requester: Requester) -> None:
    if consult.host_id != requester.user_id:
        raise Forbidden("only the consult's host (the specialist) may do this", code="not_host")


def check_requester(consult: Requested, requester: Requester) -> None:
    if consult.requester_id != requester.user_id:
        raise Forbidden("only the requesting doctor may do this", code="not_requester")


def may_view(consult: Consult, requester: Requester, is_participant: bool) -> bool:
    if is_participant:
        return True
    if requester.role == Role.PATIENT:
        return requester.patient_id == consult.patient_id
    # The desks of both institutions; administrators and pharmacists never see the
    # case summary, the question or the opinion.
    return (
        requester.institution_id
        in (
            consult.requesting_institution_id,
            consult.invited_institution_id,
        )
        and requester.role in CLINICIAN_ROLES
    )


def facts_of(consult: Consult) -> ConsultFacts:
    return ConsultFacts(
        id=consult.id,
        patient_id=consult.patient_id,
        status=consult.status,
        requester_id=consult.requester_id,
        host_id=consult.host_id,
        requesting_institution_id=consult.requesting_institution_id,
        invited_institution_id=consult.invited_institution_id,
        kind=consult.kind,
    )


async def participant_ids(session: AsyncSession, consult_id: int) -> list[int]:
    rows = await session.scalars(
        select(ConsultParticipant.user_id)
        .where(ConsultParticipant.consult_id == consult_id)
        .order_by(ConsultParticipant.id)
    )
    return list(rows)


async def consult_out(
    session: AsyncSession, consult: Consult, *, revoked: bool = False
) -> schemas.ConsultOut:
    """The consult; for a reader whose institution the patient revoked, without its
    clinical text (the workflow — status, times, who takes part — remains)."""
    rows = await session.scalars(
        select(ConsultParticipant)
        .where(ConsultParticipant.consult_id == consult.id)
        .order_by(ConsultParticipant.id)
    )
    return schemas.ConsultOut(
        id=consult.id,
        patient_id=consult.patient_id,
        status=consult.status,
        requester_id=consult.requester_id,
        requesting_institution_id=consult.requesting_institution_id,
        invited_institution_id=consult.invited_institution_id,
        invited_department=consult.invited_department,
        invited_specialty=consult.invited_specialty,
        invited_title=consult.invited_title,
        invited_specialist_id=consult.invited_specialist_id,
        host_id=consult.host_id,
        reason=None if revoked else consult.reason,
        purpose=None if revoked else consult.purpose,
        clinical_question=None if revoked else consult.clinical_question,
        case_summary=None if revoked else consult.case_summary,
        urgency=consult.urgency,
        window_start=consult.window_start,
        window_end=consult.window_end,
        consent=consult.consent,
        scheduled_at=consult.scheduled_at,
        proposed_at=consult.proposed_at,
        decline_reason=None if revoked else consult.decline_reason,
        escalated_at=consult.escalated_at,
        opinion_document_id=consult.opinion_document_id,
        participants=[
            schemas.Participant(user_id=p.user_id, role=p.role, admitted=p.admitted_at is not None)
            for p in rows
        ],
        created_at=consult.created_at,
        updated_at=consult.updated_at,
        withheld={"fields": list(CLINICAL_TEXT), "reason": "consent"} if revoked else None,
    )


class ConsultAccess:
    """The checks that ask the access capability or the record: consent, record items."""

    def __init__(self, access: AccessService, records: RecordsService) -> None:
        self.access = access
        self.records = records

    async def check_not_revoked(
        self, requester: Requester, consult: Consult, action: str
    ) -> ContentPolicy:
        return await self.access.check_not_revoked(
            requester, consult.patient_id, action=action, resource=f"Consult/{consult.id}"
        )

    async def policy(
        self, requester: Requester, consult: Consult, session: AsyncSession
    ) -> ContentPolicy:
        """The patient's consent as it applies to the requester, read in the caller's read
        (a revoked one is refused with :meth:`refuse`, after that read)."""
        return await self.access.content_policy(requester, consult.patient_id, session=session)

    async def refuse(self, requester: Requester, consult: Consult, action: str) -> Forbidden:
        """The audited refusal of a requester whose institution the patient revoked."""
        return await self.access.record_refusal(
            requester, consult.patient_id, action=action, resource=f"Consult/{consult.id}"
        )

    async def record_items(
        self, patient_id: int, refs: list[schemas.RecordRef], field: str
    ) -> list[dict[str, Any]]:
        """Items of the patient's shared record, by reference; unknown ones are refused."""
        found: list[dict[str, Any]] = []
        by_type: dict[str, dict[str, dict[str, Any]]] = {}
        for index, ref in enumerate(refs):
            if ref.resource_type not in by_type:
                by_type[ref.resource_type] = {
                    str(r.get("id")): r
                    for r in await self.records.resources(patient_id, ref.resource_type)
                }
            resource = by_type[ref.resource_type].get(ref.id)
            if resource is None:
                raise ValidationFailed.field(
                    f"{field}.{index}",
                    f"{ref.resource_type}/{ref.id} is not in this patient's shared record",
                )
            found.append(resource)
        return found
