"""The pre-call check's realtime edge: ``precall.offer``, ``precall.stats``, ``precall.stop``."""

from __future__ import annotations

from typing import Any

from aiortc import RTCSessionDescription

from server.core.auth import Requester
from server.media.precall import PrecallService
from server.media.schemas import PrecallAnswer, PrecallStats, SessionDescription
from server.realtime.gateway import Gateway


def add_precall_events(gateway: Gateway, precall: PrecallService) -> None:
    async def offer(sid: str, requester: Requester, data: SessionDescription) -> PrecallAnswer:
        return await precall.do_offer(
            sid, requester, RTCSessionDescription(sdp=data.sdp, type=data.type)
        )

    async def stats(sid: str, requester: Requester, data: Any) -> PrecallStats:
        return await precall.get_stats(sid)

    async def stop(sid: str, requester: Requester, data: Any) -> dict[str, Any]:
        await precall.do_stop(sid)
        return {}

    gateway.on("precall.offer", SessionDescription, offer)
    gateway.on("precall.stats", None, stats)
    gateway.on("precall.stop", None, stop)
    gateway.add_disconnect_hook(precall.on_disconnect)
