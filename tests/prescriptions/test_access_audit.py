"""Prescribing decides the record access inside its write, and every decision is on the record.

A granted decision's entry commits with the prescription; a refusal, and a granted
decision whose write then fails, are appended on their own after the rollback.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server.core.audit import AuditEvent
from tests.helpers import Api
from tests.prescriptions.conftest import World, prescription

RX = "/api/v1/prescriptions"


async def entries_after(world: World, seq: int) -> list[AuditEvent]:
    async with world.services.db.read() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq)
        )
        return list(rows)


async def last_seq(api: Api, world: World, *users: str) -> int:
    """The audit head, once ``users`` are signed in (a sign-in is audited too)."""
    for user in users:
        await api.token(user)
    async with world.services.db.read() as session:
        return (await world.services.audit.head(session))[0]


def access_entries(entries: list[AuditEvent]) -> list[tuple[str, int | None, str | None, Any]]:
    return [
        (e.outcome, e.patient_id, e.reason, e.details.get("action"))
        for e in entries
        if e.action == "record.access"
    ]


async def test_a_granted_create_commits_its_access_entry_with_the_prescription(
    api: Api, world: World
) -> None:
    before = await last_seq(api, world, "dr_li")
    status, created = await api.post(RX, as_="dr_li", json=prescription(world))
    assert status == 201, created
    entries = await entries_after(world, before)
    assert access_entries(entries) == [
        ("success", world.patient_id, "care_relationship", "prescribe")
    ]
    # The decision comes first, the prescription's own entry after it, in one chain.
    assert entries[0].action == "record.access"
    assert any(e.action.startswith("prescription.") for e in entries[1:]), entries
    assert (await world.services.audit.verify()).ok


async def test_a_refused_create_is_audited_though_the_write_rolls_back(
    api: Api, world: World
) -> None:
    before = await last_seq(api, world, "dr_zhao")
    # dr_zhao's hospital (QDFY) has no reason to read 钱国华's record.
    status, problem = await api.post(RX, as_="dr_zhao", json=prescription(world))
    assert status == 403 and problem["code"] == "record_access_denied"
    entries = await entries_after(world, before)
    assert access_entries(entries) == [("denied", world.patient_id, "no_reason", "prescribe")]
    # Audited once, by the access check (not again as a refused HTTP request).
    assert [e.action for e in entries] == ["record.access"]
    status, mine = await api.get(RX, as_="dr_zhao")
    assert status == 200 and mine["items"] == []


async def test_an_unknown_patient_is_refused_like_a_forbidden_one(api: Api, world: World) -> None:
    before = await last_seq(api, world, "dr_zhao", "dr_li")
    status, forbidden = await api.post(RX, as_="dr_zhao", json=prescription(world))
    status_unknown, unknown = await api.post(
        RX, as_="dr_li", json=prescription(world, patient_id=999999)
    )
    assert status == status_unknown == 403
    assert forbidden["code"] == unknown["code"] == "record_access_denied"
    assert forbidden["detail"] == unknown["detail"]
    entries = await entries_after(world, before)
    assert access_entries(entries) == [
        ("denied", world.patient_id, "no_reason", "prescribe"),
        ("denied", None, "no_such_patient", "prescribe"),
    ]


async def test_a_granted_create_that_fails_its_checks_keeps_its_access_entry(
    api: Api, world: World
) -> None:
    """The record was read (the findings say what is in it): the access stays audited."""
    before = await last_seq(api, world, "dr_li")
    body = prescription(world, diagnosis={"code": "J45", "display": "哮喘"})
    status, problem = await api.post(RX, as_="dr_li", json=body)
    assert status == 422 and problem["code"] == "rx_not_follow_up"
    entries = await entries_after(world, before)
    assert access_entries(entries) == [
        ("success", world.patient_id, "care_relationship", "prescribe")
    ]
    assert [e.action for e in entries] == ["record.access"]
    assert (await world.services.audit.verify()).ok
