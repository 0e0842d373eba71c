"""Consent everywhere record content travels, by one check (issue 14).

patient_sun (registered at SNBDH, gp_zhang's clinic) has an HIV test and an HIV
diagnosis in her record. She shares with QDSL (dr_li's hospital) but excludes
``hiv``: the HIV items never reach QDSL, whichever way they travel — the
consult's frozen snapshot, a chat attachment (push and replay), the summary,
FHIR reads, searches and ``$everything``. When she revokes QDSL, dr_li loses
the consult's case summary, the opinion and the referral's text on REST and on
the socket; each refusal is in her access log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server.container import Services
from server.seed import seed_demo
from tests.consults.conftest import CONDITION, consult_case, new_consult  # noqa: F401 (fixture)
from tests.consults.test_room import enter
from tests.consults.test_to_referral import OPINION, _referral_body
from tests.helpers import Api, SocketClient
from tests.security.matrix import PERSONAS, REVOKED_QDSL, by_key
from tests.security.test_authz_matrix import Case, Runner, audited_request_ids, judge
from tests.security.world import build_world

HIV_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}
HIV_TEST_NAME = "HIV-1/2抗体"
HIV_LAB = {
    "resourceType": "Observation",
    "meta": {"security": [HIV_LABEL]},
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "7917-8"}], "text": HIV_TEST_NAME},
    "effectiveDateTime": "2026-11-18T09:00:00+08:00",
    "valueString": "阳性",
}
HIV_DIAGNOSIS = CONDITION | {
    "code": {
        "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "B20"}],
        "text": "HIV病",
    },
    "recordedDate": "2026-11-19",
}


@pytest.fixture
async def hiv_case(network: Services, consult_case: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """consult_case plus an HIV test and an HIV diagnosis recorded by SNBDH."""
    for key, resource in (("hiv_lab", HIV_LAB), ("hiv_condition", HIV_DIAGNOSIS)):
        async with network.db.transaction() as tx:
            stored = await network.records.add_resource(
                tx,
                patient_id=consult_case["patient"],
                institution_id=consult_case["inst_SNBDH"],
                resource=resource,
            )
        consult_case[key] = int(stored["id"])
    return consult_case


async def set_consent(api: Api, case: dict[str, Any], code: str, **body: Any) -> None:
    status, out = await api.call(
        "PUT", f"/api/v1/patients/{case['patient']}/consents/{code}", as_="patient_sun", json=body
    )
    assert status == 200, out


def ids(items: list[dict[str, Any]]) -> set[int]:
    return {int(i["id"]) for i in items}


def snapshot_ids(snapshot: dict[str, Any]) -> set[int]:
    summary = snapshot["summary"]
    lists = ("active_problems", "recent_labs", "current_medications", "allergies")
    return ids(snapshot["items"]).union(*(ids(summary[k]) for k in lists))


async def hiv_consult(api: Api, case: dict[str, Any]) -> dict[str, Any]:
    """gp_zhang asks QDSL, with the HIV test among the record items; dr_li accepts."""
    refs = [
        {"resource_type": "Observation", "id": str(case["observation"])},
        {"resource_type": "Observation", "id": str(case["hiv_lab"])},
    ]
    consult = await new_consult(api, case, record_items=refs)
    status, body = await api.post(f"/api/v1/consults/{consult['id']}/accept", as_="dr_li", json={})
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def test_an_excluded_category_never_reaches_the_institution(
    backend: str, api: Api, hiv_case: dict[str, Any]
) -> None:
    case, pid = hiv_case, hiv_case["patient"]
    hiv = {case["hiv_lab"], case["hiv_condition"]}
    await set_consent(api, case, "QDSL", granted=True, excluded_categories=["hiv"])
    consult = await hiv_consult(api, case)
    cid = consult["id"]

    # The consult's frozen snapshot: the treating clinic sees what it froze, dr_li not the HIV.
    status, panel = await api.get(f"/api/v1/consults/{cid}/record", as_="gp_zhang")
    assert status == 200, panel
    assert hiv <= snapshot_ids(panel["snapshot"])
    assert "withheld" not in panel["snapshot"]
    status, panel = await api.get(f"/api/v1/consults/{cid}/record", as_="dr_li")
    assert status == 200, panel
    assert not hiv & snapshot_ids(panel["snapshot"])
    assert case["observation"] in ids(panel["snapshot"]["items"])
    # Said, not silent, without naming what: the item, the problem and the lab result.
    assert panel["snapshot"]["withheld"] == {"count": 3, "reason": "consent"}
    live = panel["live"]
    assert not hiv & ids(live["active_problems"] + live["recent_labs"])
    assert HIV_TEST_NAME not in json.dumps(panel, ensure_ascii=False)

    # A chat attachment: left out of the message both institutions receive, push and replay.
    host, gp = await enter(api, consult)
    attachments = [
        {"resource_type": "Observation", "id": str(case["hiv_lab"])},
        {"resource_type": "Observation", "id": str(case["observation"])},
    ]
    ack = await gp.call(
        "consult.chat",
        {"consult_id": cid, "client_id": "gp-hiv-01", "text": "见化验", "attachments": attachments},
    )
    assert ack["ok"], ack
    assert ack["data"]["withheld"] == {"count": 1, "reason": "consent"}

    def chat(e: dict[str, Any]) -> bool:
        return e["type"] == "consult.chat" and e["data"]["client_id"] == "gp-hiv-01"

    pushed = await host.wait_for(chat)
    assert [a["id"] for a in pushed["data"]["attachments"]] == [str(case["observation"])]
    assert pushed["data"]["withheld"] == {"count": 1, "reason": "consent"}
    assert HIV_TEST_NAME not in json.dumps(pushed, ensure_ascii=False)
    later = await api.socket("dr_li")
    later.positions = {f"consult:{cid}": 0}
    await later.sync()
    replayed = [e for e in later.events if chat(e)]
    assert len(replayed) == 1 and replayed[0]["data"] == pushed["data"]

    # The record itself, on every read path.
    status, summary = await api.get(f"/api/v1/patients/{pid}/summary", as_="dr_li")
    assert status == 200, summary
    assert not hiv & ids(summary["active_problems"] + summary["recent_labs"])
    status, timeline = await api.get(f"/api/v1/patients/{pid}/timeline", as_="dr_li")
    assert status == 200 and not hiv & ids(timeline["items"])
    for rtype in ("Observation", "Condition"):
        status, found = await api.get(f"/fhir/{rtype}", as_="dr_li", params={"patient": str(pid)})
        assert status == 200 and not hiv & {int(e["resource"]["id"]) for e in found["entry"]}
    status, body = await api.get(f"/fhir/Observation/{case['hiv_lab']}", as_="dr_li")
    assert status == 403 and body["resourceType"] == "OperationOutcome"
    status, everything = await api.get(f"/fhir/Patient/{pid}/$everything", as_="dr_li")
    assert status == 200
    found_ids = {e["resource"]["id"] for e in everything["entry"]}
    assert str(case["observation"]) in found_ids and not {str(i) for i in hiv} & found_ids
    # The patient and her own clinic still see all of it.
    status, everything = await api.get(f"/fhir/Patient/{pid}/$everything", as_="gp_zhang")
    assert {str(i) for i in hiv} <= {e["resource"]["id"] for e in everything["entry"]}


async def test_an_exclusion_set_after_the_request_still_holds(
    backend: str, api: Api, hiv_case: dict[str, Any]
) -> None:
    """The snapshot is frozen once; each reader sees it through today's consent."""
    consult = await hiv_consult(api, hiv_case)
    status, panel = await api.get(f"/api/v1/consults/{consult['id']}/record", as_="dr_li")
    assert status == 200 and hiv_case["hiv_lab"] in ids(panel["snapshot"]["items"])
    await set_consent(api, hiv_case, "QDSL", granted=True, excluded_categories=["hiv"])
    status, panel = await api.get(f"/api/v1/consults/{consult['id']}/record", as_="dr_li")
    assert status == 200
    assert hiv_case["hiv_lab"] not in snapshot_ids(panel["snapshot"])
    assert panel["snapshot"]["withheld"]["reason"] == "consent"


