"""The consult room: who may sit in it, the live session (join, lobby, admit), presence,
and where a WebRTC signal goes.

Presence rows (``consult_presence``) say which sockets of which node are in a session now.
What is kept per socket in this process (the order and numbering of its signals) lives at
the socket edge, server/consults/socket.py, never here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.consults import schemas
from server.consults.guards import (
    ConsultAccess,
    check_host,
    check_participant,
    consult_out,
    get_consult,
    get_participant,
    not_a_participant,
)
from server.consults.lifecycle import ConsultLifecycle
from server.consults.models import ConsultPresence
from server.consults.states import LIVE_STATES, RECORDER_ROLE, ConsultStatus, consult_stream
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, utcnow
from server.core.errors import Conflict, Forbidden, NotFound, PayloadTooLarge
from server.core.events import Events
from server.core.roles import Role
from server.identity.auth_service import AuthService

SIGNAL_MAX_BYTES = 64 * 1024


class RecorderSessions(Protocol):
    """The recording capability's answer to "which recording does this login record?"."""

    async def running_recording_id(
        self, session: AsyncSession, consult_id: int, recorder_session_id: str
    ) -> int | None: ...


class ConsultRoom:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        events: Events,
        auth: AuthService,
        lifecycle: ConsultLifecycle,
        checks: ConsultAccess,
        recordings: RecorderSessions | None,
        reauth_seconds: int,
        node_id: str = "",
    ) -> None:
        self.db = db
        self.audit = audit
        self.events = events
        self.auth = auth
        self.lifecycle = lifecycle
        self.checks = checks
        self.recordings = recordings
        self.reauth_seconds = reauth_seconds
        # The node this process is (server/core/nodes.py): presence rows carry it.
        self.node_id = node_id

    async def check_open(self, requester: Requester, consult_id: int) -> schemas.ConsultOut:
        """May this user sit in the consult's room (stream)? Re-checked at every join.

        The room carries the chat (clinical text): not for an institution the patient revoked.
        """
        opened, _ = await self.opened(requester, consult_id)
        return opened

    async def opened(self, requester: Requester, consult_id: int) -> tuple[schemas.ConsultOut, int]:
        """:meth:`check_open` and the head of the consult's stream, in one read."""
        stream = consult_stream(consult_id)
        async with self.db.read() as session:
            consult, _ = await check_participant(session, consult_id, requester)
            policy = await self.checks.policy(requester, consult, session)
            if not policy.revoked:
                out = await consult_out(session, consult)
                heads = await self.events.heads([stream], session=session)
        if policy.revoked:
            raise await self.checks.refuse(requester, consult, "consult.open")
        return out, heads[stream]

    async def check_member(self, requester: Requester, consult_id: int) -> None:
        """A participant of the consult (or the recorder sitting in its session)."""
        async with self.db.read() as session:
            if requester.role == RECORDER_ROLE:
                await get_consult(session, consult_id)
                return
            await check_participant(session, consult_id, requester)

    # --- the live session ----------------------------------------------------------------------

    async def join(
        self, sid: str, requester: Requester, data: schemas.Join
    ) -> tuple[dict[str, Any], bool]:
        """Enter the live session, or its lobby. Returns the answer and whether admitted."""
        if requester.role == RECORDER_ROLE:
            return await self._join_recorder(sid, requester, data.consult_id), True
        async with self.db.read() as session:
            consult, _ = await check_participant(session, data.consult_id, requester)
            policy = await self.checks.policy(requester, consult, session)
        if policy.revoked:
            raise await self.checks.refuse(requester, consult, "consult.join")
        if consult.status not in LIVE_STATES:
            raise Conflict(f"the consult is {consult.status}: no session", code="consult_not_live")
        # Practitioners confirm it is them; a patient (a follow-up visit's guest) enters with
        # their own real-name account's login.
        method = (
            "patient_login"
            if requester.role == Role.PATIENT
            else await self.auth.reauthenticate(
                requester,
                password=data.password,
                totp=data.totp,
                fresh_seconds=self.reauth_seconds,
                action="consult.reauth",
            )
        )
        async with self.db.transaction() as tx:
            consult, participant = await check_participant(
                tx.session, data.consult_id, requester, lock=True
            )
            is_host = consult.host_id == requester.user_id
            if is_host and consult.status != ConsultStatus.IN_SESSION:
                await self.lifecycle.move(tx, consult, "start", requester)
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
            await tx.session.flush()
            members = await self.presence(consult.id, tx.session)
        return {"state": "joined", "consult_id": consult.id, "members": members}, True

    async def _join_recorder(
        self, sid: str, requester: Requester, consult_id: int
    ) -> dict[str, Any]:
        """The recording worker enters without lobby: its login is good for one recording."""
        async with self.db.transaction() as tx:
            consult = await get_consult(tx.session, consult_id, lock=True)
            recording_id = None
            if self.recordings is not None:
                recording_id = await self.recordings.running_recording_id(
                    tx.session, consult_id, requester.session_id
                )
            if recording_id is None:
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
                details={"recording_id": recording_id},
            )
            await tx.session.flush()
            members = await self.presence(consult_id, tx.session)
        return {"state": "joined", "consult_id": consult_id, "members": members}

    async def admit(self, requester: Requester, data: schemas.Admit) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            consult, _ = await check_participant(tx.session, data.consult_id, requester, lock=True)
            check_host(consult, requester)
            participant = await get_participant(tx.session, consult.id, data.user_id)
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

    # --- presence --------------------------------------------------------------------------------

    async def presence(
        self, consult_id: int, session: AsyncSession | None = None
    ) -> list[dict[str, Any]]:
        """Who is in the consult's session now (in ``session``, or a read of its own)."""
        query = (
            select(
                ConsultPresence.user_id,
                ConsultPresence.kind,
                ConsultPresence.camera,
                ConsultPresence.mic,
                ConsultPresence.screen,
                ConsultPresence.joined_at,
            )
            .where(ConsultPresence.consult_id == consult_id)
            .order_by(ConsultPresence.joined_at, ConsultPresence.sid)
        )
        if session is not None:
            rows = list(await session.execute(query))
        else:
            async with self.db.read() as own:
                rows = list(await own.execute(query))
        return [
            {
                "user_id": user_id,
                "kind": kind,
                "camera": camera,
                "mic": mic,
                "screen": screen,
                "since": joined_at.isoformat(),
            }
            for user_id, kind, camera, mic, screen, joined_at in rows
        ]

    async def _not_in_session(
        self, session: AsyncSession, requester: Requester, consult_id: int, detail: str
    ) -> Forbidden:
        """The refusal for a socket outside the session: a participant is told to join
        first; anyone else that they are not a participant."""
        if requester.role != RECORDER_ROLE and (
            await get_participant(session, consult_id, requester.user_id) is None
        ):
            return not_a_participant(consult_id)
        return Forbidden(detail, code="not_in_session")

    async def set_media(self, sid: str, requester: Requester, data: schemas.Media) -> None:
        async with self.db.transaction() as tx:
            row = await tx.session.scalar(
                select(ConsultPresence).where(
                    ConsultPresence.sid == sid, ConsultPresence.consult_id == data.consult_id
                )
            )
            if row is None:
                raise await self._not_in_session(
                    tx.session, requester, data.consult_id, "join the session first"
                )
            row.camera, row.mic, row.screen = data.camera, data.mic, data.screen

    async def leave(
        self, sid: str, consult_id: int | None = None
    ) -> dict[int, list[dict[str, Any]]]:
        """Take the socket out of live sessions (one, or all when it disconnected); for each
        session it left, who is in it now (read in the same transaction)."""
        query = delete(ConsultPresence).where(ConsultPresence.sid == sid)
        if consult_id is not None:
            query = query.where(ConsultPresence.consult_id == consult_id)
        async with self.db.transaction() as tx:
            result = await tx.session.execute(query.returning(ConsultPresence.consult_id))
            return {c: await self.presence(c, tx.session) for c in sorted(set(result.scalars()))}

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

    # --- signaling -------------------------------------------------------------------------------

    async def route_signal(
        self, sid: str, requester: Requester, data: schemas.Signal
    ) -> tuple[list[str], dict[str, Any]]:
        """Where a signal goes (the recipient's sockets in the session) and what it carries
        (the socket edge numbers it: ``seq``)."""
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
                raise await self._not_in_session(
                    session, requester, data.consult_id, "join the session before signaling"
                )
        targets = [r.sid for r in rows if r.user_id == data.to and r.sid != sid]
        if not targets:
            raise Forbidden(
                f"user {data.to} is not in this consult's session", code="recipient_not_in_room"
            )
        message = {
            "consult_id": data.consult_id,
            "from": requester.user_id,
            "kind": data.kind,
            "data": data.data,
        }
        return targets, message
