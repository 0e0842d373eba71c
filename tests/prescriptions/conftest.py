"""Fixtures of e-prescriptions: the demo network plus 钱国华 (patient_qian) and his shared record.

A patient of his own, so the tests do not depend on the demo record of the
seeded patients. 钱国华 was seen in person at 青岛市立医院 (QDSL, dr_li's hospital):
hypertension (I10) and atrial fibrillation (I48) diagnosed at an outpatient
visit, diabetes (E11) noted only at an online visit; allergic to penicillin;
on warfarin. He chose 海川大药房 (HCYF, pharmacist_chen) as his pharmacy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select

from server.container import Services
from server.core.ids import make_resident_id
from server.identity.models import Institution
from server.identity.schemas import UserCreate
from server.seed import DEMO_PASSWORD
from tests.helpers import amlodipine


@dataclass
class World:
    patient_id: int
    qdsl: int
    hcyf: int
    tatyf: int
    services: Services


def encounter(code: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code},
        "period": {"start": "2026-03-01T09:00:00+08:00", "end": "2026-03-01T09:30:00+08:00"},
    }


def condition(code: str, display: str, encounter_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {
            "coding": [
                {"system": "http://hl7.org/fhir/sid/icd-10", "code": code, "display": display}
            ]
        },
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "onsetDateTime": "2026-03-01",
    }


PENICILLIN_ALLERGY = {
    "resourceType": "AllergyIntolerance",
    "clinicalStatus": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "code": "active",
            }
        ]
    },
    "code": {
        "coding": [
            {
                "system": "http://snomed.info/sct",
                "code": "91936005",
                "display": "Allergy to penicillin",
            }
        ]
    },
    "recordedDate": "2018-04-02",
}

WARFARIN = {
    "resourceType": "MedicationRequest",
    "status": "active",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [
            {
                "system": "urn:oid:2.16.156.10011.2.5.1.4",
                "code": "XB01AAH029A001010100853",
                "display": "华法林钠片 2.5mg",
            }
        ]
    },
    "authoredOn": "2026-03-01",
}


PATIENT = "patient_qian"
PATIENT_NAME = "钱国华"


async def ids(services: Services) -> tuple[int, dict[str, int]]:
    account = await services.identity.create_user(
        None,
        UserCreate(
            username=PATIENT,
            password=DEMO_PASSWORD,
            role="patient",
            name=PATIENT_NAME,
            resident_id=make_resident_id("370202", date(1958, 7, 16), 51),
        ),
    )
    async with services.db.read() as session:
        institutions = dict((await session.execute(select(Institution.code, Institution.id))).all())
    assert account.patient_id is not None
    return account.patient_id, institutions


async def add_record(services: Services, patient_id: int, institution_id: int) -> None:
    records = services.records
    async with services.db.transaction() as tx:
        # He was seen in person there (the desk read his presence code).
        await services.access.record_encounter(
            tx, patient_id=patient_id, institution_id=institution_id, reason="presence"
        )
        office = await records.add_resource(
            tx, patient_id=patient_id, institution_id=institution_id, resource=encounter("AMB")
        )
        online = await records.add_resource(
            tx, patient_id=patient_id, institution_id=institution_id, resource=encounter("VR")
        )
        for resource in (
            condition("I10", "原发性高血压", office["id"]),
            condition("I48", "心房颤动", office["id"]),
            condition("E11", "2型糖尿病", online["id"]),
            PENICILLIN_ALLERGY,
            WARFARIN,
        ):
            await records.add_resource(
                tx, patient_id=patient_id, institution_id=institution_id, resource=resource
            )


@pytest.fixture
async def world(network: Services) -> World:
    patient_id, institutions = await ids(network)
    await add_record(network, patient_id, institutions["QDSL"])
    return World(
        patient_id=patient_id,
        qdsl=institutions["QDSL"],
        hcyf=institutions["HCYF"],
        tatyf=institutions["TATYF"],
        services=network,
    )


def prescription(world: World, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patient_id": world.patient_id,
        "diagnosis": {"code": "I10", "display": "原发性高血压"},
        "items": [amlodipine()],
        "notes": "复诊续方",
    }
    return body | over
