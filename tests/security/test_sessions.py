"""Sessions end everywhere at once, and the login answers nothing an attacker could use.

Every way a session ends (logout, password change, idle logoff, a disabled account, an
administrator signing the account out) is tried against an open, real Socket.IO client:
the server tells it ``session_ended`` and closes it, it gets no more pushes, its old
token answers 401 on REST and opens no new socket. Two nodes sharing PostgreSQL and
Redis: a logout on node A closes the socket on node B within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import socketio
from sqlalchemy import select, update

from server.config import Settings
from server.container import Services
from server.core.audit import AuditEvent
from server.core.db import utcnow
from server.identity.models import AuthSession, User
from server.identity.totp import totp_code
from server.seed import DEMO_PASSWORD
from tests.consults import test_cluster
from tests.helpers import Api, SocketClient
from tests.test_cli import _run


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Sweep idle sessions (and re-read a socket's session) every second, not every 30 s.
    return settings.with_overrides(session_check_seconds=1)


class Watched(SocketClient):
    """A socket client that notes the server's ``session_ended`` and its disconnect."""

    def __init__(self) -> None:
        super().__init__()
        self.ended_reasons: list[str] = []
        self.gone = asyncio.Event()
        self.sio.on("session_ended", self._on_ended)
        self.sio.on("disconnect", self._on_disconnect)

    async def _on_ended(self, data: dict[str, Any]) -> None:
        self.ended_reasons.append(data["reason"])

    async def _on_disconnect(self, *reason: Any) -> None:
        self.gone.set()


async def sign_in(api: Api, username: str, password: str = DEMO_PASSWORD) -> dict[str, Any]:
    status, tokens = await api.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert status == 200, tokens
    return tokens  # type: ignore[no-any-return]


async def watched_socket(api: Api, token: str) -> Watched:
    sock = Watched()
    await sock.connect(api.url, token)
    api.sockets.append(sock)
    assert (await sock.call("sync", {"positions": {}}))["ok"]
    return sock


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def connect_refusal(api: Api, token: str) -> dict[str, Any]:
    sio = socketio.AsyncClient(reconnection=False)
    refused: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    @sio.event
    async def connect_error(data: dict[str, Any]) -> None:
        if not refused.done():
            refused.set_result(data)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(api.url, auth={"token": token}, transports=["websocket"], wait_timeout=5)
    return (await asyncio.wait_for(refused, 5))["data"]  # type: ignore[no-any-return]


async def qdsl_id(api: Api) -> int:
    status, body = await api.get("/api/v1/institutions", as_="admin")
    assert status == 200
    return next(i["id"] for i in body["items"] if i["code"] == "QDSL")


async def user_id(services: Services, username: str) -> int:
    async with services.db.read() as session:
        found = await session.scalar(select(User.id).where(User.username == username))
    assert found is not None
    return found


# --- the ways a session ends ----------------------------------------------------------

Ender = Callable[[Api, Services, dict[str, Any]], Awaitable[None]]


async def by_logout(api: Api, services: Services, tokens: dict[str, Any]) -> None:
    status, _ = await api.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert status == 204


async def by_password_change(api: Api, services: Services, tokens: dict[str, Any]) -> None:
    status, body = await api.post(
        "/api/v1/auth/password",
        headers=bearer(tokens["access_token"]),
        json={"current_password": DEMO_PASSWORD, "new_password": "another-Good-one-2026"},
    )
    assert status == 204, body


async def by_idle_logoff(api: Api, services: Services, tokens: dict[str, Any]) -> None:
    # The browser went quiet: its session was last seen longer ago than the idle timeout.
    idle = services.settings.session_idle_timeout_seconds
    async with services.db.transaction() as tx:
        await tx.session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == await user_id(services, "dr_li"))
            .values(last_seen_at=utcnow() - timedelta(seconds=idle + 5))
        )


async def by_disabling(api: Api, services: Services, tokens: dict[str, Any]) -> None:
    target = await user_id(services, "dr_li")
    status, body = await api.post(f"/api/v1/users/{target}/disable", as_="admin_qdsl")
    assert status == 200, body
    assert body["active"] is False and body["sessions_ended"] >= 1


async def by_admin_sign_out(api: Api, services: Services, tokens: dict[str, Any]) -> None:
    target = await user_id(services, "dr_li")
    status, body = await api.post(f"/api/v1/users/{target}/sessions/end", as_="admin")
    assert status == 200, body
    assert body["active"] is True and body["sessions_ended"] >= 1


