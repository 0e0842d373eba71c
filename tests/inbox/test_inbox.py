"""The inbox: notifications persisted with a sequence number, pushed, replayed, marked read."""

from __future__ import annotations

from server.container import Services
from tests.helpers import Api
from tests.scheduling.support import inbox_events, network_ids


async def _notify(services: Services, **kwargs: object) -> list[int]:
    async with services.db.transaction() as tx:
        return await services.inbox.notify(tx, **kwargs)  # type: ignore[arg-type]


async def test_notifications_reach_the_person_and_the_desk_only(
    api: Api, network: Services
) -> None:
    net = await network_ids(network)
    qdsl = net.institutions["QDSL"]
    dr_li, nurse_he, gp_zhang, dr_zhao = [
        await api.socket(name) for name in ("dr_li", "nurse_he", "gp_zhang", "dr_zhao")
    ]
    ids = await _notify(
        network,
        kind="test.hello",
        title="Hello",
        users=[net.users["gp_zhang"]],
        institutions=[qdsl],
        data={"n": 1},
    )
    assert len(ids) == 2
    for sock in (dr_li, nurse_he, gp_zhang):
        event = await sock.wait_for(lambda e: e["type"] == "inbox")
        assert event["op"] == "notification"
        assert event["data"]["kind"] == "test.hello"
        assert event["data"]["read"] is False
    assert (await dr_li.wait_for(lambda e: e["type"] == "inbox"))["stream"] == f"desk:{qdsl}"
    await dr_zhao.sync()
    assert inbox_events(dr_zhao) == []

    status, box = await api.get("/api/v1/inbox", as_="nurse_he")
    assert status == 200
    assert box["unread"] == 1
    [item] = box["items"]
    assert (item["kind"], item["stream"], item["read"]) == (
        "test.hello",
        f"desk:{qdsl}",
        False,
    )
    assert item["seq"] == (await dr_li.wait_for(lambda e: e["type"] == "inbox"))["seq"]

    # A desk colleague reads it: the desk's other members see it read.
    status, marked = await api.post(
        "/api/v1/inbox/read", as_="nurse_he", json={"ids": [item["id"]]}
    )
    assert (status, marked) == (200, {"ids": [item["id"]]})
    read = await dr_li.wait_for(lambda e: e["type"] == "inbox" and e["op"] == "read")
    assert read["data"] == {"ids": [item["id"]], "read_by": net.users["nurse_he"]}
    status, box = await api.get("/api/v1/inbox?unread=true", as_="dr_li")
    assert (box["unread"], box["items"]) == (0, [])
    # gp_zhang's own item is still unread for him, and not visible to the desk.
    status, box = await api.get("/api/v1/inbox", as_="gp_zhang")
    assert box["unread"] == 1
    assert [i["stream"] for i in box["items"]] == [f"user:{net.users['gp_zhang']}"]


async def test_marking_someone_elses_items_changes_nothing(api: Api, network: Services) -> None:
    net = await network_ids(network)
    [item_id] = await _notify(network, kind="x", title="private", users=[net.users["gp_zhang"]])
    status, marked = await api.post("/api/v1/inbox/read", as_="gp_liu", json={"ids": [item_id]})
    assert (status, marked) == (200, {"ids": []})
    status, box = await api.get("/api/v1/inbox", as_="gp_zhang")
    assert box["unread"] == 1
    status, _body = await api.post("/api/v1/inbox/read", as_="gp_liu", json={"ids": []})
    assert status == 422


async def test_an_offline_desk_catches_up_on_reconnect(api: Api, network: Services) -> None:
    net = await network_ids(network)
    qdsl = net.institutions["QDSL"]
    stream = f"desk:{qdsl}"
    first = await api.socket("dr_li")
    await _notify(network, kind="n", title="one", institutions=[qdsl])
    await first.wait_for(lambda e: e["type"] == "inbox")
    positions = dict(first.positions)
    await first.close()

    missed = []
    for title in ("two", "three", "four"):
        missed += await _notify(network, kind="n", title=title, institutions=[qdsl])

    again = await api.socket("dr_li")
    again.positions = dict(positions)
    ack = await again.sync()
    replayed = [e for e in ack["data"]["events"] if e["stream"] == stream]
    assert [e["data"]["title"] for e in replayed] == ["two", "three", "four"]
    assert [e["data"]["id"] for e in replayed] == missed
    seqs = [e["seq"] for e in replayed]
    assert seqs == list(range(positions[stream] + 1, positions[stream] + 4))
    assert ack["data"]["heads"][stream] == seqs[-1]

    # Marked read over the socket, acknowledged after commit.
    ack = await again.call("inbox.read", {"ids": missed})
    assert ack == {"ok": True, "data": {"ids": missed}}
    bad = await again.call("inbox.read", {"ids": "all"})
    assert bad["ok"] is False and bad["problem"]["status"] == 422
    _status, box = await api.get("/api/v1/inbox", as_="nurse_he")
    assert box["unread"] == 1  # "one" is still unread
