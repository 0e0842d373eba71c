"""No silent lag: the heads of the streams a node's sockets sit in, sent when a push went missing.

A push is at-most-once: Redis pub/sub drops what a node publishes while Redis is
away or while another node's listener is not subscribed, and an after-commit push
may fail. A client that keeps its socket never learns of it until some later push
reveals a gap — maybe never. This module makes the node notice instead:

- Every push that reaches this node's sockets (``event`` to a stream room, from this
  node or from another through Redis) is noted: :meth:`HeadsBeacon.note` keeps the
  highest number delivered per stream.
- Every ``SOCKET_HEADS_SECONDS`` the beacon reads which streams moved since its last
  looks (one range read of ``stream_events`` by id, grouped by stream: the database is
  the source of truth and needs no Redis). A stream with sockets here whose newest
  committed event was already committed at the previous look and still has not been
  delivered here was lost on its way: its room gets ``heads`` — ``{"heads": {stream:
  seq}}`` — from this node only, and the clients ``sync`` it. One interval of grace
  keeps a push that is merely in flight from causing a needless ``sync``.
- When the node's Redis listener subscribes again after losing Redis, every stream
  room with sockets here gets its head (:meth:`HeadsBeacon.announce_all`): whatever
  other nodes published meanwhile never reached this node.

A client follows one rule (``docs/realtime.md``): on ``heads``, ``sync`` each named
stream whose head is above the last number it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import socketio

from server.core.events import Events

logger = logging.getLogger(__name__)

HEADS = "heads"
# Streams whose heads go out in one announcement query (bound parameters per statement).
ANNOUNCE_BATCH = 500


def is_stream_room(room: Any) -> bool:
    """A room that is also a stream (``user:5``, ``consult:12``): not a socket's own room
    (a sid has no colon), not a session's, not a room without a log (``…:live``)."""
    return (
        isinstance(room, str)
        and ":" in room
        and not room.startswith("session:")
        and not room.endswith(":live")
    )


class HeadsBeacon:
    """Per node: what was delivered here, what the database holds, and ``heads`` when they differ."""

    def __init__(self, sio: socketio.AsyncServer, events: Events, interval: float) -> None:
        self.sio = sio
        self.events = events
        self.interval = interval
        # stream → the highest seq pushed to this node's sockets.
        self.delivered: dict[str, int] = {}
        # stream → a committed seq this node had not delivered at the last look.
        self._behind: dict[str, int] = {}
        # Where the next look starts (stream_events.id), and where the one before started:
        # each look reads two intervals, so an event whose id was taken before a
        # later-numbered one but committed after it is still seen.
        self._after: int | None = None
        self._previous_after = 0
        self.sent = 0  # heads events sent (one per room), for tests and metrics
        self._last_prune = time.monotonic()

    # -- what reached this node -------------------------------------------------------

    def note(self, event: str, data: Any) -> None:
        """Called by the manager for every local delivery (cheap: no I/O)."""
        if event != "event" or not isinstance(data, dict):
            return
        stream, seq = data.get("stream"), data.get("seq")
        if isinstance(stream, str) and isinstance(seq, int) and seq > self.delivered.get(stream, 0):
            self.delivered[stream] = seq

    # -- the looks --------------------------------------------------------------------

    def _local_rooms(self) -> dict[Any, Any]:
        rooms: dict[Any, Any] = self.sio.manager.rooms.get("/", {})
        return rooms

    async def tick(self) -> int:
        """One look; returns how many rooms were sent ``heads``."""
        if self._after is None:
            # The first look only takes the position: what was committed before this node
            # started, its clients catch up by their connect-time sync.
            self._after = await self.events.last_event_id()
            self._previous_after = self._after
            return 0
        moved, newest = await self.events.heads_since(self._previous_after)
        self._previous_after, self._after = self._after, max(self._after, newest)
        rooms = self._local_rooms()
        behind: dict[str, int] = {}
        announce: dict[str, int] = {}
        # Undelivered at the last look and still undelivered: lost, not late (whether or
        # not this look read the stream again).
        for stream, seq in self._behind.items():
            if rooms.get(stream) and seq > self.delivered.get(stream, 0):
                announce[stream] = max(seq, moved.get(stream, 0))
        for stream, seq in moved.items():
            if stream not in announce and rooms.get(stream) and seq > self.delivered.get(stream, 0):
                behind[stream] = seq
        self._behind = behind
        await self._send(announce)
        self._prune(rooms)
        return len(announce)

    async def announce_all(self) -> int:
        """Send every stream room with sockets here its head (after Redis came back)."""
        streams = sorted(r for r, members in self._local_rooms().items()
                         if members and is_stream_room(r))  # fmt: skip
        sent = 0
        for start in range(0, len(streams), ANNOUNCE_BATCH):
            heads = await self.events.heads(streams[start : start + ANNOUNCE_BATCH])
            known = {stream: seq for stream, seq in heads.items() if seq > 0}
            await self._send(known)
            sent += len(known)
        return sent

    async def _send(self, heads: dict[str, int]) -> None:
        for stream, seq in heads.items():
            # This node's sockets only: every node runs its own beacon.
            await self.sio.manager.emit(
                HEADS, {"heads": {stream: seq}}, namespace="/", room=stream, ignore_queue=True
            )
            self.delivered[stream] = max(seq, self.delivered.get(stream, 0))
            self.sent += 1

    def _prune(self, rooms: dict[Any, Any]) -> None:
        """Forget streams no socket here sits in any more (once a minute)."""
        now = time.monotonic()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        for stream in [s for s in self.delivered if not rooms.get(s)]:
            del self.delivered[stream]

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database is away (its own outage is reported elsewhere): look again.
                logger.debug("stream heads look failed: %s", type(exc).__name__)

    async def resubscribed(self) -> None:
        """The Redis listener subscribed again: tell this node's clients where streams are."""
        try:
            sent = await self.announce_all()
        except Exception:
            logger.warning("could not announce stream heads after Redis returned", exc_info=True)
            return
        logger.info("redis listener subscribed again; stream heads sent", extra={"rooms": sent})

    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """``cleanup_ctx``: the looks run for as long as the app.

        The first position is taken before the node serves: an event committed after a
        client's connect-time sync and before the first look is a look's business too.
        """
        try:
            self._after = self._previous_after = await self.events.last_event_id()
        except Exception as exc:  # the database is away: the first look takes it
            logger.debug("stream heads: no start position: %s", type(exc).__name__)
        task = asyncio.get_running_loop().create_task(self.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
