"""Consult chat on the real server: a message committed, acked and pushed to the other member.

Starts ``yihao serve`` (SQLite by default; ``--database-url`` / ``--redis-url`` for
PostgreSQL and Redis) on a fresh, seeded demo network. gp_zhang's clinic pushes a
visit over FHIR, the patient shows a presence code at the desk, and gp_zhang requests
``--rooms`` consults to QDSL that dr_li accepts: open consults, each a chat room
(``consult:<id>``). A load-generator process connects dr_li (the sender) and gp_zhang
(the other member) through real Socket.IO clients; the connect puts each socket in the
rooms of every consult it takes part in.

Then the offered message rate is stepped (open loop, spread round-robin over the
rooms, ``step_capacity``): per message, ``consult.chat`` is sent and the time until the
other member received the pushed ``event`` is measured (p50/p99); the sender's ack
must be ``ok`` and every message must arrive (``lost`` counts those that did not, or
were refused). The server's CPU per message is measured over each step (``CpuMeter``).
Capacity is the highest rate held at p99 ≤ 50 ms.

    python bench/consult_chat.py [--rooms 50] [--step-seconds 6] [--database-url URL] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.care import present
from bench.common import (
    Report,
    Row,
    Step,
    YihaoServer,
    add_common_arguments,
    login,
    machine,
    step_capacity,
    summary_ms,
    wait_quiet,
)

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "tests" / "records" / "fixtures" / "snbdh_transaction.json"
BOUND_MS = 50.0
TARGET_CPU_MS = 3.0
TARGET_RATE_PG = 200.0


async def open_consults(base: str, count: int) -> dict[str, Any]:
    """``count`` consults gp_zhang (SNBDH) requested and dr_li (QDSL) accepted: open rooms.

    Returns the consult ids and both clinicians' tokens (``gp``, ``li``)."""
    async with aiohttp.ClientSession() as http:
        gp, li = await login(http, base, "gp_zhang"), await login(http, base, "dr_li")
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
        consults: list[dict[str, Any]] = []
        for _ in range(count):
            async with http.post(f"{base}/api/v1/consults", json=request, headers=gp_h) as r:
                consult = await r.json()
                assert r.status == 201, consult
            async with http.post(
                f"{base}/api/v1/consults/{consult['id']}/accept", json={}, headers=li_h
            ) as r:
                assert r.status == 200, await r.text()
            consults.append(consult)
    return {"consults": consults, "gp": gp, "li": li}


# ----------------------------------------------------------------------------- load generator


async def _chat_load(base: str, prepared: dict[str, Any], commands: Any, out: Any) -> None:
    import socketio

    rooms = [c["id"] for c in prepared["consults"]]
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    state = {"acked": 0, "refused": 0, "received": 0, "last": 0.0}
    refusals: list[Any] = []

    def on_event(envelope: dict[str, Any]) -> None:
        if envelope.get("type") != "consult.chat":
            return
        started = sent_at.pop(envelope["data"].get("client_id", ""), None)
        if started is not None:
            now = time.perf_counter()
            latencies.append(now - started)
            state["received"] += 1
            state["last"] = now

    sender = socketio.AsyncClient(reconnection=False)
    other = socketio.AsyncClient(reconnection=False)
    other.on("event", on_event)
    await sender.connect(base, auth={"token": prepared["li"]}, transports=["websocket"])
    await other.connect(base, auth={"token": prepared["gp"]}, transports=["websocket"])

    def on_ack(ack: dict[str, Any]) -> None:
        if ack.get("ok"):
            state["acked"] += 1
        else:
            state["refused"] += 1
            if len(refusals) < 3:
                refusals.append(ack)

    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, commands.get)
        if command is None:
            break
        rate, seconds = command
        latencies.clear()
        sent_at.clear()
        state.update(acked=0, refused=0, received=0, last=0.0)
        total = max(1, int(rate * seconds))
        start = time.perf_counter()
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            client_id = uuid.uuid4().hex
            sent_at[client_id] = time.perf_counter()
            await sender.emit(
                "consult.chat",
                {"consult_id": rooms[n % len(rooms)], "client_id": client_id, "text": "请看心电图"},
                callback=on_ack,
            )
        sending_ended = time.perf_counter()
        for _ in range(100):  # drain (at most 5 s)
            if state["received"] >= total and state["acked"] + state["refused"] >= total:
                break
            await asyncio.sleep(0.05)
        span = max(state["last"] - start, seconds, sending_ended - start)
        out.put(
            {
                "sent": total,
                "received": state["received"],
                "acked": state["acked"],
                "refused": state["refused"],
                "refusals": refusals[:3],
                "latencies": list(latencies),
                "span": span,
            }
        )
    await sender.disconnect()
    await other.disconnect()


