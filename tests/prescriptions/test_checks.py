"""Automatic checks against the shared record: shown before signing and to the pharmacist;
severe findings block unless the doctor overrides them with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Api
from tests.prescriptions.conftest import World, amlodipine, prescription

RX = "/api/v1/prescriptions"

AMOXICILLIN = amlodipine(
    drug_code="J01CA04", drug_name="阿莫西林胶囊", strength="500mg", dose=500, frequency="tid",
    days=5, quantity=2,
)  # fmt: skip
IBUPROFEN = amlodipine(
    drug_code="M01AE01", drug_name="布洛芬缓释胶囊", strength="300mg", dose=300, frequency="bid",
    days=3,
)  # fmt: skip
NIFEDIPINE = amlodipine(drug_code="C08CA05", drug_name="硝苯地平控释片", strength="30mg", dose=30)
CLOPIDOGREL = amlodipine(
    drug_code="B01AC04", drug_name="硫酸氢氯吡格雷片", strength="75mg", dose=75
)
OMEPRAZOLE = amlodipine(drug_code="A02BC01", drug_name="奥美拉唑肠溶胶囊", strength="20mg", dose=20)

# (name, items, expected (code, severity) findings)
CASES: list[tuple[str, list[dict[str, Any]], list[tuple[str, str]]]] = [
    ("allergy to penicillin", [AMOXICILLIN], [("allergy", "severe")]),
    ("interaction with current warfarin", [IBUPROFEN], [("interaction", "severe")]),
    ("duplicate calcium channel blockers", [amlodipine(), NIFEDIPINE],
     [("duplicate_therapy", "moderate")]),
    ("dose over the maximum", [amlodipine(dose=20)], [("dose_over_maximum", "severe")]),
    ("moderate interaction between new drugs", [CLOPIDOGREL, OMEPRAZOLE],
     [("interaction", "moderate")]),
    ("nothing to report", [amlodipine()], []),
]  # fmt: skip


@pytest.mark.parametrize(("items", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_findings(
    api: Api, world: World, items: list[dict[str, Any]], expected: list[tuple[str, str]]
) -> None:
    body = prescription(world, items=items)
    status, checked = await api.post(f"{RX}/check", as_="dr_li", json=body)
    assert status == 200, checked
    assert [(f["code"], f["severity"]) for f in checked["findings"]] == expected
    blocking = any(severity == "severe" for _, severity in expected)
    assert checked["blocking"] is blocking
    status, created = await api.post(RX, as_="dr_li", json=body)
    if blocking:
        assert status == 422 and created["code"] == "severe_findings"
        assert [f["code"] for f in created["findings"]] == [c for c, _ in expected]
    else:
        assert status == 201, created
        assert [(f["code"], f["severity"]) for f in created["findings"]] == expected


async def test_override_with_a_reason_reaches_the_pharmacist(api: Api, world: World) -> None:
    pharmacy = await api.socket("pharmacist_chen")
    reason = "患者既往皮试阴性，已知情同意，密切观察"
    body = prescription(world, items=[AMOXICILLIN], override_reason=reason, pharmacy_id=world.hcyf)
    status, rx = await api.post(RX, as_="dr_li", json=body)
    assert status == 201, rx
    assert rx["content"]["override_reason"] == reason
    delivered = await pharmacy.wait_for(lambda e: e["op"] == "delivered")
    shown = delivered["data"]["prescription"]
    assert [f["code"] for f in shown["findings"]] == ["allergy"]
    assert shown["content"]["findings"] == shown["findings"]  # covered by the signature
    status, history = await api.get(f"{RX}/{rx['id']}/history", as_="pharmacist_chen")
    assert status == 200 and history["items"][0]["reason"] == reason
