"""``create_app(settings)``: the one place where components are built and wired.

:func:`build_services` constructs every component once, in dependency order, and
hands each its collaborators; ``create_app`` then loops over the capabilities
(:mod:`server.capabilities`), adding what each declares (routes, socket events,
jobs, lifespans). Every resource is created and disposed through ``cleanup_ctx``:
the database engine (migrated at start in embedded mode), the Redis client and
the Socket.IO manager's listener, the Socket.IO server itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessService
from server.capabilities import CAPABILITIES
from server.config import Settings
from server.consults.service import ConsultsService
from server.consults.socket import ConsultSockets
from server.container import Services
from server.core.api import (
    AUTHENTICATE,
    MAX_BODY,
    MAX_DEPTH,
    REQUEST_LIMIT,
    SERVICES,
    json_response,
)
from server.core.audit import AuditLog, PatientOf, patient_lookup
from server.core.auth import Passwords, Tokens
from server.core.capability import Capability
from server.core.checkpoints import Checkpoints, load_key_files
from server.core.db import Database, Tx
from server.core.errors import NotFound, ServiceUnavailable
from server.core.events import Events
from server.core.idempotency import Idempotency
from server.core.jsonlimits import guard_engineio, socket_packet_class
from server.core.leases import Jobs, Leases, node_id
from server.core.middleware import (
    ERROR_RENDERERS,
    METRICS,
    WEB_CSP,
    context_middleware,
    error_middleware,
    metrics_middleware,
    security_headers_middleware,
)
from server.core.nodes import Nodes
from server.core.observability import Metrics, library_logger
from server.core.openapi import build_openapi
from server.core.ratelimit import RateLimits
from server.core.sessions import SessionEnds
from server.core.signing import Signer
from server.identity.auth_service import AuthService
from server.identity.care import CareService
from server.identity.directory import Directory
from server.identity.patients import PatientIndex
from server.identity.service import IdentityService
from server.inbox.dispatch import Outbox, Preferences
from server.inbox.outbound import build_channels
from server.inbox.service import InboxService
from server.media.precall import PrecallService
from server.media.recording import RecordingService
from server.media.sessions import RecorderSessions
from server.payments.providers import Provider, SandboxProvider
from server.payments.service import PaymentsService, Subject, SubjectResolver
from server.payments.subjects import appointment_resolver
from server.prescriptions.catalogue import Catalogue
from server.prescriptions.record import PatientRecord
from server.prescriptions.service import PrescriptionService
from server.realtime.gateway import EVENT, Gateway
from server.realtime.transport import Manager, RedisManager, close_all, use_compression
from server.records.merges import RecordMerges
from server.records.service import RecordsService
from server.referrals.service import ReferralService
from server.scheduling.service import SchedulingService
from server.triage.knowledge import knowledge_for
from server.triage.merges import TriageMerges
from server.triage.service import TriageService
from server.visits.service import VisitsService

logger = logging.getLogger(__name__)

SERVICES_KEY = SERVICES
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
# Socket.IO frames the transport reads, as a multiple of socket_max_message_bytes.
SOCKET_FRAME_FACTOR = 4
WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"


def create_app(
    settings: Settings, capabilities: Iterable[Capability] = CAPABILITIES
) -> web.Application:
    capabilities = tuple(capabilities)
    app = web.Application(
        middlewares=[
            context_middleware,
            security_headers_middleware,
            metrics_middleware,
            error_middleware,
        ],
        # The largest body any route takes; each route enforces its own smaller limit.
        client_max_size=max(settings.max_body_bytes, settings.fhir_max_body_bytes),
    )
    metrics = Metrics()
    app[METRICS] = metrics
    app[ERROR_RENDERERS] = {}
    app[MAX_BODY] = settings.max_body_bytes
    app[MAX_DEPTH] = settings.json_max_depth
    sio = _socketio_server(settings)
    sio.attach(app, socketio_path="socket.io")
    # Every socket closed at once when shutdown starts, not waited on until the timeout.
    app.on_shutdown.append(_close_sockets(sio))

    def resolvers(db: Database) -> dict[str, PatientOf]:
        # A refusal on a consult, prescription or referral route or event names its patient.
        return {
            key: patient_lookup(db, id_column, patient_column)
            for capability in capabilities
            for key, (id_column, patient_column) in (capability.patient_resolvers or {}).items()
        }

    services = build_services(settings, sio, metrics, resolvers)
    app[SERVICES] = services
    app[AUTHENTICATE] = services.auth.authenticate
    # Hit on every authenticated request: counted here, synced to Redis in the background.
    app[REQUEST_LIMIT] = services.limits.limiter(
        "api", settings.api_requests_per_minute, synced=True
    )

    tables = [table for capability in capabilities for table in capability.routes]
    for table in tables:
        table.add_to(app)
    app[OPENAPI] = build_openapi([op for table in tables for op in table.operations])
    add_operations_routes(app)
    for capability in capabilities:
        if capability.mount is not None:
            capability.mount(app, services)
        if capability.socket is not None:
            capability.socket(services.gateway, services)
        for job in capability.jobs(services):
            services.jobs.add(job)
    add_web_client(app, settings.web_dir or WEB_DIST)

    app.cleanup_ctx.append(_database(services.db, settings))
    # Closed before the database: noted session activity is written on the way out.
    app.cleanup_ctx.append(services.auth.lifespan)
    app.cleanup_ctx.append(services.limits.lifespan)
    app.cleanup_ctx.append(_redis(services, settings, sio))
    app.cleanup_ctx.append(services.gateway.heads.lifespan)
    app.cleanup_ctx.append(_socketio(sio, services.gateway))
    for capability in capabilities:
        app.cleanup_ctx.extend(capability.lifespan(services))
        if capability.on_shutdown is not None:
            app.on_shutdown.extend(capability.on_shutdown(services))
    app.cleanup_ctx.append(_jobs(services.jobs))
    return app


def _socketio_server(settings: Settings) -> socketio.AsyncServer:
    # Rooms indexed by socket: a disconnect no longer scans every room (transport.RoomIndex).
    manager: socketio.AsyncManager = Manager()
    if settings.redis_url:
        manager = RedisManager(
            settings.redis_url,
            channel=settings.redis_channel,
            # The listener pings its own silent link (transport.RedisManager); a connect
            # that hangs (a partitioned Redis) gives up after 5 s and is tried again.
            redis_options={"socket_connect_timeout": 5},
        )
    guard_engineio()
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=list(settings.cors_origins) or None,
        # Payloads are checked (size, nesting) before they are decoded, and one over a limit is
        # answered with a problem ack; the transport takes frames up to four times the limit,
        # so that answer can be given, and closes the connection only beyond that.
        serializer=socket_packet_class(
            max_bytes=settings.socket_max_message_bytes, max_depth=settings.json_max_depth
        ),
        max_http_buffer_size=SOCKET_FRAME_FACTOR * settings.socket_max_message_bytes,
        # Their errors (a handler's traceback) go through our JSON logging.
        logger=library_logger("socketio"),
        engineio_logger=library_logger("engineio"),
    )
    use_compression(sio, settings.socket_compression)
    return sio


def _close_sockets(sio: socketio.AsyncServer) -> Callable[[web.Application], Awaitable[None]]:
    async def close(app: web.Application) -> None:
        await close_all(sio)

    return close


def visit_subjects(visits: VisitsService) -> SubjectResolver:
    """A follow-up visit as an order's subject: payable once accepted, served once completed."""

    async def resolve(session: AsyncSession, visit_id: int) -> Subject | None:
        try:
            facts = await visits.visit_for_payment(session, visit_id)
        except NotFound:
            return None
        return Subject(
            patient_id=facts.patient_id,
            institution_id=facts.institution_id,
            department_id=None,
            served=facts.status == "completed",
            payable=facts.status in {"accepted", "waiting", "in_progress", "completed"},
            description="互联网复诊",
        )

    return resolve


