"""Schedules and bookings: templates → slots, holidays, 预约挂号, cancellations, never overbooked."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from server.container import Services
from server.core.db import utcnow
from server.core.ids import make_resident_id
from server.identity.models import Patient
from server.scheduling.models import Appointment, Slot
from server.scheduling.seed import seed_scheduling
from tests.helpers import Api
from tests.scheduling.support import inbox_events, network_ids, publish_slots, tomorrow


async def _counts(services: Services, slot_id: int) -> tuple[int, int]:
    async with services.db.read() as session:
        booked = await session.scalar(select(Slot.booked).where(Slot.id == slot_id))
        held = await session.scalar(
            select(func.count(Appointment.id)).where(
                Appointment.slot_id == slot_id, Appointment.status == "booked"
            )
        )
    return int(booked or 0), int(held or 0)


async def test_templates_generate_local_slots_once_and_skip_holidays(
    api: Api, network: Services
) -> None:
    net = await network_ids(network)
    slots = await publish_slots(api, net, capacity=3, count=4, visit_type="remote")
    assert [s["start"][11:16] for s in slots] == ["01:00", "01:30", "02:00", "02:30"]  # 09:00 CST
    assert {(s["capacity"], s["available"], s["visit_type"]) for s in slots} == {(3, 3, "remote")}
    day = tomorrow().date().isoformat()
    dept = net.departments[("QDSL", "心内科")]
    again = {"department_id": dept, "from_date": day, "to_date": day}
    status, result = await api.post("/api/v1/schedules/generate", as_="nurse_he", json=again)
    assert (status, result["created"]) == (200, 0)

    # Someone books, then the hospital declares the day a holiday: the slots close, she is told.
    patient_wang = await api.socket("patient_wang")
    status, appt = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": slots[0]["id"]}
    )
    assert status == 201, appt
    status, holiday = await api.post(
        "/api/v1/schedules/holidays", as_="admin_qdsl", json={"day": day, "reason": "台风停诊"}
    )
    assert status == 201, holiday
    # Every open slot of the hospital that day closes (the seeded 内分泌科 ones too).
    assert {s["id"] for s in slots} <= set(holiday["cancelled_slots"])
    event = await patient_wang.wait_for(lambda e: e["type"] == "inbox")
    assert event["data"]["kind"] == "appointment.cancelled"
    assert event["data"]["resource"] == f"Appointment/{appt['id']}"
    status, result = await api.post("/api/v1/schedules/generate", as_="nurse_he", json=again)
    assert result == {"created": 0, "holidays": [day]}
    status, body = await api.post(
        "/api/v1/schedules/holidays", as_="admin_qdsl", json={"day": day, "reason": "again"}
    )
    assert (status, body["code"]) == (409, "duplicate_holiday")


async def test_only_the_institutions_staff_publish_its_schedule(
    api: Api, network: Services
) -> None:
    net = await network_ids(network)
    body = {"department_id": net.departments[("QDSL", "心内科")], "weekday": 1,
            "start_time": "09:00", "slot_minutes": 30, "slot_count": 2, "capacity": 1}  # fmt: skip
    status, problem = await api.post("/api/v1/schedules/templates", as_="dr_zhao", json=body)
    assert (status, problem["code"]) == (403, "not_institution_staff")
    status, problem = await api.post("/api/v1/schedules/templates", as_="patient_wang", json=body)
    assert status == 403
    status, problem = await api.post(
        "/api/v1/schedules/templates", as_="dr_li", json=body | {"start_time": "25:00"}
    )
    assert status == 422 and problem["errors"][0]["field"] == "start_time"


async def test_booking_rules_and_cancelling_frees_the_place(api: Api, network: Services) -> None:
    net = await network_ids(network)
    slot, other = await publish_slots(api, net, capacity=1)
    book = {"slot_id": slot["id"]}
    status, appt = await api.post("/api/v1/appointments", as_="patient_wang", json=book)
    assert status == 201, appt
    assert (appt["status"], appt["slot"]["booked"], appt["slot"]["available"]) == ("booked", 1, 0)

    status, problem = await api.post("/api/v1/appointments", as_="patient_liu", json=book)
    assert (status, problem["code"]) == (409, "slot_full")
    status, problem = await api.post("/api/v1/appointments", as_="patient_wang", json=book)
    assert (status, problem["code"]) == (409, "slot_full")
    status, problem = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": other["id"],
                                                           "patient_id": net.patients["patient_liu"]}
    )  # fmt: skip
    assert status == 403
    status, problem = await api.post("/api/v1/appointments", as_="nurse_he", json=book)
    assert (status, problem["errors"][0]["field"]) == (422, "patient_id")
    status, problem = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": 999}
    )
    assert status == 404
    assert await _counts(network, slot["id"]) == (1, 1)

    # Cancelling frees the place for someone else.
    status, cancelled = await api.post(
        f"/api/v1/appointments/{appt['id']}/cancel", as_="patient_wang", json={}
    )
    assert (status, cancelled["status"], cancelled["slot"]["available"]) == (200, "cancelled", 1)
    status, problem = await api.post(
        f"/api/v1/appointments/{appt['id']}/cancel", as_="patient_wang", json={}
    )
    assert (status, problem["code"]) == (409, "appointment_cancelled")
    status, problem = await api.post(
        f"/api/v1/appointments/{appt['id']}/cancel", as_="patient_liu", json={}
    )
    assert status == 404
    status, appt2 = await api.post("/api/v1/appointments", as_="patient_liu", json=book)
    assert status == 201, appt2
    assert await _counts(network, slot["id"]) == (1, 1)

    # The desk books a patient on the other slot; a second place for the same patient is refused.
    desk = {"slot_id": other["id"], "patient_id": net.patients["patient_zhao"]}
    status, appt3 = await api.post("/api/v1/appointments", as_="nurse_he", json=desk)
    assert (status, appt3["booked_by"]) == (201, net.users["nurse_he"])
    status, mine = await api.get("/api/v1/appointments", as_="patient_liu")
    assert [a["id"] for a in mine["items"]] == [appt2["id"]]
    status, desk_view = await api.get("/api/v1/appointments", as_="nurse_he")
    assert {a["id"] for a in desk_view["items"]} == {appt["id"], appt2["id"], appt3["id"]}


async def test_past_and_cancelled_slots_cannot_be_booked(api: Api, network: Services) -> None:
    net = await network_ids(network)
    slot, _ = await publish_slots(api, net, capacity=5)
    async with network.db.transaction() as tx:
        past = Slot(institution_id=net.institutions["QDSL"], department_id=slot["department_id"],
                    start=utcnow() - timedelta(hours=1), minutes=30, capacity=5, booked=0,
                    visit_type="in_person", status="open")  # fmt: skip
        tx.session.add(past)
    status, problem = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": past.id}
    )
    assert (status, problem["code"]) == (422, "slot_in_past")

    patient_wang, patient_liu = await api.socket("patient_wang"), await api.socket("patient_liu")
    status, _appt = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": slot["id"]}
    )
    assert status == 201
    status, problem = await api.post(
        f"/api/v1/slots/{slot['id']}/cancel", as_="dr_zhao", json={"reason": "x"}
    )
    assert status == 403
    status, cancelled = await api.post(
        f"/api/v1/slots/{slot['id']}/cancel", as_="dr_li", json={"reason": "医生外出会诊"}
    )
    assert (status, cancelled["status"], cancelled["booked"]) == (200, "cancelled", 0)
    event = await patient_wang.wait_for(lambda e: e["type"] == "inbox")
    assert event["data"]["data"]["reason"] == "医生外出会诊"
    status, problem = await api.post(
        "/api/v1/appointments", as_="patient_liu", json={"slot_id": slot["id"]}
    )
    assert (status, problem["code"]) == (409, "slot_cancelled")
    status, problem = await api.post(
        f"/api/v1/slots/{slot['id']}/cancel", as_="dr_li", json={"reason": "again"}
    )
    assert (status, problem["code"]) == (409, "slot_cancelled")
    status, mine = await api.get("/api/v1/appointments", as_="patient_wang")
    assert mine["items"][0]["status"] == "cancelled"
    await patient_liu.sync()
    assert inbox_events(patient_liu) == []  # she was not booked on it


async def _make_patients(services: Services, n: int) -> list[int]:
    """n residents known to the network (the desk books for them; they need no login)."""
    birth = tomorrow().date().replace(year=1970)
    async with services.db.transaction() as tx:
        patients = [
            Patient(resident_id=make_resident_id("370202", birth, 100 + i), name=f"患者{i}",
                    sex="male" if i % 2 else "female", birth_date=birth)
            for i in range(n)
        ]  # fmt: skip
        tx.session.add_all(patients)
        await tx.session.flush()
        return [p.id for p in patients]


async def test_concurrent_bookings_never_overbook(
    api: Api, network: Services, backend: str
) -> None:
    """Many bookings fired at one slot at once: exactly ``capacity`` are accepted."""
    net = await network_ids(network)
    capacity, attempted = 5, 40
    [slot] = await publish_slots(api, net, capacity=capacity, count=1)
    patient_ids = await _make_patients(network, attempted)
    await api.token("nurse_he")
    results = await asyncio.gather(
        *(
            api.post("/api/v1/appointments", as_="nurse_he",
                     json={"slot_id": slot["id"], "patient_id": pid})
            for pid in patient_ids
        )
    )  # fmt: skip
    statuses = [status for status, _ in results]
    accepted = statuses.count(201)
    print(
        f"\nconcurrent booking [{backend}]: attempted={attempted} accepted={accepted} "
        f"capacity={capacity} refused_full={statuses.count(409)}"
    )
    assert accepted == capacity
    assert statuses.count(409) == attempted - capacity
    assert all(body["code"] == "slot_full" for status, body in results if status == 409)
    assert await _counts(network, slot["id"]) == (capacity, capacity)


async def test_the_demo_network_has_bookable_schedules(api: Api, network: Services) -> None:
    net = await network_ids(network)
    qdfy = net.institutions["QDFY"]
    status, slots = await api.get(
        f"/api/v1/slots?institution_id={qdfy}&available=true", as_="patient_wang"
    )
    assert status == 200 and slots["items"]
    assert {s["visit_type"] for s in slots["items"]} == {"in_person", "remote"}
    first = slots["items"][0]
    status, appt = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": first["id"]}
    )
    assert (status, appt["slot"]["available"]) == (201, first["available"] - 1)
    _, before = await api.get(f"/api/v1/slots?institution_id={qdfy}", as_="patient_wang")
    assert await seed_scheduling(network) == 0  # idempotent: nothing new
    _, after = await api.get(f"/api/v1/slots?institution_id={qdfy}", as_="patient_wang")
    assert after == before
