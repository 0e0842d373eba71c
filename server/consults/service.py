"""Remote consultations (远程会诊): the capability, built once, and its face to the others.

One concept per module, each a service the edges (routes, socket handlers, jobs) call
directly:

- :mod:`~server.consults.lifecycle` — request, answer, schedule, cancel, close, colleagues;
  its steps declared in :mod:`~server.consults.steps`, taken through the one lifecycle
  mechanism (:mod:`server.core.lifecycle`);
- :mod:`~server.consults.escalation` — unanswered requests reach the invited administrators;
- :mod:`~server.consults.reads` — one consult, lists, history, the rooms of a socket;
- :mod:`~server.consults.room` — the live session: join, lobby, admit, presence, signaling;
- :mod:`~server.consults.chat` — messages and their record attachments;
- :mod:`~server.consults.opinion` — the signed opinion;
- :mod:`~server.consults.panel` — the record panel;
- :mod:`~server.consults.followup` — the room of a follow-up video visit (server/visits);
- :mod:`~server.consults.guards` — the loaders and checks they share.

Other capabilities never touch the consult tables: they call the public methods below,
which answer with plain values (:class:`~server.consults.states.ConsultFacts`, ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessService
from server.config import Settings
from server.consults import guards, schemas
from server.consults.chat import ConsultChat
from server.consults.escalation import ConsultEscalation
from server.consults.followup import FollowupRooms
from server.consults.guards import ConsultAccess
from server.consults.lifecycle import ConsultLifecycle, MemberAdded
from server.consults.opinion import ConsultOpinion
from server.consults.panel import RecordPanel
from server.consults.reads import ConsultReads
from server.consults.room import ConsultRoom, RecorderSessions
from server.consults.states import ConsultFacts
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database
from server.core.events import Events
from server.core.signing import Signer
from server.identity.auth_service import AuthService
from server.identity.directory import Directory
from server.identity.service import IdentityService
from server.inbox.service import InboxService
from server.records.service import RecordsService


class ConsultsService:
    """The consults capability: its concept services, and the methods other capabilities
    use (media's recording, referrals, the CLI)."""

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
        directory: Directory,
        *,
        node_id: str = "",
        recordings: RecorderSessions | None = None,
        member_listeners: Sequence[MemberAdded] = (),
        inbox: InboxService | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        self.events = events
        self.access = access
        self.records = records
        checks = ConsultAccess(access, records)
        self.reads = ConsultReads(db, access)
        self.lifecycle = ConsultLifecycle(
            settings,
            db,
            audit,
            events,
            access,
            records,
            identity,
            directory,
            checks,
            member_listeners=member_listeners,
        )
        self.escalation = ConsultEscalation(settings, db, audit, events, directory, self.lifecycle)
        self.room = ConsultRoom(
            db,
            audit,
            events,
            auth,
            self.lifecycle,
            checks,
            recordings,
            reauth_seconds=settings.consult_reauth_seconds,
            node_id=node_id,
        )
        self.chat = ConsultChat(db, audit, events, access, records, checks)
        self.opinion = ConsultOpinion(db, records, signer, self.lifecycle, checks, inbox)
        self.panel = RecordPanel(db, audit, records, checks)
        self.followup = FollowupRooms(self.lifecycle)

    # --- for other capabilities ------------------------------------------------------------

    async def get_consult(self, requester: Requester, consult_id: int) -> schemas.ConsultOut:
        """The consult, for those who may see it; ``404`` for anyone else."""
        return await self.reads.get_consult(requester, consult_id)

    async def consult_facts(
        self, session: AsyncSession, consult_id: int, *, lock: bool = False
    ) -> ConsultFacts:
        """The consult's plain facts (``404`` if none), in the caller's unit of work; with
        ``lock`` its row stays locked until that commits (one writer per consult)."""
        return guards.facts_of(await guards.get_consult(session, consult_id, lock=lock))

    async def check_participant(
        self, session: AsyncSession, consult_id: int, requester: Requester
    ) -> ConsultFacts:
        """The consult's facts, for a participant; ``403 not_a_participant`` otherwise."""
        consult, _ = await guards.check_participant(session, consult_id, requester)
        return guards.facts_of(consult)

    @staticmethod
    def check_host(consult: ConsultFacts, requester: Requester) -> None:
        """``403 not_host`` unless the requester is the consult's host."""
        guards.check_host(consult, requester)

    async def participant_ids(self, session: AsyncSession, consult_id: int) -> list[int]:
        """The user ids of the consult's participants, in the order they joined it."""
        return await guards.participant_ids(session, consult_id)

    async def referral_basis(
        self, requester: Requester, consult_id: int, patient_id: int
    ) -> dict[str, Any]:
        """What a referral made from this consult carries (see ConsultOpinion)."""
        return await self.opinion.referral_basis(requester, consult_id, patient_id)

    async def verify_opinions(self, batch: int = 500) -> tuple[int, list[tuple[int, str]]]:
        """Every signed opinion checked (``yihao verify-signatures``)."""
        return await self.opinion.verify_all(batch)
