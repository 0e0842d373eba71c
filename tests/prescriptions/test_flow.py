"""The whole path: prescribe → check → sign → route → receive → review → dispense, live."""

from __future__ import annotations

from typing import Any

from server.core.signing import Signature, verify_signature
from tests.helpers import Api
from tests.prescriptions.conftest import PATIENT, PATIENT_NAME, World, prescription

RX = "/api/v1/prescriptions"


def is_op(op: str, prescription_id: int) -> Any:
    def match(envelope: dict[str, Any]) -> bool:
        data = envelope["data"]
        found = data.get("prescription", data).get("id", data.get("prescription_id"))
        return (
            envelope["type"] == "prescription" and envelope["op"] == op and found == prescription_id
        )

    return match


async def test_prescribe_check_sign_route_receive_review_dispense(api: Api, world: World) -> None:
    pharmacy = await api.socket("pharmacist_chen")
    doctor = await api.socket("dr_li")
    patient = await api.socket(PATIENT)

    status, checked = await api.post(f"{RX}/check", as_="dr_li", json=prescription(world))
    assert status == 200, checked
    assert checked == {"findings": [], "blocking": False}

    status, rx = await api.post(RX, as_="dr_li", json=prescription(world))
    assert status == 201, rx
    assert rx["status"] == "signed" and rx["version"] == 1
    assert rx["content"]["items"][0]["drug_code"] == "C08CA01"
    assert verify_signature(Signature.model_validate(rx["signature"]), rx["content"])

    status, routed = await api.post(
        f"{RX}/{rx['id']}/route", as_=PATIENT, json={"pharmacy_id": world.hcyf}
    )
    assert status == 200, routed
    assert routed["status"] == "sent" and routed["pharmacy_id"] == world.hcyf

    delivered = await pharmacy.wait_for(is_op("delivered", rx["id"]))
    assert delivered["stream"] == f"pharmacy:{world.hcyf}"
    sent = delivered["data"]["prescription"]
    # The pharmacy's copy masks the resident ID (in the signed content too), so the
    # pharmacy checks the signature through the server (GET …/verify, below).
    masked = sent["patient"]["resident_id_masked"]
    assert sent["content"]["patient"]["resident_id"] == masked
    assert masked != rx["content"]["patient"]["resident_id"] and "*" in masked
    await patient.wait_for(is_op("routed", rx["id"]))

    status, verified = await api.get(f"{RX}/{rx['id']}/verify", as_="pharmacist_chen")
    assert status == 200 and verified["valid"] is True

    ack = await pharmacy.call("prescription.ack", {"prescription_id": rx["id"], "version": 1})
    assert ack == {"ok": True, "data": {"prescription_id": rx["id"], "version": 1, "first": True}}
    again = await pharmacy.call("prescription.ack", {"prescription_id": rx["id"], "version": 1})
    assert again["ok"] and again["data"]["first"] is False  # duplicates are harmless
    await doctor.wait_for(is_op("received", rx["id"]))

    status, queue = await api.get(
        "/api/v1/pharmacy/prescriptions?status=new", as_="pharmacist_chen"
    )
    assert status == 200 and [p["id"] for p in queue["items"]] == [rx["id"]]
    assert queue["items"][0]["received"] is True

    status, reviewing = await api.post(
        f"{RX}/{rx['id']}/review", as_="pharmacist_chen", json={"decision": "start"}
    )
    assert status == 200 and reviewing["status"] == "under_review"
    status, approved = await api.post(
        f"{RX}/{rx['id']}/review", as_="pharmacist_chen", json={"decision": "approve"}
    )
    assert status == 200 and approved["status"] == "approved"
    await doctor.wait_for(is_op("approved", rx["id"]))

    status, dispensed = await api.post(
        f"{RX}/{rx['id']}/dispense",
        as_="pharmacist_chen",
        json={"items": [{"drug_code": "C08CA01", "quantity": 1, "batch": "B20261101"}]},
    )
    assert status == 200, dispensed
    assert dispensed["status"] == "dispensed"
    assert dispensed["dispensation"]["items"] == [
        {"drug_code": "C08CA01", "quantity": 1, "batch": "B20261101"}
    ]
    await patient.wait_for(is_op("dispensed", rx["id"]))
    await doctor.wait_for(is_op("dispensed", rx["id"]))

    status, mine = await api.get(RX, as_=PATIENT)
    assert status == 200 and [(p["id"], p["status"]) for p in mine["items"]] == [
        (rx["id"], "dispensed")
    ]
    status, history = await api.get(f"{RX}/{rx['id']}/history", as_=PATIENT)
    assert status == 200
    assert [h["status"] for h in history["items"]] == [
        "signed", "sent", "received", "under_review", "approved", "dispensed",
    ]  # fmt: skip
    status, queue = await api.get(
        f"/api/v1/pharmacy/prescriptions?status=dispensed&patient={PATIENT_NAME}",
        as_="pharmacist_chen",
    )
    assert status == 200 and [p["id"] for p in queue["items"]] == [rx["id"]]