ENDINGS: dict[str, tuple[Ender, str, str]] = {
    # how → (the ending, the reason the socket is told, the REST code of the old token)
    "logout": (by_logout, "logout", "session_revoked"),
    "password_change": (by_password_change, "password_change", "session_revoked"),
    "idle": (by_idle_logoff, "idle", "session_revoked"),
    "disabled": (by_disabling, "account_disabled", "session_revoked"),
    "admin_sign_out": (by_admin_sign_out, "admin_revoked", "session_revoked"),
}


@pytest.mark.parametrize("how", list(ENDINGS))
async def test_an_ended_session_loses_its_socket_its_pushes_and_its_token(
    api: Api, network: Services, how: str
) -> None:
    end, reason, code = ENDINGS[how]
    tokens = await sign_in(api, "dr_li")
    sock = await watched_socket(api, tokens["access_token"])
    # A colleague at the same hospital, whose session goes on, hears the same stream.
    colleague = await api.socket("dr_wang")

    await end(api, network, tokens)

    await asyncio.wait_for(sock.gone.wait(), 10)
    assert sock.ended_reasons == [reason]
    assert not sock.sio.connected
    # A push to the hospital's stream reaches the colleague, and not the closed socket.
    qdsl = await qdsl_id(api)
    status, _ = await api.post(
        f"/api/v1/institutions/{qdsl}/departments", as_="admin", json={"name": f"眼科{how}"}
    )
    assert status == 201
    await colleague.wait_for(lambda e: e["data"].get("department", {}).get("name") == f"眼科{how}")
    assert not [e for e in sock.events if e["data"].get("department")]
    # The old access token stops on the next request, and opens no new socket.
    status, body = await api.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert (status, body["code"]) == (401, code)
    assert (await connect_refusal(api, tokens["access_token"]))["code"] == code
    # And the refresh token is dead with it.
    status, body = await api.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert status == 401


async def test_a_disabled_account_cannot_sign_in_until_enabled(api: Api, network: Services) -> None:
    target = await user_id(network, "nurse_he")
    await sign_in(api, "nurse_he")
    status, body = await api.post(f"/api/v1/users/{target}/disable", as_="admin")
    assert status == 200 and body["active"] is False
    status, body = await api.post(
        "/api/v1/auth/login", json={"username": "nurse_he", "password": DEMO_PASSWORD}
    )
    assert (status, body["code"]) == (401, "invalid_credentials")
    status, body = await api.post(f"/api/v1/users/{target}/enable", as_="admin_qdsl")
    assert status == 200 and body["active"] is True
    await sign_in(api, "nurse_he")
    async with network.db.read() as session:
        actions = list(
            await session.scalars(
                select(AuditEvent.action).where(AuditEvent.resource == f"User/{target}")
            )
        )
    assert {"user.disable", "user.enable"} <= set(actions)


async def test_the_operator_disables_enables_and_unlocks_from_the_cli(
    api: Api, network: Services
) -> None:
    """``yihao user disable`` in another process, with no Redis to tell the server: the open
    socket finds out at its next session check, the token at its next request."""
    tokens = await sign_in(api, "dr_li")
    sock = await watched_socket(api, tokens["access_token"])
    done = await asyncio.to_thread(_run, network.settings, "user", "disable", "--username", "dr_li")
    assert done.returncode == 0, done.stderr
    assert "user dr_li: disabled" in done.stdout and "1 session(s) ended" in done.stdout
    status, body = await api.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert (status, body["code"]) == (401, "session_revoked")
    ack: dict[str, Any] = {"ok": True}
    for _ in range(50):
        ack = await sock.call("sync", {"positions": {}})
        if not ack["ok"]:
            break
        await asyncio.sleep(0.2)
    assert (ack["ok"], ack.get("problem", {}).get("code")) == (False, "session_revoked")
    await asyncio.wait_for(sock.gone.wait(), 10)
    for _ in range(network.settings.login_max_failures):
        await api.post("/api/v1/auth/login", json={"username": "dr_li", "password": "guess"})
    done = await asyncio.to_thread(_run, network.settings, "user", "enable", "--username", "dr_li")
    assert done.returncode == 0, done.stderr
    status, body = await api.post(
        "/api/v1/auth/login", json={"username": "dr_li", "password": DEMO_PASSWORD}
    )
    assert (status, body["code"]) == (401, "invalid_credentials")  # locked by the guesses
    done = await asyncio.to_thread(_run, network.settings, "user", "unlock", "--username", "dr_li")
    assert done.returncode == 0 and "not locked" in done.stdout, done.stderr
    await sign_in(api, "dr_li")
    missing = await asyncio.to_thread(
        _run, network.settings, "user", "disable", "--username", "nobody"
    )
    assert missing.returncode == 1 and "no user nobody" in missing.stderr


