"""Declaring REST operations: one declaration validates requests and documents them.

A capability's ``routes.py`` declares each operation with :meth:`Routes.op`,
naming the pydantic models of its body, query and answer. The same models
validate the request at run time and build the OpenAPI document
(:mod:`server.core.openapi`), so the two cannot drift apart.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import TypeVar

from server.core import jsonlimits
from server.core.auth import Requester
from server.core.errors import (
    FieldError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from server.core.idempotency import key_of
from server.core.ratelimit import RateLimiter

if TYPE_CHECKING:
    from server.container import Services

Authenticate = Callable[[str], Awaitable[Requester]]
# Ids are 32-bit integer columns: a path id beyond that names nothing.
MAX_ID = 2**31 - 1
AUTHENTICATE: web.AppKey[Authenticate] = web.AppKey("authenticate")
SERVICES: web.AppKey[Services] = web.AppKey("services")
MAX_BODY = web.AppKey("max_body", int)
# The JSON nesting a body may have (``json_max_depth``), checked before it is decoded.
MAX_DEPTH = web.AppKey("max_json_depth", int)
REQUEST_LIMIT = web.AppKey("request_limit", RateLimiter)
# The authenticated requester of this request (set once the token is verified), for the
# error middleware's denial audit.
REQUESTER: web.RequestKey[Requester] = web.RequestKey("requester", Requester)


class Strict(BaseModel):
    """Base of request models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# The validated body and query models of an operation. A handler that declares them
# (``call: Call[PatientRegister, None]``) gets them typed; a bare ``Call`` still means Any.
BodyT = TypeVar("BodyT", default=Any)
QueryT = TypeVar("QueryT", default=Any)


@dataclass
class Call(Generic[BodyT, QueryT]):
    """What a handler gets: the request, who made it, and its validated parts."""

    request: web.Request
    requester: Requester | None
    body: BodyT
    query: QueryT

    @property
    def services(self) -> Services:
        return self.request.app[SERVICES]

    @property
    def user(self) -> Requester:
        assert self.requester is not None, "operation declared without auth"
        return self.requester

    def path_int(self, name: str) -> int:
        value = int(self.request.match_info[name])
        if value > MAX_ID:  # no row has such an id; the database would refuse to compare it
            raise NotFound(f"no such {name.removesuffix('_id')}: {value}")
        return value

    def path_str(self, name: str) -> str:
        return self.request.match_info[name]


Handler = Callable[[Call[Any, Any]], Awaitable[Any]]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# How a write operation takes the Idempotency-Key header (server/core/idempotency.py):
# "layer" (make_view applies it), "own" (the handler does, e.g. prescribing), "none" (its
# answer is a secret that must not be kept, e.g. a TOTP secret: a retry makes a new one).
Idempotent = Literal["layer", "own", "none"]


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tags: tuple[str, ...]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    roles: frozenset[str] | None = None
    errors: tuple[int, ...] = ()
    raw_body: bool = False
    body_limit: int | None = None
    operation_id: str = ""
    # A handler that answers with a file (not JSON) names its media type here, for OpenAPI.
    media_type: str | None = None
    idempotency: Idempotent = "layer"

    @property
    def takes_idempotency_key(self) -> bool:
        """An authenticated write under /api/v1 that honours ``Idempotency-Key``."""
        return (
            self.auth
            and self.method in WRITE_METHODS
            and self.path.startswith("/api/v1/")
            and self.idempotency != "none"
        )

    @property
    def openapi_path(self) -> str:
        return re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", self.path)

    @property
    def path_params(self) -> list[tuple[str, bool]]:
        """(name, is_integer) for each path parameter."""
        return [
            (m.group(1), (m.group(2) or "") == r":\d+")
            for m in re.finditer(r"\{(\w+)(:[^}]*)?\}", self.path)
        ]


@dataclass
class Routes:
    """A capability's operations, added to the app by ``create_app``."""

    tag: str
    operations: list[Operation] = field(default_factory=list)

    def op(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        auth: bool = True,
        roles: set[str] | frozenset[str] | None = None,
        errors: tuple[int, ...] = (),
        body_limit: int | None = None,
        media_type: str | None = None,
        idempotency: Idempotent = "layer",
    ) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            check_call_types(handler, body, query)
            self.operations.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    handler=handler,
                    summary=summary,
                    tags=(self.tag,),
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    auth=auth,
                    roles=frozenset(roles) if roles else None,
                    errors=errors,
                    body_limit=body_limit,
                    operation_id=handler.__name__,
                    media_type=media_type,
                    idempotency=idempotency,
                )
            )
            return handler

        return decorate

    def add_to(self, app: web.Application) -> None:
        for operation in self.operations:
            app.router.add_route(operation.method, operation.path, make_view(operation))


def check_call_types(
    handler: Callable[..., Any], body: type[BaseModel] | None, query: type[BaseModel] | None
) -> None:
    """A handler declaring ``Call[Body, Query]`` names the models its operation validates.

    mypy cannot see that the declaration's ``body=`` is the handler's ``Body``; this check,
    run when the module is imported, can. A bare ``Call`` (Any) is not checked. A union
    (``Call[Reason | Note, None]``, one handler serving operations of either body) accepts
    each of its members.
    """
    annotation = next(iter(inspect.signature(handler).parameters.values())).annotation
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", repr(annotation))
    match = re.fullmatch(r"Call\[(.+), (.+)\]", annotation.replace("\n", " ").strip())
    if match is None:
        return
    for part, declared in zip(match.groups(), (body, query), strict=True):
        members = [_resolve(name.strip(), handler.__globals__) for name in part.split("|")]
        if not any(member is declared for member in members):
            raise TypeError(
                f"{handler.__name__}: declared with {declared!r}, but its Call names {part}"
            )


