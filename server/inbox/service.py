"""The realtime inbox: notifications per user and per institution desk, with read state.

An inbox is a core stream (:mod:`server.core.events`): ``user:<id>`` for a
person, ``desk:<id>`` for an institution's clinical desk, which the
institution's clinicians sit in (not its administrators or pharmacists). :meth:`InboxService.notify` is called
by other capabilities inside their transaction; it persists one
:class:`InboxItem` per recipient stream and appends an ``inbox``/``notification``
event to that stream, pushed after commit and replayed by ``sync`` on
reconnect, so nothing is lost while a desk is offline. Marking items read is a
write too: it appends ``inbox``/``read`` on the same stream, so the user's
other devices and the desk's other members see it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update

from server.core.auth import Requester
from server.core.db import Database, Tx, utcnow
from server.core.events import Events
from server.core.roles import Role
from server.identity.directory import Directory
from server.inbox import schemas
from server.inbox.dispatch import Outbox, Preferences
from server.inbox.models import InboxItem
from server.inbox.outbound import TEMPLATES
from server.realtime.gateway import base_rooms, desk_stream

EVENT_TYPE = "inbox"


def user_stream(user_id: int) -> str:
    return f"user:{user_id}"


def item_out(item: InboxItem) -> schemas.InboxItemOut:
    return schemas.InboxItemOut(
        id=item.id,
        stream=item.stream,
        seq=item.seq or 0,
        kind=item.kind,
        title=item.title,
        resource=item.resource,
        data=item.data,
        created_at=item.created_at,
        read=item.read_at is not None,
        read_at=item.read_at,
        read_by=item.read_by,
    )


class InboxService:
    def __init__(
        self,
        db: Database,
        events: Events,
        directory: Directory,
        outbox: Outbox | None = None,
        preferences: Preferences | None = None,
    ) -> None:
        self.db = db
        self.events = events
        self.directory = directory
        # Patient kinds also go out by SMS / WeChat (server/inbox/dispatch.py), unless the
        # patient opted out (``preferences``).
        self.outbox = outbox
        self.preferences = preferences or Preferences(db, ())

    async def notify(
        self,
        tx: Tx,
        *,
        kind: str,
        title: str,
        users: Iterable[int] = (),
        institutions: Iterable[int] = (),
        patients: Iterable[int] = (),
        resource: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> list[int]:
        """Notify people (``users``, the accounts of ``patients``) and desks; returns item ids.

        Each recipient stream gets the notification once, however it was named.
        """
        user_ids = list(users)
        patient_ids = list(patients)
        patient_users: list[int] = []
        if patient_ids:
            patient_users = await self.directory.user_ids_of_patients(tx.session, patient_ids)
            user_ids += patient_users
        outbound = self.outbox is not None and kind in TEMPLATES
        if outbound and len(patient_users) < len(user_ids):
            # A patient named by account rather than as a patient is still a patient.
            named = await self.directory.users(tx.session, user_ids)
            patient_users += [u for u, ref in named.items() if ref.role == Role.PATIENT]
        streams = list(
            dict.fromkeys(
                [user_stream(u) for u in user_ids] + [desk_stream(i) for i in institutions]
            )
        )
        now = utcnow()
        ids: list[int] = []
        to_send: dict[str, int] = {user_stream(u): u for u in patient_users} if outbound else {}
        queued: list[tuple[int, int]] = []
        for stream in streams:
            item = InboxItem(
                stream=stream,
                kind=kind,
                title=title,
                resource=resource,
                data=data or {},
                created_at=now,
            )
            tx.session.add(item)
            await tx.session.flush()
            envelope = await self.events.append(
                tx,
                stream,
                EVENT_TYPE,
                "notification",
                {"id": item.id, "kind": kind, "title": title, "resource": resource,
                 "data": item.data, "read": False},
            )  # fmt: skip
            envelope.number_into(item)
            await tx.session.flush()
            ids.append(item.id)
            if stream in to_send:
                queued.append((item.id, to_send[stream]))
        if queued and self.outbox is not None:
            await self.outbox.write(tx, kind, data or {}, queued)
        return ids

    async def list_items(
        self,
        requester: Requester,
        *,
        unread_only: bool = False,
        limit: int = 100,
        before: int | None = None,
    ) -> schemas.InboxList:
        streams = base_rooms(requester)
        async with self.db.read() as session:
            query = select(InboxItem).where(InboxItem.stream.in_(streams))
            if unread_only:
                query = query.where(InboxItem.read_at.is_(None))
            if before is not None:
                query = query.where(InboxItem.id < before)
            rows = list(await session.scalars(query.order_by(InboxItem.id.desc()).limit(limit + 1)))
            items = [item_out(row) for row in rows[:limit]]
            unread = await session.scalar(
                select(func.count(InboxItem.id)).where(
                    InboxItem.stream.in_(streams), InboxItem.read_at.is_(None)
                )
            )
        return schemas.InboxList(
            items=items,
            unread=int(unread or 0),
            next_before=items[-1].id if len(rows) > limit else None,
        )

    async def mark_read(self, requester: Requester, ids: list[int]) -> schemas.MarkedRead:
        """Mark the requester's (or their desk's) items read; ids of others are ignored."""
        streams = base_rooms(requester)
        async with self.db.transaction() as tx:
            rows = list(
                await tx.session.execute(
                    update(InboxItem)
                    .where(
                        InboxItem.id.in_(ids),
                        InboxItem.stream.in_(streams),
                        InboxItem.read_at.is_(None),
                    )
                    .values(read_at=utcnow(), read_by=requester.user_id)
                    .returning(InboxItem.id, InboxItem.stream)
                )
            )
            by_stream: dict[str, list[int]] = {}
            for item_id, stream in rows:
                by_stream.setdefault(stream, []).append(item_id)
            for stream, marked in sorted(by_stream.items()):
                await self.events.append(
                    tx,
                    stream,
                    EVENT_TYPE,
                    "read",
                    {"ids": sorted(marked), "read_by": requester.user_id},
                )
        return schemas.MarkedRead(ids=sorted(item_id for item_id, _ in rows))
