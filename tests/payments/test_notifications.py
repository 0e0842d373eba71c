"""Provider notifications: signature and amount checked, replays paid once, nothing half-written."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.core.audit import AuditEvent
from server.core.db import utcnow
from server.payments.models import Order
from server.payments.providers import NONCE, SIGNATURE, TIMESTAMP, ProviderTrade, sign
from tests.helpers import Api
from tests.payments.support import NOTIFY, book, counts, order, sandbox, trade, wait_status


async def _charged(api: Api, services: Services) -> tuple[dict, ProviderTrade]:  # type: ignore[type-arg]
    """An order the provider charged whose notification has not come (we send it ourselves)."""
    appointment = await book(api, services)
    created = await order(api, "patient_wang", appointment["id"])
    charged = await sandbox(services).charge(created["out_trade_no"])
    return created, charged


async def test_a_replayed_notification_pays_once(api: Api, network: Services) -> None:
    created, charged = await _charged(api, network)
    headers, body = sandbox(network).notification(charged)
    status, first = await api.post(NOTIFY, headers=headers, data=body)
    assert status == 200, first
    assert first == {"code": "SUCCESS", "order_id": created["id"], "status": "paid",
                     "duplicate": False}  # fmt: skip
    # The very same request again, and the same payment notified afresh (new nonce/time).
    status, again = await api.post(NOTIFY, headers=headers, data=body)
    assert (status, again["duplicate"], again["status"]) == (200, True, "paid")
    headers2, body2 = sandbox(network).notification(charged)
    status, third = await api.post(NOTIFY, headers=headers2, data=body2)
    assert (status, third["duplicate"]) == (200, True)
    assert await counts(network, created["id"], created["out_trade_no"]) == {
        "charges": 1, "events": 1, "inbox": 1,
    }  # fmt: skip


async def test_a_forged_notification_changes_nothing(api: Api, network: Services) -> None:
    created, charged = await _charged(api, network)
    headers, body = sandbox(network).notification(charged)
    forged = dict(headers, **{SIGNATURE: "0" * 64})
    status, problem = await api.post(NOTIFY, headers=forged, data=body)
    assert (status, problem["code"]) == (400, "payment_signature_invalid")
    # A body changed after signing (a larger amount, say) does not verify either.
    tampered = json.loads(body)
    tampered["resource"]["amount"]["total"] = 1
    status, problem = await api.post(NOTIFY, headers=headers, data=json.dumps(tampered))
    assert (status, problem["code"]) == (400, "payment_signature_invalid")
    # A stale timestamp is refused, however well signed with it the body was.
    stale = dict(headers, **{TIMESTAMP: str(int(headers[TIMESTAMP]) - 3600)})
    status, problem = await api.post(NOTIFY, headers=stale, data=body)
    assert (status, problem["code"]) == (400, "payment_signature_invalid")
    _, still = await api.get(f"/api/v1/orders/{created['id']}", as_="patient_wang")
    assert still["status"] == "created"
    assert (await counts(network, created["id"], created["out_trade_no"]))["events"] == 0
    async with network.db.read() as session:
        refusals = list(
            await session.scalars(
                select(AuditEvent.reason).where(AuditEvent.action == "payment.notify_refused")
            )
        )
    assert refusals == ["payment_signature_invalid"] * 3


async def test_a_wrong_amount_or_an_unknown_order_is_refused(api: Api, network: Services) -> None:
    created, charged = await _charged(api, network)
    headers, body = sandbox(network).notification(charged, amount_fen=1)
    status, problem = await api.post(NOTIFY, headers=headers, data=body)
    assert (status, problem["code"]) == (400, "payment_amount_mismatch")
    _, still = await api.get(f"/api/v1/orders/{created['id']}", as_="patient_wang")
    assert still["status"] == "created"
    assert (await counts(network, created["id"], created["out_trade_no"]))["events"] == 0

    unknown = ProviderTrade(out_trade_no="YHNOSUCHORDER", state="SUCCESS", amount_fen=3000,
                            transaction_id="SBT-unknown")  # fmt: skip
    headers, body = sandbox(network).notification(unknown)
    status, problem = await api.post(NOTIFY, headers=headers, data=body)
    assert (status, problem["code"]) == (404, "order_not_found")
    status, problem = await api.post("/api/v1/payments/notify/alipay", headers=headers, data=body)
    assert (status, problem["code"]) == (404, "payment_provider_unknown")
    # The right notification still pays it.
    headers, body = sandbox(network).notification(charged)
    status, paid = await api.post(NOTIFY, headers=headers, data=body)
    assert (status, paid["status"]) == (200, "paid")


async def test_reconciliation_records_a_charge_whose_notification_never_came(
    api: Api, network: Services
) -> None:
    created, charged = await _charged(api, network)
    # Too young: the notification may still be on its way; the job leaves it.
    assert await network.payments.reconcile_pending() == 0
    # Two minutes later (pending after payments_pending_seconds, 60 by default).
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(Order)
            .where(Order.id == created["id"])
            .values(created_at=utcnow() - timedelta(minutes=2))
        )
    assert await network.payments.reconcile_pending() == 1
    body = await wait_status(api, "patient_wang", created["id"], "paid")
    assert body["provider_trade_no"] == charged.transaction_id
    assert await network.payments.reconcile_pending() == 0
    # The late notification finds it recorded.
    headers, raw = sandbox(network).notification(charged)
    status, late = await api.post(NOTIFY, headers=headers, data=raw)
    assert (status, late["duplicate"]) == (200, True)
    assert await counts(network, created["id"], created["out_trade_no"]) == {
        "charges": 1, "events": 1, "inbox": 1,
    }  # fmt: skip
    assert (await trade(network, created["out_trade_no"])).state == "SUCCESS"


async def test_an_order_left_unpaid_is_closed(api: Api, network: Services) -> None:
    appointment = await book(api, network)
    created = await order(api, "patient_wang", appointment["id"])
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(Order)
            .where(Order.id == created["id"])
            .values(created_at=utcnow() - timedelta(hours=1))
        )
    assert await network.payments.reconcile_pending() == 1
    _, closed = await api.get(f"/api/v1/orders/{created['id']}", as_="patient_wang")
    assert closed["status"] == "closed"
    status, problem = await api.post(created["pay"]["pay_url"], as_="patient_wang")
    assert (status, problem["code"]) == (409, "order_not_payable")


async def test_a_signed_body_that_is_no_notification_is_refused(
    api: Api, network: Services
) -> None:
    created, _ = await _charged(api, network)
    body = b'{"event_type": "TRANSACTION.SUCCESS", "resource": {"amount": {"total": 1.5}}}'
    timestamp, nonce = str(int(time.time())), "n0nce"
    headers = {"Content-Type": "application/json", TIMESTAMP: timestamp, NONCE: nonce,
               SIGNATURE: sign(sandbox(network).key, timestamp, nonce, body)}  # fmt: skip
    status, problem = await api.post(NOTIFY, headers=headers, data=body)
    assert (status, problem["code"]) == (400, "payment_notification_malformed")
    _, still = await api.get(f"/api/v1/orders/{created['id']}", as_="patient_wang")
    assert still["status"] == "created"


async def test_a_flood_of_forged_notifications_writes_nothing_past_the_limit(
    aiohttp_client: Any, settings: Settings
) -> None:
    app = create_app(settings.with_overrides(payments_notify_refusals_per_minute=3))
    client = await aiohttp_client(app)
    forged = {"Content-Type": "application/json", SIGNATURE: "0" * 64, TIMESTAMP: "1", NONCE: "x"}
    statuses = []
    for _ in range(6):
        response = await client.post(NOTIFY, data=b"{}", headers=forged)
        statuses.append(response.status)
        problem = await response.json()
    assert statuses == [400, 400, 400, 429, 429, 429]
    assert problem["code"] == "rate_limited" and int(response.headers["Retry-After"]) >= 1
    async with app[SERVICES].db.read() as session:
        refusals = await session.scalar(
            select(func.count(AuditEvent.seq)).where(AuditEvent.action == "payment.notify_refused")
        )
    assert refusals == 3