async def test_who_may_disable_whom(api: Api, network: Services) -> None:
    nurse = await user_id(network, "nurse_he")  # QDSL, the institution admin's own
    other = await user_id(network, "dr_zhao")  # QDFY
    patient = await user_id(network, "patient_sun")
    qdsl_admin = await user_id(network, "admin_qdsl")
    for as_, target, expected in [
        ("dr_li", nurse, 403),  # not an administrator
        ("admin_qdsl", other, 403),  # another institution's practitioner
        ("admin_qdsl", patient, 404),  # a patient's account is not even visible to him
        ("admin_qdsl", qdsl_admin, 409),  # not his own account
        ("admin_qdsl", 999999, 404),
    ]:
        status, body = await api.post(f"/api/v1/users/{target}/disable", as_=as_)
        assert status == expected, (as_, target, body)
    status, _ = await api.post(f"/api/v1/users/{other}/disable", as_="admin")
    assert status == 200


async def test_an_event_on_a_session_ended_elsewhere_is_refused_and_the_socket_closed(
    api: Api, network: Services
) -> None:
    """The broadcast can be lost (a node cut off from Redis); the database still decides.

    Here the session ends by a write no node announces; the socket's next event, once
    its periodic session check is due, is acked 401 session_revoked and it is closed.
    """
    tokens = await sign_in(api, "dr_li")
    sock = await watched_socket(api, tokens["access_token"])
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(AuthSession)
            .where(AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoke_reason="logout")
        )
    ack: dict[str, Any] = {"ok": True}
    for _ in range(50):  # the check is due at most session_check_seconds after the last one
        ack = await sock.call("sync", {"positions": {}})
        if not ack["ok"]:
            break
        await asyncio.sleep(0.2)
    assert not ack["ok"]
    assert (ack["problem"]["status"], ack["problem"]["code"]) == (401, "session_revoked")
    await asyncio.wait_for(sock.gone.wait(), 10)
    assert sock.ended_reasons == ["session_revoked"]


# --- no oracles at login -------------------------------------------------------------


async def test_locked_unknown_and_wrong_answer_alike(api: Api, network: Services) -> None:
    for _ in range(network.settings.login_max_failures):
        await api.post("/api/v1/auth/login", json={"username": "gp_zhang", "password": "guess"})
    answers = []
    for username, password in [
        ("gp_zhang", DEMO_PASSWORD),  # locked, right password
        ("gp_zhang", "guess"),  # locked, wrong password
        ("nobody_here", "guess"),  # unknown
        ("gp_liu", "guess"),  # real, wrong password
    ]:
        response = await api.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        body = await response.json()
        answers.append(
            (
                response.status,
                response.headers.get("Retry-After"),
                {k: v for k, v in body.items() if k not in ("request_id", "instance")},
            )
        )
    assert answers[0][0] == 401 and answers[0][2]["code"] == "invalid_credentials"
    assert all(answer == answers[0] for answer in answers), answers
    # Still enforced, and audited as what it was.
    async with network.db.read() as session:
        reasons = list(
            await session.scalars(
                select(AuditEvent.reason).where(
                    AuditEvent.action == "auth.login", AuditEvent.outcome == "failure"
                )
            )
        )
    assert reasons.count("locked") == 2
    # An administrator unlocks it.
    target = await user_id(network, "gp_zhang")
    status, body = await api.post(f"/api/v1/users/{target}/unlock", as_="admin")
    assert (status, body["locked"]) == (200, False)
    await sign_in(api, "gp_zhang")


