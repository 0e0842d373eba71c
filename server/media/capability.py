"""Media as a capability: recordings' routes, pre-call and recording events, their peers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.core.capability import Capability, CleanupContext
from server.media.events import add_precall_events, add_recording_events
from server.media.routes import routes

if TYPE_CHECKING:
    from server.container import Services
    from server.realtime.gateway import Gateway


def _socket(gateway: Gateway, services: Services) -> None:
    add_precall_events(gateway, services.precall)
    add_recording_events(gateway, services.recording)


def _lifespan(services: Services) -> Iterable[CleanupContext]:
    yield services.precall.lifespan
    yield services.recording.lifespan


def _on_shutdown(services: Services) -> Iterable[Callable[[web.Application], Any]]:
    yield services.recording.on_shutdown


capability = Capability(
    name="media",
    routes=(routes,),
    socket=_socket,
    lifespan=_lifespan,
    on_shutdown=_on_shutdown,
)
