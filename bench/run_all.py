"""``make bench``: every benchmark beside its peer in one run, written to docs/performance.md.

Each benchmark in :data:`BENCHMARKS` runs as its own process with ``--json`` (and the
arguments listed with it); before each one the machine is given time to settle (the
1-minute load average below 1.0, or two minutes at most). The rows they report are
collected into one Markdown table per benchmark, headed by the machine, the date, the
load average before each benchmark and the versions of what ran.

    .venv/bin/python bench/run_all.py                     # everything (about half an hour)
    .venv/bin/python bench/run_all.py --only consult_chat,records_bench
    .venv/bin/python bench/run_all.py --smoke --out /tmp/perf.md   # seconds each, for CI

PostgreSQL and Redis are used where a benchmark needs them when
``YIHAO_BENCH_DATABASE_URL`` (an admin URL, e.g.
``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``) and ``YIHAO_BENCH_REDIS_URL``
are set; without them those rows say they were not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import machine, wait_quiet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PG = "{pg}"  # replaced by YIHAO_BENCH_DATABASE_URL; the benchmark is skipped without it
REDIS = "{redis}"  # replaced by YIHAO_BENCH_REDIS_URL

# (script, extra arguments). A benchmark whose arguments name {pg} or {redis} runs only
# when that service is configured.
BENCHMARKS: list[tuple[str, list[str]]] = [
    ("http_fixed.py", []),
    ("http_fixed.py", ["--database-url", PG]),
    ("consult_fanout.py", []),
    ("connections.py", []),
    ("consult_chat.py", []),
    ("consult_chat.py", ["--database-url", PG]),
    ("consult_join.py", []),
    ("prescription_delivery.py", ["--database-url", PG]),
    ("records_bench.py", []),
    ("records_bench.py", ["--database-url", PG]),
    ("workers.py", ["--redis-url", REDIS, "--database-url", PG]),
]

VERSIONS = ["aiohttp", "python-socketio", "python-engineio", "sqlalchemy", "asyncpg",
            "aiosqlite", "pydantic", "orjson", "uvloop"]  # fmt: skip


# Read once and taken out of the environment: the servers the benchmarks start refuse any
# YIHAO_* variable that is not one of their settings.
SERVICES = {
    PG: os.environ.pop("YIHAO_BENCH_DATABASE_URL", ""),
    REDIS: os.environ.pop("YIHAO_BENCH_REDIS_URL", ""),
}


def _substitute(args: list[str]) -> list[str] | None:
    values = SERVICES
    out = []
    for arg in args:
        if arg in values:
            if not values[arg]:
                return None
            arg = values[arg]
        out.append(arg)
    return out


def _versions() -> str:
    found = []
    for name in VERSIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    node = shutil.which("node")
    if node:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
        found.append(f"Node.js {out.stdout.strip()}")
    return ", ".join(found)


def _label(script: str, args: list[str]) -> str:
    name = script.removesuffix(".py")
    if "--database-url" in args:
        return f"{name} (PostgreSQL)"
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", help="comma-separated script names (without .py)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per benchmark")
    args = parser.parse_args()
    only = {s.strip().removesuffix(".py") for s in args.only.split(",")} if args.only else None

    started = datetime.now(UTC)
    info = machine()
    sections: list[str] = []
    failed = 0
    header = [
        "# Performance",
        "",
        "Written by `make bench` (`bench/run_all.py`); every figure below comes from one run,",
        "each benchmark beside its peer. Capacity is the highest offered rate a server",
        "sustained within the latency bound, found by stepping the rate up; CPU is the",
        "server process's user + system time per operation.",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC" + (" (smoke run: figures meaningless)" if args.smoke else ""),
        f"- machine: {info['cores']} cores, {info['memory_gib']} GiB, {info['system']}, "
        f"Python {info['python']}",
        f"- versions: {_versions()}",
        "",
    ]  # fmt: skip

    def write() -> None:  # after each benchmark: a run stopped half-way keeps what it measured
        Path(args.out).write_text("\n".join(header) + "\n" + "\n".join(sections))

    with tempfile.TemporaryDirectory() as tmp:
        for index, (script, extra) in enumerate(BENCHMARKS):
            name = script.removesuffix(".py")
            if only is not None and name not in only:
                continue
            label = _label(script, extra)
            argv = _substitute(extra)
            if argv is None:
                sections.append(f"## {label}\n\nNot run: PostgreSQL or Redis not configured.\n")
                continue
            if not (HERE / script).exists():
                sections.append(f"## {label}\n\nNot run: `bench/{script}` does not exist.\n")
                continue
            load = wait_quiet(smoke=args.smoke)
            out = Path(tmp) / f"{index}.json"
            command = [sys.executable, str(HERE / script), "--json", str(out), *argv]
            if args.smoke:
                command.append("--smoke")
            print(f"# {label}: load {load:.2f}", file=sys.stderr, flush=True)
            began = time.monotonic()
            try:
                returncode = subprocess.run(
                    command, cwd=ROOT, check=False, timeout=args.timeout
                ).returncode
            except subprocess.TimeoutExpired:
                failed += 1
                sections.append(f"## {label}\n\nStopped after {args.timeout:.0f} s.\n")
                continue
            took = time.monotonic() - began
            if returncode != 0 or not out.exists():
                failed += 1
                sections.append(f"## {label}\n\nFailed (exit {returncode}).\n")
                continue
            report = json.loads(out.read_text())
            sections.append(_section(label, report, load, took))
            write()

    write()
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


def _section(label: str, report: dict, load: float, took: float) -> str:
    lines = [f"## {report.get('title') or label}", "",
             f"`bench/{report['benchmark']}.py` · load before: {load:.2f} · took {took:.0f} s", "",
             "| workload | Yihao | peer | target | met |", "|---|---|---|---|---|"]  # fmt: skip
    for row in report["rows"]:
        met = row.get("met")
        mark = "—" if met is None else ("yes" if met else "**no**")
        lines.append(
            f"| {row['workload']} | {row['yihao']} | {row.get('peer', '—')} | "
            f"{row.get('target', '—')} | {mark} |"
        )
    details = [
        f"- {row['workload']}: {row['detail']}" for row in report["rows"] if row.get("detail")
    ]
    if details:
        lines += ["", *details]
    for note in report.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
