"""Setting up a benchmark's patient the way a desk does: an app account, its presence code.

Registering or pushing a patient earns an institution no reading of the record
(docs/security.md), so a benchmark that prescribes or consults for a patient it
pushed first gives the patient an app account (the platform admin) and has the
desk confirm the patient's presence code.
"""

from __future__ import annotations

from typing import Any

import aiohttp

PASSWORD = "Yihao@2026"


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None, body: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def _login(http: aiohttp.ClientSession, base: str, username: str) -> str:
    status, body = await _call(
        http, "POST", f"{base}/api/v1/auth/login", None,
        {"username": username, "password": PASSWORD},
    )  # fmt: skip
    assert status == 200, body
    return str(body["access_token"])


async def present(
    http: aiohttp.ClientSession, base: str, desk: str, resident_id: str, name: str
) -> None:
    """The resident (given an app account if they have none) shows a presence code at ``desk``."""
    base = base.rstrip("/")
    username = f"bench_p_{resident_id[-8:].lower()}"
    status, body = await _call(
        http, "POST", f"{base}/api/v1/users", await _login(http, base, "admin"),
        {"username": username, "password": PASSWORD, "role": "patient",
         "resident_id": resident_id, "name": name},
    )  # fmt: skip
    assert status in (201, 409), body
    patient = await _login(http, base, username)
    status, code = await _call(http, "POST", f"{base}/api/v1/me/presence-code", patient, None)
    assert status == 201, code
    status, body = await _call(
        http, "POST", f"{base}/api/v1/care/presence", await _login(http, base, desk),
        {"resident_id": resident_id, "code": code["code"]},
    )  # fmt: skip
    assert status == 201, body
