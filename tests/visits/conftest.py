"""Fixtures of follow-up video visits: 钱国华 of the prescriptions tests (seen in person at
QDSL: I10 and I48 at an outpatient visit, E11 only online), real-name verified, and a child.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest

from server.container import Services
from server.core.ids import make_resident_id
from server.identity.schemas import UserCreate
from server.seed import DEMO_PASSWORD
from tests.helpers import Api
from tests.prescriptions.conftest import PATIENT, World, condition, encounter
from tests.prescriptions.conftest import world as world  # the fixture, shared

CHILD = "patient_xiao"
# An adult's ID, for the guardian (the child's mother).
MOTHER_ID = make_resident_id("370202", date(1992, 4, 9), 62)


@dataclass
class Case:
    world: World
    patient_id: int
    conditions: dict[str, str]  # code -> the Condition's id in the record


async def condition_ids(api: Api, username: str) -> dict[str, str]:
    status, body = await api.get("/api/v1/visits/conditions", as_=username)
    assert status == 200, body
    return {c["code"]: c["id"] for c in body["items"]}


async def verify(api: Api, patient_id: int, verified: bool = True) -> None:
    status, body = await api.call(
        "PUT",
        f"/api/v1/patients/{patient_id}/verification",
        as_="admin",
        json={"verified": verified},
    )
    assert status == 200 and body["real_name_verified"] is verified, body


@pytest.fixture
async def case(world: World, api: Api) -> Case:
    await verify(api, world.patient_id)
    return Case(world, world.patient_id, await condition_ids(api, PATIENT))


@pytest.fixture
async def child(network: Services, api: Api) -> Case:
    """小宇, four years old, asthma diagnosed at QDSL's outpatient clinic."""
    born = date.today() - timedelta(days=4 * 365)
    account = await network.identity.create_user(
        None,
        UserCreate(
            username=CHILD,
            password=DEMO_PASSWORD,
            role="patient",
            name="钱小宇",
            resident_id=make_resident_id("370202", born, 71),
        ),
    )
    assert account.patient_id is not None
    institution = next(i.id for i in await network.identity.list_institutions() if i.code == "QDSL")
    async with network.db.transaction() as tx:
        office = await network.records.add_resource(
            tx,
            patient_id=account.patient_id,
            institution_id=institution,
            resource=encounter("AMB"),
        )
        await network.records.add_resource(
            tx,
            patient_id=account.patient_id,
            institution_id=institution,
            resource=condition("J45.9", "支气管哮喘", office["id"]),
        )
    await verify(api, account.patient_id)
    world = World(account.patient_id, institution, 0, 0, network)
    return Case(world, account.patient_id, await condition_ids(api, CHILD))


def visit_request(case: Case, code: str = "I10", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "doctor_id": 0,
        "condition_id": case.conditions[code],
        "complaint": "血压近一周偏高，晨起头晕",
    }
    return body | over


async def doctor_id(api: Api, username: str = "dr_li") -> int:
    status, body = await api.get("/api/v1/me", as_=username)
    assert status == 200, body
    return int(body["id"])
