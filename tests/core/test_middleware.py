"""The error middleware on a failure nobody planned for: a 500 that hides internals."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web

from server.core.middleware import ERROR_RENDERERS, context_middleware, error_middleware


async def test_unexpected_exception_is_a_500_with_only_an_error_id(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail: password=hunter2")

    app = web.Application(middlewares=[context_middleware, error_middleware])
    app[ERROR_RENDERERS] = {}
    app.router.add_get("/api/v1/broken", broken)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR):
        response = await client.get("/api/v1/broken")
    body = await response.json(content_type=None)
    assert response.status == 500
    assert response.content_type == "application/problem+json"
    assert body["code"] == "internal"
    assert "hunter2" not in await response.text()
    assert body["error_id"] in body["detail"]
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == body["error_id"]]
    assert logged and logged[0].exc_info is not None