def build_services(
    settings: Settings,
    sio: socketio.AsyncServer,
    metrics: Metrics,
    patient_resolvers: Callable[[Database], Mapping[str, PatientOf]],
) -> Services:
    """Every component, in dependency order; the container is complete when returned.

    Two pairs of components call each other (a consent revocation, or a consult's new
    participant, reaches the consult room's sockets, which need the consults that need
    access; a cancelled slot reaches
    referrals, which book through scheduling), and the session broadcasts reach the
    gateway that needs the authentication that announces them. Each such call is a
    closure over a component built further down, resolved when first called (after
    the build), never an attribute set afterwards.
    """
    db = Database(settings)

    async def push(stream: str, envelope: dict[str, Any]) -> None:
        await sio.emit(EVENT, envelope, room=stream)

    events = Events(db, push)
    audit = AuditLog(db, patient_resolvers(db))
    passwords = Passwords(settings)
    directory = Directory()
    limits = RateLimits(settings)
    this_node = settings.node_id or node_id()

    # Ended sessions reach every node (Redis) and close their sockets there; the ids are
    # kept a few database-check periods, past any socket that could still miss them.
    async def close_sessions(session_ids: list[str], reason: str) -> None:
        await gateway.close_sessions(session_ids, reason)

    async def leave_revoked(rooms: list[str], institution_id: int) -> None:
        await gateway.leave_revoked(rooms, institution_id)

    ends = SessionEnds(
        settings.redis_channel,
        this_node,
        4.0 * settings.session_check_seconds,
        listeners=[close_sessions],
        revocation_listeners=[leave_revoked],
        # REST's session check answers from memory this long after a read; endings drop it.
        cache_seconds=settings.session_cache_seconds,
        # Endings by a process without Redis (the CLI) reach this one's cache through it.
        marker=settings.data_dir / "sessions-ended",
    )
    auth = AuthService(settings, db, audit, passwords, Tokens(settings), ends, limits)
    identity = IdentityService(db, audit, events, passwords)
    gateway = Gateway(
        settings,
        sio,
        auth.authenticate,
        events,
        metrics,
        audit,
        ends=ends,
        # A socket's periodic check reads the database (the safety net for a lost broadcast).
        check_session=auth.recheck_session,
    )
    precall = PrecallService(settings, lambda sid, event, data: sio.emit(event, data, to=sid))

    async def consent_revoked(patient_id: int, institution_id: int) -> None:
        await consult_sockets.consent_revoked(patient_id, institution_id)

    # A new participant's sockets on this node enter the consult's room.
    async def member_added(consult_id: int, user_id: int) -> None:
        await consult_sockets.member_added(consult_id, user_id)

    access = AccessService(db, audit, settings, directory, revocation_listeners=[consent_revoked])
    patients = PatientIndex(
        db,
        audit,
        access,
        followers={"access": access, "records": RecordMerges(), "triage": TriageMerges()},
    )
    channels = build_channels(settings)
    inbox = InboxService(
        db,
        events,
        directory,
        outbox=Outbox(settings, db, directory, channels),
        preferences=Preferences(db, channels),
    )
    records = RecordsService(db, audit, access, patients, identity, directory, inbox)

    def slots_cancelled(tx: Tx, appointments: list[Any]) -> Awaitable[None]:
        return referrals.on_slots_cancelled(tx, appointments)

    # A cancelled appointment (or slot) refunds its paid order in the same transaction.
    def appointments_cancelled(tx: Tx, appointments: list[Any]) -> Awaitable[None]:
        return payments.on_appointments_cancelled(tx, appointments)

    scheduling = SchedulingService(
        settings,
        db,
        audit,
        inbox,
        access,
        directory,
        slot_cancelled_listeners=[slots_cancelled, appointments_cancelled],
        appointment_cancelled_listeners=[appointments_cancelled],
    )
    sandbox = SandboxProvider(settings, db) if settings.payments_sandbox else None
    providers: dict[str, Provider] = {sandbox.name: sandbox} if sandbox else {}
    payments = PaymentsService(
        settings,
        db,
        audit,
        inbox,
        directory,
        providers,
        # kind → resolver; visits, consults and prescriptions add theirs here.
        {"appointment": appointment_resolver(scheduling)},
        limits,
        sandbox=sandbox,
    )
    care = CareService(settings, db, audit, access, inbox)
    referrals = ReferralService(settings, db, audit, access, records, inbox, scheduling, directory)
    # The checkpoint key is read from its file, never stored in the database.
    checkpoint_signer, checkpoint_public = load_key_files(
        settings.checkpoint_key_file, settings.checkpoint_public_key_file
    )
    checkpoints = Checkpoints(db, audit, checkpoint_signer, checkpoint_public)
    signer = Signer(settings, checkpoints)
    consults = ConsultsService(
        settings,
        db,
        audit,
        events,
        access,
        records,
        identity,
        auth,
        signer,
        directory,
        node_id=this_node,
        recordings=RecorderSessions(),
        member_listeners=[member_added],
        inbox=inbox,
    )
    consult_sockets = ConsultSockets(gateway, consults)
    # This node in the cluster: its heartbeat row; what dead nodes left is reaped.
    nodes = Nodes(
        db,
        this_node,
        settings.node_heartbeat_seconds,
        settings.node_dead_after_seconds,
        reapers=[consult_sockets.reap],
        forgetters=[consults.room.forget_node],
    )
    recording = RecordingService(settings, consults, auth, directory)
    prescriptions = PrescriptionService(
        settings,
        db,
        audit,
        events,
        signer,
        Catalogue(db),
        PatientRecord(db, records=records, access=access, directory=directory),
        gateway.push,
        inbox,
    )
    triage = TriageService(db, audit, access, directory, knowledge_for(settings))

    # A visit declined or cancelled before its service refunds its paid order, as an
    # appointment does.
    def visits_cancelled(tx: Tx, visit_ids: list[int], reason: str) -> Awaitable[None]:
        return payments.subjects_cancelled(tx, "visit", visit_ids, reason)

    visits = VisitsService(
        settings,
        db,
        audit,
        events,
        access,
        records,
        directory,
        auth,
        consults,
        prescriptions,
        inbox,
        cancelled_listeners=[visits_cancelled],
    )
    payments.add_subjects("visit", visit_subjects(visits))
    redis = None
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
    return Services(
        settings=settings,
        db=db,
        audit=audit,
        events=events,
        idempotency=Idempotency(
            db,
            settings.secret_key,
            settings.idempotency_keep_hours,
            settings.idempotency_replay_seconds,
        ),
        auth=auth,
        identity=identity,
        directory=directory,
        limits=limits,
        gateway=gateway,
        inbox=inbox,
        scheduling=scheduling,
        referrals=referrals,
        precall=precall,
        jobs=Jobs(Leases(db, this_node)),
        consults=consults,
        consult_sockets=consult_sockets,
        prescriptions=prescriptions,
        visits=visits,
        signer=signer,
        checkpoints=checkpoints,
        access=access,
        care=care,
        patients=patients,
        records=records,
        recording=recording,
        nodes=nodes,
        ends=ends,
        triage=triage,
        payments=payments,
        checkpoints_enabled=checkpoint_signer is not None,
        redis=redis,
    )


