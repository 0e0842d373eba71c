"""Idempotency keys: a write retried with the same ``Idempotency-Key`` is done once.

Every authenticated write operation (POST, PUT, PATCH, DELETE under ``/api/v1``) takes an
optional ``Idempotency-Key`` header, applied by :func:`server.core.api.make_view` through
:meth:`Idempotency.run`, never per route. The key belongs to the user who sent it; the
request's fingerprint is its method, path, query and canonical body (an HMAC under the
server's secret, since a body may hold a password).

Exactly once, not usually once: the key's row is written in the same transaction as the
operation's first write (:data:`server.core.db.before_write_commit`), under a unique
constraint on (user, key). A concurrent duplicate's insert loses, its transaction rolls
back, and it answers from the row. After the handler answers, the answer (status and
JSON body) is stored on the row, and a repeat replays it with ``Idempotent-Replayed:
true``. What a repeat meets:

- the key unknown: the operation runs (an operation that wrote nothing stores nothing, so a
  refusal is not remembered and a retry runs it afresh);
- the answer stored, same fingerprint: that answer again;
- a different fingerprint: 422 ``idempotency_key_reused``;
- the row without an answer (the first request still running, or its node died between
  the commit and the answer): 409 ``idempotency_in_progress`` with ``Retry-After``; never
  the operation again.

A repeat runs the handler up to its first write (its checks read the current state); a
refusal there is answered from the row when the key is taken, so a retry of "accept"
does not turn into "already accepted" — for ``idempotency_replay_seconds`` (60, a
client's retries), and never for a refusal of access (401, 403, 404): who may see the
answer is decided afresh, so a requester who lost access, or who asks long after, hears
the refusal, not the stored answer. Operations that take the key themselves
(prescribing) are declared ``idempotency="own"``; ones whose answer is a secret not to be
kept (a TOTP secret, a presence code) ``"none"``. Rows older than
``idempotency_keep_hours`` are purged by the ``idempotency.purge`` job.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from server.core import jsonlimits
from server.core.canonical import canonical_json_v1
from server.core.db import Base, Database, Tx, UTCDateTime, before_write_commit, rowcount, utcnow
from server.core.errors import Conflict, ValidationFailed, YihaoError

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 100
# How long a client waits before asking again about a key whose first request is running.
RETRY_AFTER_SECONDS = 1
JSON_TYPES = frozenset({"application/json", "application/problem+json"})
# Refusals about the requester's access, which a stored answer never overrides.
ACCESS_REFUSALS = frozenset({401, 403, 404})


class IdempotencyKey(Base):
    """One user's key: the request it was first used for, and (once given) its answer."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "key"),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)
    key: Mapped[str] = mapped_column(String(MAX_KEY), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # None until the answer is stored (the request is running, or its node died).
    status: Mapped[int | None] = mapped_column(Integer)
    # The JSON answer as sent (None for an answer without a body, 204).
    body: Mapped[str | None] = mapped_column(Text)


CLAIM = insert(IdempotencyKey).values(
    user_id=bindparam("user_id"),
    key=bindparam("key"),
    fingerprint=bindparam("fingerprint"),
    created_at=bindparam("created_at"),
)
ANSWER = (
    update(IdempotencyKey)
    .where(IdempotencyKey.user_id == bindparam("uid"), IdempotencyKey.key == bindparam("k"))
    .values(status=bindparam("status"), body=bindparam("body"))
)
LOOKUP = select(
    IdempotencyKey.fingerprint,
    IdempotencyKey.status,
    IdempotencyKey.body,
    IdempotencyKey.created_at,
).where(IdempotencyKey.user_id == bindparam("user_id"), IdempotencyKey.key == bindparam("key"))


def key_of(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key`` (1 to 100 printable ASCII characters), or None."""
    key = request.headers.get(HEADER)
    if key is not None and not (1 <= len(key) <= MAX_KEY and key.isascii() and key.isprintable()):
        raise ValidationFailed.field(HEADER, "1 to 100 printable ASCII characters")
    return key


class KeyTaken(Conflict):
    """Raised inside a unit of work whose key another request holds: it rolls back."""

    def __init__(self) -> None:
        super().__init__(
            "a request with this Idempotency-Key is being answered", code="idempotency_in_progress"
        )


@dataclass
class Claim:
    """The key of the request being served, and where its row stands."""

    user_id: int
    key: str
    fingerprint: str
    written: bool = False  # our row committed, with the operation's first write
    taken: bool = False  # another request's row holds the key


class Idempotency:
    def __init__(self, db: Database, secret: str, keep_hours: float, replay_seconds: float) -> None:
        self.db = db
        self._secret = secret.encode()
        self.keep = timedelta(hours=keep_hours)
        self.replay_window = timedelta(seconds=replay_seconds)

    def claim(self, user_id: int, key: str, method: str, path: str, body: Any, query: Any) -> Claim:
        """The key with the fingerprint of this request (method, path, query, body)."""
        request = canonical_json_v1([method, path, _plain(query), _plain(body)])
        fingerprint = hmac.new(self._secret, request, hashlib.sha256).hexdigest()
        return Claim(user_id, key, fingerprint)

    async def run(
        self,
        claim: Claim,
        instance: str,
        answer: Callable[[], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """``answer()`` (the operation) at most once for this key; a repeat is answered
        from the key's row. ``instance`` is the path a stored problem names."""

        async def write_key(tx: Tx) -> None:
            await self._write_key(tx, claim)

        token = before_write_commit.set(write_key)
        response: web.StreamResponse | None = None
        refusal: YihaoError | None = None
        try:
            response = await answer()
        except KeyTaken:
            pass  # claim.taken: answered from the row below
        except YihaoError as error:
            if error.status >= 500:
                raise  # the row (if written) stays without an answer: 409, then reload
            refusal = error
        finally:
            before_write_commit.reset(token)
        if refusal is not None:
            if claim.written:  # refused after the operation wrote: that is its answer
                problem = jsonlimits.dumps_bytes(refusal.to_problem(instance))
                await self._store(claim, refusal.status, problem)
                raise refusal
            # Access is decided afresh on every request: a repeat refused for who is asking
            # (signed out, no longer allowed, the object out of reach) hears the refusal,
            # never the answer stored when it was allowed.
            if refusal.status in ACCESS_REFUSALS:
                raise refusal
            # A refusal that wrote nothing is not remembered, unless the key was taken
            # meanwhile: a repeat refused because the first request already did it — within
            # the client's retries (the stored answer is what the operation said then; what
            # it would show now is for a fresh read to say).
            replay = await self._answer_if_known(claim, within=self.replay_window)
            if replay is None:
                raise refusal
            return replay
        if claim.taken or response is None:
            return await self._answer_from_row(claim)
        if claim.written:
            body = _storable(response)
            if body is not None:
                await self._store(claim, response.status, body or None)
        return response

    async def _write_key(self, tx: Tx, claim: Claim) -> None:
        if claim.written or claim.taken:
            return
        params = {
            "user_id": claim.user_id,
            "key": claim.key,
            "fingerprint": claim.fingerprint,
            "created_at": utcnow(),
        }
        try:
            await tx.session.execute(CLAIM, params)
        except IntegrityError:
            claim.taken = True
            raise KeyTaken() from None

        async def committed() -> None:
            claim.written = True

        # First among the after-commit callbacks: set before any of them can fail.
        tx.after_commit.insert(0, committed)

    async def _store(self, claim: Claim, status: int, body: bytes | None) -> None:
        params = {
            "uid": claim.user_id,
            "k": claim.key,
            "status": status,
            "body": body.decode() if body is not None else None,
        }
        try:
            async with self.db.transaction() as tx:
                await tx.session.execute(ANSWER, params)
        except Exception:
            # The operation is done; a repeat will hear 409 until the key expires.
            logger.exception("could not store an idempotent answer")

    async def _answer_if_known(
        self, claim: Claim, within: timedelta | None = None
    ) -> web.Response | None:
        """The key's stored answer (None: no row, or one older than ``within``)."""
        async with self.db.read() as session:
            row = (
                await session.execute(LOOKUP, {"user_id": claim.user_id, "key": claim.key})
            ).one_or_none()
        if row is None or (within is not None and utcnow() - row.created_at > within):
            return None
        if row.fingerprint != claim.fingerprint:
            raise ValidationFailed(
                f"this {HEADER} was used for a different request",
                code="idempotency_key_reused",
                errors=[{"field": HEADER, "reason": "used for a different request"}],
            )
        if row.status is None:
            raise Conflict(
                f"the first request with this {HEADER} has not been answered yet; retry in a "
                "moment, and if this persists, reload the object: the request was done",
                code="idempotency_in_progress",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        headers = {REPLAYED: "true"}
        if row.body is None:
            return web.Response(status=row.status, headers=headers)
        content_type = "application/problem+json" if row.status >= 400 else "application/json"
        return web.Response(
            status=row.status, body=row.body.encode(), content_type=content_type, headers=headers
        )

    async def _answer_from_row(self, claim: Claim) -> web.Response:
        answer = await self._answer_if_known(claim)
        if answer is None:  # the row that took the key rolled back since: ask again
            raise Conflict(
                f"a request with this {HEADER} was being answered; retry in a moment",
                code="idempotency_in_progress",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return answer

    async def purge(self, tick: int = 0) -> None:
        """Delete the keys older than ``idempotency_keep_hours`` (the purge job's tick)."""
        cutoff = utcnow() - self.keep
        async with self.db.transaction() as tx:
            result = await tx.session.execute(
                delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff)
            )
        purged = rowcount(result)
        if purged:
            logger.info("idempotency keys purged", extra={"count": purged})


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if dump is not None else value


def _storable(response: web.StreamResponse) -> bytes | None:
    """The body of a JSON (or empty) answer, b"" for none; None for a file or stream."""
    if not isinstance(response, web.Response):
        return None
    body = response.body
    if body is None or body == b"":
        return b""
    if isinstance(body, bytes) and response.content_type in JSON_TYPES:
        return body
    return None
