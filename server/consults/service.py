"""Remote consultations (远程会诊): request and answer, the life cycle, chat, live sessions, opinion.

The life cycle is one table, :data:`TRANSITIONS`; every step is checked
against it (409 ``invalid_transition`` otherwise), written to the consult's
history and announced on its streams after commit:

    requested ──accept──► accepted ──schedule/confirm──► scheduled ──host joins──► in_session
        │  └──propose (another time)──► accepted (proposed_at; requester confirms)    │
        ├──decline (reason)──► declined                              opinion ◄──────────┘
        └──cancel──► cancelled (also from accepted, scheduled)   opinion_written ──close──► closed

A request needs the patient's informed consent first; it freezes a snapshot of
the shared record and opens a record-access window for the invited
institution, closed again when the consult ends (closed, declined, cancelled).

Streams: ``consult:<id>`` (participants: life cycle, lobby, chat),
``user:<requester>`` (the inviting doctor hears every answer),
``desk:<invited>`` (new requests, escalations, cancellations: the invited
institution's clinicians) and ``user:<admin>`` (escalations, ids only).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessService, ContentPolicy, withheld_marker
from server.config import Settings
from server.consults import schemas
from server.consults.models import (
    Consult,
    ConsultMessage,
    ConsultParticipant,
    ConsultPresence,
    ConsultTransition,
)
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.canonical import canonical_json
from server.core.db import Database, Tx, utcnow
from server.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
)
from server.core.events import Events
from server.core.history import entries, read_history
from server.core.roles import CLINICIAN_ROLES, REQUESTER_ROLES
from server.core.signing import Signature, Signer
from server.identity.auth_service import AuthService
from server.identity.models import User
from server.identity.service import IdentityService
from server.media.models import Recording
from server.realtime.gateway import desk_stream
from server.records.service import RecordsService

logger = logging.getLogger(__name__)

SOURCE = "consult"
INVITED_KINDS = frozenset({"tertiary", "secondary"})
# action: (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "accept": (frozenset({"requested"}), "accepted"),
    "propose": (frozenset({"requested"}), "accepted"),
    "decline": (frozenset({"requested"}), "declined"),
    "schedule": (frozenset({"accepted"}), "scheduled"),
    "confirm": (frozenset({"accepted"}), "scheduled"),
    "start": (frozenset({"accepted", "scheduled"}), "in_session"),
    "opinion": (frozenset({"in_session"}), "opinion_written"),
    "close": (frozenset({"opinion_written"}), "closed"),
    "cancel": (frozenset({"requested", "accepted", "scheduled"}), "cancelled"),
}
ENDED = frozenset({"closed", "declined", "cancelled"})
# What a reader of a revoked institution no longer gets (ConsultOut, see _out).
CLINICAL_TEXT = ("reason", "purpose", "clinical_question", "case_summary", "decline_reason")
CHAT_STATES = frozenset({"accepted", "scheduled", "in_session", "opinion_written"})
LIVE_STATES = frozenset({"accepted", "scheduled", "in_session"})
SIGNAL_MAX_BYTES = 64 * 1024
# The role of the system user whose worker records consults (server/media/recording.py).
RECORDER_ROLE = "recorder"
OPINION_DOC_TYPE = {
    "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}],
    "text": "会诊意见",
}


def consult_stream(consult_id: int) -> str:
    return f"consult:{consult_id}"


def live_room(consult_id: int) -> str:
    return f"consult:{consult_id}:live"


class ConsultsService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        events: Events,
        access: AccessService,
        records: RecordsService,
        identity: IdentityService,
        auth: AuthService,
        signer: Signer,
        node_id: str = "",
    ) -> None:
        self.settings = settings
        # The node this process is (server/core/nodes.py): presence rows carry it.
        self.node_id = node_id
        self.db = db
        self.audit = audit
        self.events = events
        self.access = access
        self.records = records
        self.identity = identity
        self.auth = auth
        self.signer = signer
        self.reauth_seconds = settings.consult_reauth_seconds
        self.answer_timeout = timedelta(seconds=settings.consult_answer_timeout_seconds)
        # Signals of one socket are relayed one at a time, in arrival order.
        self._signal_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._signal_seq: defaultdict[str, int] = defaultdict(int)

    # --- reading ---------------------------------------------------------------------

    async def _out(
        self, session: AsyncSession, consult: Consult, *, revoked: bool = False
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
                schemas.Participant(
                    user_id=p.user_id, role=p.role, admitted=p.admitted_at is not None
                )
                for p in rows
            ],
            created_at=consult.created_at,
            updated_at=consult.updated_at,
            withheld={"fields": list(CLINICAL_TEXT), "reason": "consent"} if revoked else None,
        )

    async def _get(self, session: AsyncSession, consult_id: int, lock: bool = False) -> Consult:
        query = select(Consult).where(Consult.id == consult_id)
        if lock:
            query = query.with_for_update()
        consult = await session.scalar(query)
        if consult is None:
            raise NotFound(f"no consult {consult_id}")
        return consult

    @staticmethod
    async def _participant(
        session: AsyncSession, consult_id: int, user_id: int
    ) -> ConsultParticipant | None:
        return await session.scalar(
            select(ConsultParticipant).where(
                ConsultParticipant.consult_id == consult_id, ConsultParticipant.user_id == user_id
            )
        )

    async def _check_participant(
        self, session: AsyncSession, consult_id: int, requester: Requester
    ) -> tuple[Consult, ConsultParticipant]:
        consult = await self._get(session, consult_id)
        participant = await self._participant(session, consult_id, requester.user_id)
        if participant is None:
            raise Forbidden(
                f"you are not a participant of consult {consult_id}", code="not_a_participant"
            )
        return consult, participant

    @staticmethod
    def _may_view(consult: Consult, requester: Requester, is_participant: bool) -> bool:
        if is_participant:
            return True
        if requester.role == "patient":
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

    async def get_consult(self, requester: Requester, consult_id: int) -> schemas.ConsultOut:
        async with self.db.read() as session:
            consult = await self._get(session, consult_id)
            member = await self._participant(session, consult_id, requester.user_id)
            if not self._may_view(consult, requester, member is not None):
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
            return await self._out(session, consult, revoked=policy.revoked)

    async def list_consults(
        self, requester: Requester, status: str | None
    ) -> list[schemas.ConsultOut]:
        query = select(Consult).order_by(Consult.id.desc()).limit(200)
        if requester.role == "patient":
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
                await self._out(session, c, revoked=policies[c.patient_id].revoked)
                for c in consults
            ]

    async def history(self, requester: Requester, consult_id: int) -> schemas.History:
        await self.get_consult(requester, consult_id)
        async with self.db.read() as session:
            rows = await read_history(session, ConsultTransition.consult_id, consult_id)
            return schemas.History(items=entries(schemas.Transition, rows))

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

    async def consult_rooms(self, requester: Requester) -> list[str]:
        """Room provider: the consult rooms a connecting socket belongs in."""
        async with self.db.read() as session:
            ids = await session.execute(
                select(Consult.id, Consult.patient_id)
                .join(ConsultParticipant, ConsultParticipant.consult_id == Consult.id)
                .where(
                    ConsultParticipant.user_id == requester.user_id,
                    Consult.status.notin_(ENDED),
                )
            )
            rows = list(ids)
        # Not the rooms of patients who revoked the reader's institution: no chat pushes.
        policies = await self.access.content_policies(requester, [p for _, p in rows])
        return [consult_stream(c) for c, p in rows if not policies[p].revoked]

    # --- writing: the life cycle -----------------------------------------------------

    async def _move(
        self,
        tx: Tx,
        consult: Consult,
        action: str,
        actor: Requester | None,
        note: dict[str, Any] | None = None,
    ) -> None:
        sources, target = TRANSITIONS[action]
        if consult.status not in sources:
            raise Conflict(
                f"a consult that is {consult.status} cannot be {action}ed "
                f"(only from {', '.join(sorted(sources))})",
                code="invalid_transition",
                extra={"status": consult.status, "action": action},
            )
        previous, consult.status, consult.updated_at = consult.status, target, utcnow()
        tx.session.add(
            ConsultTransition(
                consult_id=consult.id,
                from_status=previous,
                to_status=target,
                actor_id=actor.user_id if actor else None,
                note=note or {},
                at=consult.updated_at,
            )
        )
        if target in ENDED:
            await self.access.close_window(tx, source=SOURCE, source_id=consult.id)
        await self.audit.record(
            tx.session,
            f"consult.{action}",
            actor=actor,
            patient_id=consult.patient_id,
            resource=f"Consult/{consult.id}",
            details={"from": previous, "to": target, **(note or {})},
        )
        await self._announce(tx, consult, target, {"from": previous, **(note or {})})

    async def _announce(self, tx: Tx, consult: Consult, op: str, extra: dict[str, Any]) -> None:
        data = {"consult_id": consult.id, "status": consult.status, **extra}
        streams = [consult_stream(consult.id), f"user:{consult.requester_id}"]
        if op in ("requested", "escalated", "cancelled"):
            streams.append(desk_stream(consult.invited_institution_id))
        for stream in streams:
            await self.events.append(tx, stream, "consult", op, data)

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
        items = await self._record_items(data.patient_id, data.record_items, "record_items")
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
                status="requested",
            )
            tx.session.add(consult)
            await tx.session.flush()
            tx.session.add(
                ConsultParticipant(
                    consult_id=consult.id, user_id=requester.user_id, role="requester"
                )
            )
            tx.session.add(
                ConsultTransition(
                    consult_id=consult.id,
                    from_status=None,
                    to_status="requested",
                    actor_id=requester.user_id,
                    note={"consent": consent},
                )
            )
            await self.access.open_window(
                tx,
                patient_id=consult.patient_id,
                institution_id=invited.id,
                source=SOURCE,
                source_id=consult.id,
            )
            await self.audit.record(
                tx.session,
                "consult.request",
                actor=requester,
                patient_id=consult.patient_id,
                resource=f"Consult/{consult.id}",
                details={"invited_institution_id": invited.id, "consent": consent},
            )
            await self._announce(tx, consult, "requested", {"urgency": consult.urgency})
            return await self._out(tx.session, consult)

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
            user = await session.get(User, user_id)
        if user is None or user.role != "specialist" or user.institution_id != institution_id:
            raise ValidationFailed.field(
                "invited_specialist_id", "not a specialist of the invited institution"
            )

    async def _record_items(
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

    async def _check_answerer(self, consult: Consult, requester: Requester) -> None:
        if (
            requester.role != "specialist"
            or requester.institution_id != consult.invited_institution_id
        ):
            raise Forbidden("the invited institution's specialists answer this request")
        if consult.invited_specialist_id not in (None, requester.user_id):
            raise Forbidden("this request names another specialist", code="named_specialist")

    async def _add_host(self, tx: Tx, consult: Consult, requester: Requester) -> None:
        consult.host_id = requester.user_id
        tx.session.add(
            ConsultParticipant(
                consult_id=consult.id, user_id=requester.user_id, role="host", admitted_at=utcnow()
            )
        )

    async def accept(
        self, requester: Requester, consult_id: int, data: schemas.Accept
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            await self._check_answerer(consult, requester)
            await self._move(tx, consult, "accept", requester)
            await self._add_host(tx, consult, requester)
            if data.scheduled_at is not None:
                consult.scheduled_at = data.scheduled_at
                await self._move(
                    tx, consult, "schedule", requester, {"scheduled_at": _iso(data.scheduled_at)}
                )
            return await self._out(tx.session, consult)

    async def propose(
        self, requester: Requester, consult_id: int, data: schemas.Propose
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            await self._check_answerer(consult, requester)
            consult.proposed_at = data.proposed_at
            note = {"proposed_at": _iso(data.proposed_at), "note": data.note}
            await self._move(tx, consult, "propose", requester, note)
            await self._add_host(tx, consult, requester)
            return await self._out(tx.session, consult)

    async def decline(
        self, requester: Requester, consult_id: int, data: schemas.Decline
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            await self._check_answerer(consult, requester)
            consult.decline_reason = data.reason
            await self._move(tx, consult, "decline", requester, {"reason": data.reason})
            return await self._out(tx.session, consult)

    async def schedule(
        self, requester: Requester, consult_id: int, data: schemas.Schedule
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            self._check_host(consult, requester)
            consult.scheduled_at = data.scheduled_at
            note = {"scheduled_at": _iso(data.scheduled_at)}
            await self._move(tx, consult, "schedule", requester, note)
            return await self._out(tx.session, consult)

    async def confirm(self, requester: Requester, consult_id: int) -> schemas.ConsultOut:
        """The requester takes the time the invited side proposed."""
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            self._check_requester(consult, requester)
            if consult.proposed_at is None:
                raise Conflict("no time was proposed; the host schedules", code="nothing_proposed")
            consult.scheduled_at = consult.proposed_at
            note = {"scheduled_at": _iso(consult.proposed_at)}
            await self._move(tx, consult, "confirm", requester, note)
            return await self._out(tx.session, consult)

    async def cancel(
        self, requester: Requester, consult_id: int, data: schemas.Cancel
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            self._check_requester(consult, requester)
            await self._move(tx, consult, "cancel", requester, {"reason": data.reason})
            return await self._out(tx.session, consult)

    async def close(self, requester: Requester, consult_id: int) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            if requester.user_id not in (consult.requester_id, consult.host_id):
                raise Forbidden("the requester or the host closes a consult")
            await self._move(tx, consult, "close", requester)
            await tx.session.execute(
                delete(ConsultPresence).where(ConsultPresence.consult_id == consult.id)
            )
            return await self._out(tx.session, consult)

    @staticmethod
    def _check_host(consult: Consult, requester: Requester) -> None:
        if consult.host_id != requester.user_id:
            raise Forbidden("only the consult's host (the specialist) may do this", code="not_host")

    @staticmethod
    def _check_requester(consult: Consult, requester: Requester) -> None:
        if consult.requester_id != requester.user_id:
            raise Forbidden("only the requesting doctor may do this", code="not_requester")

    async def add_participant(
        self, requester: Requester, consult_id: int, data: schemas.AddParticipant
    ) -> schemas.ConsultOut:
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            if requester.user_id not in (consult.requester_id, consult.host_id):
                raise Forbidden("the requester or the host invites colleagues")
            if consult.status in ENDED:
                raise Conflict(f"the consult is {consult.status}", code="consult_ended")
            user = await tx.session.get(User, data.user_id)
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
            if await self._participant(tx.session, consult.id, user.id) is not None:
                raise Conflict("already a participant", code="already_participant")
            count = len(
                list(
                    await tx.session.scalars(
                        select(ConsultParticipant.id).where(
                            ConsultParticipant.consult_id == consult.id
                        )
                    )
                )
            )
            if count >= self.settings.consult_max_participants:
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
            return await self._out(tx.session, consult)

    # --- the record panel --------------------------------------------------------------

    async def record_panel(self, requester: Requester, consult_id: int) -> schemas.RecordPanel:
        """The frozen snapshot, and the live summary through the record's access rules."""
        async with self.db.read() as session:
            consult, _ = await self._check_participant(session, consult_id, requester)
        policy = await self._check_not_revoked(requester, consult, "consult.snapshot_read")
        snapshot = await self.records.withhold_snapshot(policy, consult.snapshot)
        await self.audit.record_alone(
            "consult.snapshot_read",
            actor=requester,
            patient_id=consult.patient_id,
            resource=f"Consult/{consult_id}",
        )
        live = await self.records.clinical_summary(requester, consult.patient_id)
        return schemas.RecordPanel(snapshot=snapshot, live=live.model_dump(mode="json"))

    # --- the opinion -------------------------------------------------------------------

    async def write_opinion(
        self, requester: Requester, consult_id: int, data: schemas.OpinionIn
    ) -> schemas.OpinionOut:
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            self._check_host(consult, requester)
            if consult.status not in TRANSITIONS["opinion"][0]:
                await self._move(tx, consult, "opinion", requester)  # raises the 409
            opinion = {
                "consult_id": consult.id,
                "patient_id": consult.patient_id,
                "author_id": requester.user_id,
                "author_institution_id": consult.invited_institution_id,
                "requesting_institution_id": consult.requesting_institution_id,
                "findings": data.findings,
                "diagnostic_opinion": data.diagnostic_opinion,
                "treatment_advice": data.treatment_advice,
                "refer": data.refer,
                "refer_note": data.refer_note,
                "written_at": utcnow().isoformat(),
            }
            signature = await self.signer.sign(tx.session, requester.user_id, opinion)
            document = await self.records.add_resource(
                tx,
                patient_id=consult.patient_id,
                institution_id=consult.requesting_institution_id,
                resource=opinion_document(opinion, signature),
            )
            consult.opinion = opinion
            consult.opinion_signature = signature.model_dump(mode="json")
            consult.opinion_document_id = str(document["id"])
            await self._move(
                tx,
                consult,
                "opinion",
                requester,
                {"document": f"DocumentReference/{document['id']}", "refer": data.refer},
            )
            return schemas.OpinionOut(
                consult_id=consult.id,
                opinion=opinion,
                signature=consult.opinion_signature,
                document_id=consult.opinion_document_id,
                verified=True,
            )

    async def referral_basis(
        self, requester: Requester, consult_id: int, patient_id: int
    ) -> dict[str, Any]:
        """What a referral made from this consult carries: its frozen snapshot and opinion.

        Only the inviting doctor decides (the treating institution keeps decision
        authority), and only once the signed opinion recommends referral.
        """
        async with self.db.read() as session:
            consult = await self._get(session, consult_id)
        if consult.requester_id != requester.user_id:
            raise Forbidden(
                "only the doctor who requested the consult turns it into a referral",
                code="not_the_requester",
            )
        if consult.opinion is None or not consult.opinion.get("refer"):
            raise Conflict(
                "the consult opinion does not recommend referral",
                code="referral_not_recommended",
            )
        if patient_id != consult.patient_id:
            raise ValidationFailed.field("patient_id", "is not the consult's patient")
        await self._check_not_revoked(requester, consult, "consult.referral")
        summary = consult.opinion.get("diagnostic_opinion")
        return {
            "consult_id": consult.id,
            "snapshot": consult.snapshot,
            "opinion": consult.opinion,
            "summary": f"会诊意见：{summary}" if summary else None,
        }

    async def verify_opinions(self, batch: int = 500) -> tuple[int, list[tuple[int, str]]]:
        """Check every signed opinion against its signature and its consult row.

        Returns how many were checked and ``(consult id, problem)`` for each that
        was changed after signing (``yihao verify-signatures``).
        """
        checked, broken, last = 0, [], 0
        async with self.db.read() as session:
            while True:
                rows = (
                    await session.scalars(
                        select(Consult)
                        .where(Consult.id > last, Consult.opinion.is_not(None))
                        .order_by(Consult.id)
                        .limit(batch)
                    )
                ).all()
                for consult in rows:
                    checked, last = checked + 1, consult.id
                    problem = await self._opinion_problem(session, consult)
                    if problem:
                        broken.append((consult.id, problem))
                if len(rows) < batch:
                    return checked, broken

    async def _opinion_problem(self, session: AsyncSession, consult: Consult) -> str | None:
        opinion = consult.opinion or {}
        if consult.opinion_signature is None:
            return "opinion without a signature"
        if (
            opinion.get("consult_id") != consult.id
            or opinion.get("patient_id") != consult.patient_id
            or opinion.get("author_id") != consult.host_id
        ):
            return "opinion does not belong to this consult"
        try:
            signature = Signature.model_validate(consult.opinion_signature)
        except ValueError:
            return "signature is malformed"
        if not await self.signer.verify(session, opinion["author_id"], signature, opinion):
            return "opinion does not match its signature"
        return None

    async def get_opinion(self, requester: Requester, consult_id: int) -> schemas.OpinionOut:
        async with self.db.read() as session:
            consult = await self._get(session, consult_id)
            member = await self._participant(session, consult_id, requester.user_id)
        if not self._may_view(consult, requester, member is not None):
            raise NotFound(f"no consult {consult_id}")
        await self._check_not_revoked(requester, consult, "consult.opinion_read")
        async with self.db.read() as session:
            if consult.opinion is None or consult.opinion_signature is None:
                raise NotFound("no opinion has been written yet")
            signature = Signature.model_validate(consult.opinion_signature)
            verified = await self.signer.verify(
                session, consult.opinion["author_id"], signature, consult.opinion
            )
        return schemas.OpinionOut(
            consult_id=consult.id,
            opinion=consult.opinion,
            signature=consult.opinion_signature,
            document_id=consult.opinion_document_id,
            verified=verified,
        )

    # --- escalation ----------------------------------------------------------------------

    async def escalate_overdue(self, now: datetime | None = None) -> list[int]:
        """Notify the invited institution's admins of requests unanswered too long; run-once-safe.

        Each consult is escalated once: the rows are locked (PostgreSQL: skipping rows
        another node holds; SQLite: one writer at a time) and ``escalated_at`` is set in
        the same transaction as the notifications.
        """
        now = now or utcnow()
        async with self.db.transaction() as tx:
            consults = list(
                await tx.session.scalars(
                    select(Consult)
                    .where(
                        Consult.status == "requested",
                        Consult.escalated_at.is_(None),
                        Consult.created_at < now - self.answer_timeout,
                    )
                    .order_by(Consult.id)
                    .limit(100)
                    .with_for_update(skip_locked=True)
                )
            )
            for consult in consults:
                consult.escalated_at = now
                admins = await tx.session.scalars(
                    select(User.id).where(
                        User.institution_id == consult.invited_institution_id,
                        User.role == "institution_admin",
                        User.active.is_(True),
                    )
                )
                data = {
                    "consult_id": consult.id,
                    "status": consult.status,
                    "urgency": consult.urgency,
                }
                for admin_id in admins:
                    await self.events.append(tx, f"user:{admin_id}", "consult", "escalated", data)
                await self._announce(tx, consult, "escalated", {"urgency": consult.urgency})
                await self.audit.record(
                    tx.session,
                    "consult.escalate",
                    patient_id=consult.patient_id,
                    resource=f"Consult/{consult.id}",
                )
            return [c.id for c in consults]

    # --- the room: chat ------------------------------------------------------------------

    async def send_chat(self, requester: Requester, data: schemas.ChatSend) -> dict[str, Any]:
        async with self.db.read() as session:
            consult, _ = await self._check_participant(session, data.consult_id, requester)
            existing = await self._message(session, data, requester)
        if existing is not None:
            return existing
        await self._check_not_revoked(requester, consult, "consult.chat")
        if consult.status not in CHAT_STATES:
            raise Conflict(f"the consult is {consult.status}: no chat", code="consult_not_open")
        attachments, withheld = await self._chat_attachments(consult, data.attachments)
        try:
            async with self.db.transaction() as tx:
                current = await self._get(tx.session, consult.id)
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
                message.seq = envelope["seq"]
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

    async def _chat_attachments(
        self, consult: Consult, refs: list[schemas.RecordRef]
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The attachments a chat message may carry, and the marker of those it may not.

        A message is stored once and pushed to (and replayed for) both institutions of the
        consult, so it carries only what the patient shares with both; a category one of
        them is excluded from never enters the message, not even its label.
        """
        items = await self._record_items(consult.patient_id, refs, "attachments")
        requesting = await self.access.content_policy(
            consult.requesting_institution_id, consult.patient_id
        )
        invited = await self.access.content_policy(
            consult.invited_institution_id, consult.patient_id
        )
        kept, left_out = await self.records.withhold_items(requesting.stricter(invited), items)
        return [_attachment(r) for r in kept], withheld_marker(left_out)

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

    # --- the room: live session, lobby, presence ------------------------------------------

    async def check_open(self, requester: Requester, consult_id: int) -> schemas.ConsultOut:
        """May this user sit in the consult's room (stream)? Re-checked at every join.

        The room carries the chat (clinical text): not for an institution the patient revoked.
        """
        async with self.db.read() as session:
            consult, _ = await self._check_participant(session, consult_id, requester)
        await self._check_not_revoked(requester, consult, "consult.open")
        async with self.db.read() as session:
            return await self._out(session, consult)

    async def _check_not_revoked(
        self, requester: Requester, consult: Consult, action: str
    ) -> ContentPolicy:
        return await self.access.check_not_revoked(
            requester, consult.patient_id, action=action, resource=f"Consult/{consult.id}"
        )

    async def join(
        self, sid: str, requester: Requester, data: schemas.Join
    ) -> tuple[dict[str, Any], bool]:
        """Enter the live session, or its lobby. Returns the answer and whether admitted."""
        if requester.role == RECORDER_ROLE:
            return await self._join_recorder(sid, requester, data.consult_id), True
        async with self.db.read() as session:
            consult, _ = await self._check_participant(session, data.consult_id, requester)
        await self._check_not_revoked(requester, consult, "consult.join")
        if consult.status not in LIVE_STATES:
            raise Conflict(f"the consult is {consult.status}: no session", code="consult_not_live")
        method = await self.auth.reauthenticate(
            requester,
            password=data.password,
            totp=data.totp,
            fresh_seconds=self.reauth_seconds,
            action="consult.reauth",
        )
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, data.consult_id, lock=True)
            participant = await self._participant(tx.session, consult.id, requester.user_id)
            assert participant is not None
            is_host = consult.host_id == requester.user_id
            if is_host and consult.status != "in_session":
                await self._move(tx, consult, "start", requester)
            if participant.admitted_at is None and not is_host:
                first = participant.waiting_since is None
                participant.waiting_since = participant.waiting_since or utcnow()
                if first:
                    await self.events.append(
                        tx,
                        consult_stream(consult.id),
                        "consult.lobby",
                        "waiting",
                        {"consult_id": consult.id, "user_id": requester.user_id},
                    )
                return {"state": "lobby", "consult_id": consult.id}, False
            await tx.session.execute(delete(ConsultPresence).where(ConsultPresence.sid == sid))
            tx.session.add(
                ConsultPresence(
                    sid=sid, consult_id=consult.id, user_id=requester.user_id, node=self.node_id
                )
            )
            await self.audit.record(
                tx.session,
                "consult.join",
                actor=requester,
                patient_id=consult.patient_id,
                resource=f"Consult/{consult.id}",
                details={"reauth": method},
            )
        members = await self.presence(consult.id)
        return {"state": "joined", "consult_id": consult.id, "members": members}, True

    async def _join_recorder(
        self, sid: str, requester: Requester, consult_id: int
    ) -> dict[str, Any]:
        """The recording worker enters without lobby: its login is good for one recording."""
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, consult_id, lock=True)
            recording = await tx.session.scalar(
                select(Recording).where(
                    Recording.consult_id == consult_id,
                    Recording.recorder_session_id == requester.session_id,
                    Recording.state.in_(("starting", "recording")),
                )
            )
            if recording is None:
                raise Forbidden("no recording of this consult is running", code="not_a_participant")
            if consult.status not in LIVE_STATES:
                raise Conflict(
                    f"the consult is {consult.status}: no session", code="consult_not_live"
                )
            await tx.session.execute(delete(ConsultPresence).where(ConsultPresence.sid == sid))
            tx.session.add(
                ConsultPresence(
                    sid=sid,
                    consult_id=consult.id,
                    user_id=requester.user_id,
                    kind="recorder",
                    node=self.node_id,
                )
            )
            await self.audit.record(
                tx.session,
                "consult.join",
                actor=requester,
                patient_id=consult.patient_id,
                resource=f"Consult/{consult.id}",
                details={"recording_id": recording.id},
            )
        members = await self.presence(consult_id)
        return {"state": "joined", "consult_id": consult_id, "members": members}

    async def admit(self, requester: Requester, data: schemas.Admit) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            consult = await self._get(tx.session, data.consult_id, lock=True)
            if await self._participant(tx.session, consult.id, requester.user_id) is None:
                raise Forbidden("not a participant", code="not_a_participant")
            self._check_host(consult, requester)
            participant = await self._participant(tx.session, consult.id, data.user_id)
            if participant is None:
                raise NotFound(f"user {data.user_id} is not a participant of this consult")
            if participant.admitted_at is None:
                participant.admitted_at, participant.waiting_since = utcnow(), None
                await self.events.append(
                    tx,
                    consult_stream(consult.id),
                    "consult.lobby",
                    "admitted",
                    {"consult_id": consult.id, "user_id": data.user_id},
                )
                await self.audit.record(
                    tx.session,
                    "consult.admit",
                    actor=requester,
                    patient_id=consult.patient_id,
                    resource=f"Consult/{consult.id}",
                    details={"user_id": data.user_id},
                )
        return {"consult_id": data.consult_id, "admitted": data.user_id}

    async def presence(self, consult_id: int) -> list[dict[str, Any]]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(ConsultPresence)
                .where(ConsultPresence.consult_id == consult_id)
                .order_by(ConsultPresence.joined_at, ConsultPresence.sid)
            )
            return [
                {
                    "user_id": r.user_id,
                    "kind": r.kind,
                    "camera": r.camera,
                    "mic": r.mic,
                    "screen": r.screen,
                    "since": r.joined_at.isoformat(),
                }
                for r in rows
            ]

    async def set_media(self, sid: str, requester: Requester, data: schemas.Media) -> None:
        async with self.db.transaction() as tx:
            row = await tx.session.scalar(
                select(ConsultPresence).where(
                    ConsultPresence.sid == sid, ConsultPresence.consult_id == data.consult_id
                )
            )
            if row is None:
                raise Forbidden("join the session first", code="not_in_session")
            row.camera, row.mic, row.screen = data.camera, data.mic, data.screen

    async def leave(self, sid: str, consult_id: int | None = None) -> list[int]:
        """Take the socket out of live sessions (one, or all when it disconnected)."""
        if consult_id is None:
            self._signal_locks.pop(sid, None)
            self._signal_seq.pop(sid, None)
        async with self.db.transaction() as tx:
            query = select(ConsultPresence).where(ConsultPresence.sid == sid)
            if consult_id is not None:
                query = query.where(ConsultPresence.consult_id == consult_id)
            rows = list(await tx.session.scalars(query))
            for row in rows:
                await tx.session.delete(row)
            return [r.consult_id for r in rows]

    async def reap_presence(self, alive: set[str]) -> list[int]:
        """Delete the presence of sockets on nodes not alive (killed); the consults touched."""
        async with self.db.transaction() as tx:
            result = await tx.session.execute(
                delete(ConsultPresence)
                .where(or_(ConsultPresence.node.is_(None), ConsultPresence.node.notin_(alive)))
                .returning(ConsultPresence.consult_id)
            )
            return sorted(set(result.scalars()))

    async def forget_node(self, node_id: str, before: datetime) -> None:
        """At start: the presence an earlier process with this node id left behind."""
        async with self.db.transaction() as tx:
            await tx.session.execute(
                delete(ConsultPresence).where(
                    ConsultPresence.node == node_id, ConsultPresence.joined_at < before
                )
            )

    # --- the room: signaling ----------------------------------------------------------------

    def signal_lock(self, sid: str) -> asyncio.Lock:
        return self._signal_locks[sid]

    async def route_signal(
        self, sid: str, requester: Requester, data: schemas.Signal
    ) -> tuple[list[str], dict[str, Any]]:
        """Where a signal goes (the recipient's sockets in the session) and what it carries."""
        size = len(json.dumps(data.data, separators=(",", ":")))
        if size > SIGNAL_MAX_BYTES:
            raise PayloadTooLarge(f"a signal carries at most {SIGNAL_MAX_BYTES} bytes of data")
        async with self.db.read() as session:
            rows = list(
                await session.execute(
                    select(ConsultPresence.sid, ConsultPresence.user_id).where(
                        ConsultPresence.consult_id == data.consult_id
                    )
                )
            )
        if (sid, requester.user_id) not in {(r.sid, r.user_id) for r in rows}:
            raise Forbidden("join the session before signaling", code="not_in_session")
        targets = [r.sid for r in rows if r.user_id == data.to and r.sid != sid]
        if not targets:
            raise Forbidden(
                f"user {data.to} is not in this consult's session", code="recipient_not_in_room"
            )
        self._signal_seq[sid] += 1
        message = {
            "consult_id": data.consult_id,
            "from": requester.user_id,
            "kind": data.kind,
            "data": data.data,
            "seq": self._signal_seq[sid],
        }
        return targets, message


def _iso(value: datetime) -> str:
    return value.isoformat()


def _attachment(resource: dict[str, Any]) -> dict[str, Any]:
    code = resource.get("code") or resource.get("type") or {}
    display = code.get("text") if isinstance(code, dict) else None
    if not display and isinstance(code, dict):
        display = next((c.get("display") for c in code.get("coding", []) if c.get("display")), None)
    return {
        "resource_type": resource["resourceType"],
        "id": str(resource["id"]),
        "display": display,
    }


def opinion_document(opinion: dict[str, Any], signature: Signature) -> dict[str, Any]:
    """The signed opinion as a FHIR DocumentReference: the opinion and its signature attached."""

    def attach(title: str, content: Any) -> dict[str, Any]:
        data = base64.b64encode(canonical_json(content)).decode()
        return {"attachment": {"contentType": "application/json", "title": title, "data": data}}

    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final",
        "type": OPINION_DOC_TYPE,
        "date": opinion["written_at"],
        "description": f"远程会诊意见 (consult {opinion['consult_id']})",
        "content": [
            attach("consult-opinion.json", opinion),
            attach("signature.json", signature.model_dump(mode="json")),
        ],
    }
