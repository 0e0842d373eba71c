"""A clinician's list of their institution's patients (GET /api/v1/patients)."""

from __future__ import annotations

from sqlalchemy import select

from server.container import Services
from server.core.audit import AuditEvent
from tests.helpers import Api


async def test_a_gp_lists_the_patients_of_their_clinic(api: Api, network: Services) -> None:
    status, body = await api.get("/api/v1/patients", as_="gp_zhang")  # SNBDH
    assert status == 200, body
    by_name = {p["name"]: p for p in body["items"]}
    # Registered at SNBDH in the demo record: 王建国 (SN-000031) and 孙美玲 (SN-000026).
    assert set(by_name) == {"王建国", "孙美玲"}
    assert by_name["王建国"]["numbers"] == ["SN-000031"]
    assert by_name["王建国"]["sex"] == "male"
    # Patients of other clinics are not listed.
    status, other = await api.get("/api/v1/patients", as_="gp_liu")  # SBLYL
    assert [p["name"] for p in other["items"]] == ["刘秀英"]


async def test_the_list_searches_names_and_numbers(api: Api, network: Services) -> None:
    status, body = await api.get("/api/v1/patients?q=000026", as_="gp_zhang")
    assert status == 200
    assert [p["name"] for p in body["items"]] == ["孙美玲"]
    status, body = await api.get("/api/v1/patients?q=建国", as_="gp_zhang")
    assert [p["name"] for p in body["items"]] == ["王建国"]
    # Wildcards are taken literally.
    status, body = await api.get("/api/v1/patients?q=%25", as_="gp_zhang")
    assert status == 200 and body["items"] == []
    status, body = await api.get("/api/v1/patients?limit=0", as_="gp_zhang")
    assert status == 422
    assert body["errors"][0]["field"] == "limit"


async def test_only_clinicians_list_patients_and_each_list_is_audited(
    api: Api, network: Services
) -> None:
    for username in ("patient_wang", "pharmacist_chen", "admin_qdsl", "admin"):
        status, _ = await api.get("/api/v1/patients", as_=username)
        assert status == 403, username
    status, body = await api.get("/api/v1/patients", as_="gp_zhang")
    assert status == 200
    async with network.db.read() as session:
        entry = await session.scalar(
            select(AuditEvent)
            .where(AuditEvent.action == "patient.list")
            .order_by(AuditEvent.seq.desc())
        )
    assert entry is not None
    assert entry.reason == "care_relationship"
    assert sorted(entry.details["patient_ids"]) == sorted(p["id"] for p in body["items"])
