"""Two institutions' worth of objects, built through the real API, for the security tests.

Side **A** is the personas' own: patient_sun, registered at SNBDH by gp_zhang, who
asks QDSL for a consult that dr_li hosts (and signs an opinion in), prescribes
for her (she routes it to HCYF, pharmacist_chen's pharmacy), refers her up to
QDSL; she books a QDSL slot. Side **B** is the mirror in other institutions:
patient_liu at SBLYL (gp_liu), consult hosted by dr_sun (QDFY), her
prescription routed to TATYF (pharmacist_zhou), referral to QDFY, a QDFY slot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import socketio
from sqlalchemy import select

from server.container import Services
from server.identity.models import Department, Institution, User
from server.seed import PATIENTS
from tests.helpers import Api, amlodipine

DIAGNOSIS = {"code": "I10", "display": "原发性高血压"}
AMLODIPINE = amlodipine()


@dataclass
class Side:
    """The objects of one side (A or B) and who owns them."""

    name: str
    patient_user: str
    patient_id: int
    institution_id: int  # the community clinic that registered the patient
    institution_code: str
    gp: str
    hospital_id: int
    hospital_code: str
    specialist: str
    specialist_id: int
    department_id: int  # the consulted / referred-to department
    slot_department_id: int  # a department with published slots at the hospital
    pharmacy_id: int
    pharmacy_code: str
    consult_id: int = 0
    prescription_id: int = 0
    prescription_version: int = 1
    referral_id: int = 0
    slot_id: int = 0
    appointment_id: int = 0
    visit_id: int = 0  # a follow-up video visit, its room open (waiting)
    care_request_id: int = 0  # the other side's hospital asks to care for this patient
    user_id: int = 0  # the patient's account
    gp_user_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    a: Side
    b: Side
    users: dict[str, int]
    institutions: dict[str, int]
    services: Services

    def side(self, name: str) -> Side:
        return self.a if name == "A" else self.b


def expired_token(services: Services, user_id: int, role: str) -> str:
    """A correctly signed access token for a real user whose lifetime is over."""
    now = int(time.time())
    claims = {"sub": str(user_id), "sid": "expired", "role": role, "iat": now - 3600,
              "exp": now - 60, "typ": "access"}  # fmt: skip
    return jwt.encode(claims, services.settings.secret_key, algorithm="HS256")


async def _ids(
    services: Services,
) -> tuple[dict[str, int], dict[str, int], dict[tuple[str, str], int]]:
    async with services.db.read() as session:
        users = {u.username: u.id for u in await session.scalars(select(User))}
        insts = {i.code: i.id for i in await session.scalars(select(Institution))}
        codes = {v: k for k, v in insts.items()}
        depts = {
            (codes[d.institution_id], d.name): d.id
            for d in await session.scalars(select(Department))
        }
    return users, insts, depts


def mrn(side: Side) -> str:
    """The medical record number the side's clinic gives its patient."""
    return f"MX-{side.name}-1001"


