"""POST /api/v1/triage and GET /api/v1/triage/history on the real app, both tiers.

What the patient sees (the 120 advice first, the departments to book, the disclaimer),
what is logged (every suggestion, the patient's own data, audited), who may ask, and bad
input refused with a problem naming the field, with nothing logged.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from server.container import Services
from server.core.audit import AuditEvent
from server.core.ids import make_resident_id
from server.triage.models import TriageLog
from tests.helpers import Api
from tests.triage.test_matching import RED_FLAGS

CHEST = "胸口疼，出了一身冷汗"


async def patient_id(api: Api, username: str) -> int:
    status, me = await api.get("/api/v1/me", as_=username)
    assert status == 200
    return int(me["patient_id"])


async def logs(services: Services) -> list[TriageLog]:
    async with services.db.read() as session:
        return list(await session.scalars(select(TriageLog).order_by(TriageLog.id)))


async def test_a_red_flag_says_go_to_the_emergency_department_first_and_is_logged(
    api: Api, network: Services
) -> None:
    sun = await patient_id(api, "patient_sun")
    status, answer = await api.post("/api/v1/triage", as_="patient_sun", json={"text": CHEST})
    assert status == 200, answer
    # The advice comes first in the answer: with a red flag, the 120 sentence.
    assert list(answer)[:2] == ["id", "advice"]
    assert answer["advice"][0] == {"zh": "请立即前往急诊或拨打120", "en": answer["advice"][0]["en"]}
    assert "120" in answer["advice"][0]["en"]
    assert answer["emergency"] is True
    assert answer["urgency"] == "emergency"
    assert [f["code"] for f in answer["red_flags"]] == ["chest_pain_sweating"]
    assert answer["departments"][0] == {
        "code": "emergency",
        "zh": "急诊科",
        "en": "Emergency department",
    }
    assert "cardiology" in [d["code"] for d in answer["departments"]]
    # What matched, as normalised (疼 reads as 痛).
    assert [(m["code"], m["said"]) for m in answer["matched"]] == [
        ("chest_pain", "胸口痛"),
        ("sweating", "冷汗"),
    ]
    assert "不是诊断" in answer["disclaimer"]["zh"]
    assert "not a diagnosis" in answer["disclaimer"]["en"]

    [log] = await logs(network)
    assert (log.id, log.patient_id, log.text) == (answer["id"], sun, CHEST)
    assert (log.matched, log.red_flags, log.urgency) == (
        ["chest_pain", "sweating"],
        ["chest_pain_sweating"],
        "emergency",
    )
    assert log.suggestion["departments"] == answer["departments"]
    async with network.db.read() as session:
        audited = list(
            await session.scalars(
                select(AuditEvent).where(AuditEvent.patient_id == sun).order_by(AuditEvent.seq)
            )
        )
    suggest = [e for e in audited if e.action == "triage.suggest"]
    assert [(e.resource, e.details["urgency"]) for e in suggest] == [
        (f"triage:{log.id}", "emergency")
    ]
    checked = [
        e
        for e in audited
        if e.action == "record.access" and e.details.get("action") == "triage.suggest"
    ]
    assert [e.reason for e in checked] == ["self"]


async def test_a_cough_suggests_respiratory_and_the_history_pages_newest_first(
    api: Api, network: Services
) -> None:
    status, first = await api.post(
        "/api/v1/triage", as_="patient_sun", json={"text": "咳嗽三天，有痰，不发烧"}
    )
    assert status == 200
    assert first["emergency"] is False and first["advice"] == []
    assert first["departments"] == [
        {"code": "respiratory", "zh": "呼吸内科", "en": "Respiratory medicine"}
    ]
    assert first["urgency"] == "routine"
    assert first["urgency_text"]["zh"].startswith("普通")
    assert [n["code"] for n in first["negated"]] == ["fever"]
    status, second = await api.post(
        "/api/v1/triage", as_="patient_sun", json={"text": "你好", "age": 36, "sex": "female"}
    )
    assert status == 200
    assert second["departments"][0]["code"] == "general_practice"
    assert second["describe_more"] is True
    assert "详细描述" in second["advice"][0]["zh"]

    status, page = await api.get("/api/v1/triage/history?limit=1", as_="patient_sun")
    assert status == 200
    assert [(i["text"], i["answer"]["id"]) for i in page["items"]] == [("你好", second["id"])]
    assert page["items"][0]["answer"] == second
    status, older = await api.get(
        f"/api/v1/triage/history?limit=1&before={page['next_before']}", as_="patient_sun"
    )
    assert [i["answer"]["id"] for i in older["items"]] == [first["id"]]
    assert older["next_before"] is None
    # Another patient's history holds none of it.
    status, other = await api.get("/api/v1/triage/history", as_="patient_liu")
    assert (status, other) == (200, {"items": [], "next_before": None})
    # The patient's own triage is not someone else's access: not in their access log.
    sun = await patient_id(api, "patient_sun")
    status, seen = await api.get(f"/api/v1/patients/{sun}/access-log", as_="patient_sun")
    assert status == 200
    assert "triage" not in str(seen)


async def test_clinicians_may_try_the_table_others_may_not(api: Api, network: Services) -> None:
    status, answer = await api.post(
        "/api/v1/triage", as_="gp_zhang", json={"text": "孩子高烧，精神差", "age": 3}
    )
    assert status == 200
    assert answer["child"] is True
    assert [f["code"] for f in answer["red_flags"]] == ["child_fever_lethargy"]
    [log] = await logs(network)
    assert log.patient_id is None and log.age == 3
    for who in ("pharmacist_chen", "admin_qdsl", "admin"):
        status, problem = await api.post("/api/v1/triage", as_=who, json={"text": "咳嗽"})
        assert status == 403, (who, problem)
    status, _ = await api.post("/api/v1/triage", json={"text": "咳嗽"})
    assert status == 401
    status, _ = await api.get("/api/v1/triage/history", as_="gp_zhang")
    assert status == 403
    assert len(await logs(network)) == 1


async def test_bad_input_is_a_problem_naming_the_field_and_nothing_is_logged(
    api: Api, network: Services
) -> None:
    cases = [
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": "咳" * 501}, "text"),
        ({}, "text"),
        ({"text": "咳嗽", "age": -1}, "age"),
        ({"text": "咳嗽", "age": 131}, "age"),
        ({"text": "咳嗽", "sex": "x"}, "sex"),
        ({"text": "咳嗽", "pregnant": "maybe"}, "pregnant"),
        ({"text": "咳嗽", "mood": "bad"}, "mood"),
        ({"text": "肚子痛", "sex": "male", "pregnant": True}, "pregnant"),
        ({"text": "咳\x00嗽"}, "text"),
    ]
    for body, field in cases:
        status, problem = await api.post("/api/v1/triage", as_="patient_sun", json=body)
        assert status == 422, (body, problem)
        assert problem["type"] and problem["code"]
        assert field in [e["field"] for e in problem["errors"]], (body, problem)
    status, problem = await api.post(
        "/api/v1/triage",
        as_="patient_sun",
        json={"text": "肚子痛", "sex": "male", "pregnant": True},
    )
    assert problem["code"] == "triage_pregnant_male"
    status, _ = await api.get("/api/v1/triage/history?limit=0", as_="patient_sun")
    assert status == 422
    assert await logs(network) == []
    # 500 characters is the limit, not over it.
    status, answer = await api.post("/api/v1/triage", as_="patient_sun", json={"text": "咳" * 500})
    assert (status, answer["matched"][0]["code"]) == (200, "cough")
    async with network.db.read() as session:
        assert await session.scalar(select(func.count(TriageLog.id))) == 1


async def test_the_log_follows_a_patient_merge_and_its_undo(api: Api, network: Services) -> None:
    # A second account of 孙美玲 under a mistyped resident ID, used from the app.
    dup_resident = make_resident_id("370202", date(1990, 6, 18), 27)
    await api.patient_app(dup_resident, "孙美玲", "sun_dup")
    status, answer = await api.post("/api/v1/triage", as_="sun_dup", json={"text": "头疼"})
    assert status == 200
    sun, dup = await patient_id(api, "patient_sun"), await patient_id(api, "sun_dup")
    status, merge = await api.post(
        "/api/v1/patient-merges",
        as_="admin",
        json={"source_patient_id": dup, "target_patient_id": sun, "reason": "同一人"},
    )
    assert status == 201, merge
    assert merge["moved"]["triage"] == [answer["id"]]
    status, history = await api.get("/api/v1/triage/history", as_="patient_sun")
    assert [i["answer"]["id"] for i in history["items"]] == [answer["id"]]
    status, undone = await api.post(f"/api/v1/patient-merges/{merge['id']}/undo", as_="admin")
    assert status == 200, undone
    status, history = await api.get("/api/v1/triage/history", as_="patient_sun")
    assert history["items"] == []
    [log] = await logs(network)
    assert log.patient_id == dup


async def test_every_red_flag_through_the_api(api: Api, network: Services) -> None:
    """Each red flag's raising and negated case, as a patient sends them (both tiers)."""
    for flag, raises, form, does_not in RED_FLAGS:
        status, answer = await api.post(
            "/api/v1/triage", as_="patient_sun", json={"text": raises, **form}
        )
        assert status == 200, answer
        assert flag in [f["code"] for f in answer["red_flags"]], (raises, answer["red_flags"])
        assert answer["advice"][0]["zh"] == "请立即前往急诊或拨打120"
        assert (answer["urgency"], answer["departments"][0]["code"]) == ("emergency", "emergency")
        other = {"age": 30} if flag == "child_fever_lethargy" and form else {}
        if flag == "pregnancy_abdominal_pain" and form:
            other = {"pregnant": False}
        status, calm = await api.post(
            "/api/v1/triage", as_="patient_sun", json={"text": does_not, **other}
        )
        assert status == 200, calm
        assert flag not in [f["code"] for f in calm["red_flags"]], (does_not, calm["red_flags"])
    assert len(await logs(network)) == 2 * len(RED_FLAGS)
