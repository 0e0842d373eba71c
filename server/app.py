"""``create_app(settings)``: the one place where components are built and wired.

Every resource is created and disposed through ``cleanup_ctx``: the database
engine (migrated at start in embedded mode), the Redis client and the Socket.IO
manager's listener, the Socket.IO server itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from server.config import Settings
from server.consults.jobs import register_escalation
from server.consults.models import Consult
from server.consults.routes import routes as consults_routes
from server.consults.service import ConsultsService
from server.consults.socket import ConsultSockets
from server.container import Services
from server.core.access import AccessService
from server.core.api import (
    AUTHENTICATE,
    MAX_BODY,
    MAX_DEPTH,
    REQUEST_LIMIT,
    SERVICES,
    Routes,
    json_response,
)
from server.core.audit import AuditLog, patient_lookup
from server.core.auth import Passwords, Tokens
from server.core.checkpoints import Checkpoints, load_key_files
from server.core.db import Database
from server.core.errors import ServiceUnavailable
from server.core.events import Events
from server.core.jsonlimits import guard_engineio, socket_packet_class
from server.core.leases import Jobs, Leases, node_id
from server.core.listener import redis_listener_status
from server.core.middleware import (
    ERROR_RENDERERS,
    METRICS,
    context_middleware,
    error_middleware,
    metrics_middleware,
    security_headers_middleware,
)
from server.core.nodes import Nodes
from server.core.observability import Metrics
from server.core.openapi import build_openapi
from server.core.ratelimit import RateLimits
from server.core.sessions import SessionEnds
from server.core.signing import Signer
from server.identity.care import CareService
from server.identity.care_routes import routes as care_routes
from server.identity.directory import Directory
from server.identity.patient_routes import routes as patient_routes
from server.identity.patients import PatientIndex
from server.identity.routes import routes as identity_routes
from server.identity.service import AuthService, IdentityService
from server.inbox import socket as inbox_socket
from server.inbox.routes import routes as inbox_routes
from server.inbox.service import InboxService
from server.media.events import add_precall_events, add_recording_events
from server.media.precall import PrecallService
from server.media.recording import RecordingService
from server.media.routes import routes as recording_routes
from server.media.sessions import RecorderSessions
from server.prescriptions import socket as prescription_socket
from server.prescriptions.catalogue import Catalogue
from server.prescriptions.models import Prescription
from server.prescriptions.record import PatientRecord
from server.prescriptions.routes import routes as prescription_routes
from server.prescriptions.service import PrescriptionService
from server.prescriptions.service import background as prescription_background
from server.prescriptions.service import register_jobs as register_prescription_jobs
from server.realtime.gateway import EVENT, Gateway
from server.records.facade import add_fhir_routes
from server.records.routes import routes as records_routes
from server.records.service import RecordsService
from server.referrals.models import Referral
from server.referrals.routes import routes as referrals_routes
from server.referrals.service import ReferralService
from server.scheduling.routes import routes as scheduling_routes
from server.scheduling.service import SchedulingService

logger = logging.getLogger(__name__)

SERVICES_KEY = SERVICES
OPENAPI = web.AppKey("openapi", dict)
# Socket.IO frames the transport reads, as a multiple of socket_max_message_bytes.
SOCKET_FRAME_FACTOR = 4
ROUTE_TABLES: tuple[Routes, ...] = (
    identity_routes,
    patient_routes,
    care_routes,
    records_routes,
    inbox_routes,
    scheduling_routes,
    referrals_routes,
    consults_routes,
    prescription_routes,
    recording_routes,
)
WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"


def create_app(settings: Settings) -> web.Application:
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
    limits = RateLimits(settings)
    app[REQUEST_LIMIT] = limits.limiter("api", settings.api_requests_per_minute)

    db = Database(settings)
    manager: socketio.AsyncManager | None = None
    if settings.redis_url:
        manager = socketio.AsyncRedisManager(
            settings.redis_url,
            channel=settings.redis_channel,
            # Pings on the idle pub/sub connection find a dead Redis link instead of
            # waiting on it forever; the manager then reconnects and resubscribes.
            redis_options={"socket_connect_timeout": 5, "health_check_interval": 15},
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
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app, socketio_path="socket.io")

    async def push(stream: str, envelope: dict[str, Any]) -> None:
        await sio.emit(EVENT, envelope, room=stream)

    events = Events(db, push)
    audit = AuditLog(db)
    passwords = Passwords(settings)
    this_node = settings.node_id or node_id()
    # Ended sessions reach every node (Redis) and close their sockets there; the ids are
    # kept a few database-check periods, past any socket that could still miss them.
    ends = SessionEnds(settings.redis_channel, this_node, 4.0 * settings.session_check_seconds)
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
        check_session=auth.check_session,
    )
    precall = PrecallService(settings, lambda sid, event, data: sio.emit(event, data, to=sid))
    add_precall_events(gateway, precall)
    access = AccessService(db, audit, settings)
    patients = PatientIndex(db, audit, access)
    records = RecordsService(db, audit, access, patients, identity)
    patients.followers.update(access=access, records=records)
    directory = Directory()
    inbox = InboxService(db, events, directory)
    inbox_socket.register(gateway, inbox)
    scheduling = SchedulingService(settings, db, audit, inbox, access, directory)
    care = CareService(settings, db, audit, access, inbox)
    referrals = ReferralService(settings, db, audit, access, records, inbox, scheduling, directory)
    # The checkpoint key is read from its file, never stored in the database.
    checkpoint_signer, checkpoint_public = load_key_files(
        settings.checkpoint_key_file, settings.checkpoint_public_key_file
    )
    checkpoints = Checkpoints(db, audit, checkpoint_signer, checkpoint_public)
    signer = Signer(settings, checkpoints)
    # This node in the cluster: its heartbeat row, and the lease holder of its jobs.
    nodes = Nodes(
        db,
        this_node,
        settings.node_heartbeat_seconds,
        settings.node_dead_after_seconds,
    )
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
        node_id=nodes.id,
        recordings=RecorderSessions(),
    )
    consult_sockets = ConsultSockets(gateway, consults)
    consult_sockets.register()
    nodes.add_reaper(consult_sockets.reap, consults.room.forget_node)
    recording = RecordingService(settings, consults, auth)
    add_recording_events(gateway, recording)
    prescriptions = PrescriptionService(
        settings,
        db,
        audit,
        events,
        signer,
        Catalogue(db),
        PatientRecord(db, records=records, access=access, directory=directory),
        gateway.push,
    )
    prescription_socket.register(gateway, prescriptions)
    services = Services(
        settings=settings,
        db=db,
        audit=audit,
        events=events,
        auth=auth,
        identity=identity,
        gateway=gateway,
        inbox=inbox,
        scheduling=scheduling,
        referrals=referrals,
        precall=precall,
        jobs=Jobs(Leases(db, nodes.id)),
        prescriptions=prescriptions,
        signer=signer,
        checkpoints=checkpoints,
        access=access,
        care=care,
        patients=patients,
        records=records,
        consults=consults,
        recording=recording,
        directory=directory,
    )
    services.nodes = nodes
    app[SERVICES] = services
    # A refusal on a consult, prescription or referral route or event names its patient.
    audit.patient_resolvers.update(
        consult_id=patient_lookup(db, Consult.id, Consult.patient_id),
        prescription_id=patient_lookup(db, Prescription.id, Prescription.patient_id),
        referral_id=patient_lookup(db, Referral.id, Referral.patient_id),
    )
    # Background jobs on leases: each round runs on one node of the cluster.
    services.jobs.every("cluster.reap_nodes", settings.node_heartbeat_seconds, nodes.reap)
    # Idle logoff as a sweep, not only when a request shows up: an idle browser's socket
    # would otherwise stay open and keep receiving pushes.
    services.jobs.every("auth.idle_logoff", settings.session_check_seconds, auth.end_idle_sessions)
    referrals.register_jobs(services.jobs)
    register_escalation(services.jobs, consults, settings.consult_escalation_interval_seconds)
    register_prescription_jobs(services.jobs, prescriptions, settings.prescription_sweep_seconds)
    if settings.checkpoint_interval_seconds and checkpoint_signer is not None:
        services.jobs.every(
            "audit.checkpoint", settings.checkpoint_interval_seconds, checkpoints.run_tick
        )
    app[AUTHENTICATE] = auth.authenticate

    for table in ROUTE_TABLES:
        table.add_to(app)
    app[OPENAPI] = build_openapi([op for table in ROUTE_TABLES for op in table.operations])
    add_operations_routes(app)
    add_fhir_routes(app, settings, limits)
    add_web_client(app, settings.web_dir or WEB_DIST)

    app.cleanup_ctx.append(_database(db, settings))
    app.cleanup_ctx.append(limits.lifespan)
    app.cleanup_ctx.append(_redis(services, settings, sio, ends))
    app.cleanup_ctx.append(_socketio(sio, gateway))
    app.cleanup_ctx.append(precall.lifespan)
    app.cleanup_ctx.append(nodes.lifespan())
    app.cleanup_ctx.append(recording.lifespan)
    app.on_shutdown.append(recording.on_shutdown)
    app.cleanup_ctx.append(_jobs(services.jobs))
    app.cleanup_ctx.append(
        prescription_background(prescriptions, settings.prescription_sweep_seconds)
    )
    return app


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


def _redis(
    services: Services, settings: Settings, sio: socketio.AsyncServer, ends: SessionEnds
) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.redis_url:
            yield
            return
        services.redis = Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=2
        )
        # Start listening to the other nodes now, not at the first local connection:
        # an event published before the listener subscribed would miss this node.
        sio.manager_initialized = True
        sio.manager.initialize()
        async with ends.listening(services.redis):
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
        await _bounded(services.redis.aclose(), "redis client")

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
            checks["redis_listener"] = redis_listener_status(services.gateway.sio.manager)
        if any(value != "ok" for value in checks.values()):
            problem = ServiceUnavailable("not ready", code="not_ready", extra={"checks": checks})
            return json_response(problem.to_problem(request.path), 503, "application/problem+json")
        return json_response({"status": "ready", "checks": checks})

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(request.app[METRICS].registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(request: web.Request) -> web.Response:
        return json_response(request.app[OPENAPI])

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi)


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
    app.router.add_get("/", spa)
    # Client-side routes of the single-page app (not /api, /fhir or /socket.io).
    app.router.add_get(r"/{path:(?!api/|fhir|socket\.io|assets/)[^.]*}", spa)
