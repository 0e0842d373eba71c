"""The FHIR R4 edge at ``/fhir``: push (transaction/batch), metadata, reads, searches, $everything.

Plain aiohttp handlers, authenticated like the REST API (bearer token). Every
error under ``/fhir`` is answered as an ``OperationOutcome`` (the renderer is
registered in ``app[ERROR_RENDERERS]``), and every body is
``application/fhir+json``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from aiohttp.payload import AsyncIterablePayload

from server.config import Settings
from server.core import jsonlimits
from server.core.api import (
    AUTHENTICATE,
    REQUESTER,
    SERVICES,
    bearer_token,
    check_request_rate,
    read_body,
)
from server.core.auth import Requester
from server.core.db import utcnow
from server.core.errors import (
    BadRequest,
    TooManyRequests,
    UnsupportedMediaType,
    YihaoError,
)
from server.core.middleware import ERROR_RENDERERS
from server.core.ratelimit import RateLimits
from server.records.fhir import (
    CLINICAL_TYPES,
    FHIR_JSON,
    SEARCH_PARAMS,
    iso,
    outcome_of,
    searchset,
)
from server.records.routes import EMERGENCY_HEADER
from server.records.service import EverythingPage

PREFIX = "/fhir"
DEFAULT_COUNT = 50
MAX_COUNT = 500
_TYPE = r"{rtype:[A-Z][A-Za-z]{1,63}}"


def fhir_response(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type=FHIR_JSON,
        charset="utf-8",
    )


_FHIR_TYPE = f"{FHIR_JSON}; charset=utf-8"
_CHUNK_ENTRIES = 100  # entries per chunk of a streamed Bundle


def everything_bundle(
    page: EverythingPage, *, base: str, self_url: str, next_url: str | None
) -> Iterator[bytes]:
    """The searchset Bundle of a ``$everything`` page (:func:`searchset`'s shape), in chunks.

    Each stored resource is spliced in as the JSON text the database holds (it is the
    resource), never decoded and encoded again; the body is written a chunk at a time."""
    links: list[dict[str, str]] = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    head = b'{"resourceType":"Bundle","type":"searchset","link":' + orjson.dumps(links)
    yield head + b',"total":' + str(page.total).encode() + b',"entry":['
    separator = b""
    if page.patient is not None:
        yield _entry(f"{base}/Patient/{page.patient['id']}", orjson.dumps(page.patient))
        separator = b","
    for start in range(0, len(page.entries), _CHUNK_ENTRIES):
        chunk = [
            _entry(f"{base}/{rtype}/{rid}", text.encode())
            for rtype, rid, text in page.entries[start : start + _CHUNK_ENTRIES]
        ]
        yield separator + b",".join(chunk)
        separator = b","
    yield b"]}"


def _entry(full_url: str, resource: bytes) -> bytes:
    return (
        b'{"fullUrl":' + orjson.dumps(full_url) + b',"resource":' + resource
        + b',"search":{"mode":"match"}}'
    )  # fmt: skip


async def _stream(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def render_outcome(error: YihaoError, request: web.Request) -> web.Response:
    response = fhir_response(outcome_of(error), error.status)
    response.headers.update(error.headers)
    return response


async def _requester(request: web.Request) -> Requester:
    requester: Requester = await request.app[AUTHENTICATE](bearer_token(request))
    request[REQUESTER] = requester
    await check_request_rate(request, requester)
    return requester


def _paging(request: web.Request) -> tuple[int, int]:
    try:
        count = int(request.query.get("_count", DEFAULT_COUNT))
        offset = int(request.query.get("_offset", 0))
    except ValueError:
        raise BadRequest("_count and _offset take whole numbers") from None
    if not 1 <= count <= MAX_COUNT or offset < 0:
        raise BadRequest(f"_count is 1–{MAX_COUNT} and _offset is at least 0")
    return count, offset


def _params(request: web.Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query.items() if k not in ("_count", "_offset", "_format")]


def add_fhir_routes(app: web.Application, settings: Settings, limits: RateLimits) -> None:
    base = settings.effective_public_url + PREFIX
    app[ERROR_RENDERERS][PREFIX] = render_outcome

    def page_links(
        request: web.Request, count: int, offset: int, total: int
    ) -> tuple[str, str | None]:
        def url(at: int) -> str:
            query = [*_params(request), ("_count", str(count)), ("_offset", str(at))]
            return f"{base}{request.path.removeprefix(PREFIX)}?{urlencode(query)}"

        return url(offset), url(offset + count) if offset + count < total else None

    async def metadata(request: web.Request) -> web.Response:
        return fhir_response(capability_statement(base))

    ingest_limit = limits.limiter("fhir_ingest", settings.fhir_ingest_per_minute)

    async def push(request: web.Request) -> web.Response:
        requester = await _requester(request)
        # Per institution (the pusher's), so one sender's bulk load cannot starve the others.
        key = f"institution:{requester.institution_id or f'user:{requester.user_id}'}"
        if not await ingest_limit.allow(key):
            retry = await ingest_limit.retry_after(key)
            raise TooManyRequests(
                f"this institution may push at most {settings.fhir_ingest_per_minute} bundles "
                f"a minute; retry in {retry} s",
                code="ingest_rate_limited",
                headers={"Retry-After": str(retry)},
            )
        ctype = request.content_type
        if ctype not in (FHIR_JSON, "application/json"):
            raise UnsupportedMediaType(f"send the bundle as {FHIR_JSON}")
        raw = await read_body(request, settings.fhir_max_body_bytes)
        bundle = jsonlimits.loads(
            raw, max_bytes=settings.fhir_max_body_bytes, max_depth=settings.fhir_json_max_depth
        )
        services = request.app[SERVICES]
        return fhir_response(await services.records.push_bundle(requester, None, bundle))

    async def read(request: web.Request) -> web.Response:
        requester = await _requester(request)
        resource = await request.app[SERVICES].records.read(
            requester,
            request.match_info["rtype"],
            request.match_info["rid"],
            request.headers.get(EMERGENCY_HEADER),
        )
        return fhir_response(resource)

    async def search(request: web.Request) -> web.Response:
        requester = await _requester(request)
        count, offset = _paging(request)
        found, total = await request.app[SERVICES].records.search(
            requester,
            request.match_info["rtype"],
            _params(request),
            count=count,
            offset=offset,
            emergency_reason=request.headers.get(EMERGENCY_HEADER),
        )
        self_url, next_url = page_links(request, count, offset, total)
        return fhir_response(
            searchset(found, base=base, self_url=self_url, total=total, next_url=next_url)
        )

    async def everything(request: web.Request) -> web.Response:
        requester = await _requester(request)
        count, offset = _paging(request)
        rid = request.match_info["rid"]
        page = await request.app[SERVICES].records.everything_page(
            requester,
            int(rid),
            count=count,
            offset=offset,
            emergency_reason=request.headers.get(EMERGENCY_HEADER),
        )
        self_url, next_url = page_links(request, count, offset, page.total)
        chunks = everything_bundle(page, base=base, self_url=self_url, next_url=next_url)
        return web.Response(body=AsyncIterablePayload(_stream(chunks), content_type=_FHIR_TYPE))

    app.router.add_get(f"{PREFIX}/metadata", metadata)
    app.router.add_post(PREFIX, push)
    app.router.add_post(f"{PREFIX}/", push)
    app.router.add_get(PREFIX + r"/Patient/{rid:\d+}/$everything", everything)
    app.router.add_get(f"{PREFIX}/{_TYPE}", search)
    app.router.add_get(PREFIX + "/" + _TYPE + r"/{rid:[A-Za-z0-9.-]{1,64}}", read)


def capability_statement(base: str) -> dict[str, Any]:
    """What this server really does (and nothing it does not)."""
    resources = []
    for rtype in CLINICAL_TYPES:
        entry: dict[str, Any] = {
            "type": rtype,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "versioning": "versioned-update",
            "searchParam": [
                {"name": name, "type": _PARAM_TYPES.get(name, "token")}
                for name in SEARCH_PARAMS[rtype]
            ],
        }
        if rtype == "Patient":
            entry["operation"] = [
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": iso(utcnow()),
        "publisher": "Yihao",
        "kind": "instance",
        "software": {"name": "Yihao"},
        "implementation": {"description": "Yihao shared health record", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Every valid R4 resource type is accepted in transaction and batch bundles "
                    "and can be read by id; the types listed here are also searchable. Searches "
                    "other than Patient need the patient parameter. Paging: _count, _offset."
                ),
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "OAuth",
                                }
                            ],
                            "text": "Bearer access tokens from POST /api/v1/auth/login",
                        }
                    ]
                },
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }


_PARAM_TYPES = {"patient": "reference", "date": "date", "_id": "token"}
