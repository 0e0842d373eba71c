"""Ended sessions, told to every node at once.

When a login session ends (logout, password change, idle logoff, a disabled
account, an administrator's revocation, a replayed refresh token) the ending
transaction commits first, then :meth:`SessionEnds.announce` runs: this node
applies it at once and publishes it on Redis (``<redis_channel>:sessions``);
every other node's listener applies it when the message arrives (milliseconds).
The same channel carries revocations: when a patient revokes sharing with an
institution, that institution's sockets leave the patient's consult rooms on
every node (:meth:`SessionEnds.announce_revocation`).
"Applying" means remembering the id in a per-node set (so an event on a socket
of that session is refused without a database read) and calling the
listeners: the gateway disconnects its local sockets of the session.

Applying also drops the sessions from this node's :class:`SessionCache`: what
REST knows of a session (its user, whether the account is active, whether it
ended, when it was last seen) is read once and answered from memory for at most
``session_cache_seconds`` (default 5 s), so an authenticated request costs no
database read. An ended session is refused at once on this node (the announcing
one) and on the others as soon as the broadcast lands.

A broadcast can be lost (a node whose Redis link is down). That is covered, not
prevented: the database stays the truth. A cached entry is re-read once it is
older than ``session_cache_seconds``, so a lost broadcast (or a row changed by
other means) delays the refusal on REST by at most that; an open socket re-reads
the session from the database at most every ``session_check_seconds`` and is closed
if it ended. Without Redis (one process) the announcement is local only.

Every process also notes each ending in a file of the data folder
(``<data_dir>/sessions-ended``), and a node that finds the file changed since its last
look (one ``stat`` per check) empties its cache: an ending by a process that cannot
publish (``yihao user disable`` run without Redis, beside an embedded server or a node on
the same host) is refused at the next request too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

SessionsEnded = Callable[[list[str], str], Awaitable[None]]
# (rooms, institution id): that institution's sockets must leave those rooms.
RoomsRevoked = Callable[[list[str], int], Awaitable[None]]


@dataclass(slots=True)
class CachedSession:
    """What the session check needs of one login session, as read from the database."""

    user_id: int
    active: bool  # the account's
    revoked: bool
    last_seen: datetime  # the latest activity known here (written back at most once a minute)
    read_at: float  # time.monotonic() of the database read


class SessionCache:
    """Sessions by id, each kept at most ``ttl`` seconds after its database read.

    Entries are dropped when their sessions end (:meth:`SessionEnds._apply`, on every
    node) and when the account changes on this node; the TTL bounds what a lost
    broadcast can leave. ``ttl`` 0 keeps nothing (every check reads the database).
    """

    MAX_ENTRIES = 100_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, CachedSession] = {}
        # What else is kept as long and dropped with the sessions (GET /me's answers).
        self.profiles: dict[int, tuple[float, Any]] = {}

    def clear(self) -> None:
        self._entries.clear()
        self.profiles.clear()

    def get(self, session_id: str) -> CachedSession | None:
        entry = self._entries.get(session_id)
        if entry is not None and time.monotonic() - entry.read_at > self.ttl:
            del self._entries[session_id]
            return None
        return entry

    def put(self, session_id: str, entry: CachedSession) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self.purge()
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
        self._entries[session_id] = entry

    def purge(self) -> None:
        """Drop every entry past its TTL."""
        cutoff = time.monotonic() - self.ttl
        for stale in [s for s, e in self._entries.items() if e.read_at < cutoff]:
            del self._entries[stale]

    def forget(self, session_ids: Iterable[str]) -> None:
        for session_id in session_ids:
            self._entries.pop(session_id, None)

    def forget_user(self, user_id: int) -> None:
        for stale in [s for s, e in self._entries.items() if e.user_id == user_id]:
            del self._entries[stale]


class SessionEnds:
    def __init__(
        self,
        channel: str,
        node: str,
        keep_seconds: float,
        listeners: Sequence[SessionsEnded] = (),
        revocation_listeners: Sequence[RoomsRevoked] = (),
        cache_seconds: float = 0.0,
        marker: Path | None = None,
    ) -> None:
        self.channel = f"{channel}:sessions"
        self.node = node
        # An id must outlive any socket check that could still see the session as open.
        self.keep_seconds = keep_seconds
        # What REST knows of open sessions; an ending drops its entries here, on every node.
        self.cache = SessionCache(cache_seconds)
        # The file every process notes its endings in (see the module); None: not watched.
        self.marker = marker
        self._marker_seen = self._marker_state()
        self.redis: Redis | None = None
        self._ended: dict[str, float] = {}
        self._listeners = tuple(listeners)
        self._revocation_listeners = tuple(revocation_listeners)
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def announce_revocation(self, rooms: Iterable[str], institution_id: int) -> None:
        """Tell every node (this one first) that an institution's sockets must leave these
        rooms (a patient revoked sharing with it). Call after commit."""
        names = sorted(set(rooms))
        if not names:
            return
        await self._revoke(names, institution_id)
        if self.redis is None:
            return
        message = json.dumps({"node": self.node, "rooms": names, "institution_id": institution_id})
        try:
            await self.redis.publish(self.channel, message)
        except Exception:
            # Committed already; those sockets' next events are refused and a reconnect
            # no longer places them in the rooms.
            logger.exception("could not publish a revocation", extra={"count": len(names)})

    async def _revoke(self, rooms: list[str], institution_id: int) -> None:
        for listener in self._revocation_listeners:
            try:
                await listener(rooms, institution_id)
            except Exception:
                logger.exception("a revocation listener failed")

    def is_ended(self, session_id: str) -> bool:
        return session_id in self._ended

    def _marker_state(self) -> tuple[int, int, int] | None:
        if self.marker is None:
            return None
        try:
            found = os.stat(self.marker)
        except OSError:
            return None
        return found.st_ino, found.st_size, found.st_mtime_ns

    def check_marker(self) -> None:
        """Empty the cache if some process noted an ending since the last look."""
        if self.marker is None:
            return
        state = self._marker_state()
        if state != self._marker_seen:
            self._marker_seen = state
            self.cache.clear()

    def _note_in_marker(self, ids: list[str]) -> None:
        if self.marker is None:
            return
        line = f"{time.time():.3f} {self.node} {' '.join(ids)}\n"
        try:
            if self.marker.exists() and self.marker.stat().st_size > 65536:
                fresh = self.marker.with_name(self.marker.name + ".new")
                fresh.write_text(line)
                os.replace(fresh, self.marker)  # a new file: its inode tells the change
            else:
                with self.marker.open("a") as file:
                    file.write(line)
        except OSError:
            logger.warning("could not note ended sessions in %s", self.marker, exc_info=True)

    async def announce(self, session_ids: Iterable[str], reason: str) -> None:
        """Tell every node (this one first) that these sessions ended. Call after commit."""
        ids = sorted(set(session_ids))
        if not ids:
            return
        await self._apply(ids, reason)
        self._note_in_marker(ids)
        if self.redis is None:
            return
        message = json.dumps({"node": self.node, "sessions": ids, "reason": reason})
        try:
            await self.redis.publish(self.channel, message)
        except Exception:
            # Committed already; the other nodes' sockets find out at their next session check.
            logger.exception("could not publish ended sessions", extra={"count": len(ids)})

    async def _apply(self, ids: list[str], reason: str) -> None:
        now = time.monotonic()
        for stale in [s for s, at in self._ended.items() if now - at > self.keep_seconds]:
            del self._ended[stale]
        for session_id in ids:
            self._ended[session_id] = now
        self.cache.forget(ids)
        for listener in self._listeners:
            try:
                await listener(ids, reason)
            except Exception:
                logger.exception("an ended-session listener failed")

    async def _handle(self, raw: Any) -> None:
        try:
            message = json.loads(raw)
            node = message.get("node")
            if "rooms" in message:
                rooms = [str(r) for r in message["rooms"]]
                institution_id = int(message["institution_id"])
            else:
                ids = [str(s) for s in message["sessions"]]
                reason = str(message["reason"])
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("ignored a malformed ended-session message")
            return
        if node == self.node:  # this node applied its own announcement already
            return
        if "rooms" in message:
            await self._revoke(rooms, institution_id)
        else:
            await self._apply(ids, reason)

    async def _listen(self, redis: Redis) -> None:
        while True:
            pubsub = redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                while True:
                    # A timeout, not a blocking read: the client's socket timeout would fire
                    # on a quiet channel, and each pass is a chance to notice a dead link.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._handle(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                self.subscribed.clear()
                logger.warning("ended-session listener lost Redis; resubscribing", exc_info=True)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    # redis-py leaves PubSub.aclose unannotated.
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    @contextlib.asynccontextmanager
    async def listening(self, redis: Redis | None) -> AsyncIterator[None]:
        """Publish and listen on ``redis`` while the app runs (nothing to do without it)."""
        self.redis = redis
        if redis is not None:
            self._task = asyncio.create_task(self._listen(redis), name="session-ends")
            # Subscribed before the app serves: an ending published meanwhile would be missed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.subscribed.wait(), 5)
        try:
            yield
        finally:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
                self._task = None
            self.redis = None
