"""A consult whose signed opinion recommends referral becomes a referral in one step."""

from __future__ import annotations

from typing import Any

from tests.consults.conftest import scheduled_consult
from tests.consults.test_room import enter
from tests.helpers import Api

OPINION = {
    "findings": "运动负荷试验阳性",
    "diagnostic_opinion": "考虑冠心病（稳定型心绞痛）",
    "treatment_advice": "建议冠脉造影",
    "refer": True,
    "refer_note": "建议转诊心内科",
}


async def _referral_body(api: Api, case: dict[str, Any]) -> dict[str, Any]:
    status, qdsl = await api.get(f"/api/v1/institutions/{case['inst_QDSL']}", as_="gp_zhang")
    assert status == 200
    cardiology = next(d["id"] for d in qdsl["departments"] if d["name"] == "心内科")
    return {
        "direction": "up",
        "patient_id": case["patient"],
        "purpose": "冠脉造影",
        "to_institution_id": case["inst_QDSL"],
        "to_department_id": cardiology,
        "reason": "会诊建议转诊行冠脉造影",
        "urgency": "urgent",
    }


async def test_opinion_recommending_referral_becomes_a_referral(
    api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    body = await _referral_body(api, consult_case)
    # No opinion yet: nothing to refer on.
    status, problem = await api.post(f"/api/v1/consults/{cid}/referral", as_="gp_zhang", json=body)
    assert (status, problem["code"]) == (409, "referral_not_recommended")
    await enter(api, consult)
    status, _ = await api.post(f"/api/v1/consults/{cid}/opinion", as_="dr_li", json=OPINION)
    assert status == 201
    # The invited specialist advises; the inviting doctor decides.
    status, problem = await api.post(f"/api/v1/consults/{cid}/referral", as_="dr_li", json=body)
    assert (status, problem["code"]) == (403, "not_the_requester")
    status, referral = await api.post(f"/api/v1/consults/{cid}/referral", as_="gp_zhang", json=body)
    assert status == 201, referral
    assert referral["consult_id"] == cid
    assert referral["status"] == "requested"
    snapshot = referral["consult_snapshot"]
    assert snapshot["opinion"]["diagnostic_opinion"] == OPINION["diagnostic_opinion"]
    assert snapshot["consult_id"] == cid
    # The record snapshot frozen when the consult was requested travels along.
    assert snapshot["snapshot"]["summary"]["patient_id"] == consult_case["patient"]
    assert referral["summary"] == "会诊意见：考虑冠心病（稳定型心绞痛）"


async def test_opinion_not_recommending_referral_is_refused(
    api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    await enter(api, consult)
    status, _ = await api.post(
        f"/api/v1/consults/{cid}/opinion", as_="dr_li", json=OPINION | {"refer": False}
    )
    assert status == 201
    body = await _referral_body(api, consult_case)
    status, problem = await api.post(f"/api/v1/consults/{cid}/referral", as_="gp_zhang", json=body)
    assert (status, problem["code"]) == (409, "referral_not_recommended")
    status, problem = await api.post(
        f"/api/v1/consults/{cid}/referral", as_="gp_zhang", json=body | {"patient_id": 1}
    )
    assert status in (409, 422)
    status, listed = await api.get("/api/v1/referrals", as_="gp_zhang")
    assert status == 200 and listed["items"] == []
