"""The directory: identity's public, read-mostly face for other capabilities.

Identity owns the users, institutions, departments, patients and sessions tables. Other
capabilities never import ``server.identity.models``; they ask the directory, which
answers with frozen references (never ORM rows, so nothing outside identity writes them).
Every method takes the caller's ``AsyncSession``, so a lookup joins the caller's unit of
work (and its locks and snapshot) instead of opening another transaction.

System accounts (the consult recorder) are created here too: they are identity's rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from server.core.auth import hash_refresh_token, new_refresh_token
from server.core.db import utcnow
from server.core.roles import PRESCRIBER_ROLES, Role
from server.identity.models import AuthSession, Department, Institution, Patient, User

# Built once (building a statement costs more than SQLite takes to answer it).
_INSTITUTIONS = select(
    Institution.id, Institution.code, Institution.name, Institution.kind, Institution.region
).where(Institution.id.in_(bindparam("ids", expanding=True)))
_STANDING = select(Patient.merged_into_id).where(Patient.id == bindparam("id"))


@dataclass(frozen=True, slots=True)
class UserRef:
    id: int
    username: str
    role: str
    name: str | None
    title: str | None
    institution_id: int | None
    department_id: int | None
    patient_id: int | None
    active: bool
    can_prescribe: bool


@dataclass(frozen=True, slots=True)
class InstitutionRef:
    id: int
    code: str
    name: str
    kind: str
    region: str | None


@dataclass(frozen=True, slots=True)
class DepartmentRef:
    id: int
    institution_id: int
    name: str


@dataclass(frozen=True, slots=True)
class PatientRef:
    id: int
    resident_id: str
    name: str
    sex: str
    birth_date: date
    guardian_name: str | None
    merged_into_id: int | None
    # Recorded by an administrator after checking the person (实名认证).
    real_name_verified: bool = False


@dataclass(frozen=True, slots=True)
class PrescribingPeople:
    """Who a prescription involves, read at once (:meth:`Directory.prescribing_people`)."""

    prescriber: UserRef | None
    prescriber_institution: InstitutionRef | None
    patient: PatientRef | None
    patient_user_id: int | None  # the patient's own account, if they have one
    pharmacy_kind: str | None  # the kind of the institution named as the pharmacy


def _prescribing_people() -> Any:
    """One Core statement (compiled once, cached by SQLAlchemy): the user and their
    institution, the patient and their account, and the named pharmacy's kind."""
    user, patient = User.__table__, Patient.__table__
    institution = Institution.__table__.alias("prescriber_institution")
    pharmacy = Institution.__table__.alias("pharmacy")
    account = aliased(User, name="patient_account")
    account_id = (
        select(account.id)
        .where(account.patient_id == bindparam("patient_id"))
        .limit(1)
        .scalar_subquery()
    )
    pharmacy_kind = (
        select(pharmacy.c.kind).where(pharmacy.c.id == bindparam("pharmacy_id")).scalar_subquery()
    )
    return (
        select(
            *(user.c[f] for f in _USER_FIELDS),
            *(institution.c[f].label(f"inst_{f}") for f in _INSTITUTION_FIELDS),
            *(patient.c[f].label(f"pat_{f}") for f in _PATIENT_FIELDS),
            account_id.label("patient_user_id"),
            pharmacy_kind.label("pharmacy_kind"),
        )
        .select_from(
            user.outerjoin(institution, institution.c.id == user.c.institution_id).outerjoin(
                patient, patient.c.id == bindparam("patient_id")
            )
        )
        .where(user.c.id == bindparam("user_id"))
    )


_USER_FIELDS = ("id", "username", "role", "name", "title", "institution_id", "department_id",
                "patient_id", "active", "can_prescribe")  # fmt: skip
_INSTITUTION_FIELDS = ("id", "code", "name", "kind", "region")
_PATIENT_FIELDS = ("id", "resident_id", "name", "sex", "birth_date", "guardian_name",
                   "merged_into_id")  # fmt: skip
PRESCRIBING_PEOPLE = _prescribing_people()


def _user(row: User) -> UserRef:
    return UserRef(
        id=row.id,
        username=row.username,
        role=row.role,
        name=row.name,
        title=row.title,
        institution_id=row.institution_id,
        department_id=row.department_id,
        patient_id=row.patient_id,
        active=row.active,
        can_prescribe=row.can_prescribe,
    )


def _patient(row: Patient) -> PatientRef:
    return PatientRef(
        id=row.id,
        resident_id=row.resident_id,
        name=row.name,
        sex=row.sex,
        birth_date=row.birth_date,
        guardian_name=row.guardian_name,
        merged_into_id=row.merged_into_id,
        real_name_verified=row.real_name_verified,
    )


