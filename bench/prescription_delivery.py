"""Prescription delivery: signed → committed → received by the pharmacy's socket.

One run starts a Yihao server in a subprocess (SQLite in a temporary folder by
default, or ``--database-url``/``--redis-url``), seeds the demo network and drug
catalogue, adds pharmacies until ``--pharmacies`` are online (one pharmacist
socket each), and gives a patient an offline-diagnosed hypertension through the
FHIR endpoint. Then a community doctor writes prescriptions at a steady rate
(open loop: each starts on schedule whether or not the previous one finished),
each routed to the next pharmacy in turn.

Reported: prescriptions created, received live, lost (created but never
received live; must be 0), lost after a ``sync`` catch-up, and latency p50/p99/max
for two spans — request → received (the doctor's POST that signs and commits, until
the pharmacy's socket has the event) and committed → received (the event's commit
timestamp until receipt; same machine clock).

    python bench/prescription_delivery.py                 # 50/s for 20 s, 4 pharmacies
    python bench/prescription_delivery.py --smoke         # a few seconds, for CI
    python bench/prescription_delivery.py --rate 50 --duration 60 --pharmacies 8
    python bench/prescription_delivery.py --nodes 2 --database-url postgresql+asyncpg://… \
        --redis-url redis://…                             # two server processes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.care import present
from server.core.checkpoints import ensure_key_file

ROOT = Path(__file__).resolve().parent.parent

PASSWORD = "Yihao@2026"
RESIDENT_ID = "370202196005010115"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record_bundle() -> dict[str, Any]:
    """A community visit: the patient, an outpatient encounter, hypertension diagnosed there."""
    patient, visit = (
        "urn:uuid:b0000000-0000-4000-8000-000000000001",
        "urn:uuid:b0000000-0000-4000-8000-000000000002",
    )
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": patient, "request": {"method": "POST", "url": "Patient"},
             "resource": {"resourceType": "Patient", "gender": "male", "birthDate": "1960-05-01",
                          "identifier": [{"system": "urn:oid:2.16.840.1.113883.2.23.1.8.4.1",
                                          "value": RESIDENT_ID}],
                          "name": [{"family": "周", "given": ["国强"]}]}},
            {"fullUrl": visit, "request": {"method": "POST", "url": "Encounter"},
             "resource": {"resourceType": "Encounter", "status": "finished",
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                    "code": "AMB"},
                          "subject": {"reference": patient},
                          "period": {"start": "2026-03-01T09:00:00+08:00"}}},
            {"request": {"method": "POST", "url": "Condition"},
             "resource": {"resourceType": "Condition",
                          "clinicalStatus": {"coding": [{
                              "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                              "code": "active"}]},
                          "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                               "code": "I10", "display": "原发性高血压"}]},
                          "subject": {"reference": patient}, "encounter": {"reference": visit}}},
        ],
    }  # fmt: skip


def prescription(patient_id: int, pharmacy_id: int) -> dict[str, Any]:
    return {
        "patient_id": patient_id,
        "pharmacy_id": pharmacy_id,
        "diagnosis": {"code": "I10", "display": "原发性高血压"},
        "items": [
            {"drug_code": "C08CA01", "drug_name": "苯磺酸氨氯地平片", "strength": "5mg",
             "dose": 5, "dose_unit": "mg", "route": "口服", "frequency": "qd", "days": 7,
             "quantity": 1}
        ],
        "notes": "复诊续方",
    }  # fmt: skip


class Server:
    def __init__(self, args: argparse.Namespace, data_dir: str, *, first: bool) -> None:
        self.first = first  # the first node migrates and seeds
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            YIHAO_DATA_DIR=data_dir,
            YIHAO_LOG_LEVEL="WARNING",
            YIHAO_ARGON2_TIME_COST="1",
            YIHAO_ARGON2_MEMORY_KIB="1024",
            YIHAO_SESSION_IDLE_TIMEOUT_SECONDS="0",
            YIHAO_SOCKET_EVENTS_PER_10S="100000",
        )
        if args.database_url:
            self.env.update(
                YIHAO_DATABASE_URL=args.database_url,
                YIHAO_SECRET_KEY="bench-secret-key-that-is-long-enough-0123456789",
                YIHAO_CHECKPOINT_KEY_FILE=str(ensure_key_file(Path(data_dir) / "checkpoint_key")),
            )
        if args.redis_url:
            self.env["YIHAO_REDIS_URL"] = args.redis_url
        self.process: asyncio.subprocess.Process | None = None

    async def cli(self, *argv: str, stdout: int | None = None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", *argv, env=self.env, cwd=ROOT, stdout=stdout
        )

    async def start(self) -> None:
        for step in ("migrate", "seed-demo") if self.first else ():
            done = await self.cli(step, stdout=asyncio.subprocess.DEVNULL)
            if await done.wait() != 0:
                raise RuntimeError(f"{step} failed")
        self.process = await self.cli("serve", "--port", str(self.port))
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 15)


class Client:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.tokens: dict[str, str] = {}

    async def login(self, username: str) -> str:
        async with self.http.post(
            self.url + "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        ) as response:
            body = await response.json()
            assert response.status == 200, body
        self.tokens[username] = body["access_token"]
        return str(body["access_token"])

    async def call(
        self, method: str, path: str, as_: str, json_body: Any = None, **headers: str
    ) -> tuple[int, Any]:
        token = self.tokens.get(as_) or await self.login(as_)
        headers = {"Authorization": f"Bearer {token}", **headers}
        if path == "/fhir":
            headers["Content-Type"] = "application/fhir+json"
            data, json_body = json.dumps(json_body), None
        else:
            data = None
        async with self.http.request(
            method, self.url + path, json=json_body, data=data, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)


async def setup(client: Client, pharmacies: int) -> tuple[int, list[tuple[int, str]]]:
    status, bundle = await client.call("POST", "/fhir", "gp_zhang", record_bundle())
    assert status == 200, bundle
    patient_id = int(bundle["entry"][0]["response"]["location"].split("/")[1])
    await present(client.http, client.url, "gp_zhang", RESIDENT_ID, "周国强")
    staff = [("HCYF", "pharmacist_chen"), ("TATYF", "pharmacist_zhou")]
    for n in range(len(staff), pharmacies):
        code, username = f"BENCHPH{n}", f"pharmacist_b{n}"
        status, body = await client.call(
            "POST", "/api/v1/institutions", "admin",
            {"code": code, "name": f"基准测试药房{n}号店", "kind": "pharmacy", "region": "370202"},
        )  # fmt: skip
        assert status in (201, 409), body
        status, body = await client.call(
            "POST", "/api/v1/users", "admin",
            {"username": username, "password": PASSWORD, "role": "pharmacist",
             "institution": code, "name": "药师"},
        )  # fmt: skip
        assert status in (201, 409), body
        staff.append((code, username))
    status, listed = await client.call("GET", "/api/v1/institutions?kind=pharmacy", "admin")
    ids = {item["code"]: item["id"] for item in listed["items"]}
    return patient_id, [(ids[code], username) for code, username in staff[:pharmacies]]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data_dir:
        nodes = [Server(args, data_dir, first=n == 0) for n in range(args.nodes)]
        try:
            await nodes[0].start()
            await asyncio.gather(*(node.start() for node in nodes[1:]))
            async with aiohttp.ClientSession() as http:
                clients = [Client(http, node.url) for node in nodes]
                return await measure(args, clients)
        finally:
            await asyncio.gather(*(node.stop() for node in nodes))


async def measure(args: argparse.Namespace, clients: list[Client]) -> dict[str, Any]:
    """Doctors' requests and pharmacies' sockets are spread over the nodes in turn."""
    patient_id, pharmacies = await setup(clients[0], args.pharmacies)
    received: dict[int, float] = {}
    committed_lag: list[float] = []
    sockets: list[tuple[int, socketio.AsyncClient]] = []
    all_in = asyncio.Event()
    waiting: list[set[int]] = []  # the ids created, once the load is over

    for n, (pharmacy_id, username) in enumerate(pharmacies):
        client = clients[n % len(clients)]
        sio = socketio.AsyncClient(reconnection=False)

        async def on_event(envelope: dict[str, Any]) -> None:
            now = time.time()
            if envelope["type"] != "prescription" or envelope["op"] != "delivered":
                return
            rx_id = envelope["data"]["prescription"]["id"]
            if rx_id not in received:
                received[rx_id] = now
                at = datetime.fromisoformat(envelope["at"]).timestamp()
                committed_lag.append((now - at) * 1000)
                if waiting and waiting[0] <= received.keys():
                    all_in.set()

        sio.on("event", on_event)
        await sio.connect(client.url, auth={"token": await client.login(username)},
                          transports=["websocket"])  # fmt: skip
        sockets.append((pharmacy_id, sio))

    started: dict[int, float] = {}
    failures: list[Any] = []

    async def write(n: int) -> None:
        pharmacy_id = pharmacies[n % len(pharmacies)][0]
        t0 = time.time()
        status, body = await clients[n % len(clients)].call(
            "POST", "/api/v1/prescriptions", "gp_zhang", prescription(patient_id, pharmacy_id),
            **{"Idempotency-Key": f"bench-{n}"},
        )  # fmt: skip
        if status == 201:
            started[body["id"]] = t0
        else:
            failures.append(body)

    total = int(args.rate * args.duration)
    tasks = []
    begin = time.perf_counter()
    for n in range(total):
        delay = begin + n / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(write(n)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begin
    if set(started) <= set(received):
        all_in.set()
    waiting.append(set(started))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), 5)
    lost_live = sorted(set(started) - set(received))

    caught_up: set[int] = set(received)
    for pharmacy_id, sio in sockets:
        ack = await sio.call("sync", {"positions": {f"pharmacy:{pharmacy_id}": 0}}, timeout=30)
        for envelope in ack["data"]["events"]:
            if envelope["op"] == "delivered":
                caught_up.add(envelope["data"]["prescription"]["id"])
        await sio.disconnect()

    end_to_end = [(received[i] - t0) * 1000 for i, t0 in started.items() if i in received]
    return {
        "rate_target_per_s": args.rate,
        "rate_achieved_per_s": round(len(started) / elapsed, 1),
        "nodes": len(clients),
        "pharmacies_connected": len(pharmacies),
        "created": len(started),
        "failed_requests": len(failures),
        "received_live": len(set(started) & set(received)),
        "lost": len(lost_live),
        "lost_after_sync": len(set(started) - caught_up),
        "request_to_received_ms": {
            "p50": round(percentile(end_to_end, 0.50), 2),
            "p99": round(percentile(end_to_end, 0.99), 2),
            "max": round(max(end_to_end, default=float("nan")), 2),
        },
        "committed_to_received_ms": {
            "p50": round(percentile(committed_lag, 0.50), 2),
            "p99": round(percentile(committed_lag, 0.99), 2),
            "max": round(max(committed_lag, default=float("nan")), 2),
        },
        "first_failure": failures[0] if failures else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="prescriptions per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--pharmacies", type=int, default=4, help="pharmacies online (≥ 2)")
    parser.add_argument(
        "--database-url", default="", help="postgresql+asyncpg://… (default SQLite)"
    )
    parser.add_argument("--redis-url", default="")
    parser.add_argument(
        "--nodes", type=int, default=1, help="server processes (> 1: PostgreSQL + Redis)"
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.duration, args.pharmacies = 10.0, 2.0, 2
    args.pharmacies = max(2, args.pharmacies)
    if args.nodes > 1 and not (args.database_url and args.redis_url):
        parser.error(
            "several nodes share PostgreSQL and Redis: give --database-url and --redis-url"
        )
    result = asyncio.run(run(args))
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0 if result["created"] and result["lost"] == 0 and not result["failed_requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
