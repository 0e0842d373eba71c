"""The browser-facing edge: strict CSP, security headers, no cookies, CORS closed by default."""

from __future__ import annotations

from server.container import Services
from tests.helpers import Api
from tests.security.world import try_connect

EVIL = "https://evil.example"


async def test_the_web_client_gets_a_strict_content_security_policy(api: Api) -> None:
    response = await api.client.get("/consults/1")
    assert response.status == 200
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_api_answers_are_not_cached_and_set_no_cookies(api: Api, network: Services) -> None:
    response = await api.client.post(
        "/api/v1/auth/login", json={"username": "gp_zhang", "password": "Yihao@2026"}
    )
    assert response.status == 200
    assert "Set-Cookie" not in response.headers  # bearer tokens only: nothing for CSRF to ride
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_cors_is_closed_for_the_api_by_default(api: Api, network: Services) -> None:
    preflight = await api.client.options(
        "/api/v1/me",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"},
    )  # fmt: skip
    assert "Access-Control-Allow-Origin" not in preflight.headers
    response = await api.client.get(
        "/api/v1/me",
        headers={"Origin": EVIL, "Authorization": f"Bearer {await api.token('gp_zhang')}"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_socket_io_refuses_another_origin(api: Api, network: Services) -> None:
    token = await api.token("gp_zhang")
    assert await try_connect(api.url, {"token": token}, {"Origin": EVIL}) is not None
    assert await try_connect(api.url, {"token": token}, {"Origin": api.url.rstrip("/")}) is None
