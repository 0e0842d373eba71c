"""Fan-out of institution events on 1, 2 and 3 nodes behind nginx (loopback, real processes).

    .venv/bin/python bench/cluster_fanout.py                 # 1, 2, 3 nodes
    .venv/bin/python bench/cluster_fanout.py --smoke         # a quick check that it runs
    .venv/bin/python bench/cluster_fanout.py --nodes 1,2 --clients 90 --events 300

Needs PostgreSQL and Redis: ``YIHAO_TEST_DATABASE_URL`` (an admin URL; a scratch
database is created and dropped) and ``YIHAO_TEST_REDIS_URL``.

Workload: ``--clients`` Socket.IO clients of QDSL (connected through nginx,
spread over the nodes by the sticky cookie hash) sit in the ``institution:QDSL``
room; ``--producers`` concurrent administrators add ``--events`` departments
through nginx. Every commit is one event pushed to every client, so deliveries =
events x clients. Reported per node count: commits/s, deliveries/s, the
commit-to-delivery latency p50/p99 (measured from the moment the request was
sent), events lost by pub/sub and caught up by ``sync``, and the scaling
factor against one node.

The benchmark client runs in one Python process on the same machine as the
nodes, nginx, PostgreSQL and Redis: on a 2-core machine every extra node
competes for the same two cores, so the scaling factor measures contention,
not what N machines would do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.cluster import LocalCluster, admin_sql, cluster_env
from server.core.checkpoints import generate_key_file
from server.seed import DEMO_PASSWORD

SECRET = "bench-secret-key-that-is-long-enough-0123456789"


async def login(http: aiohttp.ClientSession, url: str, username: str) -> str:
    async with http.post(
        f"{url}/api/v1/auth/login", json={"username": username, "password": DEMO_PASSWORD}
    ) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"login {username}: {body}")
        return str(body["access_token"])


class Deliveries:
    """Arrival times of each department event, by name, over all clients."""

    def __init__(self, expected: int) -> None:
        self.times: dict[str, list[float]] = {}
        self.count = 0
        self.expected = expected
        self.complete = asyncio.Event()

    def add(self, name: str) -> None:
        self.times.setdefault(name, []).append(time.perf_counter())
        self.count += 1
        if self.count >= self.expected:
            self.complete.set()


class Listener:
    """One QDSL client, recording what it receives."""

    def __init__(self, received: Deliveries) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received = received
        self.seen: set[str] = set()
        self.last_seq: dict[str, int] = {}
        self.sio.on("event", self.on_event)

    async def on_event(self, envelope: dict[str, Any]) -> None:
        if envelope["op"] != "department_added":
            return
        name = envelope["data"]["department"]["name"]
        if name not in self.seen:
            self.seen.add(name)
            self.received.add(name)
        self.last_seq[envelope["stream"]] = envelope["seq"]

    async def replayed(self, positions: dict[str, int]) -> int:
        """How many missed events ``sync`` brings back (pub/sub losses caught up)."""
        ack = await self.sio.call("sync", {"positions": positions}, timeout=30)
        names = {
            e["data"]["department"]["name"]
            for e in ack["data"]["events"]
            if e["op"] == "department_added"
        }
        return len(names - self.seen)


async def run_once(
    admin_url: str, redis_url: str, nodes: int, clients: int, events: int, producers: int
) -> dict[str, Any]:
    name = f"yihao_bench_{uuid.uuid4().hex[:8]}"
    await admin_sql(admin_url, f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    env = cluster_env(
        url,
        redis_url,
        SECRET,
        f"yihao-bench-{uuid.uuid4().hex[:8]}",
        argon2_memory_kib="64",
        argon2_time_cost="1",
        log_level="WARNING",
        # A benchmark client sends far more than a person would.
        socket_events_per_10s="100000",
        login_rate_per_minute="100000",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="yihao-bench-") as workdir:
            key = Path(workdir) / "checkpoint_key"
            generate_key_file(key)  # every node signs audit checkpoints with the same key
            env["YIHAO_CHECKPOINT_KEY_FILE"] = str(key)
            cluster = LocalCluster(env=env, workdir=Path(workdir), nodes=nodes, nginx=True)
            await cluster.run_cli("migrate")
            await cluster.run_cli("seed-demo")
            async with cluster:
                return await measure(cluster, clients, events, producers)
    finally:
        await admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def measure(
    cluster: LocalCluster, clients: int, events: int, producers: int
) -> dict[str, Any]:
    received = Deliveries(events * clients)
    sent: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=producers * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        admin = await login(http, cluster.url, "admin")
        member = await login(http, cluster.url, "admin_qdsl")
        async with http.get(
            f"{cluster.url}/api/v1/institutions", headers={"Authorization": f"Bearer {admin}"}
        ) as response:
            items = (await response.json())["items"]
        qdsl = next(i["id"] for i in items if i["code"] == "QDSL")
        listeners = [Listener(received) for _ in range(clients)]
        for listener in listeners:
            await listener.sio.connect(
                cluster.url, auth={"token": member}, transports=["websocket"], wait_timeout=10
            )
        heads = (await listeners[0].sio.call("sync", {"positions": {}}, timeout=10))["data"][
            "heads"
        ]
        names = [f"基准科室 {uuid.uuid4().hex[:6]} {i}" for i in range(events)]
        queue: asyncio.Queue[str] = asyncio.Queue()
        for item in names:
            queue.put_nowait(item)

        async def produce() -> None:
            headers = {"Authorization": f"Bearer {admin}"}
            while not queue.empty():
                item = queue.get_nowait()
                sent[item] = time.perf_counter()
                async with http.post(
                    f"{cluster.url}/api/v1/institutions/{qdsl}/departments",
                    json={"name": item},
                    headers=headers,
                ) as response:
                    if response.status != 201:
                        raise RuntimeError(f"{response.status}: {await response.text()}")

        started = time.perf_counter()
        await asyncio.gather(*(produce() for _ in range(producers)))
        committed = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(received.complete.wait(), 30)
        finished = time.perf_counter()
        delivered = received.count
        replayed = 0
        for listener in listeners:
            replayed += await listener.replayed(dict(heads))
        for listener in listeners:
            await listener.sio.disconnect()
    latencies = sorted(t - sent[n] for n, times in received.times.items() for t in times)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "nodes": cluster.nodes,
        "clients": clients,
        "events": events,
        "commits_per_s": round(events / (committed - started), 1),
        "deliveries_per_s": round(delivered / (finished - started), 1),
        "delivered_live": delivered,
        "expected": received.expected,
        "lost_live_then_replayed": replayed,
        "latency_p50_ms": round(quantiles[49] * 1000, 2),
        "latency_p99_ms": round(quantiles[98] * 1000, 2),
    }


COLUMNS = (
    ("nodes", "nodes", "{}"),
    ("clients", "clients", "{}"),
    ("events", "events", "{}"),
    ("commits/s", "commits_per_s", "{:.1f}"),
    ("deliveries/s", "deliveries_per_s", "{:.1f}"),
    ("p50 ms", "latency_p50_ms", "{:.1f}"),
    ("p99 ms", "latency_p99_ms", "{:.1f}"),
    ("live/expected", None, "{delivered_live}/{expected}"),
    ("by sync", "lost_live_then_replayed", "{}"),
    ("scaling", "scaling", "{:.2f}x"),
)


def table(results: list[dict[str, Any]], producers: int, smoke: bool) -> str:
    """The figures as a plain-text table, with what they mean under it."""
    rows = [[title for title, _, _ in COLUMNS]]
    for result in results:
        rows.append(
            [
                fmt.format(**result) if key is None else fmt.format(result[key])
                for _, key, fmt in COLUMNS
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    cores = os.cpu_count()
    lines += [
        "",
        f"cluster fan-out{' (SMOKE run: tiny, the figures mean nothing)' if smoke else ''}: "
        f"{producers} producers commit institution events through nginx; each is pushed to "
        "every client (deliveries = events x clients).",
        "commits/s: committed events per second; deliveries/s: events received by clients per "
        "second; p50/p99: from sending the request to a client receiving the event; "
        "live/expected: pushes received; by sync: missed pushes a client got back by replay; "
        "scaling: deliveries/s against the first row.",
        f"machine: {cores} CPU cores shared by the benchmark client, nginx, every node, "
        "PostgreSQL and Redis: on 2 cores more nodes add contention, not capacity, so the "
        "scaling factor is CPU-bound here and says nothing about N machines.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="tiny run: 1 and 2 nodes")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    admin_url = os.environ.get("YIHAO_TEST_DATABASE_URL", "")
    redis_url = os.environ.get("YIHAO_TEST_REDIS_URL", "")
    if not admin_url or not redis_url:
        print("set YIHAO_TEST_DATABASE_URL and YIHAO_TEST_REDIS_URL", file=sys.stderr)
        return 2
    if args.smoke:
        args.nodes, args.clients, args.events, args.producers = "1,2", 6, 20, 2
    results = []
    for count in (int(n) for n in args.nodes.split(",")):
        print(f"running {count} node(s)…", file=sys.stderr, flush=True)
        result = asyncio.run(
            run_once(admin_url, redis_url, count, args.clients, args.events, args.producers)
        )
        results.append(result)
        base = results[0]["deliveries_per_s"]
        result["scaling"] = round(result["deliveries_per_s"] / base, 2) if base else 0.0
        print(json.dumps(result, ensure_ascii=False), file=sys.stderr, flush=True)
    print(table(results, args.producers, args.smoke))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
