"""The recording worker: a process that joins a consult's session and writes one WebM file.

    python -m server.media.recorder        (started and supervised by RecordingService)

Its job arrives as one JSON line on standard input (the token never shows in a
process listing); later lines are commands (``stop``), and the end of standard
input (the server went away) stops it too. It reports on standard output, one
JSON object a line: ``{"event": "recording"}`` once it sits in the session with
the file open, ``{"event": "closed", "reason": …}`` once the file is complete,
``{"event": "failed", "reason": …}`` when it cannot go on (then it exits non-zero).

It is a Socket.IO client of the server like any browser: it joins the consult
with the short-lived token of the system "recorder" user, appears in presence
as ``kind: "recorder"``, and signals through ``consult.signal``. The member who
was there first offers: it answers the offers of those already in the session,
offers (receive-only) to those who join after it, and never sends media. An
``offer`` always starts a new peer connection for that user (a participant who
left and came back), ``renegotiate`` renegotiates the current one.

Composition: the participants' video is a grid on one picture (VP8) and their
audio is mixed into one stereo track (Opus), on the wall clock from the start
of the recording: someone away leaves a black tile or silence, never a jump.
Encoding and writing run on one thread beside the event loop that carries the
peers, so a slow disk never stalls the WebRTC side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import logging
import math
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
import socketio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

logger = logging.getLogger("server.media.recorder")

SAMPLE_RATE = 48000
AUDIO_FRAME = 960  # 20 ms, Opus's usual frame
CHANNELS = 2
# Audio buffered for one participant beyond this is dropped (their clock runs ahead of ours).
MAX_AUDIO_BUFFER = SAMPLE_RATE // 2
BLACK_Y, BLACK_UV = 16, 128


class RecorderFailed(Exception):
    """The recording cannot go on; the message is the reason the room is told."""


@dataclass
class Job:
    url: str
    token: str
    consult_id: int
    recording_id: int
    path: str
    width: int = 640
    height: int = 480
    fps: int = 15
    idle_seconds: float = 300.0
    max_seconds: float = 4 * 3600.0
    video_bitrate: int = 600_000
    nice: int = 0
    # The file may grow to this many bytes (0: no limit); beyond, the recording fails.
    max_bytes: int = 0


def report(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


# --- composition -------------------------------------------------------------------------


@dataclass
class Tile:
    """What one participant shows: the latest picture, scaled for its cell when needed."""

    frame: av.VideoFrame | None = None
    scaled: tuple[int, int, np.ndarray, np.ndarray, np.ndarray] | None = None


def grid(count: int) -> tuple[int, int]:
    cols = max(1, math.ceil(math.sqrt(count)))
    return cols, max(1, math.ceil(count / cols))


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


class Composer:
    """Builds each output picture (a grid of tiles) and each 20 ms of mixed audio."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.tiles: dict[int, Tile] = {}
        self.audio: dict[int, bytearray] = {}

    def add(self, user_id: int) -> None:
        self.tiles.setdefault(user_id, Tile())
        self.audio.setdefault(user_id, bytearray())

    def remove(self, user_id: int) -> None:
        self.tiles.pop(user_id, None)
        self.audio.pop(user_id, None)

    def put_video(self, user_id: int, frame: av.VideoFrame) -> None:
        tile = self.tiles.get(user_id)
        if tile is not None:
            tile.frame, tile.scaled = frame, None

    def put_audio(self, user_id: int, pcm: bytes) -> None:
        buffer = self.audio.get(user_id)
        if buffer is None:
            return
        buffer.extend(pcm)
        excess = len(buffer) - MAX_AUDIO_BUFFER * CHANNELS * 2
        if excess > 0:
            del buffer[:excess]

    def picture(self) -> av.VideoFrame:
        width, height = self.width, self.height
        y = np.full((height, width), BLACK_Y, np.uint8)
        u = np.full((height // 2, width // 2), BLACK_UV, np.uint8)
        v = np.full((height // 2, width // 2), BLACK_UV, np.uint8)
        users = sorted(self.tiles)
        cols, rows = grid(len(users))
        cell_w, cell_h = width // cols, height // rows
        for index, user_id in enumerate(users):
            tile = self.tiles[user_id]
            if tile.frame is None:
                continue
            if tile.scaled is None:
                src = tile.frame
                scale = min(cell_w / src.width, cell_h / src.height)
                tw, th = _even(src.width * scale), _even(src.height * scale)
                planes = src.reformat(width=tw, height=th, format="yuv420p").to_ndarray()
                tile.scaled = (
                    tw,
                    th,
                    planes[:th],
                    planes[th : th + th // 4].reshape(th // 2, tw // 2),
                    planes[th + th // 4 :].reshape(th // 2, tw // 2),
                )
            tw, th, ty, tu, tv = tile.scaled
            col, row = index % cols, index // cols
            x0 = _even(col * cell_w + (cell_w - tw) / 2) if cell_w > tw else col * cell_w // 2 * 2
            y0 = _even(row * cell_h + (cell_h - th) / 2) if cell_h > th else row * cell_h // 2 * 2
            tw, th = min(tw, width - x0), min(th, height - y0)
            y[y0 : y0 + th, x0 : x0 + tw] = ty[:th, :tw]
            u[y0 // 2 : (y0 + th) // 2, x0 // 2 : (x0 + tw) // 2] = tu[: th // 2, : tw // 2]
            v[y0 // 2 : (y0 + th) // 2, x0 // 2 : (x0 + tw) // 2] = tv[: th // 2, : tw // 2]
        packed = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(height * 3 // 2, width)
        return av.VideoFrame.from_ndarray(packed, format="yuv420p")

    def mix(self) -> av.AudioFrame:
        need = AUDIO_FRAME * CHANNELS * 2
        total = np.zeros(AUDIO_FRAME * CHANNELS, np.int32)
        for buffer in self.audio.values():
            if len(buffer) >= need:
                total += np.frombuffer(bytes(buffer[:need]), np.int16)
                del buffer[:need]
        pcm = np.clip(total, -32768, 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        return frame


# --- the file ----------------------------------------------------------------------------


class Writer:
    """The WebM file and its two encoders; every call runs on the writer's own thread."""

    def __init__(self, job: Job) -> None:
        # A cluster a second, written out as it closes: the file grows steadily (its growth
        # is watched) and a killed worker leaves all but the last second readable.
        self.container = av.open(
            job.path,
            mode="w",
            format="webm",
            options={"cluster_time_limit": "1000", "flush_packets": "1"},
        )
        # Real-time speed (given when the stream is made, or libvpx ignores most of it): a
        # few milliseconds a picture instead of tens.
        video = self.container.add_stream(
            "libvpx",
            rate=job.fps,
            options={"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
        )
        video.width, video.height, video.pix_fmt = job.width, job.height, "yuv420p"
        video.bit_rate = job.video_bitrate
        video.codec_context.time_base = Fraction(1, job.fps)
        audio = self.container.add_stream("libopus", rate=SAMPLE_RATE)
        audio.layout = "stereo"
        audio.bit_rate = 48_000
        self.video, self.audio = video, audio
        self.closed = False

    def write_video(self, frame: av.VideoFrame, index: int) -> None:
        frame.pts, frame.time_base = index, self.video.codec_context.time_base
        self.container.mux(self.video.encode(frame))

    def write_audio(self, frame: av.AudioFrame, samples: int) -> None:
        frame.pts, frame.time_base = samples, Fraction(1, SAMPLE_RATE)
        self.container.mux(self.audio.encode(frame))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.container.mux(self.video.encode(None))
            self.container.mux(self.audio.encode(None))
        finally:
            self.container.close()


class FileWatch:
    """Checks, about once a second, that the file can still be written.

    libavformat keeps a write error to itself until the file is closed (a full disk
    shows only then), so the worker looks for itself: the space left on the disk, the
    size limit, and a file that stopped growing while pictures were being written.
    """

    RESERVE = 16 * 1024 * 1024  # stop before the disk is quite full
    STALL_S = 30.0  # libavformat writes in 32 KiB blocks: a few seconds apart at the least

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.size = -1
        self.grown_at: float | None = None

    def check(self, now: float) -> None:
        size = os.stat(self.path).st_size if os.path.exists(self.path) else 0
        if shutil.disk_usage(os.path.dirname(self.path) or ".").free < self.RESERVE:
            raise OSError(errno.ENOSPC, "no space left on the device")
        if self.max_bytes and size >= self.max_bytes:
            raise OSError(errno.EFBIG, "the file reached its size limit")
        if size != self.size or self.grown_at is None:
            self.size, self.grown_at = size, now
        elif now - self.grown_at > self.STALL_S:
            raise OSError(errno.EIO, f"the file has not grown for {self.STALL_S:.0f} s")


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full: the recording could not be written"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "the recording reached its size limit and could not be written further"
    return f"the recording could not be written: {exc}"


# --- the session -------------------------------------------------------------------------


@dataclass
class Peer:
    user_id: int
    pc: RTCPeerConnection
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Recorder:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.5)
        self.composer = Composer(job.width, job.height)
        self.peers: dict[int, Peer] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        self.me: int | None = None
        self.people: list[int] = []
        self.empty_since: float | None = None
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="writer")
        self.writer: Writer | None = None
        self.joined = asyncio.Event()
        # Pictures written, and skipped because the process fell behind the clock.
        self.written = self.skipped = 0
        self.sio.on("connect", self._on_connect)
        self.sio.on("presence", self._on_presence)
        self.sio.on("signal", self._on_signal)
        self.sio.on("event", self._on_event)

    def finish(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_result(reason)

    def fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(RecorderFailed(reason))

    # --- signaling ---

    async def _on_connect(self) -> None:
        asyncio.get_running_loop().create_task(self._join())

    async def _join(self) -> None:
        ack = await self.sio.call("consult.join", {"consult_id": self.job.consult_id}, timeout=15)
        if not ack.get("ok"):
            self.fail(f"the recorder could not join the session: {ack.get('problem')}")
            return
        await self._members(ack["data"]["members"])
        self.joined.set()

    async def _on_presence(self, data: dict[str, Any]) -> None:
        if data.get("consult_id") == self.job.consult_id:
            await self._members(data["members"])

    async def _members(self, members: list[dict[str, Any]]) -> None:
        recorders = [m["user_id"] for m in members if m.get("kind") == "recorder"]
        if recorders and self.me is None:
            self.me = recorders[-1]
        order: list[int] = []
        for member in members:
            if member["user_id"] not in order:
                order.append(member["user_id"])
        people = [u for u in order if u not in recorders]
        self.people = people
        now = asyncio.get_running_loop().time()
        self.empty_since = None if people else (self.empty_since or now)
        for user_id in list(self.peers):
            if user_id not in people:
                await self._drop(user_id)
        mine = order.index(self.me) if self.me in order else len(order)
        for user_id in people:
            # The member who was there first offers: to those who came after the recorder.
            if order.index(user_id) > mine and user_id not in self.peers:
                async with self._lock(user_id):
                    if user_id not in self.peers:
                        await self._offer(user_id)

    def _lock(self, user_id: int) -> asyncio.Lock:
        return self.locks.setdefault(user_id, asyncio.Lock())

    def _new_peer(self, user_id: int) -> Peer:
        peer = Peer(user_id, RTCPeerConnection(RTCConfiguration(iceServers=[])))
        self.peers[user_id] = peer
        self.composer.add(user_id)

        @peer.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            peer.tasks.append(asyncio.get_running_loop().create_task(self._consume(peer, track)))

        @peer.pc.on("connectionstatechange")
        async def on_state() -> None:
            if peer.pc.connectionState == "failed" and self.peers.get(user_id) is peer:
                await self._drop(user_id)

        return peer

    async def _drop(self, user_id: int) -> None:
        peer = self.peers.pop(user_id, None)
        self.composer.remove(user_id)
        if peer is not None:
            for task in peer.tasks:
                task.cancel()
            await peer.pc.close()

    async def _send(self, user_id: int, kind: str, data: dict[str, Any]) -> None:
        ack = await self.sio.call(
            "consult.signal",
            {"consult_id": self.job.consult_id, "to": user_id, "kind": kind, "data": data},
            timeout=10,
        )
        if not ack.get("ok"):
            logger.info("signal to %s refused: %s", user_id, ack.get("problem"))

    async def _offer(self, user_id: int) -> None:
        peer = self._new_peer(user_id)
        peer.pc.addTransceiver("audio", direction="recvonly")
        peer.pc.addTransceiver("video", direction="recvonly")
        # aiortc gathers its candidates before this returns: they are in the SDP.
        await peer.pc.setLocalDescription(await peer.pc.createOffer())
        desc = peer.pc.localDescription
        await self._send(user_id, "offer", {"type": desc.type, "sdp": desc.sdp})

    async def _on_signal(self, message: dict[str, Any]) -> None:
        if message.get("consult_id") != self.job.consult_id:
            return
        user_id, kind, data = message["from"], message["kind"], message.get("data") or {}
        async with self._lock(user_id):
            try:
                await self._handle_signal(user_id, kind, data)
            except Exception as exc:  # one participant's bad signal must not end the recording
                logger.warning("signal %s from %s not usable: %s", kind, user_id, exc)

    async def _handle_signal(self, user_id: int, kind: str, data: dict[str, Any]) -> None:
        if kind == "bye":
            await self._drop(user_id)
            return
        if kind in ("offer", "renegotiate"):
            peer = self.peers.get(user_id)
            if kind == "offer" or peer is None:
                # A new connection from this user: they came back, or both sides offered.
                await self._drop(user_id)
                peer = self._new_peer(user_id)
            await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
            await peer.pc.setLocalDescription(await peer.pc.createAnswer())
            desc = peer.pc.localDescription
            await self._send(user_id, "answer", {"type": desc.type, "sdp": desc.sdp})
            return
        peer = self.peers.get(user_id)
        if peer is None:
            return
        if kind == "answer":
            await peer.pc.setRemoteDescription(
                RTCSessionDescription(sdp=data["sdp"], type="answer")
            )
        elif kind == "candidate":
            line = data.get("candidate") or ""
            if line:
                candidate = candidate_from_sdp(line.split(":", 1)[1] if ":" in line else line)
                candidate.sdpMid = data.get("sdpMid")
                candidate.sdpMLineIndex = data.get("sdpMLineIndex")
                await peer.pc.addIceCandidate(candidate)

    async def _on_event(self, envelope: dict[str, Any]) -> None:
        if envelope.get("stream") != f"consult:{self.job.consult_id}":
            return
        data = envelope.get("data") or {}
        if envelope.get("type") == "recording" and envelope.get("op") in ("stopped", "failed"):
            if data.get("recording_id") == self.job.recording_id:
                self.finish("stopped")
        elif envelope.get("type") == "consult" and envelope.get("op") in (
            "closed",
            "opinion_written",
            "cancelled",
        ):
            self.finish(f"consult {envelope['op']}")

    # --- media ---

    async def _consume(self, peer: Peer, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
        try:
            while True:
                frame = await track.recv()
                # A received track yields decoded frames: video frames on a video track,
                # audio frames on an audio track.
                if isinstance(frame, av.VideoFrame):
                    self.composer.put_video(peer.user_id, frame)
                elif isinstance(frame, av.AudioFrame):
                    for out in resampler.resample(frame):
                        self.composer.put_audio(
                            peer.user_id, bytes(out.planes[0])[: out.samples * 4]
                        )
        except MediaStreamError:
            pass

    async def _produce(self) -> None:
        """Write pictures and audio on the wall clock, catching up if the loop was late."""
        loop = asyncio.get_running_loop()
        writer = self.writer
        assert writer is not None
        start = loop.time()
        frames = samples = 0
        fps = self.job.fps
        watch = FileWatch(self.job.path, self.job.max_bytes)
        checked = start
        while True:
            elapsed = loop.time() - start
            if loop.time() - checked >= 1.0:
                checked = loop.time()
                watch.check(checked)
            due = int(elapsed * fps)
            if due - frames > fps // 2:
                # Over half a second behind (a starved CPU): skip pictures, never time.
                self.skipped += due - frames
                frames = due
            while frames / fps <= elapsed:
                picture = self.composer.picture()
                await loop.run_in_executor(self.pool, writer.write_video, picture, frames)
                frames += 1
                self.written += 1
            while samples + AUDIO_FRAME <= elapsed * SAMPLE_RATE:
                sound = self.composer.mix()
                await loop.run_in_executor(self.pool, writer.write_audio, sound, samples)
                samples += AUDIO_FRAME
            if (
                self.empty_since is not None
                and loop.time() - self.empty_since > self.job.idle_seconds
            ):
                self.finish("no one in the session")
            if elapsed > self.job.max_seconds:
                self.finish("longest recording reached")
            next_due = min(frames / fps, (samples + AUDIO_FRAME) / SAMPLE_RATE)
            await asyncio.sleep(max(0.0, next_due - (loop.time() - start)))

    async def _commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                self.finish("the server went away")
                return
            if line.strip() == b"stop":
                self.finish("stopped")
                return

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.finish, "terminated")
        commands = loop.create_task(self._commands())
        producer: asyncio.Task[None] | None = None
        try:
            try:
                self.writer = await loop.run_in_executor(self.pool, Writer, self.job)
            except Exception as exc:
                raise RecorderFailed(describe(exc)) from None
            try:
                await self.sio.connect(
                    self.job.url,
                    auth={"token": self.job.token},
                    transports=["websocket"],
                    wait_timeout=10,
                )
                joined = loop.create_task(self.joined.wait())
                waiters: list[asyncio.Future[Any]] = [joined, self.done]
                await asyncio.wait(waiters, timeout=20, return_when=asyncio.FIRST_COMPLETED)
                joined.cancel()
                if not self.joined.is_set():
                    raise TimeoutError("no answer to consult.join")
            except Exception as exc:
                if self.done.done():
                    await self.done
                raise RecorderFailed(f"the recorder could not join the session: {exc}") from None
            report("recording")
            producer = loop.create_task(self._produce())
            running: list[asyncio.Future[Any]] = [self.done, producer]
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            if producer.done() and not self.done.done():
                error = producer.exception()
                raise RecorderFailed(describe(error) if error else "the writer stopped")
            return await self.done
        finally:
            commands.cancel()
            if producer is not None:
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await producer
            for user_id in list(self.peers):
                await self._drop(user_id)
            if self.sio.connected:
                with contextlib.suppress(Exception):
                    await self.sio.disconnect()

    async def close_file(self) -> None:
        if self.writer is not None:
            await asyncio.get_running_loop().run_in_executor(self.pool, self.writer.close)
        self.pool.shutdown(wait=True)


async def main_async(job: Job) -> int:
    recorder = Recorder(job)
    try:
        reason = await recorder.run()
    except RecorderFailed as exc:
        logger.error("recording %s failed: %s", job.recording_id, exc)
        with contextlib.suppress(Exception):
            await recorder.close_file()
        report("failed", reason=str(exc))
        return 3
    try:
        await recorder.close_file()
    except Exception as exc:
        report("failed", reason=describe(exc))
        return 3
    report("closed", reason=reason, pictures=recorder.written, skipped=recorder.skipped)
    return 0


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="recorder %(levelname)s %(message)s"
    )
    for noisy in ("aioice", "aiortc", "socketio", "engineio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Byte by byte: the rest of standard input (the commands) is read by the event loop.
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            break
        line += chunk
    try:
        job = Job(**json.loads(line))
    except (ValueError, TypeError) as exc:
        report("failed", reason=f"bad job: {exc}")
        return 2
    if job.nice:
        os.nice(job.nice)  # the server's event loop goes first when the CPU is full
    return asyncio.run(main_async(job))


if __name__ == "__main__":
    sys.exit(main())
