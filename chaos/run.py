"""``make chaos``: faults on a real cluster under clinical load, and what the clients saw.

A cluster of 3 ``yihao serve`` nodes behind nginx, on a PostgreSQL database of its own and
a private Redis (:mod:`chaos.faults`), is broken one way per case while consult chat and
prescriptions flow through it: dr_li's and gp_zhang's tabs, spread over the nodes, each
send a chat message every 100 ms; gp_zhang prescribes to 海川大药房 every 300 ms, whose
pharmacist has tabs on the nodes too. Every client follows only the documented rule
(:mod:`chaos.clients`). The cases:

- ``node_kill``: ``kill -9`` of the node holding the most clients, with a prescription
  POST in flight on it; ends when the node is back and ready.
- ``redis_kill_5s`` / ``redis_kill_30s``: Redis killed, restarted after that long; ends when
  it answers PING.
- ``redis_delay``: 300 ms each way on the Redis link for 10 s; ends when it is taken off.
- ``pg_cut``: the PostgreSQL link cut and its connections reset for 5 s; ends when restored.

Each prints one row: sent (chat acknowledged, prescriptions 201 or replayed), received (sum
over the receiving sockets), lost, duplicated (an event applied twice by a client, or a
write committed twice: rows per client_id / Idempotency-Key), and how long after the fault
ended every client held every committed event (the slowest client, and the median one). The
exit status is 1 if any case lost or duplicated anything, took more than 3 s to converge,
or its in-flight write did not end as exactly one prescription.

``--smoke`` (run by ``make test``): fewer clients, shorter faults (node kill, Redis 2 s,
PostgreSQL 2 s), the same checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos.clients import (
    Clinic,
    Flow,
    Member,
    Pharmacy,
    ReconnectingClient,
    chat_key,
    delivery_key,
    enter_consult,
    open_clinic,
    place,
    prescribe,
    send_chat,
    socket_counts,
)
from chaos.faults import (
    Fault,
    Hooks,
    Lab,
    lab_running,
    node_kill,
    pg_cut,
    redis_delay,
    redis_kill,
)
from server.consults.models import ConsultMessage
from server.prescriptions.models import Prescription

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
CONVERGE_WITHIN = 3.0  # seconds after the fault ended
SETTLE = 30.0  # how long to wait for a missing event before calling it lost


@dataclass(frozen=True)
class Load:
    members: int  # consult tabs (dr_li and gp_zhang in turn)
    pharmacies: int  # pharmacist_chen's tabs
    warmup: float  # load before the fault, seconds
    tail: float  # load after the fault ended, seconds
    chat_every: float = 0.1
    rx_every: float = 0.3


FULL = Load(members=6, pharmacies=3, warmup=2.0, tail=5.0)
SMOKE = Load(members=3, pharmacies=3, warmup=1.0, tail=3.0)


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    fault: Fault
    in_flight: bool = False  # a prescription POST in flight on the victim node


def cases(smoke: bool) -> list[Case]:
    kill = Case("node_kill", "kill -9 of a node, a POST in flight on it", node_kill(), True)
    if smoke:
        return [
            kill,
            Case("redis_kill_2s", "Redis killed for 2 s", redis_kill(2)),
            Case("pg_cut_2s", "PostgreSQL link cut for 2 s", pg_cut(2)),
        ]
    return [
        kill,
        Case("redis_kill_5s", "Redis killed for 5 s", redis_kill(5)),
        Case("redis_kill_30s", "Redis killed for 30 s", redis_kill(30)),
        Case("redis_delay", "Redis link +300 ms each way for 10 s", redis_delay(0.3, 10)),
        Case("pg_cut", "PostgreSQL link cut for 5 s", pg_cut(5)),
    ]


@dataclass
class Ward:
    """One case's clients: consult tabs and pharmacist tabs spread over the nodes by nginx."""

    lab: Lab
    clinic: Clinic
    case: Case
    load: Load
    members: list[Member] = field(default_factory=list)
    pharmacies: list[Pharmacy] = field(default_factory=list)
    where: dict[int, int] = field(default_factory=dict)  # id(client) -> node index
    chat: Flow = field(default_factory=lambda: Flow("consult chat"))
    rx: Flow = field(default_factory=lambda: Flow("prescription delivery"))
    rx_keys: list[str] = field(default_factory=list)
    in_flight: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def clients(self) -> list[ReconnectingClient]:
        return [*self.members, *self.pharmacies]

    async def open(self, http: aiohttp.ClientSession) -> None:
        """Connect every tab through nginx until each node holds its share of both kinds."""
        nodes = len(self.lab.node_urls)
        for kind, count in ((Member, self.load.members), (Pharmacy, self.load.pharmacies)):
            share = -(-count // nodes)
            placed: list[int] = []
            attempts = 0
            while len(placed) < count:
                await self.settled(http)
                client = self._tab(kind, len(placed))
                node = await place(
                    http, self.lab.cluster.url, self.lab.node_urls, client, client.token
                )
                attempts += 1
                if placed.count(node) >= share and attempts < count * 8:
                    await client.close()  # that node has its share: open the tab again
                    continue
                placed.append(node)
                self.where[id(client)] = node
                (self.members if kind is Member else self.pharmacies).append(client)  # type: ignore[arg-type]
        await enter_consult(self.members)

    async def settled(self, http: aiohttp.ClientSession, timeout: float = 10) -> None:
        """Until the nodes count only this ward's sockets (a tab closed is gone from them)."""
        deadline = time.monotonic() + timeout
        while sum(await socket_counts(http, self.lab.node_urls)) != len(self.clients):
            assert time.monotonic() < deadline, "the nodes still count sockets of closed tabs"
            await asyncio.sleep(0.05)  # a node counts a socket out once its disconnect ran

    def _tab(self, kind: type, index: int) -> Member | Pharmacy:
        if kind is Pharmacy:
            return Pharmacy(self.clinic)
        host = index % 2 == 0
        token = self.clinic.host if host else self.clinic.doctor
        return Member(self.clinic, token, "dr_li" if host else "gp_zhang")

    def victim(self) -> int:
        """The node holding the most clients."""
        load = [list(self.where.values()).count(i) for i in range(len(self.lab.node_urls))]
        return load.index(max(load))

    async def chatter(self, index: int, member: Member, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            client_id = f"{self.case.name}-m{index}-{n:05d}"
            await send_chat(member, client_id, self.chat, timeout=90)
            n += 1
            await asyncio.sleep(self.load.chat_every)

    async def prescriber(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            key = f"{self.case.name}-rx-{n:05d}"
            self.rx_keys.append(key)
            await prescribe(http, self.lab.cluster.url, self.clinic, n, self.rx, key, timeout=90)
            n += 1
            await asyncio.sleep(self.load.rx_every)

    async def write_in_flight(self, node_url: str, tasks: list[asyncio.Task[Any]]) -> None:
        """POST a prescription straight to ``node_url`` and return once its body is sent;
        the retries (same key) go through nginx."""
        sent = asyncio.Event()
        trace = aiohttp.TraceConfig()

        async def on_sent(*_: Any) -> None:
            sent.set()

        trace.on_request_chunk_sent.append(on_sent)
        http = aiohttp.ClientSession(trace_configs=[trace])
        key = f"{self.case.name}-rx-in-flight"
        self.rx_keys.append(key)
        statuses: list[int] = []
        self.in_flight.update(key=key, statuses=statuses)

        async def on_status(status: int, body: Any) -> None:
            statuses.append(status)

        async def write() -> None:
            try:
                created = await prescribe(
                    http, self.lab.cluster.url, self.clinic, 9999, self.rx, key,
                    timeout=90, on_status=on_status, first_url=node_url,
                )  # fmt: skip
                self.in_flight["id"] = created["id"]
            finally:
                await http.close()

        tasks.append(asyncio.create_task(write()))
        await asyncio.wait_for(sent.wait(), 10)
        await asyncio.sleep(0.01)  # the node is working on it now

    async def run(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self.chatter(i, m, stop)) for i, m in enumerate(self.members)]
        tasks.append(asyncio.create_task(self.prescriber(http, stop)))
        await asyncio.sleep(self.load.warmup)
        victim = self.victim()

        async def in_flight(node_url: str) -> None:
            await self.write_in_flight(node_url, tasks)

        started = time.monotonic()
        ended = await self.case.fault(self.lab, Hooks(victim, in_flight))
        await asyncio.sleep(self.load.tail)
        stop.set()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                self.errors.append(f"load: {outcome!r}"[:300])
        lags = await self.converge(ended)
        return await self.figures(ended - started, lags, victim)

    def lags(self, since: float) -> list[float | None]:
        return [
            *(self.chat.lag(m, Member.chat, chat_key, since) for m in self.members),
            *(self.rx.lag(p, Pharmacy.deliveries, delivery_key, since) for p in self.pharmacies),
        ]

    async def converge(self, since: float) -> list[float | None]:
        """Wait (up to SETTLE s) until every client holds every committed event."""
        deadline = time.monotonic() + SETTLE
        while True:
            lags = self.lags(since)
            if None not in lags or time.monotonic() > deadline:
                return lags
            await asyncio.sleep(0.1)  # the clients catch up on their own; look again

    async def figures(
        self, duration: float, lags: list[float | None], victim: int
    ) -> dict[str, Any]:
        chat = self.chat.tally(self.members, Member.chat, chat_key)
        rx = self.rx.tally(self.pharmacies, Pharmacy.deliveries, delivery_key)
        db = await self.rows()
        known = [lag for lag in lags if lag is not None]
        row: dict[str, Any] = {
            "case": self.case.name,
            "fault": self.case.what,
            "fault_seconds": round(duration, 2),
            "sent": chat["sent"] + rx["sent"],
            "received": chat["received"] + rx["received"],
            "lost": chat["lost"] + rx["lost"] + db["missing"],
            "duplicated": chat["duplicated"] + rx["duplicated"] + db["twice"],
            "converged_s": round(max(known), 3) if len(known) == len(lags) else None,
            "median_client_s": round(statistics.median(known), 3) if known else None,
            "chat": chat,
            "prescriptions": rx,
            "database": db,
            "clients": len(lags),
            "victim_node": victim if self.case.in_flight else None,
            "reconnects": sum(c.connects - 1 for c in self.clients),
            "gaps": sum(c.gaps for c in self.clients),
            "heads_beacons": sum(c.beacons for c in self.clients),
            "errors": self.errors,
        }
        if self.case.in_flight:
            statuses = self.in_flight.get("statuses", [])
            rows = db["in_flight_rows"]
            row["in_flight"] = {
                "first_answer": statuses[0] if statuses else None,
                "attempts": len(statuses),
                "prescriptions": rows,
                "ok": bool(statuses) and statuses[0] == 0 and rows == 1,
            }
        row["ok"] = self.verdict(row)
        return row

    @staticmethod
    def verdict(row: dict[str, Any]) -> bool:
        converged = row["converged_s"]
        return (
            not row["errors"]
            and row["lost"] == 0
            and row["duplicated"] == 0
            and converged is not None
            and converged <= CONVERGE_WITHIN
            and row.get("in_flight", {"ok": True})["ok"]
        )

    async def rows(self) -> dict[str, int]:
        """What the database holds of this case's writes: acknowledged but absent, twice."""
        engine = create_async_engine(self.lab.database_url)
        try:
            async with engine.connect() as conn:
                chats = dict(
                    (
                        await conn.execute(
                            sa.select(ConsultMessage.client_id, sa.func.count())
                            .where(ConsultMessage.consult_id == self.clinic.consult_id)
                            .group_by(ConsultMessage.sender_id, ConsultMessage.client_id)
                        )
                    ).all()
                )
                keys = dict(
                    (
                        await conn.execute(
                            sa.select(Prescription.idempotency_key, sa.func.count())
                            .where(Prescription.idempotency_key.in_(self.rx_keys))
                            .group_by(Prescription.idempotency_key)
                        )
                    ).all()
                )
        finally:
            await engine.dispose()
        missing = sum(1 for client_id in self.chat.sent if client_id not in chats)
        twice = sum(n - 1 for n in [*chats.values(), *keys.values()] if n > 1)
        return {
            "missing": missing,
            "twice": twice,
            "in_flight_rows": keys.get(self.in_flight.get("key"), 0),
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients))


async def run_case(lab: Lab, case: Case, load: Load) -> dict[str, Any]:
    await lab.wait_healthy()
    async with aiohttp.ClientSession() as http:
        clinic = await open_clinic(http, lab.cluster.url)
        ward = Ward(lab, clinic, case, load)
        try:
            await ward.open(http)
            return await ward.run(http)
        finally:
            await ward.close()


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | fault | sent | received | lost | duplicated | all clients hold all "
        "(slowest) | median client | in-flight write | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        flight = r.get("in_flight")
        written = "—"
        if flight is not None:
            written = (
                f"first answer {flight['first_answer']}, {flight['attempts']} attempts, "
                f"{flight['prescriptions']} prescription(s)"
            )
        lines.append(
            f"| {r['case']} | {r['fault']} | {r['sent']} | {r['received']} | {r['lost']} | "
            f"{r['duplicated']} | {seconds(r['converged_s'])} | "
            f"{seconds(r['median_client_s'])} | {written} | {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def describe(row: dict[str, Any]) -> str:
    chat, rx = row["chat"], row["prescriptions"]
    text = (
        f"{row['case']}: sent {row['sent']} (chat {chat['sent']}, prescriptions {rx['sent']}), "
        f"received {row['received']} on {row['clients']} sockets, lost {row['lost']}, "
        f"duplicated {row['duplicated']}, every client held every committed event "
        f"{seconds(row['converged_s'])} after the fault ended (median client "
        f"{seconds(row['median_client_s'])}); reconnects {row['reconnects']}, gaps "
        f"{row['gaps']}, heads beacons {row['heads_beacons']}, sender retries "
        f"{chat['retries'] + rx['retries']}; {row['wall_seconds']} s"
    )
    for error in row["errors"]:
        text += f"\n  error: {error}"
    return text


async def run_all(
    args: argparse.Namespace, chosen: list[Case], workdir: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    async with lab_running(args.database_url, workdir, args.nodes) as lab:
        print(f"cluster up in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
        for case in chosen:
            began = time.monotonic()
            row = await run_case(lab, case, SMOKE if args.smoke else FULL)
            row["wall_seconds"] = round(time.monotonic() - began, 1)
            rows.append(row)
            print(describe(row), file=sys.stderr, flush=True)
    return rows


def main(args: argparse.Namespace) -> int:
    chosen = [c for c in cases(args.smoke) if not args.only or c.name in args.only]
    if not chosen:
        print(f"no case named {args.only}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="yihao-chaos-") as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = asyncio.run(run_all(args, chosen, workdir))
    print(table(rows))
    ok = all(r["ok"] for r in rows)
    if args.json:
        figures = {"smoke": args.smoke, "nodes": args.nodes, "ok": ok, "cases": rows}
        Path(args.json).write_text(json.dumps(figures, ensure_ascii=False, indent=2))
    return 0 if ok else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="small and fast (make test)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument(
        "--only", action="append", metavar="CASE", help="run this case (repeatable)"
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("YIHAO_CHAOS_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="a PostgreSQL server's administrator URL; the suite creates (and drops) a "
        "database of its own there",
    )
    parser.add_argument("--workdir", help="keep the nodes' logs here (default: a temporary one)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse()))
