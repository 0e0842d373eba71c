"""The consult room: join, lobby, presence, chat across a reconnect, signaling, refusals, opinion."""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import text

from server.core.signing import Signature, verify_signature
from tests.consults.conftest import scheduled_consult
from tests.helpers import Api, SocketClient


async def enter(
    api: Api, consult: dict[str, Any], gp_api: Api | None = None
) -> tuple[SocketClient, SocketClient]:
    """dr_li (host) opens the session; gp_zhang waits in the lobby and is admitted.

    With ``gp_api`` gp_zhang connects there (another node).
    """
    cid = consult["id"]
    host = await api.socket("dr_li")
    gp = await (gp_api or api).socket("gp_zhang")
    ack = await host.call("consult.join", {"consult_id": cid})
    assert ack["ok"] and ack["data"]["state"] == "joined", ack
    ack = await gp.call("consult.join", {"consult_id": cid})
    assert ack["ok"] and ack["data"]["state"] == "lobby", ack
    waiting = await host.wait_for(lambda e: e["type"] == "consult.lobby" and e["op"] == "waiting")
    assert waiting["data"]["user_id"] == consult["requester_id"]
    ack = await host.call("consult.admit", {"consult_id": cid, "user_id": consult["requester_id"]})
    assert ack["ok"], ack
    await gp.wait_for(lambda e: e["type"] == "consult.lobby" and e["op"] == "admitted")
    ack = await gp.call("consult.join", {"consult_id": cid})
    assert ack["ok"] and ack["data"]["state"] == "joined", ack
    assert {m["user_id"] for m in ack["data"]["members"]} == {
        consult["host_id"],
        consult["requester_id"],
    }
    return host, gp


def presence_log(sock: SocketClient) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = []
    sock.sio.on("presence", log.append)
    return log


def signal_log(sock: SocketClient) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = []
    sock.sio.on("signal", log.append)
    return log


