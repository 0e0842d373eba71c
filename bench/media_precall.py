"""Benchmark: server CPU per pre-call check peer and the server's event-loop lag while they run.

The server (the real app, SQLite, demo network) runs in a child process of its
own, so its CPU time is measured apart from the clients'; a probe task in it
sleeps 5 ms in a loop and records how late it wakes up (the event-loop lag).
The clients are aiortc peers in this process, each sending a synthetic camera
(fresh noise every frame: the encoder's worst case) and a silent microphone
through ``precall.offer``, and receiving the echo. Both share this machine's
cores, as a server and its load generator on one box do.

    .venv/bin/python bench/media_precall.py                 # 0, 1, 2, 4 peers, 640×480, 10 s each
    .venv/bin/python bench/media_precall.py --peers 1 2 --seconds 5 --width 320 --height 240
    .venv/bin/python bench/media_precall.py --smoke         # 1 peer, 320×240, 2 s: for CI

Prints one JSON line per step: peers, server CPU (% of one core), CPU per peer
above idle, lag p50/p99/max in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import ClientSession, web

from bench.child import beside_server

SECRET = "bench-secret-key-that-is-long-enough-0123456789"
PROBE_S = 0.005


def serve(port: int, data_dir: str, conn: Connection) -> None:
    """The child: the real app on ``port``; answers "mark" and "report" on ``conn``."""
    from server.app import create_app
    from server.config import load_settings
    from server.core.api import SERVICES
    from server.seed import seed_demo

    async def main() -> None:
        settings = load_settings(
            environ={}, data_dir=Path(data_dir), secret_key=SECRET, port=port,
            argon2_time_cost=1, argon2_memory_kib=64, log_level="WARNING", precall_max_peers=64,
        )  # fmt: skip
        app = create_app(settings)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await seed_demo(app[SERVICES])
        lags: list[float] = []

        async def probe() -> None:
            loop = asyncio.get_running_loop()
            while True:
                before = loop.time()
                await asyncio.sleep(PROBE_S)
                lags.append((loop.time() - before - PROBE_S) * 1000)

        prober = asyncio.create_task(probe())
        loop = asyncio.get_running_loop()
        conn.send("ready")
        cpu0, wall0 = time.process_time(), time.monotonic()
        while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
            if command == "mark":
                lags.clear()
                cpu0, wall0 = time.process_time(), time.monotonic()
                conn.send("marked")
            elif command == "report":
                cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0) * 100
                ordered = sorted(lags) or [0.0]
                conn.send({
                    "server_cpu_pct": round(cpu, 1),
                    "lag_p50_ms": round(statistics.median(ordered), 2),
                    "lag_p99_ms": round(ordered[int(len(ordered) * 0.99) - 1 if len(ordered) > 1 else 0], 2),
                    "lag_max_ms": round(ordered[-1], 2),
                    "open_peers": len(app[SERVICES].precall),
                })  # fmt: skip
        prober.cancel()
        await runner.cleanup()

    asyncio.run(main())


async def measure(
    conn: Connection, url: str, peers: int, seconds: float, width: int, height: int
) -> dict[str, Any]:
    from tests.helpers import SocketClient
    from tests.media.support import PrecallClient, SyntheticCamera

    async with ClientSession() as http:
        login = await http.post(
            url + "api/v1/auth/login", json={"username": "patient_wang", "password": "Yihao@2026"}
        )
        token = (await login.json())["access_token"]
    sockets, checks = [], []
    try:
        for _ in range(peers):
            sock = SocketClient()
            await sock.connect(url, token)
            sockets.append(sock)
            check = PrecallClient(sock, SyntheticCamera(width, height))
            checks.append(check)
            await check.start()
        for check in checks:
            frame = (await check.frames("video", 1))[0]
            assert (frame.width, frame.height) == (width, height)
        # Count only the steady state, not the connection set-up.
        conn.send("mark")
        conn.recv()
        await asyncio.sleep(seconds)
        conn.send("report")
        report: dict[str, Any] = conn.recv()
        return {"peers": peers, "width": width, "height": height, **report}
    finally:
        for check in checks:
            await check.close()
        for sock in sockets:
            await sock.close()


async def run(args: argparse.Namespace, conn: Connection, url: str) -> None:
    idle: float | None = None
    for peers in args.peers:
        result = await measure(conn, url, peers, args.seconds, args.width, args.height)
        if peers == 0:
            idle = result["server_cpu_pct"]
        elif idle is not None:
            result["cpu_pct_per_peer"] = round((result["server_cpu_pct"] - idle) / peers, 1)
        print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--port", type=int, default=18931)
    parser.add_argument("--smoke", action="store_true", help="0 and 1 peer, 320×240, 2 s")
    args = parser.parse_args()
    if args.smoke:
        args.peers, args.seconds, args.width, args.height = [0, 1], 2.0, 320, 240
    beside_server(serve, args.port, lambda conn, url: run(args, conn, url))


if __name__ == "__main__":
    main()
