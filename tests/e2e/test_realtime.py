"""Realtime in the browser: a dropped connection catches up by sequence number, once."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from tests.e2e.conftest import LiveServer, inbox_count, screenshot, sign_in

pytestmark = pytest.mark.e2e


class NetworkCut:
    """Drops the page's Socket.IO connections and refuses new ones until restored."""

    def __init__(self) -> None:
        self.online = True
        self.open: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    def route(self, ws: WebSocketRoute) -> None:
        if not self.online:
            ws.close()
            return
        self.open.append((ws, ws.connect_to_server()))

    def drop(self) -> None:
        self.online = False
        for page_side, server_side in self.open:
            page_side.close()
            server_side.close()
        self.open.clear()

    def restore(self) -> None:
        self.online = True


def inbox_keys(page: Page) -> list[str]:
    keys: list[str] = page.eval_on_selector_all(
        ".inbox-item", "items => items.map(i => i.dataset.stream + '#' + i.dataset.seq)"
    )
    return keys


def test_reconnect_catches_up_without_duplicates(page: Page, server: LiveServer) -> None:
    cut = NetworkCut()
    page.route_web_socket("**/socket.io/**", cut.route)
    sign_in(page, "admin_qdsl")
    institution = page.locator(".app")

    # Live: a department added in this page arrives as a pushed event.
    page.fill("#department-name", "互联网医院")
    page.get_by_role("button", name="新增科室").click()
    expect(page.get_by_test_id("inbox")).to_contain_text("新增科室「互联网医院」")
    before = inbox_count(page)
    # Something typed stays typed: the page is never reloaded.
    page.fill("#user-name", "未提交")

    cut.drop()
    expect(institution).to_have_attribute("data-realtime", "reconnecting")

    # While this page is away, another session of the same institution changes things.
    status, _ = server.call(
        "POST",
        f"/api/v1/institutions/{_qdsl_id(server)}/departments",
        {"name": "日间手术中心"},
        as_="admin_qdsl",
    )
    assert status == 201
    status, _ = server.call(
        "POST",
        "/api/v1/users",
        {
            "username": "nurse_e2e",
            "password": "Nursing@2026",
            "role": "nurse",
            "institution": "QDSL",
            "department": "日间手术中心",
        },
        as_="admin_qdsl",
    )
    assert status == 201

    cut.restore()
    expect(institution).to_have_attribute("data-realtime", "live", timeout=15_000)
    inbox = page.get_by_test_id("inbox")
    expect(inbox).to_contain_text("新增科室「日间手术中心」")
    expect(inbox).to_contain_text("新成员加入：护士")
    # The department list and account table caught up too, without a reload.
    expect(page.get_by_test_id("department-list")).to_contain_text("日间手术中心")
    expect(page.locator("tr[data-username=nurse_e2e]")).to_be_visible()
    expect(page.locator("#user-name")).to_have_value("未提交")

    assert inbox_count(page) == before + 2  # exactly the two missed events

    # A second drop with nothing missed brings nothing new and nothing twice.
    cut.drop()
    expect(institution).to_have_attribute("data-realtime", "reconnecting")
    cut.restore()
    expect(institution).to_have_attribute("data-realtime", "live", timeout=15_000)
    screenshot(page, server, "reconnect-caught-up")

    # The whole inbox (an in-app navigation, not a reload): every event once.
    page.get_by_role("link", name="消息").click()
    page.wait_for_selector("[data-page=inbox]")
    keys = inbox_keys(page)
    assert len(keys) == before + 2
    assert len(keys) == len(set(keys)), "an event was shown twice"
    expect(page.locator(".inbox-item", has_text="互联网医院")).to_have_count(1)
    expect(page.locator(".inbox-item", has_text="日间手术中心")).to_have_count(1)
    screenshot(page, server, "inbox")


def _qdsl_id(server: LiveServer) -> int:
    status, body = server.call("GET", "/api/v1/institutions", as_="admin_qdsl")
    assert status == 200
    return int(next(i["id"] for i in body["items"] if i["code"] == "QDSL"))
