"""The patient index: one account per resident, every institution's numbers linked to it.

Registering a resident at an institution creates the account on the first
visit anywhere and links the institution's record and card numbers to it
(a second institution links to the same account). The registrant must send the
resident's name as registered (a mismatch is refused without revealing the
name) and learns nothing of the account but its id; registering starts **no**
care relationship (``server.identity.care`` says how one is earned). Two accounts found to be one person are merged: the
duplicate's links and record entries move to the account that stays, and the
merge remembers exactly what moved so that it can be undone. Capabilities that
keep patient data register a :class:`MergeFollower` to move theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import AccessService
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, utcnow
from server.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.core.ids import RESIDENT_ID_SYSTEM, ResidentId
from server.core.roles import CLINICIAN_ROLES, PRACTITIONER_ROLES
from server.identity import schemas
from server.identity.models import Institution, Patient, PatientLink, PatientMerge
from server.identity.service import checked_resident_id

LOCAL_SYSTEM_PREFIX = "urn:yihao:institution:"
# Who lists their institution's patients (GET /api/v1/patients).


def local_identifier_system(institution_code: str, kind: str) -> str:
    """The FHIR identifier system of an institution's own patient numbers."""
    return f"{LOCAL_SYSTEM_PREFIX}{institution_code}:{kind}"


def same_name(name: str) -> str:
    """A name as compared at registration: spacing and letter case do not count."""
    return "".join(name.split()).casefold()


def parse_local_system(system: str) -> tuple[str, str] | None:
    """(institution code, kind) of a local identifier system, or None."""
    if not system.startswith(LOCAL_SYSTEM_PREFIX):
        return None
    code, _, kind = system.removeprefix(LOCAL_SYSTEM_PREFIX).partition(":")
    return (code, kind) if kind in ("mrn", "card") else None


class MergeFollower(Protocol):
    async def follow_merge(self, tx: Tx, source_id: int, target_id: int) -> list[int]: ...

    async def undo_merge(
        self, tx: Tx, source_id: int, target_id: int, moved: list[int]
    ) -> None: ...