async def test_a_replayed_refresh_token_ends_the_whole_session(api: Api, network: Services) -> None:
    tokens = await sign_in(api, "pharmacist_chen")
    sock = await watched_socket(api, tokens["access_token"])
    status, fresh = await api.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert status == 200
    # The old token again: someone kept a copy. Refused, and the family ends with it.
    status, body = await api.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert (status, body["code"]) == (401, "refresh_invalid")
    status, body = await api.post(
        "/api/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}
    )
    assert (status, body["code"]) == (401, "refresh_invalid")
    for token in (tokens["access_token"], fresh["access_token"]):
        status, body = await api.get("/api/v1/me", headers=bearer(token))
        assert (status, body["code"]) == (401, "session_revoked")
    await asyncio.wait_for(sock.gone.wait(), 10)
    assert sock.ended_reasons == ["refresh_replay"]
    async with network.db.read() as session:
        replays = list(
            await session.scalars(
                select(AuditEvent.seq).where(
                    AuditEvent.action == "auth.refresh", AuditEvent.reason == "refresh_replay"
                )
            )
        )
    assert len(replays) == 1


async def _enrol_totp(api: Api, token: str) -> str:
    again = {"current_password": DEMO_PASSWORD}
    status, setup = await api.post("/api/v1/auth/totp/setup", headers=bearer(token), json=again)
    assert status == 200, setup
    code = totp_code(setup["secret"])
    status, body = await api.post(
        "/api/v1/auth/totp/confirm", headers=bearer(token), json={"code": code, **again}
    )
    assert status == 204, body
    return str(setup["secret"])


async def test_a_totp_code_works_once(api: Api, network: Services) -> None:
    tokens = await sign_in(api, "dr_sun")
    secret = await _enrol_totp(api, tokens["access_token"])
    login = {"username": "dr_sun", "password": DEMO_PASSWORD}
    # The code that confirmed the enrolment is spent: the login wants a newer one.
    status, body = await api.post("/api/v1/auth/login", json={**login, "totp": totp_code(secret)})
    assert (status, body["code"]) == (401, "invalid_totp")
    later = totp_code(secret, time.time() + 30)
    status, body = await api.post("/api/v1/auth/login", json={**login, "totp": later})
    assert status == 200, body
    # The same code a second time (an onlooker, a replayed request) is refused.
    status, body = await api.post("/api/v1/auth/login", json={**login, "totp": later})
    assert (status, body["code"]) == (401, "invalid_totp")


async def test_totp_enrolment_asks_for_the_password(api: Api, network: Services) -> None:
    """A stolen access token alone cannot enrol a second factor and lock the owner out."""
    token = (await sign_in(api, "gp_liu"))["access_token"]
    status, body = await api.post("/api/v1/auth/totp/setup", headers=bearer(token), json={})
    assert status == 422 and body["errors"][0]["field"] == "current_password", body
    status, body = await api.post(
        "/api/v1/auth/totp/setup", headers=bearer(token), json={"current_password": "a-guess"}
    )
    assert status == 422 and body["errors"][0]["field"] == "current_password", body
    status, setup = await api.post(
        "/api/v1/auth/totp/setup", headers=bearer(token), json={"current_password": DEMO_PASSWORD}
    )
    assert status == 200
    status, body = await api.post(
        "/api/v1/auth/totp/confirm",
        headers=bearer(token),
        json={"code": totp_code(setup["secret"]), "current_password": "a-guess"},
    )
    assert status == 422 and body["errors"][0]["field"] == "current_password", body
    status, profile = await api.get("/api/v1/me", headers=bearer(token))
    assert profile["totp_enabled"] is False
    # The wrong passwords counted as failed sign-ins.
    async with network.db.read() as session:
        failures = await session.scalar(select(User.failed_logins).where(User.username == "gp_liu"))
    assert failures == 2


# --- two nodes ------------------------------------------------------------------------


# The second node (same database, same Redis channel): the consults' cluster fixture.
node_b = test_cluster.node_b


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["postgres"])
async def test_logout_on_node_a_closes_the_socket_on_node_b_within_a_second(
    backend: str, api: Api, network: Services, node_b: Api
) -> None:
    tokens = await sign_in(api, "dr_li")
    on_b = await watched_socket(node_b, tokens["access_token"])
    status, _ = await api.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert status == 204
    # The bound: node B hears of it through Redis and closes the socket in < 1 s.
    await asyncio.wait_for(on_b.gone.wait(), 1.0)
    assert on_b.ended_reasons == ["logout"]
    status, body = await node_b.get("/api/v1/me", headers=bearer(tokens["access_token"]))
    assert (status, body["code"]) == (401, "session_revoked")
    with contextlib.suppress(Exception):
        await on_b.close()
