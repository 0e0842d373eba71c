"""What a client written from docs/realtime.md sees: the refusal codes of the consult room,
and the consult stream reaching its participants without ``consult.open``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.consults.conftest import new_consult, scheduled_consult
from tests.consults.test_room import enter
from tests.helpers import Api

OPINION = {
    "findings": "心电图未见急性改变",
    "diagnostic_opinion": "稳定型心绞痛可能",
    "treatment_advice": "加用他汀",
    "refer": False,
}


def refused(ack: dict[str, Any], code: str) -> None:
    assert not ack["ok"], ack
    assert ack["problem"]["status"] == 403 and ack["problem"]["code"] == code, ack


async def test_outsiders_are_not_participants_and_members_not_yet_in_session(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    outsider = await api.socket("dr_zhao")  # a specialist of another hospital
    gp = await api.socket("gp_zhang")  # the requester, not in the session yet
    signal = {"consult_id": cid, "to": consult["host_id"], "kind": "bye", "data": {}}
    media = {"consult_id": cid, "camera": True, "mic": True}

    refused(await outsider.call("consult.signal", signal), "not_a_participant")
    refused(await outsider.call("consult.media", media), "not_a_participant")
    refused(await outsider.call("consult.leave", {"consult_id": cid}), "not_a_participant")
    refused(
        await outsider.call("consult.admit", {"consult_id": cid, "user_id": 1}), "not_a_participant"
    )

    refused(await gp.call("consult.signal", signal), "not_in_session")
    refused(await gp.call("consult.media", media), "not_in_session")
    ack = await gp.call("consult.leave", {"consult_id": cid})
    assert ack["ok"] and ack["data"] == {"left": False}, ack
    refused(
        await gp.call("consult.admit", {"consult_id": cid, "user_id": consult["requester_id"]}),
        "not_host",
    )


async def test_a_member_in_session_leaves_it(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    _host, gp = await enter(api, consult)
    ack = await gp.call("consult.leave", {"consult_id": consult["id"]})
    assert ack["ok"] and ack["data"] == {"left": True}, ack


async def test_only_the_host_writes_the_opinion(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    _host, _gp = await enter(api, consult)
    url = f"/api/v1/consults/{consult['id']}/opinion"
    status, body = await api.post(url, as_="dr_zhao", json=OPINION)
    assert status == 403 and body["code"] == "not_a_participant", body
    status, body = await api.post(url, as_="gp_zhang", json=OPINION)
    assert status == 403 and body["code"] == "not_host", body
    status, body = await api.post(url, as_="dr_li", json=OPINION)
    assert status == 201, body


async def test_participants_hear_the_consult_stream_without_opening_it(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    # Everyone is connected before the consult exists (or before they take part in it).
    gp = await api.socket("gp_zhang")
    host = await api.socket("dr_li")
    colleague = await api.socket("dr_wang")
    consult = await new_consult(api, consult_case)
    cid, stream = consult["id"], f"consult:{consult['id']}"

    when = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    status, body = await api.post(
        f"/api/v1/consults/{cid}/accept", as_="dr_li", json={"scheduled_at": when}
    )
    assert status == 200, body
    # The requester: in the room since the request committed.
    await gp.wait_for(lambda e: e["stream"] == stream and e["op"] == "accepted")
    status, body = await api.post(
        f"/api/v1/consults/{cid}/participants",
        as_="dr_li",
        json={"user_id": consult_case["dr_wang"]},
    )
    assert status == 201, body

    ack = await gp.call(
        "consult.chat", {"consult_id": cid, "client_id": "gp-first-0001", "text": "您好"}
    )
    assert ack["ok"], ack
    for member in (host, colleague):  # the host since accepting, the colleague since invited
        event = await member.wait_for(lambda e: e["type"] == "consult.chat")
        assert event["stream"] == stream and event["data"]["text"] == "您好"
    # And a sync names the stream without a consult.open first.
    ack = await colleague.call("sync", {"positions": {stream: 0}})
    assert ack["ok"], ack
