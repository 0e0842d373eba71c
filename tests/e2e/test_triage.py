"""智能导诊 on a phone (390×844): a danger sign shows the 120 banner first; a cough suggests
respiratory medicine with a link to booking; nothing scrolls sideways, targets are large."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from tests.e2e.conftest import LAPTOP, LiveServer, screenshot, sign_in

pytestmark = pytest.mark.e2e

PHONE: ViewportSize = {"width": 390, "height": 844}


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], width  # type: ignore[index]


def tall_enough(page: Page, selector: str) -> None:
    for box in page.locator(selector).evaluate_all(
        "els => els.map(e => e.getBoundingClientRect().height)"
    ):
        assert box >= 44, (selector, box)


def ask(page: Page, text: str | None = None) -> None:
    if text is not None:
        page.locator("#triage-text").fill(text)
    page.get_by_role("button", name="开始导诊").click()


def test_triage_on_a_phone(new_page: Any, server: LiveServer) -> None:
    page: Page = new_page(PHONE)
    sign_in(page, "patient_sun")
    page.goto("/patient/triage")
    page.wait_for_selector("[data-page=triage]")
    expect(page.get_by_role("heading", name="智能导诊")).to_be_visible()

    tall_enough(page, ".triage-chip, .triage-submit, .triage-segment span")
    no_sideways_scroll(page)
    screenshot(page, server, "triage-form-phone")
    # Nothing written: the page says so, and asks the server nothing.
    ask(page)
    expect(page.locator("[data-field-error=triage-text]")).to_have_text("请先描述您的不适。")

    # Chest pain with sweating: the 120 banner comes first, with a tel: link.
    ask(page, "胸口疼，出了一身冷汗")
    banner = page.get_by_test_id("triage-emergency")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("请立即前往急诊或拨打120")
    expect(banner.locator("[data-flag=chest_pain_sweating]")).to_be_visible()
    call = banner.get_by_role("link", name="拨打 120")
    expect(call).to_have_attribute("href", "tel:120")
    departments = page.get_by_test_id("triage-departments")
    assert banner.bounding_box()["y"] < departments.bounding_box()["y"]  # type: ignore[index]
    expect(departments.locator("li").first).to_have_attribute("data-department", "emergency")
    expect(page.get_by_test_id("triage-urgency")).to_have_attribute("data-urgency", "emergency")
    expect(page.get_by_test_id("triage-disclaimer")).to_contain_text("不是诊断")
    no_sideways_scroll(page)
    # The banner is on the first screen, not below the fold.
    top = banner.evaluate("e => e.getBoundingClientRect().top")
    assert 0 <= top < PHONE["height"] - 200, top
    tall_enough(page, ".triage-call, .triage-book, .triage-again")
    screenshot(page, server, "triage-emergency-phone")

    # A cough, from an example chip: respiratory medicine, booked from here.
    page.get_by_role("button", name="重新描述").click()
    expect(page.locator("#triage-text")).to_have_value("胸口疼，出了一身冷汗")
    page.get_by_role("button", name="咳嗽三天，有痰").click()
    expect(page.locator("#triage-text")).to_have_value("咳嗽三天，有痰")
    ask(page)
    expect(page.get_by_test_id("triage-result")).to_be_visible()
    expect(page.get_by_test_id("triage-emergency")).to_have_count(0)
    first = page.get_by_test_id("triage-departments").locator("li").first
    expect(first).to_have_attribute("data-department", "respiratory")
    expect(first).to_contain_text("呼吸内科")
    book = first.get_by_role("link", name="预约呼吸内科")
    expect(book).to_have_attribute("href", "/patient/book?specialty=respiratory")
    expect(page.get_by_test_id("triage-urgency")).to_have_attribute("data-urgency", "routine")
    expect(page.get_by_test_id("triage-history")).to_contain_text("咳嗽三天，有痰")
    no_sideways_scroll(page)
    screenshot(page, server, "triage-cough-phone")
    page.set_viewport_size(LAPTOP)
    no_sideways_scroll(page)
    screenshot(page, server, "triage-cough")
