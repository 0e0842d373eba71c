"""Benchmark: the fixed cost of one authenticated REST request, and passwords off the loop.

Three parts, one server each (``YihaoServer``: SQLite, or ``--database-url``):

1. **Fixed cost.** Authenticated ``GET /api/v1/me`` (many tokens over several demo
   accounts) beside its peer ``GET /healthz`` (no auth, no database), each stepped
   (``step_capacity``): capacity at p99 ≤ 50 ms, server CPU ms per request, and the ratio.
2. **Login interference** (default argon2 costs, as in production): ``/healthz`` p99 at a
   steady rate alone, then while 10 logins a second run.
3. **Users created at once** (default argon2): N ``POST /api/v1/users`` at the same moment
   through the admin API all succeed (no ``503 database_unavailable``).
4. **A write with and without an ``Idempotency-Key``** (``server/core/idempotency.py``):
   the patient's ``PUT …/consents/{CODE}`` (a consent row, an audit entry), each request
   with a fresh key beside the same write without one, each stepped: capacity and server
   CPU per write, what the key costs (its row inserted with the write, the answer stored
   after it).

The load comes from one or two separate processes (``--generators``; spawned once,
driven over a pipe), each an open-loop aiohttp client with keep-alive, so the load
generator's CPU is not the server's and it is not the bottleneck.

    .venv/bin/python bench/http_fixed.py                 # full run (about 2 minutes)
    .venv/bin/python bench/http_fixed.py --database-url postgresql+asyncpg://…/bench_http
    .venv/bin/python bench/http_fixed.py --smoke         # a few seconds, for CI
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    PASSWORD,
    Report,
    Row,
    Step,
    YihaoServer,
    add_common_arguments,
    login,
    machine,
    percentile,
    step_capacity,
    wait_quiet,
)

BOUND_MS = 50.0
ME_TARGET_MS = 1.5
USERS = [
    "dr_li", "dr_wang", "dr_zhao", "dr_sun", "gp_zhang", "gp_liu", "gp_chen", "nurse_he",
    "pharmacist_chen", "pharmacist_zhou", "admin_qdsl",
]  # fmt: skip
# Production argon2 (server/config.py defaults): what a login really costs.
DEFAULT_ARGON2 = {"YIHAO_ARGON2_TIME_COST": "3", "YIHAO_ARGON2_MEMORY_KIB": "65536"}
# Many logins from one address (the load generator's) are the benchmark, not an attack.
MANY_LOGINS = {"YIHAO_LOGIN_RATE_PER_MINUTE": "100000"}


# ----------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class Write:
    """What a write step sends: the method and body, and (``key_prefix``) a fresh
    Idempotency-Key per request; the prefix is made unique per step and generator."""

    method: str
    body: Any
    key_prefix: str | None = None


def generator(conn: Connection) -> None:
    """A load-generating process: runs each ("run", …) order it is sent, answers its figures."""
    import uvloop

    while True:
        order = conn.recv()
        if order[0] == "stop":
            return
        conn.send(uvloop.run(_offer(*order[1:])))


async def _offer(
    url: str,
    path: str,
    tokens: list[str],
    rate: float,
    seconds: float,
    method: str = "GET",
    body: Any = None,
    key_prefix: str | None = None,
) -> dict[str, Any]:
    """Offer ``rate`` requests a second (open loop) for ``seconds``: latencies and failures.

    With ``key_prefix``, request ``i`` carries ``Idempotency-Key: <prefix>-<i>`` (a fresh
    key each, as the web client sends on every write)."""
    import aiohttp

    latencies: list[float] = []
    failures: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int) -> None:
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"} if tokens else {}
            if key_prefix is not None:
                headers["Idempotency-Key"] = f"{key_prefix}-{i}"
            started = time.perf_counter()
            try:
                async with http.request(method, url + path, headers=headers, json=body) as response:
                    await response.read()
                    if not 200 <= response.status < 300:
                        failures[str(response.status)] = failures.get(str(response.status), 0) + 1
                        return
            except aiohttp.ClientError as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                return
            latencies.append(time.perf_counter() - started)

        # Warm the keep-alive connections first (not measured).
        await asyncio.gather(*(one(i) for i in range(min(16, max(1, int(rate))))))
        latencies.clear()
        failures.clear()
        total = max(1, int(rate * seconds))
        start = time.perf_counter()
        pending: list[asyncio.Task[None]] = []
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(i)))
        sent_for = time.perf_counter() - start
        await asyncio.wait(pending, timeout=30)
        return {"sent": total, "seconds": sent_for, "latencies": latencies, "failures": failures}


class Generators:
    """``count`` spawned generator processes sharing an offered rate."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=generator, args=(theirs,), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    async def offer(
        self, url: str, path: str, tokens: list[str], rate: float, seconds: float,
        write: Write | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        share = rate / len(self.pipes)
        for index, pipe in enumerate(self.pipes):
            mine = tokens[index :: len(self.pipes)] or tokens
            order: tuple[Any, ...] = ("run", url, path, mine, share, seconds)
            if write is not None:
                prefix = f"{write.key_prefix}-{index}" if write.key_prefix else None
                order += (write.method, write.body, prefix)
            pipe.send(order)
        loop = asyncio.get_running_loop()
        results = [await loop.run_in_executor(None, pipe.recv) for pipe in self.pipes]
        failures: dict[str, int] = {}
        for result in results:
            for key, count in result["failures"].items():
                failures[key] = failures.get(key, 0) + count
        return {
            "sent": sum(r["sent"] for r in results),
            "seconds": max(r["seconds"] for r in results),
            "latencies": [v for r in results for v in r["latencies"]],
            "failures": failures,
        }

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(("stop",))
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.terminate()


