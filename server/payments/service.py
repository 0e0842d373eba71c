"""Payments (结算支付): fee schedules, orders in integer fen, notifications, refunds, reconciliation.

The amount of an order comes from the institution's fee schedule, never from the client.
A provider's notification is believed only when its signature verifies and its amount is
the order's; it is recorded once (``payment_events.event_key`` is unique on the provider's
transaction id), in the same transaction as the order's new status. A node that dies
between the provider charging and us recording loses nothing: the reconciliation job
(:meth:`PaymentsService.reconcile_pending`) asks the provider about orders left ``created``
and records what it says through the same path. Refunds go ``paid → refunding`` (committed)
before the provider is asked, then ``refunded`` when it answers; a refund the node did not
finish is finished by the same job.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.config import Settings
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, rowcount, utcnow
from server.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    ValidationFailed,
)
from server.core.ratelimit import RateLimits
from server.core.roles import DESK_ROLES, Role
from server.identity.directory import Directory
from server.inbox.service import InboxService
from server.payments import schemas
from server.payments.models import Fee, Order, OrderStatus, PaymentEvent
from server.payments.providers import (
    NOTIFY_PATH,
    Notification,
    Provider,
    ProviderTrade,
    SandboxProvider,
)
from server.scheduling.service import BookedAppointment

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Subject:
    """What an order is for, as the capability that owns it answers."""

    patient_id: int
    institution_id: int
    department_id: int | None
    # The service was given (a refund is then the institution's decision, not the patient's).
    served: bool
    # Whether it may be paid for now (a cancelled appointment may not).
    payable: bool = True
    description: str = ""


# kind → (session, subject id) → the subject, or None when there is no such subject.
SubjectResolver = Callable[[AsyncSession, int], Awaitable[Subject | None]]

# What our order status should be at the provider (its trade_state).
EXPECTED_STATE: dict[str, set[str]] = {
    OrderStatus.CREATED: {"NOTPAY"},
    OrderStatus.PAID: {"SUCCESS"},
    OrderStatus.REFUNDING: {"SUCCESS", "REFUND"},
    OrderStatus.REFUNDED: {"REFUND"},
    OrderStatus.CLOSED: {"NOTPAY", "CLOSED"},
}


class AmountMismatch(BadRequest):
    default_code = "payment_amount_mismatch"
    title = "Payment amount mismatch"


def order_not_found(order_id: int | str) -> NotFound:
    return NotFound(f"no order {order_id}", code="order_not_found")


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


class PaymentsService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        inbox: InboxService,
        directory: Directory,
        providers: Mapping[str, Provider],
        resolvers: Mapping[str, SubjectResolver],
        limits: RateLimits,
        sandbox: SandboxProvider | None = None,
    ) -> None:
        self.db = db
        self.audit = audit
        self.inbox = inbox
        self.directory = directory
        self.providers = dict(providers)
        self.resolvers = dict(resolvers)
        self.sandbox = sandbox
        self.refusals = limits.limiter(
            "payment_notify_refusals", settings.payments_notify_refusals_per_minute
        )
        self.public_url = settings.public_url.rstrip("/")
        self.pending_seconds = settings.payments_pending_seconds
        self.order_ttl = settings.payments_order_ttl_seconds
        self.zone = ZoneInfo(settings.schedule_timezone)

    def add_subjects(self, kind: str, resolver: SubjectResolver) -> None:
        """A capability built after payments (visits) names what its orders are for."""
        self.resolvers[kind] = resolver

    # --- fee schedule -------------------------------------------------------------

    async def get_fees(self, institution_id: int) -> schemas.FeeScheduleOut:
        async with self.db.read() as session:
            if await self.directory.institution(session, institution_id) is None:
                raise NotFound(f"no institution {institution_id}", code="institution_not_found")
            return await self._fees_out(session, institution_id)

    async def _fees_out(self, session: AsyncSession, institution_id: int) -> schemas.FeeScheduleOut:
        rows = await session.scalars(
            select(Fee)
            .where(Fee.institution_id == institution_id)
            .order_by(Fee.kind, Fee.department_id.is_not(None), Fee.department_id)
        )
        return schemas.FeeScheduleOut(
            institution_id=institution_id,
            items=[
                schemas.FeeOut(kind=f.kind, department_id=f.department_id,
                               amount_fen=f.amount_fen, updated_at=f.updated_at)
                for f in rows
            ],
        )  # fmt: skip

    async def set_fees(
        self, requester: Requester | None, institution_id: int, data: schemas.FeeSchedule
    ) -> schemas.FeeScheduleOut:
        """The institution's administrator replaces its whole fee schedule (None: the seed)."""
        if requester is not None and (
            requester.role != Role.INSTITUTION_ADMIN or requester.institution_id != institution_id
        ):
            raise Forbidden(
                "only the institution's administrator sets its fees", code="not_institution_admin"
            )
        async with self.db.transaction() as tx:
            for index, item in enumerate(data.items):
                if item.department_id is None:
                    continue
                department = await self.directory.department(tx.session, item.department_id)
                if department is None or department.institution_id != institution_id:
                    raise ValidationFailed.field(
                        f"items.{index}.department_id", "not a department of this institution"
                    )
            await tx.session.execute(delete(Fee).where(Fee.institution_id == institution_id))
            now = utcnow()
            for item in data.items:
                tx.session.add(
                    Fee(institution_id=institution_id, kind=item.kind,
                        department_id=item.department_id, amount_fen=item.amount_fen,
                        updated_at=now, updated_by=requester.user_id if requester else None)
                )  # fmt: skip
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "payment.fees_set",
                actor=requester,
                resource=f"Institution/{institution_id}",
                details={"items": len(data.items)},
            )
            return await self._fees_out(tx.session, institution_id)

    async def fee_for(self, session: AsyncSession, subject: Subject, kind: str) -> int | None:
        rows = list(
            await session.scalars(
                select(Fee).where(
                    Fee.institution_id == subject.institution_id,
                    Fee.kind == kind,
                    or_(Fee.department_id.is_(None), Fee.department_id == subject.department_id),
                )
            )
        )
        own = [f for f in rows if f.department_id is not None]
        chosen = own or rows
        return chosen[0].amount_fen if chosen else None

    # --- orders -------------------------------------------------------------------

    def _order_out(self, order: Order, refundable: bool = False) -> schemas.OrderOut:
        pay = None
        if order.status == OrderStatus.CREATED and order.pay_url and order.pay_code:
            pay = schemas.PayInfo(provider=order.provider, pay_url=order.pay_url,
                                  code=order.pay_code)  # fmt: skip
        return schemas.OrderOut(
            id=order.id,
            kind=order.kind,
            subject_id=order.subject_id,
            patient_id=order.patient_id,
            institution_id=order.institution_id,
            department_id=order.department_id,
            amount_fen=order.amount_fen,
            status=OrderStatus(order.status),
            provider=order.provider,
            out_trade_no=order.out_trade_no,
            provider_trade_no=order.provider_trade_no,
            pay=pay,
            refundable=refundable,
            refund_reason=order.refund_reason,
            created_at=order.created_at,
            paid_at=order.paid_at,
            refunded_at=order.refunded_at,
            closed_at=order.closed_at,
        )

    async def _refundable(self, session: AsyncSession, requester: Requester, order: Order) -> bool:
        if order.status != OrderStatus.PAID:
            return False
        if requester.role != Role.PATIENT:
            return True
        resolver = self.resolvers.get(order.kind)
        subject = await resolver(session, order.subject_id) if resolver else None
        return subject is not None and not subject.served

    def _provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise ValidationFailed.field(
                "provider", f"no payment provider '{name}'", code="payment_provider_unknown"
            )
        return provider

    async def create_order(
        self, requester: Requester, data: schemas.OrderCreate
    ) -> schemas.OrderOut:
        """The patient's order for their own subject; the amount is the fee schedule's."""
        if requester.role != Role.PATIENT or requester.patient_id is None:
            raise Forbidden("only a patient pays for their own care", code="not_patient")
        provider = self._provider(data.provider)
        resolver = self.resolvers.get(data.kind)
        if resolver is None:
            raise ValidationFailed.field(
                "kind", f"'{data.kind}' cannot be paid for yet", code="payment_kind_unsupported"
            )
        try:
            order, description, existing = await self._new_order(requester, data, provider.name)
        except IntegrityError:
            # Another request for the same subject committed first: answer its order.
            async with self.db.read() as session:
                active = await session.scalar(
                    select(Order).where(Order.holds == f"{data.kind}:{data.subject_id}")
                )
                if active is None:
                    raise
                return self._order_out(active, await self._refundable(session, requester, active))
        if existing is not None:
            return existing
        # The provider is asked outside our transaction (it is another system); a failure
        # leaves an order without a trade, which reconciliation closes when it lapses.
        trade = await provider.create_order(order.out_trade_no, order.amount_fen, description)
        async with self.db.transaction() as tx:
            await tx.session.execute(
                update(Order)
                .where(Order.id == order.id)
                .values(pay_url=trade.pay_url, pay_code=trade.code)
            )
        order.pay_url, order.pay_code = trade.pay_url, trade.code
        return self._order_out(order)

    async def _new_order(
        self, requester: Requester, data: schemas.OrderCreate, provider: str
    ) -> tuple[Order, str, schemas.OrderOut | None]:
        """The order row (committed), its description, or the subject's active order."""
        resolver = self.resolvers[data.kind]
        async with self.db.transaction() as tx:
            subject = await resolver(tx.session, data.subject_id)
            if subject is None or subject.patient_id != requester.patient_id:
                raise NotFound(f"no {data.kind} {data.subject_id}", code="subject_not_found")
            holds = f"{data.kind}:{data.subject_id}"
            active = await tx.session.scalar(select(Order).where(Order.holds == holds))
            if active is not None:
                # Asking again answers the same order: one subject is paid once.
                answer = self._order_out(
                    active, await self._refundable(tx.session, requester, active)
                )
                return active, "", answer
            if not subject.payable:
                raise Conflict(f"this {data.kind} can no longer be paid for",
                               code="subject_not_payable")  # fmt: skip
            amount = await self.fee_for(tx.session, subject, data.kind)
            if amount is None or amount <= 0:
                raise Conflict(
                    f"the institution has set no fee for {data.kind}", code="fee_not_set"
                )
            now = utcnow()
            order = Order(
                patient_id=subject.patient_id,
                institution_id=subject.institution_id,
                kind=data.kind,
                subject_id=data.subject_id,
                holds=holds,
                department_id=subject.department_id,
                amount_fen=amount,
                status=OrderStatus.CREATED,
                provider=provider,
                out_trade_no=f"YH{now:%Y%m%d%H%M%S}{secrets.token_hex(6).upper()}",
                created_by=requester.user_id,
                created_at=now,
            )
            tx.session.add(order)
            await tx.session.flush()
            await self.audit.record(
                tx.session,
                "payment.order_create",
                actor=requester,
                patient_id=order.patient_id,
                resource=f"Order/{order.id}",
                details={"kind": data.kind, "subject_id": data.subject_id, "amount_fen": amount},
            )
            return order, subject.description or data.kind, None

    async def _readable(self, session: AsyncSession, requester: Requester, order_id: int) -> Order:
        order = await session.get(Order, order_id, populate_existing=True)
        if order is None:
            raise order_not_found(order_id)
        if requester.role == Role.PATIENT:
            if requester.patient_id != order.patient_id:
                raise order_not_found(order_id)
        elif requester.role not in DESK_ROLES or requester.institution_id != order.institution_id:
            raise order_not_found(order_id)
        return order

    async def list_orders(self, requester: Requester) -> list[schemas.OrderOut]:
        """A patient's own orders; an institution's staff see their institution's."""
        query = select(Order).order_by(Order.id.desc()).limit(200)
        if requester.role == Role.PATIENT:
            query = query.where(Order.patient_id == requester.patient_id)
        elif requester.role in DESK_ROLES and requester.institution_id is not None:
            query = query.where(Order.institution_id == requester.institution_id)
        else:
            return []
        async with self.db.read() as session:
            orders = list(await session.scalars(query))
            answer = [
                self._order_out(o, await self._refundable(session, requester, o)) for o in orders
            ]
        if requester.role != Role.PATIENT:
            # Staff looking at patients' orders is audited (a patient's own look is not news).
            await self.audit.record_alone(
                "payment.order_list", actor=requester, details={"count": len(answer)}
            )
        return answer

    async def get_order(self, requester: Requester, order_id: int) -> schemas.OrderOut:
        async with self.db.read() as session:
            order = await self._readable(session, requester, order_id)
            answer = self._order_out(order, await self._refundable(session, requester, order))
        if requester.role != Role.PATIENT:
            await self.audit.record_alone(
                "payment.order_read", actor=requester, patient_id=order.patient_id,
                resource=f"Order/{order.id}",
            )  # fmt: skip
        return answer

    async def order_for_trade(self, requester: Requester, out_trade_no: str) -> Order:
        """The requester's own unpaid order of that trade number (the sandbox payer page)."""
        async with self.db.read() as session:
            order = await session.scalar(select(Order).where(Order.out_trade_no == out_trade_no))
            if order is None or order.patient_id != requester.patient_id:
                raise order_not_found(out_trade_no)
            return order

    async def sandbox_pay(
        self, requester: Requester, out_trade_no: str, origin: str
    ) -> schemas.SandboxPaid:
        """The sandbox's payer page: it charges (once), then notifies us asynchronously."""
        if self.sandbox is None:
            raise NotFound("the sandbox provider is off", code="sandbox_disabled")
        order = await self.order_for_trade(requester, out_trade_no)
        if order.provider != self.sandbox.name:
            raise order_not_found(out_trade_no)
        if order.status != OrderStatus.CREATED:
            raise Conflict(f"the order is {order.status}: it cannot be paid",
                           code="order_not_payable")  # fmt: skip
        trade = await self.sandbox.charge(out_trade_no)
        base = self.public_url or origin.rstrip("/")
        self.sandbox.send_later(trade, base + NOTIFY_PATH.format(provider=self.sandbox.name))
        return schemas.SandboxPaid(out_trade_no=out_trade_no, state=trade.state,
                                   transaction_id=trade.transaction_id)  # fmt: skip

    # --- notifications and recording ------------------------------------------------

    async def handle_notification(
        self, provider_name: str, headers: Mapping[str, str], body: bytes, address: str
    ) -> schemas.NotifyAnswer:
        provider = self.providers.get(provider_name)
        if provider is None:
            raise NotFound(f"no payment provider '{provider_name}'",
                           code="payment_provider_unknown")  # fmt: skip
        try:
            note = provider.parse_notification(headers, body)
            if note.event == "paid":
                order, duplicate = await self.record_paid(provider.name, note, source="notify")
            else:
                order, duplicate = await self.record_refunded(provider.name, note, source="notify")
        except (BadRequest, NotFound, Conflict) as exc:
            # Nothing changed; the refusal is kept (a forged or wrong notification is news),
            # up to a rate per address: past it, a flood hears 429 and writes nothing.
            if not await self.refusals.allow(address):
                retry = await self.refusals.retry_after(address)
                raise TooManyRequests(
                    f"too many refused notifications from this address; retry in {retry} s",
                    code="rate_limited",
                    headers={"Retry-After": str(retry)},
                ) from None
            await self.audit.record_alone(
                "payment.notify_refused", outcome="denied", reason=exc.code,
                resource=f"PaymentProvider/{provider.name}",
            )  # fmt: skip
            raise
        return schemas.NotifyAnswer(order_id=order.id, status=OrderStatus(order.status),
                                    duplicate=duplicate)  # fmt: skip

    async def _order_of_trade(
        self, session: AsyncSession, provider: str, out_trade_no: str
    ) -> Order:
        order = await session.scalar(
            select(Order).where(Order.out_trade_no == out_trade_no, Order.provider == provider)
        )
        if order is None:
            raise order_not_found(out_trade_no)
        return order

    async def _locked_order(self, session: AsyncSession, provider: str, out_trade_no: str) -> Order:
        order = await session.scalar(
            select(Order)
            .where(Order.out_trade_no == out_trade_no, Order.provider == provider)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if order is None:
            raise order_not_found(out_trade_no)
        return order

    async def record_paid(
        self, provider: str, note: Notification, *, source: str
    ) -> tuple[Order, bool]:
        """Record a payment once: (the order, whether it had been recorded already)."""
        key = f"{provider}:paid:{note.transaction_id}"
        try:
            async with self.db.transaction() as tx:
                order = await self._locked_order(tx.session, provider, note.out_trade_no)
                if note.state != "SUCCESS" and note.state != "REFUND":
                    raise BadRequest("the trade is not paid", code="payment_not_successful")
                if note.amount_fen != order.amount_fen:
                    raise AmountMismatch(
                        f"the notification's amount {note.amount_fen} fen is not the order's "
                        f"{order.amount_fen} fen"
                    )
                if await self._event_exists(tx.session, key):
                    return order, True
                now = utcnow()
                if order.status in (OrderStatus.CREATED, OrderStatus.CLOSED):
                    order.status, order.paid_at = OrderStatus.PAID, now
                    order.provider_trade_no = note.transaction_id
                await self._recorded(
                    tx, order, key, "paid", note.amount_fen, source, now,
                    title=f"已支付 ¥{yuan(order.amount_fen)}",
                )  # fmt: skip
                return order, False
        except IntegrityError:
            # Another node recorded the same transaction between our check and our insert.
            async with self.db.read() as session:
                order = await self._order_of_trade(session, provider, note.out_trade_no)
            return order, True

    async def _recorded(
        self,
        tx: Tx,
        order: Order,
        key: str,
        kind: str,
        amount_fen: int,
        source: str,
        now: datetime,
        *,
        title: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """A payment or refund the provider confirmed: its event row (unique by ``key``), its
        audit entry and the patient's inbox item (``payment_<kind>``), in the caller's
        transaction."""
        tx.session.add(PaymentEvent(order_id=order.id, event_key=key, kind=kind,
                                    amount_fen=amount_fen, source=source, created_at=now))  # fmt: skip
        await tx.session.flush()
        await self.audit.record(
            tx.session, f"payment.{kind}", patient_id=order.patient_id,
            resource=f"Order/{order.id}",
            details={"amount_fen": order.amount_fen, "source": source},
        )  # fmt: skip
        await self.inbox.notify(
            tx,
            kind=f"payment_{kind}",
            title=title,
            patients=[order.patient_id],
            resource=f"Order/{order.id}",
            data={"order_id": order.id, "amount_fen": order.amount_fen, "kind": order.kind,
                  "subject_id": order.subject_id, **(extra or {})},
        )  # fmt: skip

    async def _event_exists(self, session: AsyncSession, key: str) -> bool:
        found = await session.scalar(select(PaymentEvent.id).where(PaymentEvent.event_key == key))
        return found is not None

    async def record_refunded(
        self, provider: str, note: Notification, *, source: str
    ) -> tuple[Order, bool]:
        refund_id = note.refund_id or note.transaction_id
        key = f"{provider}:refunded:{refund_id}"
        try:
            async with self.db.transaction() as tx:
                order = await self._locked_order(tx.session, provider, note.out_trade_no)
                if note.amount_fen != order.amount_fen:
                    raise AmountMismatch(
                        f"the refund's amount {note.amount_fen} fen is not the order's "
                        f"{order.amount_fen} fen"
                    )
                if await self._event_exists(tx.session, key):
                    return order, True
                if order.status not in (OrderStatus.PAID, OrderStatus.REFUNDING):
                    raise Conflict("the order is not paid", code="order_not_paid")
                now = utcnow()
                order.status, order.refunded_at, order.holds = OrderStatus.REFUNDED, now, None
                await self._recorded(
                    tx, order, key, "refunded", note.amount_fen, source, now,
                    title=f"已退款 ¥{yuan(order.amount_fen)}",
                    extra={"reason": order.refund_reason},
                )  # fmt: skip
                return order, False
        except IntegrityError:
            async with self.db.read() as session:
                order = await self._order_of_trade(session, provider, note.out_trade_no)
            return order, True

    # --- refunds ----------------------------------------------------------------------

    async def refund(
        self, requester: Requester, order_id: int, reason: str | None
    ) -> schemas.OrderOut:
        """The patient before the service, or the institution's staff, refund a paid order."""
        async with self.db.transaction() as tx:
            order = await self._readable(tx.session, requester, order_id)
            if order.status in (OrderStatus.REFUNDING, OrderStatus.REFUNDED):
                raise Conflict("the order is already refunded", code="order_already_refunded")
            if order.status != OrderStatus.PAID:
                raise Conflict("the order is not paid: there is nothing to refund",
                               code="order_not_paid")  # fmt: skip
            if requester.role == Role.PATIENT and not await self._refundable(
                tx.session, requester, order
            ):
                raise Conflict("the service was given; ask the institution for a refund",
                               code="order_served")  # fmt: skip
            if not await self._start_refund(tx, order, reason or "requested", actor=requester):
                # Another request started the refund between our read and our update.
                raise Conflict("the order is already refunded", code="order_already_refunded")
        await self.refund_at_provider(order_id)
        async with self.db.read() as session:
            order = await self._readable(session, requester, order_id)
            return self._order_out(order, await self._refundable(session, requester, order))

    async def _start_refund(
        self, tx: Tx, order: Order, reason: str, *, actor: Requester | None
    ) -> bool:
        started = await tx.session.execute(
            update(Order)
            .where(Order.id == order.id, Order.status == OrderStatus.PAID)
            .values(status=OrderStatus.REFUNDING, refund_no=f"R{order.out_trade_no}"[:64],
                    refund_reason=reason[:200], refund_requested_at=utcnow())
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        if rowcount(started) != 1:
            return False
        await self.audit.record(
            tx.session, "payment.refund_request", actor=actor, patient_id=order.patient_id,
            resource=f"Order/{order.id}", reason=reason[:200],
        )  # fmt: skip
        return True

    async def refund_at_provider(self, order_id: int) -> None:
        """Ask the provider to refund an order in ``refunding`` and record its answer."""
        async with self.db.read() as session:
            order = await session.get(Order, order_id)
            if order is None or order.status != OrderStatus.REFUNDING or order.refund_no is None:
                return
            provider_name, out_trade_no = order.provider, order.out_trade_no
            refund_no, amount = order.refund_no, order.amount_fen
        provider = self.providers.get(provider_name)
        if provider is None:
            return
        result = await provider.refund(out_trade_no, refund_no, amount)
        if result.status == "SUCCESS":
            note = Notification(event="refunded", out_trade_no=out_trade_no,
                                transaction_id=result.refund_id, amount_fen=result.amount_fen,
                                state="REFUND", refund_id=result.refund_id)  # fmt: skip
            await self.record_refunded(provider_name, note, source="refund")

    async def on_appointments_cancelled(
        self, tx: Tx, appointments: list[BookedAppointment]
    ) -> None:
        """Scheduling's listener: cancelled appointments refund (or close) their orders."""
        await self.subjects_cancelled(
            tx, "appointment", [a.id for a in appointments], "appointment cancelled"
        )

    async def subjects_cancelled(
        self, tx: Tx, kind: str, subject_ids: list[int], reason: str
    ) -> None:
        """In the transaction that cancels the subjects before their service: a paid order
        starts its refund (the provider is asked after the commit), an unpaid one closes.

        For any kind: a capability whose subjects can be cancelled (a visit, a prescription)
        calls this through a listener wired in ``server/app.py``, as scheduling does.
        """
        if not subject_ids:
            return
        orders = list(
            await tx.session.scalars(
                select(Order).where(
                    Order.kind == kind,
                    Order.subject_id.in_(subject_ids),
                    Order.status.in_([OrderStatus.CREATED, OrderStatus.PAID]),
                )
            )
        )
        for order in orders:
            if order.status == OrderStatus.CREATED:
                await tx.session.execute(
                    update(Order)
                    .where(Order.id == order.id, Order.status == OrderStatus.CREATED)
                    .values(status=OrderStatus.CLOSED, closed_at=utcnow(), holds=None)
                    .execution_options(synchronize_session=False)
                )
                continue
            if await self._start_refund(tx, order, reason, actor=None):
                tx.on_commit(self._refund_later(order.id))

    def _refund_later(self, order_id: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await self.refund_at_provider(order_id)
            except Exception:  # the reconciliation job finishes it
                logger.exception("refund of order %s left for reconciliation", order_id)

        return run

    # --- reconciliation --------------------------------------------------------------

    async def reconcile_pending(self, tick: int = 0) -> int:
        """Ask the provider about orders left ``created`` or ``refunding``; record what it says.

        Returns how many orders changed. Each change goes through the same recording as a
        notification, so a payment the notification also brings is recorded once.
        """
        now = utcnow()
        since = now - timedelta(seconds=self.pending_seconds)
        async with self.db.read() as session:
            pending = list(
                await session.execute(
                    select(Order.id, Order.provider, Order.out_trade_no, Order.created_at,
                           Order.status)
                    .where(
                        or_(
                            (Order.status == OrderStatus.CREATED) & (Order.created_at <= since),
                            (Order.status == OrderStatus.REFUNDING)
                            & (Order.refund_requested_at <= since),
                        )
                    )
                    .order_by(Order.id)
                    .limit(200)
                )
            )  # fmt: skip
        changed = 0
        for order_id, provider_name, out_trade_no, created_at, status in pending:
            provider = self.providers.get(provider_name)
            if provider is None:
                continue
            try:
                if status == OrderStatus.REFUNDING:
                    await self.refund_at_provider(order_id)
                    changed += 1
                    continue
                trade = await provider.query_order(out_trade_no)
                if (
                    trade is not None
                    and trade.state in ("SUCCESS", "REFUND")
                    and trade.transaction_id
                ):
                    _, duplicate = await self.record_paid(
                        provider_name, self._paid_note(trade), source="query"
                    )
                    changed += 0 if duplicate else 1
                elif created_at <= now - timedelta(seconds=self.order_ttl):
                    changed += await self._close(order_id)
            except (BadRequest, Conflict, NotFound) as exc:
                logger.warning("reconcile: order %s: %s", order_id, exc.code)
        return changed

    async def reconcile_pending_tick(self, tick: int) -> None:
        await self.reconcile_pending(tick)

    @staticmethod
    def _paid_note(trade: ProviderTrade) -> Notification:
        return Notification(event="paid", out_trade_no=trade.out_trade_no,
                            transaction_id=trade.transaction_id or "",
                            amount_fen=trade.amount_fen, state=trade.state)  # fmt: skip

    async def _close(self, order_id: int) -> int:
        async with self.db.transaction() as tx:
            closed = await tx.session.execute(
                update(Order)
                .where(Order.id == order_id, Order.status == OrderStatus.CREATED)
                .values(status=OrderStatus.CLOSED, closed_at=utcnow(), holds=None)
                .execution_options(synchronize_session=False)
            )
            return rowcount(closed)

    async def reconcile_day(self, day: date) -> schemas.Reconciliation:
        """The day's settlement per institution, and every order the provider sees otherwise.

        The day is the local day of ``schedule_timezone``.
        """
        start = datetime.combine(day, time(0), tzinfo=self.zone)
        end = start + timedelta(days=1)
        async with self.db.read() as session:
            sums: dict[int, dict[str, Any]] = {}
            rows = await session.execute(
                select(Order.institution_id, PaymentEvent.kind, func.count(PaymentEvent.id),
                       func.sum(PaymentEvent.amount_fen))
                .join(Order, Order.id == PaymentEvent.order_id)
                .where(PaymentEvent.created_at >= start, PaymentEvent.created_at < end)
                .group_by(Order.institution_id, PaymentEvent.kind)
            )  # fmt: skip
            for institution_id, kind, count, total in rows:
                line = sums.setdefault(institution_id, {"paid": (0, 0), "refunded": (0, 0)})
                line[kind] = (int(count), int(total or 0))
            orders = list(
                await session.scalars(
                    select(Order)
                    .where(
                        or_(
                            (Order.created_at >= start) & (Order.created_at < end),
                            (Order.paid_at >= start) & (Order.paid_at < end),
                            (Order.refunded_at >= start) & (Order.refunded_at < end),
                        )
                    )
                    .order_by(Order.id)
                )
            )
        mismatches: list[schemas.Mismatch] = []
        for order in orders:
            provider = self.providers.get(order.provider)
            if provider is None:
                continue
            trade = await provider.query_order(order.out_trade_no)
            ours = f"{order.status} {order.amount_fen}"
            if trade is None:
                if order.status != OrderStatus.CREATED and order.status != OrderStatus.CLOSED:
                    mismatches.append(schemas.Mismatch(
                        order_id=order.id, out_trade_no=order.out_trade_no, ours=ours,
                        provider="unknown", reason="the provider knows no such trade"))  # fmt: skip
                continue
            theirs = f"{trade.state} {trade.amount_fen}"
            if trade.amount_fen != order.amount_fen:
                reason = "amount"
            elif trade.state not in EXPECTED_STATE[order.status]:
                reason = "status"
            else:
                continue
            mismatches.append(schemas.Mismatch(order_id=order.id, out_trade_no=order.out_trade_no,
                                               ours=ours, provider=theirs, reason=reason))  # fmt: skip
        return schemas.Reconciliation(
            day=day,
            settlement=[
                schemas.SettlementLine(
                    institution_id=institution_id,
                    paid_count=line["paid"][0], paid_fen=line["paid"][1],
                    refunded_count=line["refunded"][0], refunded_fen=line["refunded"][1],
                )
                for institution_id, line in sorted(sums.items())
            ],
            mismatches=mismatches,
        )  # fmt: skip
