"""Redis and PostgreSQL outages under clinical traffic: slower delivery or 503s, never loss or 500s.

The traffic is consult chat (dr_li's and gp_zhang's tabs on both nodes, sending
with client ids) and prescriptions gp_zhang signs on one node for 海川大药房,
whose pharmacist has tabs on both nodes. The machine's PostgreSQL and Redis are
never stopped: Redis restarts are done on a redis-server of the test's own,
links are broken with a TCP proxy. Figures are printed; run with ``-s`` to read
them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from chaos.clients import (
    Clinic,
    Flow,
    Member,
    Pharmacy,
    chat_key,
    connect_all,
    delivery_key,
    enter_consult,
    open_clinic,
    prescribe,
    prescription_body,
    presence,
    report,
    request,
    send_chat,
    wait_until,
)
from chaos.faults import wait_for_redis
from chaos.proxy import TcpProxy
from server.cluster import LocalCluster, Process
from server.core.leases import JobLease
from server.prescriptions.models import Delivery, Prescription
from tests.cluster.conftest import MakeCluster
from tests.cluster.test_failover import assert_in_order

pytestmark = pytest.mark.integration

MakeProxy = Callable[[str, int], Awaitable[TcpProxy]]
PROBLEM = "application/problem+json"
CHATS = 45
RX_EVERY = 3  # a prescription every third chat message
OUTAGE = 4.0  # seconds PostgreSQL stays away (longer than DEAD_AFTER)
HEARTBEAT, DEAD_AFTER = 0.5, 3.0  # as in tests/cluster/conftest.py's node_env


class Ward:
    """The clinical clients of a two-node cluster: tabs on both nodes, doctor on node B."""

    def __init__(self, cluster: LocalCluster, clinic: Clinic) -> None:
        self.cluster = cluster
        self.clinic = clinic
        node_a, node_b = cluster.node_url(0), cluster.node_url(1)
        self.members = [
            Member(clinic, clinic.host, "dr_li"),
            Member(clinic, clinic.doctor, "gp_zhang"),
            Member(clinic, clinic.doctor, "gp_zhang"),
            Member(clinic, clinic.host, "dr_li"),
        ]
        self.pharmacies = [Pharmacy(clinic), Pharmacy(clinic)]
        self.urls = [node_a, node_b, node_a, node_b, node_a, node_b]
        self.chat = Flow("consult chat")
        self.rx = Flow("prescription delivery")

    @property
    def clients(self) -> list[Any]:
        return [*self.members, *self.pharmacies]

    async def __aenter__(self) -> Ward:
        await connect_all(self.clients, self.urls, [c.token for c in self.clients])
        await enter_consult(self.members)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.close()

    async def traffic(
        self, http: aiohttp.ClientSession, before_each: Callable[[int], Awaitable[None]]
    ) -> None:
        """Chat from every tab in turn, a prescription on node B every few messages."""
        for index in range(CHATS):
            await before_each(index)
            member = self.members[index % len(self.members)]
            await send_chat(member, f"chat-msg-{index:03d}", self.chat)
            if index % RX_EVERY == 0:
                await prescribe(http, self.cluster.node_url(1), self.clinic, index, self.rx)

    def figures(self) -> tuple[dict[str, int], dict[str, int]]:
        return (
            self.chat.tally(self.members, Member.chat, chat_key),
            self.rx.tally(self.pharmacies, Pharmacy.deliveries, delivery_key),
        )

    async def settle(self, timeout: float = 30) -> tuple[dict[str, int], dict[str, int]]:
        """Wait until every tab has every message and prescription; then check the figures."""
        await wait_until(
            lambda: all(f["lost"] == 0 for f in self.figures()),
            lambda: f"{self.figures()}",
            timeout,
        )
        chat, rx = self.figures()
        for figures in (chat, rx):
            assert figures["duplicated"] == 0, figures
            assert figures["received"] == figures["sent"] * figures["sockets"], figures
        assert_in_order(self.clients)
        return chat, rx

    def report(self, what: str) -> str:
        chat, rx = self.figures()
        gaps = sum(c.gaps for c in self.clients)
        return (
            f"\n{what}:\n{report('consult chat', chat)}\n{report('prescription delivery', rx)}\n"
            f"  gaps noticed and caught up by replay: {gaps}"
        )


async def test_redis_restart_mid_traffic_loses_nothing(
    node_env: dict[str, str], make_cluster: MakeCluster, private_redis: Process
) -> None:
    env = dict(node_env, YIHAO_REDIS_URL=f"redis://127.0.0.1:{private_redis.port}/0")
    cluster = await make_cluster(env, nodes=2)
    resubscribed = 0.0

    async def redis_down_then_up(index: int) -> None:
        nonlocal resubscribed
        if index == 15:
            private_redis.signal(9)
            assert private_redis.popen is not None
            private_redis.popen.wait(5)
        if index == 25:
            private_redis.start()
            await wait_for_redis(private_redis)
            back = time.monotonic()
            # Both listeners subscribe again (python-socketio's retry loop): /readyz says so.
            for member in cluster.members:
                await cluster.wait_ready(member, timeout=60)
            resubscribed = time.monotonic() - back

    async with aiohttp.ClientSession() as http:
        clinic = await open_clinic(http, cluster.node_url(1))
        async with Ward(cluster, clinic) as ward:
            await asyncio.wait_for(ward.traffic(http, redis_down_then_up), 80)
            await ward.settle()
            assert all(c.connects == 1 for c in ward.clients)  # the sockets never dropped
            print(
                ward.report("Redis killed (-9) and restarted mid-traffic")
                + f"; both listeners subscribed again {resubscribed * 1000:.0f} ms after Redis "
                "was back"
            )


async def test_delay_and_reset_between_nodes_and_redis_lose_nothing(
    node_env: dict[str, str], make_cluster: MakeCluster, proxies: MakeProxy
) -> None:
    target = urlsplit(node_env["YIHAO_REDIS_URL"])
    link = await proxies(target.hostname or "127.0.0.1", target.port or 6379)
    env = dict(node_env, YIHAO_REDIS_URL=f"redis://127.0.0.1:{link.port}{target.path}")
    cluster = await make_cluster(env, nodes=2)

    async def slow_then_reset(index: int) -> None:
        if index == 10:
            link.delay = 0.2  # a slow link: pushes arrive late, still in order
        if index == 20:
            link.delay = 0.0
            await link.reset()  # every node's Redis connections reset at once (RST)
        if index == 30:
            for member in cluster.members:
                await cluster.wait_ready(member, timeout=60)

    async with aiohttp.ClientSession() as http:
        clinic = await open_clinic(http, cluster.node_url(1))
        async with Ward(cluster, clinic) as ward:
            await asyncio.wait_for(ward.traffic(http, slow_then_reset), 80)
            await ward.settle()
            print(
                ward.report(
                    f"Redis link delayed 200 ms, then reset ({link.connections} connections)"
                )
            )


async def wait_for_tick(database_url: str, job: str, tick: int, timeout: float = 30) -> None:
    """Wait until some node has run tick ``tick`` (or a later one) of a lease job."""
    engine = create_async_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            async with engine.connect() as conn:
                last = await conn.scalar(select(JobLease.tick).where(JobLease.name == job))
            if last is not None and last >= tick:
                return
            assert time.monotonic() < deadline, f"{job} at tick {last}, not {tick}"
            await asyncio.sleep(HEARTBEAT)  # polling the lease table, one tick at a time
    finally:
        await engine.dispose()


async def count_rows(database_url: str, key: str) -> tuple[int, int]:
    """Prescriptions with this Idempotency-Key, and their deliveries, in the database."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            prescriptions = await conn.scalar(
                select(func.count())
                .select_from(Prescription)
                .where(Prescription.idempotency_key == key)
            )
            deliveries = await conn.scalar(
                select(func.count())
                .select_from(Delivery)
                .join(Prescription, Prescription.id == Delivery.prescription_id)
                .where(Prescription.idempotency_key == key)
            )
    finally:
        await engine.dispose()
    return int(prescriptions or 0), int(deliveries or 0)


