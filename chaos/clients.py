"""Clients that follow docs/realtime.md's rule, and the clinic they work in.

The rule, and nothing more (no extra ``sync``, no waiting for ``/readyz``):

- keep the highest ``seq`` per stream; ignore an event at or below it;
- on every connect and reconnect, ``sync`` (the first one takes the heads as positions);
- on a gap (an event more than one above the last ``seq``), ``sync``;
- on ``heads``, ``sync`` every stream whose head is above the last ``seq`` kept;
- a refused ``sync`` (503 while the database is away) is tried again shortly.

Writes are retried as the docs say: chat over the socket with the same ``client_id``, a
prescription with the same ``Idempotency-Key``, on a network error, 502, 503 or 504, with
back-off.

The clinic, over real HTTP and Socket.IO: gp_zhang (a community doctor) asks 青岛市立医院 for
a consult about patient_wang, dr_li accepts and hosts it, both chat in the room from several
tabs (sockets); gp_zhang prescribes for the patient to 海川大药房 (HCYF), whose pharmacist_chen
has the pharmacy's queue open in several tabs.

Counting is per flow: what was sent (acknowledged after commit), and per receiving socket what
arrived once, what arrived under two numbers (the same message or prescription committed
twice) and what never arrived. Raw repeats of one stream number (a re-push, a replay
overlapping a live push) are filtered by ``seq`` as the rule says, and counted apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as json_module
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import socketio

from server.seed import DEMO_PASSWORD

RETRYABLE = (0, 502, 503, 504)
Envelope = dict[str, Any]


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): 0.1 s doubling, at most 1 s."""
    return float(min(0.1 * 2**attempt, 1.0))


