"""The consult in the browser: request, answer, the room's video, chat, opinion, prescription.

Two browser contexts (a community doctor and a specialist of the demo network) against a
real ``yihao serve``; Chromium's fake camera and microphone feed real WebRTC connections
between the two pages, signaled through the server.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from server.seed import DEMO_PASSWORD
from tests.conftest import SECRET
from tests.e2e.conftest import (
    ROOT,
    TABLET,
    ConsoleWatch,
    LiveServer,
    _free_port,
    screenshot,
    sign_in,
    wait_live,
)

pytestmark = pytest.mark.e2e

GP = "gp_zhang"  # 市南区八大湖街道社区卫生服务中心 (SNBDH)
SPECIALIST = "dr_li"  # 青岛市立医院 (QDSL), 心内科
PATIENT_NUMBER = "SN-000031"  # 王建国 at SNBDH
TIMING = ROOT / "test-artifacts" / "consult-video-timing.json"

# A remote <video> that plays for real: frames have a size and time advances.
REMOTE_PLAYING = """async () => {
  const videos = [...document.querySelectorAll('[data-testid=remote-video]')];
  const live = videos.filter(v => v.videoWidth > 0 && !v.paused);
  if (live.length === 0) return false;
  const before = live.map(v => v.currentTime);
  await new Promise(r => setTimeout(r, 400));
  return live.some((v, i) => v.currentTime > before[i]);
}"""


def wait_remote_video(page: Page, timeout_s: float = 20) -> None:
    """Wait until a remote participant's video is actually playing in this page."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.evaluate(REMOTE_PLAYING):
            return
        page.wait_for_timeout(200)  # frames arrive on their own clock: poll the element
    pytest.fail("no remote video is playing")


def room_state(page: Page, state: str) -> None:
    expect(page.locator("[data-page=consult-room]")).to_have_attribute(
        "data-state", state, timeout=15_000
    )


def api_consult(server: LiveServer, accept: bool = True) -> int:
    """A consult requested by the gp (and accepted by the specialist) through the API."""
    status, patient = server.call(
        "GET", f"/api/v1/patients/lookup?institution=SNBDH&number={PATIENT_NUMBER}", as_=GP
    )
    assert status == 200, patient
    _, institutions = server.call("GET", "/api/v1/institutions", as_=GP)
    qdsl = next(i["id"] for i in institutions["items"] if i["code"] == "QDSL")
    now = datetime.now(UTC)
    status, consult = server.call(
        "POST",
        "/api/v1/consults",
        {
            "patient_id": patient["id"],
            "consent": {"given_by": "patient", "method": "written", "given_at": now.isoformat()},
            "reason": "血压控制不佳",
            "purpose": "调整用药",
            "clinical_question": "是否需要加用他汀？",
            "case_summary": "冠心病、高血压、2型糖尿病。",
            "window_start": now.isoformat(),
            "window_end": (now + timedelta(days=2)).isoformat(),
            "invited_institution_id": qdsl,
            "invited_department": "心内科",
        },
        as_=GP,
    )
    assert status == 201, consult
    if accept:
        status, body = server.call(
            "POST",
            f"/api/v1/consults/{consult['id']}/accept",
            {"scheduled_at": (now + timedelta(minutes=5)).isoformat()},
            as_=SPECIALIST,
        )
        assert status == 200, body
    return int(consult["id"])


def enter_room_together(gp: Page, specialist: Page, consult_id: int) -> None:
    """The host opens the room, the gp waits in the lobby, the host admits them."""
    specialist.goto(f"/consults/{consult_id}/room")
    room_state(specialist, "joined")
    gp.goto(f"/consults/{consult_id}/room")
    room_state(gp, "lobby")
    waiting = specialist.get_by_test_id("waiting-item")
    expect(waiting).to_have_count(1)
    waiting.get_by_test_id("admit").click()
    room_state(gp, "joined")
    expect(specialist.get_by_test_id("waiting-item")).to_have_count(0)


