"""Paying on a phone (结算支付): a patient pays a booking through the sandbox at 390×844,
sees the status follow the provider's notification, and asks for the refund; no page
scrolls sideways, on the phone or the laptop."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from tests.e2e.conftest import LAPTOP, ConsoleWatch, LiveServer, screenshot, sign_in
from tests.e2e.pages_support import department_id

pytestmark = pytest.mark.e2e
PHONE: ViewportSize = {"width": 390, "height": 844}
PATIENT = "patient_zhao"


def _book(server: LiveServer) -> dict[str, Any]:
    """patient_zhao books the next free 肾内科 slot of QDFY (fee: QDFY's 25 元)."""
    dept = department_id(server, "QDFY", "肾内科")
    status, slots = server.call("GET", f"/api/v1/slots?department_id={dept}&available=true",
                                as_=PATIENT)  # fmt: skip
    assert status == 200 and slots["items"], slots
    status, appointment = server.call(
        "POST", "/api/v1/appointments", {"slot_id": slots["items"][0]["id"]}, as_=PATIENT
    )
    assert status == 201, appointment
    return appointment  # type: ignore[no-any-return]


def _no_sideways_scroll(page: Page) -> None:
    overflow = page.evaluate(
        "document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls {overflow} px sideways"


def test_a_patient_pays_a_booking_on_the_phone(
    new_page: Any, server: LiveServer, console: ConsoleWatch
) -> None:
    appointment = _book(server)
    page: Page = new_page(PHONE)
    sign_in(page, PATIENT)
    page.goto("/patient/orders")
    item = page.locator(f"[data-testid=to-pay-item][data-appointment-id='{appointment['id']}']")
    expect(item).to_contain_text("青岛大学附属医院")
    expect(item).to_contain_text("肾内科")
    _no_sideways_scroll(page)
    screenshot(page, server, "payments-orders-phone")

    item.get_by_role("button", name="去支付").click()
    order = page.get_by_test_id("order")
    expect(order).to_have_attribute("data-status", "created")
    expect(page.get_by_test_id("order-amount")).to_have_text("¥25.00")
    expect(page.get_by_test_id("order-status")).to_have_text("待支付")
    expect(page.get_by_test_id("sandbox")).to_contain_text("不收集任何银行卡信息")
    pay = page.get_by_test_id("pay")
    box = pay.bounding_box()
    assert box is not None and box["height"] >= 44 and box["width"] <= PHONE["width"]
    _no_sideways_scroll(page)
    screenshot(page, server, "payments-order-phone")

    pay.click()
    # The sandbox charges, then notifies the server; the page follows the notification.
    expect(page.get_by_test_id("order-status")).to_have_text("已支付", timeout=20_000)
    expect(order).to_have_attribute("data-status", "paid")
    expect(page.get_by_role("status").filter(has_text="支付成功")).to_be_visible()
    expect(page.get_by_test_id("sandbox")).to_have_count(0)
    screenshot(page, server, "payments-paid-phone")
    order_id = int(order.get_attribute("data-order-id") or 0)
    status, body = server.call("GET", f"/api/v1/orders/{order_id}", as_=PATIENT)
    assert (status, body["status"], body["amount_fen"]) == (200, "paid", 2500)

    # Before the visit the patient may have it back.
    page.get_by_test_id("refund").click()
    expect(page.get_by_text("确认退款 ¥25.00？")).to_be_visible()
    page.get_by_test_id("refund-confirm").click()
    expect(page.get_by_test_id("order-status")).to_have_text("已退款")
    expect(page.get_by_role("status").filter(has_text="已退款 ¥25.00")).to_be_visible()
    _no_sideways_scroll(page)

    page.goto("/patient/orders")
    row = page.locator(f"[data-testid=order-item][data-order-id='{order_id}']")
    expect(row).to_have_attribute("data-status", "refunded")
    expect(row).to_contain_text("¥25.00")
    expect(row).to_contain_text("已退款")

    laptop: Page = new_page(LAPTOP)
    sign_in(laptop, PATIENT)
    laptop.goto(f"/patient/orders/{order_id}")
    expect(laptop.get_by_test_id("order-status")).to_have_text("已退款")
    _no_sideways_scroll(laptop)
    screenshot(laptop, server, "payments-order-laptop")
