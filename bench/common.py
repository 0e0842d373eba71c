"""What every benchmark shares: the server under test, CPU per operation, capacity by stepping.

A benchmark here reports *capacity*, not a figure at one fixed load: it offers a
rate, measures what the server achieved, the latency percentiles and the server's
CPU per operation, and steps the rate up (``step_capacity``) until the latency
bound breaks or the server falls behind. The highest rate that held is the
capacity. Its peer (Node.js Socket.IO, raw SQL, ``/healthz``) is measured the same
way in the same run.

Each benchmark prints its table and, with ``--json FILE``, writes its rows in the
shape ``bench/run_all.py`` (``make bench``) collects into ``docs/performance.md``:

    {"benchmark": "consult_chat", "title": "...", "rows": [Row, ...], "notes": [...]}

A :class:`Row` is one workload beside its peer and its target, with ``met`` saying
whether the target holds (``None`` when a row has no target).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Yihao@2026"  # every demo account's password (server/seed.py)


# ----------------------------------------------------------------------------- figures


def percentile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` by nearest rank; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(latencies_s: Iterable[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max in milliseconds of latencies given in seconds."""
    values = [v * 1000 for v in latencies_s]
    return {
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else float("nan"),
        "n": float(len(values)),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CpuMeter:
    """CPU seconds (user + system) used by a process and its children (``--workers``).

    ``start()`` then ``stop()`` around a measured span; ``per_op_ms(n)`` divides it."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self._start = 0.0
        self.seconds = 0.0

    def _now(self) -> float:
        total = 0.0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> float:
        self.seconds = self._now() - self._start
        return self.seconds

    def per_op_ms(self, operations: int) -> float:
        return self.seconds * 1000 / operations if operations else float("nan")

    def rss_bytes(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total


def wait_quiet(max_load: float = 1.0, timeout: float = 120.0, smoke: bool = False) -> float:
    """Wait (at most ``timeout`` s) for the 1-minute load average to drop below ``max_load``.

    Returns the load average measured last; a smoke run does not wait."""
    load = os.getloadavg()[0]
    if smoke:
        return load
    deadline = time.monotonic() + timeout
    while load >= max_load and time.monotonic() < deadline:
        time.sleep(2)
        load = os.getloadavg()[0]
    return load


# ----------------------------------------------------------------------------- stepping


@dataclass
class Step:
    """One offered rate held for a while: what came back."""

    offered: float  # operations per second offered (open loop)
    achieved: float  # operations per second completed
    p50_ms: float
    p99_ms: float
    cpu_ms_per_op: float = float("nan")  # server CPU per operation
    lost: int = 0  # operations that never completed (must be 0)
    extra: dict[str, Any] = field(default_factory=dict)

    def holds(self, bound_ms: float, keep_up: float = 0.95) -> bool:
        return (
            self.lost == 0 and self.p99_ms <= bound_ms and self.achieved >= keep_up * self.offered
        )


@dataclass
class Capacity:
    steps: list[Step]
    bound_ms: float
    best: Step | None  # the highest step that held

    @property
    def rate(self) -> float:
        return self.best.achieved if self.best is not None else 0.0

    def describe(self) -> str:
        if self.best is None:
            return f"below {self.steps[0].offered:g}/s (no step held p99 ≤ {self.bound_ms:g} ms)"
        return f"{self.best.achieved:,.0f}/s (p99 {self.best.p99_ms:.1f} ms)"


async def step_capacity(
    run_step: Callable[[float], Awaitable[Step]],
    *,
    start: float,
    bound_ms: float,
    growth: float = 1.5,
    max_steps: int = 12,
    smoke: bool = False,
    log: Callable[[str], None] | None = None,
) -> Capacity:
    """Offer ``start``, then ``growth`` times more each step, until a step breaks the bound.

    ``run_step(rate)`` holds the rate for the benchmark's step duration and returns the
    :class:`Step`. A smoke run takes two steps. Between steps the machine is allowed to
    settle (the 1-minute load average is not waited for: the load generator itself keeps
    it up; the full ``make bench`` waits before each benchmark)."""
    steps: list[Step] = []
    best: Step | None = None
    rate = start
    for _ in range(2 if smoke else max_steps):
        step = await run_step(rate)
        steps.append(step)
        (log or _stderr)(
            f"  offered {step.offered:,.1f}/s  achieved {step.achieved:,.1f}/s  "
            f"p50 {step.p50_ms:.2f} ms  p99 {step.p99_ms:.2f} ms  "
            f"cpu/op {step.cpu_ms_per_op:.2f} ms  lost {step.lost}"
        )
        if not step.holds(bound_ms):
            break
        best = step
        rate *= growth
        await asyncio.sleep(0.5)
    return Capacity(steps, bound_ms, best)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- reporting


@dataclass
class Row:
    """One line of docs/performance.md: a workload, Yihao's figure, the peer's, the target."""

    workload: str
    yihao: str
    peer: str = "—"
    target: str = "—"
    met: bool | None = None
    detail: str = ""


@dataclass
class Report:
    benchmark: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def print(self) -> None:
        print(f"\n## {self.title}\n")
        print("| workload | Yihao | peer | target | met |")
        print("|---|---|---|---|---|")
        for r in self.rows:
            met = "—" if r.met is None else ("yes" if r.met else "**no**")
            print(f"| {r.workload} | {r.yihao} | {r.peer} | {r.target} | {met} |")
        for note in self.notes:
            print(f"\n{note}")
        sys.stdout.flush()

    def write(self, path: str | None) -> None:
        """Print the table; with ``--json PATH`` also write it for ``make bench``."""
        self.print()
        if path:
            Path(path).write_text(
                json.dumps(
                    {"benchmark": self.benchmark, "title": self.title,
                     "rows": [asdict(r) for r in self.rows], "notes": self.notes},
                    ensure_ascii=False, indent=2,
                )
            )  # fmt: skip


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--smoke`` (seconds, for CI) and ``--json FILE`` (the rows for ``make bench``)."""
    parser.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
    parser.add_argument("--json", help="also write the report's rows to this file")


# ----------------------------------------------------------------------------- the server


class YihaoServer:
    """``yihao serve`` in a subprocess on a fresh data folder, migrated and seeded.

    SQLite by default; ``database_url`` / ``redis_url`` for PostgreSQL and Redis; one
    process unless ``workers`` is given. A PostgreSQL URL is an administrator's: the server gets a scratch database of its own
    created next to the one named, dropped when it stops (nothing in the named one is
    touched). ``workers`` is passed as ``--workers``.
    The bench settings: cheap argon2 (logins are not what is measured), no idle logoff,
    generous socket and request budgets, warnings only in the log."""

    SECRET = "bench-secret-key-that-is-long-enough-0123456789"

    def __init__(
        self,
        data_dir: str,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        workers: int | None = None,
        seed: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        from server.core.checkpoints import ensure_key_file

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.seed = seed
        self.database_url = database_url
        self.env = dict(
            os.environ,
            YIHAO_DATA_DIR=data_dir,
            YIHAO_LOG_LEVEL="WARNING",
            YIHAO_ARGON2_TIME_COST="1",
            YIHAO_ARGON2_MEMORY_KIB="1024",
            YIHAO_SESSION_IDLE_TIMEOUT_SECONDS="0",
            YIHAO_SOCKET_EVENTS_PER_10S="1000000",
            YIHAO_API_REQUESTS_PER_MINUTE="10000000",
            YIHAO_SECRET_KEY=self.SECRET,
            YIHAO_CHECKPOINT_KEY_FILE=str(ensure_key_file(Path(data_dir) / "checkpoint_key")),
        )
        self.scratch: str | None = None
        if database_url and database_url.startswith("postgresql") and seed:
            self.scratch = f"yihao_bench_{os.getpid()}_{self.port}"
            database_url = database_url.rsplit("/", 1)[0] + "/" + self.scratch
        if database_url:
            self.env["YIHAO_DATABASE_URL"] = database_url
        if redis_url:
            self.env["YIHAO_REDIS_URL"] = redis_url
        self.env.update(env or {})
        self.process: asyncio.subprocess.Process | None = None
        self.cpu: CpuMeter | None = None

    async def cli(self, *argv: str, quiet: bool = True) -> int:
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", *argv, env=self.env, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL if quiet else None,
        )  # fmt: skip
        return await done.wait()

    async def _scratch(self, create: bool) -> None:
        """Create (or drop) this server's scratch database through the administrator's URL."""
        from server.cluster import admin_sql

        assert self.database_url and self.scratch
        drop = f'DROP DATABASE IF EXISTS "{self.scratch}" WITH (FORCE)'
        create_it = [f'CREATE DATABASE "{self.scratch}"'] if create else []
        await admin_sql(self.database_url, drop, *create_it)

    async def start(self) -> None:
        if self.scratch:
            await self._scratch(create=True)
        for step in ("migrate", "seed-demo") if self.seed else ("migrate",):
            if await self.cli(step) != 0:
                raise RuntimeError(f"yihao {step} failed")
        # One process unless asked: the per-process figures (PostgreSQL + Redis would
        # otherwise start a worker per core).
        argv = ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--workers", str(self.workers or 1)]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", *argv, env=self.env, cwd=ROOT
        )
        import aiohttp

        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            self.cpu = CpuMeter(self.process.pid)
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.scratch:
            await self._scratch(create=False)

    async def __aenter__(self) -> YihaoServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def login(http: Any, url: str, username: str, password: str = PASSWORD) -> str:
    """An access token for a demo account (``http`` is an ``aiohttp.ClientSession``)."""
    async with http.post(
        url + "/api/v1/auth/login", json={"username": username, "password": password}
    ) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"login {username}: {response.status} {body}")
    return str(body["access_token"])


def machine() -> dict[str, str]:
    """What docs/performance.md says about the machine a run was on."""
    import platform

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
        "memory_gib": f"{psutil.virtual_memory().total / 2**30:.0f}",
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_1m": f"{os.getloadavg()[0]:.2f}",
    }
