"""Realtime edge of media: the pre-call check (``precall.*``) and consult recording
(``consult.recording.consent`` / ``.start`` / ``.stop``)."""

from __future__ import annotations

from typing import Any

from aiortc import RTCSessionDescription

from server.config import Settings
from server.core.auth import Requester
from server.media.precall import PrecallService
from server.media.recording import RecordingService
from server.media.schemas import (
    ConsentIn,
    ConsentsOut,
    PrecallAnswer,
    PrecallStats,
    RecordingOut,
    RecordingRef,
    SessionDescription,
)
from server.realtime.gateway import Gateway


def add_precall_events(gateway: Gateway, precall: PrecallService) -> None:
    async def offer(sid: str, requester: Requester, data: SessionDescription) -> PrecallAnswer:
        return await precall.do_offer(
            sid, requester, RTCSessionDescription(sdp=data.sdp, type=data.type)
        )

    async def stats(sid: str, requester: Requester, data: object) -> PrecallStats:
        return await precall.get_stats(sid)

    async def stop(sid: str, requester: Requester, data: object) -> dict[str, Any]:
        await precall.do_stop(sid)
        return {}

    gateway.on("precall.offer", SessionDescription, offer)
    gateway.on("precall.stats", None, stats)
    gateway.on("precall.stop", None, stop)
    gateway.add_disconnect_hook(precall.on_disconnect)


def server_url(settings: Settings, environ: dict[str, Any]) -> str:
    """Where the recording worker reaches this server: the setting, or the local address
    the host's socket came in on (this node, whatever proxy is in front of it)."""
    if settings.recording_server_url:
        return settings.recording_server_url.rstrip("/")
    request = environ.get("aiohttp.request")
    transport = getattr(request, "transport", None)
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = sockname[0], sockname[1]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"
    return settings.effective_public_url


def add_recording_events(gateway: Gateway, recording: RecordingService) -> None:
    async def consent(sid: str, requester: Requester, data: ConsentIn) -> ConsentsOut:
        return await recording.consent(requester, data.consult_id, data.agree)

    async def start(sid: str, requester: Requester, data: RecordingRef) -> RecordingOut:
        url = server_url(recording.settings, gateway.sio.get_environ(sid) or {})
        return await recording.start(requester, data.consult_id, url)

    async def stop(sid: str, requester: Requester, data: RecordingRef) -> RecordingOut:
        return await recording.stop(requester, data.consult_id)

    gateway.on("consult.recording.consent", ConsentIn, consent)
    gateway.on("consult.recording.start", RecordingRef, start)
    gateway.on("consult.recording.stop", RecordingRef, stop)