async def _bounded(awaitable: Awaitable[Any], what: str, seconds: float = 10.0) -> None:
    """Release a resource, but never let one that stopped answering hold up shutdown."""
    try:
        await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        logger.warning("shutdown: %s did not close within %.0f s", what, seconds)


def _database(db: Database, settings: Settings) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if settings.effective_auto_migrate:
            await db.migrate()
        yield
        await _bounded(db.dispose(), "database engine")

    return ctx


def _redis(services: Services, settings: Settings, sio: socketio.AsyncServer) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        redis = services.redis
        if redis is None:
            yield
            return
        # Start listening to the other nodes now, not at the first local connection:
        # an event published before the listener subscribed would miss this node.
        sio.manager_initialized = True
        sio.manager.initialize()
        async with services.ends.listening(redis):
            yield
        manager = sio.manager
        listener = getattr(manager, "thread", None)
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            await _bounded(asyncio.gather(listener, return_exceptions=True), "redis listener")
        # The manager opens its own clients and never closes them; we do.
        for resource in (getattr(manager, "pubsub", None), getattr(manager, "redis", None)):
            if resource is not None:
                await _bounded(resource.aclose(), "socket.io redis client")
        await _bounded(redis.aclose(), "redis client")

    return ctx


def _jobs(jobs: Jobs) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        jobs.start()
        yield
        await jobs.stop()

    return ctx


