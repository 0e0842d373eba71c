"""The demo network is usable as shipped: a community doctor renews a demo patient's medicine."""

from __future__ import annotations

from server.container import Services
from tests.helpers import Api
from tests.prescriptions.conftest import amlodipine


async def test_gp_renews_a_demo_patients_hypertension_medicine(api: Api, network: Services) -> None:
    status, me = await api.get("/api/v1/me", as_="patient_wang")
    assert status == 200
    body = {
        "patient_id": me["patient_id"],
        "diagnosis": {"code": "I10", "display": "原发性高血压"},
        "items": [amlodipine()],
        "notes": "复诊续方",
    }
    status, checked = await api.post("/api/v1/prescriptions/check", as_="gp_zhang", json=body)
    assert status == 200, checked
    if checked["blocking"]:
        body["override_reason"] = "与患者核对，继续原方案"
    status, created = await api.post("/api/v1/prescriptions", as_="gp_zhang", json=body)
    # The hypertension was diagnosed at an in-person visit in the seeded record, so the
    # online renewal is a follow-up and is allowed.
    assert status == 201, created