async def measured_step(
    server: YihaoServer, generators: Generators, path: str, tokens: list[str], rate: float,
    seconds: float, write: Write | None = None,
) -> Step:  # fmt: skip
    assert server.cpu is not None
    server.cpu.start()
    result = await generators.offer(server.url, path, tokens, rate, seconds, write)
    server.cpu.stop()
    done = len(result["latencies"])
    lost = result["sent"] - done
    return Step(
        offered=rate,
        achieved=done / max(result["seconds"], 1e-9),
        p50_ms=percentile(result["latencies"], 0.50) * 1000,
        p99_ms=percentile(result["latencies"], 0.99) * 1000,
        cpu_ms_per_op=server.cpu.per_op_ms(result["sent"]),
        lost=lost,
        extra={"failures": result["failures"]},
    )


async def steady_step(
    server: YihaoServer, generators: Generators, path: str, tokens: list[str], rate: float,
    seconds: float, write: Write | None = None,
) -> Step:  # fmt: skip
    """A step, taken again once if it broke the bound: on a machine shared with other work
    one stall of a few hundred ms is the neighbours', not the server's; two in a row count."""
    step = await measured_step(server, generators, path, tokens, rate, seconds, write)
    if step.holds(BOUND_MS):
        return step
    again = await measured_step(server, generators, path, tokens, rate, seconds, write)
    return again if again.holds(BOUND_MS) or again.p99_ms < step.p99_ms else step


# ----------------------------------------------------------------------------- parts


async def tokens_for(server: YihaoServer, per_user: int) -> list[str]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        return [
            await login(http, server.url, username) for _ in range(per_user) for username in USERS
        ]


def cpu_at_common_rate(ours: Any, peer: Any) -> tuple[float, float, float]:
    """The highest offered rate both held (else the first), and each one's CPU per op there.

    Compared at the same offered rate: the server's idle work (its jobs and timers) is
    spread over the requests of a step — fewer requests, more each."""
    held = {s.offered for s in peer.steps if s.holds(BOUND_MS)}
    common = [s.offered for s in ours.steps if s.holds(BOUND_MS) and s.offered in held]
    rate = max(common) if common else ours.steps[0].offered

    def at(capacity: Any) -> float:
        return float(next(s for s in capacity.steps if s.offered == rate).cpu_ms_per_op)

    return rate, at(ours), at(peer)


