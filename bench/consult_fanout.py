"""Consult-room fan-out and emit-with-ack round trip: Yihao's gateway beside a Node.js Socket.IO 4 peer.

One run starts both servers (``bench/consult_fanout_server.py`` and
``bench/node_peer/server.js``) and drives each in turn with the same load from
separate load-generator processes: many rooms of 2–10 participants; in each
room one member after another sends a 1 KB message at a fixed rate; every other
member receives it. Reported per server: deliveries per second, send→receive
latency p50/p99 (sender and receivers share the machine's clock), and the
round trip of an emit-with-ack on one otherwise idle connection.

    python bench/consult_fanout.py            # the full run (a minute or two)
    python bench/consult_fanout.py --smoke    # a few seconds, for CI
    python bench/consult_fanout.py --nodes 1,2,3 --redis redis://127.0.0.1:6379/0 --rate 6
                                              # the gateway on 1, 2, 3 nodes behind nginx

With ``--nodes``, the same rooms and load go through nginx (the loopback cluster's
configuration from ``server/cluster.py``) to N gateway processes sharing Redis
(``AsyncRedisManager``): members of one room sit on different nodes, so most
deliveries cross Redis. Reported per node count: deliveries/s, latency p50/p99 and
the scaling factor against one node. Everything (nodes, nginx, Redis, the load
generators) shares this machine's cores, so on 2 cores the factor measures
contention, not what N machines would do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    Capacity,
    CpuMeter,
    Report,
    Row,
    Step,
    add_common_arguments,
    free_port,
    machine,
    step_capacity,
    wait_quiet,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAD = "x" * 1000  # with the envelope, about 1 KB on the wire
BOUND_MS = 50.0  # the latency bound a step must hold (p99)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(url: str, rooms: list[tuple[str, int]], rate: float, duration: float) -> dict:
    latencies: list[float] = []
    sending = False
    clients: list[socketio.AsyncClient] = []
    members: dict[str, list[socketio.AsyncClient]] = {}

    def on_msg(data: dict[str, Any]) -> None:
        # Every message sent in the window counts, also when it lands during the drain.
        latencies.append((time.time_ns() - data["t"]) / 1e6)

    uid = 0
    for room, size in rooms:
        members[room] = []
        for _ in range(size):
            uid += 1
            client = socketio.AsyncClient(reconnection=False)
            client.on("msg", on_msg)
            await client.connect(url, auth={"token": str(uid)}, transports=["websocket"])
            ack = await client.call("join", {"room": room}, timeout=10)
            assert ack["ok"], ack
            clients.append(client)
            members[room].append(client)

    sent = 0
    expected = 0

    async def talk(room: str) -> None:
        nonlocal sent, expected
        people = members[room]
        turn = random.randrange(len(people))
        await asyncio.sleep(random.random() / rate)
        while sending:
            turn = (turn + 1) % len(people)
            await people[turn].emit("msg", {"room": room, "t": time.time_ns(), "pad": PAD})
            sent += 1
            expected += len(people) - 1
            await asyncio.sleep(1 / rate)

    sending = True
    tasks = [asyncio.create_task(talk(room)) for room, _ in rooms]
    await asyncio.sleep(duration)
    sending = False
    await asyncio.gather(*tasks)
    for _ in range(50):  # drain: wait until everything sent has landed (at most 5 s)
        if len(latencies) >= expected:
            break
        await asyncio.sleep(0.1)
    for client in clients:
        await client.disconnect()
    return {"sent": sent, "expected": expected, "latencies": latencies}


def _load_process(
    url: str, rooms: list[tuple[str, int]], rate: float, duration: float, out: Any
) -> None:
    out.put(asyncio.run(_load(url, rooms, rate, duration)))


async def _ack_round_trips(url: str, count: int) -> list[float]:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"token": "999999"}, transports=["websocket"])
    times = []
    for n in range(count + 50):
        start = time.perf_counter()
        ack = await client.call("echo", {"n": n}, timeout=10)
        elapsed = (time.perf_counter() - start) * 1000
        assert ack["ok"], ack
        if n >= 50:  # warm-up excluded
            times.append(elapsed)
    await client.disconnect()
    return times


def _ack_process(url: str, count: int, out: Any) -> None:
    out.put(asyncio.run(_ack_round_trips(url, count)))


def start(cmd: list[str], cwd: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise SystemExit(f"{cmd[0]} did not start: {line!r}")
    return proc


def run_against(
    name: str, url: str, args: argparse.Namespace, rooms: list[tuple[str, int]]
) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    shares = [rooms[i :: args.procs] for i in range(args.procs)]
    procs = [
        ctx.Process(target=_load_process, args=(url, share, args.rate, args.duration, out))
        for share in shares
        if share
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    latencies = [x for r in results for x in r["latencies"]]
    sent = sum(r["sent"] for r in results)
    ack_proc = ctx.Process(target=_ack_process, args=(url, args.acks, out))
    ack_proc.start()
    acks = out.get()
    ack_proc.join()
    return {
        "server": name,
        "messages_sent": sent,
        "deliveries": len(latencies),
        "deliveries_expected": sum(r["expected"] for r in results),
        "deliveries_per_s": round(len(latencies) / args.duration, 1),
        "latency_ms_p50": round(percentile(latencies, 0.50), 2),
        "latency_ms_p99": round(percentile(latencies, 0.99), 2),
        "ack_rtt_ms_p50": round(percentile(acks, 0.50), 3),
        "ack_rtt_ms_p99": round(percentile(acks, 0.99), 3),
    }


def behind_nginx(args: argparse.Namespace, rooms: list[tuple[str, int]], nodes: int) -> dict:
    """The gateway on ``nodes`` processes sharing Redis, behind nginx, under the same load."""
    from server.cluster import free_port, nginx_binary, render_nginx_conf

    ports = [free_port() for _ in range(nodes)]
    procs = [
        start([sys.executable, str(HERE / "consult_fanout_server.py"), "--port", str(port),
               "--redis", args.redis], ROOT)
        for port in ports
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / "tmp" / sub).mkdir(parents=True)
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(render_nginx_conf(prefix, port, ports))
        nginx = subprocess.Popen(
            [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        )
        try:
            for _ in range(100):  # until nginx listens
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            return run_against(f"{nodes} node(s)", f"http://127.0.0.1:{port}", args, rooms)
        finally:
            nginx.terminate()
            nginx.wait(10)
            for proc in procs:
                proc.terminate()
                proc.wait(10)


def scale_out(args: argparse.Namespace, rooms: list[tuple[str, int]], counts: list[int]) -> None:
    results = [behind_nginx(args, rooms, n) for n in counts]
    base = max(results[0]["deliveries_per_s"], 1e-9)
    print(json.dumps({"rooms": args.rooms, "participants": sum(s for _, s in rooms),
                      "rate_per_room": args.rate, "duration_s": args.duration}))  # fmt: skip
    keys = list(results[0])
    width = max(len(k) for k in keys)
    for key in keys:
        print(f"{key:<{width}}  " + "  ".join(f"{r[key]!s:>14}" for r in results))
    factors = [round(r["deliveries_per_s"] / base, 3) for r in results]
    print(f"{'scaling factor':<{width}}  " + "  ".join(f"{f!s:>14}" for f in factors))
    print(
        "(every node, nginx, Redis and the load generators share this machine's cores: "
        "on 2 cores the factor measures contention, not N machines)"
    )


# ----------------------------------------------------------------------------- capacity


class RoomLoad:
    """One load-generator process's share of the rooms, over raw websockets.

    A member is an aiohttp websocket speaking the engine.io 4 / Socket.IO 5 frames
    (``42["msg",…]`` out, ``42["msg",…]`` in, pings answered): far lighter than
    python-socketio's client, so the generators are not what limits the rate. The
    connections stay up from step to step.
    """

    def __init__(self, url: str, rooms: list[tuple[str, int]], deflate: bool) -> None:
        self.ws_url = url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.rooms = rooms
        self.deflate = deflate
        self.members: dict[str, list[aiohttp.ClientWebSocketResponse]] = {}
        self.latencies: list[float] = []
        self.recording = False
        self.readers: list[asyncio.Task[None]] = []

    async def connect(self, http: aiohttp.ClientSession) -> None:
        uid = 0
        for room, size in self.rooms:
            self.members[room] = []
            for _ in range(size):
                uid += 1
                ws = await http.ws_connect(self.ws_url, compress=15 if self.deflate else 0)
                assert (await ws.receive_str(timeout=30)).startswith("0")
                await ws.send_str("40" + json.dumps({"token": str(uid)}))
                assert (await ws.receive_str(timeout=30)).startswith("40")
                await ws.send_str("420" + json.dumps(["join", {"room": room}]))
                ack = await ws.receive_str(timeout=30)
                assert ack.startswith("430") and '"ok":true' in ack.replace(" ", ""), ack
                self.members[room].append(ws)
                self.readers.append(asyncio.ensure_future(self._read(ws)))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            data = msg.data
            if data == "2":
                await ws.send_str("3")
            elif data.startswith('42["msg"') and self.recording:
                sent = orjson.loads(data[2:])[1]["t"]
                self.latencies.append((time.time_ns() - sent) / 1e6)

    async def step(self, rate: float, duration: float) -> dict[str, Any]:
        """Each room's members take turns sending at ``rate`` messages/s for ``duration``."""
        self.latencies = []
        self.recording = True
        sent = expected = 0
        stop_at = time.monotonic() + duration

        async def talk(room: str) -> None:
            nonlocal sent, expected
            people = self.members[room]
            turn = random.randrange(len(people))
            await asyncio.sleep(random.random() / rate)
            next_at = time.monotonic()
            while next_at < stop_at:
                turn = (turn + 1) % len(people)
                frame = (
                    '42["msg",' + json.dumps({"room": room, "t": time.time_ns(), "pad": PAD}) + "]"
                )
                await people[turn].send_str(frame)
                sent += 1
                expected += len(people) - 1
                next_at += 1 / rate  # open loop: the schedule does not wait for the server
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        await asyncio.gather(*(talk(room) for room, _ in self.rooms))
        for _ in range(50):  # drain: what was sent in the window may land up to 5 s later
            if len(self.latencies) >= expected:
                break
            await asyncio.sleep(0.1)
        self.recording = False
        return {"sent": sent, "expected": expected, "latencies": self.latencies}


