"""Earning care in the browser: the patient's 到院码 read at the desk, a link request the
patient approves in the app, and the access log paged with refusals shown apart."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from server.seed import PATIENTS
from tests.e2e.conftest import LAPTOP, ConsoleWatch, LiveServer, screenshot, sign_in
from tests.e2e.pages_support import me

pytestmark = pytest.mark.e2e

PHONE: ViewportSize = {"width": 390, "height": 844}
SUN = next(p for p in PATIENTS if p.username == "patient_sun")  # cared for at SNBDH only


def open_presence(page: Page) -> str:
    """The patient opens the 到院码 screen from 我的; returns the code shown."""
    page.get_by_test_id("patient-nav").get_by_role("link", name="我的", exact=True).click()
    page.get_by_role("link", name="到院码").click()
    page.wait_for_selector("[data-page=presence]")
    digits = page.get_by_test_id("presence-digits")
    expect(digits).to_have_text(re.compile(r"^\s*\d{8}\s*$"))
    code = digits.inner_text().strip()
    # The QR carries the same code, drawn in the page (inline SVG, nothing fetched).
    qr = page.get_by_test_id("presence-code").get_by_role("img", name="到院码二维码")
    expect(qr).to_have_attribute("data-qr", f"yihao-presence:{SUN.resident_id}:{code}")
    expect(page.get_by_test_id("presence-countdown")).to_contain_text("后失效")
    return code


def register(page: Page, name: str) -> None:
    form = page.get_by_test_id("register-form")
    form.locator("#desk-resident-id").fill(SUN.resident_id)
    form.locator("#desk-name").fill(name)
    form.get_by_role("button", name="登记").click()


def test_desk_reads_the_presence_code_then_the_record(
    new_page: Any, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 4(03|22)")
    patient: Page = new_page(PHONE)
    sign_in(patient, "patient_sun")
    code = open_presence(patient)
    screenshot(patient, server, "care-presence-phone")
    patient.set_viewport_size(LAPTOP)
    screenshot(patient, server, "care-presence")

    desk: Page = new_page()
    sign_in(desk, "gp_liu")
    # A made-up name is refused on the name field, without the real name.
    register(desk, "随便写")
    name_error = desk.locator("[data-field-error=desk-name]")
    expect(name_error).to_be_visible()
    expect(desk.get_by_test_id("care-desk")).not_to_contain_text(SUN.name)
    # The right name registers her, and grants no reading.
    register(desk, SUN.name)
    registered = desk.get_by_test_id("registered")
    expect(registered).to_have_attribute("data-care", "none")
    expect(registered).to_contain_text(SUN.name)
    state = desk.get_by_test_id("care-state")
    expect(state).to_have_attribute("data-care", "none")
    expect(state).to_have_text("暂无查阅权限：请患者出示一号通到院码，或发送查阅申请")
    pid = int(registered.get_attribute("data-patient-id") or 0)
    assert pid == me(server, "patient_sun")["patient_id"]
    status, _ = server.call("GET", f"/api/v1/patients/{pid}/summary", as_="gp_liu")
    assert status == 403
    screenshot(desk, server, "care-desk-no-access")

    # She shows her code; the desk types it (the resident ID is already filled in).
    presence = desk.get_by_test_id("presence-form")
    expect(presence.locator("#presence-resident-id")).to_have_value(SUN.resident_id)
    presence.locator("#presence-code").fill(code)
    presence.get_by_role("button", name="确认到院").click()
    expect(presence.get_by_role("status")).to_contain_text("已确认到院")
    expect(state).to_have_attribute("data-care", "active")
    desk.get_by_test_id("open-record").click()
    desk.wait_for_url(f"**/patients/{pid}")
    expect(desk.get_by_test_id("patient-name")).to_have_text(SUN.name)
    expect(desk.locator("[data-page=patient-record] .card")).to_contain_text("共享健康档案")
    screenshot(desk, server, "care-desk-record")

    # Her app shows who cares for her now, and why.
    patient.reload()
    row = patient.locator("[data-testid=care-relationship][data-code=SBLYL]")
    expect(row).to_have_attribute("data-reason", "presence")
    expect(row).to_contain_text("到院出示到院码")
    # The same screen in English.
    patient.get_by_test_id("lang").click()
    expect(patient.get_by_role("heading", level=1)).to_have_text("Yihao presence code")
    expect(row).to_contain_text("Presence code at the desk")
    patient.get_by_test_id("lang").click()


def test_patient_approves_a_link_request_in_the_app(
    new_page: Any, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 403")
    desk: Page = new_page()
    sign_in(desk, "dr_zhao")
    register(desk, SUN.name)
    state = desk.get_by_test_id("care-state")
    expect(state).to_have_attribute("data-care", "none")
    # A scanned QR pasted into the code field is split into ID and code.
    presence = desk.get_by_test_id("presence-form")
    presence.locator("#presence-resident-id").fill("")
    presence.locator("#presence-code").fill(f"yihao-presence:{SUN.resident_id}:12345678")
    expect(presence.locator("#presence-resident-id")).to_have_value(SUN.resident_id)
    expect(presence.locator("#presence-code")).to_have_value("12345678")

    request = desk.get_by_test_id("request-form")
    request.locator("#desk-request-note").fill("门诊复查，需要查看既往检验")
    request.get_by_role("button", name="发送查阅申请").click()
    expect(desk.get_by_test_id("care-desk").get_by_role("status")).to_contain_text("已发送查阅申请")
    expect(request.get_by_role("button", name="发送查阅申请")).to_be_disabled()

    # Another hospital's nurse asks too (through the API); that one she declines.
    status, other = server.call(
        "POST",
        "/api/v1/patients",
        {"resident_id": SUN.resident_id, "name": SUN.name},
        as_="nurse_he",
    )
    assert status == 201 and other["care"] == "none", other
    status, other_request = server.call(
        "POST", f"/api/v1/patients/{other['id']}/care-requests", {}, as_="nurse_he"
    )
    assert status == 201, other_request

    patient: Page = new_page(PHONE)
    sign_in(patient, "patient_sun")
    open_presence(patient)
    declined = patient.locator(
        f"[data-testid=care-request][data-request-id='{other_request['id']}']"
    )
    expect(declined).to_have_attribute("data-status", "pending")
    declined.get_by_role("button", name="拒绝").click()
    expect(declined).to_have_attribute("data-status", "declined")
    expect(declined).to_contain_text("已拒绝")
    expect(declined.get_by_role("button", name="同意")).to_have_count(0)
    expect(patient.locator("[data-testid=care-relationship][data-code=QDSL]")).to_have_count(0)
    pending = patient.locator("[data-testid=care-request][data-status=pending]").first
    expect(pending).to_contain_text("青岛大学附属医院")
    expect(pending).to_contain_text("赵强")
    expect(pending).to_contain_text("门诊复查，需要查看既往检验")
    screenshot(patient, server, "care-request-phone")
    pending.get_by_role("button", name="同意").click()
    expect(patient.get_by_test_id("care-requests").get_by_role("status")).to_contain_text("已同意")
    row = patient.locator("[data-testid=care-relationship][data-code=QDFY]")
    expect(row).to_have_attribute("data-reason", "patient_approved")
    patient.set_viewport_size(LAPTOP)
    screenshot(patient, server, "care-request")

    # The answer reaches the doctor live; the record now opens.
    expect(state).to_have_attribute("data-care", "active")
    expect(desk.get_by_test_id("care-desk").get_by_role("status")).to_contain_text("患者已同意")
    desk.get_by_test_id("open-record").click()
    expect(desk.get_by_test_id("patient-name")).to_have_text(SUN.name)
    expect(desk.locator("[data-page=patient-record] .card")).to_contain_text("共享健康档案")
    screenshot(desk, server, "care-request-record")


def test_access_log_pages_and_shows_refusals(page: Page, server: LiveServer) -> None:
    pid = me(server, "patient_sun")["patient_id"]
    # A pharmacist who tries the record is refused, and the patient sees it.
    status, _ = server.call("GET", f"/api/v1/patients/{pid}/summary", as_="pharmacist_chen")
    assert status in (403, 404)
    # Her community centre reads the record often (more than a page of entries, one session).
    for _ in range(55):
        status, _ = server.call("GET", f"/api/v1/patients/{pid}/summary", as_="gp_zhang")
        assert status == 200
    # The patient reads one line per session of access: the 55 reads are one.
    total: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        query = "?grouped=1&limit=200" + (f"&before={before}" if before else "")
        status, log = server.call(
            "GET", f"/api/v1/patients/{pid}/access-log{query}", as_="patient_sun"
        )
        assert status == 200
        total += log["items"]
        before = log["next_before"]
        if before is None:
            break
    assert any(e["outcome"] == "denied" for e in total)
    reads = [e for e in total if e["user_name"] == "张伟" and e["kind"] == "read"]
    assert reads and reads[0]["count"] >= 55

    sign_in(page, "patient_sun")
    page.get_by_test_id("patient-nav").get_by_role("link", name="我的", exact=True).click()
    page.get_by_role("link", name="查阅记录").click()
    rows = page.get_by_test_id("access-row")
    expect(rows).to_have_count(min(50, len(total)))
    more = page.get_by_test_id("access-more")
    while more.count():
        shown = rows.count()
        more.click()
        expect(rows).not_to_have_count(shown)
    expect(rows).to_have_count(len(total))
    denied = page.locator("[data-testid=access-row][data-outcome=denied]").first
    expect(denied.get_by_test_id("access-kind")).to_have_text("拒绝")
    expect(page.locator("[data-testid=access-row][data-outcome=denied]")).to_have_count(
        sum(1 for e in total if e["outcome"] == "denied")
    )
    zhang = page.locator("[data-testid=access-row][data-kind=read]").filter(has_text="张伟").first
    expect(zhang.get_by_test_id("access-count")).to_have_text(f"{reads[0]['count']} 次")
    screenshot(page, server, "care-access-log")