async def test_a_revoked_institution_loses_the_consult_and_referral_text(
    backend: str, api: Api, hiv_case: dict[str, Any]
) -> None:
    case, pid = hiv_case, hiv_case["patient"]
    consult = await hiv_consult(api, case)
    cid = consult["id"]
    host, _ = await enter(api, consult)
    status, _ = await api.post(f"/api/v1/consults/{cid}/opinion", as_="dr_li", json=OPINION)
    assert status == 201
    body = await _referral_body(api, case)
    status, referral = await api.post(f"/api/v1/consults/{cid}/referral", as_="gp_zhang", json=body)
    assert status == 201, referral
    rid = referral["id"]
    status, seen = await api.get(f"/api/v1/referrals/{rid}", as_="dr_li")
    assert status == 200 and seen["reason"] == body["reason"] and seen["withheld"] is None

    await set_consent(api, case, "QDSL", granted=False)

    # The workflow remains (status, times, who), the clinical text does not.
    status, seen = await api.get(f"/api/v1/consults/{cid}", as_="dr_li")
    assert status == 200 and seen["status"] == "opinion_written"
    assert seen["case_summary"] is None and seen["reason"] is None
    assert seen["withheld"]["reason"] == "consent" and "case_summary" in seen["withheld"]["fields"]
    status, listed = await api.get("/api/v1/consults", as_="dr_li")
    assert [c["case_summary"] for c in listed["items"] if c["id"] == cid] == [None]
    for path in (f"/api/v1/consults/{cid}/opinion", f"/api/v1/consults/{cid}/record"):
        status, problem = await api.get(path, as_="dr_li")
        assert (status, problem["code"]) == (403, "consent_revoked"), path
    status, seen = await api.get(f"/api/v1/referrals/{rid}", as_="dr_li")
    assert status == 200 and seen["status"] == "requested"
    assert (seen["reason"], seen["summary"], seen["consult_snapshot"]) == (None, None, None)
    assert seen["withheld"]["reason"] == "consent"
    status, listed = await api.get("/api/v1/referrals", as_="dr_li", params={"box": "received"})
    assert [r["summary"] for r in listed["items"] if r["id"] == rid] == [None]

    # The socket: the room is closed to him, and a new connection is not placed in it.
    for event, payload in (
        ("consult.open", {"consult_id": cid}),
        ("consult.chat", {"consult_id": cid, "client_id": "li-after-01", "text": "还在吗"}),
    ):
        ack = await host.call(event, payload)
        assert not ack["ok"] and ack["problem"]["code"] == "consent_revoked", (event, ack)
    again = await api.socket("dr_li")
    ack = await again.call("sync", {"positions": {f"consult:{cid}": 0}})
    assert not ack["ok"] and ack["problem"]["code"] == "not_a_member"

    # The treating clinic is not affected.
    status, opinion = await api.get(f"/api/v1/consults/{cid}/opinion", as_="gp_zhang")
    assert status == 200 and opinion["opinion"]["diagnostic_opinion"]
    status, seen = await api.get(f"/api/v1/referrals/{rid}", as_="gp_zhang")
    assert seen["reason"] == body["reason"]

    # Every refusal is in the patient's access log, naming QDSL.
    status, log = await api.get(f"/api/v1/patients/{pid}/access-log", as_="patient_sun")
    assert status == 200
    refused = {
        e["action"]
        for e in log["items"]
        if e["outcome"] == "denied"
        and e["reason"] == "consent_revoked"
        and e["institution"]["code"] == "QDSL"
    }
    assert refused >= {
        "consult.read",
        "consult.opinion_read",
        "consult.snapshot_read",
        "referral.read",
        "consult.open",
        "consult.chat",
    }


