"""The summary and $everything as the database now assembles them.

The summary's lab fields come from members the database extracts from the stored
resource (not the whole resource decoded in Python); ``$everything`` splices the
stored JSON into a streamed Bundle. What a reader receives is what the Python path
over whole resources gives: these tests compute that from the stored resources.
"""

from __future__ import annotations

from typing import Any

from server.container import Services
from server.records.service import LAB_CODES, _interpretation, _range_text, _value
from tests.helpers import Api
from tests.records.conftest import ZHOU, assert_valid_fhir, push

LAB = "http://terminology.hl7.org/CodeSystem/observation-category"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def lab(rid: str, code: str, pid: int, when: str | None, **value: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "status": "final",
        "category": [{"coding": [{"system": LAB, "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"}, **value,
    }  # fmt: skip
    if when is not None:
        resource["effectiveDateTime"] = when
    return {"resource": resource, "request": {"method": "POST", "url": "Observation"}}


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


async def summary(api: Api, pid: int, as_: str = "gp_zhang") -> dict[str, Any]:
    status, body = await api.get(f"/api/v1/patients/{pid}/summary", as_=as_)
    assert status == 200, body
    return body


async def test_lab_fields_extracted_in_sql_equal_the_python_path(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    pid = pushed["patient_id"]
    status, body = await push(api, "gp_zhang", transaction(
        lab("q1", "1001-1", pid, "2026-05-01T08:00:00+08:00",
            valueQuantity={"value": 5.5, "unit": "mmol/L"},
            referenceRange=[{"low": {"value": 3.9}, "high": {"value": 6.1}}]),
        lab("q2", "1001-1", pid, "2026-06-01T08:00:00+08:00",
            valueQuantity={"value": 7.25, "unit": "mmol/L"},
            referenceRange=[{"low": {"value": 3.9}, "high": {"value": 6.1}}]),
        lab("c1", "1002-2", pid, "2026-06-02", valueQuantity={"value": 41, "code": "mL/min"},
            referenceRange=[{"text": "> 60 \"normal\""}]),
        lab("s1", "1003-3", pid, "2026-06-03", valueString="阴性 (negative)",
            interpretation=[{"text": "no code"}, {"coding": [{"system": V3, "code": "N"}]}]),
        lab("cc1", "1004-4", pid, "2026-06-04",
            valueCodeableConcept={"text": "positive"},
            interpretation=[{"coding": [{"system": V3, "code": "POS"}]}]),
        lab("cc2", "1005-5", pid, "2026-06-05",
            valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct",
                                              "code": "260385009", "display": "Negative"}]}),
        lab("nd1", "1006-6", pid, None, valueQuantity={"value": 2.0},
            referenceRange=[{"low": {"value": 2.5}}]),
        lab("nv1", "1007-7", pid, "2026-06-07"),
    ))  # fmt: skip
    assert status == 200, body
    stored = {r["id"]: r for r in await network.records.resources(pid, "Observation")}
    labs = {item["code"]: item for item in (await summary(api, pid))["recent_labs"]}
    for code in ("1001-1", "1002-2", "1003-3", "1004-4", "1005-5", "1006-6", "1007-7"):
        item = labs[code]
        resource = stored[str(item["id"])]
        value, unit = _value(resource)
        flag = _interpretation(resource, value)
        assert (item["value"], item["unit"]) == (value, unit), code
        assert item["interpretation"] == flag, code
        assert item["reference_range"] == _range_text(resource), code
        assert item["code_system"] == "http://loinc.org" and item["display"] is None
    assert labs["1001-1"]["value"] == 7.25 and labs["1001-1"]["interpretation"] == "H"
    assert [p["value"] for p in labs["1001-1"]["trend"]] == [5.5]
    assert labs["1001-1"]["direction"] == "up" and labs["1001-1"]["abnormal"] is True
    assert (labs["1002-2"]["unit"], labs["1002-2"]["reference_range"]) == (
        "mL/min",
        '> 60 "normal"',
    )
    assert (labs["1003-3"]["value"], labs["1003-3"]["interpretation"]) == ("阴性 (negative)", "N")
    assert labs["1004-4"]["abnormal"] is True and labs["1005-5"]["value"] == "Negative"
    assert labs["1006-6"]["date"] is None and labs["1006-6"]["interpretation"] == "L"
    assert labs["1007-7"]["value"] is None and labs["1007-7"]["interpretation"] is None


async def test_only_the_tests_measured_last_are_shown(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    pid = pushed["patient_id"]
    entries = [
        lab(f"t{n}", f"2000-{n}", pid, f"2025-{1 + n % 12:02d}-{1 + n:02d}",
            valueQuantity={"value": float(n)})
        for n in range(LAB_CODES + 5)
    ]  # fmt: skip
    status, body = await push(api, "gp_zhang", transaction(*entries))
    assert status == 200, body
    stored = await network.records.resources(pid, "Observation")  # newest first
    newest: list[str] = []
    for resource in stored:
        if resource["category"][0]["coding"][0]["code"] != "laboratory":
            continue
        code = resource["code"]["coding"][0]["code"]
        if code not in newest:
            newest.append(code)
    shown = [item["code"] for item in (await summary(api, pid))["recent_labs"]]
    assert shown == newest[:LAB_CODES] and len(shown) == LAB_CODES


async def test_an_excluded_lab_result_is_left_out_of_the_ranking_and_of_everything(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    pid = pushed["patient_id"]
    hidden = lab("hiv-2", "1001-1", pid, "2026-07-01", valueQuantity={"value": 9.9})
    hidden["resource"]["meta"] = {
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "HIV"}]
    }  # fmt: skip
    status, body = await push(api, "gp_zhang", transaction(
        lab("hiv-1", "1001-1", pid, "2026-06-01", valueQuantity={"value": 4.4}), hidden,
    ))  # fmt: skip
    assert status == 200, body
    status, out = await api.call(
        "PUT", f"/api/v1/patients/{pid}/consents/SNBDH", as_=ZHOU,
        json={"granted": True, "excluded_categories": ["hiv", "mental_health"]},
    )  # fmt: skip
    assert status == 200, out
    seen = {item["code"]: item for item in (await summary(api, pid))["recent_labs"]}
    assert seen["1001-1"]["value"] == 4.4 and seen["1001-1"]["trend"] == []
    assert "F32.9" not in {p["code"] for p in (await summary(api, pid))["active_problems"]}
    own = {item["code"]: item for item in (await summary(api, pid, as_=ZHOU))["recent_labs"]}
    assert own["1001-1"]["value"] == 9.9 and [p["value"] for p in own["1001-1"]["trend"]] == [4.4]
    status, bundle = await api.get(f"/fhir/Patient/{pid}/$everything", as_="gp_zhang")
    assert status == 200, bundle
    sources = {e["resource"].get("code", {}).get("coding", [{}])[0].get("code")
               for e in bundle["entry"]}  # fmt: skip
    assert "F32.9" not in sources
    assert 9.9 not in {e["resource"].get("valueQuantity", {}).get("value") for e in bundle["entry"]}


async def test_a_streamed_everything_is_one_valid_bundle_with_every_resource(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    pid = pushed["patient_id"]
    response = await api.client.get(
        f"/fhir/Patient/{pid}/$everything",
        headers={"Authorization": f"Bearer {await api.token('gp_zhang')}"},
        params={"_count": "500"},
    )
    assert response.status == 200
    assert response.content_type == "application/fhir+json"
    assert response.headers.get("X-Request-Id")  # the middlewares' headers still sent
    bundle = await response.json(content_type=None)
    assert_valid_fhir(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == len(bundle["entry"])
    assert [link["relation"] for link in bundle["link"]] == ["self"]
    resources = [e["resource"] for e in bundle["entry"]]
    assert resources[0]["resourceType"] == "Patient" and resources[0]["id"] == str(pid)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"].endswith(f"/fhir/{resource['resourceType']}/{resource['id']}")
        assert entry["search"] == {"mode": "match"}
    stored: list[dict[str, Any]] = []
    for rtype in {r["resourceType"] for r in resources[1:]}:
        stored += await network.records.resources(pid, rtype)
    assert sorted(resources[1:], key=lambda r: int(r["id"])) == sorted(
        stored, key=lambda r: int(r["id"])
    )
    assert [int(r["id"]) for r in resources[1:]] == sorted(int(r["id"]) for r in resources[1:])
    # Paged one by one, the pages hold the same resources, each once.
    seen: list[str] = []
    for offset in range(bundle["total"]):
        status, page = await api.get(
            f"/fhir/Patient/{pid}/$everything", as_="gp_zhang",
            params={"_count": "1", "_offset": str(offset)},
        )  # fmt: skip
        assert status == 200 and page["total"] == bundle["total"], page
        seen += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page["entry"]]
    assert seen == [f"{r['resourceType']}/{r['id']}" for r in resources]
