"""Prescribing: the doctor checks, signs, revises and cancels.

A prescription is written by the treating doctor personally, checked against the rules
and the patient's shared record (:mod:`server.prescriptions.checks`), and signed with the
doctor's key over its canonical form. Creating (or revising) one is one transaction
that reads the people, decides the record access (its audit entry commits with the
write; a refusal is audited on its own, as the write rolls back), reads the record
once, checks, signs, delivers to the pharmacy when one is named, and records the step.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessDecisions
from server.core.auth import Requester
from server.core.canonical import canonical_json_v1
from server.core.db import Database, Tx, utcnow
from server.core.errors import Forbidden, ValidationFailed
from server.core.roles import PRESCRIBER_ROLES
from server.core.signing import Signer
from server.prescriptions import checks, schemas
from server.prescriptions.catalogue import Catalogue
from server.prescriptions.delivery import Deliveries, no_pharmacy
from server.prescriptions.lifecycle import PrescriptionSteps, load
from server.prescriptions.models import Prescription, PrescriptionStatus
from server.prescriptions.record import Chart, PatientFacts, PatientRecord, People, pharmacy_views
from server.prescriptions.views import PharmacyViews, Views

CHINA = timezone(timedelta(hours=8))
BY_KEY = select(Prescription.id, Prescription.request_hash).where(
    Prescription.prescriber_id == bindparam("prescriber_id"),
    Prescription.idempotency_key == bindparam("key"),
)


def valid_until(issued: datetime, validity_days: int) -> datetime:
    """The end of the last valid day, in China time (issue day counts as day one)."""
    last_day = issued.astimezone(CHINA).date() + timedelta(days=validity_days - 1)
    return datetime.combine(last_day + timedelta(days=1), time(), CHINA).astimezone(UTC)


def check_overridden(body: schemas.PrescriptionBody, findings: list[schemas.Finding]) -> None:
    severe = [f for f in findings if f.severity == "severe"]
    if severe and not body.override_reason:
        raise ValidationFailed(
            "severe check findings: review them, or override with a reason",
            code="severe_findings",
            errors=[{"field": "override_reason", "reason": f.message} for f in severe],
            extra={"findings": [f.model_dump() for f in severe]},
        )


class Prescribing:
    def __init__(
        self,
        db: Database,
        signer: Signer,
        catalogue: Catalogue,
        record: PatientRecord,
        steps: PrescriptionSteps,
        views: Views,
        delivery: Deliveries,
    ) -> None:
        self.db = db
        self.signer = signer
        self.catalogue = catalogue
        self.record = record
        self.steps = steps
        self.views = views
        self.delivery = delivery

    # --- checking ---------------------------------------------------------------------

    async def _authorize(
        self,
        session: AsyncSession,
        requester: Requester,
        patient_id: int,
        pharmacy_id: int | None = None,
    ) -> People:
        """The prescriber, the patient and the pharmacy asked for (one read); refused
        without the prescribing right."""
        people = await self.record.people(session, requester.user_id, patient_id, pharmacy_id)
        prescriber = people.prescriber
        if prescriber.role not in PRESCRIBER_ROLES or not prescriber.can_prescribe:
            raise Forbidden("you do not hold the prescribing right", code="no_prescribing_right")
        return people

    async def _check_access(
        self, requester: Requester, patient_id: int, patient: PatientFacts | None
    ) -> PatientFacts:
        """A reason to read the patient's record (the access check is audited)."""
        # An unknown patient is refused exactly like one the prescriber may not see.
        await self.record.check_access(requester, patient_id, "prescribe")
        assert patient is not None, "the access check refuses an unknown patient"
        return patient

    async def _authorize_in(
        self,
        decide: AccessDecisions,
        tx: Tx,
        requester: Requester,
        patient_id: int,
        pharmacy_id: int | None,
    ) -> tuple[People, PatientFacts]:
        """:meth:`_authorize`, then the access check, inside the write ``tx``."""
        people = await self._authorize(tx.session, requester, patient_id, pharmacy_id)
        await self.record.check_access_in(decide, tx, requester, patient_id, "prescribe")
        assert people.patient is not None, "the access check refuses an unknown patient"
        return people, people.patient

    async def _findings(
        self, body: schemas.PrescriptionBody, patient: PatientFacts, chart: Chart
    ) -> list[schemas.Finding]:
        """Validate against the catalogue and the rules, and run the checks."""
        current = await self.catalogue.resolve(
            {code for med in chart.medications for code in med.codes},
            [m.label for m in chart.medications],
        )
        codes = {item.drug_code for item in body.items}
        drugs = await self.catalogue.drugs(codes | current)
        checks.check_items_known(body.items, drugs)
        checks.check_rules(
            body,
            drugs,
            conditions=chart.conditions,
            chronic=await self.catalogue.is_chronic(body.diagnosis.code),
            birth_date=patient.birth_date,
            guardian=patient.guardian_name,
            today=utcnow().astimezone(CHINA).date(),
        )
        return checks.find_problems(
            body.items,
            drugs,
            await self.catalogue.interactions(codes | current),
            chart.allergies,
            current,
        )

    async def check(
        self, requester: Requester, data: schemas.PrescriptionCreate
    ) -> schemas.CheckResult:
        """What the doctor sees before signing: rules enforced, findings listed."""
        async with self.db.read() as session:
            known = await self._authorize(session, requester, data.patient_id)
        patient = await self._check_access(requester, data.patient_id, known.patient)
        async with self.db.read() as session:
            chart = await self.record.chart(session, data.patient_id, weight=False)
        findings = await self._findings(data, patient, chart)
        return schemas.CheckResult(
            findings=findings, blocking=any(f.severity == "severe" for f in findings)
        )

    # --- signing ----------------------------------------------------------------------

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

    async def _checked(
        self,
        tx: Tx,
        body: schemas.PrescriptionBody,
        people: People,
        patient: PatientFacts,
        pharmacy_id: int | None,
    ) -> tuple[list[schemas.Finding], PharmacyViews | None]:
        """Inside the write: the record read once, the checks, the pharmacy and its view
        (the pharmacy's kind came with the people)."""
        chart = await self.record.chart(tx.session, patient.id, weight=pharmacy_id is not None)
        findings = await self._findings(body, patient, chart)
        check_overridden(body, findings)
        if pharmacy_id is None:
            return findings, None
        if not people.pharmacy_known:
            raise no_pharmacy(pharmacy_id)
        return findings, pharmacy_views(people, patient, chart)

    # --- create, revise, cancel --------------------------------------------------------

    async def create(
        self,
        requester: Requester,
        data: schemas.PrescriptionCreate,
        idempotency_key: str | None = None,
    ) -> schemas.PrescriptionOut:
        request_hash = hashlib.sha256(canonical_json_v1(data.model_dump(mode="json"))).hexdigest()
        try:
            async with self.record.decisions() as decide, self.db.transaction() as tx:
                if idempotency_key:
                    existing = await self._by_key(
                        tx.session, requester, idempotency_key, request_hash
                    )
                    if existing is not None:
                        return existing
                people, patient = await self._authorize_in(
                    decide, tx, requester, data.patient_id, data.pharmacy_id
                )
                return await self._insert(
                    tx, requester, data, people, patient, idempotency_key, request_hash
                )
        except IntegrityError:
            # A concurrent retry with the same key committed first: answer with its result.
            if not idempotency_key:
                raise
            async with self.db.read() as session:
                existing = await self._by_key(session, requester, idempotency_key, request_hash)
            if existing is None:
                raise
            return existing

    async def _insert(
        self,
        tx: Tx,
        requester: Requester,
        data: schemas.PrescriptionCreate,
        people: People,
        patient: PatientFacts,
        idempotency_key: str | None,
        request_hash: str,
    ) -> schemas.PrescriptionOut:
        findings, facts = await self._checked(tx, data, people, patient, data.pharmacy_id)
        row = Prescription(
            patient_id=patient.id,
            prescriber_id=requester.user_id,
            institution_id=requester.institution_id,
            status=PrescriptionStatus.SIGNED,
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

        async def then() -> None:
            if data.pharmacy_id is not None:
                await self.delivery.deliver(tx, row, requester, data.pharmacy_id, facts=facts)
            await self.steps.notify_users(tx, row, "created", None, patient_user_id=patient.user_id)

        await self.steps.lifecycle.record(
            tx,
            row,
            "create",
            requester,
            None,
            reason=data.override_reason,
            details={"kind": data.kind},
            audit_details={"findings": len(findings)},
            then=then,
        )
        return await self.views.out(tx.session, row, fresh=True)

    async def _by_key(
        self, session: AsyncSession, requester: Requester, key: str, request_hash: str
    ) -> schemas.PrescriptionOut | None:
        # Two columns, not the row: almost every key is new (the row is read only on a retry).
        found = (
            await session.execute(BY_KEY, {"prescriber_id": requester.user_id, "key": key})
        ).one_or_none()
        if found is None:
            return None
        if found.request_hash != request_hash:
            raise ValidationFailed(
                "this Idempotency-Key was used for a different prescription",
                code="idempotency_key_reused",
            )
        row = await session.get(Prescription, found.id)
        assert row is not None, "the row the key names"
        return await self.views.out(session, row)

    async def revise(
        self, requester: Requester, prescription_id: int, body: schemas.PrescriptionBody
    ) -> schemas.PrescriptionOut:
        """The prescriber changes and re-signs (after a rejection, or before review)."""
        await self.steps.expire_due(prescription_id)
        lifecycle = self.steps.lifecycle
        async with self.record.decisions() as decide, self.db.transaction() as tx:
            row = await load(tx.session, prescription_id)
            lifecycle.authorize(row, "revise", requester)
            people, patient = await self._authorize_in(
                decide, tx, requester, row.patient_id, row.pharmacy_id
            )
            findings, facts = await self._checked(tx, body, people, patient, row.pharmacy_id)
            lifecycle.check(row, "revise", requester)
            previous = row.status
            row.version += 1
            row.status = PrescriptionStatus.SIGNED
            row.review_reason = None
            row.reviewer_id = None
            await self._sign(tx, row, patient, requester, body, findings)
            pharmacy_id = row.pharmacy_id

            async def then() -> None:
                if pharmacy_id is not None:
                    await self.delivery.deliver(tx, row, requester, pharmacy_id, facts=facts)
                await self.steps.notify_users(
                    tx, row, "revised", None, patient_user_id=patient.user_id
                )

            await lifecycle.record(
                tx,
                row,
                "revise",
                requester,
                previous,
                reason=body.override_reason,
                details={"revised": True},
                then=then,
            )
            return await self.views.out(tx.session, row, fresh=True)

    async def cancel(
        self, requester: Requester, prescription_id: int, reason: str
    ) -> schemas.PrescriptionOut:
        await self.steps.expire_due(prescription_id)
        async with self.db.transaction() as tx:
            row = await load(tx.session, prescription_id)

            async def then() -> None:
                await self.steps.tell_pharmacy(tx, row, "cancelled", reason)
                await self.steps.notify_users(tx, row, "cancelled", reason)

            await self.steps.lifecycle.transition(
                tx, row, "cancel", requester, reason=reason, then=then
            )
            return await self.views.out(tx.session, row)
