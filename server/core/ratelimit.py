"""Rate limits (``limits``, sliding window counters), keyed by client address, user or socket.

:class:`RateLimits` is where the counts live, built once per app: in this process
(embedded mode), or in Redis when ``redis_url`` is set, so that a limit holds across every
node of the cluster instead of per node. The limits a client can spread over nodes use it
(per account, per login/refresh address, per FHIR-pushing institution); the per-socket
event limit counts in the process that holds the socket (:class:`RateLimiter` with no
``store`` has a memory store of its own).

A hit costs one Redis round trip (one script); a refusal costs a second one, to say when to
retry. When Redis fails, the limits do not turn requests into errors: they fail open to
this node's own counts for :data:`OUTAGE_SECONDS`, with one warning in the log per outage,
and go back to Redis after it. Lockout after repeated failed logins, which must hold
across nodes whatever happens to Redis, is kept in the database.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from server.config import Settings

logger = logging.getLogger(__name__)

# After a Redis failure, how long limits count on this node alone before trying Redis again.
OUTAGE_SECONDS = 5.0
# A Redis that does not answer within this costs a request no more than this once per outage.
REDIS_TIMEOUT_SECONDS = 0.5


class RateLimits:
    """The store the limiters count in: this process's memory, or Redis shared by the cluster."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.shared: SlidingWindowCounterRateLimiter | None = None
        self._pool: ConnectionPool | None = None
        self._down_until = 0.0
        if settings is not None and settings.redis_url:
            self._pool = ConnectionPool.from_url(
                settings.redis_url,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
            storage = RedisStorage(
                _limits_uri(settings.redis_url),
                wrap_exceptions=True,
                implementation="redispy",
                # Nodes of one cluster share the channel, so they share the counts too.
                key_prefix=f"{settings.redis_channel}:limits",
                # limits documents connection_pool but types **options as scalars only.
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
            self.shared = SlidingWindowCounterRateLimiter(storage)

    @property
    def distributed(self) -> bool:
        return self.shared is not None

    def limiter(self, name: str, rate: int, per: float = 60.0) -> RateLimiter:
        return RateLimiter(rate, per, name=name, store=self)

    def _strategy(self) -> SlidingWindowCounterRateLimiter:
        if self.shared is None or time.monotonic() < self._down_until:
            return self.local
        return self.shared

    def _failed(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            logger.warning(
                "rate limit store unavailable; counting on this node for %.0f s",
                OUTAGE_SECONDS,
                extra={"error": type(exc).__name__},
            )
        self._down_until = time.monotonic() + OUTAGE_SECONDS

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        strategy = self._strategy()
        if strategy is not self.local:
            try:
                return await strategy.hit(item, *identifiers)
            except (StorageError, OSError, TimeoutError) as exc:
                self._failed(exc)
        return await self.local.hit(item, *identifiers)

    async def reset_at(self, item: RateLimitItem, *identifiers: str) -> float:
        strategy = self._strategy()
        if strategy is not self.local:
            try:
                return (await strategy.get_window_stats(item, *identifiers)).reset_time
            except (StorageError, OSError, TimeoutError) as exc:
                self._failed(exc)
        return (await self.local.get_window_stats(item, *identifiers)).reset_time

    async def aclose(self) -> None:
        timer = getattr(self.local.storage, "timer", None)
        if timer is not None:
            timer.cancel()
        if self._pool is not None:
            await self._pool.disconnect()

    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: the Redis connections are closed on shutdown."""
        yield
        await self.aclose()


def _limits_uri(redis_url: str) -> str:
    # limits names its async Redis storage by scheme; the pool carries the real address.
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class RateLimiter:
    """Allow ``rate`` events per ``per`` seconds per key, with bursts up to ``rate``.

    Sliding window counter: the current window's count plus the previous window's,
    weighted by how much of it still overlaps the last ``per`` seconds.
    """

    def __init__(
        self, rate: int, per: float = 60.0, *, name: str = "", store: RateLimits | None = None
    ) -> None:
        self.rate = rate
        self.name = name
        self.item = RateLimitItemPerSecond(rate, max(1, math.ceil(per)))
        self.store = store or RateLimits()

    async def allow(self, key: str) -> bool:
        return await self.store.hit(self.item, self.name, key)

    async def retry_after(self, key: str) -> int:
        """Whole seconds until ``key`` may try again (at least 1 once refused)."""
        reset = await self.store.reset_at(self.item, self.name, key)
        return max(1, math.ceil(reset - time.time()))
