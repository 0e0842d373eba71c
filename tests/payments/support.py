"""Shared by the payments tests: a booked appointment, its order, paying it, waiting."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from server.container import Services
from server.inbox.models import InboxItem
from server.payments.models import PaymentEvent, SandboxTrade
from server.payments.providers import ProviderTrade, SandboxProvider
from tests.helpers import Api
from tests.scheduling.support import network_ids

NOTIFY = "/api/v1/payments/notify/sandbox"


async def book(
    api: Api,
    services: Services,
    patient: str = "patient_wang",
    dept: tuple[str, str] = ("QDFY", "心内科"),
) -> dict[str, Any]:
    """The patient books the next free seeded slot of the department."""
    net = await network_ids(services)
    department = net.departments[dept]
    _, slots = await api.get(
        f"/api/v1/slots?department_id={department}&available=true", as_=patient
    )
    assert slots["items"], "the demo schedule has free slots"
    status, appointment = await api.post(
        "/api/v1/appointments", as_=patient, json={"slot_id": slots["items"][0]["id"]}
    )
    assert status == 201, appointment
    return appointment  # type: ignore[no-any-return]


async def order(api: Api, patient: str, appointment_id: int) -> dict[str, Any]:
    status, body = await api.post(
        "/api/v1/orders", as_=patient, json={"kind": "appointment", "subject_id": appointment_id}
    )
    assert status == 201, body
    return body  # type: ignore[no-any-return]


async def wait_status(
    api: Api, patient: str, order_id: int, status: str, timeout: float = 15
) -> dict[str, Any]:
    """Poll the order as the patient's page does until it has the status."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        code, body = await api.get(f"/api/v1/orders/{order_id}", as_=patient)
        assert code == 200, body
        if body["status"] == status:
            return body  # type: ignore[no-any-return]
        assert asyncio.get_running_loop().time() < deadline, f"order is {body['status']}"
        await asyncio.sleep(0.1)


def sandbox(services: Services) -> SandboxProvider:
    assert services.payments.sandbox is not None
    return services.payments.sandbox


async def trade(services: Services, out_trade_no: str) -> ProviderTrade:
    found = await sandbox(services).query_order(out_trade_no)
    assert found is not None
    return found


async def counts(services: Services, order_id: int, out_trade_no: str) -> dict[str, int]:
    """Charges at the provider, payment events recorded, payment inbox items of the order."""
    async with services.db.read() as session:
        charges = await session.scalar(
            select(SandboxTrade.charges).where(SandboxTrade.out_trade_no == out_trade_no)
        )
        events = await session.scalar(
            select(func.count(PaymentEvent.id)).where(PaymentEvent.order_id == order_id)
        )
        items = await session.scalar(
            select(func.count(InboxItem.id)).where(InboxItem.resource == f"Order/{order_id}")
        )
    return {"charges": int(charges or 0), "events": int(events or 0), "inbox": int(items or 0)}
