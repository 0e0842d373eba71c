"""The web client's retry policy for writes (``web/src/api/writes.ts``), run in Node.

A write that died with its node is sent again, with the same Idempotency-Key, after a
network error, a 502/503/504 or a 409 ``idempotency_in_progress``: 0.5, 1, 2, 4, 4, 4 s
apart (a server's Retry-After honoured, up to 8 s), and given up (the user told) when the
waiting would pass 16 s. Every other answer is final, and an aborted request (the session
ended) is never sent again. The module is transpiled by the web client's own TypeScript.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from tests.test_web_contract import ROOT, WEB, npx

SCRIPT = ROOT / "tests" / "web_retry.mjs"
WRITES = WEB / "src" / "api" / "writes.ts"
NOW = 1_796_000_000_000  # ms: a fixed "now" for the Retry-After dates
NETWORK = {"kind": "network"}


def answer(status: int, code: str | None = None, retry_after: str | None = None) -> dict[str, Any]:
    return {"kind": "answer", "status": status, "code": code, "retryAfter": retry_after}


def delays(*cases: tuple[dict[str, Any], int, int]) -> tuple[list[int | None], str]:
    """retryDelay(outcome, attempt, waited, NOW) for each case, and one clientId()."""
    found, ident, _ = run_writes(*cases)
    return found, ident


def run_writes(*cases: tuple[dict[str, Any], int, int]) -> tuple[list[int | None], str, str]:
    """The delays, a clientId(), and a clientId() made without crypto.randomUUID."""
    npx()  # the web client's node_modules, installed if missing
    node = shutil.which("node")
    assert node is not None, "node is needed on PATH"
    result = subprocess.run(
        [node, str(SCRIPT), str(WRITES), str(WEB)],
        input=json.dumps([[*case, NOW] for case in cases]),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    out = json.loads(result.stdout)
    return out["delays"], out["id"], out["insecureId"]


def test_a_write_that_died_with_its_node_is_sent_again_with_back_off() -> None:
    found, _ = delays(
        (NETWORK, 0, 0),
        (answer(502), 1, 500),
        (answer(503), 2, 1500),
        (answer(504), 3, 3500),
        (answer(409, "idempotency_in_progress"), 4, 7500),
        (NETWORK, 9, 8000),  # the back-off stays at its cap
    )
    assert found == [500, 1000, 2000, 4000, 4000, 4000]


def test_it_gives_up_after_about_fifteen_seconds_of_waiting() -> None:
    """A node that never comes back: the whole schedule, to the try that tells the user."""
    schedule, waited = [], 0
    for attempt in range(20):
        [delay], _ = delays((NETWORK, attempt, waited))
        if delay is None:
            break
        schedule.append(delay)
        waited += delay
    assert schedule == [500, 1000, 2000, 4000, 4000, 4000]
    assert waited == 15_500  # seven tries in all, then the error reaches the user


def test_final_answers_and_aborted_requests_are_not_sent_again() -> None:
    found, _ = delays(
        ({"kind": "aborted"}, 0, 0),
        (answer(201), 0, 0),
        (answer(204), 0, 0),
        (answer(409, "slot_full"), 0, 0),
        (answer(422, "idempotency_key_reused"), 0, 0),
        (answer(500), 0, 0),
        (answer(401, "token_expired"), 0, 0),
    )
    assert found == [None] * 7


def test_retry_after_is_honoured_within_its_cap() -> None:
    in_three = format_datetime(datetime.fromtimestamp(NOW / 1000 + 3, UTC), usegmt=True)
    found, client_id = delays(
        (answer(503, retry_after="2"), 0, 0),  # longer than the back-off: the server's
        (answer(409, "idempotency_in_progress", "1"), 2, 0),  # shorter: the back-off
        (answer(503, retry_after="120"), 0, 0),  # capped
        (answer(503, retry_after=in_three), 0, 0),  # an HTTP date
        (answer(503, retry_after="soon"), 0, 0),  # not understood: the back-off
    )
    assert found == [2000, 2000, 8000, 3000, 500]
    # The key sent with every try of a write: what the server takes (1–100 printable ASCII).
    assert len(client_id) == 32 and client_id.isalnum()


def test_ids_are_made_outside_a_secure_context_too() -> None:
    """Over plain HTTP on a LAN address the browser has no crypto.randomUUID: every write
    still gets its key (128 random bits, 32 hex digits)."""
    _, secure, insecure = run_writes()
    assert re.fullmatch(r"[0-9a-f]{32}", secure), secure
    assert re.fullmatch(r"[0-9a-f]{32}", insecure), insecure
    assert secure != insecure
