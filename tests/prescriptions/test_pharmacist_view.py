"""The pharmacy's view of a prescription: the facts to review and dispense, never the record."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from server.core.ids import make_resident_id
from tests.helpers import Api
from tests.prescriptions.conftest import PATIENT, PATIENT_NAME, World, prescription

RX = "/api/v1/prescriptions"
RESIDENT_ID = make_resident_id("370202", date(1958, 7, 16), 51)  # patient_qian's


def weight(kg: float, unit: str, on: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]
        },
        "effectiveDateTime": on,
        "valueQuantity": {"value": kg, "unit": unit, "system": "http://unitsofmeasure.org",
                          "code": unit},
    }  # fmt: skip


def age_today(born: date) -> int:
    today = datetime.now(UTC).date()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


async def test_the_pharmacy_sees_the_facts_to_dispense_with_a_masked_resident_id(
    api: Api, world: World
) -> None:
    services = world.services
    async with services.db.transaction() as tx:
        for resource in (weight(75.0, "kg", "2025-11-02"), weight(72400, "g", "2026-02-20")):
            await services.records.add_resource(
                tx, patient_id=world.patient_id, institution_id=world.qdsl, resource=resource
            )
    status, rx = await api.post(RX, as_="dr_li", json=prescription(world, pharmacy_id=world.hcyf))
    assert status == 201, rx
    assert rx["content"]["patient"]["resident_id"] == RESIDENT_ID  # the doctor's own copy
    assert rx["patient"] is None

    status, seen = await api.get(f"{RX}/{rx['id']}", as_="pharmacist_chen")
    assert status == 200, seen
    masked = "3702" + "*" * 10 + RESIDENT_ID[-4:]
    assert seen["patient"] == {
        "name": PATIENT_NAME,
        "resident_id_masked": masked,
        "sex": "male",
        "age": age_today(date(1958, 7, 16)),
        "weight_kg": 72.4,  # the newest measurement, converted from grams
        "weight_at": "2026-02-20",
        "allergies": ["Allergy to penicillin"],
    }
    assert seen["prescriber"] == {
        "user_id": rx["prescriber_id"],
        "name": "李明",
        "title": "主任医师",
        "institution_id": world.qdsl,
        "institution_name": "青岛市立医院",
    }
    assert seen["content"]["patient"]["resident_id"] == masked
    assert seen["content"]["diagnosis"] == {
        "system": "ICD-10",
        "code": "I10",
        "display": "原发性高血压",
    }
    assert RESIDENT_ID not in json.dumps(seen)
    assert "1958-07-16" not in json.dumps(seen)

    status, queue = await api.get("/api/v1/pharmacy/prescriptions", as_="pharmacist_chen")
    assert status == 200
    [item] = queue["items"]
    assert item["patient"] == seen["patient"] and item["prescriber"] == seen["prescriber"]
    status, pending = await api.get("/api/v1/pharmacy/deliveries/pending", as_="pharmacist_chen")
    assert status == 200
    [delivered] = pending["items"]
    assert delivered["stream"] == f"pharmacy:{world.hcyf}"
    assert delivered["data"]["prescription"]["patient"]["resident_id_masked"] == masked
    assert RESIDENT_ID not in json.dumps(pending)

    status, reviewed = await api.post(
        f"{RX}/{rx['id']}/review", as_="pharmacist_chen", json={"decision": "approve"}
    )
    assert status == 200 and reviewed["patient"]["resident_id_masked"] == masked
    status, verified = await api.get(f"{RX}/{rx['id']}/verify", as_="pharmacist_chen")
    assert status == 200 and verified["valid"] is True

    status, mine = await api.get(f"{RX}/{rx['id']}", as_=PATIENT)
    assert status == 200 and mine["content"]["patient"]["resident_id"] == RESIDENT_ID


async def test_a_pharmacist_never_reads_the_record_even_where_the_patient_is_registered(
    api: Api, world: World
) -> None:
    services = world.services
    async with services.db.transaction() as tx:
        await services.access.record_encounter(
            tx, patient_id=world.patient_id, institution_id=world.hcyf, reason="presence"
        )
    for path in ("summary", "timeline"):
        status, problem = await api.get(
            f"/api/v1/patients/{world.patient_id}/{path}", as_="pharmacist_chen"
        )
        assert status in (403, 404), (path, status, problem)
    status, problem = await api.get(
        f"/fhir/Patient/{world.patient_id}/$everything", as_="pharmacist_chen"
    )
    assert status in (403, 404), problem
    # A clinician of the same kind of relationship does read it (the rule is the role).
    status, summary = await api.get(f"/api/v1/patients/{world.patient_id}/summary", as_="dr_li")
    assert status == 200, summary