async def test_a_revocation_takes_the_institution_out_of_the_live_rooms(
    backend: str, api: Api, hiv_case: dict[str, Any]
) -> None:
    """dr_li's socket, already in the consult's rooms, leaves them the moment she revokes
    QDSL: no chat after that reaches him, and the room no longer counts him present."""
    case = hiv_case
    consult = await hiv_consult(api, case)
    cid = consult["id"]
    host, gp = await enter(api, consult)
    revoked: list[dict[str, Any]] = []

    async def on_revoked(data: dict[str, Any]) -> None:
        revoked.append(data)

    host.sio.on("room_revoked", on_revoked)
    await set_consent(api, case, "QDSL", granted=False)
    for _ in range(50):
        if len(revoked) >= 2:
            break
        await asyncio.sleep(0.1)
    assert {r["room"] for r in revoked} == {f"consult:{cid}", f"consult:{cid}:live"}, revoked
    assert {r["reason"] for r in revoked} == {"consent_revoked"}
    ack = await gp.call(
        "consult.chat", {"consult_id": cid, "client_id": "gp-after-revoke", "text": "血压 180/110"}
    )
    assert ack["ok"], ack
    await gp.wait_for(lambda e: e["type"] == "consult.chat" and "180/110" in str(e["data"]))
    await asyncio.sleep(0.5)  # time enough for a push to have reached him
    assert not [e for e in host.events if "180/110" in json.dumps(e, ensure_ascii=False)]
    ack = await gp.call("consult.presence", {"consult_id": cid})
    assert ack["ok"], ack
    assert consult["host_id"] not in {m["user_id"] for m in ack["data"]["members"]}


