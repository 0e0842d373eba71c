"""Two nodes sharing PostgreSQL and Redis: participants on different nodes share one room."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.app import create_app
from server.config import Settings
from tests.consults.conftest import scheduled_consult
from tests.consults.test_room import enter, signal_log
from tests.helpers import Api

pytestmark = pytest.mark.integration


@pytest.fixture
async def node_b(aiohttp_client: Any, settings: Settings) -> AsyncIterator[Api]:
    """A second server process's app: same database, same Redis channel."""
    client = await aiohttp_client(create_app(settings))
    helper = Api(client)
    yield helper
    await helper.close()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_participants_on_two_nodes_share_chat_presence_and_signaling(
    backend: str, api: Api, node_b: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    # dr_li on node A, gp_zhang on node B: the lobby and admission cross nodes.
    host, gp = await enter(api, consult, gp_api=node_b)
    ack = await host.call("consult.presence", {"consult_id": cid})
    assert {m["user_id"] for m in ack["data"]["members"]} == {
        consult["host_id"],
        consult["requester_id"],
    }
    ack = await gp.call(
        "consult.chat", {"consult_id": cid, "client_id": "node-b-0001", "text": "B"}
    )
    assert ack["ok"], ack
    event = await host.wait_for(lambda e: e["type"] == "consult.chat")
    assert event["seq"] == ack["data"]["seq"] and event["data"]["text"] == "B"

    received = signal_log(host)
    for n in range(10):
        await gp.sio.emit(
            "consult.signal",
            {"consult_id": cid, "to": consult["host_id"], "kind": "candidate", "data": {"n": n}},
        )
    ack = await gp.call(
        "consult.signal", {"consult_id": cid, "to": consult["host_id"], "kind": "bye", "data": {}}
    )
    assert ack["ok"], ack
    for _ in range(200):
        if received and received[-1]["kind"] == "bye":
            break
        await host.call("consult.presence", {"consult_id": cid})
    assert [s["data"].get("n") for s in received] == [*range(10), None]
    assert [s["seq"] for s in received] == list(range(1, 12))
