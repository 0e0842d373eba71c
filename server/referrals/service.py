"""Two-way referrals (双向转诊): up to a tertiary department, back down to a community clinic.

The steps are in :mod:`server.referrals.lifecycle`. Every transition is one conditional ``UPDATE … WHERE status IN (<allowed>)``
(:class:`server.core.lifecycle.Lifecycle`): an out-of-order or racing transition
changes nothing and is a 409. Each step is kept in the referral's history,
audited, and announced through the inbox
to the people it concerns (the receiving desk, the referring doctor, the
patient). The receiving institution's record-access window opens with the
referral and closes when it ends (declined, cancelled, expired, completed).
A down-referral is "accepted" when the community doctor acknowledges it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from server.access import AccessService, ContentPolicy, withheld_marker
from server.config import Settings
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, utcnow
from server.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.core.history import HistoryEntry
from server.core.leases import Periodic
from server.core.roles import REFERRAL_DESK_ROLES, REFERRING_ROLES, Role
from server.identity.directory import Directory
from server.inbox.service import InboxService
from server.records.service import RecordsService
from server.referrals import schemas
from server.referrals.lifecycle import (
    ENDED,
    OPEN,
    RECEIVING_STEPS,
    check_allowed,
    referral_lifecycle,
)
from server.referrals.models import Referral, ReferralHistory, ReferralStatus
from server.scheduling.service import BookedAppointment, SchedulingService

logger = logging.getLogger(__name__)

# A referral carries the reason, the working diagnosis and the summary: only the
# clinicians of the two institutions read and answer it, never their administrators
# (who keep the schedules the referral is booked into) nor pharmacists.
# Which kinds of institution send and receive in each direction.
SENDS = {"up": frozenset({"community", "secondary"}), "down": frozenset({"tertiary", "secondary"})}
RECEIVES = {"up": frozenset({"tertiary", "secondary"}), "down": frozenset({"community"})}
# What a reader of an institution the patient revoked no longer gets (see ReferralService._shown).
CLINICAL_TEXT = ("reason", "working_diagnosis", "summary", "discharge_summary", "consult_snapshot")
TITLES = {
    "requested": "New referral",
    "accepted": "Referral accepted",
    "scheduled": "Referral scheduled",
    "arrived": "Referred patient arrived",
    "completed": "Referral completed",
    "declined": "Referral declined",
    "cancelled": "Referral cancelled",
    "expired": "Referral expired unanswered",
}


def history_entry(row: ReferralHistory) -> HistoryEntry:
    return HistoryEntry(
        at=row.at,
        from_status=row.from_status,
        to_status=row.to_status,
        actor_user_id=row.actor_user_id,
        reason=row.note,
        note=row.note,
    )


def referral_out(referral: Referral) -> schemas.ReferralOut:
    return schemas.ReferralOut(
        id=referral.id,
        direction=referral.direction,
        patient_id=referral.patient_id,
        purpose=referral.purpose,
        from_institution_id=referral.from_institution_id,
        from_user_id=referral.from_user_id,
        to_institution_id=referral.to_institution_id,
        to_department_id=referral.to_department_id,
        to_user_id=referral.to_user_id,
        reason=referral.reason,
        working_diagnosis=referral.working_diagnosis,
        urgency=referral.urgency,
        summary=referral.summary,
        attachments=referral.attachments,
        discharge_summary=referral.discharge_summary,
        follow_up=referral.follow_up,
        consult_id=referral.consult_id,
        consult_snapshot=referral.consult_snapshot,
        status=referral.status,
        status_reason=referral.status_reason,
        appointment_id=referral.appointment_id,
        superseded_by_id=referral.superseded_by_id,
        expires_at=referral.expires_at,
        created_at=referral.created_at,
        updated_at=referral.updated_at,
        history=[history_entry(row) for row in referral.history],
    )


class ReferralService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        access: AccessService,
        records: RecordsService,
        inbox: InboxService,
        scheduling: SchedulingService,
        directory: Directory,
    ) -> None:
        self.db = db
        self.audit = audit
        self.directory = directory
        self.lifecycle = referral_lifecycle(audit)
        self.access = access
        self.records = records
        self.inbox = inbox
        self.scheduling = scheduling
        self.expiry = timedelta(hours=settings.referral_expiry_hours)
        self.expiry_interval = settings.referral_expiry_interval_seconds

    # --- reading ----------------------------------------------------------------

    @staticmethod
    async def _load(session: AsyncSession, referral_id: int) -> Referral:
        referral = await session.scalar(
            select(Referral)
            .options(selectinload(Referral.history))
            .where(Referral.id == referral_id)
            .execution_options(populate_existing=True)
        )
        if referral is None:
            raise NotFound(f"no referral {referral_id}", code="referral_not_found")
        return referral

    @staticmethod
    def _check_party(requester: Requester, referral: Referral) -> None:
        """Who sees a referral: the patient, and clinicians of the sending or receiving institution."""
        if requester.role == Role.PATIENT:
            allowed = requester.patient_id == referral.patient_id
        else:
            allowed = requester.role in REFERRAL_DESK_ROLES and requester.institution_id in (
                referral.from_institution_id,
                referral.to_institution_id,
            )
        if not allowed:
            raise NotFound(f"no referral {referral.id}", code="referral_not_found")

    async def get(self, requester: Requester, referral_id: int) -> schemas.ReferralOut:
        async with self.db.transaction() as tx:
            referral = await self._load(tx.session, referral_id)
            self._check_party(requester, referral)
            await self.audit.record(
                tx.session,
                "referral.read",
                actor=requester,
                patient_id=referral.patient_id,
                resource=f"Referral/{referral.id}",
            )
            out = referral_out(referral)
        return await self._shown(requester, out, audit=True)

    async def _shown(
        self,
        requester: Requester,
        out: schemas.ReferralOut,
        policy: ContentPolicy | None = None,
        *,
        audit: bool = False,
    ) -> schemas.ReferralOut:
        """The referral as this reader may see it: the patient's consent applied to its text.

        A revoked institution keeps the workflow (status, times, who, the appointment) and
        loses the clinical text; excluded categories leave the attachments and the consult
        snapshot, counted in ``withheld``. Called outside the caller's transaction.
        """
        if policy is None:
            policy = await self.access.content_policy(requester, out.patient_id)
        if policy.revoked:
            if audit:
                await self.access.record_refusal(
                    requester, out.patient_id, action="referral.read", resource=f"Referral/{out.id}"
                )
            return out.model_copy(
                update={
                    **dict.fromkeys(CLINICAL_TEXT),
                    "attachments": [],
                    "follow_up": [],
                    "withheld": {"fields": [*CLINICAL_TEXT, "attachments", "follow_up"],
                                 "reason": "consent"},
                }
            )  # fmt: skip
        attachments, left_out = await self.records.withhold_items(policy, out.attachments)
        snapshot = out.consult_snapshot
        if snapshot is not None and isinstance(snapshot.get("snapshot"), dict):
            frozen = await self.records.withhold_snapshot(policy, snapshot["snapshot"])
            left_out += int((frozen.get("withheld") or {}).get("count", 0))
            snapshot = snapshot | {"snapshot": frozen}
        return out.model_copy(
            update={
                "attachments": attachments,
                "consult_snapshot": snapshot,
                "withheld": withheld_marker(left_out),
            }
        )

    async def list_referrals(
        self, requester: Requester, query: schemas.ReferralQuery
    ) -> list[schemas.ReferralOut]:
        stmt = select(Referral).options(selectinload(Referral.history))
        if requester.role == Role.PATIENT:
            stmt = stmt.where(Referral.patient_id == requester.patient_id)
        elif requester.role in REFERRAL_DESK_ROLES and requester.institution_id is not None:
            column = (
                Referral.to_institution_id
                if query.box == "received"
                else Referral.from_institution_id
            )
            stmt = stmt.where(column == requester.institution_id)
        else:
            raise Forbidden("referrals are for care staff and their patients")
        if query.status is not None:
            stmt = stmt.where(Referral.status == query.status)
        async with self.db.transaction() as tx:
            rows = list(await tx.session.scalars(stmt.order_by(Referral.id.desc()).limit(200)))
            await self.audit.record(
                tx.session,
                "referral.list",
                actor=requester,
                details={"box": query.box, "count": len(rows)},
            )
            listed = [referral_out(r) for r in rows]
        policies = await self.access.content_policies(requester, [r.patient_id for r in listed])
        return [await self._shown(requester, out, policies[out.patient_id]) for out in listed]

    # --- creating ---------------------------------------------------------------

    async def create(
        self, requester: Requester, data: schemas.ReferralCreate
    ) -> schemas.ReferralOut:
        return await self._create(requester, data, consult_id=None, snapshot=None)

    async def create_from_consult(
        self,
        requester: Requester,
        consult_id: int,
        snapshot: dict[str, Any],
        data: schemas.ReferralCreate,
    ) -> schemas.ReferralOut:
        """Turn a consult whose opinion recommends referral into a referral, in one step.

        The consult's snapshot travels with the referral; its summary stands in for a
        missing one. The consults capability calls this with plain values.
        """
        if data.summary is None and isinstance(snapshot.get("summary"), str):
            data = data.model_copy(update={"summary": snapshot["summary"]})
        return await self._create(requester, data, consult_id=consult_id, snapshot=snapshot)

    async def _check_create(
        self, session: AsyncSession, requester: Requester, data: schemas.ReferralCreate
    ) -> None:
        if requester.role not in REFERRING_ROLES or requester.institution_id is None:
            raise Forbidden("only doctors refer patients")
        source = await self.directory.institution(session, requester.institution_id)
        target = await self.directory.institution(session, data.to_institution_id)
        if target is None:
            raise ValidationFailed.field(
                "to_institution_id", f"no institution {data.to_institution_id}"
            )
        if source is None or source.kind not in SENDS[data.direction]:
            raise ValidationFailed.field(
                "direction",
                f"a {source.kind if source else 'unknown'} institution does not send "
                f"{data.direction}-referrals",
                code="institution_cannot_send",
            )
        if target.kind not in RECEIVES[data.direction] or target.id == source.id:
            raise ValidationFailed.field(
                "to_institution_id",
                f"a {target.kind} institution cannot receive a {data.direction}-referral",
                code="institution_cannot_receive",
            )
        if data.to_department_id is not None:
            department = await self.directory.department(session, data.to_department_id)
            if department is None or department.institution_id != target.id:
                raise ValidationFailed.field(
                    "to_department_id", "not a department of the receiving institution"
                )
        if data.to_user_id is not None:
            user = await self.directory.user(session, data.to_user_id)
            if user is None or user.institution_id != target.id:
                raise ValidationFailed.field(
                    "to_user_id", "not a practitioner of the receiving institution"
                )

    async def _create(
        self,
        requester: Requester,
        data: schemas.ReferralCreate,
        *,
        consult_id: int | None,
        snapshot: dict[str, Any] | None,
    ) -> schemas.ReferralOut:
        async with self.db.read() as session:
            await self._check_create(session, requester, data)
        assert requester.institution_id is not None
        # An unknown patient is refused like one outside the institution's care.
        if not await self.access.has_care_relationship(data.patient_id, requester.institution_id):
            refused = Forbidden(
                "your institution has no care relationship with this patient",
                code="no_care_relationship",
            )
            refused.patient_id = data.patient_id
            raise refused
        await self._check_attachments(data.patient_id, data.attachments)
        now = utcnow()
        async with self.db.transaction() as tx:
            referral = Referral(
                **data.model_dump(exclude={"follow_up"}),
                follow_up=[task.model_dump(mode="json") for task in data.follow_up],
                from_institution_id=requester.institution_id,
                from_user_id=requester.user_id,
                consult_id=consult_id,
                consult_snapshot=snapshot,
                status=ReferralStatus.REQUESTED,
                expires_at=now + self.expiry,
                created_at=now,
                updated_at=now,
            )
            tx.session.add(referral)
            await tx.session.flush()

            async def then() -> None:
                await self.access.open_window(
                    tx,
                    patient_id=referral.patient_id,
                    institution_id=referral.to_institution_id,
                    source="referral",
                    source_id=referral.id,
                )
                await self._notify(
                    tx,
                    referral,
                    users=[referral.to_user_id] if referral.to_user_id else [],
                    desk=referral.to_user_id is None,
                    patient=True,
                )
                await self._supersede(tx, requester, referral)

            await self.lifecycle.record(
                tx,
                referral,
                "create",
                requester,
                None,
                reason=f"from consult {consult_id}" if consult_id else None,
                audit_details={"direction": data.direction,
                               "to_institution_id": data.to_institution_id,
                               "consult_id": consult_id},
                then=then,
            )  # fmt: skip
            out = referral_out(await self._load(tx.session, referral.id))
        return await self._shown(requester, out)

    async def _check_attachments(self, patient_id: int, refs: list[str]) -> None:
        """Attached items must be entries of this patient's shared record."""
        wanted: dict[str, set[str]] = {}
        for ref in refs:
            rtype, _, rid = ref.partition("/")
            wanted.setdefault(rtype, set()).add(rid)
        for rtype, ids in sorted(wanted.items()):
            have = {str(r.get("id")) for r in await self.records.resources(patient_id, rtype)}
            missing = sorted(ids - have)
            if missing:
                raise ValidationFailed.field(
                    "attachments",
                    f"not in the patient's record: {', '.join(f'{rtype}/{m}' for m in missing)}",
                    code="unknown_record_item",
                )

    async def _supersede(self, tx: Tx, requester: Requester, newer: Referral) -> None:
        older = await tx.session.scalars(
            select(Referral).where(
                Referral.patient_id == newer.patient_id,
                Referral.direction == newer.direction,
                Referral.purpose == newer.purpose,
                Referral.status.in_(OPEN),
                Referral.id != newer.id,
            )
        )
        for referral in list(older):
            await self._transition(
                tx,
                requester,
                referral,
                "cancel",
                f"superseded by referral {newer.id}",
                values={"superseded_by_id": newer.id},
                guarded=False,
            )

    # --- transitions ------------------------------------------------------------

    async def _transition(
        self,
        tx: Tx,
        actor: Requester | None,
        referral: Referral,
        action: str,
        note: str | None,
        *,
        values: dict[str, Any] | None = None,
        guarded: bool = True,
    ) -> None:
        """Move the referral along; 409 when its current status does not allow the action."""

        async def then() -> None:
            if referral.status in ENDED:
                await self.access.close_window(tx, source="referral", source_id=referral.id)
            if action == "arrive":
                # The patient has now been seen there: a lasting care relationship.
                await self.access.record_encounter(
                    tx,
                    patient_id=referral.patient_id,
                    institution_id=referral.to_institution_id,
                    reason="referral",
                )
            if action == "cancel" and referral.appointment_id is not None and actor is not None:
                await self.scheduling.cancel_booked(
                    tx, actor, referral.appointment_id, f"referral {referral.id} cancelled"
                )
            # The side that did not act hears about it; the patient always does.
            receiving_acted = action in RECEIVING_STEPS
            await self._notify(
                tx,
                referral,
                users=[referral.from_user_id] if receiving_acted or actor is None else [],
                desk=not receiving_acted,
                patient=True,
            )

        await self.lifecycle.transition(
            tx,
            referral,
            action,
            actor,
            reason=note,
            values={"status_reason": note, **(values or {})},
            then=then,
            guarded=guarded,
        )

    async def _notify(
        self, tx: Tx, referral: Referral, *, users: Sequence[int], desk: bool, patient: bool
    ) -> None:
        data: dict[str, Any] = {
            "referral_id": referral.id,
            "direction": referral.direction,
            "status": referral.status,
            "purpose": referral.purpose,
            "urgency": referral.urgency,
            "patient_id": referral.patient_id,
            "from_institution_id": referral.from_institution_id,
            "to_institution_id": referral.to_institution_id,
            "appointment_id": referral.appointment_id,
            "note": referral.status_reason,
        }
        if referral.direction == "down":
            data["follow_up"] = referral.follow_up
        await self.inbox.notify(
            tx,
            kind=f"referral.{referral.status}",
            title=TITLES[referral.status],
            users=users,
            institutions=[referral.to_institution_id] if desk else [],
            patients=[referral.patient_id] if patient else [],
            resource=f"Referral/{referral.id}",
            data=data,
        )

    async def _act(
        self,
        requester: Requester,
        referral_id: int,
        action: str,
        note: str | None = None,
        slot_id: int | None = None,
    ) -> schemas.ReferralOut:
        """One step by one side; with a slot, the place is booked and the referral scheduled."""
        async with self.db.transaction() as tx:
            referral = await self._load(tx.session, referral_id)
            self._check_party(requester, referral)
            self.lifecycle.authorize(referral, action, requester)
            check_allowed(referral, action)
            if action != "schedule":
                await self._transition(tx, requester, referral, action, note)
            if slot_id is not None:
                booked = await self.scheduling.book_for_referral(
                    tx,
                    requester,
                    slot_id,
                    referral.patient_id,
                    referral_id=referral.id,
                    institution_id=referral.to_institution_id,
                    department_id=referral.to_department_id,
                )
                await self._transition(
                    tx, requester, referral, "schedule", note, values={"appointment_id": booked.id}
                )
            out = referral_out(await self._load(tx.session, referral.id))
        return await self._shown(requester, out)

    async def accept(
        self, requester: Requester, referral_id: int, data: schemas.AcceptRequest
    ) -> schemas.ReferralOut:
        """The receiving desk accepts (booking a slot at once if given); going down: acknowledge."""
        return await self._act(requester, referral_id, "accept", data.note, slot_id=data.slot_id)

    async def schedule(
        self, requester: Requester, referral_id: int, slot_id: int
    ) -> schemas.ReferralOut:
        return await self._act(requester, referral_id, "schedule", slot_id=slot_id)

    async def transition(
        self, requester: Requester, referral_id: int, action: str, note: str | None
    ) -> schemas.ReferralOut:
        """decline, arrive, complete (receiving side) or cancel (referring side)."""
        return await self._act(requester, referral_id, action, note)

    async def on_slots_cancelled(self, tx: Tx, appointments: list[BookedAppointment]) -> None:
        """A hospital-cancelled slot sends its referrals back to be scheduled again."""
        for appointment in appointments:
            if appointment.referral_id is None:
                continue
            referral = await self._load(tx.session, appointment.referral_id)
            if (
                referral.status == ReferralStatus.SCHEDULED
                and referral.appointment_id == appointment.id
            ):
                await self._transition(
                    tx,
                    None,
                    referral,
                    "unschedule",
                    "the slot was cancelled",
                    values={"appointment_id": None},
                )

    # --- expiry -----------------------------------------------------------------

    async def expire_overdue(self, now: datetime | None = None) -> list[int]:
        """Expire unanswered referrals past their time; safe to run anywhere, any number of times."""
        now = now or utcnow()
        async with self.db.read() as session:
            due = list(
                await session.scalars(
                    select(Referral.id).where(
                        Referral.status == ReferralStatus.REQUESTED,
                        Referral.expires_at <= now,
                    )
                )
            )
        expired: list[int] = []
        for referral_id in due:
            try:
                async with self.db.transaction() as tx:
                    referral = await self._load(tx.session, referral_id)
                    await self._transition(tx, None, referral, "expire", "no answer in time")
                expired.append(referral_id)
            except Conflict:
                continue  # answered (or expired by another runner) meanwhile
        if expired:
            logger.info("referrals expired", extra={"count": len(expired)})
        return expired

    def periodic_jobs(self) -> list[Periodic]:
        """The background job: expire overdue referrals every interval, on one node per round."""
        if self.expiry_interval <= 0:
            return []

        async def expire(tick: int) -> None:
            await self.expire_overdue()

        return [Periodic("referrals.expire", self.expiry_interval, expire)]
