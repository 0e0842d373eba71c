"""Consult chat, as its one-read/one-write path must keep it: re-sends, refusals, attachments."""

from __future__ import annotations

from typing import Any

from server.container import Services
from tests.consults.conftest import scheduled_consult
from tests.helpers import Api


def said(events: list[dict[str, Any]], client_id: str) -> list[dict[str, Any]]:
    return [
        e for e in events if e["type"] == "consult.chat" and e["data"]["client_id"] == client_id
    ]


async def test_a_resend_answers_the_first_message_once(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    host = await api.socket("dr_li")
    gp = await api.socket("gp_zhang")
    first = await gp.call(
        "consult.chat", {"consult_id": cid, "client_id": "gp-once-01", "text": "一"}
    )
    assert first["ok"] and first["data"]["duplicate"] is False, first
    # The same client id again, even with another text: the first message, flagged.
    for text in ("一", "改过的"):
        again = await gp.call(
            "consult.chat", {"consult_id": cid, "client_id": "gp-once-01", "text": text}
        )
        assert again["ok"] and again["data"] == {
            "message_id": first["data"]["message_id"],
            "seq": first["data"]["seq"],
            "duplicate": True,
        }, again
    # Another sender's client id is his own: the same id from dr_li is a new message.
    other = await host.call(
        "consult.chat", {"consult_id": cid, "client_id": "gp-once-01", "text": "二"}
    )
    assert other["ok"] and other["data"]["duplicate"] is False, other
    assert other["data"]["seq"] == first["data"]["seq"] + 1

    reader = await api.socket("dr_li")
    reader.positions = {f"consult:{cid}": 0}
    await reader.sync()
    replayed = said(reader.events, "gp-once-01")
    assert [(e["data"]["sender_id"], e["data"]["text"]) for e in replayed] == [
        (consult["requester_id"], "一"),
        (consult["host_id"], "二"),
    ]
    assert replayed[0]["seq"] == first["data"]["seq"]
    assert replayed[0]["data"]["message_id"] == first["data"]["message_id"]


async def test_chat_is_refused_outside_an_open_consult_and_writes_nothing(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    gp = await api.socket("gp_zhang")
    ack = await gp.call(
        "consult.chat", {"consult_id": 999999, "client_id": "gp-none-01", "text": "?"}
    )
    assert ack["problem"]["status"] == 404, ack
    outsider = await api.socket("dr_zhao")
    ack = await outsider.call(
        "consult.chat", {"consult_id": cid, "client_id": "zhao-0001", "text": "hi"}
    )
    assert ack["problem"]["code"] == "not_a_participant", ack
    # An item that is not in the patient's shared record: refused by field.
    ack = await gp.call(
        "consult.chat",
        {
            "consult_id": cid,
            "client_id": "gp-bad-att1",
            "text": "见附件",
            "attachments": [{"resource_type": "Observation", "id": "999999"}],
        },
    )
    assert ack["problem"]["status"] == 422, ack
    assert ack["problem"]["errors"][0]["field"] == "attachments.0"

    status, body = await api.post(
        f"/api/v1/consults/{cid}/cancel", as_="gp_zhang", json={"reason": "病人已转院"}
    )
    assert status == 200 and body["status"] == "cancelled", body
    stream = f"consult:{cid}"
    head = (await network.events.heads([stream]))[stream]
    ack = await gp.call(
        "consult.chat", {"consult_id": cid, "client_id": "gp-late-01", "text": "晚了"}
    )
    assert ack["problem"]["code"] == "consult_not_open", ack
    assert (await network.events.heads([stream]))[stream] == head
