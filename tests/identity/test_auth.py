"""Signing in and staying signed in: tokens, refresh, logout, lockout, TOTP, idle logoff."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
from sqlalchemy import select, update

from server.container import Services
from server.core.audit import AuditEvent
from server.core.db import utcnow
from server.identity.models import AuthSession, User
from server.identity.totp import totp_code
from server.seed import DEMO_PASSWORD
from tests.conftest import SECRET
from tests.helpers import Api


async def test_login_answers_the_contract_and_opens_the_api(api: Api, network: Services) -> None:
    response = await api.client.post(
        "/api/v1/auth/login", json={"username": "dr_li", "password": DEMO_PASSWORD}
    )
    body = await response.json()
    assert response.status == 200
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    me = await api.client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    profile = await me.json()
    assert me.status == 200
    assert profile["username"] == "dr_li"
    assert profile["role"] == "specialist"
    assert profile["name"] == "李明"
    assert profile["institution"]["code"] == "QDSL"
    assert profile["department"] == "心内科"
    assert profile["title"] == "主任医师"
    assert profile["can_prescribe"] is True


async def test_wrong_password_and_unknown_user_look_the_same(api: Api, network: Services) -> None:
    status, wrong = await api.post(
        "/api/v1/auth/login", json={"username": "dr_li", "password": "nope"}
    )
    status2, unknown = await api.post(
        "/api/v1/auth/login", json={"username": "nobody", "password": "nope"}
    )
    assert status == status2 == 401
    assert wrong["code"] == unknown["code"] == "invalid_credentials"
    assert wrong["detail"] == unknown["detail"]


async def test_repeated_failures_lock_the_account(api: Api, network: Services) -> None:
    for _ in range(network.settings.login_max_failures):
        status, _ = await api.post(
            "/api/v1/auth/login", json={"username": "gp_zhang", "password": "guess"}
        )
        assert status == 401
    # Locked, yet the answer is the one a wrong password gets: a lockout is not an oracle.
    status, body = await api.post(
        "/api/v1/auth/login", json={"username": "gp_zhang", "password": DEMO_PASSWORD}
    )
    assert status == 401
    assert body["code"] == "invalid_credentials"
    async with network.db.read() as session:
        actions = (
            await session.scalars(
                select(AuditEvent.reason).where(
                    AuditEvent.action == "auth.login", AuditEvent.outcome == "failure"
                )
            )
        ).all()
    assert actions.count("bad_credentials") == network.settings.login_max_failures - 1
    assert "bad_credentials; locked" in actions
    assert "locked" in actions
    # Other accounts are unaffected.
    assert await api.login("gp_liu")


async def test_refresh_rotates_and_logout_revokes(api: Api, network: Services) -> None:
    status, tokens = await api.post(
        "/api/v1/auth/login", json={"username": "pharmacist_chen", "password": DEMO_PASSWORD}
    )
    assert status == 200
    status, fresh = await api.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert status == 200
    assert fresh["refresh_token"] != tokens["refresh_token"]
    # (Replaying the rotated token ends the whole session: tests/security/test_sessions.py.)
    bearer = {"Authorization": f"Bearer {fresh['access_token']}"}
    status, _ = await api.post("/api/v1/auth/logout", headers=bearer)
    assert status == 204
    status, body = await api.get("/api/v1/me", headers=bearer)
    assert (status, body["code"]) == (401, "session_revoked")
    status, body = await api.post(
        "/api/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}
    )
    assert status == 401


async def test_bad_and_expired_tokens_are_refused(api: Api, network: Services) -> None:
    token = await api.login("dr_wang")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, SECRET, algorithm="HS256")
    forged = jwt.encode({**claims, "role": "platform_admin"}, "another-secret-" * 4, "HS256")
    for bad, code in [
        (expired, "token_expired"),
        (forged, "token_invalid"),
        ("not-a-jwt", "token_invalid"),
        (token + "x", "token_invalid"),
    ]:
        status, body = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {bad}"})
        assert (status, body["code"]) == (401, code), bad
    status, body = await api.get("/api/v1/me", headers={"Authorization": f"Basic {token}"})
    assert status == 401


async def test_password_change_ends_every_session(api: Api, network: Services) -> None:
    first = await api.login("patient_wang")
    second = await api.login("patient_wang")
    status, body = await api.post(
        "/api/v1/auth/password",
        headers={"Authorization": f"Bearer {second}"},
        json={"current_password": DEMO_PASSWORD, "new_password": "a-much-better-one"},
    )
    assert status == 204, body
    for token in (first, second):
        status, body = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert (status, body["code"]) == (401, "session_revoked")
    status, _ = await api.post(
        "/api/v1/auth/login", json={"username": "patient_wang", "password": DEMO_PASSWORD}
    )
    assert status == 401
    assert await api.login("patient_wang", "a-much-better-one")


async def test_idle_session_is_logged_off(api: Api, network: Services) -> None:
    token = await api.login("dr_zhao")
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(AuthSession).values(
                last_seen_at=utcnow()
                - timedelta(seconds=network.settings.session_idle_timeout_seconds + 5)
            )
        )
    status, body = await api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert (status, body["code"]) == (401, "session_idle")


async def test_totp_enrolment_then_required_at_login(api: Api, network: Services) -> None:
    token = await api.login("dr_sun")
    bearer = {"Authorization": f"Bearer {token}"}
    again = {"current_password": DEMO_PASSWORD}  # enrolment asks for the password again
    status, setup = await api.post("/api/v1/auth/totp/setup", headers=bearer, json=again)
    assert status == 200
    assert setup["otpauth_uri"].startswith("otpauth://totp/Yihao:dr_sun?")
    status, body = await api.post(
        "/api/v1/auth/totp/confirm", headers=bearer, json={"code": "000000", **again}
    )
    assert status == 422 and body["errors"][0]["field"] == "code"
    status, _ = await api.post(
        "/api/v1/auth/totp/confirm",
        headers=bearer,
        json={"code": totp_code(setup["secret"]), **again},
    )
    assert status == 204
    status, body = await api.post(
        "/api/v1/auth/login", json={"username": "dr_sun", "password": DEMO_PASSWORD}
    )
    assert (status, body["code"]) == (401, "totp_required")
    status, body = await api.post(
        "/api/v1/auth/login",
        json={"username": "dr_sun", "password": DEMO_PASSWORD, "totp": "123456"},
    )
    assert (status, body["code"]) == (401, "invalid_totp")
    # The confirming code was used; the next time step's code (accepted for drift) is new.
    status, body = await api.post(
        "/api/v1/auth/login",
        json={
            "username": "dr_sun",
            "password": DEMO_PASSWORD,
            "totp": totp_code(setup["secret"], time.time() + 30),
        },
    )
    assert status == 200, body


async def test_role_that_requires_totp_cannot_sign_in_without_it(
    aiohttp_client,
    settings,
    backend,  # type: ignore[no-untyped-def]
) -> None:
    from server.app import create_app
    from server.core.api import SERVICES
    from server.seed import seed_demo

    app = create_app(settings.with_overrides(totp_required_roles=frozenset({"platform_admin"})))
    client = await aiohttp_client(app)
    await seed_demo(app[SERVICES])
    response = await client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": DEMO_PASSWORD}
    )
    body = await response.json()
    assert (response.status, body["code"]) == (403, "totp_enrollment_required")
    uri = await app[SERVICES].auth.enrol_totp("admin")
    secret = uri.split("secret=")[1].split("&")[0]
    response = await client.post(
        "/api/v1/auth/login",
        json={"username": "admin", "password": DEMO_PASSWORD, "totp": totp_code(secret)},
    )
    assert response.status == 200
    # Roles not listed are unaffected.
    response = await client.post(
        "/api/v1/auth/login", json={"username": "gp_zhang", "password": DEMO_PASSWORD}
    )
    assert response.status == 200


async def test_login_rate_limit_per_address(
    aiohttp_client,
    settings,
    backend,  # type: ignore[no-untyped-def]
) -> None:
    from server.app import create_app

    client = await aiohttp_client(create_app(settings.with_overrides(login_rate_per_minute=3)))
    statuses = []
    for _ in range(5):
        response = await client.post("/api/v1/auth/login", json={"username": "x", "password": "y"})
        statuses.append(response.status)
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429, 429]
    assert int(response.headers["Retry-After"]) >= 1


async def test_users_cannot_see_each_others_password_hashes(api: Api, network: Services) -> None:
    status, body = await api.get("/api/v1/me", as_="dr_li")
    assert status == 200
    assert "password" not in str(body) and "totp_secret" not in body
    async with network.db.read() as session:
        stored = await session.scalar(select(User.password_hash).where(User.username == "dr_li"))
    assert stored is not None and stored.startswith("$argon2id$")
