"""The platform as an operator and a client developer see it: health, metrics, OpenAPI, errors."""

from __future__ import annotations

import io
import json
import shutil
import struct
from pathlib import Path
from typing import Any

from server.app import create_app
from server.config import Settings
from tests.helpers import Api

PUBLIC = Path(__file__).resolve().parent.parent / "web" / "public"

PROBLEM = "application/problem+json"


async def test_health_and_readiness(api: Api, backend: str) -> None:
    status, body = await api.get("/healthz")
    assert (status, body) == (200, {"status": "ok"})
    status, body = await api.get("/readyz")
    assert status == 200
    assert body["checks"]["database"] == "ok"
    if backend == "postgres":
        assert body["checks"]["redis"] == "ok"


async def test_metrics_count_requests(api: Api) -> None:
    await api.get("/healthz")
    response = await api.client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert 'yihao_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "yihao_socketio_connections" in text


async def test_openapi_document_is_generated_from_the_models(api: Api) -> None:
    status, doc = await api.get("/api/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    login = doc["paths"]["/api/v1/auth/login"]["post"]
    schema_ref = login["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    login_schema = doc["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert set(login_schema["required"]) == {"username", "password"}
    assert login["security"] == []
    assert "401" in doc["paths"]["/api/v1/me"]["get"]["responses"]
    assert "/api/v1/institutions/{institution_id}" in doc["paths"]


async def _problem(api: Api, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    response = await api.client.request(method, path, **kwargs)
    assert response.content_type == PROBLEM, await response.text()
    return response.status, await response.json(content_type=None)


async def test_unknown_route_is_a_404_problem(api: Api) -> None:
    status, body = await _problem(api, "GET", "/api/v1/nothing-here")
    assert status == 404
    assert body["code"] == "not_found"
    assert body["instance"] == "/api/v1/nothing-here"


async def test_wrong_method_is_a_405_problem(api: Api) -> None:
    status, body = await _problem(api, "DELETE", "/api/v1/auth/login")
    assert status == 405
    assert body["code"] == "method_not_allowed"


async def test_malformed_json_is_a_400(api: Api) -> None:
    status, body = await _problem(
        api,
        "POST",
        "/api/v1/auth/login",
        data=b'{"username": "x",',
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert body["code"] == "malformed_json"


async def test_wrong_content_type_is_a_415(api: Api) -> None:
    status, _ = await _problem(api, "POST", "/api/v1/auth/login", data=b"username=x")
    assert status == 415


async def test_wrong_types_and_unknown_fields_name_each_field(api: Api) -> None:
    status, body = await _problem(
        api,
        "POST",
        "/api/v1/auth/login",
        json={"username": 12, "password": "x", "role": "admin"},
    )
    assert status == 422
    assert body["code"] == "validation_failed"
    fields = {e["field"]: e["reason"] for e in body["errors"]}
    assert "username" in fields
    assert fields["role"] == "unknown field"


async def test_oversized_body_is_a_413(api: Api) -> None:
    big = b'{"username": "' + b"a" * (2 * 1024 * 1024) + b'", "password": "x"}'
    status, body = await _problem(
        api,
        "POST",
        "/api/v1/auth/login",
        data=io.BytesIO(big),
        headers={"Content-Type": "application/json"},
    )
    assert status == 413
    assert body["code"] == "payload_too_large"


async def test_api_requires_a_token(api: Api) -> None:
    status, body = await _problem(api, "GET", "/api/v1/me")
    assert status == 401
    assert body["code"] == "unauthorized"


async def test_responses_carry_request_id_and_security_headers(api: Api) -> None:
    response = await api.client.get("/api/v1/me", headers={"X-Request-Id": "trace-42"})
    assert response.headers["X-Request-Id"] == "trace-42"
    body = await response.json(content_type=None)
    assert body["request_id"] == "trace-42"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


async def test_web_client_is_served_with_a_csp(api: Api) -> None:
    response = await api.client.get("/")
    assert response.status == 200
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    deep = await api.client.get("/consults/12")
    assert deep.status == 200


async def test_the_installable_app_is_served_from_the_root(
    aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> None:
    """The built client's manifest, icons and service worker (web/public/) at the root, so
    the worker's scope is the whole app; the worker under the page's strict policy."""
    web_dir = tmp_path / "dist"
    shutil.copytree(PUBLIC, web_dir)
    (web_dir / "index.html").write_text("<!doctype html><title>一号通</title>")
    client = await aiohttp_client(create_app(settings.model_copy(update={"web_dir": web_dir})))

    worker = await client.get("/sw.js")
    assert worker.status == 200
    assert worker.headers["Content-Type"].startswith("text/javascript")
    assert worker.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self';" in worker.headers["Content-Security-Policy"]
    source = await worker.text()
    assert "PRIVATE = /^\\/(api|fhir|socket\\.io)(\\/|$)/" in source  # never cached

    manifest = await client.get("/manifest.webmanifest")
    assert manifest.status == 200
    assert manifest.headers["Content-Type"].startswith("application/manifest+json")
    body = json.loads(await manifest.text())
    assert (body["name"], body["start_url"], body["display"]) == (
        "一号通",
        "/patient",
        "standalone",
    )
    for icon in body["icons"]:
        answer = await client.get(icon["src"])
        assert answer.status == 200, icon
        data = await answer.read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert f"{width}x{height}" == icon["sizes"]
    assert {i["purpose"] for i in body["icons"]} == {"any", "maskable"}
    # A patient page is still the app, with its policy.
    page = await client.get("/patient/me")
    assert page.status == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
