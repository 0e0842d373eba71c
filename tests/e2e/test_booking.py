"""预约挂号 on a phone (390×844): the patient finds a department by specialty (as triage
links it), sees the doctor's card with title, department and place, books a free time,
is told in Chinese when the time was taken meanwhile, cancels with a confirmation, and
past the hospital's cut-off is told why the button is gone. No page scrolls sideways."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from tests.e2e.conftest import LAPTOP, ConsoleWatch, LiveServer, screenshot, sign_in
from tests.e2e.pages_support import department_id, institution, tomorrow

pytestmark = pytest.mark.e2e
PHONE: ViewportSize = {"width": 390, "height": 844}


def no_horizontal_scroll(page: Page) -> None:
    fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert fits, page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def _department_with_two_slots(server: LiveServer) -> tuple[int, list[dict[str, Any]]]:
    """A dermatology department of QDSL with two places tomorrow, one each."""
    name = f"皮肤科{uuid.uuid4().hex[:4]}"
    qdsl = institution(server, "QDSL")
    status, body = server.call(
        "POST", f"/api/v1/institutions/{qdsl['id']}/departments", {"name": name},
        as_="admin_qdsl",
    )  # fmt: skip
    assert status == 201, body
    dept = {"id": department_id(server, "QDSL", name)}
    status, body = server.call(
        "PUT", f"/api/v1/booking/departments/{dept['id']}",
        {"specialty": "dermatology", "building": "门诊楼", "floor": "6层", "room": "606诊室",
         "note": "请携带身份证"},
        as_="admin_qdsl",
    )  # fmt: skip
    assert status == 200, body
    day = tomorrow()
    status, body = server.call(
        "POST", "/api/v1/schedules/templates",
        {"department_id": dept["id"], "weekday": day.weekday(), "start_time": "10:00",
         "slot_minutes": 30, "slot_count": 2, "capacity": 1},
        as_="admin_qdsl",
    )  # fmt: skip
    assert status == 201, body
    status, body = server.call(
        "POST", "/api/v1/schedules/generate",
        {"department_id": dept["id"], "from_date": day.isoformat(), "to_date": day.isoformat()},
        as_="admin_qdsl",
    )  # fmt: skip
    assert (status, body["created"]) == (200, 2), body
    status, slots = server.call(
        "GET", f"/api/v1/slots?department_id={dept['id']}&available=true", as_="admin_qdsl"
    )
    assert status == 200
    return int(dept["id"]), list(slots["items"])


def test_a_patient_books_and_cancels_on_a_phone(
    new_page: Any, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 409")
    dept, (first, second) = _department_with_two_slots(server)
    page: Page = new_page(PHONE)
    sign_in(page, "patient_zhao")

    # From triage: ?specialty=… preselects the specialty.
    page.goto("/patient/book?specialty=dermatology")
    page.wait_for_selector("[data-page=book][data-ready]")
    expect(page.get_by_test_id("from-triage")).to_contain_text("皮肤科")
    card = page.get_by_test_id("doctor-card").filter(has_text="606诊室")
    expect(card).to_have_count(1)
    expect(card).to_contain_text("普通门诊")
    expect(card).to_contain_text("青岛市立医院")
    expect(card.get_by_test_id("slot-button")).to_have_count(2)
    expect(card.get_by_test_id("slot-button").first).to_contain_text("10:00")
    box = card.get_by_test_id("slot-button").first.bounding_box()
    assert box is not None and box["height"] >= 44 and box["width"] >= 44
    no_horizontal_scroll(page)
    screenshot(page, server, "booking-phone")

    # Someone else takes the first place meanwhile: the patient is told in Chinese.
    status, _ = server.call("POST", "/api/v1/appointments", {"slot_id": first["id"]},
                            as_="patient_liu")  # fmt: skip
    assert status == 201
    card.locator(f"[data-slot-id='{first['id']}']").click()
    sheet = page.get_by_test_id("confirm-sheet")
    expect(sheet).to_contain_text("606诊室")
    sheet.get_by_test_id("confirm-booking").click()
    expect(page.get_by_test_id("booking-problem")).to_have_text("该号源已约满，请选择其他时段。")
    expect(card.locator(f"[data-slot-id='{first['id']}']")).to_have_count(0)  # reloaded

    # The free one books; the result names the place and offers payment.
    card.locator(f"[data-slot-id='{second['id']}']").click()
    page.get_by_test_id("confirm-booking").click()
    done = page.get_by_test_id("booking-done")
    expect(done).to_contain_text("预约成功")
    expect(done).to_contain_text("606诊室")
    expect(done.get_by_test_id("to-pay")).to_have_attribute("href", "/patient/orders")
    no_horizontal_scroll(page)
    screenshot(page, server, "booking-done-phone")

    # My appointments: a card with time, hospital, department, place and notes; cancel.
    done.get_by_role("link", name="查看我的预约").click()
    page.wait_for_selector("[data-page=appointments][data-ready]")
    mine = page.locator("[data-testid=appointment-card][data-status=booked]").filter(
        has_text="606诊室"
    )
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("10:30")
    expect(mine).to_contain_text("青岛市立医院")
    expect(mine).to_contain_text("请携带身份证")
    no_horizontal_scroll(page)
    screenshot(page, server, "appointments-phone")
    mine.get_by_test_id("cancel-appointment").click()
    expect(mine.get_by_test_id("cancel-confirm")).to_contain_text("确定取消")
    mine.get_by_test_id("cancel-yes").click()
    expect(page.locator("[data-page=appointments]").get_by_role("status")).to_have_text(
        "预约已取消，号源已释放。"
    )
    cancelled = page.locator("[data-testid=appointment-card][data-status=cancelled]").filter(
        has_text="606诊室"
    )
    expect(cancelled).to_have_count(1)
    status, slot = server.call("GET", f"/api/v1/slots/{second['id']}", as_="patient_zhao")
    assert (status, slot["available"]) == (200, 1)

    # The department now asks for 48 hours' notice: past the cut-off, no button, a reason.
    status, _ = server.call(
        "PUT", f"/api/v1/booking/departments/{dept}",
        {"specialty": "dermatology", "building": "门诊楼", "floor": "6层", "room": "606诊室",
         "cancel_cutoff_hours": 48},
        as_="admin_qdsl",
    )  # fmt: skip
    assert status == 200
    status, _ = server.call("POST", "/api/v1/appointments", {"slot_id": second["id"]},
                            as_="patient_zhao")  # fmt: skip
    assert status == 201
    page.reload()
    page.wait_for_selector("[data-page=appointments][data-ready]")
    late = page.locator("[data-testid=appointment-card][data-status=booked]").filter(
        has_text="606诊室"
    )
    expect(late.get_by_test_id("cutoff-passed")).to_contain_text("已过取消截止时间")
    expect(late.get_by_test_id("cancel-appointment")).to_have_count(0)
    no_horizontal_scroll(page)

    # The same pages on a laptop.
    page.set_viewport_size(LAPTOP)
    no_horizontal_scroll(page)
    screenshot(page, server, "appointments-laptop")
    page.goto("/patient/book?specialty=dermatology")
    page.wait_for_selector("[data-page=book][data-ready]")
    no_horizontal_scroll(page)
    screenshot(page, server, "booking-laptop")


def test_the_admin_sets_the_policy_and_a_departments_place(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    name = f"眼科{uuid.uuid4().hex[:4]}"
    qdsl = institution(server, "QDSL")
    status, _ = server.call(
        "POST", f"/api/v1/institutions/{qdsl['id']}/departments", {"name": name},
        as_="admin_qdsl",
    )  # fmt: skip
    assert status == 201
    dept = department_id(server, "QDSL", name)
    status, before = server.call("GET", "/api/v1/booking/policy", as_="admin_qdsl")
    assert status == 200

    sign_in(page, "admin_qdsl")
    page.goto("/institution-admin/schedules")
    settings = page.get_by_test_id("booking-settings")
    form = settings.locator(f"[data-testid=department-profile][data-department-id='{dept}']")
    expect(form).to_contain_text(name)
    form.locator("select").select_option("ophthalmology")
    inputs = form.locator("input")
    inputs.nth(0).fill("门诊楼")
    inputs.nth(1).fill("7层")
    inputs.nth(2).fill("701诊室")
    inputs.nth(4).fill("散瞳检查后请勿驾车")
    form.get_by_role("button", name="保存").click()
    expect(settings.get_by_role("status")).to_have_text(f"{name}资料已保存。")

    policy = settings.get_by_test_id("policy-form")
    policy.get_by_test_id("policy-cutoff").fill(str(before["cancel_cutoff_hours"]))
    policy.get_by_test_id("policy-limit").fill("4")
    policy.get_by_role("button", name="保存规则").click()
    expect(settings.get_by_role("status")).to_have_text("预约规则已保存。")

    # What the patients now read in the directory.
    status, directory = server.call(
        "GET", f"/api/v1/booking/directory?specialty=ophthalmology&institution={qdsl['id']}",
        as_="patient_sun",
    )  # fmt: skip
    [entry] = [d for i in directory["items"] for d in i["departments"] if d["id"] == dept]
    assert entry["place"] == {"building": "门诊楼", "floor": "7层", "room": "701诊室"}
    assert entry["note"] == "散瞳检查后请勿驾车"
    _, after = server.call("GET", "/api/v1/booking/policy", as_="admin_qdsl")
    assert after["no_show_limit"] == 4
    server.call(
        "PUT", "/api/v1/booking/policy",
        {"cancel_cutoff_hours": before["cancel_cutoff_hours"],
         "no_show_limit": before["no_show_limit"]},
        as_="admin_qdsl",
    )  # fmt: skip
