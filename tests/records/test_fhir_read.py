"""The FHIR read side: metadata, reads, searches with paging, $everything — all valid R4."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from server.container import Services
from server.core.ids import RESIDENT_ID_SYSTEM
from tests.helpers import Api
from tests.records.conftest import assert_valid_fhir


async def get_fhir(api: Api, path: str, as_: str = "gp_zhang", **params: str) -> Any:
    status, body = await api.get(path, as_=as_, params=params)
    assert status == 200, body
    assert_valid_fhir(body)
    return body


def follow(link_url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(link_url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


async def test_metadata_is_a_truthful_capability_statement(api: Api, network: Services) -> None:
    status, body = await api.get("/fhir/metadata")
    assert status == 200
    assert_valid_fhir(body)
    rest = body["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    by_type = {r["type"]: r for r in rest["resource"]}
    assert {p["name"] for p in by_type["Observation"]["searchParam"]} >= {"patient", "code", "date"}
    assert by_type["Patient"]["operation"][0]["name"] == "everything"
    assert {p["name"] for p in by_type["Patient"]["searchParam"]} == {"identifier", "_id"}


async def test_patient_read_and_identifier_search(
    api: Api, network: Services, pushed: dict[str, Any], bundle: dict[str, Any]
) -> None:
    pid = pushed["patient_id"]
    patient = await get_fhir(api, f"/fhir/Patient/{pid}")
    resident_id = bundle["entry"][0]["resource"]["identifier"][0]["value"]
    assert patient["identifier"][0] == {
        "use": "official", "system": RESIDENT_ID_SYSTEM, "value": resident_id
    }  # fmt: skip
    assert patient["gender"] == "male" and patient["birthDate"] == "1960-05-01"
    assert patient["name"][0]["text"] == "周国强"
    for identifier in (
        f"{RESIDENT_ID_SYSTEM}|{resident_id}",
        "urn:yihao:institution:SNBDH:mrn|P1001",
    ):
        found = await get_fhir(api, "/fhir/Patient", identifier=identifier)
        assert found["type"] == "searchset" and found["total"] == 1
        assert found["entry"][0]["resource"]["id"] == str(pid)
    nobody = await get_fhir(
        api, "/fhir/Patient", identifier=f"{RESIDENT_ID_SYSTEM}|11010519491231002X"
    )
    assert (nobody["total"] == 0 and "entry" not in nobody) or nobody["entry"] == []


async def test_clinical_searches(api: Api, network: Services, pushed: dict[str, Any]) -> None:
    pid = str(pushed["patient_id"])
    conditions = await get_fhir(api, "/fhir/Condition", patient=pid)
    assert conditions["total"] == 2
    glucose = await get_fhir(api, "/fhir/Observation", patient=pid, code="http://loinc.org|2345-7")
    assert glucose["total"] == 2
    # Newest first.
    assert [e["resource"]["valueQuantity"]["value"] for e in glucose["entry"]] == [7.9, 6.8]
    march = await get_fhir(api, "/fhir/Observation", patient=f"Patient/{pid}", date="2025-03")
    assert {e["resource"]["code"]["coding"][0]["code"] for e in march["entry"]} == {
        "2345-7", "8480-6"
    }  # fmt: skip
    since = await get_fhir(
        api, "/fhir/Observation", patient=pid, date="ge2025-02-01", code="2345-7"
    )
    assert since["total"] == 1
    active = await get_fhir(api, "/fhir/MedicationRequest", patient=pid, status="active")
    assert active["total"] == 1
    stopped = await get_fhir(api, "/fhir/MedicationRequest", patient=pid, status="stopped")
    assert stopped["total"] == 0


async def test_search_paging_follows_next_links(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    pid = str(pushed["patient_id"])
    seen: list[str] = []
    page = await get_fhir(api, "/fhir/Observation", patient=pid, _count="1")
    while True:
        seen += [e["resource"]["id"] for e in page["entry"]]
        nexts = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nexts:
            break
        path, params = follow(nexts[0])
        page = await get_fhir(api, path, **params)
    assert len(seen) == len(set(seen)) == 3


async def test_everything_is_a_paged_searchset(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    pid = pushed["patient_id"]
    first = await get_fhir(api, f"/fhir/Patient/{pid}/$everything", _count="4")
    assert (
        first["type"] == "searchset" and first["total"] == 10
    )  # the patient and 9 entries about them
    assert first["entry"][0]["resource"]["resourceType"] == "Patient"
    types = [e["resource"]["resourceType"] for e in first["entry"]]
    page = first
    while nexts := [link["url"] for link in page["link"] if link["relation"] == "next"]:
        path, params = follow(nexts[0])
        page = await get_fhir(api, path, **params)
        types += [e["resource"]["resourceType"] for e in page["entry"]]
    assert len(types) == 10
    assert types.count("Patient") == 1 and "Organization" not in types


async def test_bad_searches_are_operation_outcomes(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    for path, params in (
        ("/fhir/Condition", {}),
        ("/fhir/Condition", {"patient": "x"}),
        ("/fhir/Condition", {"patient": "1", "colour": "red"}),
        ("/fhir/Observation", {"patient": "1", "date": "soon"}),
        ("/fhir/Condition", {"patient": "1", "_count": "0"}),
        ("/fhir/Claim", {"patient": "1"}),
    ):
        status, body = await api.get(path, as_="gp_zhang", params=params)
        assert status == 400, (path, params, body)
        assert_valid_fhir(body)
        assert body["resourceType"] == "OperationOutcome"


async def test_non_clinical_resources_are_kept_and_readable(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    locations = [e["response"]["location"] for e in pushed["response"]["entry"]]
    claim = next(loc for loc in locations if loc.startswith("Claim/"))
    org = next(loc for loc in locations if loc.startswith("Organization/"))
    body = await get_fhir(api, "/fhir/" + claim.rsplit("/_history", 1)[0])
    assert body["provider"]["reference"] == org.rsplit("/_history", 1)[0]
    await get_fhir(api, "/fhir/" + org.rsplit("/_history", 1)[0], as_="dr_zhao")
