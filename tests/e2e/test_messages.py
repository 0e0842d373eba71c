"""The patient's messages on a phone (390×844): a message arrives live, is read and leads to
its subject; an opt-out is saved and holds after a reload."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import LiveServer, screenshot, sign_in
from tests.e2e.pages_support import prescribe

pytestmark = pytest.mark.e2e

PHONE: Any = {"width": 390, "height": 844}
PREFS = "/api/v1/me/notification-preferences"


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.evaluate("window.innerWidth"), f"scrolls sideways: {width}px"


def test_a_message_arrives_live_and_an_opt_out_is_saved(new_page: Any, server: LiveServer) -> None:
    page: Page = new_page(PHONE)
    rx = prescribe(server)
    sign_in(page, "patient_wang")
    page.goto("/patient/messages")
    page.wait_for_selector("[data-page=patient-messages]")
    approved = page.locator(
        f"[data-testid=message][data-kind=prescription_approved][data-resource='Prescription/{rx['id']}']"
    )
    expect(approved).to_have_count(0)

    # The pharmacy approves elsewhere: the message appears without a reload, unread.
    status, body = server.call(
        "POST",
        f"/api/v1/prescriptions/{rx['id']}/review",
        {"decision": "approve"},
        as_="pharmacist_chen",
    )
    assert status == 200, body
    expect(approved).to_have_count(1)
    expect(approved).to_have_attribute("data-read", "false")
    expect(approved).to_contain_text("处方审核通过")
    expect(approved).to_contain_text("处方已审核通过")
    expect(approved.locator("time")).not_to_be_empty()
    box = approved.bounding_box()
    assert box is not None and box["height"] >= 44 and box["width"] <= 390
    no_horizontal_scroll(page)
    screenshot(page, server, "patient-messages-phone")

    # Opening it marks it read and leads to the prescription.
    approved.click()
    page.wait_for_url(f"**/patient/prescriptions/{rx['id']}")
    status, inbox = server.call("GET", "/api/v1/inbox?limit=50", as_="patient_wang")
    assert status == 200
    [item] = [i for i in inbox["items"] if i["resource"] == f"Prescription/{rx['id']}"]
    assert item["read"] is True
    page.goto("/patient/messages")
    expect(approved).to_have_attribute("data-read", "true")

    # Settings: SMS-like reminders of results off, saved at once and kept.
    status, _ = server.call(
        "PUT",
        PREFS,
        {"preferences": [{"kind": "result_ready", "channel": "log", "enabled": True}]},
        as_="patient_wang",
    )
    assert status == 200
    page.get_by_test_id("notification-settings").click()
    page.wait_for_selector("[data-page=notification-settings]")
    switch = page.locator(
        "[data-testid=preference][data-kind=result_ready] input[data-channel=log]"
    )
    expect(switch).to_be_checked()
    row = page.locator("[data-testid=preference][data-kind=result_ready] label")
    label_box = row.bounding_box()
    assert label_box is not None and label_box["height"] >= 44
    no_horizontal_scroll(page)
    row.click()
    expect(page.locator("[data-page=notification-settings] [role=status]")).to_contain_text(
        "已保存：检验报告"
    )
    expect(switch).not_to_be_checked()
    screenshot(page, server, "patient-notifications-phone")
    status, prefs = server.call("GET", PREFS, as_="patient_wang")
    [result] = [k for k in prefs["kinds"] if k["kind"] == "result_ready"]
    assert result["outbound"] == {"log": False} and result["in_app"] is True
    page.reload()
    expect(switch).not_to_be_checked()
    other = page.locator(
        "[data-testid=preference][data-kind=opinion_available] input[data-channel=log]"
    )
    expect(other).to_be_checked()
