"""The one adapter between prescriptions and the rest of the platform.

Everything the prescribing rules and checks read about a patient (the shared
record: conditions and the visits they were diagnosed in, allergies, current
medication) and about people and places (the patient's age and guardian, the
prescriber's right, whether an institution is a pharmacy) comes through here,
so the rules read plain values and the wiring to other capabilities is in one
file. So do the few facts a pharmacist needs to review and dispense
(:meth:`PatientRecord.dispensing_facts`): read through the records service's
trusted API for that one job, never as an access to the record.

The record is read once per request (:meth:`PatientRecord.chart`: every resource
type the rules need, in one query), and people through identity's directory, all
inside the caller's session. A write decides the record access inside its own
transaction too (:meth:`PatientRecord.check_access_in`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core.auth import Requester
from server.core.db import Database, Tx
from server.identity.directory import Directory, PatientRef, PrescribingPeople
from server.prescriptions import schemas

if TYPE_CHECKING:
    from server.access import AccessDecisions, AccessService
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
PHARMACY = "pharmacy"
# What the prescribing rules and checks read of the record (the pharmacy also the weight).
RULE_TYPES = ("Encounter", "Condition", "AllergyIntolerance", "MedicationRequest")


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
    # The Condition's id in the record (a follow-up visit names it: server/visits).
    id: str | None = None


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
    sex: str


@dataclass(frozen=True)
class PrescriberFacts:
    id: int
    name: str | None
    role: str
    institution_id: int | None
    can_prescribe: bool
    title: str | None


@dataclass(frozen=True)
class People:
    """Who a prescription involves, read in one statement (:meth:`PatientRecord.people`)."""

    prescriber: PrescriberFacts
    patient: PatientFacts | None
    institution_name: str | None  # the prescriber's institution
    pharmacy_known: bool  # the pharmacy asked for is a pharmacy (False when none is)


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


@dataclass(frozen=True)
class Chart:
    """What the rules, the checks and the pharmacy read of one patient's record."""

    conditions: list[RecordedCondition]
    allergies: list[Allergy]
    medications: list[CurrentMedication]
    weight: tuple[float, str | None] | None


def read_conditions(
    encounters: list[dict[str, Any]], conditions: list[dict[str, Any]]
) -> list[RecordedCondition]:
    classes = {f"Encounter/{e.get('id')}": (e.get("class") or {}).get("code") for e in encounters}
    found = []
    for resource in conditions:
        if _status(resource, "clinicalStatus") in INACTIVE_CLINICAL:
            continue
        if _status(resource, "verificationStatus") in REFUTED:
            continue
        reference = (resource.get("encounter") or {}).get("reference")
        encounter_class = classes.get(reference) if reference else None
        found.append(
            RecordedCondition(
                codes=frozenset(_codes(resource.get("code"))),
                display=_label(resource.get("code")),
                offline=encounter_class is not None
                and encounter_class not in ONLINE_ENCOUNTER_CLASSES,
                id=str(resource["id"]) if resource.get("id") is not None else None,
            )
        )
    return found


def read_allergies(resources: list[dict[str, Any]]) -> list[Allergy]:
    found = []
    for resource in resources:
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
        found.append(Allergy(tokens=frozenset(t.lower() for t in tokens), label=_label(concept)))
    return found


def read_medications(resources: list[dict[str, Any]]) -> list[CurrentMedication]:
    found = []
    for resource in resources:
        if resource.get("status") != "active":
            continue
        concept = resource.get("medicationCodeableConcept")
        found.append(CurrentMedication(codes=frozenset(_codes(concept)), label=_label(concept)))
    return found


def read_weight(observations: list[dict[str, Any]]) -> tuple[float, str | None] | None:
    """The newest body-weight Observation in kg, with its date; None when none is usable."""
    for resource in observations:
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


def patient_facts(row: PatientRef, user_id: int | None) -> PatientFacts:
    return PatientFacts(
        id=row.id,
        name=row.name,
        resident_id=row.resident_id,
        birth_date=row.birth_date,
        guardian_name=row.guardian_name,
        user_id=user_id,
        sex=row.sex,
    )


