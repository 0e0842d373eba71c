"""The patient hears of their prescription: approved by the pharmacist, then dispensed."""

from __future__ import annotations

from sqlalchemy import select

from server.inbox.models import OutboundMessage
from tests.helpers import Api
from tests.prescriptions.conftest import PATIENT, World, prescription

RX = "/api/v1/prescriptions"
DISPENSE = {"items": [{"drug_code": "C08CA01", "quantity": 1}]}


async def kinds(api: Api) -> list[tuple[str, str | None]]:
    status, box = await api.get("/api/v1/inbox", as_=PATIENT)
    assert status == 200, box
    return [(i["kind"], i["resource"]) for i in reversed(box["items"])]


async def test_approval_and_dispensing_reach_the_patients_messages(api: Api, world: World) -> None:
    patient = await api.socket(PATIENT)
    status, rx = await api.post(RX, as_="dr_li", json=prescription(world, pharmacy_id=world.hcyf))
    assert status == 201, rx
    ref = f"Prescription/{rx['id']}"
    status, body = await api.post(
        f"{RX}/{rx['id']}/review", as_="pharmacist_chen", json={"decision": "start"}
    )
    assert status == 200, body
    assert await kinds(api) == []  # starting the review is not news for the patient

    status, body = await api.post(
        f"{RX}/{rx['id']}/review", as_="pharmacist_chen", json={"decision": "approve"}
    )
    assert status == 200, body
    event = await patient.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "prescription_approved"
    )
    assert event["data"]["resource"] == ref
    assert event["data"]["data"]["prescription_id"] == rx["id"]
    assert await kinds(api) == [("prescription_approved", ref)]

    status, body = await api.post(f"{RX}/{rx['id']}/dispense", as_="pharmacist_chen", json=DISPENSE)
    assert status == 200, body
    await patient.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "prescription_dispensed"
    )
    assert await kinds(api) == [("prescription_approved", ref), ("prescription_dispensed", ref)]
    async with world.services.db.read() as session:
        queued = list(await session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))
    assert [(m.kind, m.channel, m.template_id) for m in queued] == [
        ("prescription_approved", "log", "YH_RX_APPROVED"),
        ("prescription_dispensed", "log", "YH_RX_DISPENSED"),
    ]


async def test_a_rejection_sends_no_approval(api: Api, world: World) -> None:
    status, rx = await api.post(RX, as_="dr_li", json=prescription(world, pharmacy_id=world.hcyf))
    assert status == 201, rx
    status, body = await api.post(
        f"{RX}/{rx['id']}/review",
        as_="pharmacist_chen",
        json={"decision": "reject", "reason": "剂量需核对"},
    )
    assert status == 200, body
    assert await kinds(api) == []
