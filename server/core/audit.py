"""The audit log: append-only, each entry chained to the previous by SHA-256.

Entries are written in the same transaction as the action they record, so an
action without its audit entry cannot exist. A one-row head table holds the
last sequence number and hash; appending locks that row, so the chain is a
single line even with many writers on many nodes. ``record`` stages the entry
on the transaction; the transaction's entries are chained in one go just
before it commits, after its stream appends (``server/core/db.py``), so the
head is locked once, last, and only until the commit. ``verify`` walks the chain
and names the first entry that was edited, deleted or moved.

The chain alone cannot stop someone who can write to the database: they can
edit an entry and recompute every hash after it. Checkpoints
(``server/core/checkpoints.py``) sign the head with a key kept outside the
database; ``verify`` takes their hashes as ``expected`` and names a rewritten
entry even when the chain around it was recomputed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core import context
from server.core.auth import Requester
from server.core.canonical import canonical_json_v1
from server.core.db import AUDIT, Base, Database, Tx, UTCDateTime, utcnow

logger = logging.getLogger(__name__)

GENESIS = "0" * 64


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    actor_role: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    patient_id: Mapped[int | None] = mapped_column(Integer, index=True)
    resource: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(500))
    ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)

    def content(self) -> dict[str, Any]:
        """The fields the hash covers (everything but the hash itself)."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "actor_user_id": self.actor_user_id,
            "actor_role": self.actor_role,
            "action": self.action,
            "outcome": self.outcome,
            "patient_id": self.patient_id,
            "resource": self.resource,
            "reason": self.reason,
            "ip": self.ip,
            "request_id": self.request_id,
            "details": self.details,
            "prev_hash": self.prev_hash,
        }


def entry_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_json_v1(event.content())).hexdigest()


@dataclass(frozen=True)
class Expected:
    """An entry's hash as signed outside the database, and what signed it (for messages)."""

    hash: str
    name: str  # "signed checkpoint 3 of 2026-12-01T22:40:00+00:00"
    since: str = ""  # where the change lies, when an earlier checkpoint still matches


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    broken_at: int | None = None
    problem: str | None = None


PatientOf = Callable[[int], Awaitable[int | None]]


def patient_lookup(db: Database, id_column: Any, patient_column: Any) -> PatientOf:
    """A resolver for :attr:`AuditLog.patient_resolvers`: the patient of an object's row."""

    async def lookup(object_id: int) -> int | None:
        async with db.read() as session:
            found = await session.scalar(select(patient_column).where(id_column == object_id))
        return None if found is None else int(found)

    return lookup


async def _chain(session: AsyncSession, events: list[AuditEvent]) -> None:
    """Link ``events`` (in order) to the end of the chain: the head is locked once."""
    head = (
        await session.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(seq=AuditHead.seq + len(events))
            .returning(AuditHead.seq, AuditHead.hash)
        )
    ).one()
    prev_hash = head.hash
    for seq, event in enumerate(events, start=head.seq - len(events) + 1):
        event.seq, event.prev_hash = seq, prev_hash
        event.hash = prev_hash = entry_hash(event)
    session.add_all(events)
    await session.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=prev_hash))


async def _flush_audit(tx: Tx, events: list[Any]) -> None:
    await _chain(tx.session, events)


