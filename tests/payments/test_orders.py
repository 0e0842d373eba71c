"""Fees and orders (结算支付): the fee schedule decides the amount, the sandbox pays, refunds."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from server.container import Services
from server.core.db import utcnow
from server.scheduling.models import Slot
from tests.helpers import Api
from tests.payments.support import book, counts, order, wait_status
from tests.scheduling.support import network_ids


async def test_the_institution_admin_sets_fees_in_integer_fen(api: Api, network: Services) -> None:
    net = await network_ids(network)
    qdsl, qdfy = net.institutions["QDSL"], net.institutions["QDFY"]
    status, fees = await api.get(f"/api/v1/institutions/{qdfy}/fees", as_="patient_wang")
    assert status == 200
    lines = {(f["kind"], f["department_id"]): f["amount_fen"] for f in fees["items"]}
    assert lines[("appointment", None)] == 2500
    assert lines[("appointment", net.departments[("QDFY", "心内科")])] == 3000

    cardio = net.departments[("QDSL", "心内科")]
    schedule = {"items": [{"kind": "appointment", "amount_fen": 2000},
                          {"kind": "appointment", "department_id": cardio, "amount_fen": 5000},
                          {"kind": "visit", "amount_fen": 3500}]}  # fmt: skip
    status, body = await api.call("PUT", f"/api/v1/institutions/{qdsl}/fees", "admin_qdsl",
                                  json=schedule)  # fmt: skip
    assert status == 200, body
    assert [(f["kind"], f["department_id"], f["amount_fen"]) for f in body["items"]] == [
        ("appointment", None, 2000), ("appointment", cardio, 5000), ("visit", None, 3500),
    ]  # fmt: skip
    _, again = await api.get(f"/api/v1/institutions/{qdsl}/fees", as_="dr_li")
    assert len(again["items"]) == 3

    # Fen are integers: no floats, no negatives, no strings; nothing changes on a refusal.
    for bad, field in (
        ({"kind": "visit", "amount_fen": 12.5}, "items.0.amount_fen"),
        ({"kind": "visit", "amount_fen": -1}, "items.0.amount_fen"),
        ({"kind": "visit", "amount_fen": "100"}, "items.0.amount_fen"),
        ({"kind": "massage", "amount_fen": 100}, "items.0.kind"),
    ):
        status, problem = await api.call("PUT", f"/api/v1/institutions/{qdsl}/fees",
                                          "admin_qdsl", json={"items": [bad]})  # fmt: skip
        assert status == 422, problem
        assert problem["errors"][0]["field"] == field
    other = net.departments[("QDFY", "心内科")]
    status, problem = await api.call(
        "PUT", f"/api/v1/institutions/{qdsl}/fees", "admin_qdsl",
        json={"items": [{"kind": "visit", "department_id": other, "amount_fen": 1}]},
    )  # fmt: skip
    assert (status, problem["errors"][0]["field"]) == (422, "items.0.department_id")
    # Another institution's admin, and a doctor, may not set QDSL's fees.
    status, problem = await api.call("PUT", f"/api/v1/institutions/{qdfy}/fees", "admin_qdsl",
                                     json=schedule)  # fmt: skip
    assert (status, problem["code"]) == (403, "not_institution_admin")
    status, _ = await api.call("PUT", f"/api/v1/institutions/{qdsl}/fees", "dr_li", json=schedule)
    assert status == 403
    _, unchanged = await api.get(f"/api/v1/institutions/{qdsl}/fees", as_="dr_li")
    assert len(unchanged["items"]) == 3


async def test_a_patient_pays_a_booking_through_the_sandbox(api: Api, network: Services) -> None:
    appointment = await book(api, network)
    # The amount is the fee schedule's, never the client's.
    status, problem = await api.post(
        "/api/v1/orders", as_="patient_wang",
        json={"kind": "appointment", "subject_id": appointment["id"], "amount_fen": 1},
    )  # fmt: skip
    assert (status, problem["errors"][0]["field"]) == (422, "amount_fen")
    created = await order(api, "patient_wang", appointment["id"])
    assert (created["status"], created["amount_fen"]) == ("created", 3000)  # 心内科's own fee
    assert created["pay"]["pay_url"] == f"/api/v1/payments/sandbox/{created['out_trade_no']}/pay"
    assert created["pay"]["code"].isdigit()
    # Asking again answers the same order: one subject is paid once.
    again = await order(api, "patient_wang", appointment["id"])
    assert again["id"] == created["id"]
    # Another patient can neither order it, see it nor pay it.
    status, problem = await api.post(
        "/api/v1/orders", as_="patient_liu",
        json={"kind": "appointment", "subject_id": appointment["id"]},
    )  # fmt: skip
    assert (status, problem["code"]) == (404, "subject_not_found")
    status, _ = await api.get(f"/api/v1/orders/{created['id']}", as_="patient_liu")
    assert status == 404
    status, _ = await api.post(created["pay"]["pay_url"], as_="patient_liu")
    assert status == 404

    sock = await api.socket("patient_wang")
    status, paid = await api.post(created["pay"]["pay_url"], as_="patient_wang")
    assert (status, paid["state"]) == (200, "SUCCESS"), paid
    # The notification lands asynchronously; the patient's page sees the status change.
    body = await wait_status(api, "patient_wang", created["id"], "paid")
    assert body["provider_trade_no"] == paid["transaction_id"]
    assert body["pay"] is None and body["refundable"] is True
    event = await sock.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "payment_paid"
    )
    assert event["data"]["resource"] == f"Order/{created['id']}"
    assert event["data"]["data"]["amount_fen"] == 3000
    # Paying twice charges once.
    status, problem = await api.post(created["pay"]["pay_url"], as_="patient_wang")
    assert (status, problem["code"]) == (409, "order_not_payable")
    assert await counts(network, created["id"], created["out_trade_no"]) == {
        "charges": 1, "events": 1, "inbox": 1,
    }  # fmt: skip
    _, mine = await api.get("/api/v1/orders", as_="patient_wang")
    assert [o["id"] for o in mine["items"]] == [created["id"]]
    _, desk = await api.get("/api/v1/orders", as_="dr_zhao")  # QDFY's staff
    assert [o["id"] for o in desk["items"]] == [created["id"]]
    _, elsewhere = await api.get("/api/v1/orders", as_="dr_li")  # QDSL's
    assert elsewhere["items"] == []


async def test_two_orders_at_once_for_one_booking_are_one(api: Api, network: Services) -> None:
    appointment = await book(api, network)
    answers = await asyncio.gather(
        *(order(api, "patient_wang", appointment["id"]) for _ in range(4))
    )
    assert len({a["id"] for a in answers}) == 1
    assert len({a["out_trade_no"] for a in answers}) == 1


async def test_refunds_of_unpaid_and_paid_orders(api: Api, network: Services) -> None:
    appointment = await book(api, network)
    created = await order(api, "patient_wang", appointment["id"])
    status, problem = await api.post(f"/api/v1/orders/{created['id']}/refund", as_="patient_wang",
                                     json={})  # fmt: skip
    assert (status, problem["code"]) == (409, "order_not_paid")
    _, still = await api.get(f"/api/v1/orders/{created['id']}", as_="patient_wang")
    assert still["status"] == "created"

    await api.post(created["pay"]["pay_url"], as_="patient_wang")
    await wait_status(api, "patient_wang", created["id"], "paid")
    # Another institution's staff do not see the order.
    status, _ = await api.post(f"/api/v1/orders/{created['id']}/refund", as_="dr_li", json={})
    assert status == 404
    sock = await api.socket("patient_wang")
    status, refunded = await api.post(f"/api/v1/orders/{created['id']}/refund",
                                      as_="patient_wang", json={"reason": "改期"})  # fmt: skip
    assert status == 200, refunded
    assert (refunded["status"], refunded["refund_reason"]) == ("refunded", "改期")
    event = await sock.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "payment_refunded"
    )
    assert event["data"]["resource"] == f"Order/{created['id']}"
    status, problem = await api.post(f"/api/v1/orders/{created['id']}/refund",
                                     as_="patient_wang", json={})  # fmt: skip
    assert (status, problem["code"]) == (409, "order_already_refunded")
    assert (await counts(network, created["id"], created["out_trade_no"]))["events"] == 2
    # A refunded subject may be ordered (and paid) again.
    fresh = await order(api, "patient_wang", appointment["id"])
    assert fresh["id"] != created["id"] and fresh["status"] == "created"


async def test_cancelling_a_paid_appointment_refunds_it(api: Api, network: Services) -> None:
    appointment = await book(api, network)
    created = await order(api, "patient_wang", appointment["id"])
    await api.post(created["pay"]["pay_url"], as_="patient_wang")
    await wait_status(api, "patient_wang", created["id"], "paid")
    sock = await api.socket("patient_wang")
    status, cancelled = await api.post(
        f"/api/v1/appointments/{appointment['id']}/cancel", as_="patient_wang", json={}
    )
    assert (status, cancelled["status"]) == (200, "cancelled")
    body = await wait_status(api, "patient_wang", created["id"], "refunded")
    assert body["refund_reason"] == "appointment cancelled"
    await sock.wait_for(lambda e: e["type"] == "inbox" and e["data"]["kind"] == "payment_refunded")
    provider = await network.payments.sandbox.query_order(created["out_trade_no"])  # type: ignore[union-attr]
    assert provider is not None and (provider.state, provider.refunded_fen) == ("REFUND", 3000)
    # A cancelled appointment cannot be ordered again.
    status, problem = await api.post(
        "/api/v1/orders", as_="patient_wang",
        json={"kind": "appointment", "subject_id": appointment["id"]},
    )  # fmt: skip
    assert (status, problem["code"]) == (409, "subject_not_payable")


async def test_an_unpaid_order_closes_when_its_appointment_is_cancelled(
    api: Api, network: Services
) -> None:
    appointment = await book(api, network)
    created = await order(api, "patient_wang", appointment["id"])
    status, _ = await api.post(
        f"/api/v1/appointments/{appointment['id']}/cancel", as_="patient_wang", json={}
    )
    assert status == 200
    _, body = await api.get(f"/api/v1/orders/{created['id']}", as_="patient_wang")
    assert body["status"] == "closed" and body["pay"] is None


async def test_kinds_nobody_resolves_yet_and_unknown_providers_are_clear(
    api: Api, network: Services
) -> None:
    status, problem = await api.post(
        "/api/v1/orders", as_="patient_wang", json={"kind": "consult", "subject_id": 1}
    )
    assert (status, problem["code"]) == (422, "payment_kind_unsupported")
    assert problem["errors"][0]["field"] == "kind"
    appointment = await book(api, network)
    status, problem = await api.post(
        "/api/v1/orders", as_="patient_wang",
        json={"kind": "appointment", "subject_id": appointment["id"], "provider": "paypal"},
    )  # fmt: skip
    assert (status, problem["code"]) == (422, "payment_provider_unknown")
    status, problem = await api.post(
        "/api/v1/orders", as_="patient_wang", json={"kind": "appointment", "subject_id": 999999}
    )
    assert (status, problem["code"]) == (404, "subject_not_found")
    status, _ = await api.post(
        "/api/v1/orders", as_="dr_li", json={"kind": "appointment", "subject_id": appointment["id"]}
    )
    assert status == 403


async def test_after_the_visit_only_the_institution_refunds(api: Api, network: Services) -> None:
    appointment = await book(api, network)
    created = await order(api, "patient_wang", appointment["id"])
    await api.post(created["pay"]["pay_url"], as_="patient_wang")
    await wait_status(api, "patient_wang", created["id"], "paid")
    # The visit's time has come (the slot started an hour ago).
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(Slot)
            .where(Slot.id == appointment["slot"]["id"])
            .values(start=utcnow() - timedelta(hours=1))
        )
    _, body = await api.get(f"/api/v1/orders/{created['id']}", as_="patient_wang")
    assert (body["status"], body["refundable"]) == ("paid", False)
    status, problem = await api.post(f"/api/v1/orders/{created['id']}/refund",
                                     as_="patient_wang", json={})  # fmt: skip
    assert (status, problem["code"]) == (409, "order_served")
    # QDFY's desk may refund it (a doctor of another hospital may not even see it).
    _, desk = await api.get(f"/api/v1/orders/{created['id']}", as_="dr_zhao")
    assert desk["refundable"] is True
    status, refunded = await api.post(f"/api/v1/orders/{created['id']}/refund", as_="dr_zhao",
                                      json={"reason": "医院取消门诊"})  # fmt: skip
    assert (status, refunded["status"], refunded["refund_reason"]) == (
        200,
        "refunded",
        "医院取消门诊",
    )
    # dr_zhao's look is in the patient's access log.
    status, log = await api.get(
        f"/api/v1/patients/{created['patient_id']}/access-log", as_="patient_wang"
    )
    assert status == 200, log
    reads = [e for e in log["items"] if e["action"] == "payment.order_read"]
    assert [(e["user_name"], e["resources"]) for e in reads] == [("赵强", f"Order/{created['id']}")]


async def test_the_hospital_cancelling_the_slot_refunds_the_booking(
    api: Api, network: Services
) -> None:
    appointment = await book(api, network)
    created = await order(api, "patient_wang", appointment["id"])
    await api.post(created["pay"]["pay_url"], as_="patient_wang")
    await wait_status(api, "patient_wang", created["id"], "paid")
    status, _ = await api.post(
        f"/api/v1/slots/{appointment['slot']['id']}/cancel", as_="dr_zhao", json={"reason": "停诊"}
    )
    assert status == 200
    body = await wait_status(api, "patient_wang", created["id"], "refunded")
    assert body["refund_reason"] == "appointment cancelled"
    assert await counts(network, created["id"], created["out_trade_no"]) == {
        "charges": 1, "events": 2, "inbox": 2,
    }  # fmt: skip
