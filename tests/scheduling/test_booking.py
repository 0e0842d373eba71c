"""Schedules and bookings: templates → slots, holidays, 预约挂号, cancellations, never overbooked."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update

from server.container import Services
from server.core.db import utcnow
from server.core.ids import make_resident_id
from server.identity.models import Patient
from server.scheduling.models import Appointment, Slot
from server.scheduling.seed import seed_scheduling
from server.scheduling.service import appointments_starting_between
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
    event = await patient_wang.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] != "booking_confirmed"
    )
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
    event = await patient_wang.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "appointment.cancelled"
    )
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


# --- booking (预约挂号, issue 19) --------------------------------------------------------


def _departments(directory: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["code"], d["name"]): d for i in directory["items"] for d in i["departments"]}


async def _insert_slot(
    services: Services, net: Any, start: datetime, *, institution: str = "QDSL",
    department: str = "心内科", capacity: int = 2, minutes: int = 30,
) -> int:  # fmt: skip
    async with services.db.transaction() as tx:
        slot = Slot(institution_id=net.institutions[institution],
                    department_id=net.departments[(institution, department)], start=start,
                    minutes=minutes, capacity=capacity, booked=0, visit_type="in_person",
                    status="open")  # fmt: skip
        tx.session.add(slot)
        await tx.session.flush()
        return slot.id


async def _insert_appointment(
    services: Services, net: Any, slot_id: int, patient: str, **marks: Any
) -> int:
    async with services.db.transaction() as tx:
        appointment = Appointment(slot_id=slot_id, patient_id=net.patients[patient],
                                  booked_by=net.users[patient], status="booked", holds=slot_id,
                                  **marks)  # fmt: skip
        tx.session.add(appointment)
        await tx.session.execute(
            update(Slot).where(Slot.id == slot_id).values(booked=Slot.booked + 1)
        )
        await tx.session.flush()
        return appointment.id


async def test_the_directory_shows_departments_doctors_and_free_slots(
    api: Api, network: Services
) -> None:
    status, directory = await api.get("/api/v1/booking/directory", as_="patient_wang")
    assert status == 200, directory
    codes = [i["code"] for i in directory["items"]]
    assert {"QDSL", "QDFY", "SNBDH"} <= set(codes)
    assert not {"HCYF", "TATYF"} & set(codes)  # pharmacies have no departments to book
    departments = _departments(directory)
    cardiology = departments[("QDFY", "心内科")]
    assert (cardiology["specialty"], cardiology["specialty_zh"]) == ("cardiology", "心血管内科")
    assert cardiology["place"] == {"building": "东院区门诊楼", "floor": "2层", "room": "B区"}
    assert cardiology["cancel_cutoff_hours"] == 2  # the settings' default: no policy yet
    [doctor] = [d for d in cardiology["doctors"] if d["name"] == "赵强"]
    assert doctor["title"] == "主治医师"
    assert 1 <= len(doctor["slots"]) <= 6  # the next free slots, bounded
    assert all(s["available"] > 0 for s in doctor["slots"])
    starts = [s["start"] for s in doctor["slots"]]
    assert starts == sorted(starts)
    # A doctor without a schedule is still listed, with their title.
    [li] = [d for d in departments[("QDSL", "心内科")]["doctors"] if d["name"] == "李明"]
    assert (li["title"], li["slots"]) == ("主任医师", [])
    # No clinical or personal data: no patient, no booked counts per person.
    text = str(directory)
    assert "patient" not in text and "王建国" not in text

    # From triage: one specialty; from the filter: one institution; pages by institution.
    status, only = await api.get("/api/v1/booking/directory?specialty=cardiology", as_="dr_li")
    assert status == 200
    assert {(i["code"], d["specialty"]) for i in only["items"] for d in i["departments"]} == {
        ("QDSL", "cardiology"),
        ("QDFY", "cardiology"),
    }
    qdfy = await network_ids(network)
    status, one = await api.get(
        f"/api/v1/booking/directory?institution={qdfy.institutions['QDFY']}", as_="patient_wang"
    )
    assert [i["code"] for i in one["items"]] == ["QDFY"]
    status, page = await api.get("/api/v1/booking/directory?limit=1", as_="patient_wang")
    assert (len(page["items"]), page["total"], page["next_offset"]) == (1, len(codes), 1)
    status, last = await api.get(
        f"/api/v1/booking/directory?limit=1&offset={len(codes) - 1}", as_="patient_wang"
    )
    assert (last["items"][0]["code"], last["next_offset"]) == (codes[-1], None)

    # Bad filters are problems naming the field; anonymous callers are refused.
    status, problem = await api.get("/api/v1/booking/directory?specialty=cardio", as_="dr_li")
    assert (status, problem["errors"][0]["field"]) == (422, "specialty")
    status, problem = await api.get(
        "/api/v1/booking/directory?date_from=2026-12-10&date_to=2026-12-01", as_="dr_li"
    )
    assert status == 422
    status, _ = await api.get("/api/v1/booking/directory")
    assert status == 401
    status, specialties = await api.get("/api/v1/booking/specialties", as_="patient_wang")
    assert len(specialties["items"]) == 17
    assert specialties["items"][0] == {"code": "cardiology", "zh": "心血管内科",
                                       "en": "Cardiology"}  # fmt: skip


async def test_booking_notifies_and_cancel_respects_the_cutoff(api: Api, network: Services) -> None:
    net = await network_ids(network)
    slot, _ = await publish_slots(api, net, capacity=1)  # tomorrow 09:00: 9 to 33 hours ahead
    wang = await api.socket("patient_wang")
    status, appt = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": slot["id"]}
    )
    assert status == 201, appt
    assert (appt["institution_name"], appt["department_name"]) == ("青岛市立医院", "心内科")
    assert appt["place"] == {"building": "门诊楼", "floor": "3层", "room": "301–306诊室"}
    assert appt["note"].startswith("请携带身份证")
    event = await wang.wait_for(lambda e: e["type"] == "inbox")
    assert event["data"]["kind"] == "booking_confirmed"
    assert event["data"]["resource"] == f"Appointment/{appt['id']}"

    # A taken slot: a problem, nothing changed.
    status, problem = await api.post(
        "/api/v1/appointments", as_="patient_liu", json={"slot_id": slot["id"]}
    )
    assert (status, problem["code"]) == (409, "slot_full")
    assert await _counts(network, slot["id"]) == (1, 1)

    # The hospital asks for 48 hours' notice: too late to cancel, and nothing changes.
    status, policy = await api.call(
        "PUT", "/api/v1/booking/policy", as_="admin_qdsl",
        json={"cancel_cutoff_hours": 48, "no_show_limit": 3},
    )  # fmt: skip
    assert (status, policy["default"]) == (200, False), policy
    status, problem = await api.post(
        f"/api/v1/appointments/{appt['id']}/cancel", as_="patient_wang", json={}
    )
    assert (status, problem["code"], problem["cutoff_hours"]) == (409, "cancel_cutoff_passed", 48)
    assert problem["cutoff_at"]
    assert await _counts(network, slot["id"]) == (1, 1)
    _, mine = await api.get("/api/v1/appointments", as_="patient_wang")
    [listed] = [a for a in mine["items"] if a["id"] == appt["id"]]
    assert listed["status"] == "booked" and listed["cancel_cutoff_at"] == problem["cutoff_at"]

    # The department's own cut-off (1 hour) overrides the policy: she cancels, and is told.
    status, profile = await api.call(
        "PUT", f"/api/v1/booking/departments/{slot['department_id']}", as_="admin_qdsl",
        json={"specialty": "cardiology", "building": "门诊楼", "floor": "3层", "room": "301诊室",
              "cancel_cutoff_hours": 1},
    )  # fmt: skip
    assert status == 200, profile
    status, cancelled = await api.post(
        f"/api/v1/appointments/{appt['id']}/cancel", as_="patient_wang", json={}
    )
    assert (status, cancelled["status"], cancelled["place"]["room"]) == (
        200,
        "cancelled",
        "301诊室",
    )
    event = await wang.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] != "booking_confirmed"
    )
    assert event["data"]["kind"] == "booking_cancelled"
    assert await _counts(network, slot["id"]) == (0, 0)

    # A desk may still cancel after the cut-off (the hospital's decision).
    status, again = await api.post(
        "/api/v1/appointments", as_="patient_liu", json={"slot_id": slot["id"]}
    )
    assert status == 201
    await api.call("PUT", "/api/v1/booking/policy", as_="admin_qdsl",
                   json={"cancel_cutoff_hours": 48, "no_show_limit": 3})  # fmt: skip
    await api.call(
        "PUT", f"/api/v1/booking/departments/{slot['department_id']}", as_="admin_qdsl",
        json={"specialty": "cardiology"},
    )  # fmt: skip
    status, _ = await api.post(
        f"/api/v1/appointments/{again['id']}/cancel", as_="nurse_he", json={}
    )
    assert status == 200


async def test_only_an_institutions_admin_sets_its_profiles_and_policy(
    api: Api, network: Services
) -> None:
    net = await network_ids(network)
    qdsl = net.departments[("QDSL", "神经内科")]
    qdfy = net.departments[("QDFY", "骨科")]
    body = {"specialty": "neurology", "building": "门诊楼", "floor": "5层", "room": "503诊室",
            "description": "头痛、眩晕、卒中后随访", "note": "请携带既往影像资料"}  # fmt: skip
    status, profile = await api.call(
        "PUT", f"/api/v1/booking/departments/{qdsl}", as_="admin_qdsl", json=body
    )
    assert (status, profile["place"]["room"], profile["cancel_cutoff_hours"]) == (
        200,
        "503诊室",
        None,
    )
    status, directory = await api.get(
        "/api/v1/booking/directory?specialty=neurology", as_="patient_liu"
    )
    [entry] = [d for i in directory["items"] for d in i["departments"]]
    assert (entry["description"], entry["note"]) == (body["description"], body["note"])
    for who, dept, code in (
        ("admin_qdsl", qdfy, 403),
        ("dr_li", qdsl, 403),
        ("patient_wang", qdsl, 403),
        ("admin_qdsl", 99999, 404),
    ):
        status, problem = await api.call(
            "PUT", f"/api/v1/booking/departments/{dept}", as_=who, json=body
        )
        assert status == code, (who, problem)
    status, problem = await api.call(
        "PUT", f"/api/v1/booking/departments/{qdsl}", as_="admin_qdsl",
        json=body | {"specialty": "astrology"},
    )  # fmt: skip
    assert (status, problem["errors"][0]["field"]) == (422, "specialty")

    status, policy = await api.get("/api/v1/booking/policy", as_="admin_qdsl")
    assert (status, policy["default"], policy["cancel_cutoff_hours"], policy["no_show_limit"]) == (
        200, True, 2, 3,
    )  # fmt: skip
    status, policy = await api.call(
        "PUT", "/api/v1/booking/policy", as_="admin_qdsl",
        json={"cancel_cutoff_hours": 12, "no_show_limit": 5},
    )  # fmt: skip
    assert (status, policy["cancel_cutoff_hours"], policy["no_show_limit"]) == (200, 12, 5)
    _, policy = await api.get("/api/v1/booking/policy", as_="admin_qdsl")
    assert (policy["default"], policy["cancel_cutoff_hours"]) == (False, 12)
    status, problem = await api.call(
        "PUT", "/api/v1/booking/policy", as_="admin_qdsl",
        json={"cancel_cutoff_hours": -1, "no_show_limit": 5},
    )  # fmt: skip
    assert (status, problem["errors"][0]["field"]) == (422, "cancel_cutoff_hours")
    for who in ("patient_wang", "dr_li", "admin"):
        status, _ = await api.get("/api/v1/booking/policy", as_=who)
        assert status == 403, who


async def test_attendance_is_marked_on_the_day_by_the_institution(
    api: Api, network: Services
) -> None:
    net = await network_ids(network)
    zone = ZoneInfo(network.settings.schedule_timezone)
    noon = datetime.combine(datetime.now(zone).date(), time(12), tzinfo=zone)
    today = await _insert_appointment(
        network, net, await _insert_slot(network, net, noon), "patient_wang"
    )
    later = await _insert_appointment(
        network, net, await _insert_slot(network, net, noon + timedelta(days=2)), "patient_wang"
    )
    url = f"/api/v1/appointments/{today}/attendance"
    for who, code in (("dr_zhao", 403), ("patient_wang", 403), ("pharmacist_chen", 403)):
        status, _ = await api.call("PUT", url, as_=who, json={"attended": True})
        assert status == code, who
    status, marked = await api.call("PUT", url, as_="nurse_he", json={"attended": True})
    assert (status, marked["attended"], marked["no_show"]) == (200, True, False)
    status, marked = await api.call("PUT", url, as_="admin_qdsl", json={"attended": False})
    assert (status, marked["attended"], marked["no_show"]) == (200, False, True)
    status, problem = await api.call(
        "PUT", f"/api/v1/appointments/{later}/attendance", as_="nurse_he", json={"attended": True}
    )
    assert (status, problem["code"]) == (409, "attendance_not_today")
    status, problem = await api.call("PUT", url, as_="nurse_he", json={"attended": "perhaps"})
    assert (status, problem["errors"][0]["field"]) == (422, "attended")


async def test_no_shows_are_counted_and_suspend_booking_there(api: Api, network: Services) -> None:
    net = await network_ids(network)
    now = utcnow()
    missed = [
        await _insert_appointment(
            network, net, await _insert_slot(network, net, now - timedelta(days=d)), "patient_wang"
        )
        for d in (3, 10, 20)
    ]
    came = await _insert_appointment(
        network, net, await _insert_slot(network, net, now - timedelta(days=5)), "patient_wang",
        attended=True,
    )  # fmt: skip
    # Long ago (outside the 90 days) and still running (the slot has not ended): not counted.
    await _insert_appointment(
        network, net, await _insert_slot(network, net, now - timedelta(days=120)), "patient_wang"
    )
    await _insert_appointment(
        network, net, await _insert_slot(network, net, now - timedelta(minutes=5)), "patient_liu"
    )
    assert await network.scheduling.booking.mark_no_shows() == 4  # 3 recent + the old one
    assert await network.scheduling.booking.mark_no_shows() == 0  # once each
    _, mine = await api.get("/api/v1/appointments", as_="patient_wang")
    flags = {a["id"]: a["no_show"] for a in mine["items"]}
    assert [flags[a] for a in missed] == [True, True, True] and flags[came] is False
    _, hers = await api.get("/api/v1/appointments", as_="patient_liu")
    assert [a["no_show"] for a in hers["items"]] == [False]

    # Three no-shows at QDSL in 90 days: she may not book there (nothing taken) …
    slot, _ = await publish_slots(api, net, capacity=2)
    status, problem = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": slot["id"]}
    )
    assert (status, problem["code"]) == (409, "booking_suspended_no_shows"), problem
    assert (problem["no_shows"], problem["limit"], problem["days"]) == (3, 3, 90)
    assert await _counts(network, slot["id"]) == (0, 0)
    # … but elsewhere in the network she may, and another patient may book here.
    status, _ = await api.post(
        "/api/v1/appointments", as_="patient_liu", json={"slot_id": slot["id"]}
    )
    assert status == 201
    qdfy_slot = await _insert_slot(network, net, now + timedelta(days=2), institution="QDFY")
    status, _ = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": qdfy_slot}
    )
    assert status == 201
    # The hospital's own limit (4) lets her book again.
    await api.call("PUT", "/api/v1/booking/policy", as_="admin_qdsl",
                   json={"cancel_cutoff_hours": 2, "no_show_limit": 4})  # fmt: skip
    status, appt = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": slot["id"]}
    )
    assert status == 201, appt


async def test_reminders_go_once_before_the_appointment(api: Api, network: Services) -> None:
    net = await network_ids(network)
    now = utcnow()
    soon = await _insert_slot(network, net, now + timedelta(hours=3))
    far = await _insert_slot(network, net, now + timedelta(hours=30))
    wang = await api.socket("patient_wang")
    status, appt = await api.post(
        "/api/v1/appointments", as_="patient_wang", json={"slot_id": soon}
    )
    assert status == 201
    status, _ = await api.post("/api/v1/appointments", as_="patient_wang", json={"slot_id": far})
    assert status == 201
    assert await network.scheduling.booking.send_reminders() == 1
    event = await wang.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "appointment_reminder"
    )
    assert event["data"]["resource"] == f"Appointment/{appt['id']}"
    assert "青岛市立医院 心内科" in event["data"]["title"]
    assert await network.scheduling.booking.send_reminders() == 0  # once each
    async with network.db.read() as session:
        sent = await session.scalar(
            select(Appointment.reminder_sent_at).where(Appointment.id == appt["id"])
        )
    assert sent is not None

    # Others see the appointments starting in a window through the service function.
    async with network.db.transaction() as tx:
        window = await appointments_starting_between(tx, now, now + timedelta(hours=24))
    assert [(a.id, a.slot_id) for a in window] == [(appt["id"], soon)]