async def request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP call; status 0 when the connection itself failed (a node died under it)."""
    try:
        async with http.request(
            method,
            url,
            json=json,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=15),
        ) as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return 0, None
    try:
        return response.status, json_module.loads(text) if text else None
    except ValueError:
        return response.status, text  # nginx's own page (a 502 from a dead node)


async def login(http: aiohttp.ClientSession, url: str, username: str) -> str:
    async with http.post(
        f"{url}/api/v1/auth/login", json={"username": username, "password": DEMO_PASSWORD}
    ) as response:
        body = await response.json()
        assert response.status == 200, body
        return str(body["access_token"])


class SyncRefused(RuntimeError):
    """The server answered ``sync`` with a problem (503 while the database is away)."""


class ReconnectingClient:
    """A client as a browser tab behaves: reconnects by itself, catches up by sequence number.

    ``events`` holds what was applied, in order, with ``arrived_at`` (monotonic) beside it.
    ``disconnected_at`` / ``recovered_at`` time the first outage: from losing the
    connection to having replayed what was missed.
    """

    def __init__(self, **options: Any) -> None:
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=0.1,
            reconnection_delay_max=0.5,
            randomization_factor=0,
            **options,
        )
        self.sio.on("event", self._on_event)
        self.sio.on("heads", self._on_heads)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.events: list[Envelope] = []
        self.arrived_at: list[float] = []
        self.positions: dict[str, int] = {}
        self.duplicates = 0
        self.connects = 0
        self.gaps = 0
        self.heads: list[dict[str, int]] = []  # every `heads` received, as sent
        self.beacons = 0  # heads events that named a stream this client was behind on
        self.disconnected_at: float | None = None
        self.recovered_at: float | None = None
        self._arrived = asyncio.Event()
        self._stale: set[str] | None = set()  # streams to sync; None: all of them
        self._catching_up: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self, url: str, token: str) -> None:
        await self.sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=5)

    async def call(self, event: str, payload: Any = None, timeout: float = 5) -> dict[str, Any]:
        return await self.sio.call(event, payload, timeout=timeout)  # type: ignore[no-any-return]

    async def sync(self, streams: set[str] | None = None) -> dict[str, Any]:
        """``sync`` the given streams (all kept ones by default), page after page."""
        while True:
            names = self.positions.keys() if streams is None else streams
            ack = await self.call(
                "sync", {"positions": {s: self.positions.get(s, 0) for s in names}}
            )
            if not ack["ok"]:
                raise SyncRefused(ack)
            for envelope in ack["data"]["events"]:
                self.accept(envelope)
            if not ack["data"].get("more"):
                return ack

    async def start_from_heads(self) -> None:
        """The first connect's sync: the current heads become the starting positions."""
        ack = await self.call("sync", {"positions": {}})
        if not ack["ok"]:
            raise SyncRefused(ack)
        for stream, head in ack["data"]["heads"].items():
            self.positions[stream] = max(self.positions.get(stream, 0), head)

    def accept(self, envelope: Envelope) -> None:
        stream, seq = envelope["stream"], envelope["seq"]
        last = self.positions.get(stream)
        if seq <= (last or 0):
            self.duplicates += 1
            return
        if last is not None and seq > last + 1:
            # A push went missing: replay from the last number seen, in order.
            self.gaps += 1
            self._catch_up({stream})
            return
        self.positions[stream] = seq
        self.events.append(envelope)
        self.arrived_at.append(time.monotonic())
        self._arrived.set()

    async def _on_event(self, envelope: Envelope) -> None:
        self.accept(envelope)

    async def _on_heads(self, payload: dict[str, Any]) -> None:
        self.heads.append(payload.get("heads", {}))
        behind = {
            s for s, head in payload.get("heads", {}).items() if head > self.positions.get(s, 0)
        }
        if behind:
            self.beacons += 1
            self._catch_up(behind)

    async def _on_connect(self) -> None:
        self.connects += 1
        if self.connects > 1:
            # Not awaited here: the ack of sync arrives through the loop running this handler.
            self._catch_up(None, reconnected=True)

    async def _on_disconnect(self, reason: Any = None) -> None:
        if self.disconnected_at is None:
            self.disconnected_at = time.monotonic()

    def _catch_up(self, streams: set[str] | None, reconnected: bool = False) -> None:
        """Ask for ``streams`` (None: all) to be synced; one catch-up runs at a time."""
        if streams is None or self._stale is None:
            self._stale = None
        else:
            self._stale |= streams
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = self._spawn(self._run_catch_up(reconnected))
        elif reconnected:
            self._spawn(self._after_catch_up(self._catching_up))

    async def _run_catch_up(self, reconnected: bool) -> None:
        attempt = 0
        while self._stale is None or self._stale:
            streams, self._stale = self._stale, set()
            try:
                await self.sync(streams)
            except SyncRefused:
                self._stale = (
                    None if streams is None or self._stale is None else self._stale | streams
                )
                await asyncio.sleep(backoff(attempt))  # the database is away: try again shortly
                attempt += 1
                continue
            except (socketio.exceptions.SocketIOError, TimeoutError):
                self._stale = set()
                return  # disconnected again: the next connect catches up
        if reconnected:
            await self._reconnected()

    async def _after_catch_up(self, running: asyncio.Task[None]) -> None:
        with contextlib.suppress(Exception):
            await running
        self._catch_up(None, reconnected=True)

    async def _reconnected(self) -> None:
        """Caught up after a reconnect; subclasses take their place again (join a room)."""
        if self.recovered_at is None:
            self.recovered_at = time.monotonic()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        self.sio.reconnection = False
        if self.sio.connected:
            await self.sio.disconnect()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class Clinic:
    """Tokens and ids of one consult and one pharmacy, on a running cluster."""

    url: str
    doctor: str  # gp_zhang: requests the consult, chats, prescribes
    host: str  # dr_li: hosts the consult
    pharmacist: str  # pharmacist_chen of HCYF
    patient_id: int
    pharmacy_id: int
    consult_id: int
    host_id: int
    doctor_id: int

    @property
    def consult_stream(self) -> str:
        return f"consult:{self.consult_id}"

    @property
    def pharmacy_stream(self) -> str:
        return f"pharmacy:{self.pharmacy_id}"