async def test_the_matrix_for_a_revoked_institution(
    backend: str, client: TestClient[Any, Any], services: Services
) -> None:
    """The matrix's side A once patient_sun revoked QDSL (tests/security/matrix.py).

    The app of the ``client`` fixture (REVOKED_QDSL has no route that needs the matrix's
    built web client).
    """
    await seed_demo(services)
    api = Api(client)
    sockets: dict[str, SocketClient] = {}
    table, cases = by_key(), list[Case]()
    try:
        world = await build_world(api, services)
        status, body = await api.call(
            "PUT", f"/api/v1/patients/{world.a.patient_id}/consents/QDSL",
            as_="patient_sun", json={"granted": False},
        )  # fmt: skip
        assert status == 200, body
        runner = Runner(api, world, sockets)
        await runner.setup()  # the sockets connect after the revocation
        for key, allowed_now in REVOKED_QDSL.items():
            op = dataclasses.replace(table[key], a=allowed_now, b=None)
            allowed = op.allowed("A")
            for persona in sorted(PERSONAS, key=lambda p: p in allowed):  # denied first
                call = runner.socket if op.is_socket else runner.http
                status, problem, request_id = await call(op, "A", persona)
                cases.append(
                    judge(op, "A", persona, persona in allowed, status, problem, request_id)
                )
    finally:
        for sock in sockets.values():
            await sock.close()
        await api.close()
    audited = await audited_request_ids(services)
    for case in cases:
        denied = case.passed and not case.allowed and case.status in (403, 404)
        if denied and case.request_id not in audited:
            case.passed, case.why = False, "denial not in the audit log"
    failures = [
        f"{c.op.key} {c.persona}: {c.why} — {c.status} {str(c.problem)[:160]}"
        for c in cases
        if not c.passed
    ]
    assert not failures, "\n".join(failures)
    assert len(cases) == len(REVOKED_QDSL) * len(PERSONAS)
