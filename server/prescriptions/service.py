"""E-prescriptions (电子处方流转): prescribe, check, sign, route, review, dispense, expire.

Status flow::

    signed ──route──► sent ──start──► under_review ──approve──► approved ──dispense──► dispensed
       │               │  ╲──────────── approve / reject ─────╱      │
       │               │                    rejected ──revise──► sent│signed
       └───────────────┴──── cancel (doctor) / expire (automatic) ───┘  (any state before dispensed)

Every change is one transaction: the conditional UPDATE on the status (so two
pharmacists, or two pharmacies, cannot both win), the status history row, the
audit entry and the stream events, pushed after commit. Deliveries to a
pharmacy are rows pointing at their committed stream event (the outbox): the
pharmacy catches up with ``sync`` or the pending query, and a relay re-pushes
what is still unacknowledged, so nothing depends on the live push.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.config import Settings
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.canonical import canonical_json
from server.core.db import Database, Tx, utcnow
from server.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.core.events import Events, StreamEvent
from server.core.history import entries, read_history
from server.core.leases import Periodic
from server.core.roles import PRESCRIBER_ROLES
from server.core.signing import Signature, Signer
from server.prescriptions import checks, schemas
from server.prescriptions.catalogue import Catalogue
from server.prescriptions.models import Delivery, Dispensation, Prescription, PrescriptionHistory
from server.prescriptions.record import PatientFacts, PatientRecord
from server.realtime.gateway import pharmacy_stream

logger = logging.getLogger(__name__)

Push = Callable[[str, dict[str, Any]], Awaitable[None]]
CHINA = timezone(timedelta(hours=8))
LIVE = ("signed", "sent", "under_review", "approved", "rejected")
ROUTABLE = ("signed", "sent")
REVISABLE = ("signed", "sent", "rejected")
QUEUE_STATUS = {"new": "sent"}
ENDED = {
    "expired": ("prescription_expired", "the prescription has expired"),
    "cancelled": ("prescription_cancelled", "the prescription was cancelled"),
    "dispensed": ("already_dispensed", "the prescription was already dispensed"),
}


class Unknown:
    """Not looked up yet (``None`` means looked up: the patient has no account)."""


UNKNOWN = Unknown()


def user_stream(user_id: int) -> str:
    return f"user:{user_id}"


def is_pharmacy(requester: Requester) -> bool:
    """Pharmacists get the pharmacy's copy of a prescription (see ``_out``)."""
    return requester.role == "pharmacist"


def unacknowledged() -> Select[Any]:
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


def valid_until(issued: datetime, validity_days: int) -> datetime:
    """The end of the last valid day, in China time (issue day counts as day one)."""
    last_day = issued.astimezone(CHINA).date() + timedelta(days=validity_days - 1)
    return datetime.combine(last_day + timedelta(days=1), time(), CHINA).astimezone(UTC)


def status_error(row: Prescription, wanted: str) -> Conflict:
    code, detail = ENDED.get(row.status, ("invalid_status", f"the prescription is {row.status}"))
    return Conflict(f"{detail}; cannot {wanted}", code=code, extra={"status": row.status})


