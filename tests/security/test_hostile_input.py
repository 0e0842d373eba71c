"""Regressions from fuzzing: values the database cannot hold are the client's 4xx, never a 500."""

from __future__ import annotations

import json

from sqlalchemy import select

from server.container import Services
from server.identity.models import User
from server.seed import PATIENTS
from tests.helpers import Api


async def test_an_id_beyond_any_row_is_not_found(api: Api, network: Services) -> None:
    for path in ("/api/v1/consults/99999999999999999999999", "/api/v1/prescriptions/2147483648"):
        status, body = await api.get(path, as_="gp_zhang")
        assert status == 404, body
        assert body["status"] == 404


async def test_a_huge_number_in_a_body_is_refused_as_out_of_range(
    api: Api, network: Services
) -> None:
    status, body = await api.post(
        "/api/v1/appointments", as_="patient_sun", json={"slot_id": 2**70}
    )
    assert status == 422, body
    assert body["code"] == "out_of_range"
    status, body = await api.post("/api/v1/inbox/read", as_="gp_zhang", json={"ids": [2**63 + 5]})
    assert status == 422, body


async def test_a_date_at_the_edge_of_the_calendar_is_refused(api: Api, network: Services) -> None:
    # 23:00 at UTC-12 on the last day of 9999 is in the year 10000 in UTC.
    status, body = await api.get(
        "/api/v1/slots", as_="patient_sun", params={"start_from": "9999-12-31T23:00:00-12:00"}
    )
    assert status == 422, body
    assert body["code"] == "out_of_range"


async def test_a_huge_number_in_a_socket_event_is_a_problem_in_the_ack(
    api: Api, network: Services
) -> None:
    sock = await api.socket("gp_zhang")
    ack = await sock.call("inbox.read", {"ids": [2**64]})
    assert ack["ok"] is False
    assert ack["problem"]["status"] == 422
    assert ack["problem"]["code"] == "out_of_range"
    assert sock.sio.connected


async def test_a_client_cannot_fire_the_servers_connect_or_disconnect(
    api: Api, network: Services
) -> None:
    # python-socketio hands a client's event named "connect" to the server's connect handler:
    # the socket signed in a second time (another user's rooms joined), or its presence torn
    # down while connected. Such events, and ones that are not [name, ...], get an ack.
    ws = await api.client.ws_connect("/socket.io/?EIO=4&transport=websocket")
    try:
        assert (await ws.receive_str(timeout=5)).startswith("0{")
        await ws.send_str("40" + json.dumps({"token": await api.token("gp_zhang")}))
        assert (await ws.receive_str(timeout=5)).startswith("40{")
        other = json.dumps({"token": await api.token("patient_sun")})
        for ack_id, packet in enumerate(
            ['["connect",{},' + other + "]", '["disconnect","client"]', "[]", '[["sync"]]', "{}"],
            start=1,
        ):
            await ws.send_str(f"42{ack_id}{packet}")
            answer = await ws.receive_str(timeout=5)
            assert answer.startswith(f"43{ack_id}["), (packet, answer)
            ack = json.loads(answer[len(f"43{ack_id}") :])[0]
            assert ack["ok"] is False and ack["problem"]["code"] == "unknown_event", (packet, ack)
        await ws.send_str('429["sync",{"positions":{}}]')
        answer = await ws.receive_str(timeout=5)
        heads = json.loads(answer[3:])[0]["data"]["heads"]
        sun = next(p for p in PATIENTS if p.username == "patient_sun")
        async with network.db.read() as session:
            sun_id = await session.scalar(select(User.id).where(User.username == sun.username))
        assert f"user:{sun_id}" not in heads, heads  # still gp_zhang's socket alone
    finally:
        await ws.close()
