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
        call.user, unread_only=call.query.unread, limit=call.query.limit, before=call.query.before
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


@routes.op(
    "GET",
    "/api/v1/me/notification-preferences",
    summary="My notification choices: in the app always; outside it per kind and channel",
    response=schemas.PreferencesOut,
)
async def get_notification_preferences(call: Call[None, None]) -> schemas.PreferencesOut:
    return await services(call).inbox.preferences.get(call.user)


@routes.op(
    "PUT",
    "/api/v1/me/notification-preferences",
    summary="Turn a kind of message on or off on an outbound channel (SMS, WeChat)",
    body=schemas.PreferencesIn,
    response=schemas.PreferencesOut,
)
async def put_notification_preferences(
    call: Call[schemas.PreferencesIn, None],
) -> schemas.PreferencesOut:
    return await services(call).inbox.preferences.put(call.user, call.body)