class PrescriptionService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        events: Events,
        signer: Signer,
        catalogue: Catalogue,
        record: PatientRecord,
        push: Push,
    ) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        self.events = events
        self.signer = signer
        self.catalogue = catalogue
        self.record = record
        self._push = push

    # --- prescribing ------------------------------------------------------------------

    async def _prepare(
        self, requester: Requester, patient_id: int, body: schemas.PrescriptionBody
    ) -> tuple[PatientFacts, list[schemas.Finding]]:
        """Authorize, validate against the catalogue and the rules, and run the checks."""
        prescriber, patient = await self.record.people(requester.user_id, patient_id)
        if prescriber.role not in PRESCRIBER_ROLES or not prescriber.can_prescribe:
            raise Forbidden("you do not hold the prescribing right", code="no_prescribing_right")
        # An unknown patient is refused exactly like one the prescriber may not see.
        await self.record.check_access(requester, patient_id, "prescribe")
        assert patient is not None
        medications = await self.record.medications(patient_id)
        current = await self.catalogue.resolve(
            {code for med in medications for code in med.codes}, [m.label for m in medications]
        )
        codes = {item.drug_code for item in body.items}
        drugs = await self.catalogue.drugs(codes | current)
        checks.check_items_known(body.items, drugs)
        checks.check_rules(
            body,
            drugs,
            conditions=await self.record.conditions(patient_id),
            chronic=await self.catalogue.is_chronic(body.diagnosis.code),
            birth_date=patient.birth_date,
            guardian=patient.guardian_name,
            today=utcnow().astimezone(CHINA).date(),
        )
        findings = checks.find_problems(
            body.items,
            drugs,
            await self.catalogue.interactions(codes | current),
            await self.record.allergies(patient_id),
            current,
        )
        return patient, findings

    async def check(
        self, requester: Requester, data: schemas.PrescriptionCreate
    ) -> schemas.CheckResult:
        """What the doctor sees before signing: rules enforced, findings listed."""
        _, findings = await self._prepare(requester, data.patient_id, data)
        return schemas.CheckResult(
            findings=findings, blocking=any(f.severity == "severe" for f in findings)
        )

    @staticmethod
    def _check_overridden(body: schemas.PrescriptionBody, findings: list[schemas.Finding]) -> None:
        severe = [f for f in findings if f.severity == "severe"]
        if severe and not body.override_reason:
            raise ValidationFailed(
                "severe check findings: review them, or override with a reason",
                code="severe_findings",
                errors=[{"field": "override_reason", "reason": f.message} for f in severe],
                extra={"findings": [f.model_dump() for f in severe]},
            )

    def _content(
        self,
        row: Prescription,
        patient: PatientFacts,
        requester: Requester,
        body: schemas.PrescriptionBody,
        findings: list[schemas.Finding],
        issued: datetime,
    ) -> dict[str, Any]:
        """The canonical form the doctor signs and the pharmacy verifies."""
        return {
            "prescription_id": row.id,
            "version": row.version,
            "patient": {"id": patient.id, "name": patient.name, "resident_id": patient.resident_id},
            "prescriber": {"user_id": requester.user_id, "institution_id": row.institution_id},
            "issued_at": issued.isoformat(),
            "valid_until": row.valid_until.isoformat(),
            **body.model_dump(mode="json", include=set(schemas.PrescriptionBody.model_fields)),
            "findings": [f.model_dump() for f in findings],
        }

    async def _sign(
        self,
        tx: Tx,
        row: Prescription,
        patient: PatientFacts,
        requester: Requester,
        body: schemas.PrescriptionBody,
        findings: list[schemas.Finding],
    ) -> None:
        issued = utcnow()
        row.valid_until = valid_until(issued, body.validity_days)
        row.findings = [f.model_dump() for f in findings]
        # One UPDATE for content and signature (the key lookup would flush in between).
        with tx.session.no_autoflush:
            row.content = self._content(row, patient, requester, body, findings, issued)
            signature = await self.signer.sign(tx.session, requester.user_id, row.content)
            row.signature = signature.model_dump(mode="json")
            row.updated_at = issued

    async def create(
        self,
        requester: Requester,
        data: schemas.PrescriptionCreate,
        idempotency_key: str | None = None,
    ) -> schemas.PrescriptionOut:
        request_hash = hashlib.sha256(canonical_json(data.model_dump(mode="json"))).hexdigest()
        if idempotency_key:
            existing = await self._by_key(requester, idempotency_key, request_hash)
            if existing is not None:
                return existing
        patient, findings = await self._prepare(requester, data.patient_id, data)
        self._check_overridden(data, findings)
        if data.pharmacy_id is not None:
            await self._check_pharmacy(data.pharmacy_id)
        try:
            return await self._insert(
                requester, data, patient, findings, idempotency_key, request_hash
            )
        except IntegrityError:
            # A concurrent retry with the same key committed first: answer with its result.
            existing = (
                await self._by_key(requester, idempotency_key, request_hash)
                if idempotency_key
                else None
            )
            if existing is None:
                raise
            return existing

    async def _insert(
        self,
        requester: Requester,
        data: schemas.PrescriptionCreate,
        patient: PatientFacts,
        findings: list[schemas.Finding],
        idempotency_key: str | None,
        request_hash: str,
    ) -> schemas.PrescriptionOut:
        async with self.db.transaction() as tx:
            row = Prescription(
                patient_id=patient.id,
                prescriber_id=requester.user_id,
                institution_id=requester.institution_id,
                status="signed",
                version=1,
                content={},
                signature={},
                valid_until=utcnow(),
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
            tx.session.add(row)
            await tx.session.flush()
            await self._sign(tx, row, patient, requester, data, findings)
            await self._history(tx, row, requester, data.override_reason, {"kind": data.kind})
            if data.pharmacy_id is not None:
                await self._deliver(tx, row, requester, data.pharmacy_id)
            await self._notify(tx, row, patient, "created")
            await self._audit(
                tx, requester, row, "create", data.override_reason, {"findings": len(findings)}
            )
            return await self._out(tx.session, row, fresh=True)

    async def _by_key(
        self, requester: Requester, key: str, request_hash: str
    ) -> schemas.PrescriptionOut | None:
        async with self.db.read() as session:
            row = await session.scalar(
                select(Prescription).where(
                    Prescription.prescriber_id == requester.user_id,
                    Prescription.idempotency_key == key,
                )
            )
            if row is None:
                return None
            if row.request_hash != request_hash:
                raise ValidationFailed(
                    "this Idempotency-Key was used for a different prescription",
                    code="idempotency_key_reused",
                )
            return await self._out(session, row)

    async def revise(
        self, requester: Requester, prescription_id: int, body: schemas.PrescriptionBody
    ) -> schemas.PrescriptionOut:
        """The prescriber changes and re-signs (after a rejection, or before review)."""
        await self.expire_due(prescription_id)
        async with self.db.read() as session:
            row = await self._load(session, prescription_id)
            self._check_prescriber(requester, row)
            patient_id = row.patient_id
        patient, findings = await self._prepare(requester, patient_id, body)
        self._check_overridden(body, findings)
        async with self.db.transaction() as tx:
            row = await self._load(tx.session, prescription_id)
            if row.status not in REVISABLE:
                raise status_error(row, "revise")
            row.version += 1
            row.status = "signed"
            row.review_reason = None
            row.reviewer_id = None
            await self._sign(tx, row, patient, requester, body, findings)
            await self._history(tx, row, requester, body.override_reason, {"revised": True})
            if row.pharmacy_id is not None:
                await self._deliver(tx, row, requester, row.pharmacy_id)
            await self._notify(tx, row, patient, "revised")
            await self._audit(tx, requester, row, "revise", body.override_reason)
            return await self._out(tx.session, row, fresh=True)

    # --- routing and delivery ---------------------------------------------------------

    async def _check_pharmacy(self, pharmacy_id: int) -> None:
        if not await self.record.is_pharmacy(pharmacy_id):
            raise NotFound(f"no pharmacy {pharmacy_id}", code="pharmacy_not_found")

    async def route(
        self, requester: Requester, prescription_id: int, data: schemas.RouteRequest
    ) -> schemas.PrescriptionOut:
        await self.expire_due(prescription_id)
        async with self.db.read() as session:
            row = await self._load(session, prescription_id)
            if requester.role == "patient":
                if row.patient_id != requester.patient_id:
                    raise NotFound(f"no prescription {prescription_id}")
            else:
                self._check_prescriber(requester, row)
                if not data.patient_choice:
                    raise ValidationFailed.field(
                        "patient_choice",
                        "a doctor routes only to the pharmacy the patient chose",
                        code="patient_choice_required",
                    )
            patient_id = row.patient_id
        await self._check_pharmacy(data.pharmacy_id)
        patient = await self.record.patient(patient_id)
        assert patient is not None
        async with self.db.transaction() as tx:
            row = await self._load(tx.session, prescription_id)
            if row.status not in ROUTABLE:
                raise status_error(row, "route it to a pharmacy")
            if row.pharmacy_id == data.pharmacy_id:
                return await self._out(tx.session, row)  # a repeated choice changes nothing
            await self._deliver(tx, row, requester, data.pharmacy_id)
            await self._notify(tx, row, patient, "routed")
            await self._audit(tx, requester, row, "route")
            return await self._out(tx.session, row, fresh=True)

    async def _deliver(
        self,
        tx: Tx,
        row: Prescription,
        requester: Requester,
        pharmacy_id: int,
    ) -> None:
        previous = row.pharmacy_id
        withdrawn = previous is not None and previous != pharmacy_id
        # Stream heads are locked in ascending pharmacy order (no deadlock between two moves).
        if withdrawn and previous < pharmacy_id:  # type: ignore[operator]
            await self._tell_pharmacy(tx, row, "withdrawn", None)
        row.pharmacy_id = pharmacy_id
        row.status = "sent"
        row.updated_at = utcnow()
        out = await self._out(tx.session, row, fresh=True, pharmacy=True)
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
        if delivery is None:  # routed back to a pharmacy it left: that delivery is pending again
            delivery = Delivery(
                prescription_id=row.id, pharmacy_id=pharmacy_id, version=row.version
            )
            tx.session.add(delivery)
        delivery.stream, delivery.seq = stream, envelope["seq"]
        delivery.acked_at = delivery.acked_by = None
        if withdrawn and previous > pharmacy_id:  # type: ignore[operator]
            await self._tell_pharmacy(tx, row, "withdrawn", None, pharmacy_id=previous)
        await self._history(tx, row, requester, None, {"pharmacy_id": pharmacy_id})

    async def acknowledge(
        self, requester: Requester, prescription_id: int, version: int
    ) -> dict[str, Any]:
        """The pharmacy confirms receipt; repeating it is harmless."""
        async with self.db.transaction() as tx:
            row = await self._load(tx.session, prescription_id)
            self._check_pharmacist(requester, row)
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
            first = result.rowcount == 1  # type: ignore[attr-defined]
            if first:
                await self._history(tx, row, requester, None, {"received": version}, "received")
                await self._notify_users(tx, row, "received", None)
                await self._audit(tx, requester, row, "receive")
            return {"prescription_id": prescription_id, "version": version, "first": first}

    async def pending(self, requester: Requester) -> list[dict[str, Any]]:
        """Deliveries to the requester's pharmacy not yet acknowledged, in stream order."""
        self._check_pharmacist_role(requester)
        async with self.db.transaction() as tx:
            rows = await tx.session.scalars(
                unacknowledged()
                .where(Delivery.pharmacy_id == requester.institution_id)
                .order_by(StreamEvent.seq)
            )
            envelopes = [row.envelope() for row in rows]
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
        """Push again every unacknowledged delivery (after a restart, a lost push…)."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        async with self.db.read() as session:
            rows = list(
                await session.scalars(
                    unacknowledged()
                    .where(Delivery.created_at <= cutoff)
                    # Deliveries made before pharmacies had a stream of their own went to the
                    # institution stream, which administrators sit in: never push those again
                    # (the pharmacy still has them in its queue and pending list).
                    .where(Delivery.stream.startswith("pharmacy:"))
                    .order_by(StreamEvent.stream, StreamEvent.seq)
                )
            )
            envelopes = [row.envelope() for row in rows]
        for envelope in envelopes:
            await self._push(envelope["stream"], envelope)
        return len(envelopes)

    # --- the pharmacy -----------------------------------------------------------------

    async def review(
        self, requester: Requester, prescription_id: int, data: schemas.ReviewRequest
    ) -> schemas.PrescriptionOut:
        await self.expire_due(prescription_id)
        target, allowed = {
            "start": ("under_review", ("sent",)),
            "approve": ("approved", ("sent", "under_review")),
            "reject": ("rejected", ("sent", "under_review")),
        }[data.decision]
        async with self.db.transaction() as tx:
            row = await self._load(tx.session, prescription_id)
            self._check_pharmacist(requester, row)
            await self._check_signature(tx.session, row)
            if not await self._transition(
                tx, row, allowed, target, reviewer_id=requester.user_id, review_reason=data.reason
            ):
                raise status_error(row, data.decision)
            await self._history(tx, row, requester, data.reason)
            await self._notify_users(tx, row, target, data.reason)
            await self._audit(tx, requester, row, data.decision, data.reason)
            return await self._out(tx.session, row, pharmacy=True)

    async def dispense(
        self, requester: Requester, prescription_id: int, data: schemas.DispenseRequest
    ) -> schemas.PrescriptionOut:
        await self.expire_due(prescription_id)
        async with self.db.transaction() as tx:
            row = await self._load(tx.session, prescription_id)
            self._check_pharmacist(requester, row)
            await self._check_signature(tx.session, row)
            prescribed = {i["drug_code"]: i["quantity"] for i in row.content["items"]}
            for n, item in enumerate(data.items):
                if item.drug_code not in prescribed:
                    raise ValidationFailed.field(
                        f"items.{n}.drug_code", "not on this prescription", code="not_prescribed"
                    )
                if item.quantity > prescribed[item.drug_code]:
                    raise ValidationFailed.field(
                        f"items.{n}.quantity",
                        f"at most {prescribed[item.drug_code]} prescribed",
                        code="over_prescribed_quantity",
                    )
            # The conditional UPDATE is the guard: of two concurrent dispenses one matches.
            if not await self._transition(tx, row, ("approved",), "dispensed"):
                raise status_error(row, "dispense")
            tx.session.add(
                Dispensation(
                    prescription_id=row.id,
                    pharmacy_id=requester.institution_id,
                    pharmacist_id=requester.user_id,
                    items=[item.model_dump() for item in data.items],
                    note=data.note,
                )
            )
            await tx.session.flush()
            await self._history(tx, row, requester, data.note, {"items": len(data.items)})
            await self._notify_users(tx, row, "dispensed", None)
            await self._audit(tx, requester, row, "dispense", data.note)
            return await self._out(tx.session, row, pharmacy=True)

    async def cancel(
        self, requester: Requester, prescription_id: int, reason: str
    ) -> schemas.PrescriptionOut:
        await self.expire_due(prescription_id)
        async with self.db.transaction() as tx:
            row = await self._load(tx.session, prescription_id)
            self._check_prescriber(requester, row)
            if not await self._transition(tx, row, LIVE, "cancelled"):
                raise status_error(row, "cancel")
            await self._history(tx, row, requester, reason)
            await self._tell_pharmacy(tx, row, "cancelled", reason)
            await self._notify_users(tx, row, "cancelled", reason)
            await self._audit(tx, requester, row, "cancel", reason)
            return await self._out(tx.session, row)

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
                row = await self._load(tx.session, due_id)
                if not await self._transition(tx, row, LIVE, "expired"):
                    continue  # dispensed or cancelled meanwhile
                await self._history(tx, row, None, "validity ended")
                await self._tell_pharmacy(tx, row, "expired", None)
                await self._notify_users(tx, row, "expired", None)
                await self._audit(tx, None, row, "expire")
                expired += 1
        return expired

    # --- reads ------------------------------------------------------------------------

    async def get(self, requester: Requester, prescription_id: int) -> schemas.PrescriptionOut:
        await self.expire_due(prescription_id)
        async with self.db.transaction() as tx:
            row = await self._load(tx.session, prescription_id)
            self._check_may_see(requester, row)
            await self._audit_read(tx, requester, row)
            return await self._out(tx.session, row, pharmacy=is_pharmacy(requester))

    async def history(self, requester: Requester, prescription_id: int) -> schemas.HistoryList:
        async with self.db.transaction() as tx:
            row = await self._load(tx.session, prescription_id)
            self._check_may_see(requester, row)
            await self._audit_read(tx, requester, row)
            rows = await read_history(
                tx.session, PrescriptionHistory.prescription_id, prescription_id
            )
            return schemas.HistoryList(items=entries(schemas.HistoryEntry, rows))

    async def verify_all(self, batch: int = 500) -> tuple[int, list[tuple[int, str]]]:
        """Check every stored prescription against its signature (``yihao verify-signatures``).

        Returns how many were checked and ``(id, problem)`` for each that does not
        match: content or row edited after signing, or a key not on file.
        """
        checked, broken, last = 0, [], 0
        async with self.db.read() as session:
            while True:
                rows = (
                    await session.scalars(
                        select(Prescription)
                        .where(Prescription.id > last)
                        .order_by(Prescription.id)
                        .limit(batch)
                    )
                ).all()
                for row in rows:
                    checked, last = checked + 1, row.id
                    if not await self._signature_valid(session, row):
                        broken.append((row.id, "does not match its signature"))
                if len(rows) < batch:
                    return checked, broken

    async def verify(self, requester: Requester, prescription_id: int) -> schemas.VerifyResult:
        async with self.db.read() as session:
            row = await self._load(session, prescription_id)
            self._check_may_see(requester, row)
            signature = Signature.model_validate(row.signature)
            valid = await self._signature_valid(session, row)
            return schemas.VerifyResult(
                valid=valid, key_id=signature.key_id, signed_at=signature.signed_at
            )

    async def queue(
        self, requester: Requester, query: schemas.QueueQuery
    ) -> schemas.PrescriptionList:
        self._check_pharmacist_role(requester)
        patients = await self.record.patients_matching(query.patient) if query.patient else None
        stmt = select(Prescription).where(Prescription.pharmacy_id == requester.institution_id)
        if query.status != "all":
            stmt = stmt.where(Prescription.status == QUEUE_STATUS.get(query.status, query.status))
        if patients is not None:
            stmt = stmt.where(Prescription.patient_id.in_(patients))
        return await self._list(requester, stmt.order_by(Prescription.id).limit(query.limit))

    async def mine(
        self, requester: Requester, query: schemas.MineQuery
    ) -> schemas.PrescriptionList:
        if requester.role == "patient" and requester.patient_id is not None:
            stmt = select(Prescription).where(Prescription.patient_id == requester.patient_id)
        elif requester.role in PRESCRIBER_ROLES:
            stmt = select(Prescription).where(Prescription.prescriber_id == requester.user_id)
        else:
            raise Forbidden("pharmacies use the work queue", code="use_pharmacy_queue")
        if query.status is not None:
            stmt = stmt.where(Prescription.status == query.status)
        return await self._list(requester, stmt.order_by(Prescription.id.desc()).limit(query.limit))

    async def _list(self, requester: Requester, stmt: Any) -> schemas.PrescriptionList:
        async with self.db.transaction() as tx:
            rows = list(await tx.session.scalars(stmt))
            for row in rows:
                await self._audit_read(tx, requester, row)
            pharmacy = is_pharmacy(requester)
            return schemas.PrescriptionList(
                items=[await self._out(tx.session, r, pharmacy=pharmacy) for r in rows]
            )

    # --- helpers ----------------------------------------------------------------------

    @staticmethod
    async def _load(session: AsyncSession, prescription_id: int) -> Prescription:
        # FOR UPDATE on PostgreSQL orders concurrent writers (SQLite writers are serial).
        row = await session.get(
            Prescription, prescription_id, populate_existing=True, with_for_update=True
        )
        if row is None:
            raise NotFound(f"no prescription {prescription_id}", code="prescription_not_found")
        return row

    @staticmethod
    async def _transition(
        tx: Tx, row: Prescription, allowed: tuple[str, ...], target: str, **values: Any
    ) -> bool:
        result = await tx.session.execute(
            update(Prescription)
            .where(Prescription.id == row.id, Prescription.status.in_(allowed))
            .values(status=target, updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        await tx.session.refresh(row)
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    @staticmethod
    def _check_prescriber(requester: Requester, row: Prescription) -> None:
        if row.prescriber_id != requester.user_id:
            if requester.role == "pharmacist":
                raise Forbidden("only the prescribing doctor may do this", code="not_prescriber")
            raise NotFound(f"no prescription {row.id}", code="prescription_not_found")

    @staticmethod
    def _check_pharmacist_role(requester: Requester) -> None:
        if requester.role != "pharmacist" or requester.institution_id is None:
            raise Forbidden("only a pharmacist may do this", code="not_a_pharmacist")

    def _check_pharmacist(self, requester: Requester, row: Prescription) -> None:
        self._check_pharmacist_role(requester)
        if row.pharmacy_id != requester.institution_id:
            raise Forbidden(
                "this prescription was not sent to your pharmacy", code="not_your_pharmacy"
            )

    @staticmethod
    def _check_may_see(requester: Requester, row: Prescription) -> None:
        if requester.user_id == row.prescriber_id:
            return
        if requester.role == "patient" and requester.patient_id == row.patient_id:
            return
        if requester.role == "pharmacist" and requester.institution_id == row.pharmacy_id:
            return
        raise NotFound(f"no prescription {row.id}", code="prescription_not_found")

    async def _signature_valid(self, session: AsyncSession, row: Prescription) -> bool:
        content = row.content
        if (
            content.get("prescription_id") != row.id
            or content.get("version") != row.version
            or content.get("patient", {}).get("id") != row.patient_id
            or content.get("prescriber", {}).get("user_id") != row.prescriber_id
        ):
            return False
        try:
            signature = Signature.model_validate(row.signature)
        except ValueError:
            return False
        return await self.signer.verify(session, row.prescriber_id, signature, content)

    async def _check_signature(self, session: AsyncSession, row: Prescription) -> None:
        if not await self._signature_valid(session, row):
            logger.warning("prescription signature invalid", extra={"prescription_id": row.id})
            raise Conflict(
                "the prescription does not match its signature: it was changed after signing",
                code="signature_invalid",
            )

    async def _history(
        self,
        tx: Tx,
        row: Prescription,
        actor: Requester | None,
        reason: str | None,
        details: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> None:
        tx.session.add(
            PrescriptionHistory(
                prescription_id=row.id,
                status=status or row.status,
                version=row.version,
                actor_user_id=actor.user_id if actor else None,
                reason=reason,
                details=details or {},
                at=utcnow(),
            )
        )

    async def _audit(
        self,
        tx: Tx,
        actor: Requester | None,
        row: Prescription,
        action: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Called last in a transaction: the audit chain's head row stays locked until commit,
        and every write takes its locks in one order (pharmacy streams, user streams, audit),
        so concurrent transactions on PostgreSQL cannot deadlock."""
        await self.audit.record(
            tx.session,
            f"prescription.{action}",
            actor=actor,
            patient_id=row.patient_id,
            resource=f"Prescription/{row.id}",
            reason=reason,
            details={"version": row.version, "pharmacy_id": row.pharmacy_id, **(details or {})},
        )

    async def _audit_read(self, tx: Tx, requester: Requester, row: Prescription) -> None:
        await self._audit(tx, requester, row, "read")

    async def _notify(self, tx: Tx, row: Prescription, patient: PatientFacts, op: str) -> None:
        await self._notify_users(tx, row, op, None, patient_user_id=patient.user_id)

    async def _notify_users(
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

    async def _tell_pharmacy(
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

    async def _out(
        self,
        session: AsyncSession,
        row: Prescription,
        *,
        fresh: bool = False,
        pharmacy: bool = False,
    ) -> schemas.PrescriptionOut:
        """``fresh``: a version just signed or delivered (not received, not dispensed).

        ``pharmacy``: the pharmacy's copy: the facts review and dispensing need (age, sex,
        weight, allergies, the prescriber) and the resident ID masked, also in ``content``,
        so a pharmacy never holds the full number nor reads the record.
        """
        content = row.content
        patient_view = prescriber_view = None
        if pharmacy:
            patient_view, prescriber_view = await self.record.dispensing_facts(
                row.patient_id, row.prescriber_id
            )
            signed_patient = content.get("patient", {})
            content = {
                **content,
                "patient": {**signed_patient, "resident_id": patient_view.resident_id_masked},
            }
        received = False
        dispensation = None
        if row.pharmacy_id is not None and not fresh:
            received = (
                await session.scalar(
                    select(Delivery.id).where(
                        Delivery.prescription_id == row.id,
                        Delivery.pharmacy_id == row.pharmacy_id,
                        Delivery.version == row.version,
                        Delivery.acked_at.is_not(None),
                    )
                )
                is not None
            )
        if row.status == "dispensed":
            dispensation = await session.scalar(
                select(Dispensation).where(Dispensation.prescription_id == row.id)
            )
        return schemas.PrescriptionOut(
            id=row.id,
            version=row.version,
            status=row.status,
            patient_id=row.patient_id,
            prescriber_id=row.prescriber_id,
            institution_id=row.institution_id,
            pharmacy_id=row.pharmacy_id,
            content=content,
            signature=row.signature,
            findings=[schemas.Finding.model_validate(f) for f in row.findings],
            valid_until=row.valid_until,
            review_reason=row.review_reason,
            received=received,
            dispensation=None
            if dispensation is None
            else {
                "pharmacy_id": dispensation.pharmacy_id,
                "pharmacist_id": dispensation.pharmacist_id,
                "items": dispensation.items,
                "note": dispensation.note,
                "at": dispensation.at.isoformat(),
            },
            created_at=row.created_at,
            updated_at=row.updated_at,
            patient=patient_view,
            prescriber=prescriber_view,
        )


def periodic_jobs(service: PrescriptionService, interval: float) -> list[Periodic]:
    """Expiry and the outbox relay, each round run by one node of the cluster (0: none).

    The relay is a safety net, not the delivery path: a delivery is pushed by the
    node that committed it, right after the commit, and a push from any node
    reaches every node's sockets through Redis. Re-pushing what is still
    unacknowledged from every node would only multiply the copies, so one node
    relays per round (see docs/deploy.md, "Background jobs").
    """
    if interval <= 0:
        return []

    async def expire(tick: int) -> None:
        expired = await service.expire_due()
        if expired:
            logger.info("prescriptions expired", extra={"count": expired})

    async def relay(tick: int) -> None:
        # Older than a round: what the commit's own push (or an earlier relay) did not settle.
        await service.relay_pending(interval)

    return [
        Periodic("prescriptions.expire", interval, expire),
        Periodic("prescriptions.relay", interval, relay),
    ]


def background(service: PrescriptionService, interval: float) -> Any:
    """cleanup_ctx: at this node's start, relay what was left unacknowledged (once).

    A node that crashed between a commit and its push comes back here; the
    periodic rounds are lease jobs (:func:`periodic_jobs`).
    """

    async def ctx(app: Any) -> AsyncIterator[None]:
        async def once() -> None:
            try:
                await service.relay_pending(0.0)
            except Exception:
                logger.exception("prescription relay at start failed")

        task = asyncio.create_task(once()) if interval > 0 else None
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return ctx