def _socketio(sio: socketio.AsyncServer, gateway: Gateway) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        # Sockets were closed with the server; their disconnect work may still be writing.
        await _bounded(gateway.drain(), "socket disconnect handlers")
        await _bounded(sio.shutdown(), "socket.io server")

    return ctx


def add_operations_routes(app: web.Application) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        services: Services = request.app[SERVICES]
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(services.db.ping(), timeout=3)
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; the kind is what operators need
            checks["database"] = f"unavailable: {type(exc).__name__}"
        if services.redis is not None:
            try:
                await asyncio.wait_for(services.redis.ping(), timeout=3)
                checks["redis"] = "ok"
            except Exception as exc:
                checks["redis"] = f"unavailable: {type(exc).__name__}"
            manager = services.gateway.sio.manager
            listener = (
                manager.listener_status()
                if isinstance(manager, RedisManager)
                else "unavailable: no listener"
            )
            # A listener cannot be subscribed to a Redis that does not answer.
            if checks["redis"] != "ok" and listener == "ok":
                listener = "unavailable: redis unavailable"
            checks["redis_listener"] = listener
        if any(value != "ok" for value in checks.values()):
            problem = ServiceUnavailable("not ready", code="not_ready", extra={"checks": checks})
            return json_response(problem.to_problem(request.path), 503, "application/problem+json")
        # The node that answered: with `yihao serve --workers N` each worker is one.
        return json_response({"status": "ready", "node": services.nodes.id, "checks": checks})

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(request.app[METRICS].registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(request: web.Request) -> web.Response:
        return json_response(request.app[OPENAPI])

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi)


