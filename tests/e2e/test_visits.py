"""A follow-up video visit (互联网复诊) in the browser: the patient on a phone (390×844) asks
dr_li for a follow-up, the doctor (another context, a laptop) accepts and opens the room,
the patient waits in the waiting room and is admitted; remote video plays on both sides
(Chromium's fake camera, real WebRTC signaled through the server); the doctor writes the
visit record, prescribes (linked to the visit) and ends the visit; the patient reads it.
No patient page scrolls sideways.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import LAPTOP, LiveServer, screenshot, sign_in
from tests.e2e.test_consult_room import wait_remote_video

pytestmark = pytest.mark.e2e

PATIENT = "patient_sun"  # 孙美玲: hypothyroidism (E03.9) diagnosed at SNBDH in person
DOCTOR = "dr_li"  # 李明, 青岛市立医院
PHONE = {"width": 390, "height": 844}
NO_SIDEWAYS = "() => document.documentElement.scrollWidth <= window.innerWidth + 1"


def no_horizontal_scroll(page: Page) -> None:
    assert page.evaluate(NO_SIDEWAYS), f"{page.url} scrolls horizontally"


def call_state(page: Page, state: str) -> None:
    expect(page.get_by_test_id("visit-call")).to_have_attribute("data-state", state, timeout=15_000)


def record_and_prescribe(doctor: Page, *, findings: str) -> int:
    """The doctor writes the visit record (hypothyroidism, under-replaced) and prescribes
    levothyroxine 75 μg qd through the prescription form; the prescription links to the
    visit. Returns its id."""
    doctor.get_by_test_id("record-findings").fill(findings)
    doctor.get_by_test_id("record-assessment").fill("甲状腺功能减退症，替代剂量不足")
    doctor.get_by_test_id("record-plan").fill("左甲状腺素钠片加量至 75μg qd，六周后复查")
    doctor.get_by_test_id("visit-record-save").click()
    expect(doctor.get_by_test_id("visit-notice")).to_be_visible()
    doctor.select_option("#rx-diagnosis", "E03.9")
    doctor.select_option("#rx-drug-0", "H03AA01")
    doctor.fill("#rx-dose-0", "75")
    doctor.select_option("#rx-frequency-0", "qd")
    doctor.fill("#rx-days-0", "7")
    doctor.fill("#rx-quantity-0", "1")
    doctor.get_by_test_id("rx-check").click()
    expect(doctor.get_by_test_id("rx-findings")).to_be_visible()
    doctor.get_by_test_id("rx-sign").click()
    created = doctor.get_by_test_id("rx-created")
    expect(created).to_be_visible()
    rx_id = int(created.get_attribute("data-rx-id") or 0)
    expect(doctor.get_by_test_id("visit-rx-ids")).to_contain_text(f"#{rx_id}")
    return rx_id


def test_a_follow_up_video_visit_on_the_phone(new_page: Any, server: LiveServer) -> None:
    _, me = server.call("GET", "/api/v1/me", as_=PATIENT)
    status, body = server.call(
        "PUT",
        f"/api/v1/patients/{me['patient_id']}/verification",
        {"verified": True},
        as_="admin",
    )
    assert status == 200, body
    _, doctor_me = server.call("GET", "/api/v1/me", as_=DOCTOR)

    patient: Page = new_page(PHONE)
    sign_in(patient, PATIENT)
    patient.goto("/patient/visits")
    form = patient.get_by_test_id("visit-request")
    expect(
        form.get_by_test_id("visit-doctor").locator(f"option[value='{doctor_me['id']}']")
    ).to_have_count(1)
    form.get_by_test_id("visit-doctor").select_option(str(doctor_me["id"]))
    condition = form.get_by_test_id("visit-condition")
    expect(condition.locator("option:not([disabled])")).not_to_have_count(0)
    condition.select_option(index=1)
    form.get_by_test_id("visit-complaint").fill("最近乏力，想复查甲功并调整药量")
    no_horizontal_scroll(patient)
    screenshot(patient, server, "visits-patient-request-phone")
    form.get_by_test_id("visit-send").click()
    expect(patient).to_have_url(re.compile(r"/patient/visits/\d+$"))
    expect(patient.get_by_test_id("visit-status")).to_have_text("待医生接诊")
    visit_id = int(patient.url.rsplit("/", 1)[1])

    doctor: Page = new_page(LAPTOP)
    sign_in(doctor, DOCTOR)
    doctor.goto("/visits")
    card = doctor.locator(f"[data-testid=doctor-visit][data-visit-id='{visit_id}']")
    card.get_by_test_id("visit-accept").click()
    expect(card.get_by_test_id("visit-status")).to_have_text("医生已接诊")
    card.get_by_test_id("visit-open").click()
    doctor.get_by_test_id("visit-open-room").click()
    expect(doctor.locator("[data-page=doctor-visit]")).to_have_attribute("data-status", "waiting")
    call_state(doctor, "joined")

    # The patient is told the room is open (live), enters and waits in the waiting room.
    expect(patient.get_by_test_id("visit-status")).to_have_text("诊室已开启", timeout=15_000)
    patient.get_by_test_id("visit-enter").click()
    call_state(patient, "lobby")
    expect(patient.get_by_test_id("visit-lobby")).to_be_visible()
    no_horizontal_scroll(patient)
    screenshot(patient, server, "visits-patient-waiting-room-phone")

    doctor.get_by_test_id("visit-admit").click()
    call_state(patient, "joined")
    expect(patient.get_by_test_id("visit-status")).to_have_text("就诊中", timeout=15_000)
    wait_remote_video(patient)
    wait_remote_video(doctor)
    no_horizontal_scroll(patient)
    screenshot(patient, server, "visits-patient-call-phone")
    screenshot(doctor, server, "visits-doctor-call-laptop")

    # The doctor writes the visit record and ends the visit; the patient reads it.
    rx_id = record_and_prescribe(doctor, findings="TSH 6.2 mIU/L，略高")
    doctor.get_by_test_id("visit-end").click()
    expect(doctor.get_by_test_id("visit-ended")).to_be_visible()
    expect(patient.get_by_test_id("visit-status")).to_have_text("已完成", timeout=15_000)
    expect(patient.get_by_test_id("visit-plan")).to_contain_text("75μg")
    expect(patient.get_by_test_id("visit-rx")).to_have_text(f"#{rx_id}")
    call_state(patient, "ended")
    no_horizontal_scroll(patient)
    screenshot(patient, server, "visits-patient-record-phone")

    patient.goto("/patient/visits")
    expect(patient.locator(f"[data-testid=visit-card][data-visit-id='{visit_id}']")).to_be_visible()
    no_horizontal_scroll(patient)
    patient.set_viewport_size(LAPTOP)
    patient.goto(f"/patient/visits/{visit_id}")
    expect(patient.get_by_test_id("visit-plan")).to_be_visible()
    no_horizontal_scroll(patient)
    screenshot(patient, server, "visits-patient-record-laptop")
