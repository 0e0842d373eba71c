"""Rate limits that keep one sender from starving the others: FHIR ingest per institution.

In the distributed mode the limits count in Redis, so a client cannot multiply its budget
by spreading requests over nodes; when Redis fails they count on each node instead of
refusing or failing requests.

(Login and refresh limits: tests/identity/test_auth.py; per-connection socket
events: tests/realtime/test_gateway.py and tests/security/test_flood.py.)
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.core.ratelimit import RateLimits
from server.seed import PATIENTS, seed_demo
from tests.helpers import Api
from tests.security.world import Side, visit_bundle

FHIR = {"Content-Type": "application/fhir+json"}


def side(code: str, patient: str) -> Side:
    return Side(name=code[-1], patient_user=patient, patient_id=0, institution_id=0,
                institution_code=code, gp="", hospital_id=0, hospital_code="", specialist="",
                specialist_id=0, department_id=0, slot_department_id=0, pharmacy_id=0,
                pharmacy_code="")  # fmt: skip


def resident(username: str) -> str:
    return next(p for p in PATIENTS if p.username == username).resident_id


@pytest.fixture
async def limited_app(settings: Settings) -> web.Application:
    return create_app(settings.with_overrides(fhir_ingest_per_minute=3))


async def test_fhir_ingest_is_limited_per_institution(
    aiohttp_client: Any, limited_app: web.Application
) -> None:
    api = Api(await aiohttp_client(limited_app))
    services: Services = limited_app[SERVICES]
    await seed_demo(services)
    snbdh = visit_bundle(side("SNBDH", "patient_sun"), resident("patient_sun"))
    sblyl = visit_bundle(side("SBLYL", "patient_liu"), resident("patient_liu"))
    for _ in range(3):
        status, body = await api.post("/fhir", as_="gp_zhang", json=snbdh, headers=FHIR)
        assert status == 200, body
    response = await api.client.post(
        "/fhir",
        json=snbdh,
        headers={**FHIR, "Authorization": f"Bearer {await api.token('gp_zhang')}"},
    )
    assert response.status == 429
    assert response.content_type == "application/fhir+json"
    assert int(response.headers["Retry-After"]) >= 1
    outcome = await response.json(content_type=None)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "throttled"
    assert "SNBDH" not in outcome["issue"][0]["diagnostics"]  # names the limit, not the sender
    # Another institution's pushes are not held up by SNBDH's flood.
    status, body = await api.post("/fhir", as_="gp_liu", json=sblyl, headers=FHIR)
    assert status == 200, body
    await api.close()


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_limit_spent_on_one_node_holds_on_another(
    aiohttp_client: Any, settings: Settings
) -> None:
    """Two nodes of one cluster (one database, one Redis, one channel) share the budgets."""
    assert settings.redis_url
    limited = settings.with_overrides(api_requests_per_minute=5, login_rate_per_minute=3)
    node_a, node_b = create_app(limited), create_app(limited)
    api_a, api_b = Api(await aiohttp_client(node_a)), Api(await aiohttp_client(node_b))
    try:
        await seed_demo(node_a[SERVICES])
        token = await api_a.token("gp_zhang")
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(5):
            async with api_a.client.get("/api/v1/me", headers=headers) as response:
                assert response.status == 200, await response.text()
        async with api_b.client.get("/api/v1/me", headers=headers) as response:
            assert response.status == 429, await response.text()
            assert int(response.headers["Retry-After"]) >= 1
            assert (await response.json())["code"] == "rate_limited"
        # Login attempts per address too: three wrong ones on node A (one login above spent
        # one), and node B refuses the next before checking the password.
        wrong = {"username": "gp_zhang", "password": "not-this-one"}
        for _ in range(2):
            async with api_a.client.post("/api/v1/auth/login", json=wrong) as response:
                assert response.status == 401
        async with api_b.client.post("/api/v1/auth/login", json=wrong) as response:
            assert response.status == 429
    finally:
        await api_a.close()
        await api_b.close()


async def test_without_redis_the_limits_count_on_this_node(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that does not answer neither refuses nor fails requests: the node counts alone."""
    down = settings.with_overrides(redis_url="redis://127.0.0.1:9/0")  # the discard port
    limits = RateLimits(down)
    assert limits.distributed
    limiter = limits.limiter("api", 3)
    try:
        with caplog.at_level(logging.WARNING, logger="server.core.ratelimit"):
            assert [await limiter.allow("user:1") for _ in range(4)] == [True] * 3 + [False]
            assert await limiter.retry_after("user:1") >= 1
            assert await limiter.allow("user:2")
        warnings = [r for r in caplog.records if "rate limit store unavailable" in r.message]
        assert len(warnings) == 1  # one per outage, not one per request
    finally:
        await limits.aclose()


async def test_the_embedded_mode_counts_in_process(settings: Settings) -> None:
    limits = RateLimits(settings.with_overrides(redis_url=""))
    assert not limits.distributed
    login = limits.limiter("login", 2)
    refresh = limits.limiter("refresh", 2)
    assert [await login.allow("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert await login.allow("10.0.0.2")  # per address
    assert await refresh.allow("10.0.0.1")  # and per limit
    assert 1 <= await login.retry_after("10.0.0.1") <= 60
    await limits.aclose()
