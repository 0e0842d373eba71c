"""Rate limits (``limits``, sliding window counters), keyed by client address, user or socket.

:class:`RateLimits` is where the counts live, built once per app: in this process
(embedded mode), or in Redis when ``redis_url`` is set, so that a limit holds across every
node of the cluster instead of per node. The limits a client can spread over nodes use it
(per account, per login/refresh address, per FHIR-pushing institution); the per-socket
event limit counts in the process that holds the socket (:class:`RateLimiter` with no
``store`` has a memory store of its own).

A hit costs one Redis round trip (one script); a refusal costs a second one, to say when to
retry. The per-account REST limit is hit on every request, so it is *synced* instead
(:class:`RateLimiter` with ``synced=True``): each hit is counted in this node's memory
(a node alone never passes the limit). While the account's cluster-wide count, as Redis
last told this node (at most :data:`KNOWN_SECONDS` ago), plus the hits admitted here
since is under half the limit, the hit is admitted without Redis and queued; every
:data:`SYNC_SECONDS` a background pass adds the queued hits to the Redis window and
reads the count back. Otherwise (an account not heard of lately, or one near its limit)
the hit goes to Redis at once, as every hit used to, so the limit is exact where it
matters: a budget spent on one node is refused on the next. Between syncs the nodes may
together admit a little more than a shared count would (each at most half the limit
over what it last heard); a steady client costs no Redis round trip per request. When
Redis fails, the limits do not turn requests into errors: they fail open to
this node's own counts for :data:`OUTAGE_SECONDS`, with one warning in the log per outage,
and go back to Redis after it. Lockout after repeated failed logins, which must hold
across nodes whatever happens to Redis, is kept in the database.
"""

from __future__ import annotations

import asyncio
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
# How often a synced limiter's hits, counted here meanwhile, are added to the Redis window.
SYNC_SECONDS = 0.25
# How long the cluster-wide count Redis last gave for a key is trusted for local admission.
KNOWN_SECONDS = 2.0

SyncKey = tuple[RateLimitItem, str, str]


