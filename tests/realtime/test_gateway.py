"""The Socket.IO gateway as a client sees it: auth on connect, rooms, replay, acks, floods."""

from __future__ import annotations

import asyncio

import pytest
import socketio

from server.container import Services
from tests.helpers import Api, SocketClient


async def _connect_error(api: Api, auth: object) -> dict[str, object]:
    sio = socketio.AsyncClient(reconnection=False)
    refused: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()

    @sio.event
    async def connect_error(data: dict[str, object]) -> None:
        if not refused.done():
            refused.set_result(data)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(api.url, auth=auth, transports=["websocket"], wait_timeout=5)
    error = await asyncio.wait_for(refused, 5)
    assert error["message"] == error["data"]["detail"]  # type: ignore[index]
    return error["data"]  # type: ignore[return-value]


async def test_connection_without_a_valid_token_is_refused(api: Api, network: Services) -> None:
    assert (await _connect_error(api, None))["code"] == "unauthorized"
    assert (await _connect_error(api, {"token": "garbage"}))["code"] == "token_invalid"
    token = await api.login("dr_li")
    await api.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert (await _connect_error(api, {"token": token}))["code"] == "session_revoked"


async def test_sockets_sit_in_their_user_and_institution_rooms(api: Api, network: Services) -> None:
    # By role: clinicians also sit in their desk, pharmacists in their pharmacy's stream,
    # administrators in the institution stream only.
    for username, extra in (
        ("dr_li", "desk"),
        ("pharmacist_chen", "pharmacy"),
        ("admin_qdsl", None),
    ):
        sock = await api.socket(username)
        heads = (await sock.sync())["data"]["heads"]
        me = (await api.get("/api/v1/me", as_=username))[1]
        institution = me["institution"]["id"]
        expected = {f"user:{me['id']}", f"institution:{institution}"}
        if extra:
            expected.add(f"{extra}:{institution}")
        assert set(heads) == expected, username
    patient = await api.socket("patient_wang")
    patient_heads = (await patient.sync())["data"]["heads"]
    assert list(patient_heads) == [
        f"user:{(await api.get('/api/v1/me', as_='patient_wang'))[1]['id']}"
    ]


async def test_a_client_away_catches_up_in_order_once(api: Api, network: Services) -> None:
    sock = await api.socket("admin_qdsl")
    qdsl = (await api.get("/api/v1/me", as_="admin_qdsl"))[1]["institution"]["id"]
    stream = f"institution:{qdsl}"
    await sock.sync()
    await api.post(f"/api/v1/institutions/{qdsl}/departments", as_="admin", json={"name": "眼科"})
    await sock.wait_for(lambda e: e["data"].get("department", {}).get("name") == "眼科")
    await sock.close()
    for name in ("皮肤科", "口腔科", "康复医学科"):
        status, _ = await api.post(
            f"/api/v1/institutions/{qdsl}/departments", as_="admin", json={"name": name}
        )
        assert status == 201
    # Reconnect (a new connection, as after a network drop) with the positions kept.
    positions = dict(sock.positions)
    again = SocketClient()
    again.positions = positions
    await again.connect(api.url, await api.token("admin_qdsl"))
    api.sockets.append(again)
    ack = await again.sync()
    missed = [e["data"]["department"]["name"] for e in ack["data"]["events"]]
    assert missed == ["皮肤科", "口腔科", "康复医学科"]
    seqs = [e["seq"] for e in again.events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert again.positions[stream] == ack["data"]["heads"][stream]
    # Syncing again replays nothing.
    assert (await again.sync())["data"]["events"] == []


async def test_bad_payloads_get_a_problem_and_the_connection_survives(
    api: Api, network: Services
) -> None:
    sock = await api.socket("gp_zhang")
    ack = await sock.call("sync", "not an object")
    assert (ack["ok"], ack["problem"]["code"]) == (False, "bad_request")
    ack = await sock.call("sync", {"positions": {"user:1": "many"}, "extra": 1})
    assert ack["problem"]["code"] == "validation_failed"
    fields = {e["field"] for e in ack["problem"]["errors"]}
    assert fields == {"positions.user:1", "extra"}
    ack = await sock.call("sync", {"positions": {"institution:999": 0}})
    assert (ack["problem"]["status"], ack["problem"]["code"]) == (403, "not_a_member")
    ack = await sock.call("no.such.event", {"x": 1})
    assert ack["problem"]["code"] == "unknown_event"
    assert sock.sio.connected
    assert (await sock.sync())["ok"]


async def test_a_flooding_socket_is_slowed_without_hurting_others(
    aiohttp_client,
    settings,
    backend,  # type: ignore[no-untyped-def]
) -> None:
    from server.app import create_app
    from server.core.api import SERVICES
    from server.seed import seed_demo

    app = create_app(settings.with_overrides(socket_events_per_10s=20))
    api = Api(await aiohttp_client(app))
    await seed_demo(app[SERVICES])
    flooder = await api.socket("gp_zhang")
    calm = await api.socket("gp_liu")
    acks = await asyncio.gather(*(flooder.call("sync", {"positions": {}}) for _ in range(40)))
    refused = [a for a in acks if not a["ok"]]
    assert len(refused) >= 15
    assert {a["problem"]["code"] for a in refused} == {"too_many_requests"}
    assert flooder.sio.connected
    assert (await calm.call("sync", {"positions": {}}))["ok"]
    await api.close()
