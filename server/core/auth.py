"""Authentication primitives: passwords, access tokens, TOTP, the requester.

The login flow itself (lockout, sessions, refresh, revocation) lives in
``server.identity.service``; this module holds the pieces it is built from.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


# The threads that hash and verify passwords are named so (a test checks the loop's is not).
PASSWORD_THREAD_PREFIX = "yihao-passwords"
# How much lower the password threads' CPU priority is than the event loop's (Linux
# ``nice`` per thread): when logins keep every core busy, serving requests comes first.
PASSWORD_THREAD_NICENESS = 10


def _lower_priority() -> None:
    """Run in each password thread as it starts (Linux: a thread's own nice value)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PASSWORD_THREAD_NICENESS)


class Passwords:
    """argon2id hashing with the configured cost, in a bounded pool of threads.

    argon2-cffi releases the GIL while it hashes, so a login costs the event loop nothing
    but the hand-off: other requests go on being served meanwhile. At most
    ``password_workers`` run at once (each holds ``argon2_memory_kib``); more wait their turn.
    The threads run at a lower CPU priority than the event loop, so logins that saturate
    the cores slow down other logins, not every other request.
    Callers hash before opening a transaction and verify outside one, never inside.
    """

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib
        )
        # Threads start on first use; an app that never hashes starts none.
        self._pool = ThreadPoolExecutor(
            max_workers=settings.password_workers,
            thread_name_prefix=PASSWORD_THREAD_PREFIX,
            initializer=_lower_priority,
        )
        # Verifying against this when the user does not exist costs the same
        # time as a real check, so timing does not reveal which usernames exist.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._hasher.hash, password
        )

    async def verify(self, stored: str | None, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._verify, stored, password
        )

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def thread_names(self) -> list[str]:
        """The names of the threads that hashed or verified so far (none before the first)."""
        return [thread.name for thread in self._pool._threads]

    def close(self) -> None:
        """Let the pool's threads end once idle (hashes under way still finish)."""
        self._pool.shutdown(wait=False, cancel_futures=False)

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


class Tokens:
    """Short-lived HS256 access tokens bound to a server-side session."""

    ALGORITHM = "HS256"

    # Verified tokens remembered (token → requester, expiry): a client sends the same
    # token on every request for its lifetime, and checking its HMAC and claims again
    # would give the same answer until it expires. Cleared whole when full.
    MAX_REMEMBERED = 50_000

    def __init__(self, settings: Settings) -> None:
        self._key = settings.secret_key
        self.ttl = settings.access_token_ttl_seconds
        self._verified: dict[str, tuple[Requester, int]] = {}

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
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]
        requester, expires = self._decode(token)
        if len(self._verified) >= self.MAX_REMEMBERED:
            self._verified.clear()
        self._verified[token] = (requester, expires)
        return requester

    def _decode(self, token: str) -> tuple[Requester, int]:
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
        requester = Requester(
            user_id=int(claims["sub"]),
            role=str(claims["role"]),
            session_id=str(claims["sid"]),
            institution_id=claims.get("inst"),
            patient_id=claims.get("pat"),
        )
        return requester, int(claims["exp"])


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
