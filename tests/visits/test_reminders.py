"""Reminders of follow-up visits (诊疗信息推送): once, ``VISIT_REMINDER_MINUTES`` before an
accepted visit's time, in the app and on the outbound channel, never for a visit the doctor
has not accepted or one asked for "now"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from server.container import Services
from server.inbox.models import OutboundMessage
from tests.helpers import Api
from tests.prescriptions.conftest import PATIENT
from tests.visits.conftest import Case, doctor_id, visit_request

V = "/api/v1/visits"


async def _visit(api: Api, case: Case, at: datetime | None) -> dict[str, Any]:
    over: dict[str, Any] = {"doctor_id": await doctor_id(api)}
    if at is not None:
        over["preferred_at"] = at.isoformat()
    status, visit = await api.post(V, as_=PATIENT, json=visit_request(case, **over))
    assert status == 201, visit
    return visit  # type: ignore[no-any-return]


async def _reminders(api: Api) -> list[dict[str, Any]]:
    status, inbox = await api.get("/api/v1/inbox", as_=PATIENT)
    assert status == 200, inbox
    return [i for i in inbox["items"] if i["kind"] == "visit_reminder"]


async def test_an_accepted_visit_is_reminded_once(api: Api, case: Case, network: Services) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=10)
    later = datetime.now(UTC) + timedelta(hours=5)
    reminded = await _visit(api, case, soon)
    not_yet = await _visit(api, case, later)
    unaccepted = await _visit(api, case, soon)
    for visit in (reminded, not_yet):
        status, body = await api.post(f"{V}/{visit['id']}/accept", as_="dr_li")
        assert status == 200, body

    assert await network.visits.send_reminders() == 1
    items = await _reminders(api)
    assert [i["data"]["visit_id"] for i in items] == [reminded["id"]]
    assert items[0]["resource"] == f"Visit/{reminded['id']}"
    assert abs(datetime.fromisoformat(items[0]["data"]["start"]) - soon) < timedelta(seconds=1)
    # Outside the app too: a time, no clinical text (the complaint, the condition).
    async with network.db.read() as session:
        sent = list(
            await session.scalars(
                select(OutboundMessage).where(OutboundMessage.kind == "visit_reminder")
            )
        )
    assert sent, "the reminder goes out on the outbound channel"
    for message in sent:
        assert message.template_id == "YH_VISIT_REMIND"
        assert set(message.params) == {"time"} and "血压" not in message.params["time"]

    # Once: a second run reminds nobody again; the unaccepted visit never.
    assert await network.visits.send_reminders() == 0
    assert len(await _reminders(api)) == 1
    assert unaccepted["id"] not in [i["data"]["visit_id"] for i in await _reminders(api)]