class AuditLog:
    def __init__(
        self, db: Database, patient_resolvers: Mapping[str, PatientOf] | None = None
    ) -> None:
        self.db = db
        # Object id parameter (``consult_id``…) → the patient the object is about; declared
        # by the capabilities, so a refusal on any route or event names the patient.
        self.patient_resolvers: Mapping[str, PatientOf] = dict(patient_resolvers or {})

    async def patient_of(self, refs: Mapping[str, Any]) -> int | None:
        """The patient a refused request was about, from its path or payload ids."""
        direct = refs.get("patient_id")
        if isinstance(direct, int | str) and str(direct).isdigit():
            return int(direct)
        for key, resolve in self.patient_resolvers.items():
            value = refs.get(key)
            if isinstance(value, int | str) and str(value).isdigit() and len(str(value)) < 19:
                return await resolve(int(value))
        return None

    async def record(
        self,
        session: AsyncSession,
        action: str,
        *,
        actor: Requester | None = None,
        actor_user_id: int | None = None,
        outcome: str = "success",
        patient_id: int | None = None,
        resource: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Append an entry inside the caller's transaction.

        The entry is chained (given its ``seq``, ``prev_hash`` and ``hash``) when the
        transaction flushes, just before commit; until then those are unset.
        """
        event = AuditEvent(
            at=utcnow(),
            actor_user_id=actor.user_id if actor else actor_user_id,
            actor_role=actor.role if actor else None,
            action=action,
            outcome=outcome,
            patient_id=patient_id,
            resource=resource,
            reason=reason,
            ip=context.client_ip.get(),
            request_id=context.request_id.get(),
            details=details or {},
        )
        tx = Tx.of(session)
        if tx is None:  # a session of its own making: chain the entry now
            await _chain(session, [event])
        else:
            tx.stage(AUDIT, "", event, _flush_audit)
        return event

    async def record_alone(self, action: str, **kwargs: Any) -> None:
        """Append an entry in a short transaction of its own that does nothing else
        (failures, denials, audited reads)."""
        async with self.db.transaction() as tx:
            await self.record(tx.session, action, **kwargs)

    async def head(self, session: AsyncSession) -> tuple[int, str]:
        """The last entry's sequence number and hash, as this session sees them (read only).

        What a checkpoint signs; it takes no lock, so checkpointing never waits for appends.
        """
        head = await session.get(AuditHead, 1)
        return (head.seq, head.hash) if head is not None else (0, GENESIS)

    async def verify(
        self,
        batch: int = 1000,
        *,
        after: tuple[int, str] = (0, GENESIS),
        expected: Mapping[int, Expected] | None = None,
    ) -> VerifyResult:
        """Walk the chain from the entry after ``after`` (seq, hash) to the head.

        ``expected`` holds hashes signed outside the database (checkpoints): an entry
        whose hash differs was rewritten even if the chain was recomputed around it.
        The head is read first, so entries appended while the walk runs are left out.
        """
        expected = expected or {}
        expected_seq, expected_prev = after[0] + 1, after[1]
        checked = 0
        async with self.db.read() as session:
            head = await session.get(AuditHead, 1)
            # No head row: walk everything, and the check at the end names the loss.
            head_seq, head_hash = (head.seq, head.hash) if head else (2**62, "")
            last = after[0]
            while True:
                rows = (
                    await session.scalars(
                        select(AuditEvent)
                        .where(AuditEvent.seq > last, AuditEvent.seq <= head_seq)
                        .order_by(AuditEvent.seq)
                        .limit(batch)
                    )
                ).all()
                for row in rows:
                    if row.seq != expected_seq:
                        return VerifyResult(
                            False, checked, expected_seq, f"entry {expected_seq} is missing"
                        )
                    if row.prev_hash != expected_prev:
                        return VerifyResult(
                            False, checked, row.seq, "does not follow the entry before it"
                        )
                    if entry_hash(row) != row.hash:
                        return VerifyResult(False, checked, row.seq, "content was changed")
                    signed = expected.get(row.seq)
                    if signed is not None and signed.hash != row.hash:
                        return VerifyResult(
                            False, checked, row.seq, f"differs from {signed.name}{signed.since}"
                        )
                    expected_prev, expected_seq, checked = row.hash, row.seq + 1, checked + 1
                    last = row.seq
                if len(rows) < batch:
                    break
        if head_seq != expected_seq - 1 or head_hash != expected_prev:
            return VerifyResult(False, checked, expected_seq, "entries after this were removed")
        beyond = [seq for seq in expected if seq > head_seq]
        if beyond:
            signed = expected[max(beyond)]
            return VerifyResult(
                False,
                checked,
                expected_seq,
                f"entries after this were removed: {signed.name} covers entry {max(beyond)}",
            )
        return VerifyResult(True, checked)
