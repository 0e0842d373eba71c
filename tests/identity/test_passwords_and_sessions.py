"""Passwords are hashed off the event loop and outside transactions; REST's session check
answers from the node's cache, which every way a session ends empties on every node."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from server.config import Settings
from server.container import Services
from server.core.auth import PASSWORD_THREAD_PREFIX
from server.identity.totp import totp_code
from server.seed import DEMO_PASSWORD
from tests.consults.test_cluster import node_b
from tests.helpers import Api

__all__ = ["node_b"]  # the fixture: a second app on the same database and Redis


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    # A TTL far longer than any test: what refuses an ended session is never its expiry.
    settings = settings.with_overrides(session_cache_seconds=60)
    if request.node.name.startswith("test_users_created_at_once"):
        # Production-like argon2: each hash takes long enough that hashing inside the write
        # transaction held SQLite's write lock past the others' patience (503).
        settings = settings.with_overrides(argon2_time_cost=3, argon2_memory_kib=32768)
    return settings


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_login_hashes_in_the_password_threads_not_on_the_event_loop(
    api: Api, network: Services
) -> None:
    assert await api.login("dr_li")
    threads = network.auth.passwords.thread_names()
    assert threads, "the password was not verified in the pool"
    assert all(name.startswith(PASSWORD_THREAD_PREFIX) for name in threads)
    assert threading.current_thread().name not in threads


async def test_users_created_at_once_all_succeed(api: Api, network: Services) -> None:
    async def create(i: int) -> tuple[int, Any]:
        return await api.post(
            "/api/v1/users",
            as_="admin",
            json={
                "username": f"nurse_new{i}",
                "password": "a-Good-password-2026",
                "role": "nurse",
                "name": "护士" + "甲乙丙丁"[i],
                "institution": "QDSL",
            },
        )

    answers = await asyncio.gather(*(create(i) for i in range(4)))
    assert [status for status, _ in answers] == [201] * 4, answers
    for i in range(4):
        assert await api.login(f"nurse_new{i}", "a-Good-password-2026")


async def test_logout_refuses_a_cached_session_at_once(api: Api, network: Services) -> None:
    token = await api.login("dr_li")
    status, me = await api.get("/api/v1/me", headers=bearer(token))
    assert status == 200 and me["username"] == "dr_li"  # now answered from the cache
    status, _ = await api.post("/api/v1/auth/logout", headers=bearer(token))
    assert status == 204
    status, body = await api.get("/api/v1/me", headers=bearer(token))
    assert (status, body["code"]) == (401, "session_revoked")


async def test_enabling_totp_shows_on_me_at_once(api: Api, network: Services) -> None:
    token = await api.login("dr_sun")
    status, me = await api.get("/api/v1/me", headers=bearer(token))
    assert status == 200 and me["totp_enabled"] is False
    again = {"current_password": DEMO_PASSWORD}
    status, setup = await api.post("/api/v1/auth/totp/setup", headers=bearer(token), json=again)
    assert status == 200
    status, _ = await api.post(
        "/api/v1/auth/totp/confirm",
        headers=bearer(token),
        json={**again, "code": totp_code(setup["secret"])},
    )
    assert status == 204
    status, me = await api.get("/api/v1/me", headers=bearer(token))
    assert status == 200 and me["totp_enabled"] is True


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_session_ended_on_another_node_is_refused_here_without_waiting_for_the_ttl(
    backend: str, api: Api, node_b: Api, network: Services
) -> None:
    token = await api.login("dr_li")
    for node in (api, node_b):  # both nodes now hold the session in their caches
        status, _ = await node.get("/api/v1/me", headers=bearer(token))
        assert status == 200
    status, _ = await node_b.post("/api/v1/auth/logout", headers=bearer(token))
    assert status == 204
    # Node B ended it: refused there at once; on node A as soon as the broadcast lands
    # (milliseconds; the cache would keep the entry for a minute).
    status, body = await node_b.get("/api/v1/me", headers=bearer(token))
    assert (status, body["code"]) == (401, "session_revoked")
    for _ in range(100):
        status, body = await api.get("/api/v1/me", headers=bearer(token))
        if status == 401:
            break
        await asyncio.sleep(0.05)
    assert (status, body["code"]) == (401, "session_revoked")