async def test_join_lobby_admit_presence(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    host, gp = await enter(api, consult)
    status, body = await api.get(f"/api/v1/consults/{consult['id']}", as_="gp_zhang")
    assert status == 200
    assert body["status"] == "in_session"
    seen = presence_log(host)
    ack = await gp.call(
        "consult.media", {"consult_id": consult["id"], "camera": True, "mic": False}
    )
    assert ack["ok"], ack
    ack = await host.call("consult.presence", {"consult_id": consult["id"]})
    members = {m["user_id"]: m for m in ack["data"]["members"]}
    assert members[consult["requester_id"]]["camera"] is True
    assert members[consult["requester_id"]]["mic"] is False
    await gp.close()
    for _ in range(50):
        ack = await host.call("consult.presence", {"consult_id": consult["id"]})
        if len(ack["data"]["members"]) == 1:
            break
    assert [m["user_id"] for m in ack["data"]["members"]] == [consult["host_id"]]
    assert any(len(p["members"]) == 2 and any(m["camera"] for m in p["members"]) for p in seen)


async def test_reauthentication_before_a_session(
    backend: str, api: Api, consult_case: dict[str, Any], services: Any
) -> None:
    consult = await scheduled_consult(api, consult_case)
    host = await api.socket("dr_li")
    services.consults.room.reauth_seconds = 0  # the login no longer counts as fresh
    ack = await host.call("consult.join", {"consult_id": consult["id"]})
    assert not ack["ok"] and ack["problem"]["code"] == "reauth_required"
    ack = await host.call("consult.join", {"consult_id": consult["id"], "password": "wrong-pass"})
    assert not ack["ok"] and ack["problem"]["code"] == "reauth_failed"
    ack = await host.call("consult.join", {"consult_id": consult["id"], "password": "Yihao@2026"})
    assert ack["ok"] and ack["data"]["state"] == "joined", ack


async def test_guessing_at_the_reauthentication_locks_the_account(
    backend: str, api: Api, consult_case: dict[str, Any], services: Any
) -> None:
    consult = await scheduled_consult(api, consult_case)
    host = await api.socket("dr_li")
    join = {"consult_id": consult["id"]}
    for _ in range(services.settings.login_max_failures):
        ack = await host.call("consult.join", {**join, "password": "wrong-pass"})
        assert not ack["ok"] and ack["problem"]["code"] == "reauth_failed", ack
    # Locked like a login would be: the right password no longer helps, nor does a new login.
    ack = await host.call("consult.join", {**join, "password": "Yihao@2026"})
    assert not ack["ok"] and ack["problem"]["code"] == "account_locked", ack
    status, body = await api.call(
        "POST", "/api/v1/auth/login", json={"username": "dr_li", "password": "Yihao@2026"}
    )
    # The login does not say so (no oracle for locked accounts): the same 401 as a wrong password.
    assert status == 401 and body["code"] == "invalid_credentials"
    async with services.db.read() as session:
        rows = (
            await session.execute(
                text("SELECT reason FROM audit_events WHERE action = 'consult.reauth'")
            )
        ).all()
    assert [r.reason for r in rows].count("bad_credentials; locked") == 1


async def test_chat_survives_a_reconnect_without_loss_or_duplicates(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    host, gp = await enter(api, consult)

    def chat(e: dict[str, Any]) -> bool:
        return e["type"] == "consult.chat"

    sent: list[int] = []
    for n in range(3):
        ack = await gp.call(
            "consult.chat", {"consult_id": cid, "client_id": f"gp-msg-{n:04d}", "text": f"第{n}条"}
        )
        assert ack["ok"] and ack["data"]["duplicate"] is False, ack
        sent.append(ack["data"]["seq"])
    await host.wait_for(lambda e: chat(e) and e["seq"] == sent[-1])
    positions = dict(host.positions)
    await host.close()

    # While dr_li is away: more messages, one of them re-sent (same client id).
    for n in range(3, 6):
        ack = await gp.call(
            "consult.chat", {"consult_id": cid, "client_id": f"gp-msg-{n:04d}", "text": f"第{n}条"}
        )
        sent.append(ack["data"]["seq"])
    again = await gp.call(
        "consult.chat", {"consult_id": cid, "client_id": "gp-msg-0004", "text": "第4条"}
    )
    assert again["ok"] and again["data"] == {
        "message_id": again["data"]["message_id"],
        "seq": sent[4],
        "duplicate": True,
    }
    # An attachment from the patient's shared record.
    ack = await gp.call(
        "consult.chat",
        {
            "consult_id": cid,
            "client_id": "gp-attach-01",
            "text": "见化验",
            "attachments": [
                {"resource_type": "Observation", "id": str(consult_case["observation"])}
            ],
        },
    )
    assert ack["ok"], ack
    sent.append(ack["data"]["seq"])

    back = await api.socket("dr_li")  # the room provider puts him back in consult:<id>
    back.positions = positions
    await back.sync()
    replayed = [e for e in back.events if chat(e)]
    assert [e["seq"] for e in replayed] == sent[3:]
    assert [e["data"]["text"] for e in replayed] == ["第3条", "第4条", "第5条", "见化验"]
    assert replayed[-1]["data"]["attachments"][0]["display"] == "总胆固醇"
    # A second sync brings nothing new: each missed message arrived exactly once.
    again_ack = await back.sync()
    assert not [e for e in again_ack["data"]["events"] if chat(e)]
    assert len([e for e in back.events if chat(e)]) == 4


async def test_signaling_between_members_in_order(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid, gp_id = consult["id"], consult["requester_id"]
    host, gp = await enter(api, consult)
    received = signal_log(gp)
    offer = {"type": "offer", "sdp": "v=0\r\n"}
    ack = await host.call(
        "consult.signal", {"consult_id": cid, "to": gp_id, "kind": "offer", "data": offer}
    )
    assert ack["ok"] and ack["data"]["delivered"] == 1, ack
    for n in range(20):
        candidate = {"candidate": f"candidate:{n} 1 udp 1 10.0.0.1 {5000 + n} typ host"}
        # Sent without waiting for acks: the server handles them concurrently.
        await host.sio.emit(
            "consult.signal",
            {"consult_id": cid, "to": gp_id, "kind": "candidate", "data": candidate},
        )
    ack = await host.call(
        "consult.signal", {"consult_id": cid, "to": gp_id, "kind": "bye", "data": {}}
    )
    assert ack["ok"], ack
    for _ in range(100):
        if received and received[-1]["kind"] == "bye":
            break
        await gp.call("consult.presence", {"consult_id": cid})
    assert received[0]["data"] == offer and received[0]["from"] == consult["host_id"]
    assert [s["seq"] for s in received] == list(range(1, 23))
    assert [s["data"].get("candidate", "").split(" ")[0] for s in received[1:21]] == [
        f"candidate:{n}" for n in range(20)
    ]


async def test_outsiders_and_bad_input_are_refused_and_change_nothing(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    host, gp = await enter(api, consult)
    outsider = await api.socket("dr_zhao")
    for event, payload in [
        ("consult.open", {"consult_id": cid}),
        ("consult.join", {"consult_id": cid}),
        ("consult.chat", {"consult_id": cid, "client_id": "zhao-0001", "text": "hi"}),
        ("consult.presence", {"consult_id": cid}),
        (
            "consult.signal",
            {"consult_id": cid, "to": consult["host_id"], "kind": "offer", "data": {}},
        ),
    ]:
        ack = await outsider.call(event, payload)
        assert not ack["ok"] and ack["problem"]["status"] == 403, (event, ack)
    ack = await outsider.call("sync", {"positions": {f"consult:{cid}": 0}})
    assert ack["problem"]["code"] == "not_a_member"

    # Signaling to someone outside the session; forged sender; malformed; oversized.
    ack = await host.call(
        "consult.signal",
        {"consult_id": cid, "to": consult_case["dr_zhao"], "kind": "offer", "data": {}},
    )
    assert ack["problem"]["code"] == "recipient_not_in_room"
    ack = await gp.call(
        "consult.chat",
        {
            "consult_id": cid,
            "client_id": "forged-0001",
            "text": "x",
            "sender_id": consult["host_id"],
        },
    )
    assert ack["problem"]["status"] == 422 and ack["problem"]["errors"][0]["field"] == "sender_id"
    ack = await gp.call(
        "consult.signal",
        {"consult_id": cid, "to": consult["host_id"], "kind": "offer", "data": {}, "from": 1},
    )
    assert ack["problem"]["status"] == 422
    ack = await gp.call("consult.chat", "not an object")
    assert ack["problem"]["status"] == 400
    ack = await gp.call(
        "consult.chat", {"consult_id": cid, "client_id": "big-0001", "text": "字" * 4001}
    )
    assert ack["problem"]["status"] == 422
    ack = await gp.call(
        "consult.signal",
        {
            "consult_id": cid,
            "to": consult["host_id"],
            "kind": "offer",
            "data": {"sdp": "a" * 70000},
        },
    )
    assert ack["problem"]["status"] == 413
    # The connection survives, and nothing was written.
    await host.sync()
    assert not [e for e in host.events if e["type"] == "consult.chat"]
    ack = await gp.call(
        "consult.chat", {"consult_id": cid, "client_id": "still-ok-01", "text": "ok"}
    )
    assert ack["ok"], ack


async def test_signed_opinion_goes_into_the_patients_record_and_closes(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    _host, gp = await enter(api, consult)
    opinion = {
        "findings": "心电图示ST段压低",
        "diagnostic_opinion": "考虑稳定型心绞痛",
        "treatment_advice": "加用阿司匹林，完善冠脉CTA",
        "refer": True,
        "refer_note": "建议转诊心内科门诊",
    }
    status, body = await api.post(f"/api/v1/consults/{cid}/opinion", as_="gp_zhang", json=opinion)
    assert status == 403
    # The invited side reads the live record through the consult window.
    status, panel = await api.get(f"/api/v1/consults/{cid}/record", as_="dr_li")
    assert status == 200 and panel["live"]["access_reason"] == "consult"
    status, body = await api.post(f"/api/v1/consults/{cid}/opinion", as_="dr_li", json=opinion)
    assert status == 201, body
    doc_id = body["document_id"]
    event = await gp.wait_for(lambda e: e["op"] == "opinion_written")
    assert event["data"]["document"] == f"DocumentReference/{doc_id}"

    status, timeline = await api.get(
        f"/api/v1/patients/{consult['patient_id']}/timeline?type=DocumentReference", as_="gp_zhang"
    )
    assert status == 200, timeline
    items = timeline["items"]
    assert [str(i["id"]) for i in items] == [doc_id]
    assert items[0]["institution"]["id"] == consult_case["inst_SNBDH"]

    status, stored = await api.get(f"/api/v1/consults/{cid}/opinion", as_="gp_zhang")
    assert stored["verified"] is True
    status, fhir = await api.get(f"/fhir/DocumentReference/{doc_id}", as_="gp_zhang")
    assert status == 200, fhir
    content = [json.loads(base64.b64decode(c["attachment"]["data"])) for c in fhir["content"]]
    assert content[0]["diagnostic_opinion"] == "考虑稳定型心绞痛"
    assert verify_signature(Signature.model_validate(content[1]), content[0])
    assert not verify_signature(Signature.model_validate(content[1]), content[0] | {"refer": False})

    status, body = await api.post(f"/api/v1/consults/{cid}/close", as_="gp_zhang")
    assert status == 200 and body["status"] == "closed"
    ack = await gp.call(
        "consult.chat", {"consult_id": cid, "client_id": "late-0001", "text": "谢谢"}
    )
    assert ack["problem"]["code"] == "consult_not_open"
    status, body = await api.get(f"/api/v1/consults/{cid}/record", as_="dr_li")
    assert status == 403 and body["code"] == "record_access_denied"
    status, body = await api.post(f"/api/v1/consults/{cid}/opinion", as_="dr_li", json=opinion)
    assert status == 409 and body["code"] == "invalid_transition"


async def test_a_flood_is_slowed_down_and_the_connection_survives(
    backend: str, api: Api, consult_case: dict[str, Any], services: Any
) -> None:
    from server.realtime.gateway import EventBudget

    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    _host, gp = await enter(api, consult)
    services.gateway.budget = EventBudget(5, per=60.0)  # a tight budget for this test
    acks = [
        await gp.call(
            "consult.chat", {"consult_id": cid, "client_id": f"flood-{n:04d}", "text": "!"}
        )
        for n in range(12)
    ]
    refused = [a for a in acks if not a["ok"]]
    assert refused and all(a["problem"]["status"] == 429 for a in refused)
    accepted = [a["data"]["seq"] for a in acks if a["ok"]]
    assert len(accepted) < 12
    services.gateway.budget = EventBudget(300, per=10.0)
    await gp.sync()
    chats = [e for e in gp.events if e["type"] == "consult.chat"]
    assert [e["seq"] for e in chats] == accepted  # only what was acked was written
    assert gp.sio.connected