async def me(http: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    status, body = await request(http, "GET", f"{url}/api/v1/me", token)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def open_clinic(http: aiohttp.ClientSession, url: str) -> Clinic:
    """Log the personas in; gp_zhang requests a consult of QDSL, dr_li accepts it."""
    doctor, host, pharmacist, patient = [
        await login(http, url, name)
        for name in ("gp_zhang", "dr_li", "pharmacist_chen", "patient_wang")
    ]
    doctor_me, host_me, pharmacist_me, patient_me = [
        await me(http, url, token) for token in (doctor, host, pharmacist, patient)
    ]
    now = datetime.now(UTC)
    body = {
        "patient_id": patient_me["patient_id"],
        "consent": {
            "given_by": "patient",
            "name": patient_me["name"],
            "method": "electronic",
            "given_at": (now - timedelta(minutes=10)).isoformat(),
        },
        "reason": "血压控制不佳，头晕一周",
        "purpose": "调整降压方案",
        "clinical_question": "是否需要加用第二种降压药？",
        "case_summary": "高血压多年，近一周头晕，家庭自测血压偏高。",
        "urgency": "urgent",
        "window_start": (now + timedelta(hours=1)).isoformat(),
        "window_end": (now + timedelta(days=1)).isoformat(),
        "invited_institution_id": host_me["institution"]["id"],
        "invited_department": "心内科",
    }
    status, consult = await request(http, "POST", f"{url}/api/v1/consults", doctor, json=body)
    assert status == 201, consult
    status, accepted = await request(
        http,
        "POST",
        f"{url}/api/v1/consults/{consult['id']}/accept",
        host,
        json={"scheduled_at": (now + timedelta(hours=2)).isoformat()},
    )
    assert status == 200, accepted
    return Clinic(
        url=url,
        doctor=doctor,
        host=host,
        pharmacist=pharmacist,
        patient_id=patient_me["patient_id"],
        pharmacy_id=pharmacist_me["institution"]["id"],
        consult_id=consult["id"],
        host_id=host_me["id"],
        doctor_id=doctor_me["id"],
    )


# Amlodipine 5 mg qd for hypertension (I10): every check accepts it.
AMLODIPINE: dict[str, Any] = {
    "drug_code": "C08CA01",
    "drug_name": "苯磺酸氨氯地平片",
    "strength": "5mg",
    "dose": 5,
    "dose_unit": "mg",
    "route": "口服",
    "frequency": "qd",
    "days": 7,
    "quantity": 1,
}


def prescription_body(clinic: Clinic, index: int) -> dict[str, Any]:
    return {
        "patient_id": clinic.patient_id,
        "pharmacy_id": clinic.pharmacy_id,
        "diagnosis": {"code": "I10", "display": "原发性高血压"},
        "items": [dict(AMLODIPINE)],
        "notes": f"复诊续方 {index}",
        # Renewals of one medicine are duplicate therapy to the checks; the doctor knows.
        "override_reason": "续方，停用前一张处方",
    }


class Member(ReconnectingClient):
    """A consult participant's tab: after a reconnect it catches up and joins the session again."""

    def __init__(self, clinic: Clinic, token: str, name: str) -> None:
        super().__init__()
        self.clinic = clinic
        self.token = token
        self.name = name
        self.joined = asyncio.Event()

    async def join(self) -> dict[str, Any]:
        ack = await self.call("consult.join", {"consult_id": self.clinic.consult_id})
        assert ack["ok"], ack
        if ack["data"]["state"] == "joined":
            self.joined.set()
        return ack

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.joined.clear()
        await super()._on_disconnect(reason)

    async def _reconnected(self) -> None:
        await super()._reconnected()
        with contextlib.suppress(socketio.exceptions.SocketIOError, TimeoutError):
            await self.join()

    def chat(self) -> list[Envelope]:
        return [
            e
            for e in self.events
            if e["stream"] == self.clinic.consult_stream and e["type"] == "consult.chat"
        ]


class Pharmacy(ReconnectingClient):
    """A pharmacist's tab on the pharmacy's queue: acknowledges every version it receives
    (delivery is at-least-once; an unacknowledged one is pushed again)."""

    def __init__(self, clinic: Clinic) -> None:
        super().__init__()
        self.clinic = clinic
        self.token = clinic.pharmacist
        self.name = "pharmacist_chen"
        self.acknowledged: set[tuple[int, int]] = set()

    def accept(self, envelope: Envelope) -> None:
        before = len(self.events)
        super().accept(envelope)
        if len(self.events) > before and envelope["op"] == "delivered":
            sent = envelope["data"]["prescription"]
            self._spawn(self._acknowledge(int(sent["id"]), int(sent["version"])))

    async def _acknowledge(self, prescription_id: int, version: int, timeout: float = 90) -> None:
        """``prescription.ack``, retried while the socket reconnects or the database is away."""
        payload = {"prescription_id": prescription_id, "version": version}
        deadline = time.monotonic() + timeout
        attempt = 0
        while time.monotonic() < deadline:
            try:
                ack = await self.call("prescription.ack", payload)
            except (socketio.exceptions.SocketIOError, TimeoutError):
                ack = {"ok": False, "problem": {"status": 0}}
            if ack["ok"]:
                self.acknowledged.add((prescription_id, version))
                return
            if ack["problem"]["status"] not in RETRYABLE:
                return  # refused for good; the sweep pushes it again
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    def deliveries(self) -> list[Envelope]:
        """Each delivered version once: a delivery pushed again is a new event (a new seq)
        carrying the same version, one delivery, not a prescription committed twice."""
        seen: dict[tuple[int, int], Envelope] = {}
        for e in self.events:
            if (
                e["stream"] == self.clinic.pharmacy_stream
                and e["type"] == "prescription"
                and e["op"] == "delivered"
            ):
                sent = e["data"]["prescription"]
                seen.setdefault((sent["id"], sent["version"]), e)
        return list(seen.values())


def chat_key(envelope: Envelope) -> Any:
    return envelope["data"]["client_id"]


def delivery_key(envelope: Envelope) -> Any:
    return envelope["data"]["prescription"]["id"]


@dataclass
class Flow:
    """What one flow sent (and when each was acknowledged), and what each socket made of it."""

    name: str
    sent: list[Any] = field(default_factory=list)
    acked_at: dict[Any, float] = field(default_factory=dict)
    retries: int = 0

    def commit(self, key: Any) -> None:
        self.sent.append(key)
        self.acked_at.setdefault(key, time.monotonic())

    def tally(
        self, clients: list[Any], received: Callable[[Any], list[Envelope]], key: Any
    ) -> dict[str, int]:
        expected = set(self.sent)
        got = dup = lost = raw = 0
        for client in clients:
            counts = Counter(key(e) for e in received(client))
            got += len(counts.keys() & expected)
            # The same key under two numbers, or one never sent: committed twice.
            dup += sum(n - 1 for n in counts.values() if n > 1) + len(counts.keys() - expected)
            lost += len(expected - counts.keys())
            raw += client.duplicates
        return {
            "sent": len(self.sent),
            "sockets": len(clients),
            "received": got,
            "duplicated": dup,
            "lost": lost,
            "repeats_filtered": raw,
            "retries": self.retries,
        }

    def lag(
        self,
        client: ReconnectingClient,
        received: Callable[[Any], list[Envelope]],
        key: Any,
        since: float,
    ) -> float | None:
        """How long after ``since`` (or after its commit, if later) the client held the last
        committed event it was missing; None while one is still missing."""
        arrived: dict[Any, float] = {}
        wanted = {id(e) for e in received(client)}
        for envelope, at in zip(client.events, client.arrived_at, strict=True):
            if id(envelope) in wanted:
                arrived.setdefault(key(envelope), at)
        worst = 0.0
        for sent in self.sent:
            if sent not in arrived:
                return None
            worst = max(worst, arrived[sent] - max(since, self.acked_at[sent]))
        return worst


def report(name: str, figures: dict[str, int]) -> str:
    return (
        f"  {name:<22} sent {figures['sent']:>3} to {figures['sockets']} sockets: "
        f"received {figures['received']:>4} (= {figures['sent']} x {figures['sockets']}), "
        f"duplicated {figures['duplicated']}, lost {figures['lost']} "
        f"(repeats of a seq filtered: {figures['repeats_filtered']}, "
        f"sender retries: {figures['retries']})"
    )


async def wait_until(
    condition: Callable[[], bool], what: Callable[[], str], timeout: float = 30
) -> None:
    """Wait for ``condition`` on the clients' pushed events, up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {what()}")
        await asyncio.sleep(0.05)  # events arrive on several sockets; re-check shortly


async def send_chat(member: Member, client_id: str, flow: Flow, timeout: float = 30) -> int:
    """Send one chat message, retrying with the same client_id until the server has it."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            ack = await member.call(
                "consult.chat",
                {"consult_id": member.clinic.consult_id, "client_id": client_id, "text": client_id},
            )
        except (socketio.exceptions.SocketIOError, TimeoutError):
            ack = {"ok": False, "problem": {"status": 0}}
        if ack["ok"]:
            flow.commit(client_id)
            return int(ack["data"]["seq"])
        assert ack["problem"]["status"] in RETRYABLE, ack
        flow.retries += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"chat {client_id} never committed: {ack}")
        await asyncio.sleep(backoff(attempt))  # reconnecting, or the database is away
        attempt += 1