async def fixed_cost(args: argparse.Namespace, report: Report, generators: Generators) -> None:
    seconds = 1.5 if args.smoke else args.seconds
    with tempfile.TemporaryDirectory() as data_dir:
        async with YihaoServer(data_dir, database_url=args.database_url, env=MANY_LOGINS) as server:
            tokens = await tokens_for(server, 1 if args.smoke else 3)
            capacities = {}
            for name, path, with_tokens in (
                ("/healthz", "/healthz", []),
                ("/me", "/api/v1/me", tokens),
            ):
                print(f"{name}:", file=sys.stderr)
                # Warm-up: the first requests fill caches and pools.
                await measured_step(server, generators, path, with_tokens, 50, 1.0)
                capacities[name] = await step_capacity(
                    lambda rate, p=path, t=with_tokens: steady_step(
                        server, generators, p, t, rate, seconds
                    ),
                    start=args.start_rate,
                    bound_ms=BOUND_MS,
                    smoke=args.smoke,
                )
    health, me = capacities["/healthz"], capacities["/me"]
    rate, me_cpu, health_cpu = cpu_at_common_rate(me, health)
    backend = "PostgreSQL" if args.database_url else "SQLite"
    report.add(
        Row(
            workload=f"authenticated GET /api/v1/me, {backend}: capacity at p99 ≤ {BOUND_MS:g} ms",
            yihao=me.describe(),
            peer=f"/healthz {health.describe()}",
        )
    )
    report.add(
        Row(
            workload=f"server CPU per request at {rate:.0f}/s, {backend}",
            yihao=f"/me {me_cpu:.2f} ms",
            peer=f"/healthz {health_cpu:.2f} ms (ratio {me_cpu / health_cpu:.1f}×)",
            target=f"/me ≤ {ME_TARGET_MS:g} ms",
            met=me_cpu <= ME_TARGET_MS,
        )
    )