class RateLimits:
    """The store the limiters count in: this process's memory, or Redis shared by the cluster."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.shared: SlidingWindowCounterRateLimiter | None = None
        self._pool: ConnectionPool | None = None
        self._down_until = 0.0
        # Synced limiters: hits admitted here but not yet in Redis; the cluster-wide count
        # Redis last gave per key, with when (monotonic); keys whose count is to be read
        # back; and the keys the cluster's window refused, with when it has room again.
        self._pending: dict[SyncKey, int] = {}
        self._known: dict[SyncKey, tuple[int, float]] = {}
        self._unread: set[SyncKey] = set()
        self._full: dict[SyncKey, float] = {}
        self._sync: asyncio.TimerHandle | None = None
        self._syncing: asyncio.Task[None] | None = None
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

    def limiter(
        self, name: str, rate: int, per: float = 60.0, *, synced: bool = False
    ) -> RateLimiter:
        return RateLimiter(rate, per, name=name, store=self, synced=synced)

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

    async def hit_synced(self, item: RateLimitItem, name: str, key: str) -> bool:
        """A hit counted here at once; in Redis now when near the limit, else in the background."""
        if self.shared is None or time.monotonic() < self._down_until:
            return await self.hit(item, name, key)
        sync_key = (item, name, key)
        full_until = self._full.get(sync_key)
        if full_until is not None:
            if time.time() < full_until:
                return False
            del self._full[sync_key]
        if not await self.local.hit(item, name, key):
            return False
        pending = self._pending.get(sync_key, 0)
        known = self._known.get(sync_key)
        fresh = known is not None and time.monotonic() - known[1] <= KNOWN_SECONDS
        if fresh and known is not None and 2 * (known[0] + pending + 1) <= item.amount:
            self._pending[sync_key] = pending + 1
            self._schedule_sync()
            return True
        # Not heard of lately, or near the limit: counted in Redis before it is admitted.
        self._pending.pop(sync_key, None)
        try:
            allowed = await self.shared.hit(item, name, key, cost=pending + 1)
        except (StorageError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return True  # this node's own count admitted it
        if not allowed:
            return False
        self._known[sync_key] = (known[0] if known else 0) + pending + 1, time.monotonic()
        self._unread.add(sync_key)  # its true count is read back in the background
        self._schedule_sync()
        return True

    def _schedule_sync(self) -> None:
        if self._sync is None and self._syncing is None:
            self._sync = asyncio.get_running_loop().call_later(SYNC_SECONDS, self._start_sync)

    def synced_reset_at(self, item: RateLimitItem, name: str, key: str) -> float | None:
        """When a key the cluster's window refused has room again (None: not refused)."""
        return self._full.get((item, name, key))

    def _start_sync(self) -> None:
        self._sync = None
        self._syncing = asyncio.ensure_future(self.sync())
        self._syncing.add_done_callback(self._synced)

    def _synced(self, _task: asyncio.Task[None]) -> None:
        self._syncing = None
        if self._pending or self._unread:
            self._schedule_sync()

    async def sync(self) -> None:
        """Add the hits admitted here since the last pass to the shared windows, and read
        each touched key's cluster-wide count back."""
        pending, self._pending = self._pending, {}
        unread, self._unread = self._unread, set()
        if self.shared is None or time.monotonic() < self._down_until:
            return  # counted here only, as every hit during an outage is
        for sync_key in {*pending, *unread}:
            item, name, key = sync_key
            try:
                count = pending.get(sync_key, 0)
                if count and not await self.shared.hit(item, name, key, cost=count):
                    stats = await self.shared.get_window_stats(item, name, key)
                    self._full[sync_key] = max(stats.reset_time, time.time() + 1)
                    self._known.pop(sync_key, None)
                    continue
                stats = await self.shared.get_window_stats(item, name, key)
            except (StorageError, OSError, TimeoutError) as exc:
                self._failed(exc)
                return
            self._known[sync_key] = item.amount - stats.remaining, time.monotonic()
        if len(self._known) > 10_000 or len(self._full) > 10_000:
            now, stale = time.time(), time.monotonic() - KNOWN_SECONDS
            self._full = {k: until for k, until in self._full.items() if until > now}
            self._known = {k: v for k, v in self._known.items() if v[1] > stale}

    async def reset_at(self, item: RateLimitItem, *identifiers: str) -> float:
        strategy = self._strategy()
        if strategy is not self.local:
            try:
                return (await strategy.get_window_stats(item, *identifiers)).reset_time
            except (StorageError, OSError, TimeoutError) as exc:
                self._failed(exc)
        return (await self.local.get_window_stats(item, *identifiers)).reset_time

    async def aclose(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            self._sync = None
        if self._syncing is not None:
            await asyncio.gather(self._syncing, return_exceptions=True)
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
        self,
        rate: int,
        per: float = 60.0,
        *,
        name: str = "",
        store: RateLimits | None = None,
        synced: bool = False,
    ) -> None:
        self.rate = rate
        self.name = name
        self.item = RateLimitItemPerSecond(rate, max(1, math.ceil(per)))
        self.store = store or RateLimits()
        # Counted here at once, in the shared store in the background (see the module).
        self.synced = synced

    async def allow(self, key: str) -> bool:
        if self.synced:
            return await self.store.hit_synced(self.item, self.name, key)
        return await self.store.hit(self.item, self.name, key)

    async def retry_after(self, key: str) -> int:
        """Whole seconds until ``key`` may try again (at least 1 once refused)."""
        if self.synced:
            # Refused by the cluster's window, or by this node's own count.
            reset = self.store.synced_reset_at(self.item, self.name, key)
            if reset is None:
                stats = await self.store.local.get_window_stats(self.item, self.name, key)
                reset = stats.reset_time
        else:
            reset = await self.store.reset_at(self.item, self.name, key)
        return max(1, math.ceil(reset - time.time()))