async def prescribe(
    http: aiohttp.ClientSession,
    url: str,
    clinic: Clinic,
    index: int,
    flow: Flow,
    key: str | None = None,
    timeout: float = 45,
    on_status: Callable[[int, Any], Awaitable[None]] | None = None,
    first_url: str | None = None,
) -> dict[str, Any]:
    """gp_zhang prescribes; retried with the same Idempotency-Key until it is created.

    ``first_url`` sends the first attempt elsewhere (straight to one node, to have a write
    in flight on it); the retries go to ``url``.
    """
    key = key or f"rx-{uuid.uuid4().hex}"
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        status, body = await request(
            http,
            "POST",
            f"{(first_url if attempt == 0 and first_url else url)}/api/v1/prescriptions",
            clinic.doctor,
            json=prescription_body(clinic, index),
            headers={"Idempotency-Key": key},
        )
        if on_status is not None:
            await on_status(status, body)
        if status in (200, 201):
            flow.commit(body["id"])
            return body  # type: ignore[no-any-return]
        assert status in RETRYABLE, (status, body)
        flow.retries += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"prescription {key} never created: {status} {body}")
        await asyncio.sleep(backoff(attempt))  # back off before retrying with the same key
        attempt += 1


async def connect_all(
    clients: list[ReconnectingClient], urls: list[str], tokens: list[str]
) -> None:
    for client, url, token in zip(clients, urls, tokens, strict=True):
        await client.connect(url, token)
        await client.start_from_heads()