def visit_bundle(side: Side, resident_id: str) -> dict[str, Any]:
    """An in-person visit at the side's clinic: the patient, the encounter, hypertension."""
    base = f"urn:uuid:5ec0{side.name.lower()}000-0000-4000-8000-00000000000"
    subject = {"reference": base + "1"}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": base + "1", "request": {"method": "POST", "url": "Patient"},
         "resource": {"resourceType": "Patient", "id": f"{side.name}-p",
                      "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.23.1.8.4.1",
                                      "value": resident_id},
                                     {"system": f"urn:yihao:institution:{side.institution_code}:mrn",
                                      "value": mrn(side)}]}},
        {"fullUrl": base + "2", "request": {"method": "POST", "url": "Encounter"},
         "resource": {"resourceType": "Encounter", "id": f"{side.name}-enc", "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": "AMB"},
                      "subject": subject,
                      "period": {"start": "2026-03-01T09:00:00+08:00",
                                 "end": "2026-03-01T09:30:00+08:00"}}},
        {"fullUrl": base + "3", "request": {"method": "POST", "url": "Condition"},
         "resource": {"resourceType": "Condition", "id": f"{side.name}-htn",
                      "clinicalStatus": {"coding": [{
                          "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                          "code": "active"}]},
                      "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                           "code": "I10", "display": "原发性高血压"}]},
                      "subject": subject, "encounter": {"reference": base + "2"},
                      "onsetDateTime": "2026-03-01"}},
    ]}  # fmt: skip


async def _ok(result: tuple[int, Any], *expected: int) -> Any:
    status, body = result
    assert status in (expected or (200, 201)), (status, body)
    return body


async def build_side(api: Api, services: Services, side: Side) -> None:
    patient = next(p for p in PATIENTS if p.username == side.patient_user)
    await _ok(await api.post("/api/v1/patients", as_=side.gp,
                             json={"resident_id": patient.resident_id, "name": patient.name}))  # fmt: skip
    await _ok(await api.post("/fhir", as_=side.gp, json=visit_bundle(side, patient.resident_id),
                             headers={"Content-Type": "application/fhir+json"}))  # fmt: skip
    now = datetime.now(UTC)
    consult = await _ok(await api.post("/api/v1/consults", as_=side.gp, json={
        "patient_id": side.patient_id,
        "consent": {"given_by": "patient", "name": patient.name, "method": "written",
                    "given_at": (now - timedelta(hours=1)).isoformat()},
        "reason": "血压控制不佳", "purpose": "调整降压方案", "clinical_question": "下一步检查建议？",
        "case_summary": "高血压十年。", "urgency": "routine",
        "window_start": (now + timedelta(hours=1)).isoformat(),
        "window_end": (now + timedelta(days=2)).isoformat(),
        "invited_institution_id": side.hospital_id,
    }))  # fmt: skip
    side.consult_id = consult["id"]
    await _ok(await api.post(f"/api/v1/consults/{side.consult_id}/accept", as_=side.specialist,
                             json={"scheduled_at": (now + timedelta(hours=2)).isoformat()}))  # fmt: skip
    host = await api.socket(side.specialist)
    ack = await host.call("consult.join", {"consult_id": side.consult_id})
    assert ack["ok"], ack
    await _ok(await api.post(f"/api/v1/consults/{side.consult_id}/opinion", as_=side.specialist,
                             json={"findings": "血压偏高", "diagnostic_opinion": "原发性高血压",
                                   "treatment_advice": "调整用药", "refer": False}))  # fmt: skip
    await host.close()
    rx = await _ok(await api.post("/api/v1/prescriptions", as_=side.gp, json={
        "patient_id": side.patient_id, "diagnosis": DIAGNOSIS, "items": [AMLODIPINE],
        "notes": "复诊续方"}))  # fmt: skip
    side.prescription_id = rx["id"]
    routed = await _ok(await api.post(f"/api/v1/prescriptions/{side.prescription_id}/route",
                                      as_=side.patient_user, json={"pharmacy_id": side.pharmacy_id}))  # fmt: skip
    side.prescription_version = routed.get("version", 1)
    referral = await _ok(await api.post("/api/v1/referrals", as_=side.gp, json={
        "direction": "up", "patient_id": side.patient_id, "purpose": "胸痛评估",
        "to_institution_id": side.hospital_id, "to_department_id": side.department_id,
        "reason": "劳力性胸痛两周", "working_diagnosis": "不稳定型心绞痛?", "urgency": "urgent",
        "summary": "高血压十年。", "attachments": []}))  # fmt: skip
    side.referral_id = referral["id"]
    slots = await _ok(
        await api.get(
            f"/api/v1/slots?department_id={side.slot_department_id}&available=true",
            as_=side.patient_user,
        )
    )
    assert slots["items"], slots
    side.slot_id = slots["items"][0]["id"]
    appointment = await _ok(await api.post("/api/v1/appointments", as_=side.patient_user,
                                           json={"slot_id": slots["items"][1]["id"]}))  # fmt: skip
    side.appointment_id = appointment["id"]
    # issue 19: payments — the patient's order for that appointment (unpaid).
    order = await _ok(await api.post("/api/v1/orders", as_=side.patient_user,
                                     json={"kind": "appointment", "subject_id": side.appointment_id}))  # fmt: skip
    side.extra["order_id"], side.extra["trade_no"] = order["id"], order["out_trade_no"]
    # A follow-up video visit (server/visits): the patient, real-name verified, asks the
    # side's specialist about a diagnosis made in person; the specialist opens its room.
    await _ok(await api.call("PUT", f"/api/v1/patients/{side.patient_id}/verification",
                             as_="admin", json={"verified": True}))  # fmt: skip
    conditions = await _ok(await api.get("/api/v1/visits/conditions", as_=side.patient_user))
    condition = next(c for c in conditions["items"] if c["in_person"])
    visit = await _ok(await api.post("/api/v1/visits", as_=side.patient_user, json={
        "doctor_id": side.specialist_id, "condition_id": condition["id"], "complaint": "复诊"}))  # fmt: skip
    side.visit_id, side.extra["condition_id"] = visit["id"], condition["id"]
    await _ok(await api.post(f"/api/v1/visits/{side.visit_id}/accept", as_=side.specialist))
    await _ok(await api.post(f"/api/v1/visits/{side.visit_id}/open", as_=side.specialist, json={}))


async def build_world(api: Api, services: Services) -> World:
    users, insts, depts = await _ids(services)
    patients = {}
    async with services.db.read() as session:
        for user in await session.scalars(select(User).where(User.role == "patient")):
            patients[user.username] = user.patient_id
    a = Side(name="A", patient_user="patient_sun", patient_id=patients["patient_sun"],
             institution_id=insts["SNBDH"], institution_code="SNBDH", gp="gp_zhang",
             hospital_id=insts["QDSL"], hospital_code="QDSL", specialist="dr_li",
             specialist_id=users["dr_li"], department_id=depts[("QDSL", "心内科")],
             slot_department_id=depts[("QDSL", "内分泌科")],
             pharmacy_id=insts["HCYF"], pharmacy_code="HCYF",
             user_id=users["patient_sun"], gp_user_id=users["gp_zhang"])  # fmt: skip
    b = Side(name="B", patient_user="patient_liu", patient_id=patients["patient_liu"],
             institution_id=insts["SBLYL"], institution_code="SBLYL", gp="gp_liu",
             hospital_id=insts["QDFY"], hospital_code="QDFY", specialist="dr_sun",
             specialist_id=users["dr_sun"], department_id=depts[("QDFY", "肾内科")],
             slot_department_id=depts[("QDFY", "心内科")],
             pharmacy_id=insts["TATYF"], pharmacy_code="TATYF",
             user_id=users["patient_liu"], gp_user_id=users["gp_liu"])  # fmt: skip
    for side in (a, b):
        await build_side(api, services, side)
    for side, other in ((a, b), (b, a)):
        asked = await _ok(await api.post(f"/api/v1/patients/{side.patient_id}/care-requests",
                                         as_=other.specialist, json={"note": "矩阵"}))  # fmt: skip
        side.care_request_id = asked["id"]
    return World(a=a, b=b, users=users, institutions=insts, services=services)


async def try_connect(url: str, auth: Any, headers: dict[str, str] | None = None) -> str | None:
    """Connect a Socket.IO client and disconnect; the refusal's message, or None if connected.

    The HTTP session is ours, so a refused attempt leaves no unclosed connector behind.
    """
    async with aiohttp.ClientSession() as http:
        client = socketio.AsyncClient(reconnection=False, http_session=http)
        try:
            await client.connect(url, auth=auth, headers=headers or {},
                                 transports=["websocket"], wait_timeout=5)  # fmt: skip
        except socketio.exceptions.ConnectionError as exc:
            return str(exc) or "refused"
        await client.disconnect()
        return None
