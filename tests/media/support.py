"""A browser stand-in for the pre-call check: an aiortc peer with a synthetic camera and mic."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamTrack
from av import VideoFrame

from tests.helpers import SocketClient

WIDTH, HEIGHT = 320, 240


class SyntheticCamera(VideoStreamTrack):
    """Frames of fresh noise each time, so the encoder has real work and real bitrate."""

    def __init__(self, width: int = WIDTH, height: int = HEIGHT) -> None:
        super().__init__()
        self.width, self.height = width, height

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(self.width, self.height, "yuv420p")
        for plane in frame.planes:
            plane.update(os.urandom(plane.buffer_size))
        frame.pts, frame.time_base = pts, time_base
        return frame


class PrecallClient:
    """Offers through ``precall.offer`` on a real socket and receives the echoed tracks."""

    def __init__(self, sock: SocketClient, camera: MediaStreamTrack | None = None) -> None:
        self.sock = sock
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(camera or SyntheticCamera())
        self.pc.addTrack(AudioStreamTrack())
        loop = asyncio.get_running_loop()
        self.echoed: dict[str, asyncio.Future[MediaStreamTrack]] = {
            "audio": loop.create_future(),
            "video": loop.create_future(),
        }
        self.closed: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.pc.on("track", self._on_track)
        sock.sio.on("precall.closed", self._on_closed)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.echoed[track.kind].set_result(track)

    async def _on_closed(self, data: dict[str, Any]) -> None:
        if not self.closed.done():
            self.closed.set_result(data)

    async def offer(self) -> dict[str, Any]:
        """Send the offer; on success apply the server's answer. Returns the ack."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        desc = self.pc.localDescription
        ack = await self.sock.call("precall.offer", {"sdp": desc.sdp, "type": desc.type}, 20)
        if ack["ok"]:
            answer = ack["data"]
            await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return ack

    async def start(self) -> dict[str, Any]:
        ack = await self.offer()
        assert ack["ok"], ack
        return ack["data"]  # type: ignore[no-any-return]

    async def frames(self, kind: str, count: int) -> list[Any]:
        track = await asyncio.wait_for(self.echoed[kind], 20)
        return [await asyncio.wait_for(track.recv(), 20) for _ in range(count)]

    async def stats_until(self, done: Any, timeout: float = 15) -> dict[str, Any]:
        """Ask for stats until ``done(stats)``; the server's figures need RTCP reports (~1 s)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            ack = await self.sock.call("precall.stats", {})
            assert ack["ok"], ack
            if done(ack["data"]):
                return ack["data"]  # type: ignore[no-any-return]
            assert asyncio.get_running_loop().time() < deadline, ack["data"]
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        await self.pc.close()
