"""Rate limits that keep one sender from starving the others: FHIR ingest per institution.

(Login and refresh limits: tests/identity/test_auth.py; per-connection socket
events: tests/realtime/test_gateway.py and tests/security/test_flood.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.seed import PATIENTS, seed_demo
from tests.helpers import Api
from tests.security.world import Side, visit_bundle

FHIR = {"Content-Type": "application/fhir+json"}


def side(code: str, patient: str) -> Side:
    return Side(name=code[-1], patient_user=patient, patient_id=0, institution_id=0,
                institution_code=code, gp="", hospital_id=0, hospital_code="", specialist="",
                specialist_id=0, department_id=0, slot_department_id=0, pharmacy_id=0,
                pharmacy_code="")  # fmt: skip


def resident(username: str) -> str:
    return next(p for p in PATIENTS if p.username == username).resident_id


@pytest.fixture
async def limited_app(settings: Settings) -> web.Application:
    return create_app(settings.with_overrides(fhir_ingest_per_minute=3))


async def test_fhir_ingest_is_limited_per_institution(
    aiohttp_client: Any, limited_app: web.Application
) -> None:
    api = Api(await aiohttp_client(limited_app))
    services: Services = limited_app[SERVICES]
    await seed_demo(services)
    snbdh = visit_bundle(side("SNBDH", "patient_sun"), resident("patient_sun"))
    sblyl = visit_bundle(side("SBLYL", "patient_liu"), resident("patient_liu"))
    for _ in range(3):
        status, body = await api.post("/fhir", as_="gp_zhang", json=snbdh, headers=FHIR)
        assert status == 200, body
    response = await api.client.post(
        "/fhir",
        json=snbdh,
        headers={**FHIR, "Authorization": f"Bearer {await api.token('gp_zhang')}"},
    )
    assert response.status == 429
    assert response.content_type == "application/fhir+json"
    assert int(response.headers["Retry-After"]) >= 1
    outcome = await response.json(content_type=None)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "throttled"
    assert "SNBDH" not in outcome["issue"][0]["diagnostics"]  # names the limit, not the sender
    # Another institution's pushes are not held up by SNBDH's flood.
    status, body = await api.post("/fhir", as_="gp_liu", json=sblyl, headers=FHIR)
    assert status == 200, body
    await api.close()
