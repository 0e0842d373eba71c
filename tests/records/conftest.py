"""Fixtures of the shared record: realistic bundles kept as files, pushes as personas.

Tests that read the Synthea samples in ``/work/shared/fhir-r4-samples`` (or
``YIHAO_FHIR_SAMPLES``; the ``samples`` marker) run only where that folder exists; elsewhere they are
deselected, not skipped, as the integration tier is in tests/conftest.py.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import func, select

from server.container import Services
from server.records.models import RecordEntry
from tests.helpers import Api

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = Path(os.environ.get("YIHAO_FHIR_SAMPLES", "/work/shared/fhir-r4-samples"))
FHIR = {"Content-Type": "application/fhir+json"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "samples: needs the shared Synthea bundles")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SAMPLES.is_dir():
        return
    deselected = [item for item in items if item.get_closest_marker("samples")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("samples")]


def load_bundle(name: str = "snbdh_transaction.json") -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def bundle() -> dict[str, Any]:
    """A community clinic's visit: patient, encounter, problems, labs, meds, allergy, claim."""
    return copy.deepcopy(load_bundle())


def assert_valid_fhir(resource: dict[str, Any]) -> None:
    """Validated by an independent model library (fhir.resources, R4B structures)."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    if resource["resourceType"] == "Bundle":
        for entry in resource.get("entry", []):
            if "resource" in entry:
                assert_valid_fhir(entry["resource"])
            outcome = entry.get("response", {}).get("outcome")
            if outcome:
                assert_valid_fhir(outcome)


async def push(api: Api, as_: str, bundle: dict[str, Any]) -> tuple[int, Any]:
    status, body = await api.post("/fhir", as_=as_, json=bundle, headers=FHIR)
    if body is not None:
        assert_valid_fhir(body)
    return status, body


async def count_entries(services: Services) -> int:
    async with services.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(RecordEntry)) or 0)


ZHOU, ZHOU_RESIDENT_ID = "patient_zhou", "370202196005010115"  # the fixture bundle's patient


@pytest.fixture
async def seeded(network: Services) -> int:
    """How many record entries the demo network's seed stored."""
    return await count_entries(network)


@pytest.fixture
async def pushed(api: Api, seeded: int, bundle: dict[str, Any]) -> dict[str, Any]:
    """gp_zhang's clinic (SNBDH) has pushed the visit of 周国强, who was there in person (his
    app's presence code at the desk: pushing alone earns no reading); returns the response
    and the patient id."""
    status, body = await push(api, "gp_zhang", bundle)
    assert status == 200, body
    patient_id = int(body["entry"][0]["response"]["location"].split("/")[1])
    await api.patient_app(ZHOU_RESIDENT_ID, "周国强", ZHOU)
    await api.present("gp_zhang", ZHOU)
    return {"response": body, "patient_id": patient_id}
