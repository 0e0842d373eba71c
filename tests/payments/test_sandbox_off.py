"""A deployment's default: no sandbox provider. With it a patient would "pay" without paying,
so it is off unless asked for (`make demo` and the tests turn it on). Off, an order names the
missing provider and the sandbox's payer does not exist; nothing is written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from server.config import Settings, load_settings
from server.container import Services
from server.payments.models import Order
from tests.helpers import Api
from tests.payments.support import book


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(payments_sandbox=False)


async def _orders(services: Services) -> int:
    async with services.db.read() as session:
        return int(await session.scalar(select(func.count(Order.id))) or 0)


def test_the_sandbox_is_off_by_default() -> None:
    assert load_settings(environ={}, secret_key="s" * 40).payments_sandbox is False


async def test_without_the_sandbox_an_order_names_the_missing_provider(
    api: Api, network: Services
) -> None:
    appointment = await book(api, network)
    before = await _orders(network)
    status, problem = await api.post(
        "/api/v1/orders",
        as_="patient_wang",
        json={"kind": "appointment", "subject_id": appointment["id"]},
    )
    assert (status, problem["code"]) == (422, "payment_provider_unknown"), problem
    assert problem["errors"][0]["field"] == "provider"
    status, problem = await api.post("/api/v1/payments/sandbox/YH0000/pay", as_="patient_wang")
    assert (status, problem["code"]) == (404, "sandbox_disabled"), problem
    assert await _orders(network) == before
