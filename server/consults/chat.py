"""Consult chat: messages on the consult's stream, with record items attached.

A message is committed first, numbered by its stream event, then pushed; a re-send with the
same ``client_id`` answers the first message (``duplicate: true``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.dml import ReturningInsert

from server.access import AccessService, withheld_marker
from server.consults import schemas
from server.consults.guards import ConsultAccess, not_a_participant
from server.consults.models import Consult, ConsultMessage, ConsultParticipant
from server.consults.states import CHAT_STATES, consult_stream
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, utcnow
from server.core.errors import Conflict, NotFound
from server.core.events import Events
from server.records.service import RecordsService


class ConsultChat:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        events: Events,
        access: AccessService,
        records: RecordsService,
        checks: ConsultAccess,
    ) -> None:
        self.db = db
        self.audit = audit
        self.events = events
        self.access = access
        self.records = records
        self.checks = checks

    async def send(self, requester: Requester, data: schemas.ChatSend) -> dict[str, Any]:
        """Commit the message (or answer the first one of a re-send), then push it.

        One transaction: the checks read what they need (:meth:`_check`: the consult, the
        sender's membership, an earlier message with this client id, the sender's consent)
        and the write follows on the same connection. A message with attachments checks
        them first, outside it (they read the patient's record and consent for both
        institutions), and its transaction checks the rest again.
        """
        attachments: list[dict[str, Any]] = []
        withheld: dict[str, Any] | None = None
        try:
            if data.attachments:
                async with self.db.read() as session:
                    checked = await self._check(session, data, requester)
                if isinstance(checked, dict):
                    return checked
                attachments, withheld = await self._attachments(checked, data.attachments)
            async with self.db.transaction() as tx:
                checked = await self._check(tx.session, data, requester)
                if isinstance(checked, dict):
                    return checked
                facts = checked
                at = utcnow()
                message = await tx.session.scalar(
                    insert_if_open(data, requester.user_id, attachments, at)
                )
                if message is None:
                    status = await tx.session.scalar(
                        select(Consult.status).where(Consult.id == facts.id)
                    )
                    raise not_open(status or "gone")
                envelope = await self.events.append(
                    tx,
                    consult_stream(facts.id),
                    "consult.chat",
                    "message",
                    {
                        "consult_id": facts.id,
                        "message_id": message.id,
                        "client_id": data.client_id,
                        "sender_id": requester.user_id,
                        "text": data.text,
                        "attachments": attachments,
                        **({"withheld": withheld} if withheld else {}),
                        "at": at.isoformat(),
                    },
                )
                envelope.number_into(message)
                if attachments:
                    await self.audit.record(
                        tx.session,
                        "consult.attach",
                        actor=requester,
                        patient_id=facts.patient_id,
                        resource=f"Consult/{facts.id}",
                        details={"items": [f"{a['resource_type']}/{a['id']}" for a in attachments]},
                    )
            answer = {"message_id": message.id, "seq": message.seq, "duplicate": False}
            return answer | ({"withheld": withheld} if withheld else {})
        except Revoked as revoked:
            # Audited once the transaction is over (the refusal writes its own entry).
            raise await self.access.record_refusal(
                requester, revoked.patient_id, action="consult.chat", resource=revoked.resource
            ) from None
        except IntegrityError:
            # The same client id raced itself: the first one won; answer as a re-send.
            async with self.db.read() as session:
                again = await chat_facts(session, data, requester)
            if again is None or again.existing is None:
                raise
            return again.existing

    async def _check(
        self, session: AsyncSession, data: schemas.ChatSend, requester: Requester
    ) -> ChatFacts | dict[str, Any]:
        """The checks of a message, in ``session``: the consult exists (404), the sender takes
        part (403), a re-send answers the first message (returned as its answer), the
        patient has not revoked the sender's institution (:class:`Revoked`), the consult is
        open for chat (409)."""
        facts = await chat_facts(session, data, requester)
        if facts is None:
            raise NotFound(f"no consult {data.consult_id}")
        if not facts.member:
            raise not_a_participant(data.consult_id)
        if facts.existing is not None:
            return facts.existing
        policy = await self.access.content_policy(requester, facts.patient_id, session=session)
        if policy.revoked:
            raise Revoked(facts.patient_id, f"Consult/{facts.id}")
        if facts.status not in CHAT_STATES:
            raise not_open(facts.status)
        return facts

    async def _attachments(
        self, consult: ChatFacts, refs: list[schemas.RecordRef]
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The attachments a chat message may carry, and the marker of those it may not.

        A message is stored once and pushed to (and replayed for) both institutions of the
        consult, so it carries only what the patient shares with both; a category one of
        them is excluded from never enters the message, not even its label.
        """
        if not refs:
            return [], None
        items = await self.checks.record_items(consult.patient_id, refs, "attachments")
        requesting = await self.access.content_policy(
            consult.requesting_institution_id, consult.patient_id
        )
        invited = await self.access.content_policy(
            consult.invited_institution_id, consult.patient_id
        )
        kept, left_out = await self.records.withhold_items(requesting.stricter(invited), items)
        return [attachment(r) for r in kept], withheld_marker(left_out)


