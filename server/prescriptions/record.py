"""The one adapter between prescriptions and the rest of the platform.

Everything the prescribing rules and checks read about a patient (the shared
record: conditions and the visits they were diagnosed in, allergies, current
medication) and about people and places (the patient's age and guardian, the
prescriber's right, whether an institution is a pharmacy) comes through here,
so the rules read plain values and the wiring to other capabilities is in one
file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.auth import Requester
from server.core.db import Database
from server.identity.models import Institution, Patient, User

if TYPE_CHECKING:
    from server.core.access import AccessService
    from server.records.service import RecordsService

# FHIR v3-ActCode encounter classes: VR (virtual) is online; the rest were in person.
ONLINE_ENCOUNTER_CLASSES = frozenset({"VR"})
INACTIVE_CLINICAL = frozenset({"inactive", "resolved", "remission"})
REFUTED = frozenset({"refuted", "entered-in-error"})


@dataclass(frozen=True)
class RecordedCondition:
    codes: frozenset[str]
    display: str
    offline: bool


@dataclass(frozen=True)
class Allergy:
    tokens: frozenset[str]  # codes, displays and text, lower case
    label: str


@dataclass(frozen=True)
class CurrentMedication:
    codes: frozenset[str]
    label: str


@dataclass(frozen=True)
class PatientFacts:
    id: int
    name: str
    resident_id: str
    birth_date: date
    guardian_name: str | None
    user_id: int | None


@dataclass(frozen=True)
class PrescriberFacts:
    id: int
    name: str | None
    role: str
    institution_id: int | None
    can_prescribe: bool


def _codes(concept: dict[str, Any] | None) -> set[str]:
    if not concept:
        return set()
    return {c["code"] for c in concept.get("coding", []) if isinstance(c.get("code"), str)}


def _status(resource: dict[str, Any], key: str) -> str | None:
    codes = _codes(resource.get(key))
    return next(iter(codes)) if codes else None


def _label(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding", []):
        if coding.get("display"):
            return str(coding["display"])
    return ", ".join(sorted(_codes(concept)))


class PatientRecord:
    """Reads for the rules and checks; ``records``/``access`` are the records capability's."""

    def __init__(self, db: Database, records: RecordsService, access: AccessService) -> None:
        self.db = db
        self.records = records
        self.access = access

    async def _resources(self, patient_id: int, resource_type: str) -> list[dict[str, Any]]:
        return await self.records.resources(patient_id, resource_type)

    async def check_access(self, requester: Requester, patient_id: int, action: str) -> None:
        await self.access.check_patient_access(
            requester, patient_id, action=action, resources="Prescription"
        )

    async def conditions(self, patient_id: int) -> list[RecordedCondition]:
        encounters = {
            f"Encounter/{e.get('id')}": (e.get("class") or {}).get("code")
            for e in await self._resources(patient_id, "Encounter")
        }
        found = []
        for resource in await self._resources(patient_id, "Condition"):
            if _status(resource, "clinicalStatus") in INACTIVE_CLINICAL:
                continue
            if _status(resource, "verificationStatus") in REFUTED:
                continue
            reference = (resource.get("encounter") or {}).get("reference")
            encounter_class = encounters.get(reference) if reference else None
            found.append(
                RecordedCondition(
                    codes=frozenset(_codes(resource.get("code"))),
                    display=_label(resource.get("code")),
                    offline=encounter_class is not None
                    and encounter_class not in ONLINE_ENCOUNTER_CLASSES,
                )
            )
        return found

    async def allergies(self, patient_id: int) -> list[Allergy]:
        found = []
        for resource in await self._resources(patient_id, "AllergyIntolerance"):
            if _status(resource, "clinicalStatus") in INACTIVE_CLINICAL:
                continue
            if _status(resource, "verificationStatus") in REFUTED:
                continue
            concept = resource.get("code") or {}
            tokens = _codes(concept) | {
                str(c["display"]) for c in concept.get("coding", []) if c.get("display")
            }
            if concept.get("text"):
                tokens.add(str(concept["text"]))
            found.append(
                Allergy(tokens=frozenset(t.lower() for t in tokens), label=_label(concept))
            )
        return found

    async def medications(self, patient_id: int) -> list[CurrentMedication]:
        found = []
        for resource in await self._resources(patient_id, "MedicationRequest"):
            if resource.get("status") != "active":
                continue
            concept = resource.get("medicationCodeableConcept")
            found.append(CurrentMedication(codes=frozenset(_codes(concept)), label=_label(concept)))
        return found

    async def patient(self, patient_id: int) -> PatientFacts | None:
        async with self.db.read() as session:
            return await self._patient(session, patient_id)

    async def people(
        self, user_id: int, patient_id: int
    ) -> tuple[PrescriberFacts, PatientFacts | None]:
        """The prescriber and the patient, in one read."""
        async with self.db.read() as session:
            row = await session.get(User, user_id)
            assert row is not None, "an authenticated user exists"
            prescriber = PrescriberFacts(
                id=row.id,
                name=row.name,
                role=row.role,
                institution_id=row.institution_id,
                can_prescribe=row.can_prescribe and row.active,
            )
            return prescriber, await self._patient(session, patient_id)

    async def _patient(self, session: AsyncSession, patient_id: int) -> PatientFacts | None:
        row = await session.get(Patient, patient_id)
        if row is None:
            return None
        return PatientFacts(
            id=row.id,
            name=row.name,
            resident_id=row.resident_id,
            birth_date=row.birth_date,
            guardian_name=row.guardian_name,
            user_id=await self.patient_user_id(session, patient_id),
        )

    @staticmethod
    async def patient_user_id(session: AsyncSession, patient_id: int) -> int | None:
        """The patient's account, read inside the caller's transaction."""
        return await session.scalar(select(User.id).where(User.patient_id == patient_id))

    async def patients_matching(self, text: str) -> list[int]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Patient.id).where((Patient.name == text) | (Patient.resident_id == text))
            )
            return list(rows)

    async def is_pharmacy(self, institution_id: int) -> bool:
        async with self.db.read() as session:
            kind = await session.scalar(
                select(Institution.kind).where(Institution.id == institution_id)
            )
        return kind == "pharmacy"
