"""A consult's life cycle: request, answer, schedule, start, cancel, close, colleagues.

The steps are one table, :data:`server.consults.steps.STEPS`, taken through the one
lifecycle mechanism (:class:`server.core.lifecycle.Lifecycle`): the guard (403), the
conditional status change (409 ``invalid_transition`` otherwise), the history row, the
step's stream events and the audit entry. What is the consult's own lives here: a
request needs the patient's informed consent first; it freezes a snapshot of the shared
record and opens a record-access window for the invited institution, closed again when
the consult ends (closed, declined, cancelled).

Streams: ``consult:<id>`` (participants: life cycle, lobby, chat),
``user:<requester>`` (the inviting doctor hears every answer),
``desk:<invited>`` (new requests, escalations, cancellations: the invited
institution's clinicians) and ``user:<admin>`` (escalations, ids only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select

from server.access import AccessService
from server.config import Settings
from server.consults import schemas
from server.consults.guards import ConsultAccess, consult_out, get_consult, get_participant
from server.consults.models import Consult, ConsultParticipant, ConsultPresence
from server.consults.states import ENDED, ConsultStatus, consult_stream
from server.consults.steps import consult_lifecycle
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, utcnow
from server.core.errors import Conflict, Forbidden, ValidationFailed
from server.core.events import Events
from server.core.roles import CLINICIAN_ROLES, REQUESTER_ROLES, Role
from server.identity.directory import Directory
from server.identity.service import IdentityService
from server.realtime.gateway import desk_stream
from server.records.service import RecordsService

S = ConsultStatus
SOURCE = "consult"
INVITED_KINDS = frozenset({"tertiary", "secondary"})
# Told (after commit) that a user became a participant of a consult: its room edge puts
# that user's connected sockets in the consult's room.
MemberAdded = Callable[[int, int], Awaitable[None]]


class ConsultLifecycle:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        events: Events,
        access: AccessService,
        records: RecordsService,
        identity: IdentityService,
        directory: Directory,
        checks: ConsultAccess,
        member_listeners: Sequence[MemberAdded] = (),
    ) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        self.events = events
        self.access = access
        self.records = records
        self.identity = identity
        self.directory = directory
        self.checks = checks
        self.member_listeners = tuple(member_listeners)
        self.steps = consult_lifecycle(audit)

    # --- the one way a status changes ----------------------------------------------------

    async def move(
        self,
        tx: Tx,
        consult: Consult,
        action: str,
        actor: Requester | None,
        note: dict[str, Any] | None = None,
        *,
        values: dict[str, Any] | None = None,
        guarded: bool = True,
    ) -> None:
        """Take ``action`` on the (locked) consult: ``note`` is what the step records (its
        history row, audit entry and event), ``values`` further columns the step sets.

        ``guarded=False`` when the caller has already authorized the actor for this step
        (and checked more in between, e.g. that a time was proposed)."""
        note = note or {}
        previous: str | None = consult.status

        async def then() -> None:
            if consult.status in ENDED:
                await self.access.close_window(tx, source=SOURCE, source_id=consult.id)
            await self.announce(tx, consult, consult.status, {"from": previous, **note})

        await self.steps.transition(
            tx,
            consult,
            action,
            actor,
            details=note,
            audit_details=note,
            values=values,
            then=then,
            guarded=guarded,
        )

    async def announce(self, tx: Tx, consult: Consult, op: str, extra: dict[str, Any]) -> None:
        data = {"consult_id": consult.id, "status": consult.status, **extra}
        streams = [consult_stream(consult.id), f"user:{consult.requester_id}"]
        if op in ("requested", "escalated", "cancelled"):
            streams.append(desk_stream(consult.invited_institution_id))
        for stream in streams:
            await self.events.append(tx, stream, "consult", op, data)

    async def _members_added(self, consult_id: int, user_id: int) -> None:
        for listener in self.member_listeners:
            await listener(consult_id, user_id)

    # --- request ---------------------------------------------------------------------------

    async def request(
        self, requester: Requester, data: schemas.ConsultCreate
    ) -> schemas.ConsultOut:
        if requester.role not in REQUESTER_ROLES or requester.institution_id is None:
            raise Forbidden("consults are requested by the treating doctor of an institution")
        consent = self._check_consent(data)
        if data.window_end <= data.window_start:
            raise ValidationFailed.field("window_end", "must be after window_start")
        invited = await self.identity.get_institution(data.invited_institution_id)
        if invited.kind not in INVITED_KINDS or invited.id == requester.institution_id:
            raise ValidationFailed.field(
                "invited_institution_id", "invite a tertiary or secondary hospital other than yours"
            )
        if data.invited_department and data.invited_department not in {
            d.name for d in invited.departments
        }:
            raise ValidationFailed.field(
                "invited_department",
                f"{invited.code} has no department '{data.invited_department}'",
            )
        if data.invited_specialist_id is not None:
            await self._check_specialist(data.invited_specialist_id, invited.id)
        # The requester must itself have a reason to read the record (checked and audited).
        summary = await self.records.clinical_summary(requester, data.patient_id)
        items = await self.checks.record_items(data.patient_id, data.record_items, "record_items")
        # Frozen as the requester may see it; each reader sees it again through their own
        # consent policy (record_panel), so a later exclusion or revocation still holds.
        snapshot = await self.records.withhold_snapshot(
            await self.access.content_policy(requester, data.patient_id),
            {
                "taken_at": utcnow().isoformat(),
                "summary": summary.model_dump(mode="json"),
                "items": items,
            },
        )
        async with self.db.transaction() as tx:
            consult = Consult(
                patient_id=data.patient_id,
                requester_id=requester.user_id,
                requesting_institution_id=requester.institution_id,
                invited_institution_id=invited.id,
                invited_department=data.invited_department,
                invited_specialty=data.invited_specialty,
                invited_title=data.invited_title,
                invited_specialist_id=data.invited_specialist_id,
                reason=data.reason,
                purpose=data.purpose,
                clinical_question=data.clinical_question,
                case_summary=data.case_summary,
                urgency=data.urgency,
                window_start=data.window_start,
                window_end=data.window_end,
                consent=consent,
                snapshot=snapshot,
                status=S.REQUESTED,
            )
            tx.session.add(consult)
            await tx.session.flush()
            tx.session.add(
                ConsultParticipant(
                    consult_id=consult.id, user_id=requester.user_id, role="requester"
                )
            )

            async def then() -> None:
                await self.access.open_window(
                    tx,
                    patient_id=consult.patient_id,
                    institution_id=invited.id,
                    source=SOURCE,
                    source_id=consult.id,
                )
                await self.announce(tx, consult, "requested", {"urgency": consult.urgency})

            await self.steps.record(
                tx,
                consult,
                "request",
                requester,
                None,
                details={"consent": consent},
                audit_details={"invited_institution_id": invited.id, "consent": consent},
                then=then,
            )
            out = await consult_out(tx.session, consult)
        await self._members_added(out.id, requester.user_id)
        return out

    @staticmethod
    def _check_consent(data: schemas.ConsultCreate) -> dict[str, Any]:
        consent = data.consent
        if consent is None:
            raise ValidationFailed(
                "informed consent comes first: record who consented (patient, guardian or "
                "close relative), how and when (远程医疗服务管理规范 rule: consent before consult)",
                code="consent_required",
                errors=[{"field": "consent", "reason": "required: informed consent first"}],
            )
        if consent.given_by != "patient" and not (consent.name and consent.relation):
            raise ValidationFailed.field(
                "consent.name", "a guardian's or relative's consent names them and the relation"
            )
        if consent.given_at > utcnow() + timedelta(minutes=5):
            raise ValidationFailed.field("consent.given_at", "is in the future")
        return consent.model_dump(mode="json")

    async def _check_specialist(self, user_id: int, institution_id: int) -> None:
        async with self.db.read() as session:
            user = await self.directory.user(session, user_id)
        if user is None or user.role != Role.SPECIALIST or user.institution_id != institution_id:
            raise ValidationFailed.field(
                "invited_specialist_id", "not a specialist of the invited institution"
            )

    # --- the invited side answers ------------------------------------------------------------

    @staticmethod
    def _add_host(tx: Tx, consult: Consult, requester: Requester) -> None:
        tx.session.add(
            ConsultParticipant(
                consult_id=consult.id, user_id=requester.user_id, role="host", admitted_at=utcnow()
            )
        )

    async def accept(
        self, requester: Requester, consult_id: int, data: schemas.Accept
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await get_consult(tx.session, consult_id, lock=True)
            await self.move(tx, consult, "accept", requester, values={"host_id": requester.user_id})
            self._add_host(tx, consult, requester)
            if data.scheduled_at is not None:
                await self._schedule(tx, consult, "schedule", requester, data.scheduled_at)
            out = await consult_out(tx.session, consult)
        await self._members_added(consult_id, requester.user_id)
        return out

    async def propose(
        self, requester: Requester, consult_id: int, data: schemas.Propose
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await get_consult(tx.session, consult_id, lock=True)
            note = {"proposed_at": data.proposed_at.isoformat(), "note": data.note}
            values = {"proposed_at": data.proposed_at, "host_id": requester.user_id}
            await self.move(tx, consult, "propose", requester, note, values=values)
            self._add_host(tx, consult, requester)
            out = await consult_out(tx.session, consult)
        await self._members_added(consult_id, requester.user_id)
        return out

    async def decline(
        self, requester: Requester, consult_id: int, data: schemas.Decline
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await get_consult(tx.session, consult_id, lock=True)
            note = {"reason": data.reason}
            values = {"decline_reason": data.reason}
            await self.move(tx, consult, "decline", requester, note, values=values)
            return await consult_out(tx.session, consult)

    # --- the time, the end ---------------------------------------------------------------------

    async def _schedule(
        self,
        tx: Tx,
        consult: Consult,
        action: str,
        requester: Requester,
        at: datetime,
        *,
        guarded: bool = True,
    ) -> None:
        note = {"scheduled_at": at.isoformat()}
        await self.move(
            tx, consult, action, requester, note, values={"scheduled_at": at}, guarded=guarded
        )

    async def schedule(
        self, requester: Requester, consult_id: int, data: schemas.Schedule
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await get_consult(tx.session, consult_id, lock=True)
            await self._schedule(tx, consult, "schedule", requester, data.scheduled_at)
            return await consult_out(tx.session, consult)

    async def confirm(self, requester: Requester, consult_id: int) -> schemas.ConsultOut:
        """The requester takes the time the invited side proposed."""
        async with self.db.transaction() as tx:
            consult = await get_consult(tx.session, consult_id, lock=True)
            self.steps.authorize(consult, "confirm", requester)
            if consult.proposed_at is None:
                raise Conflict("no time was proposed; the host schedules", code="nothing_proposed")
            await self._schedule(
                tx, consult, "confirm", requester, consult.proposed_at, guarded=False
            )
            return await consult_out(tx.session, consult)

    async def cancel(
        self, requester: Requester, consult_id: int, data: schemas.Cancel
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await get_consult(tx.session, consult_id, lock=True)
            await self.move(tx, consult, "cancel", requester, {"reason": data.reason})
            return await consult_out(tx.session, consult)

    async def close(self, requester: Requester, consult_id: int) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await get_consult(tx.session, consult_id, lock=True)
            await self.move(tx, consult, "close", requester)
            await tx.session.execute(
                delete(ConsultPresence).where(ConsultPresence.consult_id == consult.id)
            )
            return await consult_out(tx.session, consult)

    # --- colleagues ------------------------------------------------------------------------------

    async def add_participant(
        self, requester: Requester, consult_id: int, data: schemas.AddParticipant
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await get_consult(tx.session, consult_id, lock=True)
            if requester.user_id not in (consult.requester_id, consult.host_id):
                raise Forbidden("the requester or the host invites colleagues")
            if consult.status in ENDED:
                raise Conflict(f"the consult is {consult.status}", code="consult_ended")
            user = await self.directory.user(tx.session, data.user_id)
            if (
                user is None
                or not user.active
                or user.role not in CLINICIAN_ROLES
                or user.institution_id
                not in (consult.requesting_institution_id, consult.invited_institution_id)
            ):
                raise ValidationFailed.field(
                    "user_id", "a clinician of the requesting or the invited institution"
                )
            if await get_participant(tx.session, consult.id, user.id) is not None:
                raise Conflict("already a participant", code="already_participant")
            count = await tx.session.scalar(
                select(func.count(ConsultParticipant.id)).where(
                    ConsultParticipant.consult_id == consult.id
                )
            )
            if (count or 0) >= self.settings.consult_max_participants:
                raise Conflict(
                    f"a consult room holds at most {self.settings.consult_max_participants}",
                    code="room_full",
                )
            tx.session.add(
                ConsultParticipant(consult_id=consult.id, user_id=user.id, role="invitee")
            )
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "consult.participant_add",
                actor=requester,
                patient_id=consult.patient_id,
                resource=f"Consult/{consult.id}",
                details={"user_id": user.id},
            )
            await self.events.append(
                tx, f"user:{user.id}", "consult", "invited", {"consult_id": consult.id}
            )
            await self.events.append(
                tx,
                consult_stream(consult.id),
                "consult",
                "participant_added",
                {"consult_id": consult.id, "user_id": user.id},
            )
            out = await consult_out(tx.session, consult)
        await self._members_added(consult_id, data.user_id)
        return out
