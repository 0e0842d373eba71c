"""The patient index: resident ID checks, registration and links, lookups, merge, verification."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from server.container import Services
from server.core.ids import check_character, make_resident_id
from tests.helpers import Api

VALID = "11010519491231002X"  # GB 11643's own example: a woman born 1949-12-31


def with_check(first17: str) -> str:
    return first17 + check_character(first17)


def registration(resident_id: str, **extra: Any) -> dict[str, Any]:
    return {"resident_id": resident_id, "name": "赵秀兰", **extra}


@pytest.mark.parametrize(
    ("resident_id", "check", "field"),
    [
        ("110105194912310021", "resident_id_check_character", "resident_id"),
        ("11010519491231002", "resident_id_format", "resident_id"),
        ("1101051949123100AX", "resident_id_format", "resident_id"),
        (with_check("99010519491231002"), "resident_id_region", "resident_id"),
        (with_check("11000019491231002"), "resident_id_region", "resident_id"),
        (with_check("11010519490231002"), "resident_id_birth_date", "resident_id"),
        (make_resident_id("110105", date(2099, 1, 1), 2), "resident_id_birth_date", "resident_id"),
    ],
)
async def test_a_bad_resident_id_is_422_naming_the_failed_check(
    api: Api, network: Services, resident_id: str, check: str, field: str
) -> None:
    status, body = await api.post(
        "/api/v1/patients", as_="gp_zhang", json=registration(resident_id)
    )
    assert status == 422, body
    assert body["code"] == check
    assert body["errors"][0]["field"] == field


async def test_sex_and_birth_date_are_checked_against_the_id(api: Api, network: Services) -> None:
    status, body = await api.post(
        "/api/v1/patients", as_="gp_zhang", json=registration(VALID, sex="male")
    )
    assert (status, body["code"], body["errors"][0]["field"]) == (422, "resident_id_sex", "sex")
    status, body = await api.post(
        "/api/v1/patients", as_="gp_zhang", json=registration(VALID, birth_date="1949-12-30")
    )
    assert (status, body["code"]) == (422, "resident_id_birth_date")
    status, body = await api.post(
        "/api/v1/patients",
        as_="gp_zhang",
        json=registration(VALID, sex="female", birth_date="1949-12-31"),
    )
    assert status == 201, body
    assert (body["sex"], body["birth_date"]) == ("female", "1949-12-31")


async def test_a_legacy_15_digit_id_is_upgraded(api: Api, network: Services) -> None:
    status, body = await api.post(
        "/api/v1/patients", as_="gp_zhang", json=registration("110105491231002")
    )
    assert status == 201, body
    assert body["resident_id"] == VALID
    # The same person under the 18-digit number is the same account.
    status, again = await api.post("/api/v1/patients", as_="gp_liu", json=registration(VALID))
    assert (status, again["id"], again["created"]) == (201, body["id"], False)


async def test_a_second_institution_links_to_the_same_account(api: Api, network: Services) -> None:
    status, first = await api.post(
        "/api/v1/patients",
        as_="gp_zhang",
        json=registration(VALID, mrn="SN-0001", card_number="CARD-77"),
    )
    assert status == 201 and first["created"] is True
    status, second = await api.post(
        "/api/v1/patients", as_="dr_li", json=registration(VALID, mrn="QDSL-9001")
    )
    assert status == 201 and second["created"] is False
    assert second["id"] == first["id"]
    # The second desk learns only its own numbers: the first clinic's stay hidden, and
    # neither desk may read the record before the patient is present.
    assert {
        (link["institution"]["code"], link["kind"], link["number"]) for link in second["links"]
    } == {("QDSL", "mrn", "QDSL-9001")}
    assert (first["care"], second["care"]) == ("none", "none")
    assert "phone" not in second
    status, body = await api.get(
        "/api/v1/patients/lookup",
        as_="dr_li",
        params={"institution": "QDSL", "number": "QDSL-9001"},
    )
    assert (status, body["code"]) == (403, "record_access_denied")
    await api.patient_app(VALID, "赵秀兰", "p_zhao")
    await api.present("gp_zhang", "p_zhao")
    await api.present("dr_li", "p_zhao")
    status, account = await api.get(f"/api/v1/patients/{first['id']}", as_="dr_li")
    assert {
        (link["institution"]["code"], link["kind"], link["number"]) for link in account["links"]
    } == {
        ("SNBDH", "mrn", "SN-0001"),
        ("SNBDH", "card", "CARD-77"),
        ("QDSL", "mrn", "QDSL-9001"),
    }
    # Cross-references: each institution's own numbers find the one account.
    for institution, number, who in (
        ("SNBDH", "SN-0001", "gp_zhang"),
        ("SNBDH", "CARD-77", "gp_zhang"),
        ("QDSL", "QDSL-9001", "dr_li"),
        ("SNBDH", "SN-0001", "dr_li"),  # dr_li's hospital also cares for the patient
    ):
        status, found = await api.get(
            "/api/v1/patients/lookup",
            as_=who,
            params={"institution": institution, "number": number},
        )
        assert (status, found["id"]) == (200, first["id"]), (institution, number, found)
    status, body = await api.get(
        "/api/v1/patients/lookup", as_="dr_li", params={"institution": "QDSL", "number": "nope"}
    )
    assert (status, body["code"]) == (403, "record_access_denied")  # unknown looks forbidden
    # An institution with no relationship to the patient cannot use another's numbers.
    status, body = await api.get(
        "/api/v1/patients/lookup",
        as_="dr_zhao",
        params={"institution": "SNBDH", "number": "SN-0001"},
    )
    assert status == 403, body


async def test_a_local_number_cannot_name_two_patients(api: Api, network: Services) -> None:
    await api.post("/api/v1/patients", as_="gp_zhang", json=registration(VALID, mrn="SN-1"))
    other = make_resident_id("370202", date(1970, 1, 1), 13)
    status, body = await api.post(
        "/api/v1/patients", as_="gp_zhang", json={**registration(other, mrn="SN-1"), "name": "李四"}
    )
    assert (status, body["code"]) == (409, "number_taken")


async def test_patients_and_pharmacies_do_not_register_patients_elsewhere(
    api: Api, network: Services
) -> None:
    status, _ = await api.post("/api/v1/patients", as_="patient_wang", json=registration(VALID))
    assert status == 403
    status, _ = await api.post("/api/v1/patients", as_="admin", json=registration(VALID))
    assert status == 403


async def test_only_platform_admins_merge(api: Api, network: Services) -> None:
    status, _ = await api.post(
        "/api/v1/patient-merges",
        as_="dr_li",
        json={"source_patient_id": 1, "target_patient_id": 2, "reason": "同一人"},
    )
    assert status == 403


async def test_real_name_verification(api: Api, network: Services) -> None:
    status, patient = await api.post("/api/v1/patients", as_="dr_li", json=registration(VALID))
    await api.patient_app(VALID, "赵秀兰", "p_zhao")
    await api.present("dr_li", "p_zhao")
    status, body = await api.call(
        "PUT", f"/api/v1/patients/{patient['id']}/verification", as_="admin_qdsl",
        json={"verified": True},
    )  # fmt: skip
    assert status == 200 and body["real_name_verified"] is True, body
    status, body = await api.get(f"/api/v1/patients/{patient['id']}", as_="dr_li")
    assert body["real_name_verified"] is True
    status, fhir = await api.get(f"/fhir/Patient/{patient['id']}", as_="dr_li")
    assert fhir["extension"][0]["valueBoolean"] is True
    status, _ = await api.call(
        "PUT", f"/api/v1/patients/{patient['id']}/verification", as_="dr_li",
        json={"verified": False},
    )  # fmt: skip
    assert status == 403
