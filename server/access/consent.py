"""The patient's consents and the content policy they make for each reader.

A patient's explicit revocation for an institution removes every reason but ``self``
and ``emergency`` for it, from the next request on. Consent rows also carry the
sensitive categories the patient excluded; readers other than the patient see the
record without them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.access.models import Consent
from server.access.policy import CLOSED, OPEN, ConsentState, ContentPolicy
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, utcnow
from server.core.errors import Forbidden

# Called (patient, institution) after a patient revoked sharing with an institution.
RevocationListener = Callable[[int, int], Awaitable[None]]


class Consents:
    """Setting and reading consents; the content policy every travelling content obeys."""

    db: Database
    audit: AuditLog
    revocation_listeners: tuple[RevocationListener, ...]

    async def audit_refusal(
        self,
        requester: Requester,
        patient_id: int | None,
        *,
        action: str,
        resource: str | None,
        reason: str,
    ) -> None:
        """A refused read of patient data, in the patient's access log (when there is one)."""
        details: dict[str, Any] = {"action": action}
        if requester.institution_id is not None:
            details["institution_id"] = requester.institution_id
        await self.audit.record_alone(
            "record.access",
            actor=requester,
            outcome="denied",
            patient_id=patient_id,
            resource=resource,
            reason=reason,
            details=details,
        )

    async def excluded_categories(self, requester: Requester, patient_id: int) -> frozenset[str]:
        """Categories this reader must not see (the patient always sees everything)."""
        if requester.role == "patient" or requester.institution_id is None:
            return frozenset()
        async with self.db.read() as session:
            excluded = await session.scalar(
                select(Consent.excluded_categories).where(
                    Consent.patient_id == patient_id,
                    Consent.institution_id == requester.institution_id,
                )
            )
        return frozenset(excluded or ())

    async def set_consent(
        self,
        requester: Requester,
        patient_id: int,
        institution_id: int,
        *,
        granted: bool,
        excluded_categories: list[str],
    ) -> ConsentState:
        """The patient's own decision; effective from the next request."""
        if requester.role != "patient" or requester.patient_id != patient_id:
            raise Forbidden("only the patient decides about sharing their record")
        now = utcnow()
        async with self.db.transaction() as tx:
            consent = await tx.session.scalar(
                select(Consent).where(
                    Consent.patient_id == patient_id, Consent.institution_id == institution_id
                )
            )
            if consent is None:
                consent = Consent(patient_id=patient_id, institution_id=institution_id)
                tx.session.add(consent)
            consent.granted = granted
            consent.excluded_categories = sorted(set(excluded_categories))
            consent.updated_at = now
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "consent.grant" if granted else "consent.revoke",
                actor=requester,
                patient_id=patient_id,
                resource=f"Consent/{consent.id}",
                details={
                    "institution_id": institution_id,
                    "excluded_categories": consent.excluded_categories,
                },
            )
            state = ConsentState(institution_id, granted, consent.excluded_categories, now)
        if not granted:  # after commit: live views of the patient close for that institution
            for listener in self.revocation_listeners:
                await listener(patient_id, institution_id)
        return state

    async def list_consents(self, patient_id: int) -> list[ConsentState]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Consent).where(Consent.patient_id == patient_id).order_by(Consent.id)
            )
            return [
                ConsentState(c.institution_id, c.granted, list(c.excluded_categories), c.updated_at)
                for c in rows
            ]

    async def content_policy(
        self, reader: Requester | int, patient_id: int, *, session: AsyncSession | None = None
    ) -> ContentPolicy:
        """What record content about the patient may reach a reader (or an institution, by id).

        The patient always sees everything; a reader without an institution has no
        consent row to honour (their role decides elsewhere whether they read at all).
        Given a ``session``, read in it (the caller's read of what its checks need).
        """
        return (await self.content_policies(reader, [patient_id], session=session))[patient_id]

    async def content_policies(
        self,
        reader: Requester | int,
        patient_ids: Sequence[int],
        *,
        session: AsyncSession | None = None,
    ) -> dict[int, ContentPolicy]:
        """:meth:`content_policy` for several patients in one query (lists of consults, …)."""
        wanted = set(patient_ids)
        if isinstance(reader, Requester):
            if reader.role == "patient":
                return {p: OPEN if reader.patient_id == p else CLOSED for p in wanted}
            if reader.institution_id is None:
                return dict.fromkeys(wanted, OPEN)
            institution_id = reader.institution_id
        else:
            institution_id = reader
        policies = dict.fromkeys(wanted, OPEN)
        if not wanted:
            return policies
        query = select(Consent.patient_id, Consent.granted, Consent.excluded_categories).where(
            Consent.patient_id.in_(sorted(wanted)), Consent.institution_id == institution_id
        )
        if session is not None:
            rows = list(await session.execute(query))
        else:
            async with self.db.read() as own:
                rows = list(await own.execute(query))
        for patient_id, granted, excluded in rows:
            policies[patient_id] = ContentPolicy(revoked=not granted, excluded=frozenset(excluded))
        return policies

    async def check_not_revoked(
        self, requester: Requester, patient_id: int, *, action: str, resource: str
    ) -> ContentPolicy:
        """The reader's policy; a revoked institution is refused, audited with the patient."""
        policy = await self.content_policy(requester, patient_id)
        if policy.revoked:
            raise await self.record_refusal(requester, patient_id, action=action, resource=resource)
        return policy

    async def record_refusal(
        self, requester: Requester, patient_id: int, *, action: str, resource: str
    ) -> Forbidden:
        """Audit (into the patient's access log) that revoked content was kept from a reader."""
        await self.audit_refusal(
            requester, patient_id, action=action, resource=resource, reason="consent_revoked"
        )
        refused = Forbidden(
            "the patient has revoked sharing with your institution", code="consent_revoked"
        )
        refused.audited = True
        return refused
