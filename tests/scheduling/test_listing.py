"""Reading back a desk's schedule: its templates and its closed days (the schedules screen)."""

from __future__ import annotations

from datetime import timedelta

from server.container import Services
from tests.helpers import Api
from tests.scheduling.support import network_ids, tomorrow


async def test_a_desk_lists_its_own_templates_and_holidays(api: Api, network: Services) -> None:
    net = await network_ids(network)
    cardio = net.departments[("QDSL", "心内科")]
    endo = net.departments[("QDSL", "内分泌科")]
    _, seeded = await api.get("/api/v1/schedules/templates", as_="admin_qdsl")
    seeded_ids = {t["id"] for t in seeded["items"]}
    body = {"department_id": cardio, "weekday": 2, "start_time": "14:00", "slot_minutes": 20,
            "slot_count": 6, "capacity": 2, "visit_type": "remote"}  # fmt: skip
    status, created = await api.post("/api/v1/schedules/templates", as_="admin_qdsl", json=body)
    assert status == 201, created

    status, listed = await api.get("/api/v1/schedules/templates", as_="admin_qdsl")
    assert status == 200, listed
    new = [t for t in listed["items"] if t["id"] not in seeded_ids]
    assert new == [created]
    assert {t["institution_id"] for t in listed["items"]} == {net.institutions["QDSL"]}
    status, only_endo = await api.get(
        f"/api/v1/schedules/templates?department_id={endo}", as_="nurse_he"
    )
    assert status == 200
    assert created["id"] not in {t["id"] for t in only_endo["items"]}
    assert {t["department_id"] for t in only_endo["items"]} <= {endo}

    # Another institution's staff see their own schedule, never this one.
    status, other = await api.get("/api/v1/schedules/templates", as_="dr_zhao")
    assert status == 200
    assert created["id"] not in {t["id"] for t in other["items"]}
    status, problem = await api.get("/api/v1/schedules/templates", as_="patient_wang")
    assert status == 403, problem
    status, problem = await api.get("/api/v1/schedules/templates", as_="pharmacist_chen")
    assert status == 403, problem

    # Holidays: listed in date order, only the institution's own; "from" filters.
    day = tomorrow().date()
    later = day + timedelta(days=365)
    for when, reason in ((later, "院庆"), (day, "台风停诊")):
        status, added = await api.post(
            "/api/v1/schedules/holidays",
            as_="admin_qdsl",
            json={"day": when.isoformat(), "reason": reason},
        )
        assert status == 201, added
    status, holidays = await api.get("/api/v1/schedules/holidays", as_="nurse_he")
    assert status == 200, holidays
    assert holidays["items"] == [
        {"day": day.isoformat(), "reason": "台风停诊"},
        {"day": later.isoformat(), "reason": "院庆"},
    ]
    status, from_later = await api.get(
        f"/api/v1/schedules/holidays?from={later.isoformat()}", as_="admin_qdsl"
    )
    assert [h["reason"] for h in from_later["items"]] == ["院庆"]
    _, elsewhere = await api.get("/api/v1/schedules/holidays", as_="dr_zhao")
    assert elsewhere["items"] == []
    status, problem = await api.get("/api/v1/schedules/holidays?from=soon", as_="admin_qdsl")
    assert status == 422 and problem["errors"][0]["field"] == "from"
