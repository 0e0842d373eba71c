"""A follow-up visit as an order's subject (结算支付): the fee comes from the institution's
schedule, it is payable once accepted, and a visit cancelled or declined before its service
refunds its paid order (or closes an unpaid one), in the same transaction."""

from __future__ import annotations

from typing import Any

from tests.helpers import Api
from tests.payments.support import wait_status
from tests.prescriptions.conftest import PATIENT
from tests.visits.conftest import Case, doctor_id, visit_request

V = "/api/v1/visits"


async def _visit(api: Api, case: Case) -> dict[str, Any]:
    body = visit_request(case, doctor_id=await doctor_id(api))
    status, visit = await api.post(V, as_=PATIENT, json=body)
    assert status == 201, visit
    return visit  # type: ignore[no-any-return]


async def _order(api: Api, visit_id: int) -> tuple[int, dict[str, Any]]:
    return await api.post(
        "/api/v1/orders", as_=PATIENT, json={"kind": "visit", "subject_id": visit_id}
    )


async def test_an_accepted_visit_is_paid_and_its_cancellation_refunds(api: Api, case: Case) -> None:
    visit = await _visit(api, case)
    # Not yet accepted by the doctor: nothing to pay for, and no order is written.
    status, refused = await _order(api, visit["id"])
    assert status == 409 and refused["code"] == "subject_not_payable", refused
    _, mine = await api.get("/api/v1/orders", as_=PATIENT)
    assert all(o["kind"] != "visit" for o in mine["items"])

    status, body = await api.post(f"{V}/{visit['id']}/accept", as_="dr_li")
    assert status == 200, body
    status, order = await _order(api, visit["id"])
    assert status == 201, order
    assert order["kind"] == "visit" and order["subject_id"] == visit["id"]
    # The fee of the doctor's institution (QDSL, a tertiary hospital: 30 元), never the client's.
    assert order["amount_fen"] == 3000 and order["status"] == "created"
    await api.post(order["pay"]["pay_url"], as_=PATIENT)
    await wait_status(api, PATIENT, order["id"], "paid")

    status, body = await api.post(f"{V}/{visit['id']}/cancel", as_=PATIENT)
    assert status == 200 and body["status"] == "cancelled", body
    refunded = await wait_status(api, PATIENT, order["id"], "refunded")
    assert refunded["amount_fen"] == 3000


async def test_a_visit_cancelled_unpaid_closes_its_order(api: Api, case: Case) -> None:
    visit = await _visit(api, case)
    status, body = await api.post(f"{V}/{visit['id']}/accept", as_="dr_li")
    assert status == 200, body
    status, order = await _order(api, visit["id"])
    assert status == 201, order
    status, body = await api.post(f"{V}/{visit['id']}/cancel", as_=PATIENT)
    assert status == 200, body
    closed = await wait_status(api, PATIENT, order["id"], "closed")
    assert closed["status"] == "closed"
    # A closed visit takes no new order.
    status, refused = await _order(api, visit["id"])
    assert status == 409 and refused["code"] == "subject_not_payable", refused
