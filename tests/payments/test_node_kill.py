"""A node killed between the provider charging and us recording: nothing is lost, nothing doubled.

A real ``yihao serve`` process (SQLite file, or PostgreSQL + Redis) takes a patient's order;
the sandbox charges it and would notify 30 s later; the node is killed with SIGKILL before
that. The node comes back (with the reconciliation job on), asks the provider, and records
the payment: exactly one charge, one payment event, one inbox item. The notification the
killed node never sent, delivered late, finds it recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from server.config import load_settings
from server.payments.providers import NONCE, SIGNATURE, TIMESTAMP, sandbox_key, sign
from server.seed import DEMO_PASSWORD
from tests.cluster.conftest import MakeCluster, make_cluster, node_env  # noqa: F401 (fixtures)
from tests.conftest import SECRET, TEST_SETTINGS


@pytest.fixture
def kill_env(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, checkpoint_key_file: Path
) -> dict[str, str]:
    if backend == "postgres":
        env = dict(request.getfixturevalue("node_env"))
    else:
        env = {
            "YIHAO_DATA_DIR": str(tmp_path / "data"),
            "YIHAO_SECRET_KEY": SECRET,
            "YIHAO_ARGON2_TIME_COST": "1",
            "YIHAO_ARGON2_MEMORY_KIB": "64",
            "YIHAO_LOG_LEVEL": "WARNING",
            "YIHAO_CHECKPOINT_KEY_FILE": str(checkpoint_key_file),
        }
    # The first life of the node: the notification waits 30 s, and no reconciliation runs.
    env["YIHAO_PAYMENTS_SANDBOX"] = "true"
    env["YIHAO_PAYMENTS_SANDBOX_NOTIFY_DELAY_SECONDS"] = "30"
    env["YIHAO_PAYMENTS_RECONCILE_INTERVAL_SECONDS"] = "0"
    return env


def _database_url(env: dict[str, str]) -> str:
    return env.get("YIHAO_DATABASE_URL") or f"sqlite+aiosqlite:///{env['YIHAO_DATA_DIR']}/yihao.db"


async def _counts(env: dict[str, str], order_id: int, out_trade_no: str) -> dict[str, int]:
    engine = create_async_engine(_database_url(env))
    try:
        async with engine.connect() as conn:
            charges = await conn.scalar(
                sa.text("SELECT charges FROM payment_sandbox_trades WHERE out_trade_no = :t"),
                {"t": out_trade_no},
            )
            events = await conn.scalar(
                sa.text("SELECT count(*) FROM payment_events WHERE order_id = :o"), {"o": order_id}
            )
            items = await conn.scalar(
                sa.text("SELECT count(*) FROM inbox_items WHERE resource = :r"),
                {"r": f"Order/{order_id}"},
            )
    finally:
        await engine.dispose()
    return {"charges": int(charges or 0), "events": int(events or 0), "inbox": int(items or 0)}


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}}
    if body is not None:
        kwargs["json"] = body
    async with http.request(method, url, **kwargs) as response:
        return response.status, await response.json(content_type=None)


async def test_a_node_killed_after_the_charge_loses_nothing(
    kill_env: dict[str, str],
    make_cluster: MakeCluster,  # noqa: F811
) -> None:
    cluster = await make_cluster(kill_env, nodes=1, nginx=False)
    base = cluster.url
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/auth/login",
            json={"username": "patient_wang", "password": DEMO_PASSWORD},
        ) as r:
            token = (await r.json())["access_token"]  # fmt: skip
        status, slots = await _call(http, "GET", f"{base}/api/v1/slots?available=true", token)
        assert status == 200 and slots["items"], slots
        status, appointment = await _call(
            http, "POST", f"{base}/api/v1/appointments", token, {"slot_id": slots["items"][0]["id"]}
        )
        assert status == 201, appointment
        status, order = await _call(
            http, "POST", f"{base}/api/v1/orders", token,
            {"kind": "appointment", "subject_id": appointment["id"]},
        )  # fmt: skip
        assert status == 201, order
        status, paid = await _call(http, "POST", base + order["pay"]["pay_url"], token)
        assert (status, paid["state"]) == (200, "SUCCESS"), paid

        # The provider has charged; the node dies before its notification is handled.
        cluster.kill_node(0)
        assert await _counts(kill_env, order["id"], order["out_trade_no"]) == {
            "charges": 1, "events": 0, "inbox": 0,
        }  # fmt: skip

        # It comes back with reconciliation on: the provider is asked and the payment recorded.
        node = cluster.members[0]
        node.env.update(
            YIHAO_PAYMENTS_RECONCILE_INTERVAL_SECONDS="0.5",
            YIHAO_PAYMENTS_PENDING_SECONDS="1",
            YIHAO_PAYMENTS_SANDBOX_NOTIFY_DELAY_SECONDS="0.2",
        )
        node.start()
        await cluster.wait_ready(node)
        deadline = time.monotonic() + 30
        while True:
            status, current = await _call(http, "GET", f"{base}/api/v1/orders/{order['id']}", token)
            assert status == 200, current
            if current["status"] == "paid":
                break
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.2)
        assert current["provider_trade_no"] == paid["transaction_id"]
        assert await _counts(kill_env, order["id"], order["out_trade_no"]) == {
            "charges": 1, "events": 1, "inbox": 1,
        }  # fmt: skip

        # The notification the killed node never sent arrives after all: recorded once.
        settings = load_settings(environ={}, secret_key=SECRET, data_dir=Path("."),
                                 **{k: v for k, v in TEST_SETTINGS.items() if k != "secret_key"})  # fmt: skip
        body = json.dumps({
            "id": "late", "event_type": "TRANSACTION.SUCCESS",
            "resource": {"out_trade_no": order["out_trade_no"],
                         "transaction_id": paid["transaction_id"], "trade_state": "SUCCESS",
                         "amount": {"total": order["amount_fen"], "currency": "CNY"}},
        }).encode()  # fmt: skip
        timestamp, nonce = str(int(time.time())), "late-nonce"
        headers = {"Content-Type": "application/json", TIMESTAMP: timestamp, NONCE: nonce,
                   SIGNATURE: sign(sandbox_key(settings), timestamp, nonce, body)}  # fmt: skip
        async with http.post(
            f"{base}/api/v1/payments/notify/sandbox", data=body, headers=headers
        ) as response:
            late = await response.json()  # fmt: skip
        assert (response.status, late["duplicate"], late["status"]) == (200, True, "paid")
        assert await _counts(kill_env, order["id"], order["out_trade_no"]) == {
            "charges": 1, "events": 1, "inbox": 1,
        }  # fmt: skip
