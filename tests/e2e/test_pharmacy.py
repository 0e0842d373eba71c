"""The pharmacist's live queue: a prescription arrives without a reload, with its check
findings; approve → dispense; a rejection needs a reason (the server says so); after a
dropped connection the prescriptions sent meanwhile appear, each once."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import TABLET, ConsoleWatch, LiveServer, screenshot, sign_in
from tests.e2e.pages_support import prescribe
from tests.e2e.test_realtime import NetworkCut

pytestmark = pytest.mark.e2e


def test_a_prescription_arrives_live_is_approved_and_dispensed(
    page: Page, server: LiveServer
) -> None:
    sign_in(page, "pharmacist_chen")
    queue = page.get_by_test_id("rx-queue")
    expect(queue).to_be_attached()

    rx = prescribe(server)  # the doctor signs and sends it while the pharmacist watches
    item = queue.locator(f"[data-testid=rx-item][data-rx-id='{rx['id']}']")
    expect(item).to_be_visible()
    expect(item).to_contain_text("王建国")
    expect(item).to_contain_text("苯磺酸氨氯地平片")
    expect(item.get_by_test_id("rx-status")).to_have_text("待审核")
    # The check findings the server found are shown, each with its words.
    assert rx["findings"], "the demo patient already takes amlodipine: a finding is expected"
    findings = item.get_by_test_id("rx-finding")
    expect(findings).to_have_count(len(rx["findings"]))
    for finding in rx["findings"]:
        expect(item.get_by_test_id("rx-findings")).to_contain_text(finding["message"])
    expect(item.locator("[data-code=duplicate_therapy]")).to_contain_text("重复用药")
    # The queue acknowledged the delivery: the doctor sees it received.
    expect(item).to_contain_text("已签收")
    screenshot(page, server, "pharmacy-queue")

    item.locator("[data-action=approve]").click()
    expect(item.get_by_test_id("rx-status")).to_have_text("已通过")
    item.locator("[data-action=dispense]").click()
    item.get_by_role("button", name="确认发药").click()
    expect(item.get_by_test_id("rx-status")).to_have_text("已发药")
    expect(item.get_by_test_id("rx-dispensed")).to_be_visible()

    status, stored = server.call("GET", f"/api/v1/prescriptions/{rx['id']}", as_="gp_zhang")
    assert status == 200
    assert (stored["status"], stored["received"]) == ("dispensed", True)
    assert stored["dispensation"]["items"] == [
        {"drug_code": "C08CA01", "quantity": 1, "batch": None}
    ]
    screenshot(page, server, "pharmacy-dispensed")

    # English, switched in place.
    page.get_by_test_id("lang").click()
    expect(page.get_by_role("heading", name="Prescription queue")).to_be_visible()
    expect(item.get_by_test_id("rx-status")).to_have_text("Dispensed")
    expect(item.locator("[data-code=duplicate_therapy]")).to_contain_text("Duplicate therapy")
    expect(item.get_by_role("status")).to_have_text(f"Prescription #{rx['id']} dispensed.")
    screenshot(page, server, "pharmacy-queue-en")
    page.get_by_test_id("lang").click()


def test_a_rejection_without_a_reason_is_refused_by_the_server(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 422")
    rx = prescribe(server)
    sign_in(page, "pharmacist_chen")
    item = page.locator(f"[data-testid=rx-item][data-rx-id='{rx['id']}']")
    expect(item).to_be_visible()

    item.locator("[data-action=reject]").click()
    form = item.get_by_test_id("reject-form")
    form.get_by_role("button", name="确认驳回").click()
    # The server's own words, beside the reason field and not as JSON.
    expect(form.locator(f"[data-field-error=reject-reason-{rx['id']}]")).to_contain_text(
        "a rejection needs a reason"
    )
    assert "{" not in form.get_by_role("alert").inner_text()
    expect(item.get_by_test_id("rx-status")).to_have_text("待审核")
    screenshot(page, server, "pharmacy-reject-refused")

    form.locator("textarea").fill("与患者现用药重复，请核实后修改")
    form.get_by_role("button", name="确认驳回").click()
    expect(item.get_by_test_id("rx-status")).to_have_text("已驳回")
    expect(item.get_by_test_id("rx-review-reason")).to_contain_text("与患者现用药重复")
    status, stored = server.call("GET", f"/api/v1/prescriptions/{rx['id']}", as_="gp_zhang")
    assert status == 200
    assert (stored["status"], stored["review_reason"]) == (
        "rejected",
        "与患者现用药重复，请核实后修改",
    )


def test_after_a_network_drop_the_queue_catches_up_once(new_page: Any, server: LiveServer) -> None:
    page: Page = new_page(TABLET)
    cut = NetworkCut()
    page.route_web_socket("**/socket.io/**", cut.route)
    sign_in(page, "pharmacist_chen")
    queue = page.get_by_test_id("rx-queue")
    first = prescribe(server)
    expect(queue.locator(f"[data-rx-id='{first['id']}']")).to_be_visible()
    before = queue.get_by_test_id("rx-item").count()
    page.get_by_role("searchbox").fill("未提交的查找")  # typed, never lost: no reload

    # The network goes: offline emulation cuts HTTP, and the open WebSocket is cut by the
    # route (offline emulation leaves open WebSockets alone, microsoft/playwright#4910).
    page.context.set_offline(True)
    cut.drop()
    expect(page.locator(".app")).to_have_attribute("data-realtime", "reconnecting")
    missed = [prescribe(server), prescribe(server)]
    # Nothing arrives while the connection is down.
    expect(queue.get_by_test_id("rx-item")).to_have_count(before)

    page.context.set_offline(False)
    cut.restore()
    expect(page.locator(".app")).to_have_attribute("data-realtime", "live", timeout=20_000)
    for rx in missed:
        expect(queue.locator(f"[data-rx-id='{rx['id']}']")).to_have_count(1)
    expect(queue.get_by_test_id("rx-item")).to_have_count(before + 2)
    ids = queue.get_by_test_id("rx-item").evaluate_all("els => els.map(e => e.dataset.rxId)")
    assert len(ids) == len(set(ids)), "a prescription is shown twice"
    # The missed deliveries were acknowledged once the queue caught up.
    for rx in missed:
        expect(queue.locator(f"[data-rx-id='{rx['id']}']")).to_contain_text("已签收")
    expect(page.get_by_role("searchbox")).to_have_value("未提交的查找")
    screenshot(page, server, "pharmacy-queue-tablet-caught-up")
    # The inbox caught up too, each delivery once.
    page.get_by_role("link", name="消息").click()
    page.wait_for_selector("[data-page=inbox]")
    for rx in missed:
        expect(page.locator(".inbox-item", has_text=f"新处方 #{rx['id']} 送达")).to_have_count(1)
    screenshot(page, server, "pharmacy-inbox-tablet-caught-up")
