"""A new lab result pushed by an institution tells the patient; a re-send or an import does not."""

from __future__ import annotations

from typing import Any

from server.container import Services
from tests.helpers import Api
from tests.records.conftest import ZHOU, ZHOU_RESIDENT_ID, push


async def results(api: Api) -> list[dict[str, Any]]:
    status, box = await api.get("/api/v1/inbox", as_=ZHOU)
    assert status == 200, box
    return [i for i in box["items"] if i["kind"] == "result_ready"]


async def test_a_pushed_lab_result_reaches_the_patient_once(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    await api.patient_app(ZHOU_RESIDENT_ID, "周国强", ZHOU)
    patient = await api.socket(ZHOU)
    status, body = await push(api, "gp_zhang", bundle)
    assert status == 200, body
    event = await patient.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "result_ready"
    )
    labs = [
        e["response"]["location"].split("/_history")[0]
        for e in body["entry"]
        if e["response"]["location"].startswith(("Observation/", "DiagnosticReport/"))
    ]
    [item] = await results(api)
    assert item["id"] == event["data"]["id"]
    assert item["title"] == "您有新的检验结果"
    assert item["resource"] in labs and set(item["data"]["resources"]) <= set(labs)

    # The same results sent again are not new.
    status, body = await push(api, "gp_zhang", bundle)
    assert status == 200, body
    assert len(await results(api)) == 1


async def test_an_operators_import_of_history_messages_nobody(
    api: Api, network: Services, bundle: dict[str, Any]
) -> None:
    await api.patient_app(ZHOU_RESIDENT_ID, "周国强", ZHOU)
    await network.records.push_bundle(None, "SNBDH", bundle)
    assert await results(api) == []