class Directory:
    """Lookups of identity's rows for other capabilities (see the module docstring)."""

    # --- users -----------------------------------------------------------------------

    async def user(self, session: AsyncSession, user_id: int) -> UserRef | None:
        row = await session.get(User, user_id)
        return _user(row) if row is not None else None

    async def users(self, session: AsyncSession, user_ids: Iterable[int]) -> dict[int, UserRef]:
        ids = sorted(set(user_ids))
        if not ids:
            return {}
        rows = await session.scalars(select(User).where(User.id.in_(ids)))
        return {row.id: _user(row) for row in rows}

    async def prescribers(self, session: AsyncSession) -> list[UserRef]:
        """The active doctors (specialists and gps) of every institution, by institution."""
        rows = await session.scalars(
            select(User)
            .where(User.role.in_(sorted(PRESCRIBER_ROLES)), User.active.is_(True))
            .order_by(User.institution_id, User.id)
        )
        return [_user(row) for row in rows]

    async def user_id_by_username(self, session: AsyncSession, username: str) -> int | None:
        found: int | None = await session.scalar(select(User.id).where(User.username == username))
        return found

    async def institution_admin_ids(self, session: AsyncSession, institution_id: int) -> list[int]:
        """The active administrators of an institution."""
        rows = await session.scalars(
            select(User.id)
            .where(
                User.institution_id == institution_id,
                User.role == Role.INSTITUTION_ADMIN,
                User.active.is_(True),
            )
            .order_by(User.id)
        )
        return list(rows)

    async def user_id_of_patient(self, session: AsyncSession, patient_id: int) -> int | None:
        """The patient's own account, if they have one."""
        found: int | None = await session.scalar(
            select(User.id).where(User.patient_id == patient_id)
        )
        return found

    async def user_ids_of_patients(
        self, session: AsyncSession, patient_ids: Iterable[int]
    ) -> list[int]:
        ids = sorted(set(patient_ids))
        if not ids:
            return []
        rows = await session.scalars(select(User.id).where(User.patient_id.in_(ids)))
        return list(rows)

    async def phones_of_users(
        self, session: AsyncSession, user_ids: Iterable[int]
    ) -> dict[int, str | None]:
        """Each account's patient phone number (None: not a patient, or no number)."""
        ids = sorted(set(user_ids))
        if not ids:
            return {}
        rows = await session.execute(
            select(User.id, Patient.phone)
            .outerjoin(Patient, Patient.id == User.patient_id)
            .where(User.id.in_(ids))
        )
        return {user_id: phone for user_id, phone in rows}

    async def prescribing_people(
        self, session: AsyncSession, user_id: int, patient_id: int, pharmacy_id: int | None
    ) -> PrescribingPeople:
        """The prescriber (and institution), the patient (and account) and the pharmacy's
        kind, in one statement: what writing a prescription reads of identity."""
        row = (
            await session.execute(
                PRESCRIBING_PEOPLE,
                {"user_id": user_id, "patient_id": patient_id, "pharmacy_id": pharmacy_id},
            )
        ).one_or_none()
        if row is None:
            return PrescribingPeople(None, None, None, None, None)
        m = row._mapping
        institution = (
            InstitutionRef(*(m[f"inst_{f}"] for f in _INSTITUTION_FIELDS))
            if m["inst_id"] is not None
            else None
        )
        patient = (
            PatientRef(*(m[f"pat_{f}"] for f in _PATIENT_FIELDS))
            if m["pat_id"] is not None
            else None
        )
        return PrescribingPeople(
            prescriber=UserRef(*(m[f] for f in _USER_FIELDS)),
            prescriber_institution=institution,
            patient=patient,
            patient_user_id=m["patient_user_id"] if patient is not None else None,
            pharmacy_kind=m["pharmacy_kind"],
        )

    # --- institutions and departments -------------------------------------------------

    async def institution(
        self, session: AsyncSession, institution_id: int
    ) -> InstitutionRef | None:
        row = await session.get(Institution, institution_id)
        if row is None:
            return None
        return InstitutionRef(
            id=row.id, code=row.code, name=row.name, kind=row.kind, region=row.region
        )

    async def institutions(
        self, session: AsyncSession, institution_ids: Iterable[int]
    ) -> dict[int, InstitutionRef]:
        """Several institutions by id in one query (those that exist)."""
        ids = sorted(set(institution_ids))
        if not ids:
            return {}
        rows = await session.execute(_INSTITUTIONS, {"ids": ids})
        return {row.id: InstitutionRef(*row) for row in rows}

    async def department(self, session: AsyncSession, department_id: int) -> DepartmentRef | None:
        row = await session.get(Department, department_id)
        if row is None:
            return None
        return DepartmentRef(id=row.id, institution_id=row.institution_id, name=row.name)

    async def departments_of(
        self, session: AsyncSession, institution_id: int | None = None
    ) -> list[DepartmentRef]:
        """The network's departments (one institution's, when named), by institution and id."""
        stmt = select(Department.id, Department.institution_id, Department.name)
        if institution_id is not None:
            stmt = stmt.where(Department.institution_id == institution_id)
        rows = await session.execute(stmt.order_by(Department.institution_id, Department.id))
        return [DepartmentRef(*row) for row in rows]

    async def doctors_in(
        self, session: AsyncSession, department_ids: Iterable[int]
    ) -> list[UserRef]:
        """The active doctors (specialists, community doctors) of these departments."""
        ids = sorted(set(department_ids))
        if not ids:
            return []
        rows = await session.scalars(
            select(User)
            .where(
                User.department_id.in_(ids),
                User.role.in_([Role.SPECIALIST, Role.GP]),
                User.active.is_(True),
            )
            .order_by(User.department_id, User.id)
        )
        return [_user(row) for row in rows]

    # --- patients ----------------------------------------------------------------------

    async def patient(self, session: AsyncSession, patient_id: int) -> PatientRef | None:
        row = await session.get(Patient, patient_id)
        return _patient(row) if row is not None else None

    async def patient_standing(self, session: AsyncSession, patient_id: int) -> int | None:
        """None for no such patient; else the account the patient was merged into, or 0
        (not merged). One column read, not the account."""
        found = (await session.execute(_STANDING, {"id": patient_id})).first()
        return None if found is None else (found.merged_into_id or 0)

    async def patient_exists(self, session: AsyncSession, patient_id: int) -> bool:
        found = await session.scalar(select(Patient.id).where(Patient.id == patient_id))
        return found is not None

    async def patients_matching(self, session: AsyncSession, text: str) -> list[int]:
        """Patients whose full name or resident ID is exactly ``text``."""
        rows = await session.scalars(
            select(Patient.id).where((Patient.name == text) | (Patient.resident_id == text))
        )
        return list(rows)

    # --- system accounts and their sessions ---------------------------------------------

    async def system_user(self, session: AsyncSession, username: str, role: str, name: str) -> int:
        """The id of a system account, created on first use (it can never log in).

        Runs in a savepoint of the caller's transaction, so a concurrent creation on
        another node (a unique-username conflict) is read back instead of failing.
        """
        found = await self.user_id_by_username(session, username)
        if found is not None:
            return found
        try:
            async with session.begin_nested():
                # No password can match "!" (not an argon2 hash): it never logs in.
                user = User(username=username, password_hash="!", role=role, name=name)
                session.add(user)
                await session.flush()
                return user.id
        except IntegrityError:
            again = await self.user_id_by_username(session, username)
            assert again is not None, "the conflicting account exists"
            return again

    async def open_system_session(
        self, session: AsyncSession, user_id: int, ttl_seconds: float
    ) -> str:
        """A session for a system account (its refresh token is thrown away)."""
        now = utcnow()
        session_id = secrets.token_hex(16)
        session.add(
            AuthSession(
                id=session_id,
                user_id=user_id,
                refresh_hash=hash_refresh_token(new_refresh_token()),
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(seconds=ttl_seconds),
            )
        )
        return session_id

    async def end_system_session(self, session: AsyncSession, session_id: str, reason: str) -> None:
        await session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoke_reason=reason[:32])
        )

    # --- lookups by name (seeding, fixtures) --------------------------------------------

    async def department_id_named(
        self, session: AsyncSession, institution_code: str, name: str
    ) -> int | None:
        """The department of that name at the institution with that code."""
        found: int | None = await session.scalar(
            select(Department.id)
            .join(Institution, Institution.id == Department.institution_id)
            .where(Institution.code == institution_code, Department.name == name)
        )
        return found

    async def institution_kind(self, session: AsyncSession, institution_id: int) -> str | None:
        """The kind of an institution (one column: the prescribing path asks it often)."""
        found: str | None = await session.scalar(
            select(Institution.kind).where(Institution.id == institution_id)
        )
        return found

    async def institution_ids_of_kind(self, session: AsyncSession, kind: str) -> list[int]:
        """Every institution of one kind (the network's pharmacies), by id."""
        return list(
            await session.scalars(
                select(Institution.id).where(Institution.kind == kind).order_by(Institution.id)
            )
        )
