"""The patient app (一号通) in a real browser, at 390×844 and at 1280×800: the shell (a
header of at most 56 px, five tabs of at least 44 px, reachable on every page), no page that
scrolls sideways, the home's cards, 我的, the consult opinion in words, the access log one
line per session, the consent page's plain words, the collapsed record; installable (the
manifest, the service worker) and the offline notice.

Screenshots: ``test-artifacts/screenshots/patient-app/patient-<page>-<phone|laptop>.png``
(the set in ``docs/screenshots/`` is a copy of one run).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from tests.conftest import run_async
from tests.e2e.conftest import SCREENSHOTS, ConsoleWatch, LiveServer, sign_in, wait_live
from tests.e2e.pages_support import me, prescribe, request_consult
from tests.helpers import SocketClient

pytestmark = pytest.mark.e2e

PHONE: ViewportSize = {"width": 390, "height": 844}
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
SIZES = {"phone": PHONE, "laptop": LAPTOP}
SHOTS = SCREENSHOTS / "patient-app"
TABS = [
    ("首页", "/patient"),
    ("预约", "/patient/book"),
    ("就诊", "/patient/visits"),
    ("消息", "/patient/messages"),
    ("我的", "/patient/me"),
]
# Every patient page: this slice's, and the other slices' (checked wherever they are served).
PAGES = [
    ("home", "/patient"),
    ("me", "/patient/me"),
    ("record", "/patient/record"),
    ("care", "/patient/care"),
    ("consults", "/patient/consults"),
    ("consents", "/patient/consents"),
    ("access", "/patient/access"),
    ("presence", "/patient/presence"),
    ("triage", "/patient/triage"),
    ("book", "/patient/book"),
    ("appointments", "/patient/appointments"),
    ("visits", "/patient/visits"),
    ("prescriptions", "/patient/prescriptions"),
    ("orders", "/patient/orders"),
    ("messages", "/patient/messages"),
    ("notifications", "/patient/settings/notifications"),
]
NO_SIDEWAYS = "document.documentElement.scrollWidth <= window.innerWidth"
OPINION = {
    "findings": "心电图未见缺血改变，动态血压平均 148/92 mmHg。",
    "diagnostic_opinion": "原发性高血压 2 级，控制不佳；暂不支持冠心病。",
    "treatment_advice": "氨氯地平加量至 10mg 每日一次，两周后社区复测血压。",
    "refer": False,
}


def shot(page: Page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"patient-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def consult_with_opinion(server: LiveServer) -> dict[str, Any]:
    """gp_zhang's consult for patient_wang, answered by dr_li, who opens the session (a real
    Socket.IO client) and signs the opinion."""
    consult = request_consult(server)
    when = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    status, body = server.call(
        "POST", f"/api/v1/consults/{consult['id']}/accept", {"scheduled_at": when}, as_="dr_li"
    )
    assert status == 200, body
    token = server.token("dr_li")

    async def join_and_sign() -> tuple[dict[str, Any], tuple[int, Any]]:
        host = SocketClient()
        await host.connect(server.url, token)
        try:
            ack = await host.call("consult.join", {"consult_id": consult["id"]}, timeout=10)
            # Signed while the host is in the session (the opinion needs one).
            signed = await asyncio.to_thread(
                server.call, "POST", f"/api/v1/consults/{consult['id']}/opinion", OPINION, "dr_li"
            )
            return ack, signed
        finally:
            await host.close()

    ack, (status, body) = run_async(join_and_sign)
    assert ack["ok"], ack
    assert status == 201, body
    return consult


def check_frame(page: Page, size: str) -> None:
    """No sideways scroll; the header is compact; the five tabs are visible, large enough,
    inside the viewport and not covering the page's end."""
    assert page.evaluate(NO_SIDEWAYS), page.url
    header = page.locator(".p-header").bounding_box()
    assert header is not None and header["height"] <= 56, header
    nav = page.get_by_test_id("patient-nav")
    expect(nav).to_be_visible()
    viewport = page.viewport_size
    assert viewport is not None
    for label, _ in TABS:
        tab = nav.get_by_role("link", name=label, exact=True)
        expect(tab).to_be_visible()
        box = tab.bounding_box()
        assert box is not None, label
        assert box["height"] >= 44 and box["width"] >= 44, (label, box)
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], (label, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (label, box)
    if size == "phone":  # the bar sits at the bottom edge
        bar = nav.bounding_box()
        assert bar is not None and abs(bar["y"] + bar["height"] - viewport["height"]) <= 1


@pytest.mark.parametrize("size", ["phone", "laptop"])
def test_every_patient_page_fits_and_keeps_the_tabs_in_reach(
    new_page: Any, server: LiveServer, size: str
) -> None:
    consult = consult_with_opinion(server) if size == "phone" else None
    page: Page = new_page(SIZES[size])
    sign_in(page, "patient_wang")
    pages = [*PAGES]
    if consult:
        pages.append(("consult", f"/patient/consults/{consult['id']}"))
    else:
        _, mine = server.call("GET", "/api/v1/consults", as_="patient_wang")
        pages += (
            [("consult", f"/patient/consults/{mine['items'][0]['id']}")] if mine["items"] else []
        )
    for name, path in pages:
        page.goto(path)
        wait_live(page)
        page.locator(".p-main > *").first.wait_for()
        page.wait_for_timeout(300)  # the cards' answers
        check_frame(page, size)
        if page.locator("[data-page=not-found]").count() == 0:
            shot(page, f"{name}-{size}")
    # Each tab goes where it says, and says it is the current one.
    page.goto("/patient/me")
    for label, path in TABS:
        tab = page.get_by_test_id("patient-nav").get_by_role("link", name=label, exact=True)
        tab.click()
        expect(page).to_have_url(re.compile(re.escape(path) + "$"))
        expect(tab).to_have_attribute("aria-current", "page")
        assert page.evaluate(NO_SIDEWAYS)


def test_home_me_and_the_consult_opinion_in_words(new_page: Any, server: LiveServer) -> None:
    consult = consult_with_opinion(server)
    rx = prescribe(server)
    page: Page = new_page(PHONE)
    sign_in(page, "patient_wang")
    expect(page.locator("h1")).to_contain_text("您好，王建国")
    # A prescription on its way: its diagnosis, where it stands and the chosen pharmacy.
    waiting = page.get_by_test_id("home-rx").locator(f"[data-rx-id='{rx['id']}']")
    expect(waiting).to_contain_text("原发性高血压")
    expect(waiting).to_contain_text("待审核")
    expect(waiting).to_contain_text("海川大药房")
    expect(waiting.get_by_role("link")).to_have_attribute(
        "href", f"/patient/prescriptions/{rx['id']}"
    )
    quick = page.get_by_test_id("quick-actions")
    for label, path in [("智能导诊", "/patient/triage"), ("预约挂号", "/patient/book"),
                        ("我的处方", "/patient/prescriptions"), ("我的订单", "/patient/orders")]:  # fmt: skip
        expect(quick.get_by_role("link", name=label)).to_have_attribute("href", path)
    expect(page.get_by_test_id("home-next")).to_be_visible()
    expect(page.get_by_test_id("inbox")).to_contain_text("未读消息")
    # The opinion is signed: an unread notice is counted on the home.
    status, inbox = server.call("GET", "/api/v1/inbox?unread=true", as_="patient_wang")
    assert status == 200
    expect(page.get_by_test_id("inbox")).to_contain_text(f"{inbox['unread']} 条未读")

    page.get_by_test_id("patient-nav").get_by_role("link", name="我的", exact=True).click()
    expect(page.get_by_test_id("me-profile")).to_contain_text("王建国")
    for link in ["record", "consults", "care", "presence", "consents", "access", "notifications"]:
        expect(page.locator(f"[data-link={link}]")).to_be_visible()
    page.locator("[data-link=consults]").click()
    card = page.locator(f"[data-testid=patient-consult][data-consult-id='{consult['id']}']")
    expect(card).to_contain_text("已出具意见")
    expect(card).to_contain_text("青岛市立医院")
    card.click()
    opinion = page.get_by_test_id("consult-opinion")
    expect(opinion.locator("[data-part=findings]")).to_have_text(OPINION["findings"])
    expect(opinion.locator("[data-part=diagnosis]")).to_have_text(OPINION["diagnostic_opinion"])
    expect(opinion.locator("[data-part=advice]")).to_have_text(OPINION["treatment_advice"])
    expect(opinion.locator("[data-part=refer]")).to_contain_text("不需要转诊")
    expect(opinion).to_contain_text("电子签名已核验")
    expect(page.get_by_test_id("consult-facts")).to_contain_text("明确是否需调整降压方案")
    assert page.evaluate(NO_SIDEWAYS)

    # Signing out lives in 我的.
    page.get_by_test_id("patient-nav").get_by_role("link", name="我的", exact=True).click()
    page.get_by_test_id("logout").click()
    expect(page).to_have_url(re.compile(r"/login$"))


def test_access_log_consents_and_record_read_plainly(new_page: Any, server: LiveServer) -> None:
    pid = me(server, "patient_wang")["patient_id"]
    # gp_zhang (who cares for him) opens his record page: summary and timeline, one session.
    for path in ("summary", "timeline"):
        status, _ = server.call("GET", f"/api/v1/patients/{pid}/{path}", as_="gp_zhang")
        assert status == 200
    status, _ = server.call("GET", f"/api/v1/patients/{pid}/summary", as_="pharmacist_chen")
    assert status in (403, 404)
    status, grouped = server.call(
        "GET", f"/api/v1/patients/{pid}/access-log?grouped=1&limit=50", as_="patient_wang"
    )
    assert status == 200

    page: Page = new_page(PHONE)
    sign_in(page, "patient_wang")
    page.goto("/patient/record")  # his own read: never in his access log
    expect(page.get_by_test_id("lab-row").first).to_be_visible()
    page.goto("/patient/access")
    rows = page.get_by_test_id("access-row")
    expect(rows).to_have_count(len(grouped["items"]))
    refused = rows.filter(has_text="陈红").first
    expect(refused).to_have_attribute("data-kind", "denied")
    expect(refused.get_by_test_id("access-kind")).to_have_text("拒绝")
    doctor = rows.filter(has_text="张伟").first
    expect(doctor.get_by_test_id("access-kind")).to_have_text("查阅")
    # One session holds both reads (and any earlier test's reads as 张伟 on the shared server
    # within the half hour): the page says the count the server grouped.
    session = next(i for i in grouped["items"] if i["user_name"] == "张伟" and i["kind"] == "read")
    assert session["count"] >= 2, session
    expect(doctor.get_by_test_id("access-count")).to_have_text(f"{session['count']} 次")
    expect(doctor.locator("[data-reason=care_relationship]")).to_have_text("诊疗关系")
    # The log is paged (50 sessions a page): older pages until an upload is shown (the demo
    # seed's, if the shared server's other tests have read him since).
    upload = page.locator("[data-testid=access-row][data-kind=write]").first
    more = page.get_by_test_id("access-more")
    while upload.count() == 0 and more.count() > 0:
        shown = rows.count()
        more.click()
        expect(rows).not_to_have_count(shown)
    expect(upload.get_by_test_id("access-kind")).to_have_text("上传")
    expect(page.locator("[data-testid=access-row] [data-reason=self]")).to_have_count(0)
    assert page.evaluate(NO_SIDEWAYS)

    page.goto("/patient/consents")
    defaults = page.get_by_test_id("consent-defaults")
    expect(defaults).to_contain_text("默认谁能看到我的病历")
    expect(defaults.locator("[data-who=never]")).to_contain_text("药师只看到处方上的信息")
    expect(defaults.locator("[data-who=emergency]")).to_contain_text("事后审核")
    care = page.get_by_test_id("consent-care")
    expect(care.get_by_test_id("consent-care-row").first).to_be_visible()
    assert page.evaluate(NO_SIDEWAYS)

    # The record: sections as cards that open, the history collapsed; short on a phone.
    page.goto("/patient/record")
    expect(page.get_by_test_id("my-labs")).to_have_attribute("open", "")
    timeline = page.get_by_test_id("my-timeline")
    expect(timeline).not_to_have_attribute("open", "")
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 3000, height
    timeline.locator("summary").click()
    expect(timeline.get_by_test_id("timeline-row").first).to_be_visible()
    assert page.evaluate(NO_SIDEWAYS)


def test_installable_with_an_offline_notice(
    new_page: Any, server: LiveServer, console: ConsoleWatch
) -> None:
    page: Page = new_page(PHONE)
    sign_in(page, "patient_wang")
    href = page.locator("link[rel=manifest]").get_attribute("href")
    assert href == "/manifest.webmanifest"
    manifest = page.evaluate("fetch('/manifest.webmanifest').then((r) => r.json())")
    assert (manifest["name"], manifest["start_url"], manifest["display"]) == (
        "一号通",
        "/patient",
        "standalone",
    )
    scope = page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
    assert scope == f"{server.url}/"
    # Once the worker controls the page, what the page loads is kept for offline use.
    page.reload()
    page.wait_for_function("navigator.serviceWorker.controller !== null")
    wait_live(page)
    page.wait_for_timeout(500)
    kept = page.evaluate(
        "caches.keys().then((ks) => Promise.all(ks.map((k) => caches.open(k).then((c) => c.keys()))))"
        ".then((lists) => lists.flat().map((r) => new URL(r.url).pathname))"
    )
    assert "/" in kept and any(p.startswith("/assets/") for p in kept), kept
    assert not [p for p in kept if p.startswith(("/api", "/fhir", "/socket.io"))], kept

    # Offline: the app still opens, and says what the user sees.
    console.allow(r"ERR_INTERNET_DISCONNECTED|net::ERR_|Failed to fetch|WebSocket|status of 50")
    page.context.set_offline(True)
    page.reload()
    banner = page.get_by_test_id("offline-banner")
    expect(banner).to_have_text("网络已断开，显示的是离线内容")
    expect(page.get_by_test_id("patient-nav")).to_be_visible()
    assert page.evaluate(NO_SIDEWAYS)
    shot(page, "offline-phone")
    page.context.set_offline(False)
    expect(banner).to_have_count(0)
