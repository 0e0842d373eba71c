"""Socket.IO events of the inbox: ``inbox.read``."""

from __future__ import annotations

from server.core.auth import Requester
from server.inbox import schemas
from server.inbox.service import InboxService
from server.realtime.gateway import Gateway


def register(gateway: Gateway, inbox: InboxService) -> None:
    async def on_read(sid: str, requester: Requester, data: schemas.MarkRead) -> schemas.MarkedRead:
        return await inbox.mark_read(requester, data.ids)

    gateway.on("inbox.read", schemas.MarkRead, on_read)
