"""Each prescribing rule with a passing and a failing case; a violation is a 422 naming it."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import update

from server.core.ids import make_resident_id
from server.identity.models import Patient
from tests.helpers import Api
from tests.prescriptions.conftest import World, add_record, amlodipine, prescription

RX = "/api/v1/prescriptions"

DIAZEPAM = amlodipine(
    drug_code="N05BA01", drug_name="地西泮片", strength="2.5mg", dose=2.5, frequency="qn"
)
MORPHINE = amlodipine(drug_code="N02AA01", drug_name="盐酸吗啡片", strength="10mg", dose=10)
ATROPINE = amlodipine(drug_code="A03BA01", drug_name="硫酸阿托品片", strength="0.3mg", dose=0.3)
LONG_TERM = {"kind": "long_term", "stable_condition": True}
EVALUATION = "2026-11 复诊评估：血压控制稳定（128/78 mmHg），肝肾功能正常，无不良反应"

# (name, body changes, rule broken or None)
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("follow-up of an offline diagnosis", {}, None),
    ("diagnosis only seen online", {"diagnosis": {"code": "E11", "display": "2型糖尿病"}},
     "rx_not_follow_up"),
    ("diagnosis not in the record", {"diagnosis": {"code": "J45", "display": "哮喘"}},
     "rx_not_follow_up"),
    ("a subcode of an offline diagnosis", {"diagnosis": {"code": "I48.0", "display": "阵发性房颤"}},
     None),
    ("psychotropic drug", {"items": [DIAZEPAM]}, "rx_restricted_drug"),
    ("narcotic drug", {"items": [MORPHINE]}, "rx_restricted_drug"),
    ("toxic drug", {"items": [ATROPINE]}, "rx_restricted_drug"),
    ("valid 3 days", {"validity_days": 3}, None),
    ("valid 4 days", {"validity_days": 4}, "rx_validity_exceeded"),
    ("7 days' supply", {"items": [amlodipine(days=7)]}, None),
    ("8 days' supply", {"items": [amlodipine(days=8)]}, "rx_supply_exceeded"),
    ("emergency, 3 days", {"kind": "emergency", "items": [amlodipine(days=3)]}, None),
    ("emergency, 4 days", {"kind": "emergency", "items": [amlodipine(days=4)]},
     "rx_supply_exceeded"),
    ("long-term, stable chronic, 4 weeks", LONG_TERM | {"items": [amlodipine(days=28, quantity=4)]},
     None),
    ("long-term, not attested stable", {"kind": "long_term", "items": [amlodipine(days=28)]},
     "rx_long_term_not_chronic"),
    ("long-term for an acute condition",
     LONG_TERM | {"diagnosis": {"code": "J06", "display": "急性上呼吸道感染"},
                  "items": [amlodipine(days=14)]},
     "rx_long_term_not_chronic"),
    ("long-term 8 weeks without evaluation", LONG_TERM | {"items": [amlodipine(days=56)]},
     "rx_long_term_evaluation_required"),
    ("long-term 12 weeks with evaluation",
     LONG_TERM | {"items": [amlodipine(days=84, quantity=12)], "evaluation": EVALUATION}, None),
    ("long-term 13 weeks", LONG_TERM | {"items": [amlodipine(days=91)], "evaluation": EVALUATION},
     "rx_supply_exceeded"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_rule(api: Api, world: World, changes: dict[str, Any], rule: str | None) -> None:
    body = prescription(world, **changes)
    status, answer = await api.post(f"{RX}/check", as_="dr_li", json=body)
    if rule is None:
        assert status == 200, answer
        status, created = await api.post(RX, as_="dr_li", json=body)
        assert status == 201, created
        return
    assert status == 422, answer
    assert answer["code"] == rule and answer["rule"] == rule
    assert answer["errors"][0]["field"]
    status, created = await api.post(RX, as_="dr_li", json=body)
    assert status == 422 and created["code"] == rule
    status, mine = await api.get(RX, as_="dr_li")
    assert status == 200 and mine["items"] == []  # nothing was created


async def test_child_under_six_needs_a_guardian(api: Api, world: World) -> None:
    resident_id = make_resident_id("370202", date(2023, 5, 20), 13)
    status, child = await api.post(
        "/api/v1/patients", as_="dr_li", json={"resident_id": resident_id, "name": "王小宝"}
    )
    assert status == 201, child
    await add_record(world.services, child["id"], world.qdsl)
    body = prescription(world, patient_id=child["id"])

    status, problem = await api.post(RX, as_="dr_li", json=body)
    assert status == 422 and problem["code"] == "rx_child_without_guardian"

    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            update(Patient)
            .where(Patient.id == child["id"])
            .values(guardian_name="钱国华", guardian_relation="祖父")
        )
    status, created = await api.post(RX, as_="dr_li", json=body)
    assert status == 201, created


async def test_only_prescribers_with_access_to_the_record(api: Api, world: World) -> None:
    status, problem = await api.post(RX, as_="nurse_he", json=prescription(world))
    assert status == 403
    status, problem = await api.post(RX, as_="pharmacist_chen", json=prescription(world))
    assert status == 403
    # dr_zhao's hospital (QDFY) has no reason to read 钱国华's record.
    status, problem = await api.post(RX, as_="dr_zhao", json=prescription(world))
    assert status == 403 and problem["code"] == "record_access_denied"
