"""The pharmacy's part: review (审方: start, approve, reject with a reason), ready for
pickup (备药完成), and dispensing.

Each refuses a prescription that no longer matches its signature, and each is one
conditional status change: of two pharmacists acting at once, one wins. The patient
hears in their inbox, in the same transaction, when the prescription is approved
(``prescription_approved``), ready (``prescription_ready``) and dispensed
(``prescription_dispensed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.core.auth import Requester
from server.core.db import Database, Tx
from server.core.errors import ValidationFailed
from server.identity.directory import Directory
from server.prescriptions import schemas
from server.prescriptions.lifecycle import PrescriptionSteps, load
from server.prescriptions.models import Dispensation, Prescription
from server.prescriptions.views import Views

if TYPE_CHECKING:
    from server.inbox.service import InboxService

# inbox kind -> (zh title, en title); {pharmacy} is the chosen pharmacy's name.
TOLD = {
    "prescription_approved": ("处方已审核通过，{pharmacy}正在备药", "Prescription approved"),
    "prescription_ready": ("药已备好，请到{pharmacy}取药", "Ready for pickup"),
    "prescription_dispensed": ("处方已在{pharmacy}发药", "Prescription dispensed"),
}


def check_dispensed_items(row: Prescription, data: schemas.DispenseRequest) -> None:
    """What is handed out is on the prescription, at most in the quantity prescribed."""
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


class PharmacyReview:
    def __init__(
        self,
        db: Database,
        steps: PrescriptionSteps,
        views: Views,
        inbox: InboxService,
        directory: Directory,
    ) -> None:
        self.db = db
        self.steps = steps
        self.views = views
        self.inbox = inbox
        self.directory = directory

    async def tell_patient(self, tx: Tx, row: Prescription, kind: str) -> None:
        """The patient's inbox item of an approval, a pickup or a dispensing."""
        pharmacy = None
        if row.pharmacy_id is not None:
            pharmacy = await self.directory.institution(tx.session, row.pharmacy_id)
        name = pharmacy.name if pharmacy is not None else "药房"
        zh, en = TOLD[kind]
        await self.inbox.notify(
            tx,
            kind=kind,
            title=zh.format(pharmacy=name),
            patients=[row.patient_id],
            resource=f"Prescription/{row.id}",
            data={
                "prescription_id": row.id,
                "status": row.status,
                "pharmacy_id": row.pharmacy_id,
                "pharmacy_name": name,
                "title_en": en,
            },
        )

    async def review(
        self, requester: Requester, prescription_id: int, data: schemas.ReviewRequest
    ) -> schemas.PrescriptionOut:
        await self.steps.expire_due(prescription_id)
        lifecycle = self.steps.lifecycle
        async with self.db.transaction() as tx:
            row = await load(tx.session, prescription_id)
            lifecycle.authorize(row, data.decision, requester)
            await self.views.check_signature(tx.session, row)
            target = lifecycle.step(data.decision).target

            async def then() -> None:
                await self.steps.notify_users(tx, row, target, data.reason)
                if data.decision == "approve":
                    await self.tell_patient(tx, row, "prescription_approved")

            await lifecycle.transition(
                tx,
                row,
                data.decision,
                requester,
                reason=data.reason,
                values={"reviewer_id": requester.user_id, "review_reason": data.reason},
                then=then,
            )
            return await self.views.out(tx.session, row, pharmacy=True)

    async def ready(
        self, requester: Requester, prescription_id: int, data: schemas.ReadyRequest
    ) -> schemas.PrescriptionOut:
        """The chosen pharmacy's pharmacist: the drugs are ready for pickup (备药完成)."""
        await self.steps.expire_due(prescription_id)
        lifecycle = self.steps.lifecycle
        async with self.db.transaction() as tx:
            row = await load(tx.session, prescription_id)
            lifecycle.authorize(row, "ready", requester)
            await self.views.check_signature(tx.session, row)

            async def then() -> None:
                await self.steps.notify_users(tx, row, "ready", data.note)
                await self.tell_patient(tx, row, "prescription_ready")

            await lifecycle.transition(tx, row, "ready", requester, reason=data.note, then=then)
            return await self.views.out(tx.session, row, pharmacy=True)

    async def dispense(
        self, requester: Requester, prescription_id: int, data: schemas.DispenseRequest
    ) -> schemas.PrescriptionOut:
        await self.steps.expire_due(prescription_id)
        lifecycle = self.steps.lifecycle
        async with self.db.transaction() as tx:
            row = await load(tx.session, prescription_id)
            lifecycle.authorize(row, "dispense", requester)
            await self.views.check_signature(tx.session, row)
            check_dispensed_items(row, data)

            async def then() -> None:
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
                await self.steps.notify_users(tx, row, "dispensed", None)
                await self.tell_patient(tx, row, "prescription_dispensed")

            # The conditional UPDATE is the guard: of two concurrent dispenses one matches.
            await lifecycle.transition(
                tx,
                row,
                "dispense",
                requester,
                reason=data.note,
                details={"items": len(data.items)},
                then=then,
            )
            return await self.views.out(tx.session, row, pharmacy=True)
