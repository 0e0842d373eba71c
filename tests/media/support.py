"""A browser stand-in for the pre-call check: an aiortc peer with a synthetic camera and mic."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame, VideoFrame

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


class FlatCamera(VideoStreamTrack):
    """A picture of one flat grey level, so a composed recording shows whose tile is whose."""

    FPS = 15  # a phone camera in poor light; half the encoding work of aiortc's 30

    def __init__(self, luma: int, width: int = WIDTH, height: int = HEIGHT) -> None:
        super().__init__()
        self.luma, self.width, self.height = luma, width, height
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> VideoFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._count += 1
            await asyncio.sleep(max(0.0, self._start + self._count / self.FPS - loop.time()))
        pts, time_base = self._count * (90000 // self.FPS), Fraction(1, 90000)
        frame = VideoFrame(self.width, self.height, "yuv420p")
        for plane, value in zip(frame.planes, (self.luma, 128, 128), strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneMicrophone(AudioStreamTrack):
    """A steady 440 Hz tone (stereo, 48 kHz), so the mixed recording is audibly not silent."""

    async def recv(self) -> AudioFrame:
        frame = await super().recv()  # paces like a real microphone: 20 ms a frame
        start = frame.pts or 0
        t = (np.arange(start, start + frame.samples) / frame.sample_rate).astype(np.float64)
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        stereo = np.repeat(tone, 2).reshape(1, -1)
        out = AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        out.pts, out.time_base, out.sample_rate = frame.pts, frame.time_base, frame.sample_rate
        return out


class RoomPeer:
    """A browser in a consult's live session, following the room's signaling rule.

    The member who was there first offers: it offers its camera and microphone to
    members who join after it (the recorder, when recording starts) and answers the
    offers of those who were there before it (the recorder, when it rejoins).
    Only the recorder is connected to here; peers among the people are another test's.
    """

    def __init__(
        self,
        sock: SocketClient,
        consult_id: int,
        user_id: int,
        luma: int,
        camera: Callable[[], MediaStreamTrack] | None = None,
    ) -> None:
        self.sock, self.consult_id, self.user_id, self.luma = sock, consult_id, user_id, luma
        self.camera = camera or (lambda: FlatCamera(self.luma))
        self.pcs: dict[int, RTCPeerConnection] = {}
        self.members: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        sock.sio.on("signal", self._on_signal)
        sock.sio.on("presence", self._on_presence)

    def _new_pc(self, other: int) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(self.camera())
        pc.addTrack(ToneMicrophone())
        self.pcs[other] = pc
        return pc

    async def _send(self, to: int, kind: str, pc: RTCPeerConnection) -> None:
        desc = pc.localDescription
        ack = await self.sock.call(
            "consult.signal",
            {
                "consult_id": self.consult_id,
                "to": to,
                "kind": kind,
                "data": {"type": desc.type, "sdp": desc.sdp},
            },
        )
        assert ack["ok"], ack

    async def join(self) -> dict[str, Any]:
        ack = await self.sock.call("consult.join", {"consult_id": self.consult_id})
        assert ack["ok"] and ack["data"]["state"] == "joined", ack
        await self._update(ack["data"]["members"])
        return ack["data"]  # type: ignore[no-any-return]

    async def leave(self) -> None:
        ack = await self.sock.call("consult.leave", {"consult_id": self.consult_id})
        assert ack["ok"], ack
        await self.close()

    async def _on_presence(self, data: dict[str, Any]) -> None:
        if data["consult_id"] == self.consult_id:
            await self._update(data["members"])

    async def _update(self, members: list[dict[str, Any]]) -> None:
        async with self._lock:
            self.members = members
            order = [m["user_id"] for m in members]
            if self.user_id not in order:
                return
            mine = order.index(self.user_id)
            recorders = [m["user_id"] for m in members if m["kind"] == "recorder"]
            for other in list(self.pcs):
                if other not in order:
                    await self.pcs.pop(other).close()
            for other in recorders:
                if order.index(other) > mine and other not in self.pcs:
                    pc = self._new_pc(other)
                    await pc.setLocalDescription(await pc.createOffer())
                    await self._send(other, "offer", pc)

    async def _on_signal(self, message: dict[str, Any]) -> None:
        other, data = message["from"], message["data"]
        async with self._lock:
            desc = RTCSessionDescription(sdp=data["sdp"], type=data["type"])
            if message["kind"] == "offer":
                if other in self.pcs:
                    await self.pcs.pop(other).close()
                pc = self._new_pc(other)
                await pc.setRemoteDescription(desc)
                await pc.setLocalDescription(await pc.createAnswer())
                await self._send(other, "answer", pc)
            elif message["kind"] == "answer" and other in self.pcs:
                await self.pcs[other].setRemoteDescription(desc)

    def connected(self) -> bool:
        return any(pc.connectionState == "connected" for pc in self.pcs.values())

    async def close(self) -> None:
        pcs, self.pcs = list(self.pcs.values()), {}
        await asyncio.gather(*(pc.close() for pc in pcs))
