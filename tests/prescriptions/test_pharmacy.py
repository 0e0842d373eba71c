"""The pharmacy side under pressure: tampering, two dispenses at once, expiry, cancel,
and bad input — each a clear 4xx problem that changes nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from server.app import create_app
from server.config import Settings
from server.core.db import utcnow
from server.prescriptions.models import Dispensation, Prescription
from tests.helpers import Api
from tests.prescriptions.conftest import PATIENT, World, amlodipine, prescription

RX = "/api/v1/prescriptions"
DISPENSE = {"items": [{"drug_code": "C08CA01", "quantity": 1}]}


async def sent(api: Api, world: World, **over: Any) -> dict[str, Any]:
    status, rx = await api.post(
        RX, as_="dr_li", json=prescription(world, pharmacy_id=world.hcyf, **over)
    )
    assert status == 201, rx
    return rx  # type: ignore[no-any-return]


async def approved(api: Api, world: World) -> dict[str, Any]:
    rx = await sent(api, world)
    status, body = await api.post(
        f"{RX}/{rx['id']}/review", as_="pharmacist_chen", json={"decision": "approve"}
    )
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def status_of(world: World, prescription_id: int) -> str:
    async with world.services.db.read() as session:
        row = await session.get(Prescription, prescription_id)
        assert row is not None
        return row.status


async def test_a_change_after_signing_is_detected_and_refused(api: Api, world: World) -> None:
    rx = await sent(api, world)
    content = dict(rx["content"])
    content["items"] = [dict(content["items"][0], quantity=20)]  # someone raises the quantity
    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            update(Prescription).where(Prescription.id == rx["id"]).values(content=content)
        )

    status, verified = await api.get(f"{RX}/{rx['id']}/verify", as_="pharmacist_chen")
    assert status == 200 and verified["valid"] is False
    status, problem = await api.post(
        f"{RX}/{rx['id']}/review", as_="pharmacist_chen", json={"decision": "approve"}
    )
    assert status == 409 and problem["code"] == "signature_invalid"
    assert await status_of(world, rx["id"]) == "sent"


async def test_a_forged_signature_is_refused(api: Api, world: World) -> None:
    rx = await approved(api, world)
    signature = dict(rx["signature"], value=rx["signature"]["value"][:-4] + "AAA=")
    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            update(Prescription).where(Prescription.id == rx["id"]).values(signature=signature)
        )
    status, problem = await api.post(
        f"{RX}/{rx['id']}/dispense", as_="pharmacist_chen", json=DISPENSE
    )
    assert status == 409 and problem["code"] == "signature_invalid"
    assert await status_of(world, rx["id"]) == "approved"


async def test_two_dispenses_at_the_same_moment_one_wins(api: Api, world: World) -> None:
    rx = await approved(api, world)
    await api.token("pharmacist_chen")
    results = await asyncio.gather(
        *(
            api.post(f"{RX}/{rx['id']}/dispense", as_="pharmacist_chen", json=DISPENSE)
            for _ in range(2)
        )
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409], results
    loser = next(body for status, body in results if status == 409)
    assert loser["code"] == "already_dispensed"
    async with world.services.db.read() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Dispensation)
            .where(Dispensation.prescription_id == rx["id"])
        )
    assert count == 1
    # Another pharmacy cannot dispense it either.
    status, problem = await api.post(
        f"{RX}/{rx['id']}/dispense", as_="pharmacist_zhou", json=DISPENSE
    )
    assert status == 403 and problem["code"] == "not_your_pharmacy"


async def test_expiry_is_automatic(api: Api, world: World) -> None:
    patient = await api.socket(PATIENT)
    rx = await approved(api, world)
    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            update(Prescription)
            .where(Prescription.id == rx["id"])
            .values(valid_until=utcnow() - timedelta(seconds=1))
        )
    assert await world.services.prescriptions.expire_due() == 1
    await patient.wait_for(lambda e: e["op"] == "expired")
    status, problem = await api.post(
        f"{RX}/{rx['id']}/dispense", as_="pharmacist_chen", json=DISPENSE
    )
    assert status == 409 and problem["code"] == "prescription_expired"
    status, body = await api.get(f"{RX}/{rx['id']}", as_=PATIENT)
    assert status == 200 and body["status"] == "expired"


async def test_the_sweeper_expires_without_anyone_asking(
    api: Api, world: World, settings: Settings, aiohttp_client: Any
) -> None:
    rx = await sent(api, world)
    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            update(Prescription)
            .where(Prescription.id == rx["id"])
            .values(valid_until=utcnow() - timedelta(seconds=1))
        )
    swept = await aiohttp_client(
        create_app(settings.with_overrides(prescription_sweep_seconds=0.05))
    )
    other = Api(swept)
    try:
        pharmacy = await other.socket("pharmacist_chen")
        pharmacy.positions[f"pharmacy:{world.hcyf}"] = 0  # the sweep may come first
        await pharmacy.sync()
        await pharmacy.wait_for(lambda e: e["op"] == "expired")
        assert await status_of(world, rx["id"]) == "expired"
    finally:
        await other.close()


async def test_validity_ends_with_the_last_valid_day_in_china(api: Api, world: World) -> None:
    rx = await sent(api, world, validity_days=3)
    status, same_day = await api.post(RX, as_="dr_li", json=prescription(world))
    assert status == 201
    assert same_day["valid_until"] < rx["valid_until"]
    assert rx["valid_until"].endswith("16:00:00Z") or rx["valid_until"].endswith("16:00:00+00:00")


async def test_doctor_cancels_before_dispensing(api: Api, world: World) -> None:
    pharmacy = await api.socket("pharmacist_chen")
    rx = await sent(api, world)
    status, problem = await api.post(
        f"{RX}/{rx['id']}/cancel", as_="pharmacist_chen", json={"reason": "x"}
    )
    assert status == 403
    status, body = await api.post(
        f"{RX}/{rx['id']}/cancel", as_="dr_li", json={"reason": "患者改用其他方案"}
    )
    assert status == 200 and body["status"] == "cancelled"
    await pharmacy.wait_for(lambda e: e["op"] == "cancelled")
    status, pending = await api.get("/api/v1/pharmacy/deliveries/pending", as_="pharmacist_chen")
    assert status == 200 and pending["items"] == []  # nothing left to deliver
    status, problem = await api.post(
        f"{RX}/{rx['id']}/review", as_="pharmacist_chen", json={"decision": "approve"}
    )
    assert status == 409 and problem["code"] == "prescription_cancelled"

    done = await approved(api, world)
    status, _ = await api.post(f"{RX}/{done['id']}/dispense", as_="pharmacist_chen", json=DISPENSE)
    assert status == 200
    status, problem = await api.post(
        f"{RX}/{done['id']}/cancel", as_="dr_li", json={"reason": "晚了"}
    )
    assert status == 409 and problem["code"] == "already_dispensed"
    status, problem = await api.post(
        f"{RX}/{done['id']}/dispense", as_="pharmacist_chen", json=DISPENSE
    )
    assert status == 409 and problem["code"] == "already_dispensed"


async def test_bad_input_is_a_clear_problem_and_changes_nothing(api: Api, world: World) -> None:
    cases = [
        ([amlodipine(drug_code="X99ZZ99")], 422, "unknown_drug"),
        ([amlodipine(quantity=-2)], 422, "validation_failed"),
        ([amlodipine(quantity=100000)], 422, "validation_failed"),
        ([amlodipine(dose=0)], 422, "validation_failed"),
        ([amlodipine(drug_name="阿莫西林胶囊")], 422, "drug_mismatch"),
        ([amlodipine(strength="10mg")], 422, "drug_mismatch"),
        ([amlodipine(dose_unit="g")], 422, "drug_mismatch"),
        ([amlodipine(), amlodipine()], 422, "validation_failed"),
    ]
    for items, status_code, code in cases:
        status, problem = await api.post(RX, as_="dr_li", json=prescription(world, items=items))
        assert (status, problem["code"]) == (status_code, code), (items, problem)
    for pharmacy_id in (9999, world.qdsl):  # none, and a hospital that is not a pharmacy
        status, problem = await api.post(
            RX, as_="dr_li", json=prescription(world, pharmacy_id=pharmacy_id)
        )
        assert status == 404 and problem["code"] == "pharmacy_not_found"
    status, mine = await api.get(RX, as_="dr_li")
    assert mine["items"] == []

    rx = await sent(api, world)
    review = {"decision": "approve"}
    status, problem = await api.post(f"{RX}/{rx['id']}/review", as_="dr_wang", json=review)
    assert status == 403 and problem["code"] == "not_a_pharmacist"
    status, problem = await api.post(f"{RX}/{rx['id']}/review", as_="pharmacist_zhou", json=review)
    assert status == 403 and problem["code"] == "not_your_pharmacy"
    status, problem = await api.post(
        f"{RX}/{rx['id']}/review", as_="pharmacist_chen", json={"decision": "reject"}
    )
    assert status == 422
    status, problem = await api.post(
        f"{RX}/{rx['id']}/dispense", as_="pharmacist_chen", json=DISPENSE
    )
    assert status == 409 and problem["code"] == "invalid_status"
    status, problem = await api.post(
        f"{RX}/{rx['id']}/route", as_=PATIENT, json={"pharmacy_id": 9999}
    )
    assert status == 404 and problem["code"] == "pharmacy_not_found"
    status, problem = await api.get(f"{RX}/{rx['id']}", as_="patient_liu")
    assert status == 404
    status, problem = await api.get(f"{RX}/999999", as_="dr_li")
    assert status == 404
    assert await status_of(world, rx["id"]) == "sent"

    approved_rx = await approved(api, world)
    too_many = {"items": [{"drug_code": "C08CA01", "quantity": 5}]}
    status, problem = await api.post(
        f"{RX}/{approved_rx['id']}/dispense", as_="pharmacist_chen", json=too_many
    )
    assert status == 422 and problem["code"] == "over_prescribed_quantity"
    assert await status_of(world, approved_rx["id"]) == "approved"
