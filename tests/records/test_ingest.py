"""Pushing FHIR bundles: transaction and batch, references, re-sends, refusals."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from server.container import Services
from server.records.models import RecordEntry
from tests.helpers import Api
from tests.records.conftest import push


async def count_entries(services: Services, **where: Any) -> int:
    async with services.db.read() as session:
        query = select(func.count()).select_from(RecordEntry)
        for key, value in where.items():
            query = query.where(getattr(RecordEntry, key) == value)
        return int(await session.scalar(query) or 0)


async def test_transaction_stores_every_entry_and_resolves_references(
    api: Api, network: Services, pushed: dict[str, Any]
) -> None:
    response, patient_id = pushed["response"], pushed["patient_id"]
    assert response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created"] * 12
    assert await count_entries(network) == 12
    assert (
        await count_entries(network, patient_id=patient_id) == 10
    )  # not Organization/Practitioner
    # The condition points at the unified patient and the stored encounter.
    location = response["entry"][4]["response"]["location"]
    status, condition = await api.get(f"/fhir/{location.rsplit('/_history', 1)[0]}", as_="gp_zhang")
    assert status == 200, condition
    assert condition["subject"]["reference"] == f"Patient/{patient_id}"
    encounter_id = response["entry"][3]["response"]["location"].split("/")[1]
    assert condition["encounter"]["reference"] == f"Encounter/{encounter_id}"
    assert condition["meta"]["source"] == "urn:yihao:institution:SNBDH"
    assert condition["meta"]["versionId"] == "1"


async def test_resending_updates_instead_of_duplicating(
    api: Api, network: Services, pushed: dict[str, Any], bundle: dict[str, Any]
) -> None:
    bundle["entry"][7]["resource"]["valueQuantity"]["value"] = 8.1
    status, body = await push(api, "gp_zhang", bundle)
    assert status == 200, body
    assert [e["response"]["status"] for e in body["entry"]][1:] == ["200 OK"] * 11
    assert await count_entries(network) == 12
    location = body["entry"][7]["response"]["location"]
    assert location.endswith("/_history/2")
    status, obs = await api.get(f"/fhir/{location.rsplit('/_history', 1)[0]}", as_="gp_zhang")
    assert obs["valueQuantity"]["value"] == 8.1
    assert obs["meta"]["versionId"] == "2"
