"""Failures of real processes behind nginx during consult chat and prescription delivery.

Clients reconnect through nginx to another node, catch up, and lose and repeat nothing.

Figures (events sent/received/duplicated, recovery time) are printed; run with
``-s`` to read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import aiohttp
import pytest
import socketio

from chaos.clients import (
    Flow,
    Member,
    Pharmacy,
    chat_key,
    delivery_key,
    enter_consult,
    open_clinic,
    prescribe,
    presence,
    report,
    send_chat,
    wait_until,
)
from tests.cluster.client import (
    PollingClient,
    ReconnectingClient,
    add_departments,
    login,
    place,
    platform_admin,
    socket_counts,
)
from tests.cluster.conftest import MakeCluster

pytestmark = pytest.mark.integration

CHATS = 40
PRESCRIPTIONS = 16
KILL_AT = 0.4  # of each flow: the node dies with both flows in mid-stream


def assert_exactly_once(clients: list[ReconnectingClient], names: list[str]) -> None:
    for client in clients:
        received = client.department_names()
        assert sorted(received) == sorted(names), "lost or duplicated events"
        seqs = [e["seq"] for e in client.events]
        assert seqs == sorted(set(seqs)), "events out of order or repeated"


def assert_in_order(clients: list[ReconnectingClient]) -> None:
    for client in clients:
        for stream in {e["stream"] for e in client.events}:
            seqs = [e["seq"] for e in client.events if e["stream"] == stream]
            assert seqs == sorted(set(seqs)), f"{stream} out of order or repeated"


async def test_kill_9_during_consult_chat_and_prescription_delivery(
    node_env: dict[str, str], make_cluster: MakeCluster
) -> None:
    """Participants and pharmacists spread by nginx over 3 nodes; the one holding both dies."""
    cluster = await make_cluster(node_env, nodes=3, nginx=True)
    chat, rx = Flow("consult chat"), Flow("prescription delivery")
    async with aiohttp.ClientSession() as http:
        clinic = await open_clinic(http, cluster.url)
        members: list[Member] = []
        pharmacies: list[Pharmacy] = []
        where: dict[int, int] = {}  # id(client) -> node index
        try:
            # Tabs of dr_li and gp_zhang in the consult, pharmacist_chen's on the queue, until
            # some node holds both a participant and a pharmacist (nginx spreads at random).
            while True:
                kind = len(members) + len(pharmacies)
                client: ReconnectingClient
                if kind % 3 == 2:
                    client = Pharmacy(clinic)
                    pharmacies.append(client)
                else:
                    token = clinic.host if len(members) % 2 == 0 else clinic.doctor
                    client = Member(clinic, token, "dr_li" if token == clinic.host else "gp_zhang")
                    members.append(client)
                where[id(client)] = await place(http, cluster, client, client.token)  # type: ignore[attr-defined]
                # A node to kill holds a participant and a pharmacist, and some participant
                # elsewhere stays to watch the presence of those that move.
                shared = {where[id(m)] for m in members} & {where[id(p)] for p in pharmacies}
                both = {n for n in shared if any(where[id(m)] != n for m in members)}
                if len(members) >= 4 and len(pharmacies) >= 2 and both:
                    break
                if len(members) + len(pharmacies) >= 24:
                    break
            assert both, "no node held a participant and a pharmacist with a participant elsewhere"
            await enter_consult(members)
            clients: list[ReconnectingClient] = [*members, *pharmacies]
            load = Counter(where.values())
            victim = max(both, key=lambda node: load[node])
            on_victim = [c for c in clients if where[id(c)] == victim]

            reached = [asyncio.Event(), asyncio.Event()]
            killed = asyncio.Event()
            killed_at = clean_at = 0.0
            ghosts = 0
            watcher = next(m for m in members if where[id(m)] != victim)

            async def watch_presence() -> None:
                """From the kill until every tab rejoined and no ghost is left in the presence."""
                nonlocal clean_at, ghosts
                while True:
                    rejoined = all(m.joined.is_set() for m in members) and all(
                        m.connects > 1 for m in members if where[id(m)] == victim
                    )
                    with contextlib.suppress(socketio.exceptions.SocketIOError, TimeoutError):
                        extra = len(await presence(watcher)) - len(members)
                        if rejoined:
                            ghosts = max(ghosts, extra)
                            if extra == 0:
                                clean_at = time.monotonic()
                                return
                    await asyncio.sleep(0.1)  # polling the room's presence, as a client would

            async def killer() -> None:
                nonlocal killed_at
                await asyncio.gather(*(e.wait() for e in reached))
                cluster.kill_node(victim)
                killed_at = time.monotonic()
                killed.set()
                # The reaping job finds the node dead after 3 s without a heartbeat.
                await asyncio.wait_for(watch_presence(), 30)

            async def talk() -> None:
                for index in range(CHATS):
                    if index == int(CHATS * KILL_AT):
                        reached[0].set()
                        await killed.wait()
                    await send_chat(members[index % len(members)], f"chat-msg-{index:03d}", chat)

            async def prescribe_all() -> None:
                for index in range(PRESCRIPTIONS):
                    if index == int(PRESCRIPTIONS * KILL_AT):
                        reached[1].set()
                        await killed.wait()
                    await prescribe(http, cluster.url, clinic, index, rx)

            await asyncio.wait_for(asyncio.gather(killer(), talk(), prescribe_all()), 60)

            def figures() -> tuple[dict[str, int], dict[str, int]]:
                return (
                    chat.tally(members, Member.chat, chat_key),
                    rx.tally(pharmacies, Pharmacy.deliveries, delivery_key),
                )

            await wait_until(
                lambda: figures()[0]["lost"] == 0 and figures()[1]["lost"] == 0,
                lambda: f"{figures()}",
            )
            chat_figures, rx_figures = figures()
            recovered = [c.recovered_at for c in on_victim]
            assert all(c.connects > 1 for c in on_victim)
            assert None not in recovered
            recovery = max(r - killed_at for r in recovered if r is not None)

            # Every tab joined the session again; the dead node's sockets left no ghost.
            present = await presence(watcher)
            assert Counter(p["user_id"] for p in present) == Counter(
                clinic.host_id if m.token == clinic.host else clinic.doctor_id for m in members
            )
            survivors = [m.url for i, m in enumerate(cluster.members) if i != victim]
            assert sum(await socket_counts(http, survivors)) == len(clients)
        finally:
            for c in [*members, *pharmacies]:
                await c.close()
    for figures_ in (chat_figures, rx_figures):
        assert figures_["lost"] == 0 and figures_["duplicated"] == 0, figures_
        assert figures_["received"] == figures_["sent"] * figures_["sockets"]
    assert len(set(rx.sent)) == PRESCRIPTIONS and len(set(chat.sent)) == CHATS
    assert_in_order(clients)
    print(
        f"\nkill -9 node {victim} of 3 behind nginx ({len(on_victim)} of {len(clients)} sockets "
        f"on it: {sum(isinstance(c, Member) for c in on_victim)} consult tabs, "
        f"{sum(isinstance(c, Pharmacy) for c in on_victim)} pharmacist tabs)\n"
        f"{report('consult chat', chat_figures)}\n"
        f"{report('prescription delivery', rx_figures)}\n"
        f"  recovery (kill to caught up, slowest socket) {recovery * 1000:.0f} ms; "
        f"presence ghosts of the dead node's tabs {ghosts}, reaped "
        f"{(clean_at - killed_at) * 1000:.0f} ms after the kill"
    )


async def test_long_polling_sessions_stick_to_one_node_through_nginx(
    node_env: dict[str, str], make_cluster: MakeCluster
) -> None:
    """Without sticky routing, the polls of one session would land on nodes that do not know it."""
    cluster = await make_cluster(node_env, nodes=3, nginx=True)
    names = [f"日间病房{i:02d}" for i in range(10)]
    async with aiohttp.ClientSession() as http:
        admin, qdsl = await platform_admin(http, cluster.url)
        token = await login(http, cluster.url, "admin_qdsl")
        clients = [PollingClient() for _ in range(3)]
        try:
            for client in clients:
                await client.connect(cluster.url, token)
                assert "yihao_route" in client.cookies()
            await add_departments(http, cluster.url, admin, qdsl, names)
            await asyncio.gather(*(c.wait_for_departments(names) for c in clients))
            assert_exactly_once(clients, names)
            assert all(c.connects == 1 and c.disconnected_at is None for c in clients)
            counts = await socket_counts(http, [m.url for m in cluster.members])
            assert sum(counts) == len(clients)
        finally:
            await asyncio.gather(*(c.close() for c in clients))


async def test_a_node_restarted_under_its_id_clears_the_presence_its_killed_self_left(
    node_env: dict[str, str], make_cluster: MakeCluster
) -> None:
    """The node is alive again at once under its stable id: only it can clear its ghosts."""
    cluster = await make_cluster(dict(node_env, YIHAO_NODE_ID="ward-7"), nodes=1)
    assert cluster.members[0].node_id == "ward-7/node0"  # YIHAO_NODE_ID: the ids' prefix
    async with aiohttp.ClientSession() as http:
        clinic = await open_clinic(http, cluster.url)
        host = Member(clinic, clinic.host, "dr_li")
        try:
            await host.connect(cluster.url, clinic.host)
            await host.start_from_heads()
            await enter_consult([host])
            assert len(await presence(host)) == 1
            cluster.kill_node(0)
            await cluster.restart_node(0)
            async with http.get(f"{cluster.node_url(0)}/readyz") as response:
                assert (await response.json())["node"] == "ward-7/node0"
            # The tab reconnects to the restarted node and joins again: one entry, no ghost.
            await asyncio.wait_for(host.joined.wait(), 30)
            assert host.connects == 2
            members = await presence(host)
            assert [m["user_id"] for m in members] == [clinic.host_id], members
        finally:
            await host.close()
