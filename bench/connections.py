"""Idle websocket connections: memory and CPU per connection, connects/s, shutdown with N open.

Opens N idle Socket.IO websocket connections, authenticated like a real client
(``auth: {token}``), to three servers in turn, one at a time:

- Yihao's gateway (``bench/consult_fanout_server.py``: the real
  :class:`~server.realtime.gateway.Gateway` with a stub authentication, no database);
- the Node.js Socket.IO 4 peer (``bench/node_peer/server.js``, also checking a token);
- the real ``yihao serve`` (SQLite, seeded; every socket signs in with a real access
  token, so a connect pays the session check and the room providers), with fewer sockets.

Reported per server: KiB of server RSS per connection, server CPU ms per connect,
connects/s, and the shutdown: SIGTERM until the process exited *and* every client saw
its connection close (all of them must). The clients offer per-message deflate as
browsers do, so what the server accepts is what is measured (``--compression``: the
servers accept it too).

The clients are raw aiohttp websockets speaking the engine.io 4 / Socket.IO 5 frames
(open, ``40{auth}``, ping → pong), spread over ``--procs`` processes, each from its
own loopback address (so 10,000 sockets and their TIME_WAITs fit the port range).

    python bench/connections.py                 # N=10,000 (serve: 2,000)
    python bench/connections.py --n 2000 --serve-n 500
    python bench/connections.py --smoke         # N=50, for CI
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    CpuMeter,
    Report,
    Row,
    YihaoServer,
    add_common_arguments,
    free_port,
    login,
    machine,
    summary_ms,
    wait_quiet,
)
from bench.consult_fanout import start

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KIB_TARGET = 30.0
CPU_TARGET_MS = 2.0
SHUTDOWN_TARGET_S = 5.0


def raise_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ----------------------------------------------------------------------------- clients


class Holder:
    """Many idle Socket.IO connections of one load-generator process."""

    def __init__(self, url: str, local_addr: str, deflate: bool) -> None:
        self.ws_url = url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.local_addr = local_addr
        self.deflate = deflate
        self.connected = 0
        self.failed: list[str] = []
        self.closed = 0
        self.last_close = 0.0
        self.all_closed = asyncio.Event()
        self.readers: list[asyncio.Task[None]] = []
        self.connect_s: list[float] = []  # open → Socket.IO connected, each

    async def open(self, http: aiohttp.ClientSession, token: str) -> None:
        started = time.perf_counter()
        try:
            ws = await http.ws_connect(
                self.ws_url, compress=15 if self.deflate else 0, autoping=True, max_msg_size=0
            )
            hello = await ws.receive_str(timeout=30)  # 0{"sid": …, "pingInterval": …}
            if not hello.startswith("0"):
                raise RuntimeError(f"no engine.io open: {hello[:80]}")
            await ws.send_str("40" + json.dumps({"token": token}))
            while True:
                answer = await ws.receive_str(timeout=30)
                if answer == "2":
                    await ws.send_str("3")
                    continue
                break
            if not answer.startswith("40"):
                raise RuntimeError(f"connect refused: {answer[:200]}")
        except Exception as exc:
            self.failed.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        self.connected += 1
        self.connect_s.append(time.perf_counter() - started)
        self.readers.append(asyncio.ensure_future(self._idle(ws)))

    async def _idle(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Answer pings until the server closes the connection (any way it does)."""
        try:
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break  # close frame, closed, error
                if msg.data == "2":
                    await ws.send_str("3")
                elif msg.data in ("1", "41") or msg.data.startswith("41"):
                    break  # engine.io close, Socket.IO disconnect
        except Exception:
            pass
        self.closed += 1
        self.last_close = time.time()
        await ws.close()
        if self.closed == self.connected:
            self.all_closed.set()


