"""Delivery to the pharmacy: routing, the pharmacy's receipt, and pushing again.

Deliveries to a pharmacy are rows pointing at their committed stream event (the outbox):
the pharmacy catches up with ``sync`` or the pending query, and a relay pushes again what
is still unacknowledged, so nothing depends on the live push. A push again is a fresh
stream event (a new ``seq``) carrying the same delivery: a client that keeps the highest
``seq`` per stream and ignores the rest still sees it, and acknowledges it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, rowcount, utcnow
from server.core.errors import NotFound, ValidationFailed
from server.core.events import Events, StreamEvent
from server.core.roles import Role
from server.prescriptions import schemas
from server.prescriptions.lifecycle import (
    LIVE,
    PrescriptionSteps,
    check_pharmacist,
    check_pharmacist_role,
    check_prescriber,
    load,
)
from server.prescriptions.models import Delivery, Prescription, PrescriptionStatus
from server.prescriptions.record import PatientRecord
from server.prescriptions.views import PharmacyViews, Views
from server.realtime.gateway import pharmacy_stream

Push = Callable[[str, dict[str, Any]], Awaitable[None]]


class _AddedWhenNumbered:
    """Takes a new delivery's event number, then adds the row to the session."""

    __slots__ = ("_row", "_session")

    def __init__(self, session: AsyncSession, row: Delivery) -> None:
        self._session, self._row = session, row

    @property
    def seq(self) -> int:
        return self._row.seq

    @seq.setter
    def seq(self, value: int) -> None:
        self._row.seq = value
        self._session.add(self._row)


def no_pharmacy(pharmacy_id: int) -> NotFound:
    return NotFound(f"no pharmacy {pharmacy_id}", code="pharmacy_not_found")


def unacknowledged() -> Select[StreamEvent]:
    """The committed delivery events (the outbox) not acknowledged yet, of prescriptions
    still live at that pharmacy in that version (a withdrawn, revised, cancelled or expired
    one is no longer worth delivering)."""
    return (
        select(StreamEvent)
        .join(Delivery, (Delivery.stream == StreamEvent.stream) & (Delivery.seq == StreamEvent.seq))
        .join(
            Prescription,
            (Prescription.id == Delivery.prescription_id)
            & (Prescription.pharmacy_id == Delivery.pharmacy_id)
            & (Prescription.version == Delivery.version),
        )
        .where(Delivery.acked_at.is_(None), Prescription.status.in_(LIVE))
    )


