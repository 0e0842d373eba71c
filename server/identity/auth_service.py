"""Logins and sessions: argon2id passwords, lockout, TOTP, refresh and revocation, idle logoff.

Every sign-in, refusal and session end is audited; an ended session reaches every
node (:mod:`server.core.sessions`) and closes its sockets there.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, cast, get_args

from sqlalchemy import Table, bindparam, or_, select, update

from server.config import Settings
from server.core.audit import AuditLog
from server.core.auth import (
    Passwords,
    Requester,
    Tokens,
    hash_refresh_token,
    new_refresh_token,
)
from server.core.db import Database, Tx, utcnow
from server.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)
from server.core.ratelimit import RateLimiter, RateLimits
from server.core.sessions import CachedSession, SessionEnds
from server.identity import schemas
from server.identity.models import (
    AuthSession,
    RotatedRefresh,
    User,
)
from server.identity.service import LAST_SEEN_RESOLUTION, check_may_manage, user_out, user_query
from server.identity.totp import new_totp_secret, totp_step, totp_uri

logger = logging.getLogger(__name__)

# Noted activity (last_seen_at) is written this long after the request that noted it,
# in one statement for every session noted meanwhile: never in a request's path.
LAST_SEEN_FLUSH_SECONDS = 1.0


class AuthService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        passwords: Passwords,
        tokens: Tokens,
        ends: SessionEnds | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        self.passwords = passwords
        self.tokens = tokens
        self.ends = ends or SessionEnds(
            settings.redis_channel, "local", settings.session_check_seconds * 4
        )
        self.cache = self.ends.cache
        # GET /api/v1/me's answer per user, kept as long as a session entry (see me()).
        self._profiles = self.cache.profiles
        # Sessions whose activity is noted but not yet written (id → when), and the
        # write that is scheduled for them.
        self._seen: dict[str, datetime] = {}
        self._seen_flush: asyncio.TimerHandle | None = None
        # Background work (activity writes, cache refreshes), awaited at shutdown.
        self._seen_tasks: set[asyncio.Task[None]] = set()
        self._refreshing: set[str] = set()
        limits = limits or RateLimits()
        self.login_limit = limits.limiter("login", settings.login_rate_per_minute)
        self.refresh_limit = limits.limiter("refresh", settings.login_rate_per_minute * 2)

    async def _check_rate(self, limiter: RateLimiter, ip: str | None) -> None:
        key = ip or "unknown"
        if not await limiter.allow(key):
            retry = await limiter.retry_after(key)
            raise TooManyRequests(
                "too many attempts from this address; wait and retry",
                headers={"Retry-After": str(retry)},
            )

    async def login(self, data: schemas.LoginRequest, ip: str | None) -> schemas.TokenResponse:
        await self._check_rate(self.login_limit, ip)
        async with self.db.read() as session:
            user = await session.scalar(select(User).where(User.username == data.username))
        # The password is checked even for a locked or unknown account: the same work, and
        # the same answer, whichever it is (no oracle for which usernames exist or are locked).
        password_ok = await self.passwords.verify(
            user.password_hash if user else None, data.password
        )
        if user is not None and self._locked(user):
            await self.audit.record_alone(
                "auth.login", actor_user_id=user.id, outcome="failure", reason="locked"
            )
            raise self._invalid_credentials()
        if user is None or not password_ok or not user.active:
            await self._record_failure(user, "bad_credentials")
            raise self._invalid_credentials()
        if user.totp_enabled and user.totp_secret:
            if data.totp is None:
                raise Unauthorized("this account needs a TOTP code", code="totp_required")
            if not await self._accept_totp(user, data.totp):
                await self._record_failure(user, "bad_totp")
                raise Unauthorized("the TOTP code is wrong or was used", code="invalid_totp")
        elif user.role in self.settings.totp_required_roles:
            await self.audit.record_alone(
                "auth.login", actor_user_id=user.id, outcome="failure", reason="totp_not_enrolled"
            )
            raise Forbidden(
                "this role must sign in with a second factor; ask an administrator to enrol "
                "TOTP for the account (yihao user totp --username …)",
                code="totp_enrollment_required",
            )
        return await self._open_session(user, data.password)

    @staticmethod
    def _invalid_credentials() -> Unauthorized:
        return Unauthorized("wrong username or password", code="invalid_credentials")

    @staticmethod
    def _locked(user: User) -> bool:
        return user.locked_until is not None and user.locked_until > utcnow()

    async def _refuse_if_locked(self, user: User, action: str) -> None:
        """For a signed-in user (re-authentication): saying the account is locked leaks nothing."""
        if not self._locked(user):
            return
        assert user.locked_until is not None
        await self.audit.record_alone(
            action, actor_user_id=user.id, outcome="failure", reason="locked"
        )
        retry = int((user.locked_until - utcnow()).total_seconds()) + 1
        raise Forbidden(
            "the account is locked after repeated failed sign-ins; try again later",
            code="account_locked",
            headers={"Retry-After": str(retry)},
        )

    async def _accept_totp(self, user: User, code: str) -> bool:
        """Accept a code at most once: its time step must be newer than the last one accepted."""
        assert user.totp_secret is not None
        step = totp_step(user.totp_secret, code)
        if step is None:
            return False
        async with self.db.transaction() as tx:
            # Conditional, so two requests racing with the same code cannot both pass.
            result = await tx.session.execute(
                update(User)
                .where(
                    User.id == user.id,
                    or_(User.totp_last_step.is_(None), User.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
        return bool(getattr(result, "rowcount", 0))

    async def reauthenticate(
        self,
        requester: Requester,
        *,
        password: str | None,
        totp: str | None,
        fresh_seconds: int,
        action: str,
    ) -> str:
        """Confirm a signed-in practitioner is still them (before a live consult session).

        By the password (plus the TOTP code when the account has TOTP), a TOTP code alone,
        or a login younger than ``fresh_seconds``. Returns how; a wrong password or code is
        ``401 reauth_failed``, counted with failed logins, so guessing locks the account
        like guessing at the login does. A TOTP code counts once, here as at the login.
        """
        async with self.db.read() as session:
            user = await session.get(User, requester.user_id)
            login = await session.get(AuthSession, requester.session_id)
        if user is None or login is None or not user.active or login.revoked_at is not None:
            raise Unauthorized("the account or session is gone", code="session_revoked")
        await self._refuse_if_locked(user, action)
        method: str | None = None
        if password is not None:
            ok = await self.passwords.verify(user.password_hash, password)
            if ok and user.totp_enabled and user.totp_secret:
                ok = totp is not None and await self._accept_totp(user, totp)
            method = "password" if ok else None
        elif totp is not None:
            ok = bool(user.totp_enabled and user.totp_secret) and await self._accept_totp(
                user, totp
            )
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
            await self._record_failure(user, "bad_credentials", action)
            raise Unauthorized("the password or code is wrong", code="reauth_failed")
        if user.failed_logins:
            async with self.db.transaction() as tx:
                await tx.session.execute(
                    update(User).where(User.id == user.id).values(failed_logins=0)
                )
        return method

    async def _record_failure(
        self, user: User | None, reason: str, action: str = "auth.login"
    ) -> None:
        async with self.db.transaction() as tx:
            if user is not None:
                failures = user.failed_logins + 1
                values: dict[str, Any] = {"failed_logins": failures}
                if failures >= self.settings.login_max_failures:
                    values = {
                        "failed_logins": 0,
                        "locked_until": utcnow()
                        + timedelta(seconds=self.settings.login_lockout_seconds),
                    }
                    reason = f"{reason}; locked"
                await tx.session.execute(update(User).where(User.id == user.id).values(**values))
            await self.audit.record(
                tx.session,
                action,
                actor_user_id=user.id if user else None,
                outcome="failure",
                reason=reason,
            )

    async def _check_current_password(self, user: User, password: str, action: str) -> None:
        """A credential change asks for the password again; a wrong one counts as a failure."""
        await self._refuse_if_locked(user, action)
        if not await self.passwords.verify(user.password_hash, password):
            await self._record_failure(user, "bad_credentials", action)
            raise ValidationFailed.field("current_password", "is wrong")

    async def _open_session(self, user: User, password: str) -> schemas.TokenResponse:
        refresh = new_refresh_token()
        # Costs were raised since this password was set: upgrade it now we know it (hashed
        # before the transaction opens, never while it holds the database).
        rehashed = (
            await self.passwords.hash(password)
            if self.passwords.needs_rehash(user.password_hash)
            else None
        )
        now = utcnow()
        async with self.db.transaction() as tx:
            session = AuthSession(
                id=secrets.token_hex(16),
                user_id=user.id,
                refresh_hash=hash_refresh_token(refresh),
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
            )
            tx.session.add(session)
            values: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
            if rehashed is not None:
                values["password_hash"] = rehashed
            await tx.session.execute(update(User).where(User.id == user.id).values(**values))
            await self.audit.record(
                tx.session, "auth.login", actor_user_id=user.id, details={"session": session.id}
            )
        return self._token_response(user, session.id, refresh)

    def _token_response(self, user: User, session_id: str, refresh: str) -> schemas.TokenResponse:
        requester = Requester(
            user_id=user.id,
            role=user.role,
            session_id=session_id,
            institution_id=user.institution_id,
            patient_id=user.patient_id,
        )
        return schemas.TokenResponse(
            access_token=self.tokens.issue(requester),
            expires_in=self.tokens.ttl,
            refresh_token=refresh,
        )

    async def refresh(self, data: schemas.RefreshRequest, ip: str | None) -> schemas.TokenResponse:
        await self._check_rate(self.refresh_limit, ip)
        now = utcnow()
        presented = hash_refresh_token(data.refresh_token)
        invalid = Unauthorized("the refresh token is not valid", code="refresh_invalid")
        # Refusals are raised after the transaction: what they end (an idle or replayed
        # session) must be committed, not rolled back with the error.
        refusal: Unauthorized | None = None
        async with self.db.transaction() as tx:
            session = await tx.session.scalar(
                select(AuthSession).where(AuthSession.refresh_hash == presented)
            )
            user = await tx.session.get(User, session.user_id) if session else None
            if session is None:
                await self._end_replayed(tx, presented)
                refusal = invalid
            elif session.revoked_at is not None or session.expires_at <= now:
                refusal = invalid
            elif self._idle(session, now):
                await self._end_sessions(tx, [session.id], "idle")
                refusal = Unauthorized("the session ended after inactivity", code="session_idle")
            elif user is None or not user.active:
                refusal = Unauthorized("the account is disabled", code="account_disabled")
            else:
                # Rotate: the old refresh token stops working at once, and is remembered so
                # that presenting it again is recognised as a theft (see _end_replayed).
                refresh = new_refresh_token()
                tx.session.add(RotatedRefresh(refresh_hash=presented, session_id=session.id))
                session.refresh_hash = hash_refresh_token(refresh)
                session.last_seen_at = now
        if refusal is not None:
            raise refusal
        assert session is not None and user is not None
        return self._token_response(user, session.id, refresh)

    async def _end_replayed(self, tx: Tx, presented: str) -> None:
        """A rotated refresh token came back: someone holds a copy. End the whole session.

        Either the thief or the owner has the newer token; which one cannot be told, so
        both lose it (RFC 9700, refresh token rotation). The answer stays ``refresh_invalid``.
        """
        row = (
            await tx.session.execute(
                select(AuthSession.id, AuthSession.user_id)
                .join(RotatedRefresh, RotatedRefresh.session_id == AuthSession.id)
                .where(RotatedRefresh.refresh_hash == presented)
            )
        ).first()
        if row is None:
            return
        ended = await self._end_sessions(tx, [row.id], "refresh_replay")
        await self.audit.record(
            tx.session,
            "auth.refresh",
            actor_user_id=row.user_id,
            outcome="failure",
            reason="refresh_replay",
            details={"session": row.id, "ended": bool(ended)},
        )

    def _idle(self, session: AuthSession, now: Any) -> bool:
        return self._idle_since(session.last_seen_at, now)

    async def authenticate(self, token: str) -> Requester:
        """Verify an access token and that its session is still open."""
        requester = self.tokens.decode(token)
        await self.check_session(requester)
        return requester

    async def check_session(self, requester: Requester, *, fresh: bool = False) -> None:
        """The session is open, not idle, and its account active; else 401 (and it ends).

        Answered from this node's :class:`~server.core.sessions.SessionCache` when the
        session was read less than ``session_cache_seconds`` ago (an ending drops it from
        every node's cache: see server.core.sessions), else one read (the session joined
        with its user). ``fresh`` reads the database whatever the cache holds (a socket's
        periodic check, the safety net for a lost broadcast). Activity is noted at most
        once per ``LAST_SEEN_RESOLUTION`` and written after the request, in one batch.
        The idle logoff is exact: a session that looks idle here is read again (another
        node may have seen it since) before it is ended.
        """
        if self.ends.is_ended(requester.session_id):
            raise Unauthorized("the session has ended; sign in again", code="session_revoked")
        self.ends.check_marker()  # an ending by a process that could not broadcast it
        entry = None if fresh else self.cache.get(requester.session_id)
        if entry is not None and time.monotonic() - entry.read_at > self.cache.ttl / 2:
            self._refresh_ahead(requester.session_id)
        if entry is None:
            fresh = True
            entry = await self._read_session(requester.session_id)
        if entry is None or entry.revoked or entry.user_id != requester.user_id:
            raise Unauthorized("the session has ended; sign in again", code="session_revoked")
        if not entry.active:
            # Disabling ended the sessions already; this covers a row written by other means.
            await self._end_now([requester.session_id], "account_disabled")
            raise Unauthorized("the session has ended; sign in again", code="session_revoked")
        now = utcnow()
        if self._idle_since(entry.last_seen, now):
            if not fresh:
                await self.check_session(requester, fresh=True)
                return
            await self._end_now([requester.session_id], "idle")
            raise Unauthorized("the session ended after inactivity", code="session_idle")
        if now - entry.last_seen > LAST_SEEN_RESOLUTION:
            entry.last_seen = now
            self._note_seen(requester.session_id, now)

    def _refresh_ahead(self, session_id: str) -> None:
        """Past half its TTL, an entry in use is read again in the background (once at a
        time): a busy session is never read in a request's path, and the entries read
        together at a start do not all expire, and get read, in the same instant."""
        if session_id in self._refreshing:
            return
        self._refreshing.add(session_id)

        async def refresh() -> None:
            try:
                await self._read_session(session_id)
            except Exception:  # the entry expires as usual; the request path reads then
                logger.warning("could not refresh a cached session", exc_info=True)
            finally:
                self._refreshing.discard(session_id)

        task = asyncio.ensure_future(refresh())
        self._seen_tasks.add(task)
        task.add_done_callback(self._seen_tasks.discard)

    async def recheck_session(self, requester: Requester) -> None:
        """:meth:`check_session` from the database (an open socket's periodic check)."""
        await self.check_session(requester, fresh=True)

    async def _read_session(self, session_id: str) -> CachedSession | None:
        read_at = time.monotonic()
        async with self.db.read() as db_session:
            row = (
                await db_session.execute(
                    select(
                        AuthSession.user_id,
                        AuthSession.revoked_at,
                        AuthSession.last_seen_at,
                        User.active,
                    )
                    .join(User, User.id == AuthSession.user_id)
                    .where(AuthSession.id == session_id)
                )
            ).first()
        if row is None:
            return None
        last_seen = row.last_seen_at
        noted = self._seen.get(session_id)
        if noted is not None and noted > last_seen:  # noted here, not yet written
            last_seen = noted
        entry = CachedSession(
            user_id=row.user_id,
            active=bool(row.active),
            revoked=row.revoked_at is not None,
            last_seen=last_seen,
            read_at=read_at,
        )
        # An ending announced while the row was read is not undone by caching the read.
        if not self.ends.is_ended(session_id):
            self.cache.put(session_id, entry)
        return entry

    def _idle_since(self, last_seen: datetime, now: datetime) -> bool:
        idle = self.settings.session_idle_timeout_seconds
        return bool(idle) and (now - last_seen).total_seconds() > idle

    def _note_seen(self, session_id: str, when: datetime) -> None:
        self._seen[session_id] = when
        if self._seen_flush is None:
            self._seen_flush = asyncio.get_running_loop().call_later(
                LAST_SEEN_FLUSH_SECONDS, self._start_seen_flush
            )

    def _start_seen_flush(self) -> None:
        self._seen_flush = None
        task = asyncio.ensure_future(self.flush_seen())
        self._seen_tasks.add(task)
        task.add_done_callback(self._seen_tasks.discard)

    async def flush_seen(self) -> None:
        """Write the noted activity: one UPDATE for every session noted since the last one.

        Never moves ``last_seen_at`` back (another node may have written a later time).
        """
        if self._seen_flush is not None:
            self._seen_flush.cancel()
            self._seen_flush = None
        if not self._seen:
            return
        pending, self._seen = self._seen, {}
        table = cast(Table, AuthSession.__table__)
        statement = (
            update(table)  # Core: one executemany for all, not an ORM update per row
            .where(table.c.id == bindparam("b_id"), table.c.last_seen_at < bindparam("b_seen"))
            .values(last_seen_at=bindparam("b_seen"))
        )
        try:
            async with self.db.transaction() as tx:
                connection = await tx.session.connection()
                await connection.execute(
                    statement, [{"b_id": sid, "b_seen": at} for sid, at in pending.items()]
                )
        except Exception:
            # Activity not written is only a session that may be logged off a little early.
            logger.warning("could not write session activity", exc_info=True)

    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx`` (after the database's): noted activity is written at
        shutdown, and the password threads are let go."""
        yield
        await self.flush_seen()
        if self._seen_tasks:
            await asyncio.gather(*self._seen_tasks, return_exceptions=True)
        self.passwords.close()

    async def _end_sessions(self, tx: Tx, where: Any, reason: str) -> list[str]:
        """End the open sessions matching ``where`` (ids, or a condition); announced after commit.

        Every way a session ends goes through here, so every one of them closes the
        session's sockets on every node (see server.core.sessions).
        """
        condition = AuthSession.id.in_(where) if isinstance(where, list) else where
        ids = list(
            await tx.session.scalars(
                select(AuthSession.id).where(condition, AuthSession.revoked_at.is_(None))
            )
        )
        if ids:
            await tx.session.execute(
                update(AuthSession)
                .where(AuthSession.id.in_(ids), AuthSession.revoked_at.is_(None))
                .values(revoked_at=utcnow(), revoke_reason=reason)
            )

            async def announce() -> None:
                await self.ends.announce(ids, reason)

            tx.on_commit(announce)
        return ids

    async def _end_now(self, session_ids: list[str], reason: str) -> list[str]:
        async with self.db.transaction() as tx:
            return await self._end_sessions(tx, session_ids, reason)

    async def end_idle_sessions(self, tick: int = 0) -> None:
        """The idle logoff (a job): end sessions idle too long, so their sockets close too."""
        idle = self.settings.session_idle_timeout_seconds
        if not idle:
            return
        # Activity noted here but not written yet keeps its session open.
        await self.flush_seen()
        cutoff = utcnow() - timedelta(seconds=idle)
        async with self.db.transaction() as tx:
            await self._end_sessions(tx, AuthSession.last_seen_at < cutoff, "idle")

    async def logout(self, requester: Requester) -> None:
        async with self.db.transaction() as tx:
            await self._end_sessions(tx, [requester.session_id], "logout")
            await self.audit.record(tx.session, "auth.logout", actor=requester)

    async def change_password(self, requester: Requester, data: schemas.PasswordChange) -> None:
        user = await self._own_account(requester)
        await self._check_current_password(user, data.current_password, "user.password_change")
        if data.new_password == data.current_password:
            raise ValidationFailed.field("new_password", "must differ from the current one")
        new_hash = await self.passwords.hash(data.new_password)
        async with self.db.transaction() as tx:
            await tx.session.execute(
                update(User)
                .where(User.id == user.id)
                .values(
                    password_hash=new_hash,
                    password_changed_at=utcnow(),
                    failed_logins=0,
                )
            )
            # Every session ends, this one included: a stolen token dies with the old password.
            await self._end_sessions(tx, AuthSession.user_id == user.id, "password_change")
            await self.audit.record(
                tx.session, "user.password_change", actor=requester, resource=f"User/{user.id}"
            )

    async def _own_account(self, requester: Requester) -> User:
        async with self.db.read() as session:
            user = await session.get(User, requester.user_id)
        if user is None:
            raise Unauthorized("the account no longer exists", code="session_revoked")
        return user

    async def setup_totp(self, requester: Requester, current_password: str) -> schemas.TotpSetup:
        user = await self._own_account(requester)
        await self._check_current_password(user, current_password, "user.totp_setup")
        async with self.db.transaction() as tx:
            pending = await tx.session.get(User, requester.user_id)
            assert pending is not None
            if pending.totp_enabled:
                raise Conflict("TOTP is already enabled", code="totp_enabled")
            pending.totp_secret = new_totp_secret()
            pending.totp_last_step = None
            return schemas.TotpSetup(
                secret=pending.totp_secret,
                otpauth_uri=totp_uri(pending.totp_secret, pending.username),
            )

    async def confirm_totp(self, requester: Requester, data: schemas.TotpConfirm) -> None:
        user = await self._own_account(requester)
        await self._check_current_password(user, data.current_password, "user.totp_enable")
        if user.totp_secret is None or user.totp_enabled:
            raise Conflict("start TOTP setup first", code="totp_not_pending")
        if not await self._accept_totp(user, data.code):
            raise ValidationFailed.field("code", "the code does not match")
        async with self.db.transaction() as tx:
            enabled = await tx.session.execute(
                update(User)
                .where(User.id == user.id, User.totp_secret == user.totp_secret)
                .values(totp_enabled=True)
            )
            if not getattr(enabled, "rowcount", 0):
                raise Conflict("TOTP setup was restarted meanwhile", code="totp_not_pending")
            tx.on_commit(self._forgetting(user.id))
            await self.audit.record(
                tx.session, "user.totp_enable", actor=requester, resource=f"User/{user.id}"
            )

    async def enrol_totp(self, username: str) -> str:
        """The operator's enrolment (CLI), for roles that must use TOTP from their first login."""
        async with self.db.transaction() as tx:
            user = await tx.session.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFound(f"no user '{username}'")
            user.totp_secret = new_totp_secret()
            user.totp_enabled = True
            user.totp_last_step = None
            tx.on_commit(self._forgetting(user.id))
            await self.audit.record(
                tx.session, "user.totp_enable", actor_user_id=None, resource=f"User/{user.id}"
            )
            return totp_uri(user.totp_secret, user.username)

    # --- account access (administrators; the CLI passes actor None) -------------------

    async def set_active(
        self, actor: Requester | None, user_ref: int | str, active: bool
    ) -> schemas.AccountState:
        """Disable (ending every session and socket of the account at once) or enable it.

        There is no deletion of accounts: the audit log and signed documents name them, so
        disabling is the deletion.
        """
        async with self.db.transaction() as tx:
            user = await self._managed_user(tx, actor, user_ref)
            ended: list[str] = []
            if not active:
                ended = await self._end_sessions(
                    tx, AuthSession.user_id == user.id, "account_disabled"
                )
            changed = user.active != active
            user.active = active
            tx.on_commit(self._forgetting(user.id))
            await self._audit_account(
                tx,
                actor,
                user,
                "user.enable" if active else "user.disable",
                {"changed": changed, "sessions_ended": len(ended)},
            )
            return self._account_state(user, len(ended))

    async def unlock(self, actor: Requester | None, user_ref: int | str) -> schemas.AccountState:
        """Lift a lockout after failed sign-ins (the failures counted so far are forgotten)."""
        async with self.db.transaction() as tx:
            user = await self._managed_user(tx, actor, user_ref)
            was_locked = self._locked(user)
            user.locked_until, user.failed_logins = None, 0
            await self._audit_account(tx, actor, user, "user.unlock", {"was_locked": was_locked})
            return self._account_state(user, 0)

    async def end_user_sessions(
        self, actor: Requester | None, user_ref: int | str
    ) -> schemas.AccountState:
        """An administrator signs an account out everywhere (a lost phone), without disabling it."""
        async with self.db.transaction() as tx:
            user = await self._managed_user(tx, actor, user_ref)
            ended = await self._end_sessions(tx, AuthSession.user_id == user.id, "admin_revoked")
            await self._audit_account(
                tx, actor, user, "user.sessions_end", {"sessions_ended": len(ended)}
            )
            return self._account_state(user, len(ended))

    async def _managed_user(self, tx: Tx, actor: Requester | None, user_ref: int | str) -> User:
        by = User.id == user_ref if isinstance(user_ref, int) else User.username == user_ref
        # Only people: the system accounts (the consult recorder) are managed by the server.
        user = await tx.session.scalar(
            select(User).where(by, User.role.in_(get_args(schemas.RoleName)))
        )
        if user is None:
            raise NotFound(f"no user {user_ref}")
        check_may_manage(actor, user)
        return user

    async def _audit_account(
        self, tx: Tx, actor: Requester | None, user: User, action: str, details: dict[str, Any]
    ) -> None:
        await self.audit.record(
            tx.session,
            action,
            actor=actor,
            resource=f"User/{user.id}",
            patient_id=user.patient_id,
            details=details,
        )

    def _account_state(self, user: User, ended: int) -> schemas.AccountState:
        return schemas.AccountState(
            user_id=user.id,
            username=user.username,
            active=user.active,
            locked=self._locked(user),
            sessions_ended=ended,
        )

    async def me(self, requester: Requester) -> schemas.UserOut:
        """The requester's account, read at most once per ``session_cache_seconds``.

        A change made on this node (enable, disable, TOTP) is seen at once; one made on
        another node within that bound (the same as the session cache's).
        """
        ttl = self.cache.ttl
        known = self._profiles.get(requester.user_id)
        if known is not None and time.monotonic() - known[0] <= ttl:
            return cast(schemas.UserOut, known[1])
        read_at = time.monotonic()
        async with self.db.read() as session:
            user = await session.scalar(user_query().where(User.id == requester.user_id))
        if user is None:
            raise Unauthorized("the account no longer exists")
        profile = user_out(user)
        if ttl > 0:
            if len(self._profiles) >= self.cache.MAX_ENTRIES:
                self.cache.clear()
            self._profiles[requester.user_id] = (read_at, profile)
        return profile

    def _forgetting(self, user_id: int) -> Any:
        async def forget() -> None:
            self._account_changed(user_id)

        return forget

    def _account_changed(self, user_id: int) -> None:
        """Forget what this node keeps of an account (its profile, its sessions' entries)."""
        self._profiles.pop(user_id, None)
        self.cache.forget_user(user_id)