async def login_interference(
    args: argparse.Namespace, report: Report, generators: Generators
) -> None:
    import aiohttp

    seconds = 2.0 if args.smoke else 6.0
    rate = 50.0 if args.smoke else 100.0
    logins_per_second = 10.0
    with tempfile.TemporaryDirectory() as data_dir:
        env = DEFAULT_ARGON2 | MANY_LOGINS
        async with YihaoServer(data_dir, database_url=args.database_url, env=env) as s:
            await measured_step(s, generators, "/healthz", [], 50, 1.0)
            alone = await measured_step(s, generators, "/healthz", [], rate, seconds)
            refused: dict[int, int] = {}

            async def logins() -> None:
                async with aiohttp.ClientSession() as http:
                    tasks = []
                    start = time.perf_counter()
                    for i in range(int(logins_per_second * seconds)):
                        delay = start + i / logins_per_second - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        tasks.append(asyncio.create_task(one(http, USERS[i % len(USERS)])))
                    await asyncio.gather(*tasks)

            async def one(http: aiohttp.ClientSession, username: str) -> None:
                body = {"username": username, "password": PASSWORD}
                async with http.post(s.url + "/api/v1/auth/login", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        refused[response.status] = refused.get(response.status, 0) + 1

            during, _ = await asyncio.gather(
                measured_step(s, generators, "/healthz", [], rate, seconds), logins()
            )
    report.add(
        Row(
            workload=f"/healthz p99 at {rate:g}/s while {logins_per_second:g} logins/s run "
            "(default argon2)",
            yihao=f"{during.p99_ms:.1f} ms",
            peer=f"alone {alone.p99_ms:.1f} ms",
            target=f"≤ {BOUND_MS:g} ms",
            met=during.p99_ms <= BOUND_MS and during.lost == 0,
            detail=f"logins refused: {refused or 'none'}",
        )
    )


async def users_at_once(args: argparse.Namespace, report: Report) -> None:
    import aiohttp

    count = 4 if args.smoke else args.users
    env = DEFAULT_ARGON2 | MANY_LOGINS
    with tempfile.TemporaryDirectory() as data_dir:
        async with (
            YihaoServer(data_dir, database_url=args.database_url, env=env) as s,
            aiohttp.ClientSession() as http,
        ):
            admin = await login(http, s.url, "admin")
            headers = {"Authorization": f"Bearer {admin}"}

            async def create(i: int) -> int:
                body = {
                    "username": f"bench_user_{i}",
                    "password": "a-Good-password-2026",
                    "role": "nurse",
                    "name": "护士" + chr(0x4E00 + i),  # names are letters only
                    "institution": "QDSL",
                }
                async with http.post(
                    s.url + "/api/v1/users", json=body, headers=headers
                ) as response:
                    await response.read()
                    return response.status

            started = time.perf_counter()
            statuses = await asyncio.gather(*(create(i) for i in range(count)))
            took = time.perf_counter() - started
    created = statuses.count(201)
    report.add(
        Row(
            workload=f"{count} users created at once (admin API, default argon2)",
            yihao=f"{created}/{count} created in {took:.2f} s"
            + ("" if created == count else f" (statuses {sorted(statuses)})"),
            peer="—",
            target="all succeed, no 503",
            met=created == count,
            detail=f"statuses {sorted(statuses)}",
        )
    )


async def keyed_writes(args: argparse.Namespace, report: Report, generators: Generators) -> None:
    import aiohttp

    seconds = 1.5 if args.smoke else args.seconds
    backend = "PostgreSQL" if args.database_url else "SQLite"
    with tempfile.TemporaryDirectory() as data_dir:
        async with YihaoServer(data_dir, database_url=args.database_url, env=MANY_LOGINS) as server:
            async with aiohttp.ClientSession() as http:
                tokens = [await login(http, server.url, "patient_wang") for _ in range(4)]
                async with http.get(
                    server.url + "/api/v1/me", headers={"Authorization": f"Bearer {tokens[0]}"}
                ) as response:
                    patient = (await response.json())["patient_id"]
            path = f"/api/v1/patients/{patient}/consents/QDSL"
            plain = Write("PUT", {"granted": True})
            capacities = {}
            for name, write in (("no key", plain), ("a fresh key", replace(plain, key_prefix="k"))):
                print(f"PUT consent, {name}:", file=sys.stderr)

                def step(rate: float, w: Write = write) -> Awaitable[Step]:
                    # Keys never repeat across steps (each would be a replay, not a write).
                    unique = replace(w, key_prefix=f"{uuid.uuid4().hex[:8]}") if w.key_prefix else w
                    return steady_step(server, generators, path, tokens, rate, seconds, unique)

                await step(20)  # warm-up
                capacities[name] = await step_capacity(
                    step, start=args.start_rate / 2, bound_ms=BOUND_MS, smoke=args.smoke
                )
    bare, keyed = capacities["no key"], capacities["a fresh key"]
    rate, keyed_cpu, bare_cpu = cpu_at_common_rate(keyed, bare)
    report.add(
        Row(
            workload=f"PUT consent with a fresh Idempotency-Key, {backend}: capacity at p99 ≤ "
            f"{BOUND_MS:g} ms",
            yihao=keyed.describe(),
            peer=f"the same write without a key: {bare.describe()}",
        )
    )
    report.add(
        Row(
            workload=f"server CPU per write at {rate:.0f}/s, {backend}",
            yihao=f"with a key {keyed_cpu:.2f} ms",
            peer=f"without {bare_cpu:.2f} ms (+{keyed_cpu - bare_cpu:.2f} ms for the key)",
        )
    )


async def main(args: argparse.Namespace) -> None:
    backend = "PostgreSQL" if args.database_url else "SQLite"
    report = Report("http_fixed", f"Per-request fixed cost and passwords off the loop ({backend})")
    load = wait_quiet(smoke=args.smoke)
    generators = Generators(args.generators)
    try:
        await fixed_cost(args, report, generators)
        await keyed_writes(args, report, generators)
        if not args.skip_passwords:
            await login_interference(args, report, generators)
            await users_at_once(args, report)
    finally:
        generators.close()
    facts = machine()
    report.notes.append(
        f"{facts['cores']} cores, Python {facts['python']}, load {load:.2f} at start; "
        f"{args.generators} load-generator process(es), keep-alive; CPU per request is the "
        "server process's user+system time over the requests offered."
    )
    report.write(args.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--database-url", help="PostgreSQL (the bench database is emptied)")
    parser.add_argument("--seconds", type=float, default=4.0, help="each step's length")
    parser.add_argument("--start-rate", type=float, default=100.0, help="the first step's rate")
    parser.add_argument("--generators", type=int, default=2, choices=(1, 2))
    parser.add_argument("--users", type=int, default=8, help="users created at once")
    parser.add_argument("--skip-passwords", action="store_true", help="only the fixed cost")
    asyncio.run(main(parser.parse_args()))
