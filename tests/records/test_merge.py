"""Merging two accounts of one person moves their links and record; undoing moves them back."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select

from server.container import Services
from server.core.audit import AuditEvent
from server.core.ids import make_resident_id
from tests.helpers import Api


def registration(resident_id: str, **extra: Any) -> dict[str, Any]:
    return {"resident_id": resident_id, "name": "周国强", **extra}


async def test_merge_moves_links_and_record_then_unmerge_restores(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    # The clinic's push created an account; the hospital registered the same man under
    # a mistyped ID, and pushed a condition for that duplicate.
    original = pushed["patient_id"]
    dup_id = make_resident_id("370202", date(1960, 5, 1), 13)
    status, dup = await api.post(
        "/api/v1/patients",
        as_="dr_li",
        json=registration(dup_id, mrn="Q-5"),
    )
    assert status == 201
    # He was at the hospital's desk in person (no app under the mistyped ID: the desk's
    # encounter is recorded directly).
    async with network.db.transaction() as tx:
        await network.access.record_encounter(
            tx, patient_id=dup["id"], institution_id=dup["links"][0]["institution"]["id"],
            reason="presence",
        )  # fmt: skip
    condition = {
        "resourceType": "Condition",
        "id": "q-cond-1",
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "subject": {"reference": f"Patient/{dup['id']}"},
    }
    status, body = await api.post(
        "/fhir",
        as_="dr_li",
        json={"resourceType": "Bundle", "type": "batch", "entry": [{"resource": condition}]},
    )
    assert status == 200 and body["entry"][0]["response"]["status"] == "201 Created", body
    status, merge = await api.post(
        "/api/v1/patient-merges",
        as_="admin",
        json={"source_patient_id": dup["id"], "target_patient_id": original, "reason": "同一人"},
    )
    assert status == 201, merge
    assert len(merge["moved"]["records"]) == 1 and len(merge["moved"]["links"]) == 1
    status, found = await api.get(
        "/fhir/Condition", as_="dr_li", params={"patient": str(original), "code": "E11.9"}
    )
    assert status == 200 and found["total"] == 1, found
    assert found["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{original}"
    status, merged = await api.get(f"/api/v1/patients/{original}", as_="dr_li")
    assert {link["number"] for link in merged["links"]} == {"Q-5", "P1001"}
    status, _ = await api.get(f"/api/v1/patients/{dup['id']}", as_="dr_li")
    assert status == 403  # the duplicate is gone from view (answered like an unknown patient)

    status, undone = await api.post(f"/api/v1/patient-merges/{merge['id']}/undo", as_="admin")
    assert status == 200 and undone["unmerged_at"], undone
    status, found = await api.get(
        "/fhir/Condition", as_="gp_zhang", params={"patient": str(original), "code": "E11.9"}
    )
    assert found["total"] == 0
    # The hospital's care relationship came with the merge and left with it.
    status, _ = await api.get(f"/fhir/Patient/{original}", as_="dr_li")
    assert status == 403
    status, found = await api.get(
        "/fhir/Condition", as_="dr_li", params={"patient": str(dup["id"]), "code": "E11.9"}
    )
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{dup['id']}"
    status, _ = await api.post(f"/api/v1/patient-merges/{merge['id']}/undo", as_="admin")
    assert status == 409
    async with network.db.read() as session:
        actions = list(
            await session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.action.like("patient.%merge"))
                .order_by(AuditEvent.seq)
            )
        )
    assert actions == ["patient.merge", "patient.merge", "patient.unmerge", "patient.unmerge"]
