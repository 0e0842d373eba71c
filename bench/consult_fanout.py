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
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import socketio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAD = "x" * 1000  # with the envelope, about 1 KB on the wire


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2.0, help="messages per second per room")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--acks", type=int, default=2000, help="emit-with-ack round trips")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--raw", action="store_true", help="also bare python-socketio handlers")
    parser.add_argument("--nodes", default="", help="e.g. 1,2,3: the gateway behind nginx")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="with --nodes")
    args = parser.parse_args()
    if args.smoke:
        args.rooms, args.rate, args.duration, args.procs, args.acks = 4, 5.0, 2.0, 1, 100
    rng = random.Random(2026)
    rooms = [(f"consult:{n}", rng.randint(2, 10)) for n in range(args.rooms)]
    if args.nodes:
        scale_out(args, rooms, [int(n) for n in args.nodes.split(",")])
        return

    servers = [
        (
            "yihao (python-socketio gateway)",
            3101,
            [sys.executable, str(HERE / "consult_fanout_server.py"), "--port", "3101"],
        ),
        ("node socket.io 4", 3102, ["node", str(HERE / "node_peer" / "server.js"), "3102"]),
    ]
    if args.raw:
        servers.append(
            (
                "bare python-socketio",
                3104,
                [sys.executable, str(HERE / "consult_fanout_server.py"), "--port", "3104", "--raw"],
            )
        )
    procs = [start(cmd, ROOT) for _, _, cmd in servers]
    try:
        results = [
            run_against(name, f"http://127.0.0.1:{port}", args, rooms) for name, port, _ in servers
        ]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    config = {
        "rooms": args.rooms,
        "participants": sum(s for _, s in rooms),
        "rate_per_room": args.rate,
        "duration_s": args.duration,
        "load_processes": args.procs,
    }
    ratio = results[0]["deliveries_per_s"] / max(results[1]["deliveries_per_s"], 1e-9)
    report = {"config": config, "results": results, "throughput_ratio": round(ratio, 3)}
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return
    print(json.dumps(config))
    keys = list(results[0])
    width = max(len(k) for k in keys)
    for key in keys:
        print(f"{key:<{width}}  " + "  ".join(f"{r[key]!s:>32}" for r in results))
    print(f"throughput ratio (yihao / node): {ratio:.3f}")


if __name__ == "__main__":
    main()