async def test_database_outage_gives_503_problems_and_retries_with_a_key_commit_once(
    node_env: dict[str, str], make_cluster: MakeCluster, proxies: MakeProxy
) -> None:
    target = make_url(node_env["YIHAO_DATABASE_URL"])
    link = await proxies(target.host or "127.0.0.1", target.port or 5432)
    url = target.set(host="127.0.0.1", port=link.port).render_as_string(hide_password=False)
    cluster = await make_cluster(dict(node_env, YIHAO_DATABASE_URL=url), nodes=2)
    node_a, node_b = cluster.node_url(0), cluster.node_url(1)
    key = "rx-pg-outage-0001"
    answers: list[tuple[int, Any]] = []

    async with aiohttp.ClientSession() as http:
        clinic = await open_clinic(http, node_b)
        async with Ward(cluster, clinic) as ward:
            await link.cut()
            outage = time.monotonic()
            # A plain request gets a problem, not a 500: 503, Retry-After, database_unavailable.
            async with http.get(
                f"{node_b}/api/v1/prescriptions",
                headers={"Authorization": f"Bearer {clinic.doctor}"},
            ) as response:
                assert response.status == 503, await response.text()
                assert response.content_type == PROBLEM
                assert response.headers["Retry-After"]
                assert (await response.json())["code"] == "database_unavailable"
            async with http.get(f"{node_a}/readyz") as response:
                assert response.status == 503
                checks = (await response.json(content_type=None))["checks"]
                assert checks["database"].startswith("unavailable")
            # A chat message sent now is refused with a 503 problem in the ack.
            ack = await ward.members[0].call(
                "consult.chat",
                {"consult_id": clinic.consult_id, "client_id": "chat-outage-01", "text": "?"},
            )
            assert not ack["ok"] and ack["problem"]["status"] == 503, ack

            # The doctor's client retries the prescription with one key through the outage;
            # the link comes back after three 503 answers and OUTAGE seconds: longer than a
            # node takes to be found dead, so every heartbeat is stale when it returns.
            restored_at = 0.0

            async def on_answer(status: int, body: Any) -> None:
                nonlocal restored_at
                answers.append((status, body))
                since = time.monotonic() - outage
                if not restored_at and sum(s == 503 for s, _ in answers) >= 3 and since > OUTAGE:
                    await link.restore()
                    restored_at = time.time()

            created, _ = await asyncio.gather(
                prescribe(http, node_b, clinic, 0, ward.rx, key=key, on_status=on_answer),
                send_chat(ward.members[0], "chat-outage-01", ward.chat, timeout=60),
            )
            recovered = time.monotonic() - outage
            assert {s for s, _ in answers[:-1]} == {503}, answers
            assert all(b["code"] == "database_unavailable" for _, b in answers[:-1])
            # The same key once more (a retry whose first answer was lost): the same prescription.
            status, again = await request(
                http,
                "POST",
                f"{node_b}/api/v1/prescriptions",
                clinic.doctor,
                json=prescription_body(clinic, 0),
                headers={"Idempotency-Key": key},
            )
            assert status == 201 and again["id"] == created["id"], again
            await ward.settle()
            for pharmacy in ward.pharmacies:
                delivered = [e for e in pharmacy.deliveries() if delivery_key(e) == created["id"]]
                assert len(delivered) == 1, delivered  # exactly one delivery per pharmacist tab
            assert await count_rows(node_env["YIHAO_DATABASE_URL"], key) == (1, 1)
            # Stale heartbeats after an outage are not taken for dead nodes: once a reaping
            # round has run after the nodes beat again, every tab is still present.
            after = int((restored_at + DEAD_AFTER + 2 * HEARTBEAT) // HEARTBEAT) + 1
            await wait_for_tick(node_env["YIHAO_DATABASE_URL"], "cluster.reap_nodes", after)
            assert len(await presence(ward.members[0])) == len(ward.members)
            print(
                ward.report(
                    f"PostgreSQL cut: {len(answers) - 1} prescription attempts answered 503 "
                    f"database_unavailable, committed once {recovered * 1000:.0f} ms after the cut"
                )
            )
