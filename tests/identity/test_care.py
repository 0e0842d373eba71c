"""A care relationship is earned: presence at the desk, the patient's approval, never an ID number."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from server.access.models import CareRelationship
from server.container import Services
from server.core.db import utcnow
from server.core.ids import RESIDENT_ID_SYSTEM
from server.seed import PATIENTS
from tests.consults.conftest import consult_case, new_consult  # noqa: F401 (fixture)
from tests.helpers import Api

SUN = next(p for p in PATIENTS if p.username == "patient_sun")  # cared for at SNBDH only
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


async def sun_id(api: Api) -> int:
    status, me = await api.get("/api/v1/me", as_="patient_sun")
    assert status == 200
    return int(me["patient_id"])


async def record_status(api: Api, pid: int, as_: str) -> tuple[int, int]:
    summary, _ = await api.get(f"/api/v1/patients/{pid}/summary", as_=as_)
    everything, _ = await api.get(f"/fhir/Patient/{pid}/$everything", as_=as_)
    return summary, everything


@pytest.mark.parametrize("desk", ["pharmacist_chen", "gp_liu", "dr_zhao", "nurse_he", "admin_qdsl"])
async def test_registering_a_resident_discloses_nothing_and_grants_nothing(
    api: Api, network: Services, desk: str
) -> None:
    pid = await sun_id(api)
    # A made-up name is refused without revealing the real one.
    status, body = await api.post(
        "/api/v1/patients", as_=desk, json={"resident_id": SUN.resident_id, "name": "随便写"}
    )
    assert (status, body["code"]) == (422, "name_mismatch"), body
    assert body["errors"][0]["field"] == "name"
    assert SUN.name not in str(body) and SUN.phone not in str(body)
    # The right name links the desk's number, and shows only what the desk sent.
    status, body = await api.post(
        "/api/v1/patients",
        as_=desk,
        json={"resident_id": SUN.resident_id, "name": SUN.name, "mrn": "DESK-1"},
    )
    assert status == 201, body
    assert body["id"] == pid and body["created"] is False and body["care"] == "none"
    assert "phone" not in body and SUN.phone not in str(body)
    assert [link["number"] for link in body["links"]] == ["DESK-1"]  # not SNBDH's SN-000026
    assert await record_status(api, pid, desk) == (403, 403)


async def test_pushing_a_bare_patient_earns_no_reading(api: Api, network: Services) -> None:
    pid = await sun_id(api)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:sun",
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": SUN.resident_id}],
                    "name": [{"text": SUN.name}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    status, body = await api.post("/fhir", as_="gp_liu", json=bundle, headers=FHIR)
    assert status == 200, body
    assert await record_status(api, pid, "gp_liu") == (403, 403)
    # A wrong name in a pushed Patient is refused too (and not revealed).
    bundle["entry"][0]["resource"]["name"] = [{"text": "随便写"}]
    status, body = await api.post("/fhir", as_="gp_liu", json=bundle, headers=FHIR)
    assert status in (400, 422) and body["resourceType"] == "OperationOutcome"
    assert SUN.name not in str(body)


async def test_the_patients_presence_code_earns_care_once(api: Api, network: Services) -> None:
    pid = await sun_id(api)
    status, code = await api.post("/api/v1/me/presence-code", as_="patient_sun")
    assert status == 201 and len(code["code"]) == 8
    assert code["qr"] == f"yihao-presence:{SUN.resident_id}:{code['code']}"
    wrong = "0" * 8 if code["code"] != "0" * 8 else "1" * 8
    confirm = {"resident_id": SUN.resident_id, "code": wrong}
    status, body = await api.post("/api/v1/care/presence", as_="gp_liu", json=confirm)
    assert (status, body["code"]) == (422, "presence_mismatch")
    # A pharmacy never earns care, even with the right code.
    confirm["code"] = code["code"]
    status, _ = await api.post("/api/v1/care/presence", as_="pharmacist_chen", json=confirm)
    assert status == 403
    status, body = await api.post("/api/v1/care/presence", as_="gp_liu", json=confirm)
    assert status == 201, body
    assert (body["institution"]["code"], body["reason"], body["patient_id"]) == (
        "SBLYL",
        "presence",
        pid,
    )
    assert await record_status(api, pid, "gp_liu") == (200, 200)
    # The code worked once: another desk cannot reuse it.
    status, body = await api.post("/api/v1/care/presence", as_="dr_zhao", json=confirm)
    assert (status, body["code"]) == (422, "presence_mismatch")
    # The patient sees who cares for them, why, and until when.
    status, mine = await api.get(f"/api/v1/patients/{pid}/care-relationships", as_="patient_sun")
    assert status == 200
    reasons = {item["institution"]["code"]: item["reason"] for item in mine["items"]}
    assert reasons == {"SBLYL": "presence", "SNBDH": "demo"}
    status, _ = await api.get(f"/api/v1/patients/{pid}/care-relationships", as_="gp_liu")
    assert status == 403


async def test_wrong_guesses_burn_the_code(api: Api, network: Services) -> None:
    status, code = await api.post("/api/v1/me/presence-code", as_="patient_sun")
    guesses = [f"{n:08d}" for n in range(10) if f"{n:08d}" != code["code"]][:5]
    for guess in guesses:
        status, _ = await api.post(
            "/api/v1/care/presence",
            as_="gp_liu",
            json={"resident_id": SUN.resident_id, "code": guess},
        )
        assert status == 422
    status, body = await api.post(
        "/api/v1/care/presence",
        as_="gp_liu",
        json={"resident_id": SUN.resident_id, "code": code["code"]},
    )
    assert (status, body["code"]) == (422, "presence_mismatch")


async def test_the_patient_approves_or_declines_a_link_request(api: Api, network: Services) -> None:
    pid = await sun_id(api)
    status, asked = await api.post(
        f"/api/v1/patients/{pid}/care-requests", as_="dr_zhao", json={"note": "复诊"}
    )
    assert status == 201 and asked["status"] == "pending", asked
    status, _ = await api.post(f"/api/v1/patients/{pid}/care-requests", as_="dr_li", json={})
    assert status == 201
    assert await record_status(api, pid, "dr_zhao") == (403, 403)
    status, listed = await api.get(f"/api/v1/patients/{pid}/care-requests", as_="patient_sun")
    by_code = {item["institution"]["code"]: item for item in listed["items"]}
    assert set(by_code) == {"QDFY", "QDSL"} and by_code["QDFY"]["requested_by"] == "赵强"
    # Nobody but the patient answers, and the answer is the same as for no request.
    status, body = await api.post(
        f"/api/v1/care-requests/{asked['id']}/decision", as_="dr_zhao", json={"approve": True}
    )
    assert status == 403
    status, body = await api.post(
        f"/api/v1/care-requests/{asked['id']}/decision",
        as_="patient_liu",
        json={"approve": True},
    )
    assert status == 404
    status, body = await api.post(
        f"/api/v1/care-requests/{asked['id']}/decision",
        as_="patient_sun",
        json={"approve": True},
    )
    assert (status, body["status"]) == (200, "approved"), body
    assert await record_status(api, pid, "dr_zhao") == (200, 200)
    status, body = await api.post(
        f"/api/v1/care-requests/{by_code['QDSL']['id']}/decision",
        as_="patient_sun",
        json={"approve": False},
    )
    assert (status, body["status"]) == (200, "declined")
    assert await record_status(api, pid, "dr_li") == (403, 403)
    status, body = await api.post(
        f"/api/v1/care-requests/{asked['id']}/decision",
        as_="patient_sun",
        json={"approve": False},
    )
    assert (status, body["errors"][0]["field"]) == (422, "approve")


async def test_a_care_relationship_lapses_after_the_last_encounter(
    api: Api, network: Services
) -> None:
    pid = await sun_id(api)
    await api.present("gp_liu", "patient_sun")
    assert await record_status(api, pid, "gp_liu") == (200, 200)
    lapsed = utcnow() - timedelta(days=network.settings.care_relationship_days + 1)
    async with network.db.transaction() as tx:  # a year and a day without an encounter
        await tx.session.execute(
            update(CareRelationship)
            .where(CareRelationship.patient_id == pid)
            .values(last_encounter_at=lapsed)
        )
    assert await record_status(api, pid, "gp_liu") == (403, 403)
    assert await record_status(api, pid, "gp_zhang") == (403, 403)
    status, mine = await api.get(f"/api/v1/patients/{pid}/care-relationships", as_="patient_sun")
    assert mine["items"] == []
    status, listed = await api.get("/api/v1/patients", as_="gp_zhang")
    assert status == 200
    assert pid not in [p["id"] for p in listed["items"]]
    # A new encounter renews it.
    await api.present("gp_zhang", "patient_sun")
    assert await record_status(api, pid, "gp_zhang") == (200, 200)


async def test_a_resident_id_search_tells_nobody_who_is_in_the_network(
    api: Api, network: Services
) -> None:
    pid = await sun_id(api)
    unregistered = "11010519491231002X"
    answers = []
    for number in (SUN.resident_id, unregistered):
        status, body = await api.get(
            "/fhir/Patient",
            as_="gp_liu",
            params={"identifier": f"{RESIDENT_ID_SYSTEM}|{number}"},
            headers={"Accept": "application/fhir+json"},
        )
        answers.append((status, body["resourceType"], body["total"], body.get("entry", [])))
    assert answers[0] == answers[1] == (200, "Bundle", 0, [])
    # The refused search reaches the patient's access log, with the refusals on other routes.
    status, _ = await api.get(f"/api/v1/patients/{pid}/consents", as_="pharmacist_zhou")
    assert status == 403
    status, log = await api.get(f"/api/v1/patients/{pid}/access-log", as_="patient_sun")
    assert status == 200
    denied = [(e["user_name"], e["outcome"]) for e in log["items"] if e["outcome"] == "denied"]
    assert ("刘洋", "denied") in denied  # the FHIR search
    assert ("周敏", "denied") in denied  # the consents route (audited centrally)


async def test_the_access_log_pages_through_everything(api: Api, network: Services) -> None:
    pid = await sun_id(api)
    for _ in range(7):
        status, _ = await api.get(f"/api/v1/patients/{pid}/summary", as_="gp_zhang")
        assert status == 200
        status, _ = await api.get(f"/api/v1/patients/{pid}/summary", as_="gp_liu")
        assert status == 403
    seen: list[int] = []
    before: int | None = None
    while True:
        params = {"limit": "5"} | ({"before": str(before)} if before else {})
        status, page = await api.get(
            f"/api/v1/patients/{pid}/access-log", as_="patient_sun", params=params
        )
        assert status == 200 and len(page["items"]) <= 5
        seen += [e["seq"] for e in page["items"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))
    assert len(seen) >= 14


async def test_break_the_glass_is_reviewed_and_the_patient_sees_the_verdict(
    api: Api, network: Services
) -> None:
    pid = await sun_id(api)
    status, body = await api.get(
        f"/api/v1/patients/{pid}/summary",
        as_="dr_li",
        headers={"X-Emergency-Reason": "急诊昏迷，需查过敏史"},
    )
    assert (status, body["access_reason"]) == (200, "emergency")
    assert await record_status(api, pid, "dr_li") == (403, 403)  # no relationship earned
    # Another institution's administrator does not see QDSL's emergencies; QDSL's does.
    status, body = await api.get("/api/v1/emergency-accesses", as_="gp_zhang")
    assert status == 403
    status, pending = await api.get("/api/v1/emergency-accesses", as_="admin_qdsl")
    assert status == 200, pending
    [item] = pending["items"]
    assert (item["user_name"], item["patient_id"], item["statement"], item["review"]) == (
        "李明",
        pid,
        "急诊昏迷，需查过敏史",
        None,
    )
    status, reviewed = await api.post(
        f"/api/v1/emergency-accesses/{item['seq']}/review",
        as_="admin_qdsl",
        json={"verdict": "justified", "note": "急诊抢救记录已核对"},
    )
    assert status == 200, reviewed
    assert reviewed["review"]["verdict"] == "justified"
    assert reviewed["review"]["reviewer"] == "高峰"
    status, again = await api.post(
        f"/api/v1/emergency-accesses/{item['seq']}/review",
        as_="admin",
        json={"verdict": "unjustified", "note": "再审"},
    )
    assert (status, again["code"]) == (422, "already_reviewed")
    status, pending = await api.get("/api/v1/emergency-accesses", as_="admin_qdsl")
    assert pending["items"] == []
    status, log = await api.get(f"/api/v1/patients/{pid}/access-log", as_="patient_sun")
    actions = [(e["action"], e["reason"]) for e in log["items"]]
    assert ("emergency.review", "justified") in actions
    assert ("record.summary", "emergency") in actions


async def test_refusals_about_her_consult_reach_her_access_log(
    api: Api,
    network: Services,
    consult_case: dict[str, Any],  # noqa: F811
) -> None:
    """A refused read of patient_sun's consult, on REST and on the socket, names her."""
    consult = await new_consult(api, consult_case)
    status, _ = await api.get(f"/api/v1/consults/{consult['id']}", as_="pharmacist_zhou")
    assert status in (403, 404)
    stranger = await api.socket("dr_zhao")
    ack = await stranger.call("consult.open", {"consult_id": consult["id"]})
    assert not ack["ok"] and ack["problem"]["status"] in (403, 404), ack
    status, log = await api.get(
        f"/api/v1/patients/{consult_case['patient']}/access-log", as_="patient_sun"
    )
    refused = {(e["user_name"], e["action"]) for e in log["items"] if e["outcome"] == "denied"}
    assert ("周敏", "http.denied") in refused
    assert ("赵强", "socket.denied") in refused
