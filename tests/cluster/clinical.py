"""The clinical traffic of the failure tests: consult chat and prescription delivery.

Over real HTTP and Socket.IO against a running cluster, as the personas do:
gp_zhang (a community doctor) asks 青岛市立医院 for a consult about patient_wang,
dr_li accepts and hosts it, both chat in the room from several tabs (sockets),
gp_zhang prescribes for the patient to 海川大药房 (HCYF) whose pharmacist_chen
has the pharmacy's queue open in several tabs.

Counting is per flow: what was sent (acknowledged by the server), and per
receiving socket what arrived once, what arrived under two numbers (a real
duplicate: the same message or prescription committed twice) and what never
arrived. Raw repeats of one stream number (a re-push, a replay overlapping a
live push) are filtered by ``seq`` as every client does, and counted apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import socketio

from tests.cluster.client import ReconnectingClient, login
from tests.helpers import amlodipine

RETRYABLE = (0, 502, 503, 504)


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
            return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError):
        return 0, None


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


def prescription_body(clinic: Clinic, index: int) -> dict[str, Any]:
    return {
        "patient_id": clinic.patient_id,
        "pharmacy_id": clinic.pharmacy_id,
        "diagnosis": {"code": "I10", "display": "原发性高血压"},
        "items": [amlodipine()],
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

    async def _catch_up(self, reconnected: bool) -> None:
        await super()._catch_up(reconnected)
        if reconnected:
            with contextlib.suppress(socketio.exceptions.SocketIOError, TimeoutError):
                await self.join()

    def chat(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["stream"] == self.clinic.consult_stream and e["type"] == "consult.chat"
        ]


class Pharmacy(ReconnectingClient):
    """A pharmacist's tab on the pharmacy's queue (the institution stream)."""

    def __init__(self, clinic: Clinic) -> None:
        super().__init__()
        self.clinic = clinic
        self.token = clinic.pharmacist
        self.name = "pharmacist_chen"

    def deliveries(self) -> list[dict[str, Any]]:
        """Each delivered version once: a delivery pushed again is a new event (a new seq)
        carrying the same version, one delivery, not a prescription committed twice."""
        seen: dict[tuple[int, int], dict[str, Any]] = {}
        for e in self.events:
            if (
                e["stream"] == self.clinic.pharmacy_stream
                and e["type"] == "prescription"
                and e["op"] == "delivered"
            ):
                sent = e["data"]["prescription"]
                seen.setdefault((sent["id"], sent["version"]), e)
        return list(seen.values())


def chat_key(envelope: dict[str, Any]) -> Any:
    return envelope["data"]["client_id"]


def delivery_key(envelope: dict[str, Any]) -> Any:
    return envelope["data"]["prescription"]["id"]


@dataclass
class Flow:
    """What one flow sent, and what each receiving socket made of it."""

    name: str
    sent: list[Any] = field(default_factory=list)
    retries: int = 0

    def tally(
        self, clients: list[Any], received: Callable[[Any], list[dict[str, Any]]], key: Any
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
    while True:
        try:
            ack = await member.call(
                "consult.chat",
                {"consult_id": member.clinic.consult_id, "client_id": client_id, "text": client_id},
            )
        except (socketio.exceptions.SocketIOError, TimeoutError):
            ack = {"ok": False, "problem": {"status": 0}}
        if ack["ok"]:
            flow.sent.append(client_id)
            return int(ack["data"]["seq"])
        assert ack["problem"]["status"] in RETRYABLE, ack
        flow.retries += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"chat {client_id} never committed: {ack}")
        await asyncio.sleep(0.1)  # the socket is reconnecting (or the database is away)


async def prescribe(
    http: aiohttp.ClientSession,
    url: str,
    clinic: Clinic,
    index: int,
    flow: Flow,
    key: str | None = None,
    timeout: float = 45,
    on_status: Callable[[int, Any], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """gp_zhang prescribes; retried with the same Idempotency-Key until it is created."""
    key = key or f"rx-{uuid.uuid4().hex}"
    deadline = time.monotonic() + timeout
    while True:
        status, body = await request(
            http,
            "POST",
            f"{url}/api/v1/prescriptions",
            clinic.doctor,
            json=prescription_body(clinic, index),
            headers={"Idempotency-Key": key},
        )
        if on_status is not None:
            await on_status(status, body)
        if status == 201:
            flow.sent.append(body["id"])
            return body  # type: ignore[no-any-return]
        assert status in RETRYABLE, (status, body)
        flow.retries += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"prescription {key} never created: {status} {body}")
        await asyncio.sleep(0.1)  # back off before retrying with the same key


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
