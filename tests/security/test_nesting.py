"""Limits before parsing: deep or huge JSON is a 413/422 on every route and event, never a 5xx.

A body of ten thousand ``[`` is ten kilobytes, but decoding it recursed into a
``RecursionError``: a 500 on ``/api`` (even the unauthenticated login), on
``/fhir``, and no ack at all on the socket. Every route of the real app that
takes a body gets a 10,000-deep array and a 10,000-deep object, anonymously
and as every role of the demo network; every GET route gets the same as a
query value (no route decodes JSON from its query, so these must simply not
fail). Every registered Socket.IO event gets them through a real client asking
for an ack, and the connection goes on working.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web

from server.app import OPENAPI, create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.seed import seed_demo
from tests.helpers import Api, SocketClient
from tests.records.conftest import FHIR, ZHOU, ZHOU_RESIDENT_ID, count_entries, load_bundle
from tests.security.world import try_connect

DEEP = 10_000
SHAPES = {
    "array": "[" * DEEP + "]" * DEEP,
    "object": '{"a":' * DEEP + "1" + "}" * DEEP,
}
# One persona of every role in the demo network, so every body route has one that may call it.
SIGNED_IN = (
    "admin",
    "admin_qdsl",
    "dr_li",
    "gp_zhang",
    "nurse_he",
    "pharmacist_chen",
    "patient_sun",
)
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def roomy(settings: Settings) -> Settings:
    """No rate limit gets in the way of a few hundred refused requests."""
    return settings.with_overrides(
        api_requests_per_minute=1_000_000,
        login_rate_per_minute=1_000_000,
        fhir_ingest_per_minute=1_000_000,
        socket_events_per_10s=1_000_000,
    )


def concrete(path: str) -> str:
    """A route's canonical path with every parameter filled (FHIR types are Patient)."""
    for name, value in (("rtype", "Patient"), ("path", "x")):
        path = path.replace("{" + name + "}", value)
    while "{" in path:
        start = path.index("{")
        path = path[:start] + "1" + path[path.index("}", start) + 1 :]
    return path


def routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, canonical path) of every route of the real app, HEAD twins left out."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is not None and route.method != "HEAD":
            found.add((route.method, resource.canonical))
    return sorted(found)


def declared(app: web.Application) -> dict[tuple[str, str], dict[str, Any]]:
    """The OpenAPI operations of /api, by (method, canonical path)."""
    operations = {}
    for path, methods in app[OPENAPI]["paths"].items():
        for method, entry in methods.items():
            operations[(method.upper(), path)] = entry
    return operations


def is_too_deep(status: int, body: Any, path: str) -> bool:
    if status != 422:
        return False
    if path.startswith("/fhir"):
        return body["resourceType"] == "OperationOutcome" and any(
            "nested deeper than" in issue["diagnostics"] for issue in body["issue"]
        )
    return body["code"] == "json_too_deep" and body["errors"][0]["field"] == "body"


