"""The inbox as a capability: its routes and its read receipts over the socket."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.core.capability import Capability
from server.inbox import socket
from server.inbox.routes import routes

if TYPE_CHECKING:
    from server.container import Services
    from server.realtime.gateway import Gateway


def _socket(gateway: Gateway, services: Services) -> None:
    socket.register(gateway, services.inbox)


capability = Capability(name="inbox", routes=(routes,), socket=_socket)
