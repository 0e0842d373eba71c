"""A prescription's status history: one entry shape for every step, oldest first."""

from __future__ import annotations

from tests.helpers import Api
from tests.prescriptions.conftest import PATIENT, World, prescription

RX = "/api/v1/prescriptions"


async def test_each_step_names_the_status_it_left_and_reached(api: Api, world: World) -> None:
    status, rx = await api.post(RX, as_="dr_li", json=prescription(world, pharmacy_id=world.hcyf))
    assert status == 201, rx
    receipt = {"prescription_id": rx["id"], "version": 1}
    status, _ = await api.post(f"{RX}/{rx['id']}/receipt", as_="pharmacist_chen", json=receipt)
    assert status == 200
    status, _ = await api.post(f"{RX}/{rx['id']}/cancel", as_="dr_li", json={"reason": "停药"})
    assert status == 200

    status, history = await api.get(f"{RX}/{rx['id']}/history", as_=PATIENT)
    assert status == 200, history
    steps = [(h["from_status"], h["to_status"]) for h in history["items"]]
    assert steps == [
        (None, "signed"),
        ("signed", "sent"),
        ("sent", "received"),  # a receipt changes no status
        ("sent", "cancelled"),
    ]
    # The names earlier answers had stay: status (= to_status), version, reason, details.
    for entry in history["items"]:
        assert entry["status"] == entry["to_status"] and entry["version"] == 1
    assert history["items"][1]["details"] == {"pharmacy_id": world.hcyf}
    assert history["items"][-1]["reason"] == "停药"
    assert history["items"][-1]["actor_user_id"] == rx["prescriber_id"]