class Revoked(Exception):
    """Inside the transaction: the patient revoked the sender's institution (refused, and
    audited, once the transaction has rolled back)."""

    def __init__(self, patient_id: int, resource: str) -> None:
        super().__init__(resource)
        self.patient_id, self.resource = patient_id, resource


@dataclass(frozen=True, slots=True)
class ChatFacts:
    """What the checks of a chat message need, read in one statement."""

    id: int
    status: str
    patient_id: int
    requesting_institution_id: int
    invited_institution_id: int
    member: bool
    existing: dict[str, Any] | None  # the answer to a re-send of this client id


_member = aliased(ConsultParticipant)
_earlier = aliased(ConsultMessage)


# Built once: the statement, its compiled form cached by SQLAlchemy, only the values vary.
_FACTS = (
    select(
        Consult.id,
        Consult.status,
        Consult.patient_id,
        Consult.requesting_institution_id,
        Consult.invited_institution_id,
        _member.id,
        _earlier.id,
        _earlier.seq,
    )
    .outerjoin(
        _member,
        and_(_member.consult_id == Consult.id, _member.user_id == bindparam("sender_id")),
    )
    .outerjoin(
        _earlier,
        and_(
            _earlier.consult_id == Consult.id,
            _earlier.sender_id == bindparam("sender_id"),
            _earlier.client_id == bindparam("client_id"),
        ),
    )
    .where(Consult.id == bindparam("consult_id"))
)


async def chat_facts(
    session: AsyncSession, data: schemas.ChatSend, requester: Requester
) -> ChatFacts | None:
    """The consult, whether the sender takes part, and the sender's earlier message with
    this client id; None when there is no such consult."""
    params = {
        "consult_id": data.consult_id,
        "sender_id": requester.user_id,
        "client_id": data.client_id,
    }
    row = (await session.execute(_FACTS, params)).first()
    if row is None:
        return None
    consult_id, status, patient_id, requesting, invited, member, earlier, seq = row
    existing = None if earlier is None else {"message_id": earlier, "seq": seq, "duplicate": True}
    return ChatFacts(
        consult_id, status, patient_id, requesting, invited, member is not None, existing
    )


def insert_if_open(
    data: schemas.ChatSend, sender_id: int, attachments: list[dict[str, Any]], at: datetime
) -> ReturningInsert[ConsultMessage]:
    """INSERT the message only while its consult is open for chat; RETURNING the row
    (numbered later: its ``seq`` is set when its stream event is)."""
    table = ConsultMessage.__table__
    values = {
        "consult_id": data.consult_id,
        "sender_id": sender_id,
        "client_id": data.client_id,
        "seq": 0,
        "text": data.text,
        "attachments": attachments,
        "at": at,
    }
    open_for_chat = exists().where(
        Consult.id == data.consult_id, Consult.status.in_(sorted(CHAT_STATES))
    )
    return (
        insert(ConsultMessage)
        .from_select(
            list(values),
            select(*(literal(v, table.c[k].type) for k, v in values.items())).where(open_for_chat),
        )
        .returning(ConsultMessage)
    )


def not_open(status: str) -> Conflict:
    return Conflict(f"the consult is {status}: no chat", code="consult_not_open")


def attachment(resource: dict[str, Any]) -> dict[str, Any]:
    """A record item as a chat message names it: type, id and a display text."""
    code = resource.get("code") or resource.get("type") or {}
    display = code.get("text") if isinstance(code, dict) else None
    if not display and isinstance(code, dict):
        display = next((c.get("display") for c in code.get("coding", []) if c.get("display")), None)
    return {
        "resource_type": resource["resourceType"],
        "id": str(resource["id"]),
        "display": display,
    }
