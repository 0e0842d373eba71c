"""Benchmark: CPU per recorded consult and the server's event-loop lag while recordings run.

The server (the real app, SQLite, demo network) runs in a child process of its
own; a probe task in it sleeps 5 ms in a loop and records how late it wakes up
(the event-loop lag), and it reads the CPU time of its recording workers (each
a process of its own) from /proc. In this process, each consult has two
participants (dr_li hosting, gp_zhang), aiortc peers sending a synthetic camera
(fresh noise: the decoder's and encoder's worst case) and a 440 Hz tone through
the real signaling; both agree, the host starts the recording, the worker joins
and records one composed WebM. Steps run 0, 1 and 2 recordings at once.

    .venv/bin/python bench/media_recording.py                 # 0, 1, 2 recordings, 20 s each
    .venv/bin/python bench/media_recording.py --width 640 --height 480   # heavier cameras
    .venv/bin/python bench/media_recording.py --recordings 1 --seconds 10
    .venv/bin/python bench/media_recording.py --smoke         # 0 and 1, 3 s, 160×120: for CI

Prints one JSON line per step: recordings, server CPU (% of one core), worker
CPU seconds per recorded consult-minute, pictures written/skipped by the workers,
the server's event-loop lag p50/p99/max in ms (target: p99 < 20 ms with two
recordings on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from bench.care import present
from bench.child import beside_server

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "tests" / "records" / "fixtures" / "snbdh_transaction.json"
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
PASSWORD = "Yihao@2026"
PROBE_S = 0.005
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def serve(port: int, data_dir: str, conn: Connection) -> None:
    """The child: the real app on ``port``; answers "mark" and "report" on ``conn``."""
    from server.app import create_app
    from server.config import load_settings
    from server.core.api import SERVICES
    from server.seed import seed_demo

    async def main() -> None:
        settings = load_settings(
            environ={}, data_dir=Path(data_dir), secret_key=SECRET, port=port,
            argon2_time_cost=1, argon2_memory_kib=64, log_level="WARNING",
            recording_max_concurrent=8, recording_min_free_mb=0,
        )  # fmt: skip
        app = create_app(settings)
        recording = app[SERVICES].recording
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

        def workers_cpu() -> dict[int, float]:
            return {w.process.pid: process_cpu(w.process.pid) for w in recording.workers.values()}

        prober = asyncio.create_task(probe())
        loop = asyncio.get_running_loop()
        conn.send("ready")
        cpu0, wall0, workers0 = time.process_time(), time.monotonic(), workers_cpu()
        while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
            if command == "mark":
                lags.clear()
                cpu0, wall0, workers0 = time.process_time(), time.monotonic(), workers_cpu()
                conn.send("marked")
            elif command == "report":
                wall = time.monotonic() - wall0
                cpu = (time.process_time() - cpu0) / wall * 100
                now = workers_cpu()
                worker_cpu = sum(now[pid] - workers0.get(pid, now[pid]) for pid in now)
                ordered = sorted(lags) or [0.0]
                conn.send({
                    "seconds": round(wall, 1),
                    "server_cpu_pct": round(cpu, 1),
                    "worker_cpu_s": round(worker_cpu, 2),
                    "lag_p50_ms": round(statistics.median(ordered), 2),
                    "lag_p99_ms": round(ordered[int(len(ordered) * 0.99) - 1 if len(ordered) > 1 else 0], 2),
                    "lag_max_ms": round(ordered[-1], 2),
                    "open_recordings": len(recording),
                })  # fmt: skip
        prober.cancel()
        await runner.cleanup()

    asyncio.run(main())


async def login(http: aiohttp.ClientSession, base: str, username: str) -> str:
    async with http.post(
        f"{base}api/v1/auth/login", json={"username": username, "password": PASSWORD}
    ) as response:
        body = await response.json()
        assert response.status == 200, body
        return str(body["access_token"])


async def prepare(base: str, count: int) -> list[dict[str, Any]]:
    """``count`` consults of one patient, requested by gp_zhang and accepted by dr_li."""
    async with aiohttp.ClientSession() as http:
        gp, li = await login(http, base, "gp_zhang"), await login(http, base, "dr_li")
        gp_h, li_h = {"Authorization": f"Bearer {gp}"}, {"Authorization": f"Bearer {li}"}
        async with http.post(
            f"{base}fhir",
            data=BUNDLE.read_bytes(),
            headers={**gp_h, "Content-Type": "application/fhir+json"},
        ) as response:
            body = await response.json()
            assert response.status == 200, body
        patient = int(body["entry"][0]["response"]["location"].split("/")[1])
        await present(http, base, "gp_zhang", "370202196005010115", "周国强")
        async with http.get(f"{base}api/v1/institutions?kind=tertiary", headers=gp_h) as r:
            qdsl = next(i["id"] for i in (await r.json())["items"] if i["code"] == "QDSL")
        consults = []
        for _ in range(count):
            now = datetime.now(UTC)
            request = {
                "patient_id": patient,
                "consent": {
                    "given_by": "patient",
                    "method": "written",
                    "given_at": now.isoformat(),
                },
                "reason": "胸闷",
                "purpose": "诊疗意见",
                "clinical_question": "是否冠心病",
                "case_summary": "高血压病史",
                "window_start": now.isoformat(),
                "window_end": (now + timedelta(days=1)).isoformat(),
                "invited_institution_id": qdsl,
            }
            async with http.post(f"{base}api/v1/consults", json=request, headers=gp_h) as r:
                consult = await r.json()
                assert r.status == 201, consult
            async with http.post(
                f"{base}api/v1/consults/{consult['id']}/accept", json={}, headers=li_h
            ) as r:
                consults.append(await r.json())
                assert r.status == 200, consults[-1]
    return consults


class Session:
    """One consult in session: dr_li and gp_zhang connected, each with a browser stand-in."""

    def __init__(self, consult: dict[str, Any]) -> None:
        self.consult = consult
        self.id: int = consult["id"]
        self.socks: list[Any] = []
        self.peers: list[Any] = []

    async def open(self, base: str, tokens: dict[str, str], width: int, height: int) -> None:
        from tests.helpers import SocketClient
        from tests.media.support import RoomPeer, SyntheticCamera

        host, gp = SocketClient(), SocketClient()
        await host.connect(base, tokens["dr_li"])
        await gp.connect(base, tokens["gp_zhang"])
        self.socks = [host, gp]
        assert (await host.call("consult.join", {"consult_id": self.id}))["ok"]
        await gp.call("consult.join", {"consult_id": self.id})
        ack = await host.call(
            "consult.admit", {"consult_id": self.id, "user_id": self.consult["requester_id"]}
        )
        assert ack["ok"], ack
        users = (self.consult["host_id"], self.consult["requester_id"])
        for sock, user in zip(self.socks, users, strict=True):
            peer = RoomPeer(sock, self.id, user, 128, lambda: SyntheticCamera(width, height))
            await peer.join()
            self.peers.append(peer)
            ack = await sock.call(
                "consult.recording.consent", {"consult_id": self.id, "agree": True}
            )
            assert ack["ok"], ack

    async def start(self) -> int:
        host = self.socks[0]
        ack = await host.call("consult.recording.start", {"consult_id": self.id}, timeout=20)
        assert ack["ok"], ack
        recording_id: int = ack["data"]["recording_id"]
        await host.wait_for(
            lambda e: e["type"] == "recording" and e["op"] == "started"
            and e["data"]["recording_id"] == recording_id,
            timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all(p.connected() for p in self.peers):
            assert time.monotonic() < deadline, "the participants never reached the recorder"
            await asyncio.sleep(0.1)
        return recording_id

    async def stop(self, recording_id: int) -> dict[str, Any]:
        host = self.socks[0]
        ack = await host.call("consult.recording.stop", {"consult_id": self.id})
        assert ack["ok"], ack
        finished = await host.wait_for(
            lambda e: e["type"] == "recording" and e["op"] in ("finished", "failed")
            and e["data"]["recording_id"] == recording_id,
            timeout=60,
        )  # fmt: skip
        assert finished["op"] == "finished", finished
        return finished["data"]  # type: ignore[no-any-return]

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()
        for sock in self.socks:
            await sock.close()


async def run(args: argparse.Namespace, conn: Connection, base: str) -> None:
    consults = await prepare(base, max(args.recordings))
    async with aiohttp.ClientSession() as http:
        tokens = {u: await login(http, base, u) for u in ("dr_li", "gp_zhang")}
    sessions = [Session(c) for c in consults]
    try:
        for session in sessions:
            await session.open(base, tokens, args.width, args.height)
        idle: float | None = None
        for count in args.recordings:
            running = [(s, await s.start()) for s in sessions[:count]]
            await asyncio.sleep(1.0)  # past the connection set-up: measure the steady state
            conn.send("mark")
            conn.recv()
            await asyncio.sleep(args.seconds)
            conn.send("report")
            report: dict[str, Any] = conn.recv()
            finished = [await s.stop(rid) for s, rid in running]
            result: dict[str, Any] = {"recordings": count, **report}
            if count == 0:
                idle = report["server_cpu_pct"]
            else:
                minutes = report["seconds"] / 60
                result["worker_cpu_s_per_recorded_minute"] = round(
                    report["worker_cpu_s"] / count / minutes, 1
                )
                if idle is not None:
                    result["server_cpu_pct_per_recording"] = round(
                        (report["server_cpu_pct"] - idle) / count, 1
                    )
                result["durations_s"] = [f["duration_seconds"] for f in finished]
            print(json.dumps(result), flush=True)
    finally:
        for session in sessions:
            await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=20.0)
    # Noise saturates the peers' bitrate at any size, so the worker's receiving cost is the
    # same at 320×240, while this load generator's own encoders (on the same cores as the
    # server, unlike real participants' devices) cost a quarter of 640×480.
    parser.add_argument("--width", type=int, default=320, help="the participants' cameras")
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--port", type=int, default=18941)
    parser.add_argument("--smoke", action="store_true", help="0 and 1 recording, 3 s, 160×120")
    args = parser.parse_args()
    if args.smoke:
        args.recordings, args.seconds, args.width, args.height = [0, 1], 3.0, 160, 120
    beside_server(serve, args.port, lambda conn, url: run(args, conn, url), stop_timeout=30)


if __name__ == "__main__":
    main()
