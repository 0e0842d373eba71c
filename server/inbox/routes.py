"""HTTP edge of the inbox: list my (and my desk's) notifications, mark them read."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes
from server.inbox import schemas

routes = Routes(tag="inbox")


@routes.op(
    "GET",
    "/api/v1/inbox",
    summary="My notifications and my institution desk's, newest first",
    query=schemas.InboxQuery,
    response=schemas.InboxList,
)
async def list_inbox(call: Call[None, schemas.InboxQuery]) -> schemas.InboxList:
    return await services(call).inbox.list_items(
        call.user, unread_only=call.query.unread, limit=call.query.limit
    )


@routes.op(
    "POST",
    "/api/v1/inbox/read",
    summary="Mark notifications read (ids not in my inbox or my desk's are ignored)",
    body=schemas.MarkRead,
    response=schemas.MarkedRead,
)
async def mark_inbox_read(call: Call[schemas.MarkRead, None]) -> schemas.MarkedRead:
    return await services(call).inbox.mark_read(call.user, call.body.ids)