async def _room_load(
    url: str, rooms: list[tuple[str, int]], deflate: bool, ctl: Any, out: Any
) -> None:
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        load = RoomLoad(url, rooms, deflate)
        await load.connect(http)
        out.put("connected")
        while True:
            command = await loop.run_in_executor(None, ctl.get)
            if command is None:
                break
            out.put(await load.step(*command))
        for task in load.readers:
            task.cancel()


def _room_load_process(*args: Any) -> None:
    try:
        import uvloop

        uvloop.run(_room_load(*args))
    except ImportError:
        asyncio.run(_room_load(*args))


class Target:
    """A server under test (one process or N sharing the port) and its load generators."""

    def __init__(self, name: str, commands: list[list[str]], port: int) -> None:
        self.name = name
        self.commands = commands
        self.url = f"http://127.0.0.1:{port}"
        self.procs: list[subprocess.Popen[str]] = []
        self.meters: list[CpuMeter] = []

    def __enter__(self) -> Target:
        for cmd in self.commands:
            self.procs.append(start(cmd, ROOT))
        self.meters = [CpuMeter(p.pid) for p in self.procs]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def cpu_start(self) -> None:
        for m in self.meters:
            m.start()

    def cpu_stop(self) -> float:
        return sum(m.stop() for m in self.meters)


