"""The Socket.IO gateway: connect authentication, server-managed rooms, replay, acks.

A client connects with ``auth: {"token": <access token>}``. The gateway
verifies the token, keeps the requester in the socket's session and places the
socket in the rooms it is entitled to (``user:<id>``, ``institution:<id>``, by
role ``desk:<id>`` or ``pharmacy:<id>``, and whatever capabilities add through
room providers). A client never names a
room to join.

Sessions: each socket also sits in ``session:<session id>``. When a session ends
anywhere in the cluster (``server.core.sessions``), every node sends its local
sockets of that session a ``session_ended`` event and disconnects them. Every
event checks its session cheaply first: a per-node set of ended sessions (no
I/O), and at most every ``session_check_seconds`` a database read (the safety net
for a lost broadcast). An event on an ended session is acked ``401
session_revoked`` and the socket is closed.

Capabilities register their client → server events with :meth:`Gateway.on`
(from their capability's ``socket``, which ``create_app`` calls once): the
payload — one argument — is validated with a pydantic model, the handler gets
the requester, and the ack (:mod:`server.realtime.acks`) is
``{"ok": true, "data": …}`` or ``{"ok": false, "problem": {…}}`` with the same
problem object the REST API uses. Every event, an unknown one too, spends the
connection's event budget. Acks are sent only after the handler's transaction committed. A payload
over the size or nesting limit is never decoded: it arrives as a
:class:`~server.core.jsonlimits.RefusedPayload` and is answered with its
413/422 problem like any other refusal.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import socketio
from pydantic import BaseModel, ValidationError

from server.config import Settings
from server.core import context
from server.core.api import Strict, check_no_nul, validation_failed
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    YihaoError,
)
from server.core.events import REPLAY_PAGE, Events
from server.core.jsonlimits import RefusedPayload
from server.core.middleware import as_unavailable, is_out_of_range, out_of_range
from server.core.observability import Metrics
from server.core.roles import CLINICIAN_ROLES
from server.core.sessions import SessionEnds
from server.realtime.acks import Ack, ack_ok, ack_refused
from server.realtime.heads import HeadsBeacon
from server.realtime.transport import Manager, RedisManager

logger = logging.getLogger(__name__)

Authenticate = Callable[[str], Awaitable[Requester]]
CheckSession = Callable[[Requester], Awaitable[None]]
RoomProvider = Callable[[Requester], Awaitable[list[str]]]
DisconnectHook = Callable[[str], Awaitable[None]]
RevocationHook = Callable[[str, str], Awaitable[None]]
# What an event handler answers, sent as the ack's ``data``: a model (as its JSON form),
# JSON data, or nothing.
Answer = BaseModel | dict[str, Any] | list[Any] | None
ModelT = TypeVar("ModelT", bound=BaseModel)
# A handler gets the socket id, the requester and the payload: validated as the event's
# model, or as sent (``object``) for an event registered without one.
EventHandler = Callable[[str, Requester, ModelT], Awaitable[Answer]]
RawEventHandler = Callable[[str, Requester, object], Awaitable[Answer]]

EVENT = "event"
# Sent to a socket just before the server closes it because its session ended.
SESSION_ENDED = "session_ended"
# Sent to a socket the server took out of a room because the patient revoked sharing.
ROOM_REVOKED = "room_revoked"


class EventBudget:
    """``rate`` events per ``per`` seconds per socket, counted in this process.

    The sliding window counter of :class:`server.core.ratelimit.RateLimiter` (this
    window's count plus the previous one's, weighted by how much of it still overlaps
    the last ``per`` seconds), kept as three numbers per socket and dropped when the
    socket goes: a socket's events all arrive at the node that holds it, so no shared
    store is needed, and a hit is a few arithmetic steps rather than a storage call.
    """

    def __init__(self, rate: int, per: float) -> None:
        self.rate = rate
        self.per = per
        # sid → [window number, events in it, events in the window before]
        self._counts: dict[str, list[int]] = {}

    def allow(self, sid: str) -> bool:
        now = time.monotonic()
        window, into = divmod(now, self.per)
        current = int(window)
        counts = self._counts.get(sid)
        if counts is None:
            counts = self._counts[sid] = [current, 0, 0]
        elif counts[0] != current:
            counts[2] = counts[1] if counts[0] == current - 1 else 0
            counts[0], counts[1] = current, 0
        if counts[2] * (1 - into / self.per) + counts[1] + 1 > self.rate:
            return False
        counts[1] += 1
        return True

    def forget(self, sid: str) -> None:
        self._counts.pop(sid, None)


class SyncRequest(Strict):
    positions: dict[str, int]


def institution_stream(institution_id: int) -> str:
    """Administrative events of an institution (departments, members): every member."""
    return f"institution:{institution_id}"


def desk_stream(institution_id: int) -> str:
    """The clinical desk of an institution (consult and referral work): its clinicians."""
    return f"desk:{institution_id}"


def pharmacy_stream(institution_id: int) -> str:
    """Prescriptions delivered to a pharmacy: its pharmacists."""
    return f"pharmacy:{institution_id}"


def session_room(session_id: str) -> str:
    """Every socket of one sign-in session (closed together when the session ends)."""
    return f"session:{session_id}"


def base_rooms(requester: Requester) -> list[str]:
    """The streams a user sits in by role. Administrators get the institution stream only:
    clinical work (consults, referrals, prescriptions) travels on the desk and pharmacy
    streams, which only the roles whose job it is enter."""
    rooms = [f"user:{requester.user_id}", session_room(requester.session_id)]
    institution_id = requester.institution_id
    if institution_id is not None:
        rooms.append(institution_stream(institution_id))
        if requester.role in CLINICIAN_ROLES:
            rooms.append(desk_stream(institution_id))
        elif requester.role == "pharmacist":
            rooms.append(pharmacy_stream(institution_id))
    return rooms


class Gateway:
    def __init__(
        self,
        settings: Settings,
        sio: socketio.AsyncServer,
        authenticate: Authenticate,
        events: Events,
        metrics: Metrics,
        audit: AuditLog | None = None,
        ends: SessionEnds | None = None,
        check_session: CheckSession | None = None,
    ) -> None:
        self.sio = sio
        self.ends = ends
        self.check_session = check_session
        self.check_seconds = float(settings.session_check_seconds)
        # sid → when (monotonic) its session is next read from the database.
        self._check_due: dict[str, float] = {}
        self._closing: set[asyncio.Future[None]] = set()
        # Run with (sid, room) for each socket a revocation took out of a room.
        self.revocation_hooks: list[RevocationHook] = []
        self.audit = audit
        self.authenticate = authenticate
        self.events = events
        self.metrics = metrics
        self.room_providers: list[RoomProvider] = []
        self.disconnect_hooks: list[DisconnectHook] = []
        # Disconnect handlers still running: shutdown waits for them before closing the database.
        self._inflight: set[asyncio.Task[Any]] = set()
        self.budget = EventBudget(settings.socket_events_per_10s, per=10.0)
        # No silent lag: what this node delivered, checked against the streams' heads.
        self.heads = HeadsBeacon(sio, events, settings.socket_heads_seconds)
        manager = sio.manager
        if isinstance(manager, Manager | RedisManager):
            manager.on_delivery = self.heads.note
        if isinstance(manager, RedisManager):
            manager.on_resubscribed = self.heads.resubscribed
        self.event_names: list[str] = []
        self.event_models: dict[str, type[BaseModel] | None] = {}
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on("*", self._on_unknown)
        self.on("sync", SyncRequest, self._on_sync)

    @property
    def registered_events(self) -> tuple[str, ...]:
        """The client → server events registered with :meth:`on` (read-only)."""
        return tuple(self.event_names)

    async def push(self, stream: str, envelope: dict[str, Any]) -> None:
        """Send a committed stream event to its room (every node, through the manager)."""
        await self.sio.emit(EVENT, envelope, room=stream)

    def add_room_provider(self, provider: RoomProvider) -> None:
        self.room_providers.append(provider)

    def add_revocation_hook(self, hook: RevocationHook) -> None:
        """Run ``hook(sid, room)`` for each socket a consent revocation took out of a room."""
        self.revocation_hooks.append(hook)

    def add_disconnect_hook(self, hook: DisconnectHook) -> None:
        """Run ``hook(sid)`` when a socket goes away (presence clean-up and the like)."""
        self.disconnect_hooks.append(hook)

    async def requester(self, sid: str) -> Requester:
        session = await self.sio.get_session(sid)
        requester = session.get("requester")
        if not isinstance(requester, Requester):
            raise Unauthorized("not signed in")
        return requester

    @overload
    def on(self, event: str, model: type[ModelT], handler: EventHandler[ModelT]) -> None: ...

    @overload
    def on(self, event: str, model: None, handler: RawEventHandler) -> None: ...

    def on(
        self,
        event: str,
        model: type[BaseModel] | None,
        handler: EventHandler[Any] | RawEventHandler,
    ) -> None:
        """Register a client → server event with validation, rate limit and a problem ack."""
        self.event_names.append(event)
        self.event_models[event] = model

        async def handle(sid: str, *args: Any) -> Ack:
            # One id per event, so an audited refusal can be matched to the ack that carried it.
            request_id = f"sio-{sid[:8]}-{uuid.uuid4().hex[:12]}"
            token = context.request_id.set(request_id)
            requester: Requester | None = None
            # An event carries one payload; a client may send more arguments (or none).
            payload = args[0] if args else None
            try:
                self._check_rate(sid)
                requester = await self.requester(sid)
                await self._check_open(sid, requester)
                if isinstance(payload, RefusedPayload):  # over a size or nesting limit, undecoded
                    raise payload.error
                if len(args) > 1:
                    raise BadRequest(f"send one payload argument, not {len(args)}")
                data: object = payload
                check_no_nul(payload)
                if model is not None:
                    if not isinstance(payload, dict):
                        raise BadRequest("the payload must be a JSON object")
                    try:
                        data = model.model_validate(payload)
                    except ValidationError as exc:
                        raise validation_failed(exc) from None
                answer = await handler(sid, requester, data)
                result = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
                self.metrics.socket_events.labels(event, "ok").inc()
                return ack_ok(result)
            except YihaoError as exc:
                self.metrics.socket_events.labels(event, exc.code).inc()
                await self._audit_denial(event, requester, exc, payload)
                problem = exc.to_problem()
                problem["request_id"] = request_id
                return ack_refused(problem)
            except Exception as exc:
                unavailable = as_unavailable(exc)
                if unavailable is not None:  # the database is away: 503, retry shortly
                    self.metrics.socket_events.labels(event, unavailable.code).inc()
                    return ack_refused(unavailable.to_problem())
                if is_out_of_range(exc):
                    self.metrics.socket_events.labels(event, "out_of_range").inc()
                    problem = out_of_range(exc).to_problem()
                    problem["request_id"] = request_id
                    return ack_refused(problem)
                logger.exception("socket event failed", extra={"event": event})
                self.metrics.socket_events.labels(event, "internal").inc()
                return ack_refused(YihaoError().to_problem())
            finally:
                context.request_id.reset(token)

        self.sio.on(event, handle)

    def _check_rate(self, sid: str) -> None:
        """The per-connection event budget (``socket_events_per_10s``), known events or not."""
        if not self.budget.allow(sid):
            raise TooManyRequests("slow down: too many events on this connection")

    async def _check_open(self, sid: str, requester: Requester) -> None:
        """Refuse (401) an event whose session ended; cheap unless a database check is due."""
        ended = self.ends is not None and self.ends.is_ended(requester.session_id)
        if not ended and self.check_session is not None:
            now = time.monotonic()
            if now >= self._check_due.get(sid, 0.0):
                try:
                    await self.check_session(requester)
                except Unauthorized:
                    ended = True
                else:
                    self._check_due[sid] = now + self.check_seconds
        if ended:
            # Closed after the ack is sent, so the client learns why from the ack too.
            asyncio.get_running_loop().call_soon(self._close_later, sid)
            raise Unauthorized("the session has ended; sign in again", code="session_revoked")

    def _close_later(self, sid: str) -> None:
        task = asyncio.ensure_future(self._close(sid, "session_revoked"))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def revoke_rooms(self, rooms: list[str], institution_id: int) -> None:
        """An institution's sockets leave these rooms on every node (consent revoked)."""
        if self.ends is not None:
            await self.ends.announce_revocation(rooms, institution_id)
        else:
            await self.leave_revoked(rooms, institution_id)

    async def leave_revoked(self, rooms: list[str], institution_id: int) -> None:
        for room in rooms:
            for sid, _ in list(self.sio.manager.get_participants("/", room)):
                session = await self.sio.get_session(sid)
                requester = session.get("requester")
                if requester is None or requester.institution_id != institution_id:
                    continue
                await self.sio.leave_room(sid, room)
                await self.sio.emit(
                    ROOM_REVOKED, {"room": room, "reason": "consent_revoked"}, to=sid
                )
                for hook in self.revocation_hooks:
                    await hook(sid, room)

    async def close_sessions(self, session_ids: list[str], reason: str) -> None:
        """Close this node's sockets of ended sessions (a SessionEnds listener)."""
        for session_id in session_ids:
            for sid, _ in list(self.sio.manager.get_participants("/", session_room(session_id))):
                await self._close(sid, reason)

    async def _close(self, sid: str, reason: str) -> None:
        if not self.sio.manager.is_connected(sid, "/"):
            return
        try:
            await self.sio.emit(SESSION_ENDED, {"reason": reason}, to=sid)
            await self.sio.disconnect(sid, ignore_queue=True)
        except Exception:
            logger.exception("could not close a socket of an ended session", extra={"sid": sid})

    async def _audit_denial(
        self, event: str, requester: Requester | None, error: YihaoError, payload: Any = None
    ) -> None:
        """Refused events (403/404) are audited like refused HTTP requests, naming the
        patient the payload's ids lead to (so the patient sees the refusal)."""
        if error.status not in (403, 404) or error.audited or self.audit is None:
            return
        try:
            patient_id = error.patient_id
            if patient_id is None and isinstance(payload, dict):
                patient_id = await self.audit.patient_of(payload)
            await self.audit.record_alone(
                "socket.denied",
                actor=requester,
                outcome="denied",
                patient_id=patient_id,
                resource=f"socket {event}"[:200],
                reason=error.code[:500],
                details={"status": error.status},
            )
            error.audited = True
        except Exception:
            logger.exception("could not audit a denied socket event", extra={"event": event})

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            if isinstance(auth, RefusedPayload):
                raise auth.error
            if not isinstance(token, str) or not token:
                raise Unauthorized("send auth: {token: <access token>}")
            requester = await self.authenticate(token)
        except YihaoError as exc:
            # The client's connect_error carries {message: detail, data: problem}.
            raise socketio.exceptions.ConnectionRefusedError(exc.detail, exc.to_problem()) from None
        except Exception as exc:
            unavailable = as_unavailable(exc)
            if unavailable is None:
                raise
            # The database is away: refused with the 503 problem; the client retries.
            raise socketio.exceptions.ConnectionRefusedError(
                unavailable.detail, unavailable.to_problem()
            ) from None
        await self.sio.save_session(sid, {"requester": requester})
        # authenticate() just read the session: the next database check is due later.
        self._check_due[sid] = time.monotonic() + self.check_seconds
        rooms = base_rooms(requester)
        for provider in self.room_providers:
            rooms.extend(await provider(requester))
        for room in rooms:
            await self.sio.enter_room(sid, room)
        self.metrics.sockets.inc()
        logger.info("socket connected", extra={"sid": sid, "user_id": requester.user_id})

    async def _on_unknown(self, event: str, sid: str, *args: Any) -> Ack:
        """Any event no capability registered: 404 ``unknown_event``, within the same rate
        limit as known events (a flood of made-up names is slowed like any other)."""
        try:
            self._check_rate(sid)
        except TooManyRequests as exc:
            self.metrics.socket_events.labels("unknown", exc.code).inc()
            return ack_refused(exc.to_problem())
        self.metrics.socket_events.labels("unknown", "unknown_event").inc()
        problem = NotFound(f"no such event: {event[:64]}", code="unknown_event")
        return ack_refused(problem.to_problem())

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.metrics.sockets.dec()
        self._check_due.pop(sid, None)
        self.budget.forget(sid)
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            for hook in self.disconnect_hooks:
                try:
                    await hook(sid)
                except Exception:
                    logger.exception("disconnect hook failed", extra={"sid": sid})
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def drain(self) -> None:
        """Wait for disconnect work still running (at shutdown, before the database closes)."""
        current = asyncio.current_task()
        pending = [t for t in self._inflight if t is not current and not t.done()]
        if pending:
            await asyncio.wait(pending)

    def rooms_of(self, sid: str) -> set[str]:
        # The session room only addresses the socket for closing; it carries no stream.
        return {r for r in self.sio.rooms(sid) if r != sid and not r.startswith("session:")}

    async def _on_sync(self, sid: str, requester: Requester, data: SyncRequest) -> dict[str, Any]:
        """Replay what the client missed: the streams it sits in, after its positions."""
        rooms = self.rooms_of(sid)
        unknown = sorted(set(data.positions) - rooms)
        if unknown:
            raise Forbidden(f"not a member of: {', '.join(unknown)}", code="not_a_member")
        replayed: list[dict[str, Any]] = []
        more = False
        for stream, after in sorted(data.positions.items()):
            page = await self.events.replay(stream, after)
            replayed.extend(page)
            more = more or len(page) == REPLAY_PAGE
        heads = await self.events.heads(sorted(rooms))
        return {"events": replayed, "more": more, "heads": heads}
