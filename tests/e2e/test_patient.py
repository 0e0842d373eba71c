"""The patient's screens: record and lab reports, consults and prescriptions with where each
stands (live), sharing consent, and who looked at the record."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import TABLET, ConsoleWatch, LiveServer, screenshot, sign_in
from tests.e2e.pages_support import institution, me, prescribe, request_consult

pytestmark = pytest.mark.e2e


def open_me(page: Page) -> None:
    """The patient app's 我的 tab, where the record, consents and the access log are."""
    page.get_by_test_id("patient-nav").get_by_role("link", name="我的", exact=True).click()
    page.wait_for_selector("[data-page=patient-me]")


def test_patient_follows_consults_and_prescriptions_live(page: Page, server: LiveServer) -> None:
    consult = request_consult(server)
    rx = prescribe(server)
    sign_in(page, "patient_wang")
    open_me(page)
    page.get_by_role("link", name="会诊与处方").click()
    page.wait_for_selector("[data-page=my-care]")

    consult_row = page.locator(f"[data-testid=my-consult][data-consult-id='{consult['id']}']")
    expect(consult_row).to_contain_text("明确是否需调整降压方案")
    expect(consult_row).to_contain_text("已申请")
    expect(consult_row).to_contain_text("青岛市立医院")
    row = page.locator(f"[data-testid=my-prescription][data-rx-id='{rx['id']}']")
    expect(row).to_contain_text("原发性高血压")
    expect(row).to_contain_text("待审核")
    expect(row).to_contain_text("海川大药房")

    # The pharmacy approves elsewhere: the status changes here without a reload.
    status, _ = server.call(
        "POST", f"/api/v1/prescriptions/{rx['id']}/review", {"decision": "approve"},
        as_="pharmacist_chen",
    )  # fmt: skip
    assert status == 200
    expect(row).to_have_attribute("data-status", "approved")
    expect(row).to_contain_text("已通过")

    # Its history: written, sent to the pharmacy, approved.
    row.get_by_role("button", name="流转记录").click()
    history = row.get_by_test_id("history")
    expect(history.locator("li")).to_have_count(3)
    expect(history).to_contain_text("已通过")
    consult_row.get_by_role("button", name="流转记录").click()
    expect(consult_row.get_by_test_id("history")).to_contain_text("已申请")
    screenshot(page, server, "patient-care")


def test_patient_reads_the_record_and_lab_reports(new_page: object, server: LiveServer) -> None:
    page: Page = new_page(TABLET)  # type: ignore[operator]
    sign_in(page, "patient_wang")
    open_me(page)
    page.get_by_role("link", name="我的病历").click()
    labs = page.get_by_test_id("my-labs")
    # HbA1c 8.1 % from the community centre, above its range: flagged high, with its source.
    hba1c = labs.get_by_test_id("lab-row").filter(has_text="糖化血红蛋白")
    expect(hba1c).to_have_attribute("data-abnormal", "true")
    expect(hba1c).to_contain_text("8.1 %")
    expect(hba1c).to_contain_text("偏高")
    expect(hba1c).to_contain_text("八大湖街道社区卫生服务中心")
    ldl = labs.get_by_test_id("lab-row").filter(has_text="低密度脂蛋白胆固醇")
    expect(ldl).to_contain_text("青岛市立医院")
    expect(page.get_by_test_id("my-allergies")).to_contain_text("青霉素过敏")
    expect(page.get_by_test_id("my-active_problems")).to_contain_text("2型糖尿病")
    page.get_by_test_id("my-timeline").locator("summary").click()
    expect(page.get_by_test_id("timeline-row").first).to_be_visible()
    screenshot(page, server, "patient-record-tablet")


def test_patient_sets_consent_and_sees_who_looked(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    patient_id = me(server, "patient_wang")["patient_id"]
    # A community doctor who treats him reads his record (audited with its reason).
    status, _ = server.call("GET", f"/api/v1/patients/{patient_id}/summary", as_="gp_zhang")
    assert status == 200
    status, log = server.call(
        "GET", f"/api/v1/patients/{patient_id}/access-log", as_="patient_wang"
    )
    assert status == 200
    latest = log["items"][0]
    assert latest["user_name"] == "张伟"

    sign_in(page, "patient_wang")
    open_me(page)
    page.get_by_role("link", name="授权管理").click()
    form = page.get_by_test_id("consent-form")
    form.get_by_role("button", name="保存").click()
    expect(form.locator("[data-field-error=consent-institution]")).to_be_visible()

    qdfy = institution(server, "QDFY")
    form.locator("#consent-institution").select_option("QDFY")
    form.get_by_label("精神心理").check()
    form.get_by_label("基因信息").check()
    form.get_by_role("button", name="保存").click()
    expect(form.get_by_role("status")).to_contain_text(qdfy["name"])
    consent_row = page.locator("[data-testid=consent-row][data-code=QDFY]")
    expect(consent_row).to_have_attribute("data-granted", "true")
    expect(consent_row).to_contain_text("精神心理")
    expect(consent_row).to_contain_text("基因信息")

    # Then he withdraws it altogether.
    consent_row.get_by_role("button", name="设置授权").click()
    expect(form.get_by_label("精神心理")).to_be_checked()
    form.get_by_test_id("consent-granted").uncheck()
    form.get_by_role("button", name="保存").click()
    expect(consent_row).to_have_attribute("data-granted", "false")
    expect(consent_row).to_contain_text("未授权")
    status, consents = server.call(
        "GET", f"/api/v1/patients/{patient_id}/consents", as_="patient_wang"
    )
    assert status == 200
    stored = next(c for c in consents["items"] if c["institution"]["code"] == "QDFY")
    assert stored["granted"] is False
    assert sorted(stored["excluded_categories"]) == ["genetic", "mental_health"]
    screenshot(page, server, "patient-consents")

    open_me(page)
    page.get_by_role("link", name="查阅记录").click()
    page.wait_for_url("**/patient/access")
    rows = page.get_by_test_id("access-row")
    expect(rows.first).to_be_visible()
    doctor = rows.filter(has_text="张伟").first
    expect(doctor).to_contain_text(latest["institution"]["name"])
    assert latest["reason"] == "care_relationship"
    expect(doctor.locator(f"[data-reason={latest['reason']}]")).to_have_text("诊疗关系")
    expect(doctor).to_contain_text("社区医生")
    # One line per session of access (the server groups them), his own views left out.
    _, sessions = server.call(
        "GET", f"/api/v1/patients/{patient_id}/access-log?grouped=1", as_="patient_wang"
    )
    expect(rows).to_have_count(len(sessions["items"]))
    screenshot(page, server, "patient-access-log")

    # The same screen in English.
    page.get_by_test_id("lang").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Who looked at my record")
    expect(
        page.get_by_test_id("patient-nav").get_by_role("link", name="Me", exact=True)
    ).to_be_visible()
    screenshot(page, server, "patient-access-log-en")
    page.get_by_test_id("lang").click()
