"""The Socket.IO gateway: connect authentication, server-managed rooms, replay, acks.

A client connects with ``auth: {"token": <access token>}``. The gateway
verifies the token, keeps the requester in the socket's session and places the
socket in the rooms it is entitled to (``user:<id>``, ``institution:<id>``,
and whatever capabilities add through room providers). A client never names a
room to join.

Capabilities register their client → server events with :meth:`Gateway.on`:
the payload is validated with a pydantic model, the handler gets the
requester, and the ack is ``{"ok": true, "data": …}`` or
``{"ok": false, "problem": {…}}`` with the same problem object the REST API
uses. Acks are sent only after the handler's transaction committed. A payload
over the size or nesting limit is never decoded: it arrives as a
:class:`~server.core.jsonlimits.RefusedPayload` and is answered with its
413/422 problem like any other refusal.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

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
from server.core.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

Authenticate = Callable[[str], Awaitable[Requester]]
RoomProvider = Callable[[Requester], Awaitable[list[str]]]
DisconnectHook = Callable[[str], Awaitable[None]]
EventHandler = Callable[[str, Requester, Any], Awaitable[Any]]

EVENT = "event"


class SyncRequest(Strict):
    positions: dict[str, int]


def base_rooms(requester: Requester) -> list[str]:
    rooms = [f"user:{requester.user_id}"]
    if requester.institution_id is not None:
        rooms.append(f"institution:{requester.institution_id}")
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
    ) -> None:
        self.sio = sio
        self.audit = audit
        self.authenticate = authenticate
        self.events = events
        self.metrics = metrics
        self.room_providers: list[RoomProvider] = []
        self.disconnect_hooks: list[DisconnectHook] = []
        # Disconnect handlers still running: shutdown waits for them before closing the database.
        self._inflight: set[asyncio.Task[Any]] = set()
        self.limiter = RateLimiter(settings.socket_events_per_10s, per=10.0)
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

    def add_disconnect_hook(self, hook: DisconnectHook) -> None:
        """Run ``hook(sid)`` when a socket goes away (presence clean-up and the like)."""
        self.disconnect_hooks.append(hook)

    async def requester(self, sid: str) -> Requester:
        session = await self.sio.get_session(sid)
        requester = session.get("requester")
        if requester is None:
            raise Unauthorized("not signed in")
        return requester  # type: ignore[no-any-return]

    def on(self, event: str, model: type[BaseModel] | None, handler: EventHandler) -> None:
        """Register a client → server event with validation, rate limit and a problem ack."""
        self.event_names.append(event)
        self.event_models[event] = model

        async def handle(sid: str, payload: Any = None) -> dict[str, Any]:
            # One id per event, so an audited refusal can be matched to the ack that carried it.
            request_id = f"sio-{sid[:8]}-{uuid.uuid4().hex[:12]}"
            token = context.request_id.set(request_id)
            requester: Requester | None = None
            try:
                if not self.limiter.allow(sid):
                    raise TooManyRequests("slow down: too many events on this connection")
                requester = await self.requester(sid)
                if isinstance(payload, RefusedPayload):  # over a size or nesting limit, undecoded
                    raise payload.error
                data: Any = payload
                check_no_nul(payload)
                if model is not None:
                    if not isinstance(payload, dict):
                        raise BadRequest("the payload must be a JSON object")
                    try:
                        data = model.model_validate(payload)
                    except ValidationError as exc:
                        raise validation_failed(exc) from None
                result = await handler(sid, requester, data)
                if isinstance(result, BaseModel):
                    result = result.model_dump(mode="json")
                self.metrics.socket_events.labels(event, "ok").inc()
                return {"ok": True, "data": result}
            except YihaoError as exc:
                self.metrics.socket_events.labels(event, exc.code).inc()
                await self._audit_denial(event, requester, exc)
                problem = exc.to_problem()
                problem["request_id"] = request_id
                return {"ok": False, "problem": problem}
            except Exception as exc:
                unavailable = as_unavailable(exc)
                if unavailable is not None:  # the database is away: 503, retry shortly
                    self.metrics.socket_events.labels(event, unavailable.code).inc()
                    return {"ok": False, "problem": unavailable.to_problem()}
                if is_out_of_range(exc):
                    self.metrics.socket_events.labels(event, "out_of_range").inc()
                    problem = out_of_range(exc).to_problem()
                    problem["request_id"] = request_id
                    return {"ok": False, "problem": problem}
                logger.exception("socket event failed", extra={"event": event})
                self.metrics.socket_events.labels(event, "internal").inc()
                return {"ok": False, "problem": YihaoError().to_problem()}
            finally:
                context.request_id.reset(token)

        self.sio.on(event, handle)

    async def _audit_denial(
        self, event: str, requester: Requester | None, error: YihaoError
    ) -> None:
        """Refused events (403/404) are audited like refused HTTP requests."""
        if error.status not in (403, 404) or error.audited or self.audit is None:
            return
        try:
            await self.audit.record_alone(
                "socket.denied",
                actor=requester,
                outcome="denied",
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
        rooms = base_rooms(requester)
        for provider in self.room_providers:
            rooms.extend(await provider(requester))
        for room in rooms:
            await self.sio.enter_room(sid, room)
        self.metrics.sockets.inc()
        logger.info("socket connected", extra={"sid": sid, "user_id": requester.user_id})

    async def _on_unknown(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        self.metrics.socket_events.labels("unknown", "unknown_event").inc()
        problem = NotFound(f"no such event: {event[:64]}", code="unknown_event")
        return {"ok": False, "problem": problem.to_problem()}

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.metrics.sockets.dec()
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
        return {room for room in self.sio.rooms(sid) if room != sid}

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
