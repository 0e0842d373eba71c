"""Consult chat: messages on the consult's stream, with record items attached.

A message is committed first, numbered by its stream event, then pushed; a re-send with the
same ``client_id`` answers the first message (``duplicate: true``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessService, withheld_marker
from server.consults import schemas
from server.consults.guards import ConsultAccess, check_participant, get_consult
from server.consults.models import Consult, ConsultMessage
from server.consults.states import CHAT_STATES, consult_stream
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, utcnow
from server.core.errors import Conflict
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
        async with self.db.read() as session:
            consult, _ = await check_participant(session, data.consult_id, requester)
            existing = await self._message(session, data, requester)
        if existing is not None:
            return existing
        await self.checks.check_not_revoked(requester, consult, "consult.chat")
        if consult.status not in CHAT_STATES:
            raise Conflict(f"the consult is {consult.status}: no chat", code="consult_not_open")
        attachments, withheld = await self._attachments(consult, data.attachments)
        try:
            async with self.db.transaction() as tx:
                current = await get_consult(tx.session, consult.id)
                if current.status not in CHAT_STATES:
                    raise Conflict(
                        f"the consult is {current.status}: no chat", code="consult_not_open"
                    )
                at = utcnow()
                message = ConsultMessage(
                    consult_id=consult.id,
                    sender_id=requester.user_id,
                    client_id=data.client_id,
                    seq=0,
                    text=data.text,
                    attachments=attachments,
                    at=at,
                )
                tx.session.add(message)
                await tx.session.flush()
                envelope = await self.events.append(
                    tx,
                    consult_stream(consult.id),
                    "consult.chat",
                    "message",
                    {
                        "consult_id": consult.id,
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
                        patient_id=consult.patient_id,
                        resource=f"Consult/{consult.id}",
                        details={"items": [f"{a['resource_type']}/{a['id']}" for a in attachments]},
                    )
            answer = {"message_id": message.id, "seq": message.seq, "duplicate": False}
            return answer | ({"withheld": withheld} if withheld else {})
        except IntegrityError:
            # The same client id raced itself: the first one won; answer as a re-send.
            async with self.db.read() as session:
                again = await self._message(session, data, requester)
            if again is None:
                raise
            return again

    async def _attachments(
        self, consult: Consult, refs: list[schemas.RecordRef]
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The attachments a chat message may carry, and the marker of those it may not.

        A message is stored once and pushed to (and replayed for) both institutions of the
        consult, so it carries only what the patient shares with both; a category one of
        them is excluded from never enters the message, not even its label.
        """
        items = await self.checks.record_items(consult.patient_id, refs, "attachments")
        requesting = await self.access.content_policy(
            consult.requesting_institution_id, consult.patient_id
        )
        invited = await self.access.content_policy(
            consult.invited_institution_id, consult.patient_id
        )
        kept, left_out = await self.records.withhold_items(requesting.stricter(invited), items)
        return [attachment(r) for r in kept], withheld_marker(left_out)

    @staticmethod
    async def _message(
        session: AsyncSession, data: schemas.ChatSend, requester: Requester
    ) -> dict[str, Any] | None:
        row = await session.scalar(
            select(ConsultMessage).where(
                ConsultMessage.consult_id == data.consult_id,
                ConsultMessage.sender_id == requester.user_id,
                ConsultMessage.client_id == data.client_id,
            )
        )
        if row is None:
            return None
        return {"message_id": row.id, "seq": row.seq, "duplicate": True}


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