def _public_file(
    path: Path, content_type: str, extra: dict[str, str]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def serve(request: web.Request) -> web.StreamResponse:
        headers = {"Cache-Control": "no-cache", "Content-Type": content_type, **extra}
        return web.FileResponse(path, headers=headers)

    return serve


def add_web_client(app: web.Application, web_dir: Path) -> None:
    """Serve the built browser client at ``/``; deep links get index.html."""
    index = web_dir / "index.html"

    async def spa(request: web.Request) -> web.StreamResponse:
        if not index.exists():
            return web.Response(
                text="<!doctype html><title>Yihao</title><p>The web client is not built: "
                "run <code>make web</code>.</p>",
                content_type="text/html",
            )
        # The type is set here, not left to FileResponse.prepare(): the security-headers
        # middleware adds the Content-Security-Policy only to responses typed text/html.
        return web.FileResponse(
            index, headers={"Cache-Control": "no-cache", "Content-Type": "text/html; charset=utf-8"}
        )

    assets = web_dir / "assets"
    if assets.is_dir():
        app.router.add_static("/assets", assets, append_version=False)
    # The installable patient app (web/public/): its manifest, icons and service worker, at
    # the root so the worker's scope is the whole app. The worker is fetched fresh (no-cache)
    # and runs under the same Content-Security-Policy as the page.
    for name, kind, extra in (
        ("sw.js", "text/javascript; charset=utf-8", {"Content-Security-Policy": WEB_CSP}),
        ("manifest.webmanifest", "application/manifest+json; charset=utf-8", {}),
    ):
        if (web_dir / name).is_file():
            app.router.add_get(f"/{name}", _public_file(web_dir / name, kind, extra))
    icons = web_dir / "icons"
    if icons.is_dir():
        app.router.add_static("/icons", icons, append_version=False)
    app.router.add_get("/", spa)
    # Client-side routes of the single-page app (not /api, /fhir or /socket.io).
    app.router.add_get(r"/{path:(?!api/|fhir|socket\.io|assets/)[^.]*}", spa)
