"""The pre-call check: an aiortc peer that echoes a user's camera and microphone back.

A client sends its offer over the realtime channel (``precall.offer``); the
server answers from its own ``RTCPeerConnection`` and relays every track it
receives to a sender on the same connection, so the user sees their own
picture come back through the network. ``precall.stats`` reports what the
server measured on its side and a plain verdict.

Every peer is owned by the :class:`PrecallService` registry, keyed by socket:
at most one per socket and ``precall_max_peers`` per process, each closed
after ``precall_max_seconds``, when its connection fails, when its socket
disconnects, when the client stops it and when the app shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription as ParsedSdp
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCTransportStats,
)

from server.config import Settings
from server.core.auth import Requester
from server.core.errors import BadRequest, Conflict, NotFound, TooManyRequests
from server.media.schemas import PrecallAnswer, PrecallStats, StreamStats, Verdict

logger = logging.getLogger(__name__)

# Verdict thresholds. "good" needs every one of them; any one missed makes it "poor".
# 300 ms round trip is where conversation starts to suffer (ITU-T G.114 puts one-way
# mouth-to-ear delay at 150 ms); above 2 % loss or 30 ms jitter video freezes and
# audio crackles; below 100 kbit/s a camera picture is no longer usable.
GOOD_ROUND_TRIP_MS = 300.0
GOOD_PACKET_LOSS = 0.02
GOOD_JITTER_MS = 30.0
GOOD_BITRATE_KBPS = 100.0
# A connection that carries no media this long after the answer has "failed".
NO_MEDIA_FAIL_S = 10.0

Notify = Callable[[str, str, dict[str, Any]], Awaitable[None]]


@dataclass
class PrecallPeer:
    id: str
    sid: str
    user_id: int
    pc: RTCPeerConnection
    started: float
    relay: MediaRelay = field(default_factory=MediaRelay)
    # RTP clock rate of each received kind, to turn jitter into milliseconds.
    clock_rates: dict[str, int] = field(default_factory=dict)
    # (time, bytes received) at the previous stats call: bitrate is measured between calls.
    last_sample: tuple[float, int] | None = None
    expiry: asyncio.TimerHandle | None = None


class PrecallService:
    def __init__(self, settings: Settings, notify: Notify) -> None:
        self.max_peers = settings.precall_max_peers
        self.max_seconds = settings.precall_max_seconds
        self.notify = notify
        self.peers: dict[str, PrecallPeer] = {}
        # Closes started from callbacks (failure, expiry); kept so shutdown can await them.
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.peers)

    async def do_offer(
        self, sid: str, requester: Requester, offer: RTCSessionDescription
    ) -> PrecallAnswer:
        """Start a check for this socket and return the server's answer."""
        if sid in self.peers:
            raise Conflict(
                "a pre-call check is already running on this connection", code="precall_active"
            )
        if len(self.peers) >= self.max_peers:
            raise TooManyRequests(
                "too many pre-call checks right now; try again shortly",
                code="precall_busy",
                headers={"Retry-After": "10"},
            )
        check_offer(offer.sdp)
        loop = asyncio.get_running_loop()
        # No STUN/TURN on the server's side: it answers with its host candidates and the
        # client's own servers find the way to it.
        peer = PrecallPeer(
            id=uuid.uuid4().hex[:12],
            sid=sid,
            user_id=requester.user_id,
            pc=RTCPeerConnection(RTCConfiguration(iceServers=[])),
            started=loop.time(),
        )
        # Registered before the first await, so concurrent offers count against the limits.
        self.peers[sid] = peer
        peer.expiry = loop.call_later(self.max_seconds, self._close_soon, peer, "expired")
        self._log(peer, "created", user_id=requester.user_id)

        @peer.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._log(peer, "echoing track", kind=track.kind)
            peer.pc.addTrack(peer.relay.subscribe(track))

        @peer.pc.on("connectionstatechange")
        def on_state() -> None:
            self._log(peer, "connection state", state=peer.pc.connectionState)
            if peer.pc.connectionState == "failed":
                self._close_soon(peer, "failed")

        try:
            await peer.pc.setRemoteDescription(offer)
            # aiortc gathers every candidate before this returns: the answer is complete.
            await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        except Exception as exc:
            await self._close(peer, None)
            logger.info("precall %s: unusable offer: %s", peer.id, exc)
            raise BadRequest(
                "the offer is not a usable WebRTC session description", code="bad_sdp"
            ) from None
        answer = peer.pc.localDescription
        for media in ParsedSdp.parse(answer.sdp).media:
            if media.rtp.codecs:
                peer.clock_rates[media.kind] = media.rtp.codecs[0].clockRate
        return PrecallAnswer(
            peer_id=peer.id, sdp=answer.sdp, type="answer", expires_in=self.max_seconds
        )

    async def get_stats(self, sid: str) -> PrecallStats:
        """What the server measures on the client's link, and the verdict."""
        peer = self._peer(sid)
        report = await peer.pc.getStats()
        now = asyncio.get_running_loop().time()
        streams: list[StreamStats] = []
        round_trips: list[float] = []
        bytes_received = 0
        for stats in report.values():
            if isinstance(stats, RTCInboundRtpStreamStats):
                clock = peer.clock_rates.get(stats.kind, 90000)
                streams.append(
                    StreamStats(
                        kind=stats.kind,
                        packets_received=stats.packetsReceived,
                        packets_lost=max(stats.packetsLost, 0),
                        jitter_ms=round(stats.jitter * 1000 / clock, 2),
                    )
                )
            elif isinstance(stats, RTCRemoteInboundRtpStreamStats):
                if stats.roundTripTime is not None:
                    round_trips.append(stats.roundTripTime * 1000)
            elif isinstance(stats, RTCTransportStats):
                bytes_received = max(bytes_received, stats.bytesReceived)
        since, bytes_before = peer.last_sample or (peer.started, 0)
        peer.last_sample = (now, bytes_received)
        elapsed = max(now - since, 1e-3)
        received = sum(s.packets_received for s in streams)
        lost = sum(s.packets_lost for s in streams)
        result = PrecallStats(
            peer_id=peer.id,
            state=peer.pc.connectionState,
            elapsed_s=round(now - peer.started, 2),
            round_trip_ms=round(max(round_trips), 1) if round_trips else None,
            packet_loss=round(lost / (received + lost), 4) if received + lost else 0.0,
            jitter_ms=max((s.jitter_ms for s in streams), default=0.0),
            bitrate_kbps=round((bytes_received - bytes_before) * 8 / elapsed / 1000, 1),
            streams=sorted(streams, key=lambda s: s.kind),
            verdict="measuring",
            reasons=[],
        )
        result.verdict, result.reasons = judge(result, received)
        return result

    async def do_stop(self, sid: str) -> None:
        await self._close(self._peer(sid), None)

    async def on_disconnect(self, sid: str) -> None:
        peer = self.peers.get(sid)
        if peer is not None:
            await self._close(peer, None)

    async def close_all(self) -> None:
        await asyncio.gather(*(self._close(peer, None) for peer in list(self.peers.values())))
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: every peer still open is closed at shutdown."""
        yield
        await self.close_all()

    def _peer(self, sid: str) -> PrecallPeer:
        peer = self.peers.get(sid)
        if peer is None:
            raise NotFound("no pre-call check is running on this connection", code="no_precall")
        return peer

    def _close_soon(self, peer: PrecallPeer, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self._close(peer, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, peer: PrecallPeer, reason: str | None) -> None:
        """Close one peer; ``reason`` set means the client did not ask and is told why."""
        if self.peers.get(peer.sid) is not peer:
            return  # already closed by another path
        del self.peers[peer.sid]
        if peer.expiry is not None:
            peer.expiry.cancel()
        await peer.pc.close()
        self._log(peer, "closed", reason=reason or "requested")
        if reason is not None:
            await self.notify(peer.sid, "precall.closed", {"peer_id": peer.id, "reason": reason})

    def _log(self, peer: PrecallPeer, message: str, **fields: Any) -> None:
        logger.info("precall %s: %s", peer.id, message, extra={"peer_id": peer.id, **fields})


def check_offer(sdp: str) -> None:
    """Refuse, before any peer exists, an offer with nothing to echo."""
    try:
        kinds = {media.kind for media in ParsedSdp.parse(sdp).media}
    except Exception:  # the parser raises whatever its input provokes
        kinds = set()
    if not kinds & {"audio", "video"}:
        raise BadRequest("the offer must be a WebRTC offer with audio or video", code="bad_sdp")


def judge(stats: PrecallStats, packets_received: int) -> tuple[Verdict, list[str]]:
    """The plain verdict a user sees, with the reasons for anything short of good."""
    if stats.state in ("failed", "closed"):
        return "failed", [f"connection {stats.state}"]
    if packets_received == 0:
        if stats.elapsed_s >= NO_MEDIA_FAIL_S:
            return "failed", ["no audio or video reached the server"]
        return "measuring", []
    reasons = []
    if stats.round_trip_ms is not None and stats.round_trip_ms > GOOD_ROUND_TRIP_MS:
        reasons.append(f"round trip {stats.round_trip_ms:.0f} ms > {GOOD_ROUND_TRIP_MS:.0f} ms")
    if stats.packet_loss > GOOD_PACKET_LOSS:
        reasons.append(f"packet loss {stats.packet_loss:.1%} > {GOOD_PACKET_LOSS:.0%}")
    if stats.jitter_ms > GOOD_JITTER_MS:
        reasons.append(f"jitter {stats.jitter_ms:.0f} ms > {GOOD_JITTER_MS:.0f} ms")
    if stats.bitrate_kbps < GOOD_BITRATE_KBPS:
        reasons.append(f"bitrate {stats.bitrate_kbps:.0f} kbit/s < {GOOD_BITRATE_KBPS:.0f}")
    if stats.round_trip_ms is None and not reasons:
        return "measuring", []  # the first receiver report (≈1 s) brings the round trip
    return ("poor" if reasons else "good"), reasons
