"""Re-authentication before a live session (互联网诊疗监管细则: doctors authenticate before each).

A practitioner proves it is still them by one of: the password (plus the TOTP
code when the account has TOTP), a TOTP code alone, or a login younger than
``consult_reauth_seconds``. This adapter reads the login tables through the
auth service's database; it belongs in ``AuthService`` once identity grows a
``reauthenticate`` call.
"""

from __future__ import annotations

from datetime import timedelta

from server.core.auth import Requester, verify_totp
from server.core.db import utcnow
from server.core.errors import Unauthorized
from server.identity.models import AuthSession, User
from server.identity.service import AuthService


async def check_reauthenticated(
    auth: AuthService,
    requester: Requester,
    *,
    password: str | None,
    totp: str | None,
    fresh_seconds: int,
) -> str:
    """Return how the practitioner proved themselves; raise 401 otherwise (audited)."""
    async with auth.db.read() as session:
        user = await session.get(User, requester.user_id)
        login = await session.get(AuthSession, requester.session_id)
    if user is None or login is None or not user.active:
        raise Unauthorized("the account or session is gone", code="session_revoked")
    method: str | None = None
    if password is not None:
        ok = auth.passwords.verify(user.password_hash, password)
        if ok and user.totp_enabled and user.totp_secret:
            ok = totp is not None and verify_totp(user.totp_secret, totp)
        method = "password" if ok else None
    elif totp is not None:
        ok = bool(user.totp_enabled and user.totp_secret and verify_totp(user.totp_secret, totp))
        method = "totp" if ok else None
    elif utcnow() - login.created_at <= timedelta(seconds=fresh_seconds):
        return "fresh_login"
    else:
        raise Unauthorized(
            f"confirm it is you: send password (and totp) or totp; a login younger than "
            f"{fresh_seconds} s also counts",
            code="reauth_required",
        )
    if method is None:
        await auth.audit.record_alone(
            "consult.reauth", actor=requester, outcome="failure", reason="bad_credentials"
        )
        raise Unauthorized("the password or code is wrong", code="reauth_failed")
    return method
