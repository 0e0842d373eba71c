"""Consult join time on the real server: connect (auth), join the session, replay, record snapshot.

Starts ``yihao serve`` (``bench/common.py`` ``YihaoServer``) on a fresh SQLite data
directory (``--database-url`` and ``--redis-url`` point it at PostgreSQL/Redis
instead), seeds the demo network, opens a consult from gp_zhang's clinic to QDSL
(``bench/consult_chat.py`` ``open_consults``), has dr_li join and admit gp_zhang and
leave 20 messages of history. Then, from a load-generator process, gp_zhang joins
again and again, each time the way a client does after a reload:

    connect with the token → consult.join → sync (replay of consult:<id> from 0)
    → GET /api/v1/consults/<id>/record (snapshot + live summary) → disconnect

and the script reports p50/p95/p99 of the whole sequence and of each part (target:
p95 ≤ 100 ms) and the server's CPU per join (``CpuMeter``).

    python bench/consult_join.py [--joins 200] [--database-url URL] [--smoke] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    Report,
    Row,
    YihaoServer,
    add_common_arguments,
    machine,
    summary_ms,
    wait_quiet,
)
from bench.consult_chat import open_consults

TARGET_P95_MS = 100.0
PARTS = ("connect", "join", "sync", "record", "total")


async def _prepare(base: str) -> dict[str, Any]:
    opened = await open_consults(base, 1)
    consult = opened["consults"][0]
    host = socketio.AsyncClient(reconnection=False)
    await host.connect(base, auth={"token": opened["li"]}, transports=["websocket"])
    assert (await host.call("consult.join", {"consult_id": consult["id"]}))["ok"]
    gp_sock = socketio.AsyncClient(reconnection=False)
    await gp_sock.connect(base, auth={"token": opened["gp"]}, transports=["websocket"])
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
    return {"consult_id": consult["id"], "gp_token": opened["gp"]}


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


async def run(args: argparse.Namespace) -> Report:
    database = "PostgreSQL" if args.database_url else "SQLite"
    report = Report("consult_join", f"Consult join: connect, join, replay, record ({database})")
    load = wait_quiet(smoke=args.smoke)
    with tempfile.TemporaryDirectory() as data_dir:
        server = YihaoServer(
            data_dir, database_url=args.database_url or None, redis_url=args.redis_url or None
        )
        async with server:
            prepared = await _prepare(server.url)
            ctx = mp.get_context("spawn")
            loop = asyncio.get_running_loop()
            assert server.cpu is not None
            times: dict[str, list[float]] = {}
            for count, measured in ((min(5, args.joins), False), (args.joins, True)):
                out = ctx.Queue()
                proc = ctx.Process(
                    target=_join_process,
                    args=(server.url, prepared["consult_id"], prepared["gp_token"], count, out),
                )
                proc.start()
                if measured:  # after a few warm-up joins: statements compiled, pools open
                    server.cpu.start()
                times = await loop.run_in_executor(None, out.get)
                if measured:
                    server.cpu.stop()
                proc.join()
    joins = len(times["total"])
    figures = {part: summary_ms(v / 1000 for v in times[part]) for part in PARTS}
    for part in PARTS:
        print(
            f"  {part}: p50 {figures[part]['p50']:.1f} p95 {figures[part]['p95']:.1f} "
            f"p99 {figures[part]['p99']:.1f} ms",
            file=sys.stderr,
        )
    total = figures["total"]
    report.add(
        Row(
            workload=f"consult join (connect, auth, replay, record) p95, {database}",
            yihao=f"{total['p95']:.1f} ms (p50 {total['p50']:.1f}, p99 {total['p99']:.1f})",
            target=f"p95 ≤ {TARGET_P95_MS:g} ms",
            met=None if args.smoke else total["p95"] <= TARGET_P95_MS,
            detail="; ".join(
                f"{part} p50 {figures[part]['p50']:.1f} / p95 {figures[part]['p95']:.1f} ms"
                for part in PARTS[:-1]
            ),
        )
    )
    report.add(
        Row(
            workload=f"consult join, server CPU per join, {database}",
            yihao=f"{server.cpu.per_op_ms(joins):.1f} ms",
        )
    )
    report.notes.append(
        f"{joins} joins one after another from one load-generator process (gp_zhang, 20 "
        f"messages to replay); load before: {load:.2f}; machine: {machine()}"
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--joins", type=int, default=200)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    if args.smoke:
        args.joins = 10
    report = asyncio.run(run(args))
    report.write(args.json)


if __name__ == "__main__":
    main()
