"""Patient messages outside the app: the outbox, the SMS and WeChat gateways, the opt-outs.

The gateways are a real aiohttp server started by the test (the shape of a template-SMS
API); the dispatch job is off here so each test sends exactly when it says so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select, update

from server.config import Settings, SettingsError
from server.container import Services
from server.core.db import utcnow
from server.inbox.models import OutboundMessage
from server.inbox.outbound import TEMPLATES, build_channels, render, template_for
from server.seed import PATIENTS
from tests.helpers import Api
from tests.scheduling.support import network_ids

SUN = next(p for p in PATIENTS if p.username == "patient_sun")
PREFS = "/api/v1/me/notification-preferences"
# What a lab result's in-app item may say, and what must never leave the app.
CLINICAL_TITLE = "血糖 12.3 mmol/L 偏高"
CLINICAL_DATA = {
    "diagnosis": "2型糖尿病",
    "value": "12.3 mmol/L",
    "start": "2026-12-08T09:30:00+08:00",
}


class Gateway:
    """SMS and WeChat gateways on one local server: what they received, failures on demand."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {"sms": [], "wechat": []}
        self.fail: dict[str, int] = {"sms": 0, "wechat": 0}
        self.fail_status = 503
        self.delay = 0.0
        self.server: Any = None

    async def handle(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        body = await request.json()
        self.received[channel].append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail[channel] > 0:
            self.fail[channel] -= 1
            return web.json_response({"error": "busy"}, status=self.fail_status)
        return web.json_response({"message_id": f"{channel}-{len(self.received[channel])}"})

    def url(self, channel: str) -> str:
        return str(self.server.make_url(f"/{channel}"))


@pytest.fixture
async def gateway(aiohttp_server: Callable[..., Any]) -> Gateway:
    gw = Gateway()
    app = web.Application()
    app.router.add_post("/{channel}", gw.handle)
    gw.server = await aiohttp_server(app)
    return gw


@pytest.fixture
async def settings(settings: Settings, gateway: Gateway) -> Settings:
    return settings.with_overrides(
        notify_channels=("log", "sms", "wechat"),
        notify_sms_url=gateway.url("sms"),
        notify_wechat_url=gateway.url("wechat"),
        notify_dispatch_seconds=0,
        notify_max_attempts=3,
        notify_retry_seconds=30,
        notify_send_timeout_seconds=0.5,
    )


async def notify_sun(services: Services, kind: str = "result_ready") -> int:
    net = await network_ids(services)
    async with services.db.transaction() as tx:
        [item_id] = await services.inbox.notify(
            tx,
            kind=kind,
            title=CLINICAL_TITLE,
            patients=[net.patients["patient_sun"]],
            resource="Observation/1",
            data=CLINICAL_DATA,
        )
    return item_id


async def outbound(services: Services, item_id: int) -> dict[str, OutboundMessage]:
    async with services.db.read() as session:
        rows = await session.scalars(
            select(OutboundMessage).where(OutboundMessage.inbox_item_id == item_id)
        )
        return {row.channel: row for row in rows}


async def test_a_patient_message_is_sent_once_on_every_channel(
    api: Api, network: Services, gateway: Gateway
) -> None:
    sun = await api.socket("patient_sun")
    item_id = await notify_sun(network)
    # Live in the app first: the inbox item on the patient's stream.
    event = await sun.wait_for(lambda e: e["type"] == "inbox")
    assert event["data"]["kind"] == "result_ready" and event["data"]["id"] == item_id
    rows = await outbound(network, item_id)
    assert {ch: r.status for ch, r in rows.items()} == {
        "log": "pending",
        "sms": "pending",
        "wechat": "pending",
    }

    assert await network.inbox.outbox.dispatch_due() == 3  # type: ignore[union-attr]
    assert gateway.received["sms"] == [
        {"phone": SUN.phone, "template_id": "YH_RESULT", "params": {}}
    ]
    [wechat] = gateway.received["wechat"]
    assert wechat["template_id"] == "YH_RESULT" and wechat["data"] == {}
    rows = await outbound(network, item_id)
    assert {ch: (r.status, r.attempts) for ch, r in rows.items()} == {
        "log": ("sent", 1),
        "sms": ("sent", 1),
        "wechat": ("sent", 1),
    }
    assert rows["sms"].provider_message_id == "sms-1"
    assert rows["log"].provider_message_id and rows["log"].provider_message_id.startswith("log-")

    # Dispatching again sends nothing: at most once.
    assert await network.inbox.outbox.dispatch_due() == 0  # type: ignore[union-attr]
    assert len(gateway.received["sms"]) == 1 and len(gateway.received["wechat"]) == 1


async def test_no_clinical_text_leaves_the_app(network: Services, gateway: Gateway) -> None:
    for kind in TEMPLATES:
        await notify_sun(network, kind)
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    assert len(gateway.received["sms"]) == len(TEMPLATES)
    for body in gateway.received["sms"] + gateway.received["wechat"]:
        text = json.dumps(body, ensure_ascii=False)
        for secret in (CLINICAL_TITLE, "糖尿病", "12.3", "mmol", "Observation"):
            assert secret not in text, (secret, body)
    # What the patient's phone shows: a title and where to look, with the time of a booking.
    texts = {
        b["template_id"]: render(b["template_id"], b["params"]) for b in gateway.received["sms"]
    }
    assert texts["YH_RESULT"] == "【一号通】您有一条新的检验报告，请在一号通查看。"
    assert texts["YH_BOOK_OK"] == "【一号通】您已预约成功，就诊时间12月8日 09:30。"
    assert texts["YH_PAID"] == "【一号通】您已成功支付—元。"
    found = template_for("payment_paid", {"amount_fen": 12345})
    assert found is not None and found[1] == {"amount": "123.45"}


async def test_a_failed_send_is_retried_later_and_sent_once(
    network: Services, gateway: Gateway
) -> None:
    gateway.fail["sms"] = 1
    item_id = await notify_sun(network)
    before = utcnow()
    assert await network.inbox.outbox.dispatch_due() == 2  # type: ignore[union-attr]
    sms = (await outbound(network, item_id))["sms"]
    assert (sms.status, sms.attempts, sms.last_error) == ("pending", 1, "sms gateway answered 503")
    # Backed off: not due on the next round.
    assert sms.next_attempt_at >= before + timedelta(seconds=29)
    assert await network.inbox.outbox.dispatch_due() == 0  # type: ignore[union-attr]
    assert len(gateway.received["sms"]) == 1

    await make_due(network, item_id)
    assert await network.inbox.outbox.dispatch_due() == 1  # type: ignore[union-attr]
    sms = (await outbound(network, item_id))["sms"]
    assert (sms.status, sms.attempts, sms.provider_message_id) == ("sent", 2, "sms-2")
    assert len(gateway.received["sms"]) == 2
    assert len(gateway.received["wechat"]) == 1  # the other channel was not sent again


async def test_a_gateway_that_keeps_failing_gives_up_after_the_attempts(
    network: Services, gateway: Gateway
) -> None:
    gateway.fail["wechat"] = 99
    item_id = await notify_sun(network)
    for _ in range(3):
        await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
        await make_due(network, item_id)
    wechat = (await outbound(network, item_id))["wechat"]
    assert (wechat.status, wechat.attempts) == ("failed", 3)
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    assert len(gateway.received["wechat"]) == 3


async def test_what_may_have_been_sent_is_never_sent_again(
    network: Services, gateway: Gateway
) -> None:
    # A gateway that answers too late may still have sent it: failed, not retried.
    gateway.delay = 1.0
    item_id = await notify_sun(network)
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    gateway.delay = 0.0
    rows = await outbound(network, item_id)
    for channel in ("sms", "wechat"):
        assert rows[channel].status == "failed", rows[channel].last_error
        assert "outcome unknown" in (rows[channel].last_error or "")
    # A refusal for good (4xx) is not retried either.
    gateway.fail["sms"], gateway.fail_status = 1, 400
    refused = await notify_sun(network)
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    sms = (await outbound(network, refused))["sms"]
    assert (sms.status, sms.attempts, sms.last_error) == ("failed", 1, "sms gateway answered 400")
    await make_due(network, item_id)
    await make_due(network, refused)
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    assert len(gateway.received["sms"]) == 2 and len(gateway.received["wechat"]) == 2


async def test_an_unreachable_gateway_is_tried_again(network: Services, gateway: Gateway) -> None:
    # The gateway is down: nothing listens, so it surely did not send; tried again later.
    await gateway.server.close()
    item_id = await notify_sun(network)
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    sms = (await outbound(network, item_id))["sms"]
    assert (sms.status, sms.attempts, sms.last_error) == ("pending", 1, "sms gateway unreachable")


def test_a_gateway_channel_without_its_url_stops_the_start(settings: Settings) -> None:
    for channel, key in (("sms", "NOTIFY_SMS_URL"), ("wechat", "NOTIFY_WECHAT_URL")):
        with pytest.raises(SettingsError, match=key):
            build_channels(
                settings.with_overrides(
                    notify_channels=(channel,), notify_sms_url="", notify_wechat_url=""
                )
            )


async def test_a_send_cut_off_by_a_dead_node_is_never_sent_twice(
    network: Services, gateway: Gateway
) -> None:
    item_id = await notify_sun(network)
    # A node claimed the SMS and died before it recorded the answer.
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.inbox_item_id == item_id, OutboundMessage.channel == "sms")
            .values(status="sending", attempts=1, next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    sms = (await outbound(network, item_id))["sms"]
    assert sms.status == "failed" and "outcome unknown" in (sms.last_error or "")
    assert gateway.received["sms"] == []


async def make_due(services: Services, item_id: int) -> None:
    async with services.db.transaction() as tx:
        await tx.session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.inbox_item_id == item_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


async def test_the_patients_opt_out_is_respected(
    api: Api, network: Services, gateway: Gateway
) -> None:
    status, prefs = await api.get(PREFS, as_="patient_sun")
    assert status == 200, prefs
    assert prefs["channels"] == ["log", "sms", "wechat"]
    result = next(k for k in prefs["kinds"] if k["kind"] == "result_ready")
    assert result == {
        "kind": "result_ready",
        "in_app": True,
        "outbound": {"log": True, "sms": True, "wechat": True},
    }
    status, prefs = await api.call(
        "PUT",
        PREFS,
        as_="patient_sun",
        json={"preferences": [{"kind": "result_ready", "channel": "sms", "enabled": False}]},
    )
    assert status == 200, prefs
    result = next(k for k in prefs["kinds"] if k["kind"] == "result_ready")
    assert result["outbound"] == {"log": True, "sms": False, "wechat": True}
    other = next(k for k in prefs["kinds"] if k["kind"] == "opinion_available")
    assert other["outbound"]["sms"] is True

    sun = await api.socket("patient_sun")
    item_id = await notify_sun(network)
    # Still in the app: in-app is always on.
    await sun.wait_for(lambda e: e["type"] == "inbox" and e["data"]["id"] == item_id)
    rows = await outbound(network, item_id)
    assert rows["sms"].status == "skipped_opt_out"
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    assert gateway.received["sms"] == []
    assert len(gateway.received["wechat"]) == 1

    # Opting out while a message waits stops it too.
    queued = await notify_sun(network)
    status, _ = await api.call(
        "PUT",
        PREFS,
        as_="patient_sun",
        json={"preferences": [{"kind": "result_ready", "channel": "wechat", "enabled": False}]},
    )
    assert status == 200
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    rows = await outbound(network, queued)
    assert rows["wechat"].status == "skipped_opt_out"
    assert len(gateway.received["wechat"]) == 1

    # Back on: sent again for the next one.
    status, _ = await api.call(
        "PUT",
        PREFS,
        as_="patient_sun",
        json={"preferences": [{"kind": "result_ready", "channel": "sms", "enabled": True}]},
    )
    assert status == 200
    await notify_sun(network)
    await network.inbox.outbox.dispatch_due()  # type: ignore[union-attr]
    assert len(gateway.received["sms"]) == 1


async def test_preferences_refuse_what_is_not_a_kind_or_a_channel(
    api: Api, network: Services
) -> None:
    cases = [
        ({"kind": "marketing", "channel": "sms", "enabled": False}, "preferences.0.kind"),
        ({"kind": "result_ready", "channel": "fax", "enabled": False}, "preferences.0.channel"),
    ]
    for change, field in cases:
        status, problem = await api.call(
            "PUT", PREFS, as_="patient_sun", json={"preferences": [change]}
        )
        assert status == 422, problem
        assert [e["field"] for e in problem["errors"]] == [field], problem
    status, problem = await api.call("PUT", PREFS, as_="patient_sun", json={"preferences": []})
    assert status == 422
    _, prefs = await api.get(PREFS, as_="patient_sun")
    assert all(all(k["outbound"].values()) for k in prefs["kinds"])  # nothing changed
    status, problem = await api.get(PREFS, as_="dr_li")
    assert status == 403 and problem["code"] == "not_a_patient", problem


async def test_only_patient_kinds_to_patients_go_out(network: Services) -> None:
    net = await network_ids(network)
    async with network.db.transaction() as tx:
        to_doctor = await network.inbox.notify(
            tx, kind="result_ready", title="x", users=[net.users["dr_li"]]
        )
        other_kind = await network.inbox.notify(
            tx, kind="care_request", title="x", patients=[net.patients["patient_sun"]]
        )
        by_account = await network.inbox.notify(
            tx, kind="visit_ready", title="x", users=[net.users["patient_sun"]]
        )
    assert await outbound(network, to_doctor[0]) == {}
    assert await outbound(network, other_kind[0]) == {}
    assert set(await outbound(network, by_account[0])) == {"log", "sms", "wechat"}


async def test_the_patients_messages_come_in_pages(api: Api, network: Services) -> None:
    ids = [await notify_sun(network) for _ in range(5)]
    status, page = await api.get("/api/v1/inbox?limit=2", as_="patient_sun")
    assert status == 200, page
    assert [i["id"] for i in page["items"]] == [ids[4], ids[3]]
    assert page["unread"] == 5 and page["next_before"] == ids[3]
    status, page = await api.get(f"/api/v1/inbox?limit=2&before={ids[3]}", as_="patient_sun")
    assert [i["id"] for i in page["items"]] == [ids[2], ids[1]]
    status, page = await api.get(f"/api/v1/inbox?limit=2&before={ids[1]}", as_="patient_sun")
    assert [i["id"] for i in page["items"]] == [ids[0]] and page["next_before"] is None