async def test_doctor_routes_with_the_patients_choice_and_revises_after_rejection(
    api: Api, world: World
) -> None:
    doctor = await api.socket("dr_li")
    pharmacy = await api.socket("pharmacist_chen")
    status, rx = await api.post(RX, as_="dr_li", json=prescription(world, pharmacy_id=world.hcyf))
    assert status == 201 and rx["status"] == "sent"
    await pharmacy.wait_for(is_op("delivered", rx["id"]))

    status, rejected = await api.post(
        f"{RX}/{rx['id']}/review",
        as_="pharmacist_chen",
        json={"decision": "reject", "reason": "剂量请确认：患者近期血压偏低"},
    )
    assert status == 200 and rejected["status"] == "rejected"
    told = await doctor.wait_for(is_op("rejected", rx["id"]))
    assert told["data"]["reason"] == "剂量请确认：患者近期血压偏低"

    body = prescription(world)
    del body["patient_id"]
    body["items"][0]["dose"] = 2.5
    status, revised = await api.post(f"{RX}/{rx['id']}/revise", as_="dr_li", json=body)
    assert status == 200, revised
    assert revised["version"] == 2 and revised["status"] == "sent"
    assert revised["content"]["items"][0]["dose"] == 2.5
    redelivered = await pharmacy.wait_for(
        lambda e: is_op("delivered", rx["id"])(e) and e["data"]["prescription"]["version"] == 2
    )
    sent = redelivered["data"]["prescription"]
    assert sent["content"]["patient"]["resident_id"] == sent["patient"]["resident_id_masked"]
    assert sent["patient"]["resident_id_masked"] != revised["content"]["patient"]["resident_id"]
    status, verified = await api.get(f"{RX}/{rx['id']}/verify", as_="pharmacist_chen")
    assert status == 200 and verified["valid"] is True

    status, problem = await api.post(
        f"{RX}/{rx['id']}/route", as_="dr_li", json={"pharmacy_id": world.tatyf}
    )
    assert status == 422 and problem["code"] == "patient_choice_required"
    status, moved = await api.post(
        f"{RX}/{rx['id']}/route",
        as_="dr_li",
        json={"pharmacy_id": world.tatyf, "patient_choice": True},
    )
    assert status == 200 and moved["pharmacy_id"] == world.tatyf
    await pharmacy.wait_for(is_op("withdrawn", rx["id"]))
    status, back = await api.post(
        f"{RX}/{rx['id']}/route", as_=PATIENT, json={"pharmacy_id": world.hcyf}
    )
    assert status == 200 and back["pharmacy_id"] == world.hcyf
    status, pending = await api.get("/api/v1/pharmacy/deliveries/pending", as_="pharmacist_chen")
    assert [e["data"]["prescription"]["version"] for e in pending["items"]] == [2]
    status, pending = await api.get("/api/v1/pharmacy/deliveries/pending", as_="pharmacist_zhou")
    assert pending["items"] == []  # withdrawn from there
