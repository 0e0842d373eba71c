"""The inbox as a capability: its routes, its read receipts over the socket, and the job
that sends patient messages outside the app (``notify.dispatch``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.core.capability import Capability
from server.core.leases import Periodic
from server.inbox import socket
from server.inbox.routes import routes

if TYPE_CHECKING:
    from server.container import Services
    from server.realtime.gateway import Gateway


def _socket(gateway: Gateway, services: Services) -> None:
    socket.register(gateway, services.inbox)


def _jobs(services: Services) -> Iterable[Periodic]:
    # The outbound outbox: SMS / WeChat messages of patient notifications, after commit.
    every = services.settings.notify_dispatch_seconds
    outbox = services.inbox.outbox
    if every > 0 and outbox is not None:

        async def dispatch(tick: int) -> None:
            await outbox.dispatch_due(tick)

        yield Periodic("notify.dispatch", every, dispatch)


capability = Capability(name="inbox", routes=(routes,), socket=_socket, jobs=_jobs)
