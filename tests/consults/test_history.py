"""A consult's steps on the one lifecycle: the one history answer, the audit entry, races."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from server.container import Services
from server.core.audit import AuditEvent
from tests.consults.conftest import new_consult
from tests.helpers import Api


async def test_history_is_the_shared_entry_with_the_consults_own_fields(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await new_consult(api, consult_case)
    url = f"/api/v1/consults/{consult['id']}"
    status, body = await api.post(url + "/decline", as_="dr_li", json={"reason": "本周出诊已满"})
    assert status == 200, body
    status, history = await api.get(url + "/history", as_="gp_zhang")
    assert status == 200, history
    requested, declined = history["items"]

    assert requested["from_status"] is None and requested["to_status"] == "requested"
    assert requested["actor_user_id"] == requested["actor_id"] == consult_case["gp_zhang"]
    assert requested["note"] == requested["details"]
    assert requested["details"]["consent"]["given_by"] == "guardian"

    assert (declined["from_status"], declined["to_status"]) == ("requested", "declined")
    assert declined["actor_user_id"] == declined["actor_id"] == consult_case["dr_li"]
    assert declined["reason"] == "本周出诊已满"
    assert declined["note"] == declined["details"] == {"reason": "本周出诊已满"}


async def test_openapi_names_one_history_schema(api: Api) -> None:
    status, doc = await api.get("/api/openapi.json")
    assert status == 200
    schemas = doc["components"]["schemas"]
    assert "HistoryEntry" in schemas and "HistoryList" in schemas
    assert "Transition" not in schemas and "History" not in schemas
    answer = doc["paths"]["/api/v1/consults/{consult_id}/history"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/HistoryList")


async def test_a_step_is_audited_with_where_it_went_and_its_note(
    backend: str, api: Api, consult_case: dict[str, Any], services: Services
) -> None:
    consult = await new_consult(api, consult_case)
    url = f"/api/v1/consults/{consult['id']}"
    status, body = await api.post(url + "/cancel", as_="gp_zhang", json={"reason": "病情好转"})
    assert status == 200 and body["status"] == "cancelled"
    async with services.db.read() as session:
        rows = list(
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.resource == f"Consult/{consult['id']}")
                .order_by(AuditEvent.seq)
            )
        )
    by_action = {row.action: row for row in rows}
    assert (
        by_action["consult.request"].details["invited_institution_id"]
        == (consult_case["inst_QDSL"])
    )
    cancel = by_action["consult.cancel"]
    assert cancel.actor_user_id == consult_case["gp_zhang"]
    assert cancel.details == {"from": "requested", "to": "cancelled", "reason": "病情好转"}


async def test_of_two_racing_answers_one_wins(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await new_consult(api, consult_case)
    url = f"/api/v1/consults/{consult['id']}"
    answers = await asyncio.gather(
        api.post(url + "/accept", as_="dr_li", json={}),
        api.post(url + "/decline", as_="dr_wang", json={"reason": "不在本专业"}),
    )
    assert sorted(status for status, _ in answers) == [200, 409]
    loser = next(body for status, body in answers if status == 409)
    assert loser["code"] == "invalid_transition"
    assert loser["status"] in ("accepted", "declined")
    status, history = await api.get(url + "/history", as_="gp_zhang")
    assert status == 200
    assert len(history["items"]) == 2  # the request and the one answer that won