class PatientRecord:
    """Reads for the rules and checks; ``records``/``access`` are the records capability's,
    ``directory`` identity's."""

    def __init__(
        self,
        db: Database,
        records: RecordsService,
        access: AccessService,
        directory: Directory,
    ) -> None:
        self.db = db
        self.records = records
        self.access = access
        self.directory = directory

    async def check_access(self, requester: Requester, patient_id: int, action: str) -> None:
        await self.access.check_patient_access(
            requester, patient_id, action=action, resources="Prescription"
        )

    def decisions(self) -> AbstractAsyncContextManager[AccessDecisions]:
        """Where :meth:`check_access_in` may decide; opened around the write transaction."""
        return self.access.decisions()

    async def check_access_in(
        self, decide: AccessDecisions, tx: Tx, requester: Requester, patient_id: int, action: str
    ) -> None:
        """:meth:`check_access` inside the write ``tx``; its audit entry commits with it."""
        await decide.check(tx, requester, patient_id, action=action, resources="Prescription")

    async def chart(self, session: AsyncSession, patient_id: int, *, weight: bool) -> Chart:
        """The record as the rules read it, in one query (``weight``: the pharmacy's too)."""
        found = await self.records.resources_of_types(
            session,
            patient_id,
            RULE_TYPES,
            coded=[("Observation", WEIGHT_LOINC)] if weight else (),
        )
        return Chart(
            conditions=read_conditions(found["Encounter"], found["Condition"]),
            allergies=read_allergies(found["AllergyIntolerance"]),
            medications=read_medications(found["MedicationRequest"]),
            weight=read_weight(found.get("Observation", [])),
        )

    async def people(
        self, session: AsyncSession, user_id: int, patient_id: int, pharmacy_id: int | None = None
    ) -> People:
        """The prescriber, the patient, and whether ``pharmacy_id`` is a pharmacy: one read."""
        found: PrescribingPeople = await self.directory.prescribing_people(
            session, user_id, patient_id, pharmacy_id
        )
        user = found.prescriber
        assert user is not None, "an authenticated user exists"
        prescriber = PrescriberFacts(
            id=user.id,
            name=user.name,
            role=user.role,
            institution_id=user.institution_id,
            can_prescribe=user.can_prescribe and user.active,
            title=user.title,
        )
        patient = (
            patient_facts(found.patient, found.patient_user_id)
            if found.patient is not None
            else None
        )
        institution = found.prescriber_institution
        return People(
            prescriber=prescriber,
            patient=patient,
            institution_name=institution.name if institution is not None else None,
            pharmacy_known=found.pharmacy_kind == PHARMACY,
        )

    async def patient(self, patient_id: int) -> PatientFacts | None:
        async with self.db.read() as session:
            return await self.patient_in(session, patient_id)

    async def patient_in(self, session: AsyncSession, patient_id: int) -> PatientFacts | None:
        row = await self.directory.patient(session, patient_id)
        if row is None:
            return None
        return patient_facts(row, await self.patient_user_id(session, patient_id))

    async def patient_user_id(self, session: AsyncSession, patient_id: int) -> int | None:
        """The patient's account, read inside the caller's transaction."""
        return await self.directory.user_id_of_patient(session, patient_id)

    async def patients_matching(self, text: str) -> list[int]:
        async with self.db.read() as session:
            return await self.directory.patients_matching(session, text)

    async def is_pharmacy(self, session: AsyncSession, institution_id: int) -> bool:
        return await self.directory.institution_kind(session, institution_id) == PHARMACY

    async def dispensing_facts(
        self, patient_id: int, prescriber_id: int
    ) -> tuple[schemas.PatientView, schemas.PrescriberView]:
        """The pharmacy's view of a stored prescription's people, in one read (two
        statements: the people, the record)."""
        async with self.db.read() as session:
            people = await self.people(session, prescriber_id, patient_id)
            assert people.patient is not None, "a prescription's patient exists"
            chart = await self.chart(session, patient_id, weight=True)
            return pharmacy_views(people, people.patient, chart)


def pharmacy_views(
    people: People, patient: PatientFacts, chart: Chart
) -> tuple[schemas.PatientView, schemas.PrescriberView]:
    """What the pharmacy sees of the patient and the prescriber: age (not the birth
    date), sex, weight, allergies, a masked resident ID; name, title and institution."""
    prescriber = people.prescriber
    weight = chart.weight
    return (
        schemas.PatientView(
            name=patient.name,
            resident_id_masked=mask_resident_id(patient.resident_id),
            sex=patient.sex,
            age=age_on(patient.birth_date, datetime.now(CHINA).date()),
            weight_kg=weight[0] if weight else None,
            weight_at=weight[1] if weight else None,
            allergies=sorted({a.label for a in chart.allergies if a.label}),
        ),
        schemas.PrescriberView(
            user_id=prescriber.id,
            name=prescriber.name,
            title=prescriber.title,
            institution_id=prescriber.institution_id,
            institution_name=people.institution_name,
        ),
    )
