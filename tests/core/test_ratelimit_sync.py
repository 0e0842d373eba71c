"""The per-account REST limit counts here at once and in Redis in the background."""

from __future__ import annotations

import pytest

from server.config import Settings
from server.core.ratelimit import RateLimits

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_hits_admitted_locally_reach_the_shared_window_and_the_limit_holds(
    settings: Settings,
) -> None:
    assert settings.redis_url
    node_a, node_b = RateLimits(settings), RateLimits(settings)
    limiter_a = node_a.limiter("api", 10, synced=True)
    limiter_b = node_b.limiter("api", 10, synced=True)
    try:
        # Well under half the limit: admitted, then added to the cluster's window by a sync.
        assert [await limiter_a.allow("user:7") for _ in range(4)] == [True] * 4
        await node_a.sync()
        assert node_a.shared is not None
        stats = await node_a.shared.get_window_stats(limiter_a.item, "api", "user:7")
        assert stats.remaining == 6
        # Node B sees the spent budget: past half the limit each hit is counted in Redis first.
        assert [await limiter_b.allow("user:7") for _ in range(6)] == [True] * 6
        assert await limiter_b.allow("user:7") is False
        # Node A last heard 4: it may admit up to half the limit on that before it asks
        # Redis (here one more hit), and then it refuses too.
        extra = 0
        while await limiter_a.allow("user:7"):
            extra += 1
            assert extra <= 1
        assert await limiter_a.retry_after("user:7") >= 1
        assert await limiter_b.allow("user:8")  # another account's budget is its own
    finally:
        await node_a.aclose()
        await node_b.aclose()
