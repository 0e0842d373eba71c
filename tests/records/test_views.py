"""The clinician views: a clinical summary and a timeline across institutions."""

from __future__ import annotations

from typing import Any

from server.container import Services
from server.seed import seed_demo
from tests.helpers import Api
from tests.records.conftest import push


async def test_summary_shows_problems_labs_meds_allergies_with_their_source(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    pid = pushed["patient_id"]
    status, summary = await api.get(f"/api/v1/patients/{pid}/summary", as_="gp_zhang")
    assert status == 200, summary
    assert summary["access_reason"] == "care_relationship"
    assert {p["code"] for p in summary["active_problems"]} == {"I10", "F32.9"}
    assert all(p["institution"]["code"] == "SNBDH" for p in summary["active_problems"])
    [lab] = summary["recent_labs"]  # vital signs are not labs
    assert (lab["code"], lab["value"], lab["unit"]) == ("2345-7", 7.9, "mmol/L")
    assert (lab["interpretation"], lab["abnormal"], lab["direction"]) == ("H", True, "up")
    assert [p["value"] for p in lab["trend"]] == [6.8]
    assert lab["reference_range"] == "3.9–6.1"
    assert [m["display"] for m in summary["current_medications"]] == ["苯磺酸氨氯地平片 5mg"]
    assert [a["code"] for a in summary["allergies"]] == ["91936005"]


async def test_a_derived_abnormal_flag_when_none_is_sent(
    api: Api, network: Services, pushed: dict[str, Any], bundle: dict[str, Any]
) -> None:
    # A low result with no interpretation sent: the reference range flags it.
    obs = bundle["entry"][7]["resource"]
    del obs["interpretation"]
    obs["valueQuantity"]["value"] = 3.1
    await push(api, "gp_zhang", bundle)
    _, summary = await api.get(f"/api/v1/patients/{pushed['patient_id']}/summary", as_="gp_zhang")
    lab = summary["recent_labs"][0]
    assert (lab["interpretation"], lab["abnormal"], lab["direction"]) == ("L", True, "down")


async def test_timeline_across_institutions_with_filters(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    pid = pushed["patient_id"]
    # The hospital saw him too and pushes a diagnosis of its own.
    status, _ = await api.post(
        "/api/v1/patients",
        as_="dr_li",
        json={"resident_id": "370202196005010115", "name": "周国强"},
    )
    assert status == 201
    await api.present("dr_li", "patient_zhou")
    status, body = await push(
        api,
        "dr_li",
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {
            "resourceType": "Condition", "id": "qdsl-c-1",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9",
                                 "display": "2型糖尿病"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "onsetDateTime": "2025-06-01"}}]},
    )  # fmt: skip
    assert status == 200, body

    async def timeline(**params: Any) -> Any:
        status, body = await api.get(
            f"/api/v1/patients/{pid}/timeline", as_="gp_zhang", params=params
        )
        assert status == 200, body
        return body

    everything = await timeline()
    assert everything["total"] == 10  # 9 entries from the clinic, 1 from the hospital
    assert everything["items"][0]["code"] == "E11.9"  # newest first
    assert everything["items"][0]["institution"]["code"] == "QDSL"
    by_institution = await timeline(institution="QDSL")
    assert [i["code"] for i in by_institution["items"]] == ["E11.9"]
    conditions = await timeline(type="Condition")
    assert {i["institution"]["code"] for i in conditions["items"]} == {"SNBDH", "QDSL"}
    march = await timeline(**{"from": "2025-03-01", "to": "2025-03-01"})
    assert {i["resource_type"] for i in march["items"]} == {
        "Encounter", "Observation", "MedicationRequest", "Claim"
    }  # fmt: skip
    glucose = await timeline(code="2345-7", limit=1)
    assert (glucose["total"], len(glucose["items"]), glucose["next_offset"]) == (2, 1, 1)
    status, body = await api.get(
        f"/api/v1/patients/{pid}/timeline", as_="gp_zhang", params={"institution": "NOPE"}
    )
    assert status == 422
    status, body = await api.get(
        f"/api/v1/patients/{pid}/timeline", as_="gp_zhang", params={"colour": "red"}
    )
    assert status == 422


async def test_the_demo_network_has_records_at_clinics_and_hospitals(
    api: Api, network: Services
) -> None:
    status, me = await api.get("/api/v1/me", as_="patient_wang")
    pid = me["patient_id"]
    status, summary = await api.get(f"/api/v1/patients/{pid}/summary", as_="gp_zhang")
    assert status == 200, summary
    problems = {(p["code"], p["institution"]["code"]) for p in summary["active_problems"]}
    assert problems == {("I10", "SNBDH"), ("E11.9", "SNBDH"), ("I25.1", "QDSL")}
    hba1c = next(lab for lab in summary["recent_labs"] if lab["code"] == "4548-4")
    assert (hba1c["value"], hba1c["abnormal"], hba1c["direction"]) == (8.1, True, "up")
    assert [p["value"] for p in hba1c["trend"]] == [7.6, 7.2]
    assert {m["code"] for m in summary["current_medications"]} == {"C08CA01", "A10BA02"}
    assert [a["display"] for a in summary["allergies"]] == ["青霉素过敏"]
    # The hospital cares for him too; another hospital does not.
    assert (await api.get(f"/api/v1/patients/{pid}/summary", as_="dr_li"))[0] == 200
    assert (await api.get(f"/api/v1/patients/{pid}/summary", as_="dr_zhao"))[0] == 403
    # Seeding again updates instead of duplicating.
    before = await network.records.resources(pid, "Observation")
    await seed_demo(network)
    assert len(await network.records.resources(pid, "Observation")) == len(before)
