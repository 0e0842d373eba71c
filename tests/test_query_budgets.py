"""Query budgets of the hot paths: how many statements and transactions each one costs.

A budget is the measured figure (the comment beside it); a change that makes a
path cost more fails here, and one that makes it cheaper should lower the
budget. The failure message lists the statements sent, to see where they came from.
Each path is measured warm (once through first), as it runs all day.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from server.config import Settings
from server.container import Services
from tests.budget import Counts, count_queries
from tests.consults.conftest import consult_case, scheduled_consult
from tests.helpers import Api, amlodipine

__all__ = ["consult_case"]  # the fixture, shared with the consult tests


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No background job ticks while a path is measured."""
    return settings.with_overrides(
        checkpoint_interval_seconds=0,
        referral_expiry_interval_seconds=0,
        consult_escalation_interval_seconds=0,
        prescription_sweep_seconds=0,
        session_check_seconds=3600,
    )


# (statements, transactions, committed writes), measured the same on SQLite and PostgreSQL.
# Prescription create's 9 transactions: the session check, the people read, the access
# decision, its audit entry (one short append), four reads of record entries by the checks,
# and the create itself (2 writes). Measured before staged writes: 27 statements, chat 12.
BUDGETS: dict[str, tuple[int, int, int]] = {
    "prescription.create": (25, 9, 2),  # measured 25, 9, 2
    "consult.chat": (11, 5, 1),  # measured 11, 5, 1
    "consult.join": (25, 15, 2),  # measured 25, 15, 2 (connect, consult.open, consult.join)
    "patient.summary": (14, 6, 1),  # measured 14, 6, 1 (the audited read's one append)
    "fhir.search": (10, 5, 1),  # measured 10, 5, 1 (the audited read's one append)
}


def check(backend: str, path: str, counts: Counts) -> None:
    statements, transactions, writes = BUDGETS[path]
    print(f"{backend} {path}: {counts}")
    message = f"{path}: {counts}\n{counts.listing()}"
    assert counts.statements <= statements, message
    assert counts.transactions <= transactions, message
    assert counts.writes <= writes, message


VISIT = {
    "resourceType": "Encounter",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    "period": {"start": "2026-03-01T09:00:00+08:00", "end": "2026-03-01T09:30:00+08:00"},
}
HYPERTENSION = {
    "resourceType": "Condition",
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "code": {
        "coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": "原发性高血压"}
        ]
    },
    "onsetDateTime": "2026-03-01",
}


def rx(case: dict[str, Any]) -> dict[str, Any]:
    return {
        "patient_id": case["patient"],
        "diagnosis": {"code": "I10", "display": "原发性高血压"},
        "items": [amlodipine()],
        "notes": "复诊续方",
    }


async def diagnosed_in_person(services: Services, case: dict[str, Any]) -> None:
    """Hypertension (I10) diagnosed at an outpatient visit: what an online renewal follows."""
    where = {"patient_id": case["patient"], "institution_id": case["inst_SNBDH"]}
    async with services.db.transaction() as tx:
        visit = await services.records.add_resource(tx, **where, resource=VISIT)
        await services.records.add_resource(
            tx,
            **where,
            resource=HYPERTENSION | {"encounter": {"reference": f"Encounter/{visit['id']}"}},
        )


async def test_prescription_create(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    await diagnosed_in_person(network, consult_case)
    status, body = await api.post("/api/v1/prescriptions", as_="gp_zhang", json=rx(consult_case))
    assert status == 201, body
    with count_queries(network.db) as counts:
        status, body = await api.post(
            "/api/v1/prescriptions", as_="gp_zhang", json=rx(consult_case)
        )
    assert status == 201, body
    check(backend, "prescription.create", counts)


async def test_consult_chat_send(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    host = await api.socket("dr_li")
    ack = await host.call("consult.join", {"consult_id": consult["id"]})
    assert ack["ok"], ack

    async def say(text: str) -> dict[str, Any]:
        payload = {"consult_id": consult["id"], "client_id": str(uuid.uuid4()), "text": text}
        return await host.call("consult.chat", payload)

    assert (await say("您好"))["ok"]
    with count_queries(network.db) as counts:
        ack = await say("请上传最近的心电图")
    assert ack["ok"], ack
    check(backend, "consult.chat", counts)


async def test_consult_join(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    """What the web client does to enter a session: connect, ``consult.open``, ``consult.join``."""
    consult = await scheduled_consult(api, consult_case)
    token = await api.token("dr_li")
    first = await api.socket("dr_li")
    assert (await first.call("consult.join", {"consult_id": consult["id"]}))["ok"]
    await first.close()
    with count_queries(network.db) as counts:
        sock = await api.socket("dr_li")
        opened = await sock.call("consult.open", {"consult_id": consult["id"]})
        joined = await sock.call("consult.join", {"consult_id": consult["id"]})
    assert token and opened["ok"] and joined["ok"], (opened, joined)
    check(backend, "consult.join", counts)


async def test_clinical_summary(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    path = f"/api/v1/patients/{consult_case['patient']}/summary"
    assert (await api.get(path, as_="gp_zhang"))[0] == 200
    with count_queries(network.db) as counts:
        status, body = await api.get(path, as_="gp_zhang")
    assert status == 200, body
    check(backend, "patient.summary", counts)


async def test_fhir_search(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    params = {"patient": str(consult_case["patient"])}
    assert (await api.get("/fhir/Observation", as_="gp_zhang", params=params))[0] == 200
    with count_queries(network.db) as counts:
        status, body = await api.get("/fhir/Observation", as_="gp_zhang", params=params)
    assert status == 200, body
    assert body["total"] >= 1
    check(backend, "fhir.search", counts)
