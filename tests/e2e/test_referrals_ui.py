"""Referrals in the browser: the receiving specialist sees a new referral arrive live,
accepts it with a slot, records arrival and completion; declines another with a reason;
the referring community doctor sees each answer live."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import TABLET, ConsoleWatch, LiveServer, screenshot, sign_in
from tests.e2e.pages_support import institution, me, open_slots, refer_up
from tests.e2e.test_realtime import NetworkCut

pytestmark = pytest.mark.e2e


def open_referrals(page: Page, user: str) -> None:
    sign_in(page, user)
    page.get_by_role("link", name="转诊").click()
    page.wait_for_selector("[data-page=referrals]")


def test_specialist_accepts_schedules_and_completes_a_referral(
    new_page: Any, server: LiveServer
) -> None:
    slots = open_slots(server, "QDSL", "心内科")
    specialist: Page = new_page()
    open_referrals(specialist, "dr_li")

    referral = refer_up(server)  # the community doctor refers while the specialist watches
    gp: Page = new_page(TABLET)
    open_referrals(gp, "gp_zhang")
    gp.locator("[data-box=sent]").click()
    card = specialist.locator(f"[data-testid=referral][data-referral-id='{referral['id']}']")
    expect(card).to_contain_text(referral["purpose"])
    expect(card).to_contain_text("市南区八大湖街道社区卫生服务中心")
    expect(card).to_contain_text("心内科")
    expect(card.get_by_test_id("referral-status")).to_have_text("待接收")
    sent = gp.locator(f"[data-testid=referral][data-referral-id='{referral['id']}']")
    expect(sent.get_by_test_id("referral-status")).to_have_text("待接收")
    screenshot(specialist, server, "referrals-received")

    # Accept and book a slot at once.
    card.locator("[data-action=accept]").click()
    form = card.get_by_test_id("referral-accept-form")
    slot = slots[0]
    expect(form.locator(f"option[value='{slot['id']}']")).to_be_attached()
    form.locator("select").select_option(str(slot["id"]))
    form.locator("textarea").fill("明早九点心内科门诊")
    form.get_by_role("button", name="接收").click()
    expect(card.get_by_test_id("referral-status")).to_have_text("已预约")
    # The referring doctor sees it live.
    expect(sent.get_by_test_id("referral-status")).to_have_text("已预约")

    card.locator("[data-action=arrive]").click()
    expect(card.get_by_test_id("referral-status")).to_have_text("已到院")
    card.locator("[data-action=complete]").click()
    expect(card.get_by_test_id("referral-status")).to_have_text("已完成")
    expect(sent.get_by_test_id("referral-status")).to_have_text("已完成")
    expect(card.locator(".history li")).to_have_count(5)  # requested … completed

    status, stored = server.call("GET", f"/api/v1/referrals/{referral['id']}", as_="gp_zhang")
    assert status == 200
    assert stored["status"] == "completed"
    assert stored["appointment_id"] is not None
    screenshot(gp, server, "referrals-sent-tablet")


def test_specialist_declines_with_a_reason(new_page: Any, server: LiveServer) -> None:
    referral = refer_up(server, urgency="routine")
    specialist: Page = new_page()
    open_referrals(specialist, "dr_li")
    card = specialist.locator(f"[data-testid=referral][data-referral-id='{referral['id']}']")
    expect(card.get_by_test_id("referral-status")).to_have_text("待接收")

    card.locator("[data-action=decline]").click()
    form = card.get_by_test_id("referral-decline-form")
    form.get_by_role("button", name="确认拒绝").click()
    expect(form.locator(f"[data-field-error=ref-text-{referral['id']}]")).to_have_text("必填")
    form.locator("textarea").fill("本院心内科床位已满，建议转青大附院")
    form.get_by_role("button", name="确认拒绝").click()
    expect(card.get_by_test_id("referral-status")).to_have_text("已拒绝")
    expect(card.get_by_test_id("referral-note")).to_contain_text("床位已满")
    screenshot(specialist, server, "referral-declined")

    status, stored = server.call("GET", f"/api/v1/referrals/{referral['id']}", as_="gp_zhang")
    assert status == 200
    assert (stored["status"], stored["status_reason"]) == (
        "declined",
        "本院心内科床位已满，建议转青大附院",
    )

    # The referring doctor sees the answer and its reason; nothing is left to withdraw.
    gp: Page = new_page()
    open_referrals(gp, "gp_zhang")
    gp.locator("[data-box=sent]").click()
    sent = gp.locator(f"[data-testid=referral][data-referral-id='{referral['id']}']")
    expect(sent.get_by_test_id("referral-status")).to_have_text("已拒绝")
    expect(sent.get_by_test_id("referral-note")).to_contain_text("床位已满")
    expect(sent.locator("[data-action=cancel]")).to_have_count(0)


def test_an_answer_already_given_elsewhere_is_refused_in_words(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 409")
    referral = refer_up(server)
    open_referrals(page, "dr_li")
    card = page.locator(f"[data-testid=referral][data-referral-id='{referral['id']}']")
    expect(card.get_by_test_id("referral-status")).to_have_text("待接收")
    card.locator("[data-action=accept]").click()

    # Meanwhile a colleague at the same desk declines it.
    status, _ = server.call(
        "POST", f"/api/v1/referrals/{referral['id']}/decline", {"reason": "已电话联系，改约"},
        as_="nurse_he",
    )  # fmt: skip
    assert status == 200
    card.get_by_test_id("referral-accept-form").get_by_role("button", name="接收").click()
    alert = card.get_by_role("alert")
    expect(alert).to_contain_text("cannot accept a referral that is declined")
    assert "{" not in alert.inner_text()
    # The card now shows where the referral stands.
    expect(card.get_by_test_id("referral-status")).to_have_text("已拒绝")
    expect(card.locator("[data-action=accept]")).to_have_count(0)


def test_referrals_sent_during_a_network_drop_arrive_once(page: Page, server: LiveServer) -> None:
    cut = NetworkCut()
    page.route_web_socket("**/socket.io/**", cut.route)
    status, listed = server.call("GET", "/api/v1/referrals?box=received", as_="dr_li")
    assert status == 200
    before = len(listed["items"])
    open_referrals(page, "dr_li")
    received = page.get_by_test_id("referrals-received")
    expect(received.get_by_test_id("referral")).to_have_count(before)

    page.context.set_offline(True)  # HTTP; the socket is cut by the route (playwright#4910)
    cut.drop()
    expect(page.locator(".app")).to_have_attribute("data-realtime", "reconnecting")
    missed = [refer_up(server), refer_up(server)]
    page.context.set_offline(False)
    cut.restore()
    expect(page.locator(".app")).to_have_attribute("data-realtime", "live", timeout=20_000)

    for referral in missed:
        card = received.locator(f"[data-referral-id='{referral['id']}']")
        expect(card).to_have_count(1)
        expect(card.get_by_test_id("referral-status")).to_have_text("待接收")
    expect(received.get_by_test_id("referral")).to_have_count(before + 2)
    expect(page.get_by_test_id("referral-count-received")).to_have_text(str(before + 2))


def test_community_doctor_acknowledges_a_referral_down(page: Page, server: LiveServer) -> None:
    open_referrals(page, "gp_zhang")
    snbdh = institution(server, "SNBDH")
    body = {
        "direction": "down",
        "patient_id": me(server, "patient_wang")["patient_id"],
        "purpose": "术后康复随访",
        "to_institution_id": snbdh["id"],
        "reason": "PCI 术后病情稳定，转回社区继续管理",
        "discharge_summary": "冠状动脉支架植入术后第 5 天，无胸痛。",
        "follow_up": [{"title": "两周后复查血脂", "due_date": None}],
    }
    status, down = server.call("POST", "/api/v1/referrals", body, as_="dr_li")
    assert status == 201, down
    # It reaches the community centre's desk live.
    card = page.locator(f"[data-testid=referral][data-referral-id='{down['id']}']")
    expect(card).to_have_attribute("data-direction", "down")
    expect(card).to_contain_text("下转")
    expect(card).to_contain_text("冠状动脉支架植入术后")
    expect(card).to_contain_text("两周后复查血脂")
    card.locator("[data-action=accept]").click()
    card.get_by_test_id("referral-accept-form").get_by_role("button", name="接收").click()
    expect(card.get_by_test_id("referral-status")).to_have_text("已接收")
    status, stored = server.call("GET", f"/api/v1/referrals/{down['id']}", as_="dr_li")
    assert (status, stored["status"]) == (200, "accepted")
    screenshot(page, server, "referral-down-acknowledged")
