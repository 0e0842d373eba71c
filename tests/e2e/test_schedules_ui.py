"""Schedules in the browser: the institution administrator publishes a weekly template,
generates its slots, sees them, and closes a day; client checks and the server's refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ConsoleWatch, LiveServer, screenshot, sign_in
from tests.e2e.pages_support import institution, tomorrow

pytestmark = pytest.mark.e2e
DEPARTMENT = "睡眠医学科"


def test_admin_creates_a_template_and_generates_slots(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 4(09|22)")
    qdsl = institution(server, "QDSL")
    status, _ = server.call(
        "POST", f"/api/v1/institutions/{qdsl['id']}/departments", {"name": DEPARTMENT},
        as_="admin_qdsl",
    )  # fmt: skip
    assert status == 201
    day = tomorrow()

    sign_in(page, "admin_qdsl")
    page.get_by_role("link", name="排班").click()
    page.wait_for_selector("[data-page=schedules][data-ready]")
    form = page.get_by_test_id("template-form")

    # Client checks first, beside each field.
    form.locator("#tpl-start").fill("25:00")
    form.locator("#tpl-count").fill("0")
    form.get_by_role("button", name="新建模板").click()
    expect(form.locator("[data-field-error=tpl-department]")).to_be_visible()
    expect(form.locator("[data-field-error=tpl-start]")).to_contain_text("HH:MM")
    expect(form.locator("[data-field-error=tpl-count]")).to_contain_text("1–48")

    form.locator("#tpl-department").select_option(label=DEPARTMENT)
    form.locator("#tpl-weekday").select_option(str(day.weekday()))
    form.locator("#tpl-start").fill("14:00")
    form.locator("#tpl-minutes").fill("20")
    form.locator("#tpl-count").fill("3")
    form.locator("#tpl-capacity").fill("2")
    form.locator("#tpl-visit").select_option("remote")
    form.get_by_role("button", name="新建模板").click()
    expect(form.get_by_role("status")).to_contain_text("14:00")
    row = page.get_by_test_id("template-row").filter(has_text=DEPARTMENT)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("14:00")
    expect(row).to_contain_text("远程")

    # Generating: the server's limit on the range is shown in its words.
    generate = page.get_by_test_id("generate-form")
    expect(generate.locator("#gen-department")).to_have_value(str(row_department(server)))
    generate.locator("#gen-from").fill(day.isoformat())
    generate.locator("#gen-to").fill((day + timedelta(days=120)).isoformat())
    generate.get_by_role("button", name="生成号源").click()
    expect(generate.get_by_role("alert")).to_contain_text("generate at most 92 days at a time")
    generate.locator("#gen-to").fill(day.isoformat())
    generate.get_by_role("button", name="生成号源").click()
    expect(generate.get_by_role("status")).to_have_text("已生成 3 个号源。")

    slots = page.get_by_test_id("slots")
    expect(slots.get_by_test_id("slot-row")).to_have_count(3)
    expect(slots.get_by_test_id("slot-row").first).to_contain_text("14:00")
    expect(slots.get_by_test_id("slot-row").first).to_contain_text("0 / 2")
    page.evaluate("window.scrollTo(0, 0)")  # the sticky bar stays on top of a full-page shot
    screenshot(page, server, "schedules")

    # The API holds exactly what the screen shows.
    status, listed = server.call(
        "GET", f"/api/v1/slots?department_id={row_department(server)}", as_="admin_qdsl"
    )
    assert status == 200
    assert [(s["minutes"], s["capacity"], s["visit_type"]) for s in listed["items"]] == [
        (20, 2, "remote")
    ] * 3

    # A closed day; the same day twice is refused by the server.
    closed = day + timedelta(days=7)
    holiday = page.get_by_test_id("holiday-form")
    holiday.get_by_role("button", name="新增停诊日").click()
    expect(holiday.locator("[data-field-error=holiday-reason]")).to_have_text("必填")
    for attempt in range(2):
        holiday.locator("#holiday-day").fill(closed.isoformat())
        holiday.locator("#holiday-reason").fill("院庆停诊")
        holiday.get_by_role("button", name="新增停诊日").click()
        if attempt == 0:
            expect(holiday.get_by_role("status")).to_contain_text(closed.isoformat())
    expect(holiday.get_by_role("alert")).to_contain_text(
        f"{closed.isoformat()} is already a holiday"
    )
    expect(page.get_by_test_id("holiday-row").filter(has_text="院庆停诊")).to_have_count(1)


def row_department(server: LiveServer) -> int:
    qdsl = institution(server, "QDSL")
    return int(next(d["id"] for d in qdsl["departments"] if d["name"] == DEPARTMENT))
