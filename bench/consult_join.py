"""Consult join time on the real server: connect (auth), join the session, replay, record snapshot.

Starts ``yihao serve`` on a fresh SQLite data directory (``--database-url`` and
``--redis-url`` point it at PostgreSQL/Redis instead), seeds the demo network,
has gp_zhang's clinic push a visit over FHIR, requests a consult to QDSL and
has dr_li accept and open it. Then, from a load-generator process, gp_zhang
joins again and again, each time the way a client does after a reload:

    connect with the token → consult.join → sync (replay of consult:<id> from 0)
    → GET /api/v1/consults/<id>/record (snapshot + live summary) → disconnect

and the script reports p50/p95/p99 of the whole sequence (target: p95 ≤ 100 ms).

    python bench/consult_join.py [--joins 200] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.care import present
from server.core.checkpoints import ensure_key_file

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "tests" / "records" / "fixtures" / "snbdh_transaction.json"


PASSWORD = "Yihao@2026"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _login(http: aiohttp.ClientSession, base: str, username: str) -> str:
    async with http.post(
        f"{base}/api/v1/auth/login", json={"username": username, "password": PASSWORD}
    ) as response:
        body = await response.json()
        assert response.status == 200, body
        return str(body["access_token"])


async def _prepare(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        gp, li = await _login(http, base, "gp_zhang"), await _login(http, base, "dr_li")
        gp_h, li_h = {"Authorization": f"Bearer {gp}"}, {"Authorization": f"Bearer {li}"}
        async with http.post(
            f"{base}/fhir",
            data=BUNDLE.read_bytes(),
            headers={**gp_h, "Content-Type": "application/fhir+json"},
        ) as response:
            body = await response.json()
            assert response.status == 200, body
        patient = int(body["entry"][0]["response"]["location"].split("/")[1])
        await present(http, base, "gp_zhang", "370202196005010115", "周国强")
        async with http.get(f"{base}/api/v1/institutions?kind=tertiary", headers=gp_h) as r:
            qdsl = next(i["id"] for i in (await r.json())["items"] if i["code"] == "QDSL")
        now = datetime.now(UTC)
        request = {
            "patient_id": patient,
            "consent": {"given_by": "patient", "method": "written", "given_at": now.isoformat()},
            "reason": "胸闷",
            "purpose": "诊疗意见",
            "clinical_question": "是否冠心病",
            "case_summary": "高血压病史",
            "window_start": now.isoformat(),
            "window_end": (now + timedelta(days=1)).isoformat(),
            "invited_institution_id": qdsl,
        }
        async with http.post(f"{base}/api/v1/consults", json=request, headers=gp_h) as r:
            consult = await r.json()
            assert r.status == 201, consult
        url = f"{base}/api/v1/consults/{consult['id']}"
        async with http.post(url + "/accept", json={}, headers=li_h) as r:
            assert r.status == 200, await r.text()
    host = socketio.AsyncClient(reconnection=False)
    await host.connect(base, auth={"token": li}, transports=["websocket"])
    assert (await host.call("consult.join", {"consult_id": consult["id"]}))["ok"]
    gp_sock = socketio.AsyncClient(reconnection=False)
    await gp_sock.connect(base, auth={"token": gp}, transports=["websocket"])
    await gp_sock.call("consult.join", {"consult_id": consult["id"]})
    ack = await host.call(
        "consult.admit", {"consult_id": consult["id"], "user_id": consult["requester_id"]}
    )
    assert ack["ok"], ack
    for n in range(20):  # some history to replay
        await host.call(
            "consult.chat",
            {"consult_id": consult["id"], "client_id": f"bench-{n:04d}", "text": "历史消息" * 20},
        )
    await gp_sock.disconnect()
    await host.disconnect()
    return {"consult_id": consult["id"], "gp_token": gp}


async def _joins(base: str, consult_id: int, token: str, count: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in ("connect", "join", "sync", "record", "total")}
    stream = f"consult:{consult_id}"
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            start = time.perf_counter()
            sock = socketio.AsyncClient(reconnection=False)
            await sock.connect(base, auth={"token": token}, transports=["websocket"])
            marks = [time.perf_counter()]
            joined = await sock.call("consult.join", {"consult_id": consult_id})
            assert joined["ok"] and joined["data"]["state"] == "joined", joined
            marks.append(time.perf_counter())
            replay = await sock.call("sync", {"positions": {stream: 0}})
            assert replay["ok"] and len(replay["data"]["events"]) >= 20, replay
            marks.append(time.perf_counter())
            async with http.get(
                f"{base}/api/v1/consults/{consult_id}/record",
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                assert response.status == 200, await response.text()
                await response.read()
            marks.append(time.perf_counter())
            points = [start, *marks]
            for key, (a, b) in zip(
                ("connect", "join", "sync", "record"), itertools.pairwise(points), strict=True
            ):
                times[key].append((b - a) * 1000)
            times["total"].append((marks[-1] - start) * 1000)
            await sock.disconnect()
    return times


def _join_process(base: str, consult_id: int, token: str, count: int, out: Any) -> None:
    out.put(asyncio.run(_joins(base, consult_id, token, count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--joins", type=int, default=200)
    parser.add_argument("--port", type=int, default=3103)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.joins = 10
    base = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = dict(
            os.environ,
            YIHAO_DATA_DIR=data_dir,
            YIHAO_LOG_LEVEL="WARNING",
            YIHAO_SECRET_KEY="bench-secret-key-that-is-long-enough-0123",
        )
        if args.database_url:
            env.update(
                YIHAO_DATABASE_URL=args.database_url,
                YIHAO_AUTO_MIGRATE="true",
                YIHAO_CHECKPOINT_KEY_FILE=str(ensure_key_file(Path(data_dir) / "checkpoint_key")),
            )
        if args.redis_url:
            env["YIHAO_REDIS_URL"] = args.redis_url
        yihao = [sys.executable, "-m", "server.cli"]
        subprocess.run([*yihao, "migrate"], env=env, cwd=ROOT, check=True)
        subprocess.run([*yihao, "seed-demo"], env=env, cwd=ROOT, check=True, capture_output=True)
        server = subprocess.Popen([*yihao, "serve", "--port", str(args.port)], env=env, cwd=ROOT)
        try:
            for _ in range(100):
                try:
                    import urllib.request

                    urllib.request.urlopen(f"{base}/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            prepared = asyncio.run(_prepare(base))
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            proc = ctx.Process(
                target=_join_process,
                args=(base, prepared["consult_id"], prepared["gp_token"], args.joins, out),
            )
            proc.start()
            times = out.get()
            proc.join()
        finally:
            server.terminate()
            server.wait(10)
    report: dict[str, Any] = {
        "joins": len(times["total"]),
        "database": "postgresql" if args.database_url else "sqlite",
    }
    for key, values in times.items():
        report[f"{key}_ms_p50"] = round(percentile(values, 0.50), 2)
        report[f"{key}_ms_p95"] = round(percentile(values, 0.95), 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
