"""Pharmacy choice and pickup on the patient's phone (390×844): the patient chooses a
pharmacy for a signed prescription, reads the dosing in plain words; the pharmacist (in
another browser context) approves, marks it ready for pickup and dispenses; the patient's
page follows each step live, and never scrolls sideways."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from tests.e2e.conftest import LAPTOP, LiveServer, screenshot, sign_in
from tests.e2e.pages_support import AMLODIPINE, institution, me

pytestmark = pytest.mark.e2e

PHONE: ViewportSize = {"width": 390, "height": 844}


def signed_for(server: LiveServer, patient: str = "patient_wang") -> dict[str, Any]:
    """gp_zhang renews the patient's amlodipine, signed, with no pharmacy chosen yet."""
    body: dict[str, Any] = {
        "patient_id": me(server, patient)["patient_id"],
        "diagnosis": {"code": "I10", "display": "原发性高血压"},
        "items": [AMLODIPINE],
        "notes": "复诊续方",
    }
    status, checked = server.call("POST", "/api/v1/prescriptions/check", body, as_="gp_zhang")
    assert status == 200, checked
    if checked["blocking"]:
        body["override_reason"] = "与患者核对，继续原方案"
    status, created = server.call("POST", "/api/v1/prescriptions", body, as_="gp_zhang")
    assert status == 201, created
    assert created["status"] == "signed" and created["pharmacy_id"] is None
    return created  # type: ignore[no-any-return]


def no_sideways_scroll(page: Page) -> None:
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"


def reached(page: Page, step: str) -> None:
    expect(page.get_by_test_id("rx-steps")).to_have_attribute("data-reached", step)


def test_the_patient_chooses_a_pharmacy_and_follows_pickup_live(
    new_page: Any, server: LiveServer
) -> None:
    rx = signed_for(server)
    hcyf = institution(server, "HCYF")

    phone: Page = new_page(PHONE)
    sign_in(phone, "patient_wang")
    phone.goto("/patient/prescriptions")
    card = phone.locator(f"[data-testid=patient-rx][data-rx-id='{rx['id']}']")
    expect(card).to_be_visible()
    expect(card).to_contain_text("苯磺酸氨氯地平片")
    expect(card.get_by_test_id("rx-steps")).to_have_attribute("data-reached", "signed")
    no_sideways_scroll(phone)
    screenshot(phone, server, "rx-pickup-list-phone")

    card.get_by_test_id("rx-open").click()
    detail = phone.get_by_test_id("patient-rx-detail")
    expect(detail).to_have_attribute("data-status", "signed")
    expect(phone.get_by_test_id("rx-dosing")).to_have_text("每日1次，每次1片（5mg），口服，共7天")
    expect(phone.get_by_test_id("rx-pharmacy")).to_contain_text("还没有选择取药药房")

    # The list: 王建国 is registered in 市南区, so 市南区's pharmacy comes first, labelled.
    phone.locator("[data-action=open-picker]").click()
    options = phone.get_by_test_id("pharmacy-option")
    expect(options).to_have_count(6)
    expect(options.first).to_have_attribute("data-code", "HCYF")
    expect(options.first).to_contain_text("同区")
    expect(options.first).to_contain_text("青岛市市南区香港中路 68 号")
    expect(options.first).to_contain_text("每天 08:00–22:00")
    expect(phone.get_by_test_id("sorted-from")).to_contain_text("市南区")
    # A district filter: 崂山区 first, its 24-hour pharmacy open now.
    phone.get_by_test_id("district-filter").select_option("崂山区")
    expect(options.first).to_have_attribute("data-code", "LSJM")
    expect(options.first).to_contain_text("24小时营业")
    expect(options.first.get_by_test_id("open-label")).to_have_text("营业中")
    no_sideways_scroll(phone)
    screenshot(phone, server, "rx-pickup-choose-phone")
    phone.get_by_test_id("district-filter").select_option("市南区")
    expect(options.first).to_have_attribute("data-code", "HCYF")
    options.first.locator("[data-action=choose]").click()
    expect(phone.get_by_test_id("chosen-pharmacy")).to_have_attribute("data-code", "HCYF")
    expect(phone.get_by_role("status")).to_contain_text("已选择海川大药房（香港中路店）")
    reached(phone, "chosen")
    status, stored = server.call("GET", f"/api/v1/prescriptions/{rx['id']}", as_="gp_zhang")
    assert status == 200 and (stored["status"], stored["pharmacy_id"]) == ("sent", hcyf["id"])

    # The pharmacist, elsewhere: approve, ready for pickup, dispense.
    pharmacy: Page = new_page(LAPTOP)
    sign_in(pharmacy, "pharmacist_chen")
    item = pharmacy.locator(f"[data-testid=rx-item][data-rx-id='{rx['id']}']")
    expect(item).to_be_visible()
    item.locator("[data-action=approve]").click()
    expect(item.get_by_test_id("rx-status")).to_have_text("已通过")

    reached(phone, "approved")
    expect(phone.get_by_test_id("pharmacy-locked")).to_be_visible()
    expect(phone.locator("[data-action=open-picker]")).to_have_count(0)
    # The server refuses the change too, in the patient's words.
    status, problem = server.call(
        "POST",
        f"/api/v1/prescriptions/{rx['id']}/route",
        {"pharmacy_id": institution(server, "TATYF")["id"]},
        as_="patient_wang",
    )
    assert status == 409 and problem["code"] == "pharmacy_review_started"

    item.locator("[data-action=ready]").click()
    expect(item.get_by_test_id("rx-status")).to_have_text("待取药")
    screenshot(pharmacy, server, "rx-pickup-pharmacy-ready")
    reached(phone, "ready")
    expect(phone.get_by_test_id("rx-ready")).to_contain_text("药已备好")
    no_sideways_scroll(phone)
    screenshot(phone, server, "rx-pickup-ready-phone")

    item.locator("[data-action=dispense]").click()
    item.get_by_role("button", name="确认发药").click()
    expect(item.get_by_test_id("rx-status")).to_have_text("已发药")
    reached(phone, "dispensed")
    expect(phone.get_by_test_id("rx-dispensed")).to_be_visible()
    screenshot(phone, server, "rx-pickup-dispensed-phone")

    # The inbox told the patient of each step.
    status, inbox = server.call("GET", "/api/v1/inbox", as_="patient_wang")
    assert status == 200
    kinds = [i["kind"] for i in inbox["items"] if i["resource"] == f"Prescription/{rx['id']}"]
    assert kinds == ["prescription_dispensed", "prescription_ready", "prescription_approved"]

    # The same page on a laptop, and in English.
    laptop: Page = new_page(LAPTOP)
    sign_in(laptop, "patient_wang")
    laptop.goto(f"/patient/prescriptions/{rx['id']}")
    expect(laptop.get_by_test_id("patient-rx-detail")).to_have_attribute("data-status", "dispensed")
    no_sideways_scroll(laptop)
    screenshot(laptop, server, "rx-pickup-dispensed-laptop")
    laptop.get_by_test_id("lang").click()
    expect(laptop.get_by_test_id("rx-dosing")).to_have_text(
        "once a day, 1 tablet (5 mg) each time, by mouth, for 7 days"
    )
    laptop.get_by_test_id("lang").click()
