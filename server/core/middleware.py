"""HTTP middlewares: request context, security headers, metrics, errors.

The error middleware is the one place a failure becomes a response:
:class:`YihaoError` as RFC 9457 problem JSON (or, under a prefix that
registered its own renderer, e.g. ``/fhir``, an OperationOutcome); aiohttp's
own 404/405/413 the same way; a lost database connection a 503; anything
unexpected a 500 that shows only an error id, which the log carries too.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.exc import DataError, DBAPIError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from server.core import context
from server.core.api import REQUESTER, SERVICES, json_response
from server.core.errors import (
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
    YihaoError,
)
from server.core.observability import Metrics

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Renderer = Callable[[YihaoError, web.Request], web.Response]

ERROR_RENDERERS = web.AppKey("error_renderers", dict[str, Renderer])
METRICS = web.AppKey("metrics", Metrics)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

WEB_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self' ws: wss:; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def problem_response(error: YihaoError, request: web.Request) -> web.Response:
    problem = error.to_problem(instance=request.path)
    request_id = context.request_id.get()
    if request_id:
        problem["request_id"] = request_id
    return json_response(problem, error.status, "application/problem+json", error.headers)


def render_error(error: YihaoError, request: web.Request) -> web.Response:
    for prefix, renderer in request.app[ERROR_RENDERERS].items():
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return renderer(error, request)
    return problem_response(error, request)


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    # 32 random hex digits, as uuid4().hex was, without building a UUID per request.
    request_id = incoming if incoming and _REQUEST_ID.match(incoming) else os.urandom(16).hex()
    rid_token = context.request_id.set(request_id)
    ip_token = context.client_ip.set(request.remote)
    try:
        response = await handler(request)
        response.headers["X-Request-Id"] = request_id
        return response
    finally:
        context.request_id.reset(rid_token)
        context.client_ip.reset(ip_token)


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault(
        "Permissions-Policy", "camera=(self), microphone=(self), display-capture=(self)"
    )
    if request.path.startswith(("/api/", "/fhir")):
        headers.setdefault("Cache-Control", "no-store")
    if response.content_type == "text/html":
        headers.setdefault("Content-Security-Policy", WEB_CSP)
    return response


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        count, latency = metrics.http_children(request.method, route, status)
        count.inc()
        latency.observe(time.perf_counter() - started)


def _from_http_exception(exc: web.HTTPException) -> YihaoError | None:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such resource")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return MethodNotAllowed(
            f"{exc.method} is not allowed here; allowed: {allowed}", headers={"Allow": allowed}
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("the request body is too large")
    return None


DENIAL_STATUSES = frozenset({403, 404})


async def audit_denial(request: web.Request, error: YihaoError) -> None:
    """Write a refused request (403/404 on a known route) to the audit log, once.

    Object-level authorization failures are what an attacker guessing ids
    produces, so every one is on the record: who, which route, which object
    path, why. A 404 for a path no route matches is not (scanners would fill
    the log); code that audited its refusal itself marks the error ``audited``.
    """
    if error.status not in DENIAL_STATUSES or error.audited:
        return
    resource = request.match_info.route.resource
    if resource is None:
        return
    services = request.app.get(SERVICES)
    if services is None:
        return
    requester = request.get(REQUESTER)
    try:
        patient_id = error.patient_id or await services.audit.patient_of(request.match_info)
        await services.audit.record_alone(
            "http.denied",
            actor=requester,
            outcome="denied",
            patient_id=patient_id,
            resource=f"{request.method} {resource.canonical}"[:200],
            reason=error.code[:500],
            details={"path": request.path[:500], "status": error.status},
        )
        error.audited = True
    except Exception:  # the refusal still goes out; the failure is logged for operators
        logger.exception("could not audit a denied request")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except YihaoError as exc:
        if exc.status >= 500:
            logger.warning("request failed", extra={"code": exc.code, "status": exc.status})
        await audit_denial(request, exc)
        return render_error(exc, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        mapped = _from_http_exception(exc)
        if mapped is None:
            raise
        return render_error(mapped, request)
    except (OperationalError, PoolTimeout, ConnectionError, OSError) as exc:
        return render_error(_database_unavailable(exc), request)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            return render_error(_database_unavailable(exc), request)
        if is_out_of_range(exc):
            return render_error(out_of_range(exc), request)
        return render_error(_internal(exc), request)
    except Exception as exc:
        if is_out_of_range(exc):
            # A number (or date) the database cannot hold: the client's value, not our failure.
            return render_error(out_of_range(exc), request)
        return render_error(_internal(exc), request)


def as_unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 problem for a database that is away (down, unreachable, pool exhausted), if so.

    The same mapping as for HTTP requests, for the Socket.IO gateway's acks.
    """
    if isinstance(exc, (OperationalError, PoolTimeout, ConnectionError, OSError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return _database_unavailable(exc)
    return None


# PostgreSQL: numeric_value_out_of_range, datetime_field_overflow.
_OUT_OF_RANGE_SQLSTATES = frozenset({"22003", "22008"})


def is_out_of_range(exc: BaseException) -> bool:
    """A client's number or date too large for a column (SQLite, PostgreSQL, or our binding).

    The cause sits somewhere in the chain: SQLAlchemy wraps the driver's error,
    which wraps the ``OverflowError`` of the value's encoding.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen or len(seen) > 10:
            continue
        seen.add(id(current))
        if isinstance(current, OverflowError | DataError):
            return True
        if getattr(current, "sqlstate", None) in _OUT_OF_RANGE_SQLSTATES:
            return True
        orig = current.orig if isinstance(current, StatementError) else None
        pending.extend([orig, current.__cause__, current.__context__])
    return False


def out_of_range(exc: BaseException) -> ValidationFailed:
    logger.info("value out of range", extra={"error": type(exc).__name__})
    return ValidationFailed(
        "a number or date in the request is out of the range that can be stored",
        code="out_of_range",
    )


def _database_unavailable(exc: BaseException) -> ServiceUnavailable:
    logger.error("database unavailable", extra={"error": type(exc).__name__})
    return ServiceUnavailable(
        "the database is not reachable; retry shortly",
        code="database_unavailable",
        headers={"Retry-After": "2"},
    )


def _internal(exc: BaseException) -> YihaoError:
    error_id = uuid.uuid4().hex[:12]
    logger.exception("unhandled error", extra={"error_id": error_id}, exc_info=exc)
    return YihaoError(
        f"an unexpected error occurred; quote error id {error_id} to the operators",
        extra={"error_id": error_id},
    )
