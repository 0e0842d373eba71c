"""The patient hears that the consult's signed opinion is there."""

from __future__ import annotations

from typing import Any

from tests.consults.conftest import scheduled_consult
from tests.consults.test_contract import OPINION
from tests.consults.test_room import enter
from tests.helpers import Api


async def test_the_signed_opinion_reaches_the_patients_messages(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    patient = await api.socket("patient_sun")
    consult = await scheduled_consult(api, consult_case)
    cid = consult["id"]
    _host, _gp = await enter(api, consult)
    status, box = await api.get("/api/v1/inbox", as_="patient_sun")
    assert status == 200 and not [i for i in box["items"] if i["kind"] == "opinion_available"]

    # The guest cannot sign: nothing for the patient.
    status, body = await api.post(f"/api/v1/consults/{cid}/opinion", as_="gp_zhang", json=OPINION)
    assert status == 403, body
    status, box = await api.get("/api/v1/inbox", as_="patient_sun")
    assert not [i for i in box["items"] if i["kind"] == "opinion_available"]

    status, body = await api.post(f"/api/v1/consults/{cid}/opinion", as_="dr_li", json=OPINION)
    assert status == 201, body
    event = await patient.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "opinion_available"
    )
    assert event["data"]["resource"] == f"Consult/{cid}"
    assert event["data"]["title"] == "会诊意见已出具"
    # The opinion's words stay in the app, behind the consult's own read.
    assert OPINION["diagnostic_opinion"] not in str(event["data"])
    status, box = await api.get("/api/v1/inbox", as_="patient_sun")
    assert [i["data"] for i in box["items"] if i["kind"] == "opinion_available"] == [
        {"consult_id": cid}
    ]
