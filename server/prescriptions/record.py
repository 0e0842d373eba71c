"""The one adapter between prescriptions and the rest of the platform.

Everything the prescribing rules and checks read about a patient (the shared
record: conditions and the visits they were diagnosed in, allergies, current
medication) and about people and places (the patient's age and guardian, the
prescriber's right, whether an institution is a pharmacy) comes through here,
so the rules read plain values and the wiring to other capabilities is in one
file. So do the few facts a pharmacist needs to review and dispense
(:meth:`PatientRecord.dispensing_facts`): read through the records service's
trusted API for that one job, never as an access to the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.auth import Requester
from server.core.db import Database
from server.identity.models import Institution, Patient, User
from server.prescriptions import schemas

if TYPE_CHECKING:
    from server.access import AccessService
    from server.records.service import RecordsService

# FHIR v3-ActCode encounter classes: VR (virtual) is online; the rest were in person.
ONLINE_ENCOUNTER_CLASSES = frozenset({"VR"})
INACTIVE_CLINICAL = frozenset({"inactive", "resolved", "remission"})
REFUTED = frozenset({"refuted", "entered-in-error"})
WEIGHT_LOINC = "29463-7"  # Body weight
# UCUM codes (and the plain units some systems send) to kilograms.
KG_PER_UNIT = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237}
NOT_A_MEASUREMENT = frozenset({"entered-in-error", "cancelled"})
CHINA = timezone(timedelta(hours=8))


def mask_resident_id(resident_id: str) -> str:
    """``3702**********0267``: enough to match the person at the counter, not the number."""
    return resident_id[:4] + "*" * max(len(resident_id) - 8, 0) + resident_id[-4:]


def age_on(birth_date: date, today: date) -> int:
    """Full years of age on ``today``."""
    before_birthday = (today.month, today.day) < (birth_date.month, birth_date.day)
    return today.year - birth_date.year - before_birthday


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

    async def latest_weight(self, patient_id: int) -> tuple[float, str | None] | None:
        """The newest body-weight Observation in kg, with its date; None when none is usable."""
        for resource in await self.records.resources(patient_id, "Observation", code=WEIGHT_LOINC):
            if resource.get("status") in NOT_A_MEASUREMENT:
                continue
            quantity = resource.get("valueQuantity") or {}
            value = quantity.get("value")
            factor = KG_PER_UNIT.get(quantity.get("code") or quantity.get("unit") or "")
            if factor is None or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            at = resource.get("effectiveDateTime")
            return round(value * factor, 1), at if isinstance(at, str) else None
        return None

    async def dispensing_facts(
        self, patient_id: int, prescriber_id: int
    ) -> tuple[schemas.PatientView, schemas.PrescriberView]:
        """What the pharmacy sees of the patient and the prescriber: age (not the birth
        date), sex, weight, allergies, a masked resident ID; name, title and institution."""
        async with self.db.read() as session:
            patient = await session.get(Patient, patient_id)
            doctor = await session.get(User, prescriber_id)
            assert patient is not None and doctor is not None, "a prescription's people exist"
            institution = (
                await session.get(Institution, doctor.institution_id)
                if doctor.institution_id is not None
                else None
            )
        weight = await self.latest_weight(patient_id)
        allergies = sorted({a.label for a in await self.allergies(patient_id) if a.label})
        return (
            schemas.PatientView(
                name=patient.name,
                resident_id_masked=mask_resident_id(patient.resident_id),
                sex=patient.sex,
                age=age_on(patient.birth_date, datetime.now(CHINA).date()),
                weight_kg=weight[0] if weight else None,
                weight_at=weight[1] if weight else None,
                allergies=allergies,
            ),
            schemas.PrescriberView(
                user_id=doctor.id,
                name=doctor.name,
                title=doctor.title,
                institution_id=doctor.institution_id,
                institution_name=institution.name if institution else None,
            ),
        )

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
