"""Two aiortc peers with synthetic video exchange frames, signaling only through the server."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamTrack

from tests.consults.conftest import scheduled_consult
from tests.consults.test_room import enter
from tests.helpers import Api, SocketClient


class Peer:
    """One browser stand-in: a peer connection whose SDP travels as consult.signal events."""

    def __init__(self, sock: SocketClient, consult_id: int, other: int) -> None:
        self.sock, self.consult_id, self.other = sock, consult_id, other
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(VideoStreamTrack())
        self.remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self.pc.on("track", self._on_track)
        sock.sio.on("signal", self._on_signal)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if not self.remote.done():
            self.remote.set_result(track)

    async def send(self, kind: str) -> None:
        desc = self.pc.localDescription
        ack = await self.sock.call(
            "consult.signal",
            {
                "consult_id": self.consult_id,
                "to": self.other,
                "kind": kind,
                "data": {"type": desc.type, "sdp": desc.sdp},
            },
        )
        assert ack["ok"], ack

    async def offer(self) -> None:
        # aiortc gathers its candidates before setLocalDescription returns: no trickle.
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.send("offer")

    async def _on_signal(self, message: dict[str, Any]) -> None:
        desc = RTCSessionDescription(sdp=message["data"]["sdp"], type=message["data"]["type"])
        await self.pc.setRemoteDescription(desc)
        if message["kind"] == "offer":
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.send("answer")

    async def frames(self, count: int) -> list[Any]:
        track = await asyncio.wait_for(self.remote, 20)
        return [await asyncio.wait_for(track.recv(), 20) for _ in range(count)]


async def test_two_aiortc_peers_exchange_frames_through_server_signaling(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    host_sock, gp_sock = await enter(api, consult)
    host = Peer(host_sock, consult["id"], consult["requester_id"])
    gp = Peer(gp_sock, consult["id"], consult["host_id"])
    try:
        await host.offer()
        host_frames, gp_frames = await asyncio.gather(host.frames(3), gp.frames(3))
        assert all(f.width == 640 and f.height == 480 for f in host_frames + gp_frames)
        assert host.pc.connectionState == "connected" and gp.pc.connectionState == "connected"
    finally:
        await asyncio.gather(host.pc.close(), gp.pc.close())
