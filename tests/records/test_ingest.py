"""Pushing FHIR bundles: transaction and batch, references, re-sends, refusals."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from server.container import Services
from server.records.models import RecordEntry
from tests.helpers import Api
from tests.records.conftest import count_entries, push


async def patient_entries(services: Services, patient_id: int) -> int:
    async with services.db.read() as session:
        query = select(func.count()).where(RecordEntry.patient_id == patient_id)
        return int(await session.scalar(query) or 0)


async def test_transaction_stores_every_entry_and_resolves_references(
    api: Api, network: Services, seeded: int, pushed: dict[str, Any]
) -> None:
    response, patient_id = pushed["response"], pushed["patient_id"]
    assert response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created"] * 12
    assert await count_entries(network) == seeded + 12
    assert await patient_entries(network, patient_id) == 10  # not Organization/Practitioner
    # The condition points at the unified patient and the stored encounter.
    location = response["entry"][4]["response"]["location"]
    status, condition = await api.get(f"/fhir/{location.rsplit('/_history', 1)[0]}", as_="gp_zhang")
    assert status == 200, condition
    assert condition["subject"]["reference"] == f"Patient/{patient_id}"
    encounter_id = response["entry"][3]["response"]["location"].split("/")[1]
    assert condition["encounter"]["reference"] == f"Encounter/{encounter_id}"
    assert condition["meta"]["source"] == "urn:yihao:institution:SNBDH"
    assert condition["meta"]["versionId"] == "1"


async def test_resending_updates_instead_of_duplicating(
    api: Api, network: Services, seeded: int, pushed: dict[str, Any], bundle: dict[str, Any]
) -> None:
    bundle["entry"][7]["resource"]["valueQuantity"]["value"] = 8.1
    status, body = await push(api, "gp_zhang", bundle)
    assert status == 200, body
    assert [e["response"]["status"] for e in body["entry"]][1:] == ["200 OK"] * 11
    assert await count_entries(network) == seeded + 12
    location = body["entry"][7]["response"]["location"]
    assert location.endswith("/_history/2")
    status, obs = await api.get(f"/fhir/{location.rsplit('/_history', 1)[0]}", as_="gp_zhang")
    assert obs["valueQuantity"]["value"] == 8.1
    assert obs["meta"]["versionId"] == "2"


def entry_issues(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["expression"][0], i["diagnostics"]) for i in body["issue"]]


async def refused_transaction(
    api: Api, services: Services, bundle: dict[str, Any], as_: str = "gp_zhang"
) -> list[tuple[str, str]]:
    before = await count_entries(services)
    status, body = await push(api, as_, bundle)
    assert status in (403, 422), body
    assert body["resourceType"] == "OperationOutcome"
    assert await count_entries(services) == before, "a failed transaction writes nothing"
    return entry_issues(body)


async def test_a_resource_that_is_not_r4_refuses_the_transaction(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    bundle["entry"][6]["resource"]["valueQuantity"]["value"] = "high"
    bundle["entry"][9]["resource"]["status"] = ["active"]
    issues = await refused_transaction(api, network, bundle)
    paths = [path for path, _ in issues]
    assert "Bundle.entry[6].resource.valueQuantity.value" in paths
    assert "Bundle.entry[9].resource.status" in paths


async def test_an_unknown_resource_type_is_named(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    bundle["entry"][2]["resource"]["resourceType"] = "Doctor"
    issues = await refused_transaction(api, network, bundle)
    assert issues == [
        ("Bundle.entry[2].resource.resourceType", "'Doctor' is not a FHIR R4 resource type")
    ]


async def test_a_broken_reference_is_named(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    bundle["entry"][4]["resource"]["encounter"]["reference"] = "urn:uuid:00000000-dead"
    issues = await refused_transaction(api, network, bundle)
    assert issues[0][0] == "Bundle.entry[4].resource.encounter.reference"
    assert "refers to nothing" in issues[0][1]


async def test_an_unknown_patient_is_refused(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    del bundle["entry"][0]
    for entry in bundle["entry"]:
        for key in ("subject", "patient"):
            if key in entry["resource"]:
                entry["resource"][key] = {"reference": "Patient/999999"}
    issues = await refused_transaction(api, network, bundle)
    assert issues[0] == (
        "Bundle.entry[2].resource.subject.reference",
        "unknown patient 'Patient/999999'",
    )


async def test_a_patient_not_registered_here_is_refused(
    api: Api, network: Services, pushed: dict[str, Any], bundle: dict[str, Any]
) -> None:
    # dr_zhao's hospital never saw the patient: it may not write into their record.
    condition = bundle["entry"][4]["resource"]
    condition["subject"] = {"reference": f"Patient/{pushed['patient_id']}"}
    del condition["encounter"]
    before = await count_entries(network)
    status, body = await push(
        api,
        "dr_zhao",
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": condition}]},
    )
    assert status == 403, body
    assert body["issue"][0]["code"] == "forbidden"
    assert body["issue"][0]["expression"] == ["Bundle.entry[0].resource.subject"]
    assert await count_entries(network) == before


async def test_a_resident_id_that_fails_its_check(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    bundle["entry"][0]["resource"]["identifier"][0]["value"] = "370202196005010111"
    issues = await refused_transaction(api, network, bundle)
    assert issues[0][0] == "Bundle.entry[0].resource.identifier[0].value"
    assert "check_character" in issues[0][1]


async def test_gender_must_match_the_resident_id(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    bundle["entry"][0]["resource"]["gender"] = "female"
    issues = await refused_transaction(api, network, bundle)
    assert issues == [("Bundle.entry[0].resource.gender", "the resident ID says male")]


async def test_another_institutions_identifier_is_refused(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    # QDSL pushes the patient under SNBDH's record number.
    issues = await refused_transaction(api, network, bundle, as_="dr_li")
    assert issues[0][0] == "Bundle.entry[0].resource.identifier[1].system"
    assert "SNBDH" in issues[0][1]


async def test_a_batch_stores_the_good_entries_and_explains_the_bad(
    api: Api, network: Services, seeded: int, bundle: dict[str, Any]
) -> None:
    bundle["type"] = "batch"
    bundle["entry"][5]["resource"]["onsetDateTime"] = "yesterday"
    bundle["entry"][10]["resource"]["patient"]["reference"] = "Patient/424242"
    status, body = await push(api, "gp_zhang", bundle)
    assert status == 200, body
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses.count("201 Created") == 10
    assert statuses[5] == statuses[10] == "422 Unprocessable Entity"
    outcome = body["entry"][5]["response"]["outcome"]
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[5].resource.onsetDateTime"]
    assert await count_entries(network) == seeded + 10


async def test_bad_bundles_and_requests_get_operation_outcomes(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    cases = [
        ({"resourceType": "Patient"}, 400, "Bundle.resourceType"),
        ({"resourceType": "Bundle", "type": "collection", "entry": []}, 400, "Bundle.type"),
    ]
    for payload, expected, path in cases:
        status, body = await push(api, "gp_zhang", payload)
        assert (status, body["issue"][0]["expression"]) == (expected, [path])
    status, body = await api.post(
        "/fhir",
        as_="gp_zhang",
        data=b"{not json",
        headers={"Content-Type": "application/fhir+json"},
    )
    assert status == 400 and body["resourceType"] == "OperationOutcome"
    status, body = await api.post("/fhir", json=bundle)
    assert status == 401 and body["issue"][0]["code"] == "login"
    status, body = await api.get("/fhir/Condition/999", as_="gp_zhang")
    assert status == 404 and body["resourceType"] == "OperationOutcome"
    status, body = await push(api, "patient_wang", bundle)
    assert status == 403 and body["issue"][0]["code"] == "forbidden"


async def test_trusted_add_resource_stamps_source_and_returns_the_stored_resource(
    network: Services, pushed: dict[str, Any]
) -> None:
    async with network.db.read() as session:
        from server.identity.models import Institution

        qdsl = await session.scalar(select(Institution.id).where(Institution.code == "QDSL"))
    assert qdsl is not None
    opinion = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]
        },
        "content": [{"attachment": {"contentType": "text/plain", "data": "5bu66K6u"}}],
    }
    async with network.db.transaction() as tx:
        stored = await network.records.add_resource(
            tx, patient_id=pushed["patient_id"], institution_id=qdsl, resource=opinion
        )
    assert stored["subject"] == {"reference": f"Patient/{pushed['patient_id']}"}
    assert stored["meta"]["source"] == "urn:yihao:institution:QDSL"
    found = await network.records.resources(pushed["patient_id"], "DocumentReference")
    assert [r["id"] for r in found] == [stored["id"]]
    active = await network.records.resources(pushed["patient_id"], "Condition", status="active")
    assert {r["code"]["coding"][0]["code"] for r in active} == {"I10", "F32.9"}
