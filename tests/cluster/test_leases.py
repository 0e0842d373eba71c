"""Background jobs across nodes: each tick runs on exactly one node, never two at once.

Two "nodes" here are two independent engines on the same database (SQLite
file or the PostgreSQL test database), each with its own lease holder, as two
server processes would be; the last test runs two whole apps from the real
factory, with the jobs the capabilities register.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.core.db import Database
from server.core.leases import JobFn, Jobs, Leases


@dataclass
class Ledger:
    """What the job saw: which node ran which tick, and how many ran at once."""

    runs: dict[int, list[str]] = field(default_factory=dict)
    running: int = 0
    most_at_once: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    wanted: int = 0

    def job(self, node: str) -> JobFn:
        async def run(tick: int) -> None:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            try:
                self.runs.setdefault(tick, []).append(node)
                # Yield to the loop a few times, as a job doing I/O would, so that
                # the other node gets every chance to run concurrently.
                for _ in range(5):
                    await asyncio.sleep(0)
            finally:
                self.running -= 1
            if self.wanted and len(self.runs) >= self.wanted:
                self.enough.set()

        return run


@pytest.fixture
async def two_nodes(settings: Settings) -> AsyncIterator[tuple[Jobs, Jobs]]:
    databases = [Database(settings), Database(settings)]
    try:
        yield Jobs(Leases(databases[0], "node-a")), Jobs(Leases(databases[1], "node-b"))
    finally:
        for db in databases:
            await db.dispose()


async def test_each_tick_runs_on_exactly_one_node(two_nodes: tuple[Jobs, Jobs]) -> None:
    ledger = Ledger()
    node_a, node_b = two_nodes
    node_a.every("retention", 60, ledger.job("a"))
    node_b.every("retention", 60, ledger.job("b"))
    for tick in range(1, 31):
        ran = await asyncio.gather(
            node_a.run_tick("retention", tick), node_b.run_tick("retention", tick)
        )
        assert sorted(ran) == [False, True]
    assert sorted(ledger.runs) == list(range(1, 31))
    assert all(len(nodes) == 1 for nodes in ledger.runs.values())
    assert ledger.most_at_once == 1
    # A tick already run is never run again, on either node.
    assert not await node_a.run_tick("retention", 30)
    assert not await node_b.run_tick("retention", 12)


async def test_a_live_lease_blocks_the_other_node_until_it_expires(
    two_nodes: tuple[Jobs, Jobs],
) -> None:
    node_a, node_b = two_nodes
    ledger = Ledger()
    node_b.every("escalation", 60, ledger.job("b"))
    # Node A claims tick 1 and dies mid-run: its lease is never released.
    assert await node_a.leases.claim("escalation", 1, ttl=0.3)
    assert not await node_b.run_tick("escalation", 2)
    await asyncio.sleep(0.35)  # the lease's time to live is what is under test
    assert await node_b.run_tick("escalation", 3)
    assert ledger.runs == {3: ["b"]}


async def test_scheduled_jobs_on_two_nodes_share_the_ticks(two_nodes: tuple[Jobs, Jobs]) -> None:
    ledger = Ledger(wanted=8)
    node_a, node_b = two_nodes
    node_a.every("outbox.relay", 0.05, ledger.job("a"))
    node_b.every("outbox.relay", 0.05, ledger.job("b"))
    node_a.start()
    node_b.start()
    try:
        await asyncio.wait_for(ledger.enough.wait(), timeout=10)
    finally:
        await node_a.stop()
        await node_b.stop()
    assert all(len(nodes) == 1 for nodes in ledger.runs.values())
    assert ledger.most_at_once == 1


APP_JOBS = {
    "cluster.reap_nodes",
    "auth.idle_logoff",
    "audit.checkpoint",
    "referrals.expire",
    "consults.escalate",
    "prescriptions.expire",
    "prescriptions.relay",
    "idempotency.purge",
    "notify.dispatch",
    "booking.reminders",
    "booking.no_shows",
    "visits.reminders",
    "payments.reconcile_pending",
}


@pytest.fixture
async def two_apps(aiohttp_client: Any, settings: Settings) -> list[Services]:
    """Two running apps from the real factory on one database: two nodes of a cluster."""
    fast = settings.with_overrides(
        referral_expiry_interval_seconds=1,
        consult_escalation_interval_seconds=1,
        prescription_sweep_seconds=1,
        node_heartbeat_seconds=1,
        session_check_seconds=1,
        checkpoint_interval_seconds=1,
        idempotency_purge_interval_seconds=1,
        notify_dispatch_seconds=1,
        booking_job_interval_seconds=1,
        visit_job_interval_seconds=1,
        payments_reconcile_interval_seconds=1,
    )
    apps = [create_app(fast), create_app(fast)]
    for app in apps:
        await aiohttp_client(app)  # started: its heartbeat and job loops run
    return [app[SERVICES] for app in apps]


async def test_the_apps_background_jobs_run_once_per_round_across_nodes(
    backend: str, two_apps: list[Services]
) -> None:
    """Expiry, escalation, the outbox relay and node reaping: one node per round, none skipped."""
    node_a, node_b = (s.jobs for s in two_apps)
    assert set(node_a.jobs) == set(node_b.jobs) == APP_JOBS
    assert node_a.leases.holder != node_b.leases.holder

    def rounds(name: str) -> tuple[set[int], set[int]]:
        return set(node_a.ran.get(name, ())), set(node_b.ran.get(name, ()))

    deadline = asyncio.get_running_loop().time() + 30
    while not all(len(a | b) >= 4 for a, b in map(rounds, APP_JOBS)):
        assert asyncio.get_running_loop().time() < deadline, {n: rounds(n) for n in APP_JOBS}
        await asyncio.sleep(0.1)  # the jobs run on the wall clock's one-second rounds
    for name in APP_JOBS:
        a, b = rounds(name)
        assert not a & b, f"{name}: rounds {sorted(a & b)} ran on both nodes"
        ticks = sorted(a | b)
        assert ticks == list(range(ticks[0], ticks[-1] + 1)), f"{name}: a round was skipped"