async def request(api: Api, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Status and body: JSON where the answer is JSON, else the text (the web client's page)."""
    response = await api.client.request(method, path, **kwargs)
    text = await response.text()
    if "json" in response.content_type and text:
        return response.status, json.loads(text)
    return response.status, text[:200]


async def send(api: Api, method: str, path: str, token: str | None, text: str) -> tuple[int, Any]:
    ctype = FHIR["Content-Type"] if path.startswith("/fhir") else "application/json"
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await request(api, method, path, headers=headers, data=text.encode())


async def test_every_route_answers_deep_json_with_a_4xx(
    aiohttp_client: Any, settings: Settings
) -> None:
    app = create_app(roomy(settings))
    api = Api(await aiohttp_client(app))
    await seed_demo(app[SERVICES])
    tokens = {persona: await api.login(persona) for persona in SIGNED_IN}
    operations = declared(app)
    failures: list[str] = []
    refused_deep: set[tuple[str, str]] = set()
    takes_body: set[tuple[str, str]] = set()
    sent = 0

    def expect(ok: bool, what: str, status: int, body: Any) -> None:
        if not ok:
            failures.append(f"{what}: {status} {json.dumps(body, ensure_ascii=False)[:200]}")

    for method, template in routes(app):
        path = concrete(template)
        key = (method, template)
        entry = operations.get(key)
        fhir_push = method == "POST" and template.rstrip("/") == "/fhir"
        body_route = fhir_push or (entry is not None and "requestBody" in entry)
        public = entry is not None and entry["security"] == []
        if method not in BODY_METHODS:
            for shape, text in SHAPES.items():
                # Deep JSON as a query value, as long as the request line allows.
                status, body = await request(api, method, path, params={"q": text[:2000]})
                sent += 1
                expect(status < 500, f"{method} {path}?q=<{shape}>", status, body)
            continue
        if body_route:
            takes_body.add(key)
        for shape, text in SHAPES.items():
            status, body = await send(api, method, path, None, text)
            sent += 1
            what = f"{method} {path} <{shape}> anonymous"
            if body_route and public:
                expect(is_too_deep(status, body, path), what, status, body)
            elif (entry is not None and not public) or fhir_push:
                expect(status == 401, what, status, body)
            else:
                expect(status < 500, what, status, body)
            if not body_route:
                # A route without a JSON body never reads it; signed in, it would act as the
                # persona, so it is sent anonymously only.
                continue
            for persona, token in tokens.items():
                status, body = await send(api, method, path, token, text)
                sent += 1
                too_deep = is_too_deep(status, body, path)
                if too_deep:
                    refused_deep.add(key)
                expect(too_deep or status == 403, f"{what[:-10]} as {persona}", status, body)
    assert not failures, "\n".join(failures)
    # Every route that decodes a body refused the deep one for someone allowed to call it.
    assert takes_body and refused_deep == takes_body, sorted(takes_body - refused_deep)
    assert ("POST", "/fhir") in refused_deep and ("POST", "/api/v1/auth/login") in refused_deep
    print(
        f"\nnesting fuzz: {len(routes(app))} routes, {len(takes_body)} take a body, {sent} requests"
    )
    await api.close()


async def test_the_unauthenticated_login_refuses_deep_json(api: Api, network: Services) -> None:
    for shape, text in SHAPES.items():
        status, body = await send(api, "POST", "/api/v1/auth/login", None, text)
        assert status == 422, (shape, body)
        assert body["code"] == "json_too_deep"
        assert body["errors"] == [{"field": "body", "reason": "nested deeper than 64 levels"}]
        assert body["type"] == "https://yihao.dev/problems/json_too_deep"
    # At the limit (64 levels) the body is decoded and validated as usual; one more is not.
    for levels, code in ((64, "validation_failed"), (65, "json_too_deep")):
        inner = "[" * (levels - 1) + "]" * (levels - 1)
        text = '{"username": ' + inner + ', "password": "x"}'
        status, body = await send(api, "POST", "/api/v1/auth/login", None, text)
        assert status == 422 and body["code"] == code, (levels, body)
    await api.login("gp_zhang")


async def test_brackets_in_strings_do_not_count_and_escaped_quotes_do_not_end_them(
    api: Api, network: Services
) -> None:
    # Brackets inside a string, between escaped quotes: not nesting. A regex scan retried each
    # quote here and took minutes on such a body; the scan is linear.
    inside = '{"username": "' + '\\"[{' * 100_000 + '", "password": "x"}'
    status, body = await send(api, "POST", "/api/v1/auth/login", None, inside)
    assert status == 422 and body["errors"][0]["field"] == "username", body  # decoded: too long
    # After a string full of escaped quotes and backslashes, real nesting counts again.
    after = '{"username": ["' + '\\\\\\"' * 50_000 + '", ' + "[" * 64 + "]" * 64 + "]}"
    status, body = await send(api, "POST", "/api/v1/auth/login", None, after)
    assert status == 422 and body["code"] == "json_too_deep", body


async def test_a_large_body_is_413_before_its_depth_is_looked_at(
    aiohttp_client: Any, settings: Settings
) -> None:
    small = roomy(settings).with_overrides(max_body_bytes=64 * 1024, fhir_max_body_bytes=96 * 1024)
    app = create_app(small)
    api = Api(await aiohttp_client(app))
    await seed_demo(app[SERVICES])
    status, body = await send(api, "POST", "/api/v1/auth/login", None, "[" * (64 * 1024 + 1))
    assert status == 413, body
    assert body["code"] == "payload_too_large"
    token = await api.login("gp_zhang")
    status, body = await send(api, "POST", "/fhir", token, "[" * (96 * 1024 + 1))
    assert status == 413, body
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "too-costly"
    await api.close()


def nested_extension(levels: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "urn:yihao:test:leaf", "valueString": "深"}
    for _ in range(levels):
        extension = {"url": "urn:yihao:test:level", "extension": [extension]}
    return extension


def bundle_with_extension(levels: int) -> str:
    """The test visit's bundle, its observation carrying extensions ``levels`` deep, as JSON."""
    bundle = load_bundle()
    observation = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    observation["extension"] = [nested_extension(levels)]
    return json.dumps(bundle, ensure_ascii=False)


async def test_a_fhir_transaction_nested_too_deep_is_refused_whole(
    api: Api, network: Services, settings: Settings
) -> None:
    token = await api.token("gp_zhang")
    before = await count_entries(network)
    # Extensions in extensions, 150 levels: about 300 deep, over fhir_json_max_depth (100).
    text = bundle_with_extension(150)
    status, body = await send(api, "POST", "/fhir", token, text)
    assert status == 422, body
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["code"] == "invalid" and issue["expression"] == ["body"]
    assert issue["diagnostics"] == "body: nested deeper than 100 levels"
    assert await count_entries(network) == before, "a refused transaction stores nothing"
    # 45 levels (about 95 deep) is real FHIR: stored and read back as sent.
    text = bundle_with_extension(45)
    status, body = await send(api, "POST", "/fhir", token, text)
    assert status == 200, body
    observation = next(
        e for e in body["entry"] if e["response"]["location"].startswith("Observation/")
    )
    location = observation["response"]["location"].rsplit("/_history", 1)[0]
    # 周国强 was at the clinic in person: its reading is earned, not pushed.
    await api.patient_app(ZHOU_RESIDENT_ID, "周国强", ZHOU)
    await api.present("gp_zhang", ZHOU)
    status, stored = await api.get(f"/fhir/{location}", as_="gp_zhang")
    assert status == 200, stored
    assert stored["extension"] == [nested_extension(45)]


async def test_fhir_validation_too_deep_for_the_models_is_a_422(
    aiohttp_client: Any, settings: Settings
) -> None:
    # The highest depth the setting allows: the R4 models run out of stack before the scan
    # refuses it, and the entry is refused with a 422 OperationOutcome, not a 500.
    app = create_app(roomy(settings).with_overrides(fhir_json_max_depth=300))
    api = Api(await aiohttp_client(app))
    await seed_demo(app[SERVICES])
    token = await api.login("gp_zhang")
    text = bundle_with_extension(145)
    status, body = await send(api, "POST", "/fhir", token, text)
    assert status == 422, body
    assert body["resourceType"] == "OperationOutcome"
    assert [i["diagnostics"] for i in body["issue"]] == ["nested too deeply to validate"]
    assert body["issue"][0]["code"] == "too-costly"
    await api.close()


class RawJson:
    """JSON text the test client sends as it is (its own encoder would recurse on it)."""

    def __init__(self, text: str) -> None:
        self.text = text


class RawJsonCodec:
    """The test client's ``json``: plain JSON, with :class:`RawJson` spliced in verbatim."""

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        if isinstance(obj, RawJson):
            return obj.text
        if isinstance(obj, list) and any(isinstance(item, RawJson) for item in obj):
            return "[" + ",".join(RawJsonCodec.dumps(item, **kwargs) for item in obj) + "]"
        return json.dumps(obj, **kwargs)

    loads: Callable[..., Any] = staticmethod(json.loads)


class RawPacket(socketio.packet.Packet):  # type: ignore[misc]
    json = RawJsonCodec


async def raw_socket(api: Api, username: str) -> SocketClient:
    sock = SocketClient()
    sock.sio = socketio.AsyncClient(reconnection=False, serializer=RawPacket)
    sock.sio.on("event", sock._on_event)
    await sock.connect(api.url, await api.token(username))
    api.sockets.append(sock)
    return sock


async def test_every_socket_event_acks_deep_and_large_payloads(
    aiohttp_client: Any, settings: Settings
) -> None:
    app = create_app(roomy(settings))
    api = Api(await aiohttp_client(app))
    services: Services = app[SERVICES]
    await seed_demo(services)
    sock = await raw_socket(api, "gp_zhang")
    too_large = "x" * settings.socket_max_message_bytes
    events = services.gateway.registered_events
    assert "sync" in events
    for event in events:
        for shape, text in SHAPES.items():
            ack = await sock.call(event, RawJson(text), timeout=10)
            assert ack["ok"] is False, (event, shape, ack)
            problem = ack["problem"]
            assert problem["status"] == 422 and problem["code"] == "json_too_deep", (event, ack)
            assert problem["errors"] == [
                {"field": "payload", "reason": "nested deeper than 64 levels"}
            ]
            assert sock.sio.connected, (event, shape)
        ack = await sock.call(event, too_large, timeout=10)
        assert ack["ok"] is False and ack["problem"]["status"] == 413, (event, ack)
        assert ack["problem"]["code"] == "payload_too_large"
        # The connection goes on working: a normal sync is answered.
        await sock.sync()
    # At the limit (64 levels, the event's own array not counted) the payload is decoded and
    # reaches the handler's validation; one level more is not.
    for levels, code in ((64, "validation_failed"), (65, "json_too_deep")):
        inner = "[" * (levels - 1) + "]" * (levels - 1)
        ack = await sock.call("sync", RawJson('{"positions": ' + inner + "}"))
        assert ack["ok"] is False and ack["problem"]["code"] == code, (levels, ack)
    assert sock.sio.connected
    await api.close()


async def test_a_deep_or_large_connect_auth_is_refused_with_the_problem(
    api: Api, network: Services, settings: Settings
) -> None:
    for auth, status in (
        (RawJson(SHAPES["object"]), 422),
        ({"token": "x" * settings.socket_max_message_bytes}, 413),
    ):
        client = socketio.AsyncClient(reconnection=False, serializer=RawPacket)
        refusals: list[Any] = []
        client.on("connect_error", refusals.append)
        try:
            await client.connect(api.url, auth=auth, transports=["websocket"], wait_timeout=5)
        except socketio.exceptions.ConnectionError:
            # The client's connect_error carries {message: detail, data: problem}.
            assert [r["data"]["status"] for r in refusals] == [status], refusals
            if status == 422:
                assert refusals[0]["data"]["code"] == "json_too_deep"
                assert refusals[0]["message"] == "payload: JSON nested deeper than 64 levels"
        else:
            await client.disconnect()
            raise AssertionError(f"connected with a payload that is {status}")
        finally:
            await client.shutdown()
    # The same server still lets a good client in.
    assert await try_connect(api.url, {"token": await api.token("gp_zhang")}) is None


async def test_a_deep_message_below_socketio_leaves_the_connection_working(
    api: Api, network: Services
) -> None:
    # engine.io decodes any text message not starting with a digit as JSON: "4[[[…" is such
    # a message (not Socket.IO at all); it is dropped, and the same connection is served.
    ws = await api.client.ws_connect("/socket.io/?EIO=4&transport=websocket")
    try:
        opened = await ws.receive_str(timeout=5)
        assert opened.startswith("0{")
        await ws.send_str("40" + json.dumps({"token": await api.token("gp_zhang")}))
        assert (await ws.receive_str(timeout=5)).startswith("40{")
        for text in SHAPES.values():
            await ws.send_str("4" + text)
        await ws.send_str('427["sync",{"positions":{}}]')
        answer = await ws.receive_str(timeout=5)
        assert answer.startswith("437["), answer
        assert json.loads(answer[3:])[0]["ok"] is True
    finally:
        await ws.close()