async def _generate(
    url: str,
    tokens: list[str],
    local_addr: str,
    deflate: bool,
    concurrency: int,
    to_main: Any,
    from_main: Any,
) -> None:
    holder = Holder(url, local_addr, deflate)
    connector = aiohttp.TCPConnector(limit=0, local_addr=(local_addr, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        gate = asyncio.Semaphore(concurrency)

        async def one(token: str) -> None:
            async with gate:
                await holder.open(http, token)

        await asyncio.gather(*(one(t) for t in tokens))
        to_main.put(
            ("connected", holder.connected, holder.failed[:5], len(holder.failed), holder.connect_s)
        )
        loop = asyncio.get_running_loop()
        wait_s = await loop.run_in_executor(None, from_main.get)  # the server is told to stop
        if holder.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(holder.all_closed.wait(), wait_s)
        to_main.put(("closed", holder.closed, holder.last_close))
        for task in holder.readers:
            task.cancel()
        await asyncio.gather(*holder.readers, return_exceptions=True)


def _generator_process(*args: Any) -> None:
    raise_file_limit()
    asyncio.run(_generate(*args))


# ----------------------------------------------------------------------------- one run


async def measure(
    name: str,
    url: str,
    pid: int,
    tokens: list[str],
    args: argparse.Namespace,
    exited: Any,
    terminate: Any,
) -> dict[str, Any]:
    """Connect every token's socket, measure, then stop the server and time the close."""
    ctx = mp.get_context("spawn")
    procs = max(1, min(args.procs, len(tokens)))
    to_main = ctx.Queue()
    controls = [ctx.Queue() for _ in range(procs)]
    meter = CpuMeter(pid)
    await asyncio.sleep(1.0)
    rss_before = meter.rss_bytes()
    workers = [
        ctx.Process(
            target=_generator_process,
            args=(
                url,
                tokens[i::procs],
                f"127.0.0.{10 + i}",
                args.compression,
                args.concurrency,
                to_main,
                controls[i],
            ),
        )
        for i in range(procs)
    ]
    loop = asyncio.get_running_loop()
    for w in workers:
        w.start()
    # The generators need a moment to start; the connect phase is timed from the first connect.
    started = time.perf_counter()
    meter.start()
    reports = [await loop.run_in_executor(None, to_main.get) for _ in workers]
    connect_s = time.perf_counter() - started
    cpu_s = meter.stop()
    connected = sum(r[1] for r in reports)
    failed = sum(r[3] for r in reports)
    errors = [e for r in reports for e in r[2]]
    latency = summary_ms(x for r in reports for x in r[4])
    await asyncio.sleep(args.settle)
    rss_after = meter.rss_bytes()
    # Shut the server down with every socket open.
    stop_at = time.time()
    await terminate()
    for control in controls:
        control.put(args.shutdown_wait)
    exit_at = await exited()
    closes = [await loop.run_in_executor(None, to_main.get) for _ in workers]
    for w in workers:
        await loop.run_in_executor(None, w.join, 30)
    closed = sum(c[1] for c in closes)
    last_close = max([c[2] for c in closes if c[2]] or [exit_at])
    shutdown_s = max(exit_at, last_close) - stop_at
    result = {
        "server": name,
        "n": len(tokens),
        "connected": connected,
        "failed": failed,
        "errors": errors,
        "kib_per_conn": (rss_after - rss_before) / 1024 / max(connected, 1),
        "rss_mib": rss_after / 2**20,
        # The generators' start-up is in the wall time, not in the server's CPU.
        "cpu_ms_per_connect": cpu_s * 1000 / max(connected, 1),
        "connects_per_s": connected / connect_s,
        "connect_ms_p50": latency["p50"],
        "connect_ms_p99": latency["p99"],
        "shutdown_s": shutdown_s,
        "saw_close": closed,
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


async def run_process(
    name: str, cmd: list[str], port: int, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    proc = start(cmd, ROOT)
    loop = asyncio.get_running_loop()

    async def terminate() -> None:
        proc.send_signal(signal.SIGTERM)

    async def exited() -> float:
        try:
            await loop.run_in_executor(None, proc.wait, 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return time.time()

    try:
        tokens = [str(1000 + i) for i in range(n)]
        return await measure(name, f"http://127.0.0.1:{port}", proc.pid, tokens, args,
                             exited, terminate)  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def run_serve(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The real ``yihao serve``: real tokens, the real session check and room providers."""
    env = {"YIHAO_SOCKET_COMPRESSION": "true"} if args.compression else {}
    with tempfile.TemporaryDirectory() as tmp:
        server = YihaoServer(tmp, env=env)
        await server.start()
        assert server.process is not None
        process = server.process
        try:
            async with aiohttp.ClientSession() as http:
                # Two accounts in turn: a clinician (desk and consult rooms) and a GP.
                users = ["dr_li", "gp_zhang"]
                tokens_by_user = [await login(http, server.url, u) for u in users]
            tokens = [tokens_by_user[i % len(users)] for i in range(n)]

            async def terminate() -> None:
                process.send_signal(signal.SIGTERM)

            async def exited() -> float:
                try:
                    await asyncio.wait_for(process.wait(), 60)
                except TimeoutError:
                    process.kill()
                    await process.wait()
                return time.time()

            return await measure("yihao serve (real tokens)", server.url, process.pid, tokens,
                                 args, exited, terminate)  # fmt: skip
        finally:
            await server.stop()


# ----------------------------------------------------------------------------- report


def fmt(r: dict[str, Any]) -> dict[str, str]:
    return {
        "kib": f"{r['kib_per_conn']:.1f} KiB",
        "cpu": f"{r['cpu_ms_per_connect']:.2f} ms",
        "rate": f"{r['connects_per_s']:,.0f}/s",
        "latency": f"p50 {r['connect_ms_p50']:.1f} / p99 {r['connect_ms_p99']:.1f} ms",
        "shutdown": f"{r['shutdown_s']:.2f} s ({r['saw_close']:,}/{r['connected']:,} saw the close)",
    }


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> Report:
    gw, node = results["gateway"], results["node"]
    g, p = fmt(gw), fmt(node)
    deflate = " (per-message deflate accepted)" if args.compression else ""
    rep = Report("connections", f"Idle websocket connections{deflate}")
    n = f"{gw['n']:,}"
    rep.add(Row(f"server memory per idle connection ({n})", g["kib"], p["kib"],
                f"≤ {KIB_TARGET:g} KiB", gw["kib_per_conn"] <= KIB_TARGET))  # fmt: skip
    rep.add(Row(f"server CPU per connect ({n}, gateway)", g["cpu"], p["cpu"],
                f"≤ {CPU_TARGET_MS:g} ms", gw["cpu_ms_per_connect"] <= CPU_TARGET_MS))  # fmt: skip
    rep.add(Row(f"connects/s ({n})", g["rate"], p["rate"]))
    rep.add(Row(f"connect latency p50 / p99 ({n}, {args.concurrency} in flight per generator)",
                g["latency"], p["latency"]))  # fmt: skip
    rep.add(Row(f"shutdown with {n} open (SIGTERM → exited, every client saw the close)",
                g["shutdown"], p["shutdown"], f"< {SHUTDOWN_TARGET_S:g} s",
                gw["shutdown_s"] < SHUTDOWN_TARGET_S and gw["saw_close"] == gw["connected"]))  # fmt: skip
    rep.add(Row(f"{n} connected", f"{gw['connected']:,} ({gw['failed']} failed)",
                f"{node['connected']:,} ({node['failed']} failed)", n,
                gw["connected"] == gw["n"]))  # fmt: skip
    serve = results.get("serve")
    if serve is not None:
        s = fmt(serve)
        m = f"{serve['n']:,}"
        rep.add(Row(f"`yihao serve`, real tokens: CPU per connect ({m})", s["cpu"], "—",
                    f"≤ {CPU_TARGET_MS:g} ms", serve["cpu_ms_per_connect"] <= CPU_TARGET_MS))  # fmt: skip
        rep.add(Row(f"`yihao serve`: memory per connection ({m})", s["kib"], "—",
                    f"≤ {KIB_TARGET:g} KiB", serve["kib_per_conn"] <= KIB_TARGET))  # fmt: skip
        rep.add(Row(f"`yihao serve`: connects/s ({m})", s["rate"]))
        rep.add(Row(f"`yihao serve`: shutdown with {m} open", s["shutdown"], "—",
                    f"< {SHUTDOWN_TARGET_S:g} s",
                    serve["shutdown_s"] < SHUTDOWN_TARGET_S
                    and serve["saw_close"] == serve["connected"]))  # fmt: skip
    errors = [e for r in results.values() for e in r["errors"]]
    if errors:
        rep.notes.append("connect errors (first): " + "; ".join(errors[:3]))
    rep.notes.append(
        f"Clients: {args.procs} processes, {args.concurrency} connects in flight each, "
        "raw aiohttp websockets (engine.io 4 frames), offering per-message deflate. "
        "Memory: server RSS after the connects and a settle minus before, per connection. "
        f"Machine: {machine()}."
    )
    return rep


async def main_async(args: argparse.Namespace) -> None:
    compression = ["--compression"] if args.compression else []
    results: dict[str, dict[str, Any]] = {}
    wait_quiet(smoke=args.smoke or args.no_wait)
    port = free_port()
    results["gateway"] = await run_process(
        "yihao gateway",
        [sys.executable, str(HERE / "consult_fanout_server.py"), "--port", str(port), *compression],
        port, args.n, args,
    )  # fmt: skip
    wait_quiet(smoke=args.smoke or args.no_wait)
    port = free_port()
    deflate = ["--deflate"] if args.compression else []
    results["node"] = await run_process(
        "node socket.io 4",
        ["node", str(HERE / "node_peer" / "server.js"), str(port), *deflate],
        port, args.n, args,
    )  # fmt: skip
    if args.serve_n > 0:
        wait_quiet(smoke=args.smoke or args.no_wait)
        results["serve"] = await run_serve(args.serve_n, args)
    report(results, args).write(args.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--n", type=int, default=10_000, help="idle connections per server")
    parser.add_argument("--serve-n", type=int, default=2_000, help="to `yihao serve` (0: skip)")
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=32, help="connects in flight each")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before RSS is read")
    parser.add_argument("--shutdown-wait", type=float, default=60.0)
    parser.add_argument("--compression", action="store_true", help="servers accept deflate")
    args = parser.parse_args()
    if args.smoke:
        args.n, args.serve_n, args.procs, args.settle = 50, 20, 1, 0.5
    limit = raise_file_limit()
    if args.n + 100 > limit:
        raise SystemExit(f"open-file limit {limit} is below --n {args.n}")
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
