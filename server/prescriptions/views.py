"""What a prescription looks like to whoever reads it, and the reads themselves.

``out`` shapes the one answer model; the pharmacy's copy carries the facts review and
dispensing need (age, sex, weight, allergies, the prescriber) and the resident ID masked,
also in ``content``, so a pharmacy never holds the full number nor reads the record.
Every read of a prescription is audited.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx
from server.core.errors import Conflict, Forbidden
from server.core.history import HistoryList, read_history
from server.core.roles import PRESCRIBER_ROLES, Role
from server.core.signing import Signature, Signer
from server.prescriptions import schemas
from server.prescriptions.dosing import dosing_of
from server.prescriptions.lifecycle import (
    PrescriptionSteps,
    check_may_see,
    check_pharmacist_role,
    history_entries,
    load,
)
from server.prescriptions.models import (
    Delivery,
    Dispensation,
    Prescription,
    PrescriptionHistory,
    PrescriptionStatus,
)
from server.prescriptions.record import PatientRecord

logger = logging.getLogger(__name__)

QUEUE_STATUS = {"new": PrescriptionStatus.SENT}
PharmacyViews = tuple[schemas.PatientView, schemas.PrescriberView]


def is_pharmacy(requester: Requester) -> bool:
    """Pharmacists get the pharmacy's copy of a prescription (see ``Views.out``)."""
    return requester.role == Role.PHARMACIST


class Views:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        signer: Signer,
        record: PatientRecord,
        steps: PrescriptionSteps,
    ) -> None:
        self.db = db
        self.audit = audit
        self.signer = signer
        self.record = record
        self.steps = steps

    async def out(
        self,
        session: AsyncSession,
        row: Prescription,
        *,
        fresh: bool = False,
        pharmacy: bool = False,
        facts: PharmacyViews | None = None,
    ) -> schemas.PrescriptionOut:
        """``fresh``: a version just signed or delivered (not received, not dispensed).

        ``pharmacy``: the pharmacy's copy (``facts``: its people, when the caller has them).
        """
        content = row.content
        patient_view = prescriber_view = None
        if pharmacy:
            patient_view, prescriber_view = facts or await self.record.dispensing_facts(
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
        if row.status == PrescriptionStatus.DISPENSED:
            dispensation = await session.scalar(
                select(Dispensation).where(Dispensation.prescription_id == row.id)
            )
        return schemas.PrescriptionOut(
            id=row.id,
            version=row.version,
            status=PrescriptionStatus(row.status),
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
            dosing=[schemas.Dosing.model_validate(d) for d in dosing_of(row.content)],
        )

    async def audit_read(self, tx: Tx, requester: Requester, row: Prescription) -> None:
        await self.audit.record(
            tx.session,
            "prescription.read",
            actor=requester,
            patient_id=row.patient_id,
            resource=f"Prescription/{row.id}",
            details={"version": row.version, "pharmacy_id": row.pharmacy_id},
        )

    # --- reads ------------------------------------------------------------------------

    async def get(self, requester: Requester, prescription_id: int) -> schemas.PrescriptionOut:
        await self.steps.expire_due(prescription_id)
        async with self.db.transaction() as tx:
            row = await load(tx.session, prescription_id)
            check_may_see(requester, row)
            await self.audit_read(tx, requester, row)
            return await self.out(tx.session, row, pharmacy=is_pharmacy(requester))

    async def history(self, requester: Requester, prescription_id: int) -> HistoryList:
        async with self.db.transaction() as tx:
            row = await load(tx.session, prescription_id)
            check_may_see(requester, row)
            await self.audit_read(tx, requester, row)
            rows = await read_history(
                tx.session, PrescriptionHistory.prescription_id, prescription_id
            )
            return HistoryList(items=history_entries(rows))

    async def queue(
        self, requester: Requester, query: schemas.QueueQuery
    ) -> schemas.PrescriptionList:
        check_pharmacist_role(requester)
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
        if requester.role == Role.PATIENT and requester.patient_id is not None:
            stmt = select(Prescription).where(Prescription.patient_id == requester.patient_id)
        elif requester.role in PRESCRIBER_ROLES:
            stmt = select(Prescription).where(Prescription.prescriber_id == requester.user_id)
        else:
            raise Forbidden("pharmacies use the work queue", code="use_pharmacy_queue")
        if query.status is not None:
            stmt = stmt.where(Prescription.status == query.status)
        return await self._list(requester, stmt.order_by(Prescription.id.desc()).limit(query.limit))

    async def _list(
        self, requester: Requester, stmt: Select[Prescription]
    ) -> schemas.PrescriptionList:
        async with self.db.transaction() as tx:
            rows = list(await tx.session.scalars(stmt))
            for row in rows:
                await self.audit_read(tx, requester, row)
            pharmacy = is_pharmacy(requester)
            return schemas.PrescriptionList(
                items=[await self.out(tx.session, r, pharmacy=pharmacy) for r in rows]
            )

    # --- signatures -------------------------------------------------------------------

    async def verify(self, requester: Requester, prescription_id: int) -> schemas.VerifyResult:
        async with self.db.read() as session:
            row = await load(session, prescription_id)
            check_may_see(requester, row)
            signature = Signature.model_validate(row.signature)
            valid = await self.signature_valid(session, row)
            return schemas.VerifyResult(
                valid=valid, key_id=signature.key_id, signed_at=signature.signed_at
            )

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
                    if not await self.signature_valid(session, row):
                        broken.append((row.id, "does not match its signature"))
                if len(rows) < batch:
                    return checked, broken

    async def signature_valid(self, session: AsyncSession, row: Prescription) -> bool:
        content: dict[str, Any] = row.content
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

    async def check_signature(self, session: AsyncSession, row: Prescription) -> None:
        if not await self.signature_valid(session, row):
            logger.warning("prescription signature invalid", extra={"prescription_id": row.id})
            raise Conflict(
                "the prescription does not match its signature: it was changed after signing",
                code="signature_invalid",
            )
