"""What the pharmacy, patient, referral and schedule browser tests set up through the API.

Each helper acts as a demo persona on the live server (outside the browser), the way
another user elsewhere in the network would, and returns the server's answer.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.e2e.conftest import LiveServer

AMLODIPINE = {"drug_code": "C08CA01", "drug_name": "苯磺酸氨氯地平片", "strength": "5mg",
              "dose": 5, "dose_unit": "mg", "route": "口服", "frequency": "qd", "days": 7,
              "quantity": 1}  # fmt: skip


def institution(server: LiveServer, code: str) -> dict[str, Any]:
    status, body = server.call("GET", "/api/v1/institutions", as_="admin")
    assert status == 200, body
    return next(i for i in body["items"] if i["code"] == code)  # type: ignore[no-any-return]


def department_id(server: LiveServer, code: str, name: str) -> int:
    return int(next(d["id"] for d in institution(server, code)["departments"] if d["name"] == name))


def me(server: LiveServer, username: str) -> dict[str, Any]:
    status, body = server.call("GET", "/api/v1/me", as_=username)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def prescribe(
    server: LiveServer,
    *,
    patient: str = "patient_wang",
    doctor: str = "gp_zhang",
    pharmacy: str = "HCYF",
) -> dict[str, Any]:
    """The community doctor renews the patient's amlodipine and sends it to the pharmacy.

    patient_wang already takes amlodipine (the demo record), so the check finds a
    duplicate therapy; the doctor overrides severe findings with a reason.
    """
    body: dict[str, Any] = {
        "patient_id": me(server, patient)["patient_id"],
        "diagnosis": {"code": "I10", "display": "原发性高血压"},
        "items": [AMLODIPINE],
        "notes": "复诊续方",
        "pharmacy_id": institution(server, pharmacy)["id"],
    }
    status, checked = server.call("POST", "/api/v1/prescriptions/check", body, as_=doctor)
    assert status == 200, checked
    if checked["blocking"]:
        body["override_reason"] = "与患者核对，继续原方案"
    status, created = server.call("POST", "/api/v1/prescriptions", body, as_=doctor)
    assert status == 201, created
    assert created["status"] == "sent"
    return created  # type: ignore[no-any-return]


def refer_up(
    server: LiveServer, *, patient: str = "patient_wang", **changes: Any
) -> dict[str, Any]:
    """gp_zhang (SNBDH) refers the patient up to 青岛市立医院 心内科."""
    body: dict[str, Any] = {
        "direction": "up",
        "patient_id": me(server, patient)["patient_id"],
        # A purpose of its own: a newer open referral with the same purpose supersedes.
        "purpose": f"胸痛评估 {uuid.uuid4().hex[:6]}",
        "to_institution_id": institution(server, "QDSL")["id"],
        "to_department_id": department_id(server, "QDSL", "心内科"),
        "reason": "劳力性胸痛两周，社区心电图 ST 段压低",
        "working_diagnosis": "不稳定型心绞痛?",
        "urgency": "urgent",
    } | changes
    status, created = server.call("POST", "/api/v1/referrals", body, as_="gp_zhang")
    assert status == 201, created
    return created  # type: ignore[no-any-return]


def request_consult(server: LiveServer, *, patient: str = "patient_wang") -> dict[str, Any]:
    """gp_zhang asks 青岛市立医院 心内科 for a remote consult, with the patient's consent."""
    now = datetime.now(UTC)
    body = {
        "patient_id": me(server, patient)["patient_id"],
        "consent": {"given_by": "patient", "method": "electronic",
                    "given_at": (now - timedelta(minutes=5)).isoformat()},
        "reason": "血压控制不佳，胸闷三天",
        "purpose": "明确是否需调整降压方案",
        "clinical_question": "是否存在冠心病？",
        "case_summary": "男，71岁，高血压十年，近三天活动后胸闷。",
        "window_start": (now + timedelta(hours=2)).isoformat(),
        "window_end": (now + timedelta(days=2)).isoformat(),
        "invited_institution_id": institution(server, "QDSL")["id"],
        "invited_department": "心内科",
    }  # fmt: skip
    status, created = server.call("POST", "/api/v1/consults", body, as_="gp_zhang")
    assert status == 201, created
    return created  # type: ignore[no-any-return]


def tomorrow() -> date:
    """Tomorrow where the schedules are kept (Asia/Shanghai)."""
    return (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)).date()


def open_slots(server: LiveServer, code: str, department: str) -> list[dict[str, Any]]:
    """A desk publishes tomorrow's morning for the department; returns its open slots."""
    dept = department_id(server, code, department)
    day = tomorrow()
    desk = {"QDSL": "nurse_he"}.get(code, "admin_qdsl")
    status, body = server.call(
        "POST",
        "/api/v1/schedules/templates",
        {"department_id": dept, "weekday": day.weekday(), "start_time": "09:00",
         "slot_minutes": 30, "slot_count": 2, "capacity": 3},
        as_=desk,
    )  # fmt: skip
    assert status == 201, body
    status, body = server.call(
        "POST",
        "/api/v1/schedules/generate",
        {"department_id": dept, "from_date": day.isoformat(), "to_date": day.isoformat()},
        as_=desk,
    )
    assert status == 200, body
    status, body = server.call(
        "GET", f"/api/v1/slots?department_id={dept}&available=true", as_=desk
    )
    assert status == 200 and body["items"], body
    return body["items"]  # type: ignore[no-any-return]
