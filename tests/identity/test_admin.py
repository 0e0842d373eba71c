"""Administering the network: institutions, departments and accounts, and who may do it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from server.container import Services
from server.core.audit import AuditEvent
from server.identity.models import Institution, User
from tests.helpers import Api

INJECTIONS = [
    "Robert'); DROP TABLE users;--",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    "1; SELECT pg_sleep(5)",
    "\u0000null",
]


async def _counts(services: Services) -> tuple[int, int, int]:
    async with services.db.read() as session:
        return (
            int(await session.scalar(select(func.count()).select_from(Institution)) or 0),
            int(await session.scalar(select(func.count()).select_from(User)) or 0),
            int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0),
        )


async def test_platform_admin_registers_an_institution(api: Api, network: Services) -> None:
    status, body = await api.post(
        "/api/v1/institutions",
        as_="admin",
        json={"code": "HDRM", "name": "黄岛区人民医院", "kind": "secondary", "region": "370211"},
    )
    assert status == 201, body
    assert body["code"] == "HDRM" and body["departments"] == []
    status, listed = await api.get("/api/v1/institutions?kind=secondary", as_="gp_zhang")
    assert status == 200
    assert [i["code"] for i in listed["items"]] == ["HDRM"]
    status, again = await api.post(
        "/api/v1/institutions",
        as_="admin",
        json={"code": "HDRM", "name": "重复", "kind": "secondary"},
    )
    assert (status, again["code"]) == (409, "duplicate_code")


@pytest.mark.parametrize(
    "persona", ["dr_li", "gp_zhang", "pharmacist_chen", "patient_wang", "admin_qdsl"]
)
async def test_only_platform_admin_registers_institutions(
    api: Api, network: Services, persona: str
) -> None:
    before = await _counts(network)
    status, body = await api.post(
        "/api/v1/institutions",
        as_=persona,
        json={"code": "XX", "name": "某医院", "kind": "tertiary"},
    )
    assert (status, body["code"]) == (403, "forbidden")
    assert (await _counts(network))[0] == before[0]


async def test_institution_admin_manages_only_their_own(api: Api, network: Services) -> None:
    status, qdsl = await api.get("/api/v1/institutions", as_="admin_qdsl")
    ids = {i["code"]: i["id"] for i in qdsl["items"]}
    status, body = await api.post(
        f"/api/v1/institutions/{ids['QDSL']}/departments",
        as_="admin_qdsl",
        json={"name": "消化内科"},
    )
    assert status == 201
    assert "消化内科" in [d["name"] for d in body["departments"]]
    status, body = await api.post(
        f"/api/v1/institutions/{ids['QDFY']}/departments",
        as_="admin_qdsl",
        json={"name": "消化内科"},
    )
    assert status == 403
    status, body = await api.post(
        f"/api/v1/institutions/{ids['QDSL']}/departments",
        as_="admin_qdsl",
        json={"name": "消化内科"},
    )
    assert (status, body["code"]) == (409, "duplicate_department")
    status, body = await api.post(
        "/api/v1/institutions/999999/departments", as_="admin", json={"name": "消化内科"}
    )
    assert status == 404

    status, created = await api.post(
        "/api/v1/users",
        as_="admin_qdsl",
        json={
            "username": "dr_ma", "password": "long-enough-1", "role": "specialist",
            "institution": "QDSL", "name": "马超", "title": "主治医师", "department": "消化内科",
        },
    )  # fmt: skip
    assert status == 201, created
    assert created["institution"]["code"] == "QDSL" and created["can_prescribe"] is True
    status, body = await api.post(
        "/api/v1/users",
        as_="admin_qdsl",
        json={
            "username": "dr_niu",
            "password": "long-enough-1",
            "role": "specialist",
            "institution": "QDFY",
        },
    )
    assert status == 403
    status, body = await api.post(
        "/api/v1/users",
        as_="admin_qdsl",
        json={"username": "boss", "password": "long-enough-1", "role": "platform_admin"},
    )
    assert status == 403
    status, users = await api.get("/api/v1/users", as_="admin_qdsl")
    assert {u["institution"]["code"] for u in users["items"]} == {"QDSL"}
    assert "dr_ma" in {u["username"] for u in users["items"]}
    status, body = await api.get("/api/v1/users", as_="dr_li")
    assert status == 403


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"role": "gp", "institution": "QDSL"}, "role"),  # a gp at a tertiary hospital
        ({"role": "pharmacist", "institution": "SNBDH", "title": "主任医师"}, "title"),
        ({"role": "specialist"}, "institution"),
        ({"role": "specialist", "institution": "NOPE"}, "institution"),
        ({"role": "patient"}, "resident_id"),
        ({"role": "patient", "resident_id": "110105194912310021", "name": "钱女士"}, "resident_id"),
        (
            {
                "role": "patient",
                "resident_id": "11010519491231002X",
                "name": "钱女士",
                "sex": "male",
            },
            "sex",
        ),
        ({"role": "platform_admin", "institution": "QDSL"}, "institution"),
        ({"role": "nurse", "institution": "HCYF"}, "role"),
    ],
)
async def test_account_rules_name_the_field(
    api: Api, network: Services, payload: dict[str, str], field: str
) -> None:
    await api.token("admin")
    before = await _counts(network)
    status, body = await api.post(
        "/api/v1/users",
        as_="admin",
        json={"username": "newbie", "password": "long-enough-1", **payload},
    )
    assert status == 422, body
    assert body["errors"][0]["field"] == field
    assert await _counts(network) == before


async def test_patient_account_takes_sex_and_birth_date_from_the_id(
    api: Api, network: Services
) -> None:
    status, body = await api.post(
        "/api/v1/users",
        as_="admin",
        json={
            "username": "p_qian", "password": "long-enough-1", "role": "patient",
            "resident_id": "11010519491231002x", "name": "钱女士",
        },
    )  # fmt: skip
    assert status == 201, body
    assert body["patient_id"] is not None and body["institution"] is None
    # Timestamps come back in UTC with the zone, on SQLite as on PostgreSQL.
    assert body["created_at"].endswith(("Z", "+00:00"))
    status, body = await api.post(
        "/api/v1/users",
        as_="admin",
        json={
            "username": "p_qian2", "password": "long-enough-1", "role": "patient",
            "resident_id": "11010519491231002X", "name": "钱女士",
        },
    )  # fmt: skip
    assert (status, body["code"]) == (409, "duplicate_account")


@pytest.mark.parametrize("evil", INJECTIONS)
@pytest.mark.parametrize("field", ["username", "name", "institution", "department"])
async def test_injection_strings_are_refused_and_change_nothing(
    api: Api, network: Services, evil: str, field: str
) -> None:
    await api.token("admin")
    before = await _counts(network)
    payload = {
        "username": "dr_new", "password": "long-enough-1", "role": "specialist",
        "institution": "QDSL", "name": "新医生", "department": "心内科",
    }  # fmt: skip
    payload[field] = evil
    status, body = await api.post("/api/v1/users", as_="admin", json=payload)
    assert status == 422, body
    assert body["errors"][0]["field"] == field
    assert await _counts(network) == before


@pytest.mark.parametrize("evil", INJECTIONS)
async def test_injection_in_login_is_just_a_failed_login(
    api: Api, network: Services, evil: str
) -> None:
    status, body = await api.post("/api/v1/auth/login", json={"username": evil, "password": evil})
    assert status in (401, 422), body
    status, _ = await api.get("/api/v1/me", as_="dr_li")
    assert status == 200


async def test_new_member_is_pushed_to_the_institution(api: Api, network: Services) -> None:
    admin_socket = await api.socket("admin_qdsl")
    outsider = await api.socket("gp_zhang")
    await api.post(
        "/api/v1/users",
        as_="admin",
        json={
            "username": "nurse_yu",
            "password": "long-enough-1",
            "role": "nurse",
            "institution": "QDSL",
        },
    )
    event = await admin_socket.wait_for(lambda e: e["op"] == "member_added")
    assert event["type"] == "institution"
    assert event["stream"].startswith("institution:")
    await outsider.sync()
    assert not [e for e in outsider.events if e["op"] == "member_added"]
