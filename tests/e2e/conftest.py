"""Browser tests: Debian's Chromium driven by Playwright against a real ``yihao serve``.

One server per backend for the whole session (SQLite; PostgreSQL + Redis in the
integration tier), started as a subprocess from the real CLI on a free port, migrated
and seeded with the demo network, serving the built ``web/dist``. The client is built
once per session when ``web/dist`` is missing or older than its sources.

Every page is watched: a console error or an uncaught exception fails the test, except
the few a test declares it expects (a refused login is logged by Chromium as a failed
resource load). Screenshots go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    sync_playwright,
)

from server.seed import DEMO_PASSWORD
from tests.conftest import (
    INTEGRATION,
    REDIS_URL,
    SECRET,
    _create_pg_database,
    _drop_pg_database,
    run_async,
)
from tests.helpers import directory_lock

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
DIST = WEB / "dist"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
# Short-lived access tokens, so a test sees the client renew them before expiry.
ACCESS_TOKEN_TTL = 30
LAPTOP: ViewportSize = {"width": 1366, "height": 860}
TABLET: ViewportSize = {"width": 820, "height": 1180}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """All browser tests on one worker: the live servers are per session, and so costly."""
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.xdist_group("e2e"))


# --- the web client -----------------------------------------------------------------


def _newest_source() -> float:
    sources = [WEB / name for name in ("index.html", "package.json", "package-lock.json")]
    sources += [WEB / "vite.config.ts", WEB / "tsconfig.json"]
    sources += [p for p in (WEB / "src").rglob("*") if p.is_file()]
    return max(p.stat().st_mtime for p in sources if p.exists())


@pytest.fixture(scope="session")
def web_dist() -> Path:
    """The built client; rebuilt when missing or stale (npm must be installed)."""
    with directory_lock(WEB):  # one build at a time, whatever the xdist worker
        index = DIST / "index.html"
        if index.exists() and index.stat().st_mtime >= _newest_source():
            return DIST
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is not installed: the web client cannot be built")
        if not (WEB / "node_modules").is_dir():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True)
        subprocess.run([npm, "run", "build"], cwd=WEB, check=True)
    return DIST


# --- the server -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A running ``yihao serve`` and what a test needs to reach it."""

    url: str
    backend: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        """Run the ``yihao`` CLI against this server's database; returns stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            pytest.fail(f"yihao {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def start(self) -> None:
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)  # polling a starting process: there is no event to await
        pytest.fail(f"the server did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def call(
        self, method: str, path: str, body: Any = None, as_: str | None = None
    ) -> tuple[int, Any]:
        """Call the API from the test (outside the browser), signed in as a persona."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if as_ is not None:
            headers["Authorization"] = f"Bearer {self.token(as_)}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                raw = answer.read()
                return answer.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def token(self, username: str) -> str:
        status, body = self.call(
            "POST", "/api/v1/auth/login", {"username": username, "password": DEMO_PASSWORD}
        )
        assert status == 200, body
        return str(body["access_token"])


def _backends() -> list[Any]:
    params: list[Any] = ["sqlite"]
    if INTEGRATION:
        params.append(pytest.param("postgres", marks=pytest.mark.integration))
    return params


@pytest.fixture(scope="session", params=_backends())
def server(
    request: pytest.FixtureRequest, web_dist: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    backend = str(request.param)
    data_dir = tmp_path_factory.mktemp(f"e2e-{backend}")
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
        YIHAO_ACCESS_TOKEN_TTL_SECONDS=str(ACCESS_TOKEN_TTL),
        # No booking reminders arriving in another test's inbox count.
        YIHAO_BOOKING_JOB_INTERVAL_SECONDS="0",
        YIHAO_VISIT_JOB_INTERVAL_SECONDS="0",
        YIHAO_PAYMENTS_SANDBOX="true",
    )
    database = None
    if backend == "postgres":
        # A database of its own: the other tests truncate the session's shared one.
        database = f"yihao_e2e_{uuid.uuid4().hex[:10]}"
        env.update(
            YIHAO_DATABASE_URL=run_async(_create_pg_database, database),
            YIHAO_REDIS_URL=REDIS_URL,
            YIHAO_REDIS_CHANNEL=f"yihao-e2e-{uuid.uuid4().hex[:8]}",
            YIHAO_CHECKPOINT_KEY_FILE=str(request.getfixturevalue("checkpoint_key_file")),
        )
    live = LiveServer(
        url=f"http://127.0.0.1:{port}", backend=backend, env=env, log=data_dir / "server.log"
    )
    try:
        live.cli("migrate")
        live.cli("seed-demo")
        live.start()
        yield live
    finally:
        live.stop()
        if database is not None:
            run_async(_drop_pg_database, database)


# --- the browser ----------------------------------------------------------------------


# Module scope, not session: while Playwright's sync API is open it keeps an event loop
# running in this thread, and the async tests of other modules need the thread's loop.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class ConsoleWatch:
    """Console errors and uncaught exceptions of the pages of one test."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.refused: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    def watch(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        # Chromium's console line for a refused request omits the URL; record it beside.
        page.on(
            "response",
            lambda r: (
                self.refused.append(f"{r.request.method} {r.url} {r.status}")
                if r.status >= 400
                else None
            ),
        )

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def allow(self, pattern: str) -> None:
        """Declare an error the test provokes on purpose (e.g. a refused request)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def console() -> ConsoleWatch:
    return ConsoleWatch()


@pytest.fixture
def new_page(browser: Browser, server: LiveServer, console: ConsoleWatch) -> Iterator[Any]:
    """Open pages in fresh browser contexts (one per user); all are watched."""
    contexts: list[BrowserContext] = []

    def open_page(viewport: ViewportSize = LAPTOP) -> Page:
        context = browser.new_context(
            base_url=server.url, viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai"
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        console.watch(page)
        return page

    yield open_page
    for context in contexts:
        context.close()
    unexpected = console.unexpected()
    assert not unexpected, f"console errors: {unexpected}; refused requests: {console.refused}"


@pytest.fixture
def page(new_page: Any) -> Page:
    return new_page()  # type: ignore[no-any-return]


def screenshot(page: Page, server: LiveServer, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if server.backend == "sqlite" else f"-{server.backend}"
    path = SCREENSHOTS / f"{name}{suffix}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, username: str, password: str = DEMO_PASSWORD) -> None:
    """Sign in through the login form and wait for the home page to be live."""
    page.goto("/login")
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("[data-home]")
    wait_live(page)


def wait_live(page: Page) -> None:
    """The realtime connection is up and caught up."""
    page.wait_for_selector(".app[data-realtime=live]")


def inbox_count(page: Page) -> int:
    """How many events the page's inbox holds (its badge; the list itself may be cut)."""
    count: str = page.get_by_test_id("inbox").locator(".count").inner_text()
    return int(count)
