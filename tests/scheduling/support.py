"""Shared by the scheduling, referrals and inbox tests: the demo network's ids, slots, care."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from server.container import Services
from server.identity.models import Department, Institution, User
from server.seed import PATIENTS
from tests.helpers import Api


@dataclass
class Network:
    users: dict[str, int]  # username → user id
    institutions: dict[str, int]  # code → id
    departments: dict[tuple[str, str], int]  # (code, name) → id
    patients: dict[str, int]  # patient username → patient id


async def network_ids(services: Services) -> Network:
    async with services.db.read() as session:
        users = {u.username: u for u in await session.scalars(select(User))}
        institutions = {i.code: i.id for i in await session.scalars(select(Institution))}
        codes = {v: k for k, v in institutions.items()}
        departments = {
            (codes[d.institution_id], d.name): d.id
            for d in await session.scalars(select(Department))
        }
    return Network(
        users={name: u.id for name, u in users.items()},
        institutions=institutions,
        departments=departments,
        patients={p.username: users[p.username].patient_id for p in PATIENTS},  # type: ignore[misc]
    )


async def register_patient(api: Api, as_: str, patient: str) -> int:
    """The clinic of ``as_`` registers a demo patient: a care relationship begins there."""
    spec = next(p for p in PATIENTS if p.username == patient)
    status, body = await api.post(
        "/api/v1/patients", as_=as_, json={"resident_id": spec.resident_id, "name": spec.name}
    )
    assert status in (200, 201), body
    return int(body["id"])


def tomorrow(settings_zone: str = "Asia/Shanghai") -> datetime:
    local = datetime.now(ZoneInfo(settings_zone)) + timedelta(days=1)
    return local


async def publish_slots(
    api: Api,
    net: Network,
    *,
    as_: str = "nurse_he",
    institution: str = "QDSL",
    department: str = "心内科",
    capacity: int = 2,
    count: int = 2,
    visit_type: str = "in_person",
) -> list[dict[str, Any]]:
    """A weekly template for tomorrow's weekday, generated for tomorrow: ``count`` slots."""
    day = tomorrow().date()
    dept = net.departments[(institution, department)]
    status, template = await api.post(
        "/api/v1/schedules/templates",
        as_=as_,
        json={"department_id": dept, "weekday": day.weekday(), "start_time": "09:00",
              "slot_minutes": 30, "slot_count": count, "capacity": capacity,
              "visit_type": visit_type},
    )  # fmt: skip
    assert status == 201, template
    listing = f"/api/v1/slots?department_id={dept}"
    _, before = await api.get(listing, as_=as_)
    status, result = await api.post(
        "/api/v1/schedules/generate",
        as_=as_,
        json={"department_id": dept, "from_date": day.isoformat(), "to_date": day.isoformat()},
    )
    assert status == 200, result
    assert result["created"] == count
    _, after = await api.get(listing, as_=as_)
    known = {s["id"] for s in before["items"]}
    return [s for s in after["items"] if s["id"] not in known]


def inbox_events(sock: Any, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in sock.events
        if e["type"] == "inbox" and e["op"] == "notification"
        and (kind is None or e["data"]["kind"] == kind)
    ]  # fmt: skip
