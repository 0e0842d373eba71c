"""Property-based fuzzing of the REST API from its own OpenAPI document (schemathesis).

The real app listens on a real port (aiohttp's runner); schemathesis generates
requests for every operation of ``/api/openapi.json`` — valid and invalid
bodies, queries and path ids — sent with the tokens of a few personas, and each
answer is checked: never a 5xx, and a documented answer's body and content type
conform to the document. ``YIHAO_FUZZ_EXAMPLES`` sets the examples per operation
(``make test``: 5; ``make fuzz``: 100).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from server.app import OPENAPI, create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.seed import DEMO_PASSWORD, seed_demo

EXAMPLES = int(os.environ.get("YIHAO_FUZZ_EXAMPLES", "5"))
PERSONAS = ("gp_zhang", "dr_li", "patient_sun", "pharmacist_chen", "admin")
# Operations that end the session they are called with: fuzzed elsewhere would log the
# fuzzer out (tests/identity covers them with their own sessions).
SESSION_ENDING = {"POST /api/v1/auth/logout"}
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture
async def live(settings: Settings) -> Any:
    """The real app on a real port: (base url, services)."""
    app = create_app(
        settings.with_overrides(
            login_rate_per_minute=100_000,
            fhir_ingest_per_minute=100_000,
            api_requests_per_minute=100_000,
        )
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    services: Services = app[SERVICES]
    await seed_demo(services)
    yield f"http://127.0.0.1:{port}", services, app[OPENAPI]
    await runner.cleanup()


def make_check(
    operation: Any,
    label: str,
    base_url: str,
    http: requests.Session,
    tokens: dict[str, str],
    counts: dict[str, int],
) -> Any:
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(), persona=st.sampled_from(PERSONAS))
    def check(case: Any, persona: str) -> None:
        counts[label] += 1
        headers = {"Authorization": f"Bearer {tokens[persona]}"}
        response = case.call(base_url=base_url, session=http, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)

    return check


def fuzz(base_url: str, document: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Run every operation; returns examples per operation and the failures found."""
    schema = schemathesis.openapi.from_dict(document)
    http = requests.Session()
    tokens = {}
    for username in PERSONAS:
        answer = http.post(f"{base_url}/api/v1/auth/login",
                           json={"username": username, "password": DEMO_PASSWORD}, timeout=10)  # fmt: skip
        answer.raise_for_status()
        tokens[username] = answer.json()["access_token"]
    counts: dict[str, int] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = operation.label
        if label in SESSION_ENDING:
            continue
        counts[label] = 0
        check = make_check(operation, label, base_url, http, tokens, counts)
        try:
            check()
        except Exception as exc:  # one operation's failure must not hide the others'
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:1500]}")
    return counts, failures


async def test_rest_api_survives_fuzzing(live: Any) -> None:
    base_url, _services, document = live
    counts, failures = await asyncio.to_thread(fuzz, base_url, document)
    total = sum(counts.values())
    print(f"\nschemathesis: {len(counts)} operations, {total} examples "
          f"(up to {EXAMPLES} per operation)")  # fmt: skip
    assert len(counts) >= 70
    assert total >= len(counts)
    assert not failures, "\n\n".join(failures)
