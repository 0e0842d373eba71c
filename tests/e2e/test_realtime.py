"""Realtime in the browser: a dropped connection catches up by sequence number, once."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, Route, WebSocketRoute, expect

from tests.e2e.conftest import (
    ConsoleWatch,
    LiveServer,
    _free_port,
    inbox_count,
    screenshot,
    sign_in,
)

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


def unique_department(base: str) -> str:
    """A department name no other test of the session's shared server uses (letters only)."""
    return base + "".join(chr(0x4E00 + b * 7) for b in uuid.uuid4().bytes[:3])


def test_a_push_lost_between_nodes_reaches_the_page_through_heads(
    page: Page, server: LiveServer
) -> None:
    """A second node on the same database without shared pub/sub (on PostgreSQL, a Redis
    channel of its own): whatever it commits never reaches this page as a push — what a
    Redis outage does. The page's node announces the stream's head, and the page syncs; its
    connection never dropped."""
    sockets: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.connect_to_server()

    page.route_web_socket("**/socket.io/**", route)
    sign_in(page, "admin_qdsl")
    before = inbox_count(page)
    port = _free_port()
    other = LiveServer(
        url=f"http://127.0.0.1:{port}",
        backend=server.backend,
        env=dict(
            server.env,
            YIHAO_PORT=str(port),
            YIHAO_REDIS_CHANNEL=f"yihao-e2e-alone-{uuid.uuid4().hex[:8]}",
        ),
        log=server.log.with_name("other-node.log"),
    )
    name = unique_department("远程门诊")
    other.start()
    try:
        status, _ = other.call(
            "POST",
            f"/api/v1/institutions/{_qdsl_id(other)}/departments",
            {"name": name},
            as_="admin_qdsl",
        )
        assert status == 201
        # Within the beacon's two looks (SOCKET_HEADS_SECONDS, 1 s) and a sync.
        expect(page.get_by_test_id("inbox")).to_contain_text(f"新增科室「{name}」", timeout=5_000)
        expect(page.get_by_test_id("department-list")).to_contain_text(name)
    finally:
        other.stop()
    assert inbox_count(page) == before + 1
    assert len(sockets) == 1, "the page reconnected: it should have caught up on its socket"
    expect(page.locator(".app")).to_have_attribute("data-realtime", "live")
    screenshot(page, server, "heads-caught-up")


def test_a_write_whose_answer_was_lost_is_sent_again_and_done_once(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    """The department is added on the server, but the answer never reaches the page (the
    connection reset, as when a node dies behind nginx). The page sends it again with the
    same Idempotency-Key, hears the first answer, and says nothing of the failure."""
    keys: list[str | None] = []

    def lose_first_answer(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()  # reaches the server, which commits
            route.abort("connectionreset")
        else:
            route.continue_()

    console.allow("ERR_CONNECTION_RESET")  # Chromium's line for the reset we provoke
    name = unique_department("日间病房")
    sign_in(page, "admin_qdsl")
    page.route("**/api/v1/institutions/*/departments", lose_first_answer)
    page.fill("#department-name", name)
    page.get_by_role("button", name="新增科室").click()
    # The form says what it says after any add: done (once its repeat was answered).
    form = page.locator("form.inline-form", has=page.locator("#department-name"))
    expect(form.get_by_role("status")).to_have_text(f"已新增科室「{name}」。", timeout=20_000)
    expect(form.get_by_role("alert")).to_have_count(0)
    expect(page.locator("#department-name")).to_have_value("")
    expect(page.get_by_test_id("department-list")).to_contain_text(name)
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys
    status, body = server.call("GET", f"/api/v1/institutions/{_qdsl_id(server)}", as_="admin_qdsl")
    assert status == 200, body
    names = [d["name"] for d in body["departments"]]
    assert names.count(name) == 1, names
