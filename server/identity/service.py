"""Identity's administration: institutions, departments and user accounts.

``IdentityService`` holds the administrative rules (who may create what, which
role fits which kind of institution); the login rules (argon2id, lockout, TOTP,
sessions) are :mod:`server.identity.auth_service`'s.
Every change is audited in the same transaction; changes to an institution
are pushed on its stream.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any, get_args

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from server.core.audit import AuditLog
from server.core.auth import (
    Passwords,
    Requester,
)
from server.core.db import Database, Tx
from server.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from server.core.events import Events
from server.core.ids import ResidentIdError, parse_resident_id
from server.core.roles import PLATFORM_ONLY_ROLES, PRACTITIONER_ROLES
from server.identity import schemas
from server.identity.models import (
    Department,
    Institution,
    Patient,
    User,
)

logger = logging.getLogger(__name__)

# Which kinds of institution each practitioner role may belong to.
ROLE_KINDS: dict[str, frozenset[str]] = {
    "specialist": frozenset({"tertiary", "secondary"}),
    "gp": frozenset({"community", "secondary"}),
    "pharmacist": frozenset({"pharmacy", "tertiary", "secondary", "community"}),
    "nurse": frozenset({"tertiary", "secondary", "community"}),
    "institution_admin": frozenset({"tertiary", "secondary", "community", "pharmacy", "lab"}),
}
ROLE_TITLES: dict[str, tuple[str, ...]] = {
    "specialist": schemas.DOCTOR_TITLES,
    "gp": schemas.DOCTOR_TITLES,
    "pharmacist": schemas.PHARMACIST_TITLES,
    "nurse": schemas.NURSE_TITLES,
}
# Only the platform's administrators create these.
# Refreshing last_seen_at on every request would turn each read into a write.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)


def institution_stream(institution_id: int) -> str:
    return f"institution:{institution_id}"


def institution_out(institution: Institution) -> schemas.InstitutionOut:
    return schemas.InstitutionOut(
        id=institution.id,
        code=institution.code,
        name=institution.name,
        kind=institution.kind,
        region=institution.region,
        departments=[schemas.DepartmentOut(id=d.id, name=d.name) for d in institution.departments],
    )


def user_out(user: User) -> schemas.UserOut:
    inst = user.institution
    return schemas.UserOut(
        id=user.id,
        username=user.username,
        role=user.role,
        name=user.name,
        institution=schemas.InstitutionRef(
            id=inst.id,
            code=inst.code,
            name=inst.name,
            kind=inst.kind,
        )
        if inst
        else None,
        department=user.department.name if user.department else None,
        title=user.title,
        can_prescribe=user.can_prescribe,
        patient_id=user.patient_id,
        totp_enabled=user.totp_enabled,
        active=user.active,
        created_at=user.created_at,
    )


def user_query() -> Any:
    # System accounts (the consult recorder) are not people: no one lists or manages them.
    return (
        select(User)
        .where(User.role.in_(get_args(schemas.RoleName)))
        .options(selectinload(User.institution), selectinload(User.department))
    )


class IdentityService:
    def __init__(self, db: Database, audit: AuditLog, events: Events, passwords: Passwords) -> None:
        self.db = db
        self.audit = audit
        self.events = events
        self.passwords = passwords

    # --- institutions -------------------------------------------------------

    async def list_institutions(self, kind: str | None = None) -> list[schemas.InstitutionOut]:
        async with self.db.read() as session:
            query = select(Institution).options(selectinload(Institution.departments))
            if kind:
                query = query.where(Institution.kind == kind)
            rows = await session.scalars(query.order_by(Institution.id))
            return [institution_out(i) for i in rows]

    async def get_institution(self, institution_id: int) -> schemas.InstitutionOut:
        async with self.db.read() as session:
            return institution_out(await self._institution(session, institution_id))

    async def _institution(self, session: AsyncSession, institution_id: int) -> Institution:
        institution = await session.scalar(
            select(Institution)
            .options(selectinload(Institution.departments))
            .where(Institution.id == institution_id)
            # Reloaded after adding a department in the same session: refresh the collection.
            .execution_options(populate_existing=True)
        )
        if institution is None:
            raise NotFound(f"no institution {institution_id}")
        return institution

    async def institution_by_code(self, session: AsyncSession, code: str) -> Institution:
        institution = await session.scalar(
            select(Institution)
            .options(selectinload(Institution.departments))
            .where(Institution.code == code)
        )
        if institution is None:
            raise ValidationFailed.field("institution", f"no institution with code '{code}'")
        return institution

    async def create_institution(
        self, actor: Requester | None, data: schemas.InstitutionCreate
    ) -> schemas.InstitutionOut:
        self.check_platform_admin(actor)
        async with self.db.transaction() as tx:
            if await tx.session.scalar(select(Institution.id).where(Institution.code == data.code)):
                raise Conflict(
                    f"an institution with code '{data.code}' exists", code="duplicate_code"
                )
            institution = Institution(
                code=data.code, name=data.name, kind=data.kind, region=data.region
            )
            tx.session.add(institution)
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "institution.create",
                actor=actor,
                resource=f"Institution/{institution.id}",
                details={"code": data.code, "kind": data.kind},
            )
            institution = await self._institution(tx.session, institution.id)
            return institution_out(institution)

    async def create_department(
        self, actor: Requester | None, institution_id: int, data: schemas.DepartmentCreate
    ) -> schemas.InstitutionOut:
        self.check_institution_admin(actor, institution_id)
        async with self.db.transaction() as tx:
            institution = await self._institution(tx.session, institution_id)
            await self._add_department(tx, actor, institution, data.name)
            institution = await self._institution(tx.session, institution_id)
            return institution_out(institution)

    async def _add_department(
        self, tx: Tx, actor: Requester | None, institution: Institution, name: str
    ) -> Department:
        if any(d.name == name for d in institution.departments):
            raise Conflict(
                f"department '{name}' exists at {institution.code}", code="duplicate_department"
            )
        department = Department(institution_id=institution.id, name=name)
        tx.session.add(department)
        await tx.session.flush()
        await self.audit.record(
            tx.session,
            "department.create",
            actor=actor,
            resource=f"Department/{department.id}",
            details={"institution_id": institution.id},
        )
        await self.events.append(
            tx,
            institution_stream(institution.id),
            "institution",
            "department_added",
            {"institution_id": institution.id, "department": {"id": department.id, "name": name}},
        )
        return department

    # --- users --------------------------------------------------------------

    async def create_user(
        self, actor: Requester | None, data: schemas.UserCreate
    ) -> schemas.UserOut:
        """Create an account. ``actor`` None means the operator's own CLI.

        The password is hashed (in the password threads) before the transaction opens:
        argon2's ~100 ms never holds the database's write lock.
        """
        password_hash = await self.passwords.hash(data.password)
        async with self.db.transaction() as tx:
            institution = (
                await self.institution_by_code(tx.session, data.institution)
                if data.institution
                else None
            )
            self._check_may_create(actor, data, institution)
            if await tx.session.scalar(select(User.id).where(User.username == data.username)):
                raise Conflict(f"username '{data.username}' is taken", code="duplicate_username")
            user = User(
                username=data.username,
                password_hash=password_hash,
                role=data.role,
                name=data.name,
                title=data.title,
            )
            if data.role in PRACTITIONER_ROLES:
                assert institution is not None
                user.institution_id = institution.id
                user.can_prescribe = (
                    data.can_prescribe
                    if data.can_prescribe is not None
                    else data.role in {"specialist", "gp"}
                )
                if data.department:
                    department = next(
                        (d for d in institution.departments if d.name == data.department), None
                    )
                    if department is None:
                        department = await self._add_department(
                            tx, actor, institution, data.department
                        )
                    user.department_id = department.id
            elif data.role == "patient":
                patient = await self._patient_for_account(tx, actor, data)
                user.patient_id = patient.id
                user.name = data.name or patient.name
            tx.session.add(user)
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "user.create",
                actor=actor,
                resource=f"User/{user.id}",
                patient_id=user.patient_id,
                details={"role": data.role, "institution_id": user.institution_id},
            )
            if user.institution_id is not None:
                await self.events.append(
                    tx,
                    institution_stream(user.institution_id),
                    "institution",
                    "member_added",
                    {"user_id": user.id, "role": user.role},
                )
            return user_out(await tx.session.scalar(user_query().where(User.id == user.id)))

    def _check_may_create(
        self, actor: Requester | None, data: schemas.UserCreate, institution: Institution | None
    ) -> None:
        if actor is not None and actor.role != "platform_admin":
            if actor.role != "institution_admin":
                raise Forbidden("only administrators create accounts")
            if data.role in PLATFORM_ONLY_ROLES:
                raise Forbidden(f"only a platform administrator creates '{data.role}' accounts")
            if institution is None or institution.id != actor.institution_id:
                raise Forbidden(
                    "an institution administrator creates accounts at their own institution"
                )
        if data.role in PRACTITIONER_ROLES:
            if institution is None:
                raise ValidationFailed.field("institution", f"required for the role '{data.role}'")
            if institution.kind not in ROLE_KINDS[data.role]:
                raise ValidationFailed.field(
                    "role", f"a {data.role} cannot belong to a {institution.kind} institution"
                )
            if data.resident_id:
                raise ValidationFailed.field(
                    "resident_id", "only patient accounts take a resident ID"
                )
            allowed = ROLE_TITLES.get(data.role)
            if data.title and (allowed is None or data.title not in allowed):
                raise ValidationFailed.field(
                    "title", f"'{data.title}' is not a title of a {data.role}"
                )
        else:
            if institution is not None:
                raise ValidationFailed.field(
                    "institution", f"a {data.role} belongs to no institution"
                )
            if data.department or data.title or data.can_prescribe:
                raise ValidationFailed.field(
                    "role",
                    f"department, title and prescribing right are for practitioners, not a {data.role}",
                )
            if data.role == "patient" and not data.resident_id:
                raise ValidationFailed.field("resident_id", "required for a patient account")
            if data.role != "patient" and data.resident_id:
                raise ValidationFailed.field(
                    "resident_id", "only patient accounts take a resident ID"
                )

    async def _patient_for_account(
        self, tx: Tx, actor: Requester | None, data: schemas.UserCreate
    ) -> Patient:
        assert data.resident_id is not None
        parsed = checked_resident_id(data.resident_id, sex=data.sex, birth_date=data.birth_date)
        patient = await tx.session.scalar(
            select(Patient).where(Patient.resident_id == parsed.number)
        )
        if patient is not None:
            if await tx.session.scalar(select(User.id).where(User.patient_id == patient.id)):
                raise Conflict("this resident already has an account", code="duplicate_account")
            return patient
        if not data.name:
            raise ValidationFailed.field("name", "required for a new patient")
        patient = Patient(
            resident_id=parsed.number,
            name=data.name,
            sex=parsed.sex,
            birth_date=parsed.birth_date,
            phone=data.phone,
        )
        tx.session.add(patient)
        await tx.session.flush()
        await self.audit.record(
            tx.session,
            "patient.create",
            actor=actor,
            patient_id=patient.id,
            resource=f"Patient/{patient.id}",
        )
        return patient

    async def list_users(
        self, actor: Requester, institution_code: str | None, role: str | None
    ) -> list[schemas.UserOut]:
        async with self.db.read() as session:
            query = user_query().order_by(User.id)
            if actor.role == "institution_admin":
                query = query.where(User.institution_id == actor.institution_id)
            elif actor.role != "platform_admin":
                raise Forbidden("only administrators list accounts")
            if institution_code:
                query = query.join(Institution, User.institution_id == Institution.id).where(
                    Institution.code == institution_code
                )
            if role:
                query = query.where(User.role == role)
            return [user_out(u) for u in await session.scalars(query)]

    async def get_user(self, actor: Requester, user_id: int) -> schemas.UserOut:
        async with self.db.read() as session:
            user = await session.scalar(user_query().where(User.id == user_id))
        if user is None:
            raise NotFound(f"no user {user_id}")
        visible = (
            actor.user_id == user_id
            or actor.role == "platform_admin"
            or (
                actor.is_practitioner and user.institution_id is not None and user.role != "patient"
            )
        )
        if not visible:
            raise NotFound(f"no user {user_id}")
        return user_out(user)

    # --- checks -------------------------------------------------------------

    @staticmethod
    def check_platform_admin(actor: Requester | None) -> None:
        if actor is not None and actor.role != "platform_admin":
            raise Forbidden("only a platform administrator may do this")

    @staticmethod
    def check_institution_admin(actor: Requester | None, institution_id: int) -> None:
        if actor is None or actor.role == "platform_admin":
            return
        if actor.role != "institution_admin" or actor.institution_id != institution_id:
            raise Forbidden("only an administrator of this institution may do this")


def checked_resident_id(
    raw: str, *, sex: str | None = None, birth_date: date | None = None, field: str = "resident_id"
) -> Any:
    """Parse an ID and check the caller's sex and birth date against it (422 on mismatch)."""
    try:
        parsed = parse_resident_id(raw)
    except ResidentIdError as exc:
        raise ValidationFailed.field(field, str(exc), code=f"resident_id_{exc.check}") from None
    if sex is not None and sex != parsed.sex:
        raise ValidationFailed.field(
            "sex", f"the resident ID says {parsed.sex}", code="resident_id_sex"
        )
    if birth_date is not None and birth_date != parsed.birth_date:
        raise ValidationFailed.field(
            "birth_date",
            f"the resident ID says {parsed.birth_date.isoformat()}",
            code="resident_id_birth_date",
        )
    return parsed


# Who may change an account's access: the platform's administrators anyone's (but their
# own), an institution's administrator the practitioners of that institution.
MANAGED_BY_INSTITUTION_ADMIN = PRACTITIONER_ROLES - {"institution_admin"}


def check_may_manage(actor: Requester | None, user: User) -> None:
    """Refuse with 404 when the actor may not even see the account, 403 when only not manage it."""
    if actor is None:  # the operator's CLI
        return
    if actor.user_id == user.id:
        raise Conflict("an administrator cannot change their own account's access", code="self")
    if actor.role == "platform_admin":
        return
    same_institution = (
        actor.role == "institution_admin"
        and user.institution_id is not None
        and user.institution_id == actor.institution_id
    )
    if not same_institution:
        # As for reading the account: practitioners' accounts are visible, patients' are not.
        if user.institution_id is None or user.role == "patient":
            raise NotFound(f"no user {user.id}")
        raise Forbidden("an institution administrator manages their own institution's accounts")
    if user.role not in MANAGED_BY_INSTITUTION_ADMIN:
        raise Forbidden(f"only a platform administrator manages a {user.role} account")
