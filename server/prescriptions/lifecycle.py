"""The prescription's steps, who takes them, and what every step writes.

Status flow::

    signed ──route──► sent ──start──► under_review ──approve──► approved ──ready──► ready
       │               │  ╲──────────── approve / reject ─────╱      │                 │
       │               │                    rejected ──revise──► sent│signed        dispense
       │               │                                             └──dispense──► dispensed
       └───────────────┴──── cancel (doctor) / expire (automatic) ───┘  (any state before dispensed)

``ready`` is ready for pickup at the chosen pharmacy (its pharmacist says so). Once the
pharmacy's review has started, the patient can no longer change the pharmacy (409
``pharmacy_review_started``).

Every change is one transaction: the conditional UPDATE on the status (so two
pharmacists, or two pharmacies, cannot both win), the status history row, the
stream events and the audit entry (:class:`server.core.lifecycle.Lifecycle`),
pushed after commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, utcnow
from server.core.errors import Conflict, Forbidden, NotFound
from server.core.events import Events
from server.core.history import HistoryEntry
from server.core.lifecycle import Lifecycle, Step, steps
from server.core.roles import Role
from server.prescriptions.models import Prescription, PrescriptionHistory
from server.prescriptions.models import PrescriptionStatus as S
from server.prescriptions.record import PatientRecord
from server.realtime.gateway import pharmacy_stream

LIVE = frozenset({S.SIGNED, S.SENT, S.UNDER_REVIEW, S.APPROVED, S.READY, S.REJECTED})
ROUTABLE = frozenset({S.SIGNED, S.SENT})
REVISABLE = frozenset({S.SIGNED, S.SENT, S.REJECTED})
# Where a change of pharmacy is refused because the pharmacy has taken the prescription up.
REVIEW_STARTED = frozenset({S.UNDER_REVIEW, S.APPROVED, S.READY, S.REJECTED})
ENDED: dict[str | None, tuple[str, str]] = {
    S.EXPIRED: ("prescription_expired", "the prescription has expired"),
    S.CANCELLED: ("prescription_cancelled", "the prescription was cancelled"),
    S.DISPENSED: ("already_dispensed", "the prescription was already dispensed"),
}
# How a refusal names the step it refused.
WORDING = {"deliver": "route it to a pharmacy"}


class Unknown:
    """Not looked up yet (``None`` means looked up: the patient has no account)."""


UNKNOWN = Unknown()


def user_stream(user_id: int) -> str:
    return f"user:{user_id}"


def check_prescriber(requester: Requester, row: Prescription) -> None:
    if row.prescriber_id != requester.user_id:
        if requester.role == Role.PHARMACIST:
            raise Forbidden("only the prescribing doctor may do this", code="not_prescriber")
        raise NotFound(f"no prescription {row.id}", code="prescription_not_found")


def check_pharmacist_role(requester: Requester) -> None:
    if requester.role != Role.PHARMACIST or requester.institution_id is None:
        raise Forbidden("only a pharmacist may do this", code="not_a_pharmacist")


def check_pharmacist(requester: Requester, row: Prescription) -> None:
    check_pharmacist_role(requester)
    if row.pharmacy_id != requester.institution_id:
        raise Forbidden("this prescription was not sent to your pharmacy", code="not_your_pharmacy")


def check_may_see(requester: Requester, row: Prescription) -> None:
    if requester.user_id == row.prescriber_id:
        return
    if requester.role == Role.PATIENT and requester.patient_id == row.patient_id:
        return
    if requester.role == Role.PHARMACIST and requester.institution_id == row.pharmacy_id:
        return
    raise NotFound(f"no prescription {row.id}", code="prescription_not_found")


def _pharmacist(action: str, sources: frozenset[S], target: S) -> Step[Prescription]:
    return Step(action, sources, target, guard=check_pharmacist)


STEPS = steps(
    Step("create", frozenset(), S.SIGNED),
    Step("revise", REVISABLE, S.SIGNED, guard=check_prescriber),
    # Routing is the prescriber's (with the patient's choice) or the patient's own: checked
    # by the delivery service, which knows which of the two acts.
    Step("deliver", ROUTABLE, S.SENT, audit="route"),
    # A receipt changes no status: the history records it as "received".
    Step("receive", LIVE, S.SENT, guard=check_pharmacist, marks="received"),
    _pharmacist("start", frozenset({S.SENT}), S.UNDER_REVIEW),
    _pharmacist("approve", frozenset({S.SENT, S.UNDER_REVIEW}), S.APPROVED),
    _pharmacist("reject", frozenset({S.SENT, S.UNDER_REVIEW}), S.REJECTED),
    _pharmacist("ready", frozenset({S.APPROVED}), S.READY),
    _pharmacist("dispense", frozenset({S.APPROVED, S.READY}), S.DISPENSED),
    Step("cancel", LIVE, S.CANCELLED, guard=check_prescriber),
    Step("expire", LIVE, S.EXPIRED),
)


def status_error(current: str | None, action: str) -> Conflict:
    wanted = WORDING.get(action, action)
    if action == "deliver" and current in REVIEW_STARTED:
        return Conflict(
            f"the pharmacy has started its review (the prescription is {current}); "
            "the pharmacy can no longer be changed",
            code="pharmacy_review_started",
            # Not "status": that member of a problem is the HTTP status.
            extra={"prescription_status": current},
        )
    code, detail = ENDED.get(current, ("invalid_status", f"the prescription is {current}"))
    return Conflict(f"{detail}; cannot {wanted}", code=code, extra={"status": current})


def _refuse(row: Prescription, action: str, current: str | None) -> Exception:
    return status_error(current, action)


def _history(
    row: Prescription,
    previous: str | None,
    step: Step[Prescription],
    actor: Requester | None,
    reason: str | None,
    details: dict[str, Any],
) -> PrescriptionHistory:
    return PrescriptionHistory(
        prescription_id=row.id,
        status=step.recorded,
        version=row.version,
        actor_user_id=actor.user_id if actor else None,
        reason=reason,
        details=details,
        at=utcnow(),
    )


def _audit_details(
    row: Prescription, previous: str | None, step: Step[Prescription]
) -> dict[str, Any]:
    return {"version": row.version, "pharmacy_id": row.pharmacy_id}


def history_entries(rows: list[PrescriptionHistory]) -> list[HistoryEntry]:
    """The answer's entries; a row keeps only the status reached, so the status a step left
    is the one before it (a receipt changes no status)."""
    found, current = [], None
    for row in rows:
        found.append(
            HistoryEntry(
                at=row.at,
                from_status=current,
                to_status=row.status,
                actor_user_id=row.actor_user_id,
                reason=row.reason,
                details=row.details,
                status=row.status,
                version=row.version,
            )
        )
        if row.status in S.__members__.values():
            current = row.status
    return found


async def load(session: AsyncSession, prescription_id: int) -> Prescription:
    # FOR UPDATE on PostgreSQL orders concurrent writers (SQLite writers are serial).
    row = await session.get(
        Prescription, prescription_id, populate_existing=True, with_for_update=True
    )
    if row is None:
        raise NotFound(f"no prescription {prescription_id}", code="prescription_not_found")
    return row


class PrescriptionSteps:
    """What every step of a prescription shares: the lifecycle, who hears of it, expiry."""

    def __init__(self, db: Database, audit: AuditLog, events: Events, record: PatientRecord):
        self.db = db
        self.events = events
        self.record = record
        self.lifecycle = Lifecycle(
            kind="prescription",
            resource="Prescription",
            model=Prescription,
            table=STEPS,
            refuse=_refuse,
            history=_history,
            audit=audit,
            audit_details=_audit_details,
        )

    def history_row(
        self, tx: Tx, row: Prescription, action: str, actor: Requester | None, **details: Any
    ) -> None:
        """A history row of a step whose audit entry is its caller's (a delivery)."""
        step = STEPS[action]
        tx.session.add(_history(row, None, step, actor, None, details))

    async def notify_users(
        self,
        tx: Tx,
        row: Prescription,
        op: str,
        reason: str | None,
        *,
        patient_user_id: int | Unknown | None = UNKNOWN,
    ) -> None:
        """Tell the prescriber and the patient, live, where the prescription stands."""
        if isinstance(patient_user_id, Unknown):
            patient_user_id = await self.record.patient_user_id(tx.session, row.patient_id)
        data = {
            "prescription_id": row.id,
            "version": row.version,
            "status": row.status,
            "pharmacy_id": row.pharmacy_id,
            "reason": reason,
        }
        for user_id in (row.prescriber_id, patient_user_id):
            if user_id is not None:
                await self.events.append(tx, user_stream(user_id), "prescription", op, data)

    async def tell_pharmacy(
        self,
        tx: Tx,
        row: Prescription,
        op: str,
        reason: str | None,
        *,
        pharmacy_id: int | None = None,
    ) -> None:
        pharmacy_id = pharmacy_id or row.pharmacy_id
        if pharmacy_id is not None:
            await self.events.append(
                tx,
                pharmacy_stream(pharmacy_id),
                "prescription",
                op,
                {"prescription_id": row.id, "version": row.version, "reason": reason},
            )

    async def expire_due(self, prescription_id: int | None = None) -> int:
        """Mark live prescriptions past their validity as expired; returns how many."""
        query = select(Prescription.id).where(
            Prescription.status.in_(LIVE), Prescription.valid_until <= utcnow()
        )
        if prescription_id is not None:
            query = query.where(Prescription.id == prescription_id)
        async with self.db.read() as session:
            due = list(await session.scalars(query.limit(500)))
        expired = 0
        for due_id in due:
            async with self.db.transaction() as tx:
                row = await load(tx.session, due_id)

                async def then(row: Prescription = row, tx: Tx = tx) -> None:
                    await self.tell_pharmacy(tx, row, "expired", None)
                    await self.notify_users(tx, row, "expired", None)

                try:
                    await self.lifecycle.transition(
                        tx, row, "expire", None, reason="validity ended", then=then
                    )
                except Conflict:
                    continue  # dispensed or cancelled meanwhile
                expired += 1
        return expired
