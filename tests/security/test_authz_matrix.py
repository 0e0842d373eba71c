"""The authorization matrix (OWASP API1, broken object-level authorization), on both tiers.

Every route of the real app and every registered Socket.IO event must have an
entry in ``tests/security/matrix.py`` (how to call it for an object of side A
and of side B, and which personas are allowed); each entry is run for every
persona against both objects, and denials must be 401/403/404 problems whose
403/404 are in the audit log. See the matrix module's docstring for how to add
an entry.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.core.audit import AuditEvent
from server.seed import DEMO_PASSWORD, PATIENTS, seed_demo
from tests.helpers import Api, SocketClient
from tests.security.matrix import OPERATIONS, PERSONAS, SIDES, SIGNED_IN, Op, by_key
from tests.security.world import World, build_world, expired_token, try_connect

DENIED = {401, 403, 404}
# What a refusal must never repeat back: the sides' patients' names, resident IDs, phones.
PATIENT_VALUES = [
    value
    for p in PATIENTS
    if p.username in ("patient_sun", "patient_liu")
    for value in (p.name, p.resident_id, p.phone)
]


def route_keys(app: web.Application) -> set[str]:
    """ "METHOD /canonical" for every route; HEAD twins of GET routes are the GET's."""
    keys = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None:
            continue
        keys.add(f"{route.method} {resource.canonical}")
    return {k for k in keys if not (k.startswith("HEAD ") and "GET " + k[5:] in keys)}


def operation_keys(app: web.Application) -> set[str]:
    gateway = app[SERVICES].gateway
    return route_keys(app) | {f"socket {e}" for e in gateway.registered_events} | {"socket connect"}


@dataclass
class Case:
    op: Op
    side: str
    persona: str
    allowed: bool
    status: int
    problem: Any
    request_id: str | None
    passed: bool
    why: str = ""


class Runner:
    def __init__(self, api: Api, world: World, sockets: dict[str, SocketClient]) -> None:
        self.api = api
        self.world = world
        self.sockets = sockets
        self.tokens: dict[str, str | None] = {}

    async def setup(self) -> None:
        for persona, username in PERSONAS.items():
            if persona == "anon":
                self.tokens[persona] = None
            elif persona == "exp":
                assert username is not None
                user_id = self.world.users[username]
                self.tokens[persona] = expired_token(self.world.services, user_id, "patient")
            else:
                assert username is not None
                self.tokens[persona] = await self.api.login(username, DEMO_PASSWORD)
                sock = SocketClient()
                await sock.connect(self.api.url, self.tokens[persona] or "")
                self.sockets[persona] = sock

    async def http(self, op: Op, side: str, persona: str) -> tuple[int, Any, str | None]:
        request = op.build(self.world, self.world.side(side))
        headers = dict(request.headers)
        token = self.tokens[persona]
        if op.key == "POST /api/v1/auth/logout" and persona not in ("anon", "exp"):
            # A session of its own, so logging out does not end the one the matrix uses.
            username = PERSONAS[persona]
            assert username is not None
            token = await self.api.login(username, DEMO_PASSWORD)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": headers}
        if request.json is not None:
            kwargs["json"] = request.json
        response = await self.api.client.request(op.method, request.path, **kwargs)
        text = await response.text()
        problem: Any = text[:300]
        if response.status >= 400:
            ctype = response.content_type
            expected = (
                "application/fhir+json"
                if request.path.startswith("/fhir")
                else "application/problem+json"
            )
            if ctype != expected:
                problem = f"wrong content type {ctype} (expected {expected}): {text[:200]}"
                return -response.status, problem, None
            problem = await response.json(content_type=None)
        return response.status, problem, response.headers.get("X-Request-Id")

    async def socket(self, op: Op, side: str, persona: str) -> tuple[int, Any, str | None]:
        if persona in ("anon", "exp"):
            auth = {"token": self.tokens[persona]} if self.tokens[persona] else None
            refused = await try_connect(self.api.url, auth)
            return (401, refused, None) if refused else (200, "connected", None)
        if op.key == "socket connect":
            sock = SocketClient()
            await sock.connect(self.api.url, self.tokens[persona] or "")
            await sock.close()
            return 200, "connected", None
        request = op.build(self.world, self.world.side(side))
        ack = await self.sockets[persona].call(op.key.removeprefix("socket "), request.payload)
        if ack["ok"]:
            return 200, ack.get("data"), None
        problem = ack["problem"]
        return int(problem["status"]), problem, problem.get("request_id")

    async def run(self) -> list[Case]:
        cases = []
        for op in OPERATIONS:
            for side in SIDES:
                allowed = op.allowed(side)
                for persona in sorted(PERSONAS, key=lambda p: p in allowed):  # denied first
                    call = self.socket if op.is_socket else self.http
                    status, problem, request_id = await call(op, side, persona)
                    cases.append(judge(op, side, persona, persona in allowed, status, problem,
                                       request_id))  # fmt: skip
        return cases


def judge(op: Op, side: str, persona: str, allowed: bool, status: int, problem: Any,
          request_id: str | None) -> Case:  # fmt: skip
    case = Case(op, side, persona, allowed, status, problem, request_id, passed=False)
    if status < 0:
        case.why = "error response is not a problem document"
    elif status >= 500:
        case.why = "server error"
    elif persona in op.by_rule(side):
        ok = 400 <= status < 500 and status not in DENIED
        case.passed, case.why = ok, "" if ok else "expected a rule refusal (400/409/422)"
    elif allowed:
        ok = status not in DENIED or status in op.accept
        case.passed, case.why = ok, "" if ok else "allowed persona was refused"
    else:
        ok = status in DENIED
        case.passed, case.why = ok, "" if ok else "denied persona got through"
        leaked = [v for v in PATIENT_VALUES if v in str(problem)]
        if ok and leaked:
            case.passed, case.why = False, f"the refusal names patient data: {leaked}"
    return case


