"""Delivery to the pharmacy: an offline pharmacy catches up in order; a restart between
commit and push loses nothing; retries never create two prescriptions."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from server.app import create_app
from server.config import Settings
from server.core.api import SERVICES
from server.prescriptions.models import Prescription
from tests.helpers import Api
from tests.prescriptions.conftest import World, amlodipine, prescription

RX = "/api/v1/prescriptions"


async def write_three(api: Api, world: World) -> list[int]:
    ids = []
    for dose in (2.5, 5, 10):
        body = prescription(world, items=[amlodipine(dose=dose)], pharmacy_id=world.hcyf)
        status, rx = await api.post(RX, as_="dr_li", json=body)
        assert status == 201, rx
        ids.append(rx["id"])
    return ids


def delivered_ids(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["prescription"]["id"] for e in events if e["op"] == "delivered"]


async def test_offline_pharmacy_catches_up_in_order(api: Api, world: World) -> None:
    ids = await write_three(api, world)  # the pharmacy is offline

    status, pending = await api.get("/api/v1/pharmacy/deliveries/pending", as_="pharmacist_chen")
    assert status == 200 and delivered_ids(pending["items"]) == ids

    pharmacy = await api.socket("pharmacist_chen")
    stream = f"pharmacy:{world.hcyf}"
    ack = await pharmacy.call("sync", {"positions": {stream: 0}})
    assert ack["ok"], ack
    events = [e for e in ack["data"]["events"] if e["stream"] == stream]
    assert delivered_ids(events) == ids
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    for prescription_id in ids:
        ack = await pharmacy.call(
            "prescription.ack", {"prescription_id": prescription_id, "version": 1}
        )
        assert ack["ok"] and ack["data"]["first"] is True
    pending_ack = await pharmacy.call("prescription.pending", {})
    assert pending_ack == {"ok": True, "data": {"events": []}}


async def test_restart_between_commit_and_push_loses_nothing(
    api: Api, world: World, settings: Settings, aiohttp_client: Any
) -> None:
    # The first server commits three deliveries while the pharmacy is not connected to it:
    # the pushes reach nobody, as if the process had died right after the commit.
    ids = await write_three(api, world)

    # A second server on the same database: the restarted process.
    restarted = await aiohttp_client(create_app(settings))
    again = Api(restarted)
    try:
        pharmacy = await again.socket("pharmacist_chen")
        relayed = await restarted.app[SERVICES].prescriptions.relay_pending()
        assert relayed == 3
        await pharmacy.wait_for(lambda e: delivered_ids(pharmacy.events) == ids)
        assert delivered_ids(pharmacy.events) == ids

        for prescription_id in ids:
            status, _ = await again.post(
                f"{RX}/{prescription_id}/receipt",
                as_="pharmacist_chen",
                json={"prescription_id": prescription_id, "version": 1},
            )
            assert status == 200
        assert await restarted.app[SERVICES].prescriptions.relay_pending() == 0
    finally:
        await again.close()


async def test_a_retried_create_never_makes_two(api: Api, world: World) -> None:
    body = prescription(world, pharmacy_id=world.hcyf)
    headers = {"Idempotency-Key": "rx-2026-11-25-0001"}
    first, second = await asyncio.gather(
        api.post(RX, as_="dr_li", json=body, headers=headers),
        api.post(RX, as_="dr_li", json=body, headers=headers),
    )
    assert first[0] == second[0] == 201, (first, second)
    assert first[1]["id"] == second[1]["id"]
    status, third = await api.post(RX, as_="dr_li", json=body, headers=headers)
    assert status == 201 and third["id"] == first[1]["id"]

    async with world.services.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Prescription)) == 1
    status, pending = await api.get("/api/v1/pharmacy/deliveries/pending", as_="pharmacist_chen")
    assert len(pending["items"]) == 1

    changed = prescription(world, items=[amlodipine(dose=10)])
    status, problem = await api.post(RX, as_="dr_li", json=changed, headers=headers)
    assert status == 422 and problem["code"] == "idempotency_key_reused"


async def test_a_delivery_pushed_again_has_a_new_seq_and_is_acknowledged(
    api: Api, world: World
) -> None:
    """A client keeping the highest seq per stream (docs/realtime.md) sees the push again."""
    pharmacy = await api.socket("pharmacist_chen")
    body = prescription(world, pharmacy_id=world.hcyf)
    status, rx = await api.post(RX, as_="dr_li", json=body)
    assert status == 201, rx

    def delivered(envelope: dict[str, Any]) -> bool:
        return envelope["op"] == "delivered" and envelope["data"]["prescription"]["id"] == rx["id"]

    first = await pharmacy.wait_for(delivered)
    # The pharmacy's acknowledgement was lost: the relay pushes the delivery again.
    assert await world.services.prescriptions.relay_pending() == 1
    again = await pharmacy.wait_for(lambda e: delivered(e) and e["seq"] > first["seq"])
    assert again["stream"] == first["stream"] == f"pharmacy:{world.hcyf}"
    assert again["data"] == first["data"]
    # What is pending is the latest push; acknowledging it settles the delivery.
    status, pending = await api.get("/api/v1/pharmacy/deliveries/pending", as_="pharmacist_chen")
    assert status == 200 and [e["seq"] for e in pending["items"]] == [again["seq"]]
    ack = await pharmacy.call("prescription.ack", {"prescription_id": rx["id"], "version": 1})
    assert ack == {"ok": True, "data": {"prescription_id": rx["id"], "version": 1, "first": True}}
    assert await world.services.prescriptions.relay_pending() == 0


async def test_receipt_answers_as_documented(api: Api, world: World) -> None:
    """``POST …/receipt`` answers 200 with the receipt, as OpenAPI says (same as the ack)."""
    status, rx = await api.post(RX, as_="dr_li", json=prescription(world, pharmacy_id=world.hcyf))
    assert status == 201, rx
    url = f"{RX}/{rx['id']}/receipt"
    body = {"prescription_id": rx["id"], "version": 1}
    status, answer = await api.post(url, as_="pharmacist_chen", json=body)
    assert (status, answer) == (200, {"prescription_id": rx["id"], "version": 1, "first": True})
    status, answer = await api.post(url, as_="pharmacist_chen", json=body)
    assert (status, answer["first"]) == (200, False)

    status, spec = await api.get("/api/openapi.json")
    assert status == 200
    operation = spec["paths"]["/api/v1/prescriptions/{prescription_id}/receipt"]["post"]
    assert set(operation["responses"]) >= {"200", "403", "404", "422"}
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Receipt"}