def _resolve(dotted: str, namespace: dict[str, Any]) -> Any:
    """``None``, ``Name`` or ``module.Name`` as the handler's module sees it."""
    if dotted == "None":
        return None
    head, *rest = dotted.split(".")
    value = namespace[head]
    for name in rest:
        value = getattr(value, name)
    return value


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    errors: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "body"
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        errors.append({"field": prefix + loc, "reason": reason})
    return errors


def validation_failed(exc: ValidationError, prefix: str = "") -> ValidationFailed:
    errors = field_errors(exc, prefix)
    summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
    return ValidationFailed(summary, errors=errors)


def check_no_nul(value: Any, path: str = "") -> None:
    """Refuse NUL characters anywhere in a payload: no text column can store them."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationFailed.field(path or "body", "contains a NUL character")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_no_nul(key, path or "body")
            check_no_nul(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_no_nul(item, f"{path}.{index}" if path else str(index))


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the request body may be at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body may be at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(raw: bytes, *, max_bytes: int, max_depth: int) -> Any:
    """Client JSON within the size and depth limits (413 / 422 ``json_too_deep``), decoded.

    orjson (C, several times faster) when it reads the body exactly as ``json`` would;
    anything it refuses or might read differently (integers past 64 bits, ``1e999``,
    lone surrogates, malformed input) goes to :func:`jsonlimits.loads`, which decodes it
    exactly as before or answers its 400. Neither recurses in Python: the depth is
    checked first, so ``RecursionError`` cannot happen.
    """
    jsonlimits.check(raw, max_bytes=max_bytes, max_depth=max_depth)
    return jsonlimits.orjson_or(
        raw, lambda body: jsonlimits.loads(body, max_bytes=max_bytes, max_depth=max_depth)
    )


async def read_json(request: web.Request, limit: int) -> Any:
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType("send the body as application/json")
    raw = await read_body(request, limit)
    payload = decode_json(raw, max_bytes=limit, max_depth=request.app[MAX_DEPTH])
    check_no_nul(payload)
    return payload


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send an access token: Authorization: Bearer <token>")
    return token.strip()


def dump_json(data: Any) -> bytes:
    """Compact UTF-8 JSON, keys in their order (:func:`jsonlimits.dumps_bytes`)."""
    return jsonlimits.dumps_bytes(data)


def json_response(
    data: Any,
    status: int = 200,
    content_type: str = "application/json",
    headers: Any = None,
) -> web.Response:
    body = data.model_dump_json().encode() if isinstance(data, BaseModel) else dump_json(data)
    return web.Response(body=body, status=status, content_type=content_type, headers=headers)


async def check_request_rate(request: web.Request, requester: Requester) -> None:
    """The per-account request limit (``api_requests_per_minute``): 429 with Retry-After."""
    limiter = request.app.get(REQUEST_LIMIT)
    if limiter is None:
        return
    key = f"user:{requester.user_id}"
    if not await limiter.allow(key):
        retry = await limiter.retry_after(key)
        raise TooManyRequests(
            f"too many requests from this account; retry in {retry} s",
            code="rate_limited",
            headers={"Retry-After": str(retry)},
        )


def make_view(operation: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    idempotent = operation.takes_idempotency_key and operation.idempotency == "layer"

    async def view(request: web.Request) -> web.StreamResponse:
        requester = None
        key = None
        if operation.auth:
            requester = await request.app[AUTHENTICATE](bearer_token(request))
            request[REQUESTER] = requester
            await check_request_rate(request, requester)
            if operation.roles is not None and requester.role not in operation.roles:
                raise Forbidden(f"the role '{requester.role}' may not do this")
            if idempotent:
                key = key_of(request)
        query = None
        if operation.query is not None:
            params = dict(request.query)
            check_no_nul(params)
            try:
                query = operation.query.model_validate(params)
            except ValidationError as exc:
                raise validation_failed(exc) from None
        body = None
        if operation.body is not None:
            limit = operation.body_limit or request.app[MAX_BODY]
            payload = await read_json(request, limit)
            try:
                body = operation.body.model_validate(payload)
            except ValidationError as exc:
                raise validation_failed(exc) from None
        call: Call[Any, Any] = Call(request, requester, body, query)
        if key is None or requester is None:
            return await answer(operation, call)
        keys = request.app[SERVICES].idempotency
        claim = keys.claim(requester.user_id, key, operation.method, request.path, body, query)
        return await keys.run(claim, request.path, lambda: answer(operation, call))

    view.__name__ = operation.operation_id
    return view


async def answer(operation: Operation, call: Call[Any, Any]) -> web.StreamResponse:
    """Run the operation's handler and shape its result as the response."""
    result = await operation.handler(call)
    if isinstance(result, web.StreamResponse):
        return result
    if result is None:
        return web.Response(status=204 if operation.status == 200 else operation.status)
    # A model is serialised by pydantic-core straight to JSON (the same text as
    # model_dump(mode="json") then encoding it, without the Python dicts between).
    return json_response(result, operation.status)
