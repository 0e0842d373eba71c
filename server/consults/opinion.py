"""The consult opinion: written and signed (Ed25519) by the host, returned into the
requesting institution's record as a DocumentReference, checked again on every read."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.consults import schemas
from server.consults.guards import (
    ConsultAccess,
    check_participant,
    get_consult,
    get_participant,
    may_view,
)
from server.consults.lifecycle import ConsultLifecycle
from server.consults.models import Consult
from server.core.auth import Requester
from server.core.canonical import canonical_jcs
from server.core.db import Database, utcnow
from server.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.core.signing import Signature, Signer, signed_bytes
from server.inbox.service import InboxService
from server.records.service import RecordsService

OPINION_DOC_TYPE = {
    "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}],
    "text": "会诊意见",
}


class ConsultOpinion:
    def __init__(
        self,
        db: Database,
        records: RecordsService,
        signer: Signer,
        lifecycle: ConsultLifecycle,
        checks: ConsultAccess,
        inbox: InboxService | None = None,
    ) -> None:
        self.db = db
        self.records = records
        self.signer = signer
        self.lifecycle = lifecycle
        self.checks = checks
        # The patient hears that the opinion is there (``opinion_available``).
        self.inbox = inbox

    async def write(
        self, requester: Requester, consult_id: int, data: schemas.OpinionIn
    ) -> schemas.OpinionOut:
        async with self.db.transaction() as tx:
            consult, _ = await check_participant(tx.session, consult_id, requester, lock=True)
            # Before the opinion is signed: the host, and a consult in session (403, 409).
            self.lifecycle.steps.check(consult, "opinion", requester)
            opinion = {
                "consult_id": consult.id,
                "patient_id": consult.patient_id,
                "author_id": requester.user_id,
                "author_institution_id": consult.invited_institution_id,
                "requesting_institution_id": consult.requesting_institution_id,
                "findings": data.findings,
                "diagnostic_opinion": data.diagnostic_opinion,
                "treatment_advice": data.treatment_advice,
                "refer": data.refer,
                "refer_note": data.refer_note,
                "written_at": utcnow().isoformat(),
            }
            signature = await self.signer.sign(tx.session, requester.user_id, opinion)
            document = await self.records.add_resource(
                tx,
                patient_id=consult.patient_id,
                institution_id=consult.requesting_institution_id,
                resource=opinion_document(opinion, signature),
            )
            await self.lifecycle.move(
                tx,
                consult,
                "opinion",
                requester,
                {"document": f"DocumentReference/{document['id']}", "refer": data.refer},
                values={
                    "opinion": opinion,
                    "opinion_signature": signature.model_dump(mode="json"),
                    "opinion_document_id": str(document["id"]),
                },
                guarded=False,
            )
            if self.inbox is not None:
                await self.inbox.notify(
                    tx,
                    kind="opinion_available",
                    title="会诊意见已出具",
                    patients=[consult.patient_id],
                    resource=f"Consult/{consult.id}",
                    data={"consult_id": consult.id},
                )
            return schemas.OpinionOut(
                consult_id=consult.id,
                opinion=opinion,
                signature=consult.opinion_signature,
                document_id=consult.opinion_document_id,
                verified=True,
            )

    async def get(self, requester: Requester, consult_id: int) -> schemas.OpinionOut:
        async with self.db.read() as session:
            consult = await get_consult(session, consult_id)
            member = await get_participant(session, consult_id, requester.user_id)
        if not may_view(consult, requester, member is not None):
            raise NotFound(f"no consult {consult_id}")
        await self.checks.check_not_revoked(requester, consult, "consult.opinion_read")
        async with self.db.read() as session:
            if consult.opinion is None or consult.opinion_signature is None:
                raise NotFound("no opinion has been written yet")
            signature = Signature.model_validate(consult.opinion_signature)
            verified = await self.signer.verify(
                session, consult.opinion["author_id"], signature, consult.opinion
            )
        return schemas.OpinionOut(
            consult_id=consult.id,
            opinion=consult.opinion,
            signature=consult.opinion_signature,
            document_id=consult.opinion_document_id,
            verified=verified,
        )

    async def referral_basis(
        self, requester: Requester, consult_id: int, patient_id: int
    ) -> dict[str, Any]:
        """What a referral made from this consult carries: its frozen snapshot and opinion.

        Only the inviting doctor decides (the treating institution keeps decision
        authority), and only once the signed opinion recommends referral.
        """
        async with self.db.read() as session:
            consult = await get_consult(session, consult_id)
        if consult.requester_id != requester.user_id:
            raise Forbidden(
                "only the doctor who requested the consult turns it into a referral",
                code="not_the_requester",
            )
        if consult.opinion is None or not consult.opinion.get("refer"):
            raise Conflict(
                "the consult opinion does not recommend referral",
                code="referral_not_recommended",
            )
        if patient_id != consult.patient_id:
            raise ValidationFailed.field("patient_id", "is not the consult's patient")
        await self.checks.check_not_revoked(requester, consult, "consult.referral")
        summary = consult.opinion.get("diagnostic_opinion")
        return {
            "consult_id": consult.id,
            "snapshot": consult.snapshot,
            "opinion": consult.opinion,
            "summary": f"会诊意见：{summary}" if summary else None,
        }

    async def verify_all(self, batch: int = 500) -> tuple[int, list[tuple[int, str]]]:
        """Check every signed opinion against its signature and its consult row.

        Returns how many were checked and ``(consult id, problem)`` for each that
        was changed after signing (``yihao verify-signatures``).
        """
        checked, broken, last = 0, [], 0
        async with self.db.read() as session:
            while True:
                rows = (
                    await session.scalars(
                        select(Consult)
                        .where(Consult.id > last, Consult.opinion.is_not(None))
                        .order_by(Consult.id)
                        .limit(batch)
                    )
                ).all()
                for consult in rows:
                    checked, last = checked + 1, consult.id
                    problem = await self._problem(session, consult)
                    if problem:
                        broken.append((consult.id, problem))
                if len(rows) < batch:
                    return checked, broken

    async def _problem(self, session: AsyncSession, consult: Consult) -> str | None:
        opinion = consult.opinion or {}
        if consult.opinion_signature is None:
            return "opinion without a signature"
        if (
            opinion.get("consult_id") != consult.id
            or opinion.get("patient_id") != consult.patient_id
            or opinion.get("author_id") != consult.host_id
        ):
            return "opinion does not belong to this consult"
        try:
            signature = Signature.model_validate(consult.opinion_signature)
        except ValueError:
            return "signature is malformed"
        if not await self.signer.verify(session, opinion["author_id"], signature, opinion):
            return "opinion does not match its signature"
        return None


def opinion_document(opinion: dict[str, Any], signature: Signature) -> dict[str, Any]:
    """The signed opinion as a FHIR DocumentReference: the opinion and its signature attached."""

    def attach(title: str, data: bytes) -> dict[str, Any]:
        encoded = base64.b64encode(data).decode()
        return {"attachment": {"contentType": "application/json", "title": title, "data": encoded}}

    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "final",
        "type": OPINION_DOC_TYPE,
        "date": opinion["written_at"],
        "description": f"远程会诊意见 (consult {opinion['consult_id']})",
        "content": [
            # The exact bytes the signature covers, in the form the signature names.
            attach("consult-opinion.json", signed_bytes(signature, opinion)),
            attach("signature.json", canonical_jcs(signature.model_dump(mode="json"))),
        ],
    }