async def audited_request_ids(services: Services) -> set[str]:
    async with services.db.read() as session:
        rows = await session.scalars(
            select(AuditEvent.request_id).where(AuditEvent.outcome == "denied")
        )
        return {r for r in rows if r}


@pytest.fixture
async def matrix_app(settings: Settings, tmp_path: Path) -> web.Application:
    # A built web client of its own, so the app has the same routes (the static /assets
    # among them) whether or not web/dist has been built in this checkout.
    web_dir = tmp_path / "web"
    (web_dir / "assets").mkdir(parents=True)
    (web_dir / "index.html").write_text("<!doctype html><title>Yihao</title>")
    (web_dir / "assets" / "app.js").write_text("export {};")
    # Every persona logs in at once from one address: lift the per-address login limit.
    return create_app(settings.with_overrides(login_rate_per_minute=10_000, web_dir=web_dir))


async def test_every_route_and_event_has_a_matrix_entry(matrix_app: web.Application) -> None:
    table = by_key()
    keys = operation_keys(matrix_app)
    missing = sorted(keys - set(table))
    assert not missing, f"no authorization-matrix entry (tests/security/matrix.py) for: {missing}"
    stale = sorted(set(table) - keys)
    assert not stale, f"matrix entries for operations that do not exist: {stale}"


async def test_authorization_matrix(aiohttp_client: Any, matrix_app: web.Application) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(matrix_app)
    services: Services = matrix_app[SERVICES]
    await seed_demo(services)
    api = Api(client)
    sockets: dict[str, SocketClient] = {}
    started = time.perf_counter()
    try:
        world = await build_world(api, services)
        runner = Runner(api, world, sockets)
        await runner.setup()
        cases = await runner.run()
        earned = await registering_earns_nothing(api, world)
    finally:
        for sock in sockets.values():
            await sock.close()
        await api.close()
    elapsed = time.perf_counter() - started
    audited = await audited_request_ids(services)
    for case in cases:
        denied = case.passed and not case.allowed and case.status in (403, 404)
        if denied and case.request_id not in audited:
            case.passed, case.why = False, "denial not in the audit log"
    if os.environ.get("YIHAO_MATRIX_PRINT"):
        print_observed(cases)
    ops = len(OPERATIONS)
    print(f"\nauthorization matrix: {ops} operations × {len(PERSONAS)} personas × {len(SIDES)} "
          f"objects = {len(cases)} cases "
          f"({sum(not c.allowed for c in cases)} denials) in {elapsed:.1f} s")  # fmt: skip
    failures = [c for c in cases if not c.passed]
    report = "\n".join(
        f"{c.op.key} [{c.side}] {c.persona}: {c.why} — {c.status} {str(c.problem)[:160]}"
        for c in failures
    )
    assert not failures, f"{len(failures)} of {len(cases)} matrix cases failed:\n{report}"
    print(f"register-to-read: {len(earned)} reads after every persona registered both patients")
    wrong = [line for line in earned if line.startswith("WRONG")]
    assert not wrong, "\n".join(wrong)


async def registering_earns_nothing(api: Api, world: World) -> list[str]:
    """After the matrix, every signed-in persona has registered both sides' patients (the
    ``POST /api/v1/patients`` entry) and both clinics pushed visits (``POST /fhir``): the
    record must still open to exactly the personas the summary entry allows."""
    summary = by_key()["GET /api/v1/patients/{patient_id}/summary"]
    lines = []
    for side in SIDES:
        patient_id = world.side(side).patient_id
        for persona in SIGNED_IN:
            username = PERSONAS[persona]
            assert username is not None
            api.tokens.pop(username, None)  # a fresh login: the matrix ended some sessions
            for path in (
                f"/api/v1/patients/{patient_id}/summary",
                f"/fhir/Patient/{patient_id}/$everything",
            ):
                status, _ = await api.get(path, as_=username)
                allowed = persona in summary.allowed(side)
                ok = status == 200 if allowed else status in (403, 404)
                lines.append(f"{'ok' if ok else 'WRONG'} [{side}] {persona} {path}: {status}")
    return lines


def print_observed(cases: list[Case]) -> None:
    """The allow sets as observed (401/403/404 = denied), in the table's notation."""
    seen: dict[tuple[str, str], list[str]] = {}
    statuses: dict[tuple[str, str], list[str]] = {}
    for c in cases:
        if c.status not in DENIED or c.status in c.op.accept:
            seen.setdefault((c.op.key, c.side), []).append(c.persona)
        statuses.setdefault((c.op.key, c.side), []).append(f"{c.persona}:{c.status}")
    print()
    for op in OPERATIONS:
        a = " ".join(p for p in PERSONAS if p in seen.get((op.key, "A"), []))
        b = " ".join(p for p in PERSONAS if p in seen.get((op.key, "B"), []))
        print(f'{op.key}: a="{a}" b="{b}"')
        if os.environ.get("YIHAO_MATRIX_PRINT") == "2":
            for side in SIDES:
                print(f"    {side}: {' '.join(statuses[(op.key, side)])}")
