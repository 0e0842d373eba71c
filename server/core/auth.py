"""Authentication primitives: passwords, access tokens, TOTP, the requester.

The login flow itself (lockout, sessions, refresh, revocation) lives in
``server.identity.service``; this module holds the pieces it is built from.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server.config import Settings
from server.core.errors import Unauthorized
from server.core.roles import PRACTITIONER_ROLES


@dataclass(frozen=True, slots=True)
class Requester:
    """Who is asking: established from a verified access token."""

    user_id: int
    role: str
    session_id: str
    institution_id: int | None = None
    patient_id: int | None = None

    @property
    def is_practitioner(self) -> bool:
        return self.role in PRACTITIONER_ROLES


class Passwords:
    """argon2id hashing with the configured cost."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib
        )
        # Verifying against this when the user does not exist costs the same
        # time as a real check, so timing does not reveal which usernames exist.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


class Tokens:
    """Short-lived HS256 access tokens bound to a server-side session."""

    ALGORITHM = "HS256"

    def __init__(self, settings: Settings) -> None:
        self._key = settings.secret_key
        self.ttl = settings.access_token_ttl_seconds

    def issue(self, requester: Requester, ttl: int | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": str(requester.user_id),
            "sid": requester.session_id,
            "role": requester.role,
            "iat": now,
            "exp": now + (self.ttl if ttl is None else ttl),
            "typ": "access",
        }
        if requester.institution_id is not None:
            claims["inst"] = requester.institution_id
        if requester.patient_id is not None:
            claims["pat"] = requester.patient_id
        return jwt.encode(claims, self._key, algorithm=self.ALGORITHM)

    def decode(self, token: str) -> Requester:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.ALGORITHM],
                options={"require": ["sub", "sid", "exp", "role", "typ"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the access token has expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("the access token is not valid", code="token_invalid") from None
        if claims.get("typ") != "access" or not str(claims["sub"]).isdigit():
            raise Unauthorized("the access token is not valid", code="token_invalid")
        return Requester(
            user_id=int(claims["sub"]),
            role=str(claims["role"]),
            session_id=str(claims["sid"]),
            institution_id=claims.get("inst"),
            patient_id=claims.get("pat"),
        )


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
