"""Fixtures of remote consultations: a patient of gp_zhang's clinic with a shared record.

``consult_case`` gives the ids a test needs; ``new_consult`` requests a consult
as gp_zhang (SNBDH) inviting QDSL (dr_li's hospital), with informed consent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from server.container import Services
from server.identity.models import Institution, Patient, User
from server.seed import PATIENTS
from tests.helpers import Api

CONDITION = {
    "resourceType": "Condition",
    "clinicalStatus": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active",
            }
        ]
    },
    "code": {
        "coding": [{"system": "http://snomed.info/sct", "code": "38341003"}],
        "text": "高血压",
    },
    "recordedDate": "2026-10-01",
}
OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "2093-3"}], "text": "总胆固醇"},
    "effectiveDateTime": "2026-11-20T08:00:00+08:00",
    "valueQuantity": {"value": 6.8, "unit": "mmol/L"},
}


async def _ids(services: Services) -> dict[str, int]:
    async with services.db.read() as session:
        users = {u.username: u.id for u in await session.scalars(select(User))}
        insts = {i.code: i.id for i in await session.scalars(select(Institution))}
        patient = await session.scalar(
            select(Patient.id).where(Patient.resident_id == PATIENTS[3].resident_id)
        )
    assert patient is not None
    return {**users, **{f"inst_{k}": v for k, v in insts.items()}, "patient": patient}


@pytest.fixture
async def consult_case(network: Services) -> dict[str, Any]:
    """patient_sun is registered at SNBDH only, which has recorded a problem and a lab result."""
    ids = await _ids(network)
    async with network.db.transaction() as tx:
        await network.access.record_encounter(
            tx, patient_id=ids["patient"], institution_id=ids["inst_SNBDH"], reason="presence"
        )
    stored = []
    for resource in (CONDITION, OBSERVATION):
        async with network.db.transaction() as tx:
            stored.append(
                await network.records.add_resource(
                    tx,
                    patient_id=ids["patient"],
                    institution_id=ids["inst_SNBDH"],
                    resource=resource,
                )
            )
    ids["condition"], ids["observation"] = int(stored[0]["id"]), int(stored[1]["id"])
    return ids


def consult_request(case: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "patient_id": case["patient"],
        "consent": {
            "given_by": "guardian",
            "name": "王小明",
            "relation": "儿子",
            "method": "written",
            "given_at": (now - timedelta(hours=1)).isoformat(),
        },
        "reason": "血压控制不佳，胸闷三天",
        "purpose": "明确是否需调整降压方案及是否需要转诊",
        "clinical_question": "是否存在冠心病？下一步检查建议？",
        "case_summary": "男，71岁，高血压十年，近三天活动后胸闷。",
        "urgency": "urgent",
        "window_start": (now + timedelta(hours=2)).isoformat(),
        "window_end": (now + timedelta(days=2)).isoformat(),
        "invited_institution_id": case["inst_QDSL"],
        "invited_department": "心内科",
        "invited_title": "主任医师",
        "record_items": [{"resource_type": "Observation", "id": str(case["observation"])}],
    }
    body.update(overrides)
    return body


async def new_consult(api: Api, case: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    status, body = await api.post(
        "/api/v1/consults", as_="gp_zhang", json=consult_request(case, **overrides)
    )
    assert status == 201, body
    return body  # type: ignore[no-any-return]


async def scheduled_consult(api: Api, case: dict[str, Any]) -> dict[str, Any]:
    consult = await new_consult(api, case)
    when = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    status, body = await api.post(
        f"/api/v1/consults/{consult['id']}/accept", as_="dr_li", json={"scheduled_at": when}
    )
    assert status == 200, body
    return body  # type: ignore[no-any-return]
