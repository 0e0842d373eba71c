"""Institution administration in the browser: departments and accounts, errors beside fields."""

from __future__ import annotations

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.conftest import ConsoleWatch, LiveServer, inbox_count, screenshot, sign_in

PASSWORD = "Consult@2026"


def create_account(form: Locator, username: str, role: str, **selects: str) -> None:
    """Fill the account form (name as text, department/title as choices) and send it."""
    form.locator("#user-username").fill(username)
    form.locator("#user-password").fill(PASSWORD)
    form.locator("#user-role").select_option(role)
    if "name" in selects:
        form.locator("#user-name").fill(selects.pop("name"))
    for field, value in selects.items():
        form.locator(f"#user-{field}").select_option(value)
    form.get_by_role("button", name="新建账号").click()


pytestmark = pytest.mark.e2e


def test_admin_creates_a_department_and_a_user(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 409")
    sign_in(page, "admin_qdsl")
    departments = page.get_by_test_id("department-list")
    expect(departments).to_contain_text("心内科")  # from the demo seed
    inbox_before = inbox_count(page)

    # A department: client check first, then the server's answer.
    page.fill("#department-name", "<script>")
    page.get_by_role("button", name="新增科室").click()
    expect(page.locator("[data-field-error=department-name]")).to_be_visible()
    page.fill("#department-name", "远程会诊中心")
    page.get_by_role("button", name="新增科室").click()
    expect(departments.get_by_text("远程会诊中心", exact=True)).to_be_visible()
    # The department's stream event reaches the inbox live.
    expect(page.get_by_test_id("inbox")).to_contain_text("新增科室「远程会诊中心」")

    # The same name again: the server refuses with its own words.
    page.fill("#department-name", "远程会诊中心")
    page.get_by_role("button", name="新增科室").click()
    expect(page.get_by_test_id("departments").get_by_role("alert")).to_contain_text(
        "department '远程会诊中心' exists"
    )

    # An account: empty form shows the field checks.
    form = page.get_by_test_id("user-form")
    form.get_by_role("button", name="新建账号").click()
    expect(form.locator("[data-field-error=user-username]")).to_be_visible()
    expect(form.locator("[data-field-error=user-password]")).to_be_visible()
    expect(form.locator("[data-field-error=user-role]")).to_be_visible()

    create_account(
        form,
        username="dr_e2e",
        name="周远",
        role="specialist",
        department="远程会诊中心",
        title="主治医师",
    )
    row = page.locator("tr[data-username=dr_e2e]")
    expect(row).to_contain_text("周远")
    expect(row).to_contain_text("专科医生")
    expect(row).to_contain_text("远程会诊中心")
    expect(row).to_contain_text("主治医师")
    # Two institution events arrived live: the department and the member.
    expect(page.get_by_test_id("inbox").locator(".count")).to_have_text(str(inbox_before + 2))
    screenshot(page, server, "institution-admin-created")

    # A taken username: the server's message, not JSON.
    create_account(form, username="dr_li", role="nurse")
    alert = form.get_by_role("alert")
    expect(alert).to_contain_text("username 'dr_li' is taken")
    assert "{" not in alert.inner_text()

    # The new account works.
    status, body = server.call(
        "POST", "/api/v1/auth/login", {"username": "dr_e2e", "password": PASSWORD}
    )
    assert status == 200, body


def test_platform_admin_manages_any_institution(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 422")
    sign_in(page, "admin")
    table = page.get_by_test_id("institutions")
    row = table.locator("tr[data-code=HCYF]")
    expect(row).to_be_visible()

    # Register an institution; the server's check of the region code shows beside the field.
    form = page.get_by_test_id("institution-form")
    form.locator("#institution-code").fill("JMCH")
    form.locator("#institution-name").fill("即墨区潮海街道社区卫生服务中心")
    form.locator("#institution-kind").select_option("community")
    form.locator("#institution-region").fill("990101")
    form.get_by_role("button", name="登记机构").click()
    expect(form.locator("[data-field-error=institution-region]")).to_contain_text(
        "not a province-level region code"
    )
    form.locator("#institution-region").fill("370282")
    form.get_by_role("button", name="登记机构").click()
    expect(table.locator("tr[data-code=JMCH]")).to_contain_text("社区卫生服务中心")
    expect(form.locator("[data-field-error=institution-region]")).to_have_count(0)
    screenshot(page, server, "platform-admin-institutions")
    row.get_by_role("link").click()
    page.wait_for_selector("[data-page=institution-manage]")
    page.fill("#department-name", "中药房")
    page.get_by_role("button", name="新增科室").click()
    expect(page.get_by_test_id("department-list")).to_contain_text("中药房")
    # A pharmacy takes pharmacists and its administrator, nothing clinical.
    options = page.locator("#user-role option:not([disabled])").all_inner_texts()
    assert options == ["药师", "机构管理员"]
