"""One lifecycle mechanism for the clinical objects that move through statuses.

A kind of object (a prescription, a referral, later a consult) declares its steps once: a
transitions table naming, for each action, the statuses it may start from, the status it
leads to, and who may take it (a guard). :meth:`Lifecycle.transition` is then the only way
a status changes:

1. the guard, when a person acts (a refusal is the capability's own 403);
2. the conditional ``UPDATE … SET status = <to> WHERE id = … AND status IN (<from>)``, so
   of two racing steps exactly one wins; the loser gets the capability's 409 problem;
3. the history row (one table per capability, since what a step records differs);
4. the step's follow-up (``then``: stream events, the capability's side effects);
5. the audit entry, last, so every write takes its locks in one order (streams, then the
   audit chain's head).

A step that is not a conditional status change (an object created in its first status, a
status set on a row already locked and checked) goes through :meth:`Lifecycle.record`,
which writes the same history row and audit entry.

Statuses are each capability's ``StrEnum``; members compare equal to the stored strings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.orm.attributes import set_committed_value

from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Tx, rowcount, utcnow


class Tracked(Protocol):
    """What the mechanism needs of a row: its id, status, patient and last change."""

    id: Any
    status: Any
    patient_id: Any
    updated_at: Any


Row = TypeVar("Row", bound=Tracked)
Guard = Callable[[Requester, Row], None]


@dataclass(frozen=True)
class Step(Generic[Row]):
    """One action of a transitions table."""

    action: str
    sources: frozenset[StrEnum]
    target: StrEnum
    guard: Guard[Row] | None = None
    # The audit entry's action, when it is not the step's own (``prescription.<audit>``).
    audit: str | None = None
    # A step that changes no status (a receipt) records this word in the history instead.
    marks: str | None = None

    def allows(self, status: str | None) -> bool:
        return status in self.sources

    @property
    def recorded(self) -> str:
        """What the history row names as the status reached."""
        return self.marks or self.target


Refusal = Callable[[Row, str, str | None], Exception]
# (row, status left, step, actor, reason, details) -> the history row to add
HistoryWriter = Callable[
    [Row, str | None, Step[Row], Requester | None, str | None, dict[str, Any]], Any
]
AuditDetails = Callable[[Row, str | None, Step[Row]], dict[str, Any]]
Then = Callable[[], Awaitable[None]]


def steps(*table: Step[Row]) -> Mapping[str, Step[Row]]:
    """A transitions table, by action."""
    return {step.action: step for step in table}


@dataclass
class Lifecycle(Generic[Row]):
    """The steps of one kind of object, and the one way to take them."""

    kind: str  # the audit actions' prefix ("prescription")
    resource: str  # "Prescription"
    model: type[Row]
    table: Mapping[str, Step[Row]]
    refuse: Refusal[Row]
    history: HistoryWriter[Row]
    audit: AuditLog
    audit_details: AuditDetails[Row] | None = None

    def step(self, action: str) -> Step[Row]:
        return self.table[action]

    def authorize(self, row: Row, action: str, actor: Requester | None) -> Step[Row]:
        """The step's guard for a person acting (the system's own steps have no guard)."""
        step = self.table[action]
        if actor is not None and step.guard is not None:
            step.guard(actor, row)
        return step

    def check(self, row: Row, action: str, actor: Requester | None) -> Step[Row]:
        """Guard and status check of a step on a row already loaded (and locked)."""
        step = self.authorize(row, action, actor)
        if not step.allows(row.status):
            raise self.refuse(row, action, row.status)
        return step

    async def transition(
        self,
        tx: Tx,
        row: Row,
        action: str,
        actor: Requester | None,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        audit_details: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        then: Then | None = None,
        guarded: bool = True,
    ) -> str | None:
        """Take ``action`` on ``row``; returns the status it left.

        ``values`` are further columns the same UPDATE sets; ``details`` go to the history
        row, ``audit_details`` to the audit entry; ``then`` runs before the audit entry.
        ``guarded=False`` when the step is a consequence of one already authorized (a
        referral superseded by a newer one).
        """
        step = self.authorize(row, action, actor) if guarded else self.table[action]
        model: Any = self.model
        status: InstrumentedAttribute[Any] = model.status
        now = utcnow()
        changes = {"status": step.target, "updated_at": now, **(values or {})}
        moved = await tx.session.execute(
            update(model)
            .where(model.id == row.id, status.in_(step.sources))
            .values(**changes)
            .execution_options(synchronize_session=False)
        )
        if rowcount(moved) != 1:
            current = await tx.session.scalar(select(status).where(model.id == row.id))
            raise self.refuse(row, action, current)
        previous: str | None = row.status
        # The row now holds what the UPDATE wrote, without marking it dirty (no second UPDATE).
        for key, value in changes.items():
            set_committed_value(row, key, value)
        await self.record(
            tx,
            row,
            action,
            actor,
            previous,
            reason=reason,
            details=details,
            audit_details=audit_details,
            then=then,
        )
        return previous

    async def record(
        self,
        tx: Tx,
        row: Row,
        action: str,
        actor: Requester | None,
        previous: str | None,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        audit_details: dict[str, Any] | None = None,
        then: Then | None = None,
    ) -> None:
        """The history row, the follow-up and the audit entry of a step already taken."""
        step = self.table[action]
        tx.session.add(self.history(row, previous, step, actor, reason, details or {}))
        if then is not None:
            await then()
        base = self.audit_details(row, previous, step) if self.audit_details else {}
        await self.audit.record(
            tx.session,
            f"{self.kind}.{step.audit or step.action}",
            actor=actor,
            patient_id=row.patient_id,
            resource=f"{self.resource}/{row.id}",
            reason=reason,
            details={**base, **(audit_details or {})},
        )