class PatientIndex:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        access: AccessService,
        followers: Mapping[str, MergeFollower] | None = None,
    ) -> None:
        self.db = db
        self.audit = audit
        self.access = access
        # Capabilities whose rows follow a merge (by name: the merge row keeps what moved).
        self.followers: Mapping[str, MergeFollower] = dict(followers or {})

    # --- registration -------------------------------------------------------

    async def register(
        self, actor: Requester, data: schemas.PatientRegister
    ) -> schemas.PatientRegistered:
        if actor.role not in PRACTITIONER_ROLES or actor.institution_id is None:
            raise Forbidden("patients are registered by the staff of an institution")
        parsed = checked_resident_id(data.resident_id, sex=data.sex, birth_date=data.birth_date)
        institution_id = actor.institution_id
        async with self.db.transaction() as tx:
            patient, created = await self.register_in(
                tx,
                actor,
                institution_id=institution_id,
                resident=parsed,
                name=data.name,
                phone=data.phone,
                numbers={"mrn": data.mrn, "card": data.card_number},
            )
            links = [
                link
                for link in (await self._out(tx.session, patient)).links
                if link.institution.id == institution_id
            ]
            care = await self.access.has_care(tx.session, patient.id, institution_id)
        return schemas.PatientRegistered(
            id=patient.id,
            resident_id=parsed.number,
            name=data.name,
            sex=parsed.sex,
            birth_date=parsed.birth_date,
            links=links,
            created=created,
            care="active" if care else "none",
        )

    async def register_in(
        self,
        tx: Tx,
        actor: Requester | None,
        *,
        institution_id: int,
        resident: ResidentId,
        name: str | None,
        phone: str | None = None,
        numbers: dict[str, str | None],
        name_field: str = "name",
    ) -> tuple[Patient, bool]:
        """Find or create the account and link the institution's numbers (no care: that is
        earned). An existing account's name must match ``name`` (None: not checked)."""
        patient = await tx.session.scalar(
            select(Patient).where(Patient.resident_id == resident.number)
        )
        created = patient is None
        if patient is None:
            patient = Patient(
                resident_id=resident.number,
                name=name or resident.number,
                sex=resident.sex,
                birth_date=resident.birth_date,
                phone=phone,
            )
            tx.session.add(patient)
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "patient.create",
                actor=actor,
                patient_id=patient.id,
                resource=f"Patient/{patient.id}",
                details={"institution_id": institution_id},
            )
        elif patient.merged_into_id is not None:
            raise Conflict(
                f"this resident's account was merged into patient {patient.merged_into_id}",
                code="patient_merged",
            )
        elif name is not None and same_name(name) != same_name(patient.name):
            raise ValidationFailed.field(
                name_field,
                "does not match the name registered for this resident ID",
                code="name_mismatch",
            )
        linked = []
        for kind, number in numbers.items():
            if number:
                await self._link(tx.session, patient.id, institution_id, kind, number)
                linked.append(kind)
        await self.audit.record(
            tx.session,
            "patient.register",
            actor=actor,
            patient_id=patient.id,
            resource=f"Patient/{patient.id}",
            details={"institution_id": institution_id, "linked": linked, "created": created},
        )
        return patient, created

    async def _link(
        self, session: AsyncSession, patient_id: int, institution_id: int, kind: str, number: str
    ) -> None:
        existing = await session.scalar(
            select(PatientLink).where(
                PatientLink.institution_id == institution_id,
                PatientLink.kind == kind,
                PatientLink.number == number,
            )
        )
        if existing is None:
            session.add(
                PatientLink(
                    patient_id=patient_id, institution_id=institution_id, kind=kind, number=number
                )
            )
            await session.flush()
        elif existing.patient_id != patient_id:
            raise Conflict(
                f"the {kind} number '{number}' of this institution belongs to another patient",
                code="number_taken",
            )

    # --- lookups ------------------------------------------------------------

    async def find_by_local_number(
        self, session: AsyncSession, institution_id: int, number: str, kind: str | None = None
    ) -> int | None:
        query = select(PatientLink.patient_id).where(
            PatientLink.institution_id == institution_id, PatientLink.number == number
        )
        if kind:
            query = query.where(PatientLink.kind == kind)
        return await session.scalar(query.limit(1))

    async def find_by_identifier(self, system: str, value: str) -> int | None:
        """The account named by a FHIR identifier (resident ID or an institution's number)."""
        async with self.db.read() as session:
            if system == RESIDENT_ID_SYSTEM:
                try:
                    number = checked_resident_id(value).number
                except ValidationFailed:
                    return None
                return await session.scalar(
                    select(Patient.id).where(
                        Patient.resident_id == number, Patient.merged_into_id.is_(None)
                    )
                )
            local = parse_local_system(system)
            if local is None:
                return None
            institution_id = await session.scalar(
                select(Institution.id).where(Institution.code == local[0])
            )
            if institution_id is None:
                return None
            return await self.find_by_local_number(session, institution_id, value, local[1])

    async def lookup(self, actor: Requester, query: schemas.PatientLookup) -> schemas.PatientOut:
        async with self.db.read() as session:
            institution = await session.scalar(
                select(Institution).where(Institution.code == query.institution)
            )
            if institution is None:
                raise NotFound(f"no institution '{query.institution}'")
            patient_id = await self.find_by_local_number(
                session, institution.id, query.number, query.kind
            )
        if patient_id is None:  # answered like a patient one may not see
            await self.access.deny(
                actor,
                None,
                action="patient.lookup",
                resources=f"Patient?identifier={query.institution}|{query.kind or '*'}",
            )
        return await self.get(actor, patient_id, action="patient.lookup")

    async def get(
        self, actor: Requester, patient_id: int, *, action: str = "patient.read"
    ) -> schemas.PatientOut:
        if actor.role != "platform_admin":
            await self.access.check_patient_access(
                actor, patient_id, action=action, resources=f"Patient/{patient_id}"
            )
        async with self.db.read() as session:
            patient = await session.get(Patient, patient_id)
            if patient is None:
                raise NotFound(f"no patient {patient_id}")
            out = await self._out(session, patient)
        if actor.role == "platform_admin":  # managing the index: audited like any other read
            await self.audit.record_alone(
                "patient.read",
                actor=actor,
                patient_id=patient_id,
                resource=f"Patient/{patient_id}",
                reason="administration",
            )
        return out

    async def list_mine(
        self, actor: Requester, query: schemas.MyPatientsQuery
    ) -> schemas.MyPatientList:
        """The patients registered at or seen by the clinician's institution (audited)."""
        institution_id = actor.institution_id
        if actor.role not in CLINICIAN_ROLES or institution_id is None:
            raise Forbidden("the clinicians of an institution list its patients")
        async with self.db.read() as session:
            cared = self.access.cared_for(institution_id)
            stmt = (
                select(Patient, cared.c.since)
                .join(cared, cared.c.patient_id == Patient.id)
                .where(Patient.merged_into_id.is_(None))
            )
            if query.q:
                text = query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                like = f"%{text}%"
                numbered = select(PatientLink.patient_id).where(
                    PatientLink.institution_id == institution_id,
                    PatientLink.number.ilike(like, escape="\\"),
                )
                stmt = stmt.where(
                    or_(Patient.name.ilike(like, escape="\\"), Patient.id.in_(numbered))
                )
            rows = (
                await session.execute(stmt.order_by(Patient.name, Patient.id).limit(query.limit))
            ).all()
            ids = [patient.id for patient, _ in rows]
            numbers: dict[int, list[str]] = {i: [] for i in ids}
            links = await session.scalars(
                select(PatientLink)
                .where(
                    PatientLink.institution_id == institution_id, PatientLink.patient_id.in_(ids)
                )
                .order_by(PatientLink.id)
            )
            for link in links:
                numbers[link.patient_id].append(link.number)
        await self.audit.record_alone(
            "patient.list",
            actor=actor,
            resource=f"Patient?care-institution={institution_id}",
            reason="care_relationship",
            details={"q": query.q, "patient_ids": ids},
        )
        return schemas.MyPatientList(
            items=[
                schemas.MyPatient(
                    id=patient.id,
                    name=patient.name,
                    sex=patient.sex,
                    birth_date=patient.birth_date,
                    numbers=numbers[patient.id],
                    since=since,
                )
                for patient, since in rows
            ]
        )

    async def _out(self, session: AsyncSession, patient: Patient) -> schemas.PatientOut:
        rows = await session.execute(
            select(PatientLink, Institution)
            .join(Institution, Institution.id == PatientLink.institution_id)
            .where(PatientLink.patient_id == patient.id)
            .order_by(PatientLink.id)
        )
        return schemas.PatientOut(
            id=patient.id,
            resident_id=patient.resident_id,
            name=patient.name,
            sex=patient.sex,
            birth_date=patient.birth_date,
            phone=patient.phone,
            real_name_verified=patient.real_name_verified,
            merged_into_id=patient.merged_into_id,
            links=[
                schemas.PatientLinkOut(
                    institution=schemas.InstitutionRef(
                        id=inst.id,
                        code=inst.code,
                        name=inst.name,
                        kind=inst.kind,
                    ),
                    kind=link.kind,
                    number=link.number,
                )
                for link, inst in rows
            ],
        )

    @staticmethod
    async def is_linked(session: AsyncSession, patient_id: int, institution_id: int) -> bool:
        """The institution registered the patient under numbers of its own."""
        found = await session.scalar(
            select(PatientLink.id)
            .where(
                PatientLink.patient_id == patient_id, PatientLink.institution_id == institution_id
            )
            .limit(1)
        )
        return found is not None

    @staticmethod
    async def exists(session: AsyncSession, patient_id: int) -> bool:
        """An account that is not merged away, checked in the caller's session."""
        found = await session.scalar(
            select(Patient.id).where(Patient.id == patient_id, Patient.merged_into_id.is_(None))
        )
        return found is not None

    async def account(self, patient_id: int) -> schemas.PatientOut | None:
        """Trusted read of an account (callers have checked access)."""
        async with self.db.read() as session:
            patient = await session.get(Patient, patient_id)
            return None if patient is None else await self._out(session, patient)

    # --- real-name verification ----------------------------------------------

    async def set_verified(
        self, actor: Requester | None, patient_id: int, verified: bool
    ) -> schemas.PatientOut:
        """Record the real-name verification; ``actor`` None is the operator (the demo seed)."""
        if actor is not None and actor.role not in ("platform_admin", "institution_admin"):
            raise Forbidden("administrators record real-name verification")
        async with self.db.transaction() as tx:
            patient = await tx.session.get(Patient, patient_id)
            if patient is None:
                raise NotFound(f"no patient {patient_id}")
            if actor is not None and actor.role == "institution_admin":
                assert actor.institution_id is not None
                if not await self.access.has_care(tx.session, patient_id, actor.institution_id):
                    raise Forbidden("the patient is not registered at your institution")
            patient.real_name_verified = verified
            await self.audit.record(
                tx.session,
                "patient.verify" if verified else "patient.unverify",
                actor=actor,
                patient_id=patient_id,
                resource=f"Patient/{patient_id}",
            )
            return await self._out(tx.session, patient)

    # --- merge ----------------------------------------------------------------

    async def merge(
        self, actor: Requester, data: schemas.PatientMergeRequest
    ) -> schemas.PatientMergeOut:
        if actor.role != "platform_admin":
            raise Forbidden("only a platform administrator merges patient accounts")
        if data.source_patient_id == data.target_patient_id:
            raise ValidationFailed.field("target_patient_id", "cannot merge an account into itself")
        async with self.db.transaction() as tx:
            source = await tx.session.get(Patient, data.source_patient_id)
            target = await tx.session.get(Patient, data.target_patient_id)
            for field, patient in (("source_patient_id", source), ("target_patient_id", target)):
                if patient is None:
                    raise NotFound(f"no patient {getattr(data, field)}")
                if patient.merged_into_id is not None:
                    raise Conflict(f"patient {patient.id} is already merged", code="patient_merged")
            assert source is not None and target is not None
            link_ids = list(
                await tx.session.scalars(
                    select(PatientLink.id).where(PatientLink.patient_id == source.id)
                )
            )
            await tx.session.execute(
                update(PatientLink).where(PatientLink.id.in_(link_ids)).values(patient_id=target.id)
            )
            moved: dict[str, list[int]] = {"links": link_ids}
            for name, follower in self.followers.items():
                moved[name] = await follower.follow_merge(tx, source.id, target.id)
            source.merged_into_id = target.id
            merge = PatientMerge(
                source_id=source.id,
                target_id=target.id,
                reason=data.reason,
                moved=moved,
                merged_by=actor.user_id,
                merged_at=utcnow(),
            )
            tx.session.add(merge)
            await tx.session.flush()
            for patient_id in (source.id, target.id):
                await self.audit.record(
                    tx.session,
                    "patient.merge",
                    actor=actor,
                    patient_id=patient_id,
                    resource=f"PatientMerge/{merge.id}",
                    reason=data.reason,
                    details={"source": source.id, "target": target.id,
                             "moved": {k: len(v) for k, v in moved.items()}},
                )  # fmt: skip
            return merge_out(merge)

    async def unmerge(self, actor: Requester, merge_id: int) -> schemas.PatientMergeOut:
        if actor.role != "platform_admin":
            raise Forbidden("only a platform administrator undoes a merge")
        async with self.db.transaction() as tx:
            merge = await tx.session.get(PatientMerge, merge_id)
            if merge is None:
                raise NotFound(f"no merge {merge_id}")
            if merge.unmerged_at is not None:
                raise Conflict("this merge was already undone", code="already_unmerged")
            await tx.session.execute(
                update(PatientLink)
                .where(PatientLink.id.in_(merge.moved.get("links", [])))
                .values(patient_id=merge.source_id)
            )
            for name, follower in self.followers.items():
                await follower.undo_merge(
                    tx, merge.source_id, merge.target_id, merge.moved.get(name, [])
                )
            await tx.session.execute(
                update(Patient).where(Patient.id == merge.source_id).values(merged_into_id=None)
            )
            merge.unmerged_at = utcnow()
            for patient_id in (merge.source_id, merge.target_id):
                await self.audit.record(
                    tx.session,
                    "patient.unmerge",
                    actor=actor,
                    patient_id=patient_id,
                    resource=f"PatientMerge/{merge.id}",
                )
            return merge_out(merge)

    async def merges(self, patient_id: int) -> list[schemas.PatientMergeOut]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(PatientMerge)
                .where(
                    (PatientMerge.source_id == patient_id) | (PatientMerge.target_id == patient_id)
                )
                .order_by(PatientMerge.id)
            )
            return [merge_out(m) for m in rows]


def merge_out(merge: PatientMerge) -> schemas.PatientMergeOut:
    return schemas.PatientMergeOut(
        id=merge.id,
        source_patient_id=merge.source_id,
        target_patient_id=merge.target_id,
        moved=merge.moved,
        merged_at=merge.merged_at,
        unmerged_at=merge.unmerged_at,
    )