async def capacity(target: Target, rooms: list[tuple[str, int]], args: argparse.Namespace,
                   deflate: bool) -> tuple[Capacity, list[float]]:  # fmt: skip
    """Step the per-room message rate until p99 > bound; then the ack round trips."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    shares = [rooms[i :: args.procs] for i in range(args.procs) if rooms[i :: args.procs]]
    controls = [ctx.Queue() for _ in shares]
    gens = [
        ctx.Process(target=_room_load_process, args=(target.url, share, deflate, ctl, out))
        for share, ctl in zip(shares, controls, strict=True)
    ]
    for g in gens:
        g.start()
    loop = asyncio.get_running_loop()
    for _ in gens:
        assert await loop.run_in_executor(None, out.get) == "connected"
    fanout = sum(size - 1 for _, size in rooms)

    async def run_step(deliveries_per_s: float) -> Step:
        rate = deliveries_per_s / fanout
        target.cpu_start()
        for ctl in controls:
            ctl.put((rate, args.duration))
        parts = [await loop.run_in_executor(None, out.get) for _ in gens]
        cpu = target.cpu_stop()
        latencies = [x for p in parts for x in p["latencies"]]
        expected = sum(p["expected"] for p in parts)
        return Step(
            offered=fanout * rate,
            achieved=len(latencies) / args.duration,
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            cpu_ms_per_op=cpu * 1000 / max(len(latencies), 1),
            lost=max(0, expected - len(latencies)),
        )

    print(f"{target.name}:", file=sys.stderr, flush=True)
    try:
        found = await step_capacity(run_step, start=args.start, bound_ms=BOUND_MS,
                                    growth=args.growth, smoke=args.smoke)  # fmt: skip
    finally:
        for ctl in controls:
            ctl.put(None)
        for g in gens:
            await loop.run_in_executor(None, g.join, 30)
    ack_proc = ctx.Process(target=_ack_process, args=(target.url, args.acks, out))
    ack_proc.start()
    acks = await loop.run_in_executor(None, out.get)
    ack_proc.join()
    return found, acks


def gateway_commands(port: int, workers: int, redis: str | None, deflate: bool) -> list[list[str]]:
    extra = ["--compression"] if deflate else []
    if workers <= 1:  # one process: its own in-memory manager, no Redis
        return [[sys.executable, str(HERE / "consult_fanout_server.py"), "--port", str(port),
                 *extra]]  # fmt: skip
    assert redis
    return [
        [sys.executable, str(HERE / "consult_fanout_server.py"), "--port", str(port),
         "--reuse-port", "--redis", redis, *extra]
        for _ in range(workers)
    ]  # fmt: skip


def node_command(port: int, deflate: bool) -> list[str]:
    return [
        "node",
        str(HERE / "node_peer" / "server.js"),
        str(port),
        *(["--deflate"] if deflate else []),
    ]


async def compare(args: argparse.Namespace, rooms: list[tuple[str, int]], report: Report) -> None:
    variants: list[tuple[str, bool, int]] = [("one process", False, 1)]
    if args.redis and args.workers > 1:
        variants.append((f"{args.workers} processes (SO_REUSEPORT, Redis)", False, args.workers))
    if args.deflate:
        variants.append(("per-message deflate offered", True, 1))
    node_cache: dict[bool, tuple[Capacity, list[float]]] = {}
    for label, deflate, workers in variants:
        wait_quiet(smoke=args.smoke or args.no_wait)
        port = free_port()
        with Target(f"yihao gateway, {label}",
                    gateway_commands(port, workers, args.redis, deflate), port) as target:  # fmt: skip
            yihao, yihao_acks = await capacity(target, rooms, args, deflate)
        if deflate not in node_cache:
            wait_quiet(smoke=args.smoke or args.no_wait)
            port = free_port()
            with Target(f"node socket.io 4{', deflate' if deflate else ''}",
                        [node_command(port, deflate)], port) as target:  # fmt: skip
                node_cache[deflate] = await capacity(target, rooms, args, deflate)
        node, node_acks = node_cache[deflate]
        ratio = yihao.rate / node.rate if node.rate else float("nan")
        goal = 1.0 if workers > 1 else 0.5
        report.add(Row(
            f"fan-out capacity, {label} (deliveries/s at p99 ≤ {BOUND_MS:g} ms)",
            yihao.describe(), node.describe(),
            f"ratio ≥ {goal:g}" + (" per machine" if workers > 1 else " per process"),
            ratio >= goal if not deflate else None,
            f"ratio {ratio:.2f}",
        ))  # fmt: skip
        best = yihao.best or yihao.steps[0]
        node_best = node.best or node.steps[0]
        report.add(Row(f"server CPU per delivery, {label}", f"{best.cpu_ms_per_op:.3f} ms",
                       f"{node_best.cpu_ms_per_op:.3f} ms"))  # fmt: skip
        if not deflate and workers == 1:
            y50, y99 = percentile(yihao_acks, 0.5), percentile(yihao_acks, 0.99)
            n50, n99 = percentile(node_acks, 0.5), percentile(node_acks, 0.99)
            report.add(Row("emit-with-ack round trip p50 / p99",
                           f"{y50:.3f} / {y99:.3f} ms", f"{n50:.3f} / {n99:.3f} ms",
                           "≤ 1.2× Node", y50 <= 1.2 * n50 and y99 <= 1.2 * n99,
                           f"{y50 / n50:.2f}× / {y99 / n99:.2f}×"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds a step is held")
    parser.add_argument("--start", type=float, default=1000.0, help="first deliveries/s offered")
    parser.add_argument("--growth", type=float, default=1.4, help="each step offers this × more")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--acks", type=int, default=2000, help="emit-with-ack round trips")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="gateway processes sharing the port (with --redis)")  # fmt: skip
    parser.add_argument("--redis", default=None, help="Redis URL: the --workers variant")
    parser.add_argument("--deflate", action="store_true", help="also with deflate offered")
    parser.add_argument("--nodes", default="", help="e.g. 1,2,3: the gateway behind nginx")
    parser.add_argument("--rate", type=float, default=2.0, help="with --nodes: msgs/s per room")
    args = parser.parse_args()
    if args.smoke:
        args.rooms, args.duration, args.procs, args.acks = 4, 1.5, 1, 100
        args.start, args.rate = 50.0, 5.0
    rng = random.Random(2026)
    rooms = [(f"consult:{n}", rng.randint(2, 10)) for n in range(args.rooms)]
    if args.nodes:
        args.redis = args.redis or "redis://127.0.0.1:6379/0"
        scale_out(args, rooms, [int(n) for n in args.nodes.split(",")])
        return
    report = Report(
        "consult_fanout", "Consult-room fan-out and emit-with-ack, beside Node.js Socket.IO 4"
    )
    asyncio.run(compare(args, rooms, report))
    report.notes.append(
        f"{args.rooms} rooms, {sum(s for _, s in rooms)} members, 1 KB messages; each step held "
        f"{args.duration:g} s, offered × {args.growth:g} until p99 > {BOUND_MS:g} ms or the "
        f"server fell behind; {args.procs} load-generator processes (raw websockets) on the "
        f"same machine. Machine: {machine()}."
    )
    report.write(args.json)


if __name__ == "__main__":
    main()
