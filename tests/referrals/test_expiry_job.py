"""The background expiry job, running in the app as deployed (a short expiry for the test)."""

from __future__ import annotations

import pytest

from server.config import Settings
from server.container import Services
from tests.helpers import Api
from tests.referrals.test_referrals import up_referral
from tests.scheduling.support import network_ids, register_patient


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"referral_expiry_hours": 1 / 3600, "referral_expiry_interval_seconds": 1}
    )


async def test_the_running_app_expires_unanswered_referrals(api: Api, network: Services) -> None:
    net = await network_ids(network)
    await register_patient(api, "gp_zhang", "patient_sun")
    gp_zhang = await api.socket("gp_zhang")
    status, referral = await api.post("/api/v1/referrals", as_="gp_zhang", json=up_referral(net))
    assert status == 201
    event = await gp_zhang.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "referral.expired", timeout=10
    )
    assert event["data"]["resource"] == f"Referral/{referral['id']}"
    _, got = await api.get(f"/api/v1/referrals/{referral['id']}", as_="gp_zhang")
    assert [h["to_status"] for h in got["history"]] == ["requested", "expired"]
