"""The patient's whole journey in 一号通, on a phone (390×844), with the doctor and the
pharmacist in other browser contexts:

    triage → book → a follow-up video visit → pay → choose the pharmacy → dispensed.

孙美玲 (patient_sun, hypothyroidism diagnosed in person at SNBDH) describes her complaint
in Chinese and is sent to endocrinology; she books 王芳's (dr_wang) clinic at QDSL from the
triage's link; she asks 王芳 for a follow-up video visit, pays its fee once it is accepted,
waits in the waiting room, is admitted, and both sides see the other's video (Chromium's
fake camera, real WebRTC signaled through the server). 王芳 writes the visit record and
prescribes; 孙美玲 chooses a pharmacy for it, and follows it live as the pharmacist approves,
marks it ready and dispenses it. No page she sees scrolls sideways, and every step is a page
a user reaches by tapping, from the home page on.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import LAPTOP, LiveServer, screenshot, sign_in
from tests.e2e.test_consult_room import wait_remote_video
from tests.e2e.test_visits import call_state, record_and_prescribe

pytestmark = pytest.mark.e2e

PATIENT = "patient_sun"
DOCTOR = "dr_wang"  # 王芳, 内分泌科, 青岛市立医院 (QDSL)
PHARMACIST = "pharmacist_chen"  # 海川大药房 (HCYF), 市南区
PHONE = {"width": 390, "height": 844}


def fits(page: Page) -> None:
    """No sideways scroll, and the bottom navigation in reach."""
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} scrolls sideways: {width}"
    expect(page.get_by_test_id("patient-nav")).to_be_visible()


def test_triage_book_visit_pay_pharmacy_dispensed(new_page: Any, server: LiveServer) -> None:
    _, me = server.call("GET", "/api/v1/me", as_=PATIENT)
    status, body = server.call(
        "PUT",
        f"/api/v1/patients/{me['patient_id']}/verification",
        {"verified": True},
        as_="admin",
    )
    assert status == 200, body
    _, doctor_me = server.call("GET", "/api/v1/me", as_=DOCTOR)

    phone: Page = new_page(PHONE)
    sign_in(phone, PATIENT)
    phone.goto("/patient")

    # 1. Triage, from the home page's quick action.
    phone.get_by_test_id("quick-actions").get_by_role("link", name="智能导诊").click()
    phone.wait_for_selector("[data-page=triage]")
    phone.locator("#triage-text").fill("甲减两年，最近怕冷、体重增加")
    phone.get_by_role("button", name="开始导诊").click()
    expect(phone.get_by_test_id("triage-emergency")).to_have_count(0)
    first = phone.get_by_test_id("triage-departments").locator("li").first
    expect(first).to_have_attribute("data-department", "endocrinology")
    fits(phone)
    screenshot(phone, server, "journey-1-triage-phone")

    # 2. Book 王芳's clinic from the triage's link.
    first.get_by_role("link", name="预约内分泌科").click()
    phone.wait_for_selector("[data-page=book][data-ready]")
    expect(phone.get_by_test_id("from-triage")).to_contain_text("内分泌科")
    card = phone.get_by_test_id("doctor-card").filter(has_text="王芳").filter(has_text="402诊室")
    expect(card).to_have_count(1)
    expect(card).to_contain_text("副主任医师")
    card.get_by_test_id("slot-button").first.click()
    phone.get_by_test_id("confirm-booking").click()
    done = phone.get_by_test_id("booking-done")
    expect(done).to_contain_text("预约成功")
    expect(done).to_contain_text("402诊室")
    fits(phone)
    screenshot(phone, server, "journey-2-booked-phone")

    # 3. A follow-up video visit with 王芳, from the 就诊 tab.
    phone.get_by_test_id("patient-nav").get_by_role("link", name="就诊").click()
    form = phone.get_by_test_id("visit-request")
    doctor_select = form.get_by_test_id("visit-doctor")
    expect(doctor_select.locator(f"option[value='{doctor_me['id']}']")).to_have_count(1)
    doctor_select.select_option(str(doctor_me["id"]))
    condition = form.get_by_test_id("visit-condition")
    expect(condition.locator("option:not([disabled])")).not_to_have_count(0)
    condition.select_option(index=1)
    form.get_by_test_id("visit-complaint").fill("最近乏力怕冷，想调整优甲乐剂量")
    form.get_by_test_id("visit-send").click()
    expect(phone).to_have_url(re.compile(r"/patient/visits/\d+$"))
    visit_id = int(phone.url.rsplit("/", 1)[1])
    expect(phone.get_by_test_id("visit-status")).to_have_text("待医生接诊")
    expect(phone.get_by_test_id("visit-pay")).to_have_count(0)  # nothing to pay before accepted

    doctor: Page = new_page(LAPTOP)
    sign_in(doctor, DOCTOR)
    doctor.goto("/visits")
    visit_card = doctor.locator(f"[data-testid=doctor-visit][data-visit-id='{visit_id}']")
    visit_card.get_by_test_id("visit-accept").click()
    expect(visit_card.get_by_test_id("visit-status")).to_have_text("医生已接诊")

    # 4. Pay the visit's fee once it is accepted (the sandbox provider; no card data).
    expect(phone.get_by_test_id("visit-status")).to_have_text("医生已接诊", timeout=15_000)
    phone.get_by_test_id("visit-pay").click()
    order = phone.get_by_test_id("order")
    expect(order).to_have_attribute("data-status", "created")
    expect(phone.get_by_test_id("order-amount")).to_have_text("¥30.00")  # QDSL's visit fee
    fits(phone)
    screenshot(phone, server, "journey-4-order-phone")
    phone.get_by_test_id("pay").click()
    expect(phone.get_by_test_id("order-status")).to_have_text("已支付", timeout=20_000)
    order_id = int(order.get_attribute("data-order-id") or 0)
    status, paid = server.call("GET", f"/api/v1/orders/{order_id}", as_=PATIENT)
    assert (status, paid["kind"], paid["subject_id"], paid["status"]) == (
        200,
        "visit",
        visit_id,
        "paid",
    ), paid
    screenshot(phone, server, "journey-4-paid-phone")

    # The doctor opens the room; the patient is told live, enters and waits to be admitted.
    phone.goto(f"/patient/visits/{visit_id}")
    expect(phone.get_by_test_id("visit-paid")).to_have_text("诊查费 ¥30.00 已支付")
    expect(phone.get_by_test_id("visit-pay")).to_have_count(0)
    visit_card.get_by_test_id("visit-open").click()
    doctor.get_by_test_id("visit-open-room").click()
    call_state(doctor, "joined")
    expect(phone.get_by_test_id("visit-status")).to_have_text("诊室已开启", timeout=15_000)
    phone.get_by_test_id("visit-enter").click()
    call_state(phone, "lobby")
    fits(phone)
    screenshot(phone, server, "journey-3-waiting-room-phone")
    doctor.get_by_test_id("visit-admit").click()
    call_state(phone, "joined")
    wait_remote_video(phone)
    wait_remote_video(doctor)
    fits(phone)
    screenshot(phone, server, "journey-3-video-phone")
    screenshot(doctor, server, "journey-3-video-doctor-laptop")

    # The doctor writes the record, prescribes (linked to the visit) and ends the visit.
    rx_id = record_and_prescribe(doctor, findings="TSH 7.1 mIU/L，FT4 偏低")
    doctor.get_by_test_id("visit-end").click()
    expect(doctor.get_by_test_id("visit-ended")).to_be_visible()
    expect(phone.get_by_test_id("visit-status")).to_have_text("已完成", timeout=15_000)
    expect(phone.get_by_test_id("visit-plan")).to_contain_text("75μg")

    # 5. Choose the pharmacy for the visit's prescription, and read the dosing in words.
    phone.get_by_test_id("visit-rx").click()
    detail = phone.get_by_test_id("patient-rx-detail")
    expect(detail).to_have_attribute("data-status", "signed")
    expect(phone.get_by_test_id("rx-dosing")).to_contain_text("每日1次")
    phone.locator("[data-action=open-picker]").click()
    phone.get_by_test_id("district-filter").select_option("市南区")
    options = phone.get_by_test_id("pharmacy-option")
    expect(options.first).to_have_attribute("data-code", "HCYF")
    options.first.locator("[data-action=choose]").click()
    expect(phone.get_by_test_id("chosen-pharmacy")).to_have_attribute("data-code", "HCYF")
    fits(phone)
    screenshot(phone, server, "journey-5-pharmacy-phone")

    # 6. The pharmacist approves, marks it ready, dispenses; the patient follows each step live.
    pharmacy: Page = new_page(LAPTOP)
    sign_in(pharmacy, PHARMACIST)
    item = pharmacy.locator(f"[data-testid=rx-item][data-rx-id='{rx_id}']")
    expect(item).to_be_visible()
    item.locator("[data-action=approve]").click()
    expect(item.get_by_test_id("rx-status")).to_have_text("已通过")
    expect(phone.get_by_test_id("rx-steps")).to_have_attribute("data-reached", "approved")
    item.locator("[data-action=ready]").click()
    expect(item.get_by_test_id("rx-status")).to_have_text("待取药")
    expect(phone.get_by_test_id("rx-steps")).to_have_attribute("data-reached", "ready")
    expect(phone.get_by_test_id("rx-ready")).to_contain_text("药已备好")
    item.locator("[data-action=dispense]").click()
    item.get_by_role("button", name="确认发药").click()
    expect(item.get_by_test_id("rx-status")).to_have_text("已发药")
    expect(phone.get_by_test_id("rx-steps")).to_have_attribute("data-reached", "dispensed")
    expect(phone.get_by_test_id("rx-dispensed")).to_be_visible()
    fits(phone)
    screenshot(phone, server, "journey-6-dispensed-phone")

    # The messages tab holds the journey's notices, newest first.
    phone.get_by_test_id("patient-nav").get_by_role("link", name="消息").click()
    status, inbox = server.call("GET", "/api/v1/inbox", as_=PATIENT)
    assert status == 200
    kinds = {i["kind"] for i in inbox["items"]}
    assert {"booking_confirmed", "visit_ready", "payment_paid", "prescription_dispensed"} <= kinds
    fits(phone)
    screenshot(phone, server, "journey-7-messages-phone")