def _load_process(base: str, prepared: dict[str, Any], commands: Any, out: Any) -> None:
    asyncio.run(_chat_load(base, prepared, commands, out))


# ----------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> Report:
    database = "PostgreSQL" if args.database_url else "SQLite"
    report = Report("consult_chat", f"Consult chat, committed and pushed ({database})")
    load = wait_quiet(smoke=args.smoke)
    with tempfile.TemporaryDirectory() as data_dir:
        server = YihaoServer(
            data_dir, database_url=args.database_url or None, redis_url=args.redis_url or None
        )
        async with server:
            prepared = await open_consults(server.url, args.rooms)
            assert server.process is not None
            print(f"  server pid {server.process.pid}", file=sys.stderr, flush=True)
            ctx = mp.get_context("spawn")
            commands, out = ctx.Queue(), ctx.Queue()
            proc = ctx.Process(target=_load_process, args=(server.url, prepared, commands, out))
            proc.start()
            loop = asyncio.get_running_loop()
            assert server.cpu is not None
            cpu = server.cpu

            # Warm the path (first statements compiled, connections open) before measuring.
            commands.put((min(args.start, 10.0), 1.0))
            await loop.run_in_executor(None, out.get)

            async def one_step(rate: float) -> Step:
                commands.put((rate, args.step_seconds))
                cpu.start()
                result = await loop.run_in_executor(None, out.get)
                cpu.stop()
                figures = summary_ms(result["latencies"])
                lost = result["sent"] - result["received"] + result["refused"]
                if result["refusals"]:
                    print(f"  refused: {result['refusals']}", file=sys.stderr)
                return Step(
                    offered=rate,
                    achieved=result["received"] / result["span"] if result["span"] else 0.0,
                    p50_ms=figures["p50"],
                    p99_ms=figures["p99"],
                    cpu_ms_per_op=cpu.per_op_ms(result["sent"]),
                    lost=lost,
                    extra={"sent": result["sent"]},
                )

            profiler = None
            if args.profile:  # py-spy on the server while the steps run (raw: folded stacks)
                profiler = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(server.process.pid), "--rate", "100",
                    "--format", "raw", "--output", args.profile, "--nonblocking",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
            capacity = await step_capacity(
                one_step, start=args.start, bound_ms=BOUND_MS, growth=args.growth,
                max_steps=args.max_steps, smoke=args.smoke,
            )  # fmt: skip
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                await profiler.wait()
            commands.put(None)
            proc.join(30)
    held = [s for s in capacity.steps if s.holds(BOUND_MS)]
    cpu_ms = min((s.cpu_ms_per_op for s in held), default=float("nan"))
    # CPU per message where the server is busy (the highest step that held): fixed
    # costs (heartbeats, timers) spread over more messages there.
    busiest = capacity.best
    cpu_busy = busiest.cpu_ms_per_op if busiest is not None else float("nan")
    report.add(
        Row(
            workload=f"consult chat capacity, {args.rooms} rooms ({database}, p99 ≤ {BOUND_MS:g} ms)",
            yihao=capacity.describe(),
            target=f"≥ {TARGET_RATE_PG:g}/s on PostgreSQL" if args.database_url else "—",
            met=(capacity.rate >= TARGET_RATE_PG) if args.database_url and not args.smoke else None,
            detail="; ".join(
                f"{s.offered:.0f}/s: p50 {s.p50_ms:.1f} p99 {s.p99_ms:.1f} ms, "
                f"{s.cpu_ms_per_op:.2f} ms CPU, lost {s.lost}"
                for s in capacity.steps
            ),
        )
    )
    report.add(
        Row(
            workload=f"consult chat, server CPU per message ({database})",
            yihao=f"{cpu_busy:.2f} ms (at {busiest.offered:.0f}/s); best {cpu_ms:.2f} ms"
            if busiest is not None
            else "—",
            target=f"≤ {TARGET_CPU_MS:g} ms",
            met=None if args.smoke or busiest is None else cpu_busy <= TARGET_CPU_MS,
        )
    )
    report.notes.append(
        f"{args.rooms} open consults (gp_zhang ↔ dr_li); sender and other member are real "
        f"Socket.IO clients in one load-generator process; latency is send → the other member "
        f"received the pushed event; {args.step_seconds:g} s per step; load before: {load:.2f}; "
        f"machine: {machine()}"
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--start", type=float, default=10.0, help="first offered rate, msg/s")
    parser.add_argument("--growth", type=float, default=1.5)
    parser.add_argument("--step-seconds", type=float, default=6.0)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--profile", help="py-spy the server over the steps into this file")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    if args.smoke:
        args.rooms, args.step_seconds, args.start = 3, 1.5, 5.0
    report = asyncio.run(run(args))
    report.write(args.json)


if __name__ == "__main__":
    main()
