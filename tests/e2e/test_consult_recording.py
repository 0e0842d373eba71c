"""The consult room's recording controls against the server's recorder (recording contract)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import LiveServer, screenshot, sign_in
from tests.e2e.test_consult_room import (
    GP,
    SPECIALIST,
    api_consult,
    enter_room_together,
    wait_remote_video,
)

pytestmark = pytest.mark.e2e


def test_recording_needs_everyones_consent_and_shows_the_badge(
    new_page: Any, server: LiveServer
) -> None:
    consult_id = api_consult(server)
    specialist: Page = new_page()
    gp: Page = new_page()
    sign_in(specialist, SPECIALIST)
    sign_in(gp, GP)
    enter_room_together(gp, specialist, consult_id)
    wait_remote_video(gp)
    # The server speaks the contract (presence carries `kind`): the recording bar shows.
    bar = specialist.get_by_test_id("recording-bar")
    expect(bar).to_be_visible()
    # Not everyone agreed yet: the host's start is refused, with the server's reason.
    specialist.get_by_test_id("recording-agree").click()
    specialist.get_by_test_id("recording-start").click()
    expect(bar.get_by_role("alert")).to_be_visible()
    # The gp is asked, and agrees; now the host starts it.
    expect(gp.get_by_test_id("recording-prompt")).to_be_visible()
    gp.get_by_test_id("recording-agree").click()
    expect(gp.get_by_test_id("recording-consent")).to_be_checked()
    specialist.get_by_test_id("recording-start").click()
    for page in (gp, specialist):
        expect(page.get_by_test_id("recording-badge")).to_have_text("● 录制中", timeout=20_000)
        # The recorder is a member without a tile: one remote tile each.
        expect(page.get_by_test_id("remote-tile")).to_have_count(1)
    screenshot(specialist, server, "consult-recording")
    specialist.wait_for_timeout(2_000)  # a little media in the file
    specialist.get_by_test_id("recording-stop").click()
    for page in (gp, specialist):
        expect(page.get_by_test_id("recording-badge")).to_have_count(0, timeout=20_000)
    # The file is finished, hashed, and holds the session's media.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = server.call(
            "GET", f"/api/v1/consults/{consult_id}/recordings", as_=SPECIALIST
        )
        assert status == 200, body
        if body["items"][0]["state"] in ("finished", "failed"):
            break
        specialist.wait_for_timeout(500)  # the worker closes the file on its own clock
    recording = body["items"][0]
    assert recording["state"] == "finished", recording
    assert recording["duration_seconds"] > 1 and recording["bytes"] > 10_000, recording
