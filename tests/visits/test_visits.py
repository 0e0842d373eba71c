"""Follow-up video visits (互联网复诊): each rule of 互联网诊疗管理办法 passing and failing, the
life cycle, the room (the consult room machinery, the patient as its guest), refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from server.container import Services
from server.core.audit import AuditEvent
from server.records.models import RecordEntry
from server.visits.models import Visit
from tests.helpers import Api, amlodipine
from tests.prescriptions.conftest import PATIENT, condition
from tests.visits.conftest import (
    CHILD,
    MOTHER_ID,
    Case,
    condition_ids,
    doctor_id,
    verify,
    visit_request,
)

V = "/api/v1/visits"
RECORD = {
    "complaint": "血压近一周偏高，晨起头晕",
    "findings": "家庭自测血压 150/95 mmHg，无胸痛",
    "assessment": "原发性高血压，控制欠佳",
    "plan": "氨氯地平 5mg qd 续用，两周后复诊",
}


async def visit_count(services: Services) -> int:
    async with services.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(Visit)) or 0)


async def requested(
    api: Api, case: Case, username: str = PATIENT, code: str = "I10", **over: Any
) -> dict[str, Any]:
    body = visit_request(case, code, doctor_id=await doctor_id(api), **over)
    status, visit = await api.post(V, as_=username, json=body)
    assert status == 201, visit
    return visit  # type: ignore[no-any-return]


async def opened(api: Api, case: Case, code: str = "I10") -> dict[str, Any]:
    visit = await requested(api, case, code=code)
    status, body = await api.post(f"{V}/{visit['id']}/accept", as_="dr_li")
    assert status == 200 and body["status"] == "accepted", body
    status, body = await api.post(f"{V}/{visit['id']}/open", as_="dr_li", json={})
    assert status == 200 and body["status"] == "waiting", body
    return body  # type: ignore[no-any-return]


async def test_a_follow_up_visit_from_request_to_record(
    backend: str, api: Api, case: Case, network: Services
) -> None:
    status, doctors = await api.get(f"{V}/doctors", as_=PATIENT)
    dr_li = next(d for d in doctors["items"] if d["name"] == "李明")
    assert dr_li["institution_name"] and dr_li["title"]
    visit = await requested(api, case, preferred_at=None)
    assert visit["status"] == "requested" and visit["condition_display"] == "原发性高血压"
    assert visit["doctor_name"] == "李明" and visit["consult_id"] is None
    created = datetime.fromisoformat(visit["created_at"])
    retain = datetime.fromisoformat(visit["record_retain_until"])
    media = datetime.fromisoformat(visit["media_retain_until"])
    assert retain.year - created.year == 15 and media.year - created.year == 3
    status, mine = await api.get(V, as_="dr_li")
    assert [v["id"] for v in mine["items"]] == [visit["id"]]

    patient = await api.socket(PATIENT)
    visit = await opened(api, case)
    cid = visit["consult_id"]
    ready = await patient.wait_for(lambda e: e["type"] == "inbox" and "visit_ready" in str(e))
    assert ready["data"]["kind"] == "visit_ready"

    # The waiting room is the consult room's lobby; the doctor admits the patient.
    ack = await patient.call("consult.join", {"consult_id": cid})
    assert ack["ok"] and ack["data"]["state"] == "lobby", ack
    doctor = await api.socket("dr_li")
    ack = await doctor.call("consult.join", {"consult_id": cid})
    assert ack["ok"] and ack["data"]["state"] == "joined", ack
    status, body = await api.post(f"{V}/{visit['id']}/admit", as_="dr_li")
    assert status == 200 and body["status"] == "in_progress", body
    await patient.wait_for(lambda e: e["type"] == "consult.lobby" and e["op"] == "admitted")
    ack = await patient.call("consult.join", {"consult_id": cid})
    assert ack["ok"] and ack["data"]["state"] == "joined", ack
    assert {m["user_id"] for m in ack["data"]["members"]} == {
        visit["doctor_id"],
        visit["patient_user_id"],
    }
    # Signaling and chat as in a consult, the patient a participant.
    signals: list[dict[str, Any]] = []
    doctor.sio.on("signal", signals.append)
    ack = await patient.call(
        "consult.signal",
        {"consult_id": cid, "to": visit["doctor_id"], "kind": "offer", "data": {"sdp": "v=0"}},
    )
    assert ack["ok"] and ack["data"]["delivered"] == 1, ack
    ack = await patient.call(
        "consult.chat", {"consult_id": cid, "client_id": "visit-chat-1", "text": "医生您好"}
    )
    assert ack["ok"], ack
    said = await doctor.wait_for(lambda e: e["type"] == "consult.chat")
    assert said["data"]["text"] == "医生您好"

    # Ending needs the record first.
    status, body = await api.post(f"{V}/{visit['id']}/end", as_="dr_li")
    assert status == 409 and body["code"] == "visit_record_missing", body
    status, body = await api.call("PUT", f"{V}/{visit['id']}/record", as_="dr_li", json=RECORD)
    assert status == 200 and body["record"] == RECORD and body["encounter_id"], body
    # The doctor prescribes through the prescription service; the prescription links.
    status, rx = await api.post(
        "/api/v1/prescriptions",
        as_="dr_li",
        json={
            "patient_id": case.patient_id,
            "diagnosis": {"code": "I10", "display": "原发性高血压"},
            "items": [amlodipine()],
            "notes": "互联网复诊续方",
        },
    )
    assert status == 201, rx
    status, body = await api.post(
        f"{V}/{visit['id']}/prescriptions", as_="dr_li", json={"prescription_id": rx["id"]}
    )
    assert status == 200 and body["prescription_ids"] == [rx["id"]], body
    status, body = await api.post(f"{V}/{visit['id']}/end", as_="dr_li")
    assert status == 200 and body["status"] == "completed" and body["ended_at"], body
    # The room is closed; the record holds the visit as a virtual encounter.
    ack = await patient.call(
        "consult.chat", {"consult_id": cid, "client_id": "visit-chat-2", "text": "谢谢"}
    )
    assert not ack["ok"], ack
    encounters = await network.records.resources(case.patient_id, "Encounter")
    online = [e for e in encounters if e["class"]["code"] == "VR" and "互联网复诊" in str(e)]
    assert len(online) == 1 and online[0]["status"] == "finished"
    assert "氨氯地平" in online[0]["text"]["div"]
    status, body = await api.get(f"{V}/{visit['id']}", as_=PATIENT)
    assert status == 200 and body["record"]["plan"] == RECORD["plan"]
    assert "visit" not in str((await api.get("/api/v1/consults", as_=PATIENT))[1]), (
        "the visit's room is not listed among the patient's consults"
    )


async def test_follow_up_only_a_diagnosis_made_in_person(
    backend: str, api: Api, case: Case, network: Services
) -> None:
    # E11 was only noted at an online visit: not a follow-up of an in-person diagnosis.
    dr = await doctor_id(api)
    for bad in (case.conditions["E11"], "999999"):
        status, body = await api.post(
            V, as_=PATIENT, json=visit_request(case, doctor_id=dr, condition_id=bad)
        )
        assert status == 422 and body["code"] == "not_a_follow_up", body
        assert body["errors"][0]["field"] == "condition_id"
    assert await visit_count(network) == 0
    status, conditions = await api.get(f"{V}/conditions", as_=PATIENT)
    in_person = {c["code"]: c["in_person"] for c in conditions["items"]}
    assert in_person["I10"] is True and in_person["E11"] is False
    assert conditions["guardian_required"] is False
    visit = await requested(api, case, code="I48")
    assert visit["condition_code"] == "I48"


async def test_real_name_verified_patients_only(
    backend: str, api: Api, case: Case, network: Services
) -> None:
    await verify(api, case.patient_id, False)
    body = visit_request(case, doctor_id=await doctor_id(api))
    status, problem = await api.post(V, as_=PATIENT, json=body)
    assert status == 403 and problem["code"] == "real_name_required", problem
    assert await visit_count(network) == 0
    await verify(api, case.patient_id, True)
    status, visit = await api.post(V, as_=PATIENT, json=body)
    assert status == 201, visit


async def test_a_child_under_six_needs_a_guardian_present(
    backend: str, api: Api, child: Case, network: Services
) -> None:
    dr = await doctor_id(api)
    base = visit_request(child, code="J45.9", doctor_id=dr, complaint="夜间咳嗽加重")
    status, body = await api.post(V, as_=CHILD, json=base)
    assert status == 422 and body["code"] == "guardian_required", body
    assert body["errors"][0]["field"] == "guardian"
    status, conditions = await api.get(f"{V}/conditions", as_=CHILD)
    assert conditions["guardian_required"] is True
    for wrong in ("370202201001010000", "11010520200101003X"):
        guardian = {"name": "李娟", "relation": "母亲", "resident_id": wrong}
        status, body = await api.post(V, as_=CHILD, json=base | {"guardian": guardian})
        assert status == 422 and body["code"] in ("invalid_guardian", "validation_failed"), body
        assert body["errors"][0]["field"].startswith("guardian")
    assert await visit_count(network) == 0
    guardian = {"name": "李娟", "relation": "母亲", "resident_id": MOTHER_ID}
    status, visit = await api.post(V, as_=CHILD, json=base | {"guardian": guardian})
    assert status == 201, visit
    assert visit["guardian"]["name"] == "李娟"
    assert visit["guardian"]["resident_id_masked"] != MOTHER_ID


async def test_the_doctor_authenticates_before_the_visit(
    backend: str, api: Api, case: Case, network: Services
) -> None:
    visit = await requested(api, case)
    status, _ = await api.post(f"{V}/{visit['id']}/accept", as_="dr_li")
    assert status == 200
    network.visits.doctor_auth_minutes = 0  # the login is no longer fresh enough
    status, body = await api.post(f"{V}/{visit['id']}/open", as_="dr_li", json={})
    assert status == 403 and body["code"] == "doctor_reauth_required", body
    status, body = await api.post(
        f"{V}/{visit['id']}/open", as_="dr_li", json={"password": "wrong-pass"}
    )
    assert status == 401 and body["code"] == "reauth_failed", body
    status, body = await api.get(f"{V}/{visit['id']}", as_=PATIENT)
    assert body["status"] == "accepted" and body["consult_id"] is None
    status, body = await api.post(
        f"{V}/{visit['id']}/open", as_="dr_li", json={"password": "Yihao@2026"}
    )
    assert status == 200 and body["status"] == "waiting" and body["consult_id"], body


async def test_other_patients_and_doctors_are_refused(
    backend: str, api: Api, case: Case, network: Services
) -> None:
    visit = await opened(api, case)
    for persona in ("patient_liu", "dr_zhao", "gp_zhang"):
        status, body = await api.get(f"{V}/{visit['id']}", as_=persona)
        assert status == 403 and body["code"] == "not_a_party", (persona, body)
    status, body = await api.post(f"{V}/{visit['id']}/admit", as_="dr_zhao")
    assert status == 403, body
    for persona in ("patient_liu", "dr_zhao"):
        sock = await api.socket(persona)
        ack = await sock.call("consult.join", {"consult_id": visit["consult_id"]})
        assert not ack["ok"] and ack["problem"]["code"] == "not_a_participant", ack
    # The patient cannot admit themself nor end the visit.
    status, body = await api.post(f"{V}/{visit['id']}/admit", as_=PATIENT)
    assert status == 403, body
    async with network.db.read() as session:
        denied = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.outcome == "denied", AuditEvent.patient_id == case.patient_id)
        )
    assert (denied or 0) >= 5, "every refusal is in the patient's audit"


async def test_decline_with_a_reason_and_cancel(backend: str, api: Api, case: Case) -> None:
    visit = await requested(api, case)
    status, body = await api.post(f"{V}/{visit['id']}/decline", as_="dr_li", json={})
    assert status == 422, body
    status, body = await api.post(
        f"{V}/{visit['id']}/decline", as_="dr_li", json={"reason": "请先线下复查肾功能"}
    )
    assert status == 200 and body["status"] == "declined", body
    assert body["decline_reason"] == "请先线下复查肾功能"
    status, body = await api.post(f"{V}/{visit['id']}/cancel", as_=PATIENT)
    assert status == 409 and body["code"] == "invalid_transition", body
    other = await requested(api, case)
    status, body = await api.post(f"{V}/{other['id']}/cancel", as_=PATIENT)
    assert status == 200 and body["status"] == "cancelled", body
    past = datetime(2020, 1, 1, tzinfo=UTC).isoformat()
    body = visit_request(case, doctor_id=await doctor_id(api), preferred_at=past)
    status, problem = await api.post(V, as_=PATIENT, json=body)
    assert status == 422 and problem["errors"][0]["field"] == "preferred_at", problem


async def test_a_sensitive_condition_keeps_the_visit_sensitive(
    backend: str, api: Api, case: Case, network: Services
) -> None:
    """A follow-up of a mental-health diagnosis: the visit's Encounter is classified so too,
    so a reader excluded from that category never sees the visit in the record."""
    office = next(
        e
        for e in await network.records.resources(case.patient_id, "Encounter")
        if e["class"]["code"] == "AMB"
    )
    async with network.db.transaction() as tx:
        await network.records.add_resource(
            tx,
            patient_id=case.patient_id,
            institution_id=case.world.qdsl,
            resource=condition("F32.1", "中度抑郁发作", office["id"]),
        )
    case.conditions = await condition_ids(api, PATIENT)
    visit = await opened(api, case, code="F32.1")
    status, body = await api.post(f"{V}/{visit['id']}/admit", as_="dr_li")
    assert status == 200, body
    status, body = await api.call("PUT", f"{V}/{visit['id']}/record", as_="dr_li", json=RECORD)
    assert status == 200, body
    async with network.db.read() as session:
        sensitivity = await session.scalar(
            select(RecordEntry.sensitivity).where(
                RecordEntry.resource_type == "Encounter",
                RecordEntry.source_id == f"visit-{visit['id']}",
            )
        )
    assert sensitivity == "mental_health"
