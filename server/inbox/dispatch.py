"""The outbound outbox and the patient's opt-outs.

:meth:`Outbox.write` runs inside the transaction of the inbox item (called by
:meth:`~server.inbox.service.InboxService.notify`): for a patient kind, one
``outbound_messages`` row per patient account and configured channel, ``pending``, or
``skipped_opt_out`` when the patient turned that kind off on that channel. Nothing is sent
from the transaction: the ``notify.dispatch`` job (:meth:`Outbox.dispatch_due`) sends what
is due after commit, on one node per round.

**At most once.** A row is *claimed* before it is sent, by one conditional UPDATE
(``pending`` → ``sending``, one attempt counted), so two rounds or two nodes cannot both
send it. The channel's answer is then written: ``sent`` with the provider's message id, or
``pending`` again with a later ``next_attempt_at`` (``NOTIFY_RETRY_SECONDS``, doubled each
try, at most 10 minutes) after a failure the provider surely did not send (no connection, a
5xx or 429), ``failed`` when ``NOTIFY_MAX_ATTEMPTS`` are spent, and ``failed`` at once when
the answer leaves it unknown (a timeout, a dropped connection) or refuses it for good (4xx).
A node killed between the claim and the answer leaves the row ``sending``; once its claim
has run out the row is marked ``failed`` ("outcome unknown"), never sent again: a patient
may miss one SMS, but never gets two.

The opt-out is read again at the claim, so turning a kind off holds for what is still queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.config import Settings
from server.core.auth import Requester
from server.core.db import Database, Tx, utcnow
from server.core.errors import Forbidden, ValidationFailed
from server.identity.directory import Directory
from server.inbox import schemas
from server.inbox.models import NotificationPreference, OutboundMessage
from server.inbox.outbound import KINDS, Channel, ChannelError, Recipient, template_for

logger = logging.getLogger(__name__)

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
SKIPPED_OPT_OUT, SKIPPED_NO_ADDRESS = "skipped_opt_out", "skipped_no_address"
BATCH = 100
MAX_BACKOFF = timedelta(minutes=10)


@dataclass(frozen=True)
class Claimed:
    id: int
    user_id: int
    kind: str
    channel: str
    template_id: str
    params: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Outcome:
    message_id: str | None
    error: str = ""
    retry: bool = False


class Outbox:
    def __init__(
        self, settings: Settings, db: Database, directory: Directory, channels: dict[str, Channel]
    ) -> None:
        self.db = db
        self.directory = directory
        self.channels = channels
        self.max_attempts = settings.notify_max_attempts
        self.retry = timedelta(seconds=settings.notify_retry_seconds)
        # A claim outlives any send (the gateway timeout, with room to spare).
        self.claim = timedelta(seconds=max(60.0, 6 * settings.notify_send_timeout_seconds))

    # --- writing, inside the notification's transaction ---------------------------------

    async def write(
        self, tx: Tx, kind: str, data: dict[str, Any], items: Iterable[tuple[int, int]]
    ) -> None:
        """Queue a patient kind's message for each (inbox item id, patient user id)."""
        found = template_for(kind, data)
        items = list(items)
        if found is None or not items or not self.channels:
            return
        template, params = found
        off = await self._opted_out(tx.session, [user for _, user in items], kind)
        now = utcnow()
        for item_id, user_id in items:
            for channel in self.channels:
                status = SKIPPED_OPT_OUT if (user_id, channel) in off else PENDING
                tx.session.add(
                    OutboundMessage(
                        inbox_item_id=item_id,
                        user_id=user_id,
                        kind=kind,
                        channel=channel,
                        template_id=template.id,
                        params=params,
                        status=status,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )

    async def _opted_out(
        self, session: AsyncSession, user_ids: list[int], kind: str
    ) -> set[tuple[int, str]]:
        rows = await session.execute(
            select(NotificationPreference.user_id, NotificationPreference.channel).where(
                NotificationPreference.user_id.in_(sorted(set(user_ids))),
                NotificationPreference.kind == kind,
                NotificationPreference.enabled.is_(False),
            )
        )
        return {(user_id, channel) for user_id, channel in rows}

    # --- sending, after commit (the notify.dispatch job) --------------------------------

    async def dispatch_due(self, tick: int = 0) -> int:
        """Send what is due; returns how many were sent."""
        claimed, recipients = await self._claim()
        if not claimed:
            return 0
        results = await asyncio.gather(*(self._send(m, recipients[m.user_id]) for m in claimed))
        now = utcnow()
        sent = 0
        async with self.db.transaction() as tx:
            for message, outcome in zip(claimed, results, strict=True):
                values: dict[str, Any]
                if outcome.message_id is not None:
                    sent += 1
                    values = {
                        "status": SENT,
                        "provider_message_id": outcome.message_id,
                        "sent_at": now,
                    }
                elif outcome.error == SKIPPED_NO_ADDRESS:
                    values = {"status": SKIPPED_NO_ADDRESS}
                elif not outcome.retry or message.attempts >= self.max_attempts:
                    values = {"status": FAILED, "last_error": outcome.error}
                else:
                    delay = min(self.retry * 2 ** (message.attempts - 1), MAX_BACKOFF)
                    values = {
                        "status": PENDING,
                        "last_error": outcome.error,
                        "next_attempt_at": now + delay,
                    }
                await tx.session.execute(
                    update(OutboundMessage)
                    .where(OutboundMessage.id == message.id, OutboundMessage.status == SENDING)
                    .values(**values)
                )
        return sent

    async def _claim(self) -> tuple[list[Claimed], dict[int, Recipient]]:
        now = utcnow()
        async with self.db.transaction() as tx:
            # A claim that ran out: its node died mid-send. Never sent again (at most once).
            await tx.session.execute(
                update(OutboundMessage)
                .where(OutboundMessage.status == SENDING, OutboundMessage.next_attempt_at <= now)
                .values(status=FAILED, last_error="outcome unknown: the sending node stopped")
            )
            due = list(
                await tx.session.scalars(
                    select(OutboundMessage.id)
                    .where(
                        OutboundMessage.status == PENDING, OutboundMessage.next_attempt_at <= now
                    )
                    .order_by(OutboundMessage.id)
                    .limit(BATCH)
                )
            )
            if not due:
                return [], {}
            rows = await tx.session.execute(
                update(OutboundMessage)
                .where(OutboundMessage.id.in_(due), OutboundMessage.status == PENDING)
                .values(
                    status=SENDING,
                    attempts=OutboundMessage.attempts + 1,
                    next_attempt_at=now + self.claim,
                )
                .returning(
                    OutboundMessage.id,
                    OutboundMessage.user_id,
                    OutboundMessage.kind,
                    OutboundMessage.channel,
                    OutboundMessage.template_id,
                    OutboundMessage.params,
                    OutboundMessage.attempts,
                )
            )
            claimed = sorted((Claimed(*row) for row in rows), key=lambda m: m.id)
            # Opted out since it was queued: skipped, not sent.
            skipped = []
            for kind in sorted({m.kind for m in claimed}):
                of_kind = [m for m in claimed if m.kind == kind]
                off = await self._opted_out(tx.session, [m.user_id for m in of_kind], kind)
                skipped += [m for m in of_kind if (m.user_id, m.channel) in off]
            if skipped:
                await tx.session.execute(
                    update(OutboundMessage)
                    .where(OutboundMessage.id.in_([m.id for m in skipped]))
                    .values(status=SKIPPED_OPT_OUT)
                )
            claimed = [m for m in claimed if m not in skipped]
            phones = await self.directory.phones_of_users(tx.session, {m.user_id for m in claimed})
        recipients = {user: Recipient(user, phone) for user, phone in phones.items()}
        return claimed, recipients

    async def _send(self, message: Claimed, recipient: Recipient) -> Outcome:
        channel = self.channels.get(message.channel)
        if channel is None:
            # Queued when the channel was configured; kept for when it is again.
            return Outcome(None, f"channel {message.channel} is not configured", retry=True)
        if not channel.reaches(recipient):
            return Outcome(None, SKIPPED_NO_ADDRESS)
        try:
            return Outcome(await channel.send(recipient, message.template_id, message.params))
        except ChannelError as exc:
            logger.warning(
                "outbound message not sent",
                extra={"outbound_id": message.id, "channel": message.channel, "error": str(exc)},
            )
            return Outcome(None, str(exc)[:200], retry=exc.retry)


class Preferences:
    """The patient's choices: in the app always; outside it, per kind and channel."""

    def __init__(self, db: Database, channels: Iterable[str]) -> None:
        self.db = db
        self.channels = tuple(channels)

    async def get(self, requester: Requester) -> schemas.PreferencesOut:
        check_patient(requester)
        async with self.db.read() as session:
            return await self._answer(session, requester.user_id)

    async def put(
        self, requester: Requester, data: schemas.PreferencesIn
    ) -> schemas.PreferencesOut:
        check_patient(requester)
        for n, change in enumerate(data.preferences):
            if change.kind not in KINDS:
                raise ValidationFailed.field(
                    f"preferences.{n}.kind", "is not a notification kind", code="unknown_kind"
                )
            if change.channel not in self.channels:
                raise ValidationFailed.field(
                    f"preferences.{n}.channel",
                    f"is not a channel of this server ({', '.join(self.channels)})",
                    code="unknown_channel",
                )
        now = utcnow()
        async with self.db.transaction() as tx:
            rows = await tx.session.scalars(
                select(NotificationPreference)
                .where(NotificationPreference.user_id == requester.user_id)
                .with_for_update()
            )
            mine = {(row.kind, row.channel): row for row in rows}
            for change in data.preferences:
                row = mine.get((change.kind, change.channel))
                if row is None:
                    row = NotificationPreference(
                        user_id=requester.user_id, kind=change.kind, channel=change.channel
                    )
                    tx.session.add(row)
                    mine[(change.kind, change.channel)] = row
                row.enabled, row.updated_at = change.enabled, now
            await tx.session.flush()
            return await self._answer(tx.session, requester.user_id)

    async def _answer(self, session: AsyncSession, user_id: int) -> schemas.PreferencesOut:
        rows = await session.execute(
            select(
                NotificationPreference.kind,
                NotificationPreference.channel,
                NotificationPreference.enabled,
            ).where(NotificationPreference.user_id == user_id)
        )
        chosen = {(kind, channel): enabled for kind, channel, enabled in rows}
        return schemas.PreferencesOut(
            channels=list(self.channels),
            kinds=[
                schemas.KindPreference(
                    kind=kind,
                    in_app=True,
                    outbound={ch: chosen.get((kind, ch), True) for ch in self.channels},
                )
                for kind in KINDS
            ],
        )


def check_patient(requester: Requester) -> None:
    if requester.role != "patient" or requester.patient_id is None:
        raise Forbidden("notification preferences are the patient's own", code="not_a_patient")