def finish_scenario(
    server: LiveServer, pharmacy: Page, prescription_id: int, patient_username: str, new_page: Any
) -> None:
    """The end of the scenario, on the pharmacist's and the patient's pages.

    ``pharmacy`` is pharmacist_chen's page (海川大药房, HCYF), signed in before the
    prescription was signed and routed to HCYF.
    """
    # The pharmacist's queue shows the prescription arrive live.
    queue = pharmacy.get_by_test_id("rx-queue")
    expect(queue.locator(f'[data-testid=rx-item][data-rx-id="{prescription_id}"]')).to_be_visible()
    screenshot(pharmacy, server, "consult-pharmacy-queue")
    # The patient's page shows who accessed the record: the specialist of the consult.
    patient: Page = new_page()
    sign_in(patient, patient_username)
    patient.goto("/patient/access")
    _, me = server.call("GET", "/api/v1/me", as_=SPECIALIST)
    rows = patient.locator(f"[data-testid=access-row][data-user-id='{me['id']}']")
    expect(rows.first).to_be_visible()
    expect(rows.first).to_contain_text("李明")
    screenshot(patient, server, "consult-patient-access")


def test_consult_from_request_to_prescription(
    new_page: Any, server: LiveServer, console: ConsoleWatch
) -> None:
    specialist: Page = new_page()
    gp: Page = new_page()
    sign_in(specialist, SPECIALIST)
    sign_in(gp, GP)

    # The community doctor finds the patient among the clinic's and reads the shared record.
    expect(gp.get_by_test_id("patient-row")).to_have_count(2)
    gp.fill("#patient-q", PATIENT_NUMBER)
    gp.get_by_test_id("patient-finder").get_by_role("button", name="查找").click()
    expect(gp.get_by_test_id("patient-row")).to_have_count(1)
    gp.get_by_role("link", name="王建国").click()
    gp.wait_for_selector("[data-page=patient-record]")
    expect(gp.get_by_test_id("patient-name")).to_have_text("王建国")
    panel = gp.get_by_test_id("record-panel")
    expect(panel.get_by_test_id("record-entry").first).to_be_visible()
    panel.get_by_test_id("record-tab-labs").click()
    expect(panel.get_by_test_id("abnormal-flag").first).to_be_visible()
    expect(panel.get_by_test_id("lab-trend").first).to_be_visible()
    expect(panel.get_by_test_id("record-source").first).not_to_be_empty()
    screenshot(gp, server, "consult-gp-patient-record")

    # The request: whom, why, the informed consent, which record items to share.
    gp.get_by_test_id("request-consult").click()
    gp.wait_for_selector("[data-page=consult-request]")
    gp.select_option("#c-institution", label="青岛市立医院")
    gp.select_option("#c-department", label="心内科")
    gp.fill("#c-reason", "血糖、血脂控制不佳")
    gp.fill("#c-purpose", "调整降糖与调脂方案")
    gp.fill("#c-question", "糖化血红蛋白持续升高，是否需要调整用药？")
    gp.fill("#c-summary", "男，71岁，高血压、2型糖尿病、冠心病，近半年糖化血红蛋白 7.2→8.1%。")
    gp.select_option("#c-method", "written")
    picking = gp.get_by_test_id("record-picking")
    picking.get_by_test_id("record-tab-labs").click()
    boxes = picking.locator("input[type=checkbox]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    expect(gp.get_by_test_id("picked-count")).to_have_text("2")
    # Consent comes first: the form refuses without it.
    gp.get_by_test_id("consult-submit").click()
    expect(gp.locator("[data-field-error=consent]")).to_be_visible()
    gp.get_by_test_id("consent-confirmed").check()
    screenshot(gp, server, "consult-request-form")
    gp.get_by_test_id("consult-submit").click()
    gp.wait_for_url(re.compile(r"/gp\?requested=\d+"))
    consult_id = int(gp.url.rsplit("=", 1)[1])

    # The specialist sees it arrive live and accepts with a time.
    item = specialist.locator(f"[data-testid=incoming-item][data-consult='{consult_id}']")
    expect(item).to_be_visible()
    expect(item).to_contain_text("王建国")
    screenshot(specialist, server, "consult-specialist-incoming")
    item.get_by_test_id("accept").click()
    expect(item).to_have_count(0)
    mine = specialist.locator(f"[data-testid=consult-item][data-consult='{consult_id}']")
    expect(mine).to_have_attribute("data-status", "scheduled")

    # Both open the room: the host first, the gp waits in the lobby until admitted.
    mine.get_by_test_id("open-room").click()
    room_state(specialist, "joined")
    gp_item = gp.locator(f"[data-testid=consult-item][data-consult='{consult_id}']")
    expect(gp_item).to_have_attribute("data-status", "in_session")
    gp_item.get_by_test_id("open-room").click()
    room_state(gp, "lobby")
    screenshot(gp, server, "consult-lobby")
    waiting = specialist.get_by_test_id("waiting-item")
    expect(waiting).to_contain_text("张伟")
    screenshot(specialist, server, "consult-lobby-host")
    waiting.get_by_test_id("admit").click()
    room_state(gp, "joined")

    # Each sees the other's video actually playing.
    wait_remote_video(gp)
    wait_remote_video(specialist)
    expect(specialist.get_by_test_id("remote-tile")).to_contain_text("张伟")
    expect(gp.get_by_test_id("quality")).not_to_have_text("连接中", timeout=10_000)
    screenshot(specialist, server, "consult-room-video")

    # Page load → first remote video playing: the specialist's page is loaded anew.
    specialist.reload()
    wait_live(specialist)
    room_state(specialist, "joined")
    wait_remote_video(specialist)
    wait_remote_video(gp)
    first_ms = int(
        specialist.locator("[data-page=consult-room]").get_attribute("data-first-video-ms") or 0
    )
    assert first_ms > 0
    _record_timing(server, first_ms)
    print(f"page load → first remote video playing: {first_ms} ms ({server.backend})")

    # Chat with a record item attached, seen by the other side.
    gp.get_by_test_id("side-record").click()
    gp.locator("aside [data-testid^='attach-']").first.click()
    expect(gp.get_by_test_id("chat-pending-attachment")).to_have_count(1)
    gp.get_by_test_id("chat-input").fill("请看一下最近的检验结果")
    gp.get_by_test_id("chat-send").click()
    message = specialist.get_by_test_id("chat-message").filter(has_text="请看一下最近的检验结果")
    expect(message).to_have_count(1)
    expect(message.get_by_test_id("chat-attachment")).to_have_count(1)
    screenshot(specialist, server, "consult-chat")

    # The opinion, signed.
    specialist.get_by_test_id("side-opinion").click()
    specialist.fill("#op-findings", "糖化血红蛋白 8.1%，低密度脂蛋白 3.6 mmol/L，均未达标。")
    specialist.fill("#op-diagnostic", "2型糖尿病血糖控制不佳；冠心病二级预防调脂未达标。")
    specialist.fill("#op-advice", "加用阿托伐他汀 20mg qn，二甲双胍加量，3 个月后复查。")
    specialist.get_by_test_id("opinion-sign").click()
    expect(specialist.get_by_test_id("opinion-signed")).to_contain_text("签名验证通过")
    screenshot(specialist, server, "consult-opinion")
    expect(gp.get_by_test_id("consult-status")).to_have_text("已出具意见")

    # A prescription from the room, for the consult's patient: checks first, then signed,
    # and sent to the pharmacy the patient chose, whose pharmacist is signed in.
    pharmacy: Page = new_page()
    sign_in(pharmacy, "pharmacist_chen")
    hcyf = next(i for i in _institutions(server) if i["code"] == "HCYF")
    desk = f".inbox-item[data-stream='pharmacy:{hcyf['id']}']"
    seqs = pharmacy.eval_on_selector_all(desk, "items => items.map(i => Number(i.dataset.seq))")
    last_seq = max(seqs, default=0)
    specialist.get_by_test_id("side-rx").click()
    specialist.select_option("#rx-pharmacy", str(hcyf["id"]))
    specialist.select_option("#rx-diagnosis", "I25.1")
    specialist.select_option("#rx-drug-0", "C10AA05")
    specialist.fill("#rx-dose-0", "20")
    specialist.select_option("#rx-frequency-0", "qn")
    specialist.fill("#rx-days-0", "7")
    specialist.fill("#rx-quantity-0", "1")
    specialist.get_by_test_id("rx-check").click()
    expect(specialist.get_by_test_id("rx-findings")).to_be_visible()
    screenshot(specialist, server, "consult-prescribing")
    specialist.get_by_test_id("rx-sign").click()
    created = specialist.get_by_test_id("rx-created")
    expect(created).to_be_visible()
    rx_id = int(created.get_attribute("data-rx-id") or 0)
    status, rx = server.call("GET", f"/api/v1/prescriptions/{rx_id}", as_=SPECIALIST)
    assert status == 200, rx
    _, consult = server.call("GET", f"/api/v1/consults/{consult_id}", as_=SPECIALIST)
    assert rx["patient_id"] == consult["patient_id"]
    assert rx["content"]["items"][0]["drug_code"] == "C10AA05"

    assert rx["pharmacy_id"] == hcyf["id"]
    # The delivery reaches the pharmacy's desk live (its inbox, until the queue page lands).
    pharmacy.wait_for_function(
        "([sel, last]) => [...document.querySelectorAll(sel)].some(i => Number(i.dataset.seq) > last)",
        arg=[desk, last_seq],
    )

    finish_scenario(server, pharmacy, rx_id, "patient_wang", new_page)


def _institutions(server: LiveServer) -> list[dict[str, Any]]:
    status, body = server.call("GET", "/api/v1/institutions", as_=GP)
    assert status == 200, body
    return list(body["items"])


def _record_timing(server: LiveServer, first_ms: int) -> None:
    TIMING.parent.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = json.loads(TIMING.read_text()) if TIMING.exists() else {}
    figures[server.backend] = {
        "page_load_to_first_remote_video_ms": first_ms,
        "measured_at": datetime.now(UTC).isoformat(),
    }
    TIMING.write_text(json.dumps(figures, indent=2) + "\n")


def test_lobby_admit(new_page: Any, server: LiveServer) -> None:
    consult_id = api_consult(server)
    specialist: Page = new_page()
    gp: Page = new_page()
    sign_in(specialist, SPECIALIST)
    sign_in(gp, GP)
    # The gp is first: it waits in the lobby until the host comes and admits it.
    gp.goto(f"/consults/{consult_id}/room")
    room_state(gp, "lobby")
    expect(gp.get_by_test_id("lobby")).to_be_visible()
    specialist.goto(f"/consults/{consult_id}/room")
    room_state(specialist, "joined")
    waiting = specialist.get_by_test_id("waiting-item")
    expect(waiting).to_contain_text("张伟")
    waiting.get_by_test_id("admit").click()
    room_state(gp, "joined")
    expect(specialist.get_by_test_id("waiting-item")).to_have_count(0)
    wait_remote_video(gp)
    wait_remote_video(specialist)
    # Muting shows on the other side (presence).
    gp.get_by_test_id("toggle-mic").click()
    expect(specialist.get_by_test_id("remote-tile")).to_contain_text("已静音")
    # Screen sharing adds a track: a renegotiation, and a screen tile on the other side.
    specialist.get_by_test_id("toggle-screen").click()
    screen = gp.get_by_test_id("screen-tile")
    expect(screen).to_be_visible(timeout=15_000)
    screenshot(gp, server, "consult-screen-share")
    specialist.get_by_test_id("toggle-screen").click()
    expect(screen).to_have_count(0, timeout=15_000)


def test_chat_catches_up_after_a_drop(
    new_page: Any, server: LiveServer, console: ConsoleWatch
) -> None:
    # The gp's reconnect attempts while offline fail in Chromium's console, as they should.
    console.allow(r"ERR_INTERNET_DISCONNECTED")
    consult_id = api_consult(server)
    specialist: Page = new_page()
    gp: Page = new_page()
    sign_in(specialist, SPECIALIST)
    sign_in(gp, GP)
    enter_room_together(gp, specialist, consult_id)
    specialist.get_by_test_id("chat-input").fill("连线前的一条")
    specialist.get_by_test_id("chat-send").click()
    expect(gp.get_by_test_id("chat-message").filter(has_text="连线前的一条")).to_have_count(1)

    # The gp's network drops; the specialist writes meanwhile, and so does the gp.
    gp.context.set_offline(True)
    expect(gp.locator(".app")).to_have_attribute("data-realtime", "reconnecting", timeout=30_000)
    specialist.get_by_test_id("chat-input").fill("断线期间的消息")
    specialist.get_by_test_id("chat-send").click()
    gp.get_by_test_id("chat-input").fill("离线时写的回复")
    gp.get_by_test_id("chat-send").click()
    expect(gp.get_by_test_id("chat-pending")).to_have_count(1)
    gp.context.set_offline(False)
    expect(gp.locator(".app")).to_have_attribute("data-realtime", "live", timeout=20_000)

    # Caught up without a reload: each message once, on both sides.
    for page in (gp, specialist):
        for text in ("连线前的一条", "断线期间的消息", "离线时写的回复"):
            expect(page.get_by_test_id("chat-message").filter(has_text=text)).to_have_count(1)
        expect(page.get_by_test_id("chat-pending")).to_have_count(0)
    ids = gp.eval_on_selector_all(
        "[data-testid=chat-message]", "items => items.map(i => i.dataset.messageId)"
    )
    assert len(ids) == len(set(ids)) == 3
    # The room is back too: joined again and video playing.
    room_state(gp, "joined")
    wait_remote_video(gp)
    screenshot(gp, server, "consult-chat-after-reconnect")


def test_refused_request_shows_server_field_errors(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 422")
    sign_in(page, GP)
    status, patient = server.call(
        "GET", f"/api/v1/patients/lookup?institution=SNBDH&number={PATIENT_NUMBER}", as_=GP
    )
    assert status == 200
    page.goto(f"/gp/patients/{patient['id']}/consult")
    page.wait_for_selector("[data-page=consult-request]")
    # Client-side checks first: nothing is sent while required fields are empty.
    page.get_by_test_id("consult-submit").click()
    expect(page.locator("[data-field-error=c-reason]")).to_be_visible()
    expect(page.locator("[data-field-error=c-institution]")).to_be_visible()

    page.select_option("#c-institution", label="青岛市立医院")
    page.fill("#c-reason", "复诊")
    page.fill("#c-purpose", "会诊")
    page.fill("#c-question", "下一步治疗？")
    page.fill("#c-summary", "病情稳定。")
    page.select_option("#c-method", "electronic")
    # A consent dated tomorrow: only the server knows its clock, and refuses it.
    tomorrow = datetime.now() + timedelta(days=1)
    page.fill("#c-given-at", tomorrow.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_test_id("consent-confirmed").check()
    page.get_by_test_id("consult-submit").click()
    error = page.locator("[data-field-error=c-given-at]")
    expect(error).to_contain_text("future")
    expect(page.get_by_role("alert").first).to_be_visible()
    screenshot(page, server, "consult-request-refused")
    assert "/consult" in page.url  # still on the form, nothing lost
    expect(page.locator("#c-reason")).to_have_value("复诊")


@pytest.fixture(scope="module")
def strict_server(web_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that wants every consult join re-authenticated (consult_reauth_seconds 0)."""
    data_dir = tmp_path_factory.mktemp("e2e-reauth")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIHAO_")}
    env.update(
        YIHAO_DATA_DIR=str(data_dir),
        YIHAO_SECRET_KEY=SECRET,
        YIHAO_HOST="127.0.0.1",
        YIHAO_PORT=str(port),
        YIHAO_WEB_DIR=str(web_dist),
        YIHAO_ARGON2_TIME_COST="1",
        YIHAO_ARGON2_MEMORY_KIB="64",
        YIHAO_LOG_FORMAT="text",
        YIHAO_LOG_LEVEL="WARNING",
        YIHAO_LOGIN_RATE_PER_MINUTE="1000",
        YIHAO_CONSULT_REAUTH_SECONDS="0",
    )
    live = LiveServer(
        url=f"http://127.0.0.1:{port}", backend="sqlite", env=env, log=data_dir / "server.log"
    )
    try:
        live.cli("migrate")
        live.cli("seed-demo")
        live.start()
        yield live
    finally:
        live.stop()


def test_joining_asks_for_the_password_when_the_login_is_old(
    browser: Browser, strict_server: LiveServer
) -> None:
    consult_id = api_consult(strict_server)
    watch = ConsoleWatch()
    context = browser.new_context(
        base_url=strict_server.url, viewport=TABLET, locale="zh-CN", timezone_id="Asia/Shanghai"
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        watch.watch(page)
        sign_in(page, SPECIALIST)
        page.goto(f"/consults/{consult_id}/room")
        room_state(page, "reauth")
        form = page.get_by_test_id("reauth-form")
        expect(form).to_contain_text("确认身份")
        # Client-side: nothing typed, nothing sent.
        page.get_by_test_id("reauth-submit").click()
        expect(form.get_by_role("alert")).to_contain_text("请输入密码")
        # A wrong password: the server's message, and still asking.
        page.fill("#reauth-password", "not-my-password")
        page.get_by_test_id("reauth-submit").click()
        expect(form.get_by_role("alert")).to_contain_text("wrong")
        room_state(page, "reauth")
        screenshot(page, strict_server, "consult-reauth-tablet")
        page.fill("#reauth-password", DEMO_PASSWORD)
        page.get_by_test_id("reauth-submit").click()
        room_state(page, "joined")
        expect(page.get_by_test_id("local-tile")).to_be_visible()
        # English is one click away, in the room too.
        page.get_by_test_id("lang").click()
        expect(page.get_by_test_id("leave")).to_have_text("Leave the room")
        screenshot(page, strict_server, "consult-room-tablet-en")
        page.get_by_test_id("lang").click()
    finally:
        context.close()
    assert not watch.unexpected(), f"console errors: {watch.unexpected()}"


def test_prescribing_shows_checks_rules_and_needs_an_override_reason(
    new_page: Any, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(r"status of 422")
    consult_id = api_consult(server)
    specialist: Page = new_page()
    sign_in(specialist, SPECIALIST)
    specialist.goto(f"/consults/{consult_id}/room")
    room_state(specialist, "joined")
    specialist.get_by_test_id("side-rx").click()
    # Amoxicillin for a patient allergic to penicillin, for 30 days.
    specialist.select_option("#rx-diagnosis", "I10")
    specialist.select_option("#rx-drug-0", "J01CA04")
    specialist.fill("#rx-dose-0", "500")
    specialist.select_option("#rx-frequency-0", "tid")
    specialist.fill("#rx-days-0", "30")
    specialist.fill("#rx-quantity-0", "2")
    # The prescribing rules are the server's: its field error lands on the days field.
    specialist.get_by_test_id("rx-check").click()
    expect(specialist.locator("[data-field-error=rx-days-0]")).to_contain_text("at most 7")
    specialist.fill("#rx-days-0", "7")
    specialist.get_by_test_id("rx-check").click()
    finding = specialist.get_by_test_id("rx-finding").filter(has_text="allergic")
    expect(finding).to_contain_text("严重")
    # Severe findings: signing needs a reason to override them.
    specialist.get_by_test_id("rx-sign").click()
    expect(specialist.locator("[data-field-error=rx-override]")).to_be_visible()
    specialist.fill("#rx-override", "皮试阴性，已与患者沟通风险")
    screenshot(specialist, server, "consult-prescribing-override")
    specialist.get_by_test_id("rx-sign").click()
    created = specialist.get_by_test_id("rx-created")
    expect(created).to_be_visible()
    rx_id = int(created.get_attribute("data-rx-id") or 0)
    status, rx = server.call("GET", f"/api/v1/prescriptions/{rx_id}", as_=SPECIALIST)
    assert status == 200, rx
    assert rx["content"]["override_reason"] == "皮试阴性，已与患者沟通风险"
    assert any(f["code"] == "allergy" for f in rx["findings"])