async def enter_consult(members: list[Member]) -> None:
    """The host's tabs open the session; the doctor waits in the lobby once and is admitted."""
    clinic = members[0].clinic
    hosts = [m for m in members if m.token == clinic.host]
    doctors = [m for m in members if m.token == clinic.doctor]
    await hosts[0].join()
    ack = await doctors[0].join() if doctors else {"data": {"state": "none"}}
    if ack["data"]["state"] == "lobby":
        ack = await hosts[0].call(
            "consult.admit", {"consult_id": clinic.consult_id, "user_id": clinic.doctor_id}
        )
        assert ack["ok"], ack
    for member in members:
        if not member.joined.is_set():
            ack = await member.join()
            assert ack["data"]["state"] == "joined", ack


async def presence(member: Member) -> list[dict[str, Any]]:
    ack = await member.call("consult.presence", {"consult_id": member.clinic.consult_id})
    assert ack["ok"], ack
    return ack["data"]["members"]  # type: ignore[no-any-return]


async def socket_counts(http: aiohttp.ClientSession, urls: list[str]) -> list[int]:
    """Connected Socket.IO clients per node, from each node's /metrics."""
    counts = []
    for url in urls:
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
        line = next(x for x in text.splitlines() if x.startswith("yihao_socketio_connections "))
        counts.append(int(float(line.split()[1])))
    return counts


async def place(
    http: aiohttp.ClientSession, url: str, nodes: list[str], client: ReconnectingClient, token: str
) -> int:
    """Connect through nginx at ``url``; which of ``nodes`` took the socket (from /metrics)."""
    before = await socket_counts(http, nodes)
    await client.connect(url, token)
    await client.start_from_heads()
    deadline = time.monotonic() + 5
    while True:
        after = await socket_counts(http, nodes)
        grown = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if a > b]
        if len(grown) == 1:
            return grown[0]
        # Another socket came or went meanwhile (a tab closed just before): count afresh.
        assert time.monotonic() < deadline, f"no node took the socket: {before} -> {after}"
        await asyncio.sleep(0.05)