class Deliveries:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        events: Events,
        record: PatientRecord,
        steps: PrescriptionSteps,
        views: Views,
        push: Push,
    ) -> None:
        self.db = db
        self.audit = audit
        self.events = events
        self.record = record
        self.steps = steps
        self.views = views
        self._push = push

    async def check_pharmacy(self, session: AsyncSession, pharmacy_id: int) -> None:
        if not await self.record.is_pharmacy(session, pharmacy_id):
            raise no_pharmacy(pharmacy_id)

    async def route(
        self, requester: Requester, prescription_id: int, data: schemas.RouteRequest
    ) -> schemas.PrescriptionOut:
        await self.steps.expire_due(prescription_id)
        async with self.db.read() as session:
            row = await load(session, prescription_id)
            if requester.role == Role.PATIENT:
                if row.patient_id != requester.patient_id:
                    raise NotFound(f"no prescription {prescription_id}")
            else:
                check_prescriber(requester, row)
                if not data.patient_choice:
                    raise ValidationFailed.field(
                        "patient_choice",
                        "a doctor routes only to the pharmacy the patient chose",
                        code="patient_choice_required",
                    )
            await self.check_pharmacy(session, data.pharmacy_id)
            patient = await self.record.patient_in(session, row.patient_id)
            assert patient is not None
        async with self.db.transaction() as tx:
            row = await load(tx.session, prescription_id)
            lifecycle = self.steps.lifecycle
            lifecycle.check(row, "deliver", None)
            if row.pharmacy_id == data.pharmacy_id:
                return await self.views.out(tx.session, row)  # a repeated choice changes nothing
            previous = row.status

            async def then() -> None:
                await self.deliver(tx, row, requester, data.pharmacy_id, history=False)
                await self.steps.notify_users(
                    tx, row, "routed", None, patient_user_id=patient.user_id
                )

            await lifecycle.record(
                tx,
                row,
                "deliver",
                requester,
                previous,
                details={"pharmacy_id": data.pharmacy_id},
                then=then,
            )
            return await self.views.out(tx.session, row, fresh=True)

    async def deliver(
        self,
        tx: Tx,
        row: Prescription,
        requester: Requester,
        pharmacy_id: int,
        *,
        facts: PharmacyViews | None = None,
        history: bool = True,
    ) -> None:
        """Send the row's version to a pharmacy (withdrawing it from the one it left).

        A step of the caller's (create, revise): its audit entry is the caller's, and so is
        the history row when ``history`` is false (a route, recorded by the lifecycle).
        """
        previous = row.pharmacy_id
        withdrawn = previous is not None and previous != pharmacy_id
        # Stream heads are locked in ascending pharmacy order (no deadlock between two moves).
        if withdrawn and previous is not None and previous < pharmacy_id:
            await self.steps.tell_pharmacy(tx, row, "withdrawn", None)
        row.pharmacy_id = pharmacy_id
        row.status = PrescriptionStatus.SENT
        row.updated_at = utcnow()
        out = await self.views.out(tx.session, row, fresh=True, pharmacy=True, facts=facts)
        stream = pharmacy_stream(pharmacy_id)
        envelope = await self.events.append(
            tx, stream, "prescription", "delivered", {"prescription": out.model_dump(mode="json")}
        )
        delivery = None
        if previous is not None or row.version > 1:  # else certainly its first delivery
            delivery = await tx.session.scalar(
                select(Delivery).where(
                    Delivery.prescription_id == row.id,
                    Delivery.pharmacy_id == pharmacy_id,
                    Delivery.version == row.version,
                )
            )
        if delivery is None:
            # A new delivery is added once its event is numbered (just before commit), so
            # it is one INSERT carrying its seq, not an INSERT and then an UPDATE.
            delivery = Delivery(
                prescription_id=row.id, pharmacy_id=pharmacy_id, version=row.version, stream=stream
            )
            envelope.number_into(_AddedWhenNumbered(tx.session, delivery))
        else:  # routed back to a pharmacy it left: that delivery is pending again
            delivery.stream, delivery.seq = stream, 0  # numbered just before commit
            envelope.number_into(delivery)
            delivery.acked_at = delivery.acked_by = None
        if withdrawn and previous is not None and previous > pharmacy_id:
            await self.steps.tell_pharmacy(tx, row, "withdrawn", None, pharmacy_id=previous)
        if history:
            self.steps.history_row(tx, row, "deliver", requester, pharmacy_id=pharmacy_id)

    async def acknowledge(
        self, requester: Requester, prescription_id: int, version: int
    ) -> schemas.Receipt:
        """The pharmacy confirms receipt; repeating it is harmless."""
        async with self.db.transaction() as tx:
            row = await load(tx.session, prescription_id)
            check_pharmacist(requester, row)
            result = await tx.session.execute(
                update(Delivery)
                .where(
                    Delivery.prescription_id == prescription_id,
                    Delivery.pharmacy_id == requester.institution_id,
                    Delivery.version == version,
                    Delivery.acked_at.is_(None),
                )
                .values(acked_at=utcnow(), acked_by=requester.user_id)
            )
            first = rowcount(result) == 1
            if first:

                async def then() -> None:
                    await self.steps.notify_users(tx, row, "received", None)

                await self.steps.lifecycle.record(
                    tx,
                    row,
                    "receive",
                    requester,
                    row.status,
                    details={"received": version},
                    then=then,
                )
            return schemas.Receipt(prescription_id=prescription_id, version=version, first=first)

    async def pending(self, requester: Requester) -> list[dict[str, Any]]:
        """Deliveries to the requester's pharmacy not yet acknowledged, in stream order."""
        check_pharmacist_role(requester)
        async with self.db.transaction() as tx:
            rows = await tx.session.scalars(
                unacknowledged()
                .where(Delivery.pharmacy_id == requester.institution_id)
                .order_by(StreamEvent.seq)
            )
            envelopes: list[dict[str, Any]] = [dict(row.envelope()) for row in rows]
            if envelopes:
                ids = [e["data"]["prescription"]["id"] for e in envelopes]
                await self.audit.record(
                    tx.session,
                    "prescription.read_pending",
                    actor=requester,
                    resource="Prescription",
                    details={"prescription_ids": ids},
                )
            return envelopes

    async def relay_pending(self, older_than: float = 0.0) -> int:
        """Push again every unacknowledged delivery (after a restart, a lost push…).

        Each push again is a new event on the pharmacy's stream. In the periodic rounds
        (``older_than`` > 0) a delivery waiting for a pharmacy that stays away is pushed
        less and less often (again once its last push is at least half its age), so an
        offline pharmacy's stream grows slowly; at a node's start, everything pending is.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than)
        async with self.db.transaction() as tx:
            rows = list(
                await tx.session.execute(
                    unacknowledged()
                    .add_columns(Delivery)
                    .where(Delivery.created_at <= cutoff, StreamEvent.at <= cutoff)
                    # Deliveries made before pharmacies had a stream of their own went to the
                    # institution stream, which administrators sit in: never push those again
                    # (the pharmacy still has them in its queue and pending list).
                    .where(Delivery.stream.startswith("pharmacy:"))
                    .order_by(StreamEvent.stream, StreamEvent.seq)
                )
            )
            relayed = 0
            for event, delivery in rows:
                if older_than > 0 and now - event.at < (now - delivery.created_at) / 2:
                    continue  # a round's relay, and pushed again recently for its age
                envelope = await self.events.append(
                    tx, event.stream, event.type, event.op, event.data
                )
                envelope.number_into(delivery)
                relayed += 1
        return relayed
