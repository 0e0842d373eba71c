"""One write order: many mixed writers on PostgreSQL at once, and not one deadlock.

Every write locks shared rows (stream heads, the one audit head). Transactions
stage those writes and flush them just before commit in one order (streams by
name, then the audit chain), so no two of them wait on each other's locks in
opposite orders. Here the two sides of the security world write all at once —
consult chat, prescriptions, referrals, slot bookings, FHIR pushes — and every
request succeeds, PostgreSQL reports no deadlock, every stream is numbered
without a gap, each message is there once, and the audit chain verifies.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from server.config import Settings
from server.container import Services
from server.core.events import StreamEvent, StreamHead
from server.identity.models import Department
from tests.helpers import Api, SocketClient
from tests.security.world import AMLODIPINE, DIAGNOSIS, Side, World, build_world

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("backend", ["postgres"])]

WRITERS = 8
OPS = 20  # per writer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No background job competes for the clock (the writers are what is measured)."""
    return settings.with_overrides(
        checkpoint_interval_seconds=0,
        referral_expiry_interval_seconds=0,
        consult_escalation_interval_seconds=0,
        fhir_ingest_per_minute=10_000,
    )


def observation(side: Side, n: int) -> dict[str, Any]:
    """A glucose result from the side's clinic, for the patient it registered."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                    "subject": {"reference": f"Patient/{side.patient_id}"},
                    "effectiveDateTime": f"2026-03-{1 + n % 28:02d}T08:00:00+08:00",
                    "valueQuantity": {"value": 5 + n / 10, "unit": "mmol/L"},
                },
            }
        ],
    }


async def open_consult(api: Api, side: Side) -> SocketClient:
    """A consult of the side accepted and joined by its specialist: a room to chat in."""
    now = datetime.now(UTC)
    status, consult = await api.post("/api/v1/consults", as_=side.gp, json={
        "patient_id": side.patient_id,
        "consent": {"given_by": "patient", "name": "本人", "method": "written",
                    "given_at": (now - timedelta(hours=1)).isoformat()},
        "reason": "复查", "purpose": "调整方案", "clinical_question": "是否加药？",
        "case_summary": "高血压十年。", "urgency": "routine",
        "window_start": (now + timedelta(hours=1)).isoformat(),
        "window_end": (now + timedelta(days=2)).isoformat(),
        "invited_institution_id": side.hospital_id,
    })  # fmt: skip
    assert status == 201, consult
    status, body = await api.post(
        f"/api/v1/consults/{consult['id']}/accept",
        as_=side.specialist,
        json={"scheduled_at": (now + timedelta(hours=2)).isoformat()},
    )
    assert status == 200, body
    side.extra["chat_consult"] = consult["id"]
    host = await api.socket(side.specialist)
    ack = await host.call("consult.join", {"consult_id": consult["id"]})
    assert ack["ok"], ack
    return host


async def free_slots(api: Api, world: World) -> dict[str, list[int]]:
    """Open slots each side's patient may book, across the hospitals' departments."""
    async with world.services.db.read() as session:
        departments = list(await session.scalars(select(Department)))
    slots: dict[str, list[int]] = {}
    # Both patients see the same open slots: each side gets its own share, so that two
    # bookings of one slot (a 409 slot_full, rightly) are not taken for a write-order fault.
    taken: set[int] = set()
    for side in (world.a, world.b):
        ids: list[int] = []
        for department in departments:
            if department.institution_id not in (world.a.hospital_id, world.b.hospital_id):
                continue
            status, body = await api.get(
                f"/api/v1/slots?department_id={department.id}&available=true",
                as_=side.patient_user,
            )
            assert status == 200, body
            ids += [slot["id"] for slot in body["items"] if slot["id"] != side.slot_id]
        mine = [slot_id for slot_id in ids if slot_id not in taken][::2]
        taken.update(mine)
        slots[side.name] = mine
    return slots


async def test_mixed_writers_never_deadlock(
    backend: str, api: Api, network: Services, caplog: pytest.LogCaptureFixture
) -> None:
    world = await build_world(api, network)
    hosts = {side.name: await open_consult(api, side) for side in (world.a, world.b)}
    slots = await free_slots(api, world)
    sent: list[str] = []  # the chat messages' client ids
    failures: list[Any] = []

    async def chat(side: Side, n: int) -> tuple[int, Any]:
        client_id = str(uuid.uuid4())
        sent.append(client_id)
        ack = await hosts[side.name].call(
            "consult.chat",
            {"consult_id": side.extra["chat_consult"], "client_id": client_id, "text": f"#{n}"},
            timeout=60,
        )
        return (200 if ack["ok"] else 500), ack

    async def prescribe(side: Side, n: int) -> tuple[int, Any]:
        return await api.post("/api/v1/prescriptions", as_=side.gp, json={
            "patient_id": side.patient_id, "diagnosis": DIAGNOSIS, "items": [AMLODIPINE],
            "notes": f"续方 {n}"})  # fmt: skip

    async def refer(side: Side, n: int) -> tuple[int, Any]:
        return await api.post("/api/v1/referrals", as_=side.gp, json={
            "direction": "up", "patient_id": side.patient_id, "purpose": f"评估 {n}",
            "to_institution_id": side.hospital_id, "to_department_id": side.department_id,
            "reason": "劳力性胸痛", "working_diagnosis": "心绞痛?", "urgency": "routine",
            "summary": "高血压十年。", "attachments": []})  # fmt: skip

    async def book(side: Side, n: int) -> tuple[int, Any]:
        if not slots[side.name]:
            return await push(side, n)
        slot_id = slots[side.name].pop()
        return await api.post(
            "/api/v1/appointments", as_=side.patient_user, json={"slot_id": slot_id}
        )

    async def push(side: Side, n: int) -> tuple[int, Any]:
        return await api.post(
            "/fhir",
            as_=side.gp,
            json=observation(side, n),
            headers={"Content-Type": "application/fhir+json"},
        )

    kinds = [chat, prescribe, refer, book, push]
    done: Counter[str] = Counter()

    async def writer(w: int) -> None:
        for n in range(OPS):
            side = world.a if (w + n) % 2 else world.b
            op = kinds[(w + n) % len(kinds)]
            status, body = await op(side, w * OPS + n)
            done[op.__name__] += 1
            if status not in (200, 201):
                failures.append((op.__name__, status, body))

    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    seconds = time.monotonic() - started

    deadlocks = [
        r
        for r in caplog.records
        if "deadlock" in f"{r.getMessage()} {r.exc_info[1] if r.exc_info else ''}".lower()
    ]
    deadlocks += [f for f in failures if "deadlock" in str(f).lower()]
    print(
        f"\nwrite order: {WRITERS * OPS} ops ({dict(done)}) in {seconds:.1f}s,"
        f" deadlocks={len(deadlocks)}, failures={len(failures)}"
    )
    assert not failures, failures[:5]
    assert not deadlocks, deadlocks[:5]

    async with network.db.read() as session:
        heads = dict((await session.execute(select(StreamHead.stream, StreamHead.seq))).all())
        events = (
            await session.execute(
                select(StreamEvent.stream, StreamEvent.seq, StreamEvent.type, StreamEvent.data)
            )
        ).all()
    numbers: dict[str, list[int]] = defaultdict(list)
    for stream, seq, _, _ in events:
        numbers[stream].append(seq)
    for stream, head in heads.items():
        assert sorted(numbers[stream]) == list(range(1, head + 1)), stream
    assert set(numbers) == set(heads)
    chats = Counter(data["client_id"] for _, _, type_, data in events if type_ == "consult.chat")
    assert all(chats[client_id] == 1 for client_id in sent), "a chat message lost or doubled"
    assert len(sent) == done["chat"]
    result = await network.audit.verify()
    assert result.ok, result
    assert result.checked > WRITERS * OPS
