"""The app shell in a real browser: sign-in per role, errors, language, TOTP, token refresh."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Page, expect

from server.identity.totp import totp_code
from server.seed import DEMO_PASSWORD
from tests.e2e.conftest import (
    ACCESS_TOKEN_TTL,
    TABLET,
    ConsoleWatch,
    LiveServer,
    screenshot,
    sign_in,
    wait_live,
)

pytestmark = pytest.mark.e2e

REFUSED = r"status of 40[139]"

HOMES = [
    # persona, home path, a text the home shows that comes from the server
    ("dr_li", "/specialist", "李明", "青岛市立医院"),
    ("gp_zhang", "/gp", "张伟", None),
    ("pharmacist_chen", "/pharmacist", "陈红", None),
    ("nurse_he", "/nurse", "何雪", "青岛市立医院"),
    ("patient_wang", "/patient", None, None),
    ("admin_qdsl", "/institution-admin", "高峰", "青岛市立医院"),
    ("admin", "/platform-admin", "平台管理员", "青岛市立医院"),
]


@pytest.mark.parametrize(("username", "home", "name", "institution"), HOMES)
def test_each_role_signs_in_to_its_home(
    page: Page,
    server: LiveServer,
    username: str,
    home: str,
    name: str | None,
    institution: str | None,
) -> None:
    status, me = server.call("GET", "/api/v1/me", as_=username)
    assert status == 200
    sign_in(page, username)

    expect(page).to_have_url(re.compile(re.escape(home) + "$"))
    expect(page.locator("[data-home]")).to_have_attribute("data-home", me["role"])
    expect(page.get_by_test_id("who")).to_contain_text(me["name"] or me["username"])
    if name:
        expect(page.locator("h1")).to_contain_text(name)
    if institution:
        expect(page.locator("main")).to_contain_text(institution)
    expect(page.get_by_test_id("inbox")).to_be_visible()
    screenshot(page, server, f"home-{me['role']}")

    # Another role's page sends the user back to their own home.
    other = "/platform-admin" if home != "/platform-admin" else "/gp"
    page.goto(other)
    expect(page).to_have_url(re.compile(re.escape(home) + "$"))

    if me["role"] == "patient":  # the patient app signs out from 我的
        page.get_by_test_id("patient-nav").get_by_role("link", name="我的", exact=True).click()
    page.get_by_test_id("logout").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    # The session is over on the server too: the old deep link asks for a login again.
    page.goto(home)
    expect(page).to_have_url(re.compile(r"/login\?next="))


def test_wrong_password_shows_the_servers_message(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(REFUSED)
    response = page.goto("/login")
    # The client runs under the server's strict policy (a violation would be a console error).
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    expect(page.locator("h2")).to_have_text("登录")

    # Client-side checks first: nothing is sent for an empty form.
    page.click("button[type=submit]")
    expect(page.locator("[data-field-error=login-username]")).to_have_text("必填")
    expect(page.locator("[data-field-error=login-password]")).to_have_text("必填")

    page.fill("#login-username", "dr_li")
    page.fill("#login-password", "not-the-password")
    with page.expect_response("**/api/v1/auth/login") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    detail = answer.value.json()["detail"]
    alert = page.get_by_role("alert")
    expect(alert).to_have_text(detail)
    assert "{" not in alert.inner_text()
    expect(page).to_have_url(re.compile(r"/login$"))
    screenshot(page, server, "login-wrong-password")


def test_english_switch_is_remembered(page: Page, server: LiveServer) -> None:
    page.goto("/login")
    screenshot(page, server, "login")
    page.get_by_test_id("lang").click()
    expect(page.locator("h2")).to_have_text("Sign in")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    sign_in(page, "gp_zhang")
    expect(page.locator("nav")).to_contain_text("Inbox")
    page.reload()
    wait_live(page)
    expect(page.locator("h1")).to_contain_text("Hello, 张伟")
    screenshot(page, server, "home-gp-english")
    page.get_by_test_id("lang").click()
    expect(page.locator("h1")).to_contain_text("您好，张伟")


def test_totp_field_appears_when_the_server_asks(
    page: Page, server: LiveServer, console: ConsoleWatch
) -> None:
    console.allow(REFUSED)
    uri = server.cli("user", "totp", "--username", "gp_liu").strip().splitlines()[-1]
    secret = parse_qs(urlparse(uri).query)["secret"][0]

    page.goto("/login")
    page.fill("#login-username", "gp_liu")
    page.fill("#login-password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#login-totp")).to_be_focused()
    expect(page.get_by_role("alert")).to_contain_text("动态验证码")
    screenshot(page, server, "login-totp")

    page.fill("#login-totp", "12345")
    page.click("button[type=submit]")
    expect(page.locator("[data-field-error=login-totp]")).to_be_visible()

    page.fill("#login-totp", totp_code(secret))
    page.click("button[type=submit]")
    page.wait_for_selector("[data-home=gp]")
    expect(page.get_by_test_id("profile")).to_contain_text("是")  # two-factor: yes


def test_deep_link_survives_login_and_reload_on_a_tablet(new_page: Any, server: LiveServer) -> None:
    page: Page = new_page(TABLET)
    page.goto("/inbox")
    expect(page).to_have_url(re.compile(r"/login\?next=(%2F|/)inbox$"))
    page.fill("#login-username", "dr_wang")
    page.fill("#login-password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("[data-page=inbox]")
    page.reload()
    page.wait_for_selector("[data-page=inbox]")
    wait_live(page)
    page.goto("/no/such/page")
    expect(page.locator("[data-page=not-found]")).to_be_visible()
    page.goto("/")
    page.wait_for_selector("[data-home=specialist]")
    screenshot(page, server, "home-specialist-tablet")


def test_access_token_is_renewed_before_it_expires(page: Page, server: LiveServer) -> None:
    sign_in(page, "pharmacist_zhou")
    with page.expect_response("**/api/v1/auth/refresh", timeout=ACCESS_TOKEN_TTL * 1000) as renewed:
        pass
    assert renewed.value.status == 200
    # Past the first token's lifetime, the page still reads the API without a new login.
    page.wait_for_timeout(ACCESS_TOKEN_TTL * 1000 * 0.3)
    page.get_by_role("link", name="消息").click()
    page.wait_for_selector("[data-page=inbox]")
    page.get_by_role("link", name="首页").click()
    expect(page.get_by_test_id("institution")).to_contain_text("药房")
    expect(page.get_by_role("alert")).to_have_count(0)
