"""Pharmacy choice and pickup: the pharmacies by district, choosing and the refused change
once review started, ready for pickup by the chosen pharmacy's pharmacist, dispensing from
ready, the patient's inbox, and the dosing in plain words."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from server.inbox.models import InboxItem
from server.prescriptions.dosing import dosing_text
from server.prescriptions.models import PharmacyProfile, Prescription, PrescriptionHistory
from server.prescriptions.pharmacies import NEIGHBOURS, distance, is_open
from tests.helpers import Api, amlodipine
from tests.prescriptions.conftest import PATIENT, World, prescription

RX = "/api/v1/prescriptions"
PHARMACIES = "/api/v1/pharmacies"
DISPENSE = {"items": [{"drug_code": "C08CA01", "quantity": 1}]}


async def signed(api: Api, world: World) -> dict[str, Any]:
    status, rx = await api.post(RX, as_="dr_li", json=prescription(world))
    assert status == 201, rx
    return rx  # type: ignore[no-any-return]


async def chosen(api: Api, world: World, pharmacy_id: int) -> dict[str, Any]:
    rx = await signed(api, world)
    status, routed = await api.post(
        f"{RX}/{rx['id']}/route", as_=PATIENT, json={"pharmacy_id": pharmacy_id}
    )
    assert status == 200, routed
    return routed  # type: ignore[no-any-return]


async def review(api: Api, rx_id: int, decision: str, as_: str = "pharmacist_chen") -> Any:
    status, body = await api.post(f"{RX}/{rx_id}/review", as_=as_, json={"decision": decision})
    assert status == 200, body
    return body


async def inbox_kinds(world: World, rx_id: int) -> list[str]:
    async with world.services.db.read() as session:
        rows = await session.scalars(
            select(InboxItem.kind)
            .where(InboxItem.resource == f"Prescription/{rx_id}")
            .order_by(InboxItem.id)
        )
        return list(rows)


async def status_of(world: World, rx_id: int) -> str:
    async with world.services.db.read() as session:
        row = await session.get(Prescription, rx_id)
        assert row is not None
        return row.status


# --- the pharmacies ---------------------------------------------------------------------


async def test_the_pharmacies_with_address_hours_and_phone_nearest_district_first(
    api: Api, world: World
) -> None:
    status, found = await api.get(PHARMACIES, as_=PATIENT)
    assert status == 200, found
    # 钱国华's registered address (his resident ID) is in 市南区.
    assert found["district"] == "市南区" and found["district_source"] == "profile"
    names = [p["name"] for p in found["items"]]
    assert len(names) == 6 and names[0] == "海川大药房（香港中路店）"
    first = found["items"][0]
    assert first["district"] == "市南区" and first["distance"] == "same_district"
    assert first["address"] == "青岛市市南区香港中路 68 号" and first["phone"] == "0532-85900001"
    assert first["hours"] == [{"days": [1, 2, 3, 4, 5, 6, 7], "opens": "08:00", "closes": "22:00"}]
    labels = [p["distance"] for p in found["items"]]
    assert labels == sorted(labels, key=["same_district", "neighbouring", "other"].index)
    by_district = {p["district"]: p["distance"] for p in found["items"]}
    assert by_district == {
        "市南区": "same_district",
        "市北区": "neighbouring",
        "崂山区": "neighbouring",
        "黄岛区": "neighbouring",
        "李沧区": "other",
        "城阳区": "other",
    }

    status, found = await api.get(PHARMACIES, as_=PATIENT, params={"district": "城阳区"})
    assert status == 200 and found["district_source"] == "query"
    assert found["items"][0]["district"] == "城阳区"
    assert {p["district"] for p in found["items"] if p["distance"] == "neighbouring"} == {
        "李沧区",
        "崂山区",
        "黄岛区",
    }

    # Open now: the 24-hour pharmacy in 崂山区 is always among them.
    status, open_now = await api.get(PHARMACIES, as_=PATIENT, params={"open_now": "true"})
    assert status == 200
    assert "崂山健民大药房（海尔路店）" in [p["name"] for p in open_now["items"]]
    assert all(p["open_now"] for p in open_now["items"])

    # A doctor routing for a patient sees the list, without distances (no district known).
    status, found = await api.get(PHARMACIES, as_="dr_li")
    assert status == 200 and found["district"] is None
    assert {p["distance"] for p in found["items"]} == {None}


async def test_an_unknown_district_is_a_problem_naming_the_field(api: Api, world: World) -> None:
    status, problem = await api.get(PHARMACIES, as_=PATIENT, params={"district": "朝阳区"})
    assert status == 422
    assert any(e["field"].endswith("district") for e in problem["errors"]), problem
    status, problem = await api.get(PHARMACIES)
    assert status == 401


def test_opening_hours_and_district_distance() -> None:
    hours = [
        {"days": [1, 2, 3, 4, 5], "opens": "08:00", "closes": "20:00"},
        {"days": [6, 7], "opens": "09:00", "closes": "18:00"},
    ]
    # 2026-12-07 is a Monday; 01:30 UTC is 09:30 in Qingdao.
    assert is_open(hours, datetime(2026, 12, 7, 1, 30, tzinfo=UTC))
    assert not is_open(hours, datetime(2026, 12, 7, 12, 30, tzinfo=UTC))  # 20:30
    assert not is_open(hours, datetime(2026, 12, 5, 0, 30, tzinfo=UTC))  # Saturday 08:30
    assert is_open(hours, datetime(2026, 12, 5, 1, 0, tzinfo=UTC))  # Saturday 09:00
    always = [{"days": [1, 2, 3, 4, 5, 6, 7], "opens": "00:00", "closes": "24:00"}]
    assert is_open(always, datetime(2026, 12, 7, 15, 59, tzinfo=UTC))  # 23:59
    assert distance("370202", "370202") == "same_district"
    assert distance("370202", "370203") == "neighbouring"
    assert distance("370202", "370214") == "other"
    assert all(a in NEIGHBOURS[b] for a, near in NEIGHBOURS.items() for b in near)


async def test_the_demo_seed_gives_every_pharmacy_a_profile_once(world: World) -> None:
    from server.prescriptions.seed import seed_pharmacies

    assert await seed_pharmacies(world.services) == 0  # seeded already: nothing twice
    async with world.services.db.read() as session:
        count = await session.scalar(select(func.count()).select_from(PharmacyProfile))
    assert count == 6


# --- choosing, and the change refused once review started ------------------------------


async def test_the_patient_chooses_and_changes_until_review_starts(api: Api, world: World) -> None:
    rx = await chosen(api, world, world.hcyf)
    assert rx["status"] == "sent" and rx["pharmacy_id"] == world.hcyf
    status, moved = await api.post(
        f"{RX}/{rx['id']}/route", as_=PATIENT, json={"pharmacy_id": world.tatyf}
    )
    assert status == 200 and moved["pharmacy_id"] == world.tatyf

    await review(api, rx["id"], "start", as_="pharmacist_zhou")
    status, problem = await api.post(
        f"{RX}/{rx['id']}/route", as_=PATIENT, json={"pharmacy_id": world.hcyf}
    )
    assert status == 409 and problem["code"] == "pharmacy_review_started", problem
    assert problem["status"] == 409 and problem["prescription_status"] == "under_review"
    async with world.services.db.read() as session:
        row = await session.get(Prescription, rx["id"])
        assert row is not None and row.pharmacy_id == world.tatyf
        assert row.status == "under_review"

    # Approved (and ready) too: the pharmacy cannot change.
    await review(api, rx["id"], "approve", as_="pharmacist_zhou")
    status, problem = await api.post(
        f"{RX}/{rx['id']}/route", as_=PATIENT, json={"pharmacy_id": world.hcyf}
    )
    assert status == 409 and problem["code"] == "pharmacy_review_started"


# --- ready for pickup, dispensing, the patient's inbox ---------------------------------


async def test_ready_by_the_chosen_pharmacy_then_dispensed_and_the_patient_told(
    api: Api, world: World
) -> None:
    rx = await chosen(api, world, world.hcyf)
    # Not before approval.
    status, problem = await api.post(f"{RX}/{rx['id']}/ready", as_="pharmacist_chen", json={})
    assert status == 409 and problem["code"] == "invalid_status"
    approved = await review(api, rx["id"], "approve")
    assert approved["status"] == "approved"

    # Another pharmacy's pharmacist, a doctor and the patient are refused; nothing changes.
    status, problem = await api.post(f"{RX}/{rx['id']}/ready", as_="pharmacist_zhou", json={})
    assert status == 403 and problem["code"] == "not_your_pharmacy"
    status, problem = await api.post(f"{RX}/{rx['id']}/ready", as_="dr_li", json={})
    assert status == 403 and problem["code"] == "not_a_pharmacist"
    status, problem = await api.post(f"{RX}/{rx['id']}/ready", as_=PATIENT, json={})
    assert status in (403, 404)
    assert await status_of(world, rx["id"]) == "approved"

    status, problem = await api.post(
        f"{RX}/{rx['id']}/ready", as_="pharmacist_chen", json={"note": "x" * 501}
    )
    assert status == 422 and any(e["field"].endswith("note") for e in problem["errors"])
    assert await status_of(world, rx["id"]) == "approved"

    status, ready = await api.post(
        f"{RX}/{rx['id']}/ready", as_="pharmacist_chen", json={"note": "取药窗口 3"}
    )
    assert status == 200 and ready["status"] == "ready", ready
    status, again = await api.post(f"{RX}/{rx['id']}/ready", as_="pharmacist_chen", json={})
    assert status == 409 and again["code"] == "invalid_status"

    status, mine = await api.get(f"{RX}/{rx['id']}", as_=PATIENT)
    assert status == 200 and mine["status"] == "ready"

    status, dispensed = await api.post(
        f"{RX}/{rx['id']}/dispense", as_="pharmacist_chen", json=DISPENSE
    )
    assert status == 200 and dispensed["status"] == "dispensed", dispensed
    assert dispensed["dispensation"]["items"] == [
        {"drug_code": "C08CA01", "quantity": 1, "batch": None}
    ]

    assert await inbox_kinds(world, rx["id"]) == [
        "prescription_approved",
        "prescription_ready",
        "prescription_dispensed",
    ]
    status, inbox = await api.get("/api/v1/inbox", as_=PATIENT)
    assert status == 200
    titles = [i["title"] for i in inbox["items"] if i["resource"] == f"Prescription/{rx['id']}"]
    assert titles == [
        "处方已在海川大药房（香港中路店）发药",
        "药已备好，请到海川大药房（香港中路店）取药",
        "处方已审核通过，海川大药房（香港中路店）正在备药",
    ]
    async with world.services.db.read() as session:
        trail = list(
            await session.scalars(
                select(PrescriptionHistory.status)
                .where(PrescriptionHistory.prescription_id == rx["id"])
                .order_by(PrescriptionHistory.id)
            )
        )
    assert trail == ["signed", "sent", "approved", "ready", "dispensed"]


async def test_dispensing_straight_from_approved_still_works(api: Api, world: World) -> None:
    rx = await chosen(api, world, world.hcyf)
    await review(api, rx["id"], "approve")
    status, dispensed = await api.post(
        f"{RX}/{rx['id']}/dispense", as_="pharmacist_chen", json=DISPENSE
    )
    assert status == 200 and dispensed["status"] == "dispensed"
    assert await inbox_kinds(world, rx["id"]) == ["prescription_approved", "prescription_dispensed"]


async def test_the_ready_queue_of_the_pharmacy(api: Api, world: World) -> None:
    rx = await chosen(api, world, world.hcyf)
    await review(api, rx["id"], "approve")
    status, _ = await api.post(f"{RX}/{rx['id']}/ready", as_="pharmacist_chen", json={})
    assert status == 200
    status, queue = await api.get(
        "/api/v1/pharmacy/prescriptions", as_="pharmacist_chen", params={"status": "ready"}
    )
    assert status == 200 and [p["id"] for p in queue["items"]] == [rx["id"]]


# --- dosing in plain words --------------------------------------------------------------


async def test_the_patient_reads_the_dosing_in_plain_words(api: Api, world: World) -> None:
    rx = await signed(api, world)
    status, mine = await api.get(RX, as_=PATIENT)
    assert status == 200
    found = next(p for p in mine["items"] if p["id"] == rx["id"])
    assert found["dosing"] == [
        {
            "drug_code": "C08CA01",
            "zh": "每日1次，每次1片（5mg），口服，共7天",
            "en": "once a day, 1 tablet (5 mg) each time, by mouth, for 7 days",
        }
    ]


def item(frequency: str, **over: Any) -> dict[str, Any]:
    return amlodipine(frequency=frequency) | over


@pytest.mark.parametrize(
    ("frequency", "zh", "en"),
    [
        ("qd", "每日1次", "once a day"),
        ("bid", "每日2次", "twice a day"),
        ("tid", "每日3次", "3 times a day"),
        ("qid", "每日4次", "4 times a day"),
        ("q8h", "每8小时1次", "every 8 hours"),
        ("q12h", "每12小时1次", "every 12 hours"),
        ("qn", "每晚睡前1次", "once a night, at bedtime"),
        ("qw", "每周1次", "once a week"),
        ("prn", "需要时用", "when needed"),
    ],
)
def test_dosing_text_of_every_frequency(frequency: str, zh: str, en: str) -> None:
    text = dosing_text(item(frequency))
    assert text["zh"] == f"{zh}，每次1片（5mg），口服，共7天"
    assert text["en"] == f"{en}, 1 tablet (5 mg) each time, by mouth, for 7 days"


def test_dosing_text_counts_tablets_capsules_and_halves() -> None:
    assert dosing_text(item("tid", dose=10))["zh"] == "每日3次，每次2片（10mg），口服，共7天"
    assert dosing_text(item("bid", dose=2.5))["zh"] == "每日2次，每次半片（2.5mg），口服，共7天"
    assert dosing_text(item("bid", dose=2.5))["en"].startswith("twice a day, half a tablet")
    capsule = {"drug_code": "C09CA03", "drug_name": "缬沙坦胶囊", "strength": "80mg",
               "dose": 160, "dose_unit": "mg", "route": "口服", "frequency": "qd", "days": 14}  # fmt: skip
    assert dosing_text(capsule) == {
        "drug_code": "C09CA03",
        "zh": "每日1次，每次2粒（160mg），口服，共14天",
        "en": "once a day, 2 capsules (160 mg) each time, by mouth, for 14 days",
    }
    # Not a whole number of tablets: the dose is said in its unit.
    assert dosing_text(item("qd", dose=7))["zh"] == "每日1次，每次7mg，口服，共7天"
    inhaler = {"drug_code": "R03AC02", "drug_name": "硫酸沙丁胺醇吸入气雾剂", "strength": "100μg",
               "dose": 200, "dose_unit": "μg", "route": "吸入", "frequency": "prn", "days": 1}  # fmt: skip
    assert dosing_text(inhaler)["zh"] == "需要时用，每次2揿（200μg），吸入，共1天"
    assert dosing_text(inhaler)["en"] == (
        "when needed, 2 puffs (200 μg) each time, inhaled, for 1 day"
    )
