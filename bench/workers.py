"""Every core of a machine: ``yihao serve --workers 1`` beside ``--workers <cores>``.

On PostgreSQL and Redis, in one run:

- the capacity of the authenticated ``GET /api/v1/me`` (the highest offered rate whose
  p99 stays within 50 ms, ``step_capacity``) with one worker and with one per core, the
  server's CPU per request (supervisor and workers summed), and the scaling factor;
- a Socket.IO delivery check across workers: clients put on every worker (each over a
  connection whose ``/readyz`` named that worker) in one institution room, a department
  added through a request served by another worker, and every client must receive the
  push (request → received latency).

The load generator runs on the same machine: on a 2-core box it takes a good share of
one core, so the scaling factor it reports is a floor; on a machine with cores to spare
for the generator (or with the generator elsewhere) it is the figure to quote.

Databases: ``--database-url`` (its public schema is dropped and recreated), else a
scratch database created from the admin URL ``YIHAO_TEST_DATABASE_URL`` and dropped
afterwards. Redis: ``--redis-url`` or ``YIHAO_TEST_REDIS_URL``; a channel of its own.

    PYTHONPATH=. python bench/workers.py [--workers 2] [--smoke] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Capacity,
    CpuMeter,
    Report,
    Row,
    Step,
    YihaoServer,
    add_common_arguments,
    login,
    percentile,
    step_capacity,
    wait_quiet,
)
from server.cluster import admin_sql
from server.workers import available_cores

BOUND_MS = 50.0
READY_TIMEOUT = 120.0


async def wait_workers(url: str, count: int) -> set[str]:
    """Ask ``/readyz`` over fresh connections until ``count`` different nodes answered."""
    seen: set[str] = set()
    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while len(seen) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sorted(seen)} of {count} workers answered")
            try:
                async with http.get(url + "/readyz", headers={"Connection": "close"}) as response:
                    if response.status == 200:
                        seen.add((await response.json())["node"])
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)  # a worker not listening yet cannot tell us
    return seen


@asynccontextmanager
async def pinned(url: str, node: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose single keep-alive connection is served by worker ``node``."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        async with http.get(url + "/readyz") as response:
            if (await response.json())["node"] == node:
                break
        await http.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no connection reached {node}")
    try:
        yield http
    finally:
        await http.close()


async def me_step(
    http: aiohttp.ClientSession, url: str, token: str, cpu: CpuMeter, rate: float, seconds: float
) -> Step:
    """Offer ``rate`` GET /api/v1/me a second for ``seconds`` (open loop: latency is counted
    from when a request was due, so a server that falls behind shows it)."""
    loop = asyncio.get_running_loop()
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=10)
    count = max(2, int(rate * seconds))
    latencies: list[float] = []
    lost = 0

    async def one(due: float) -> None:
        nonlocal lost
        await asyncio.sleep(max(0.0, due - loop.time()))
        try:
            async with http.get(url + "/api/v1/me", headers=headers, timeout=timeout) as response:
                await response.read()
                if response.status != 200:
                    lost += 1
                    return
        except (aiohttp.ClientError, TimeoutError):
            lost += 1
            return
        latencies.append(loop.time() - due)

    start = loop.time() + 0.05
    cpu.start()
    await asyncio.gather(*(one(start + i / rate) for i in range(count)))
    cpu.stop()
    elapsed = max(seconds, loop.time() - start)
    ms = sorted(v * 1000 for v in latencies)
    return Step(
        offered=rate,
        achieved=len(latencies) / elapsed,
        p50_ms=percentile(ms, 0.5),
        p99_ms=percentile(ms, 0.99),
        cpu_ms_per_op=cpu.per_op_ms(len(latencies)),
        lost=lost,
    )


async def me_capacity(server: YihaoServer, args: argparse.Namespace) -> Capacity:
    assert server.cpu is not None
    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        token = await login(http, server.url, "admin_qdsl")
        for _ in range(20):  # warm every worker's connections and caches
            async with http.get(
                server.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                await response.read()
        cpu = server.cpu

        async def run(rate: float) -> Step:
            return await me_step(http, server.url, token, cpu, rate, args.step_seconds)

        return await step_capacity(
            run, start=args.start_rate, bound_ms=BOUND_MS, smoke=args.smoke, growth=1.4
        )


async def delivery_check(
    server: YihaoServer, nodes: list[str], per_worker: int, pushes: int
) -> dict[str, Any]:
    """Clients on every worker in the QDSL institution room; pushes committed on the last."""
    expected = per_worker * len(nodes) * pushes
    arrived: dict[str, list[float]] = {}
    all_in = asyncio.Event()
    delivered = 0

    def on_event(envelope: dict[str, Any]) -> None:
        nonlocal delivered
        if envelope.get("op") == "department_added":
            arrived.setdefault(envelope["data"]["department"]["name"], []).append(time.monotonic())
            delivered += 1
            if delivered >= expected:
                all_in.set()

    async with AsyncExitStack() as stack, aiohttp.ClientSession() as http:
        admin_qdsl = await login(http, server.url, "admin_qdsl")
        for index in range(per_worker * len(nodes)):
            # Each client's websocket is opened on its session's one connection, on that worker.
            session = await stack.enter_async_context(pinned(server.url, nodes[index % len(nodes)]))
            sio = socketio.AsyncClient(reconnection=False, http_session=session)
            sio.on("event", on_event)
            await sio.connect(
                server.url, auth={"token": admin_qdsl}, transports=["websocket"], wait_timeout=10
            )
            stack.push_async_callback(sio.disconnect)
        on_last = await stack.enter_async_context(pinned(server.url, nodes[-1]))
        admin = await login(on_last, server.url, "admin")
        headers = {"Authorization": f"Bearer {admin}"}
        async with on_last.get(server.url + "/api/v1/institutions", headers=headers) as response:
            items = (await response.json())["items"]
        qdsl = next(item["id"] for item in items if item["code"] == "QDSL")
        sent: dict[str, float] = {}
        for i in range(pushes):
            name = f"跨进程科{uuid.uuid4().hex[:6]}{i}"
            sent[name] = time.monotonic()
            async with on_last.post(
                f"{server.url}/api/v1/institutions/{qdsl}/departments",
                json={"name": name},
                headers=headers,
            ) as response:
                if response.status != 201:
                    raise RuntimeError(f"department: {response.status} {await response.text()}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 30)
    latencies = [(t - sent[name]) * 1000 for name, times in arrived.items() for t in times]
    return {
        "clients": per_worker * len(nodes),
        "workers": len(nodes),
        "expected": expected,
        "delivered": delivered,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


@asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str]:
    if args.database_url:
        yield args.database_url
        return
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get("YIHAO_TEST_DATABASE_URL", "")
    if not admin_url:
        raise SystemExit("set --database-url or YIHAO_TEST_DATABASE_URL (PostgreSQL)")
    name = f"yihao_bench_wk_{uuid.uuid4().hex[:8]}"
    await admin_sql(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def measure(args: argparse.Namespace, workers: int, database_url: str) -> dict[str, Any]:
    print(f"yihao serve --workers {workers}…", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="yihao-bench-wk-") as data_dir:
        env = {"YIHAO_REDIS_CHANNEL": f"yihao-bench-wk-{uuid.uuid4().hex[:8]}"}
        server = YihaoServer(
            data_dir, database_url=database_url, redis_url=args.redis_url, workers=workers, env=env
        )
        async with server:
            nodes = sorted(await wait_workers(server.url, workers))
            wait_quiet(smoke=args.smoke)
            capacity = await me_capacity(server, args)
            delivery = await delivery_check(server, nodes, args.clients_per_worker, args.pushes)
    return {"workers": workers, "nodes": nodes, "capacity": capacity, "delivery": delivery}


def report(results: list[dict[str, Any]], smoke: bool) -> Report:
    one, many = results[0], results[-1]
    n = many["workers"]
    rep = Report("workers", f"Every core: yihao serve --workers 1 beside --workers {n}")
    cap1, capn = one["capacity"], many["capacity"]
    scaling = capn.rate / cap1.rate if cap1.rate else float("nan")

    def figure(result: dict[str, Any]) -> str:
        cap = result["capacity"]
        cpu = f", {cap.best.cpu_ms_per_op:.2f} ms CPU/req" if cap.best else ""
        return f"{cap.describe()} with --workers {result['workers']}{cpu}"

    rep.add(
        Row(
            workload=f"authenticated GET /api/v1/me capacity (p99 ≤ {BOUND_MS:g} ms), PostgreSQL + Redis",
            yihao=figure(many),
            peer=figure(one),
            target=f"scaling ≥ {0.8 * n:.1f}× ({n} cores)",
            # Unmeasured (a smoke run, one core, or a side that held no step): no verdict.
            met=None if smoke or n == 1 or not (cap1.rate and capn.rate) else scaling >= 0.8 * n,
            detail=f"scaling {scaling:.2f}×",
        )
    )
    for result in results:
        d = result["delivery"]
        rep.add(
            Row(
                workload=f"Socket.IO push across {d['workers']} workers (institution room)",
                yihao=(
                    f"{d['delivered']}/{d['expected']} delivered to {d['clients']} clients "
                    f"on {d['workers']} workers; p50 {d['p50_ms']:.1f} / p99 {d['p99_ms']:.1f} ms"
                ),
                target="every client receives",
                met=d["delivered"] == d["expected"],
            )
        )
    rep.notes.append(
        f"Scaling factor {scaling:.2f}× for {n} workers (capacity with {n} ÷ capacity with 1). "
        "The load generator runs on the same machine and takes CPU from the workers; "
        f"cores: {os.cpu_count()}, 1-minute load {os.getloadavg()[0]:.2f}."
    )
    return rep


async def run(args: argparse.Namespace) -> int:
    async with database(args) as database_url:
        results = []
        for workers in sorted({1, args.workers}):
            results.append(await measure(args, workers, database_url))
    rep = report(results, args.smoke)
    rep.write(args.json)
    delivery_ok = all(r["delivery"]["delivered"] == r["delivery"]["expected"] for r in results)
    return 0 if delivery_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=max(2, available_cores()))
    parser.add_argument("--database-url", help="PostgreSQL (emptied); else a scratch database")
    parser.add_argument("--redis-url", default=os.environ.get("YIHAO_TEST_REDIS_URL", ""))
    parser.add_argument("--start-rate", type=float, default=50.0)
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--clients-per-worker", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=10)
    add_common_arguments(parser)
    args = parser.parse_args()
    if not args.redis_url:
        print("set --redis-url or YIHAO_TEST_REDIS_URL", file=sys.stderr)
        return 2
    if args.smoke:
        args.workers, args.step_seconds, args.start_rate = 2, 1.0, 5.0
        args.clients_per_worker, args.pushes = 2, 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
