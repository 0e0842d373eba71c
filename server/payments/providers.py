"""Payment providers: the interface (shaped like WeChat Pay v3 and Alipay) and the sandbox.

A provider does five things, each named as the two real ones name them:

- ``create_order``: a trade for our ``out_trade_no`` and amount; answers what the payer's
  client needs (WeChat's ``prepay_id`` / code URL, Alipay's page URL);
- ``parse_notification``: verify the signature of an asynchronous notification and read
  ``out_trade_no``, ``transaction_id``, the amount and the state from it;
- ``query_order``: the trade as the provider knows it (reconciliation asks this);
- ``refund`` and ``query_refund``.

Yihao never sees card data: the payer pays on the provider's page or app.

The **sandbox** provider is built in for the demo and the tests. Its trades are in its own
table (``payment_sandbox_trades``), as a real provider keeps them on its side, so they
survive a killed node. Its payer route "charges" (``pay``), then sends the notification
asynchronously to ``/api/v1/payments/notify/sandbox``, signed with HMAC-SHA256 over
``timestamp \\n nonce \\n body \\n`` (WeChat Pay v3's message layout) under a key from the
settings (``payments_sandbox_key``, else derived from ``secret_key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
from aiohttp import web
from sqlalchemy import select, update

from server.config import Settings
from server.core.db import Database, rowcount, utcnow
from server.core.errors import BadRequest, Conflict, NotFound
from server.payments.models import SandboxTrade

logger = logging.getLogger(__name__)

TradeState = Literal["NOTPAY", "SUCCESS", "REFUND", "CLOSED"]
SANDBOX = "sandbox"
NOTIFY_PATH = "/api/v1/payments/notify/{provider}"
SIGNATURE = "Sandbox-Signature"
TIMESTAMP = "Sandbox-Timestamp"
NONCE = "Sandbox-Nonce"


class SignatureInvalid(BadRequest):
    default_code = "payment_signature_invalid"
    title = "Payment notification signature invalid"


@dataclass(frozen=True, slots=True)
class CreatedTrade:
    """What the payer's client needs to pay (a sandbox page and a code; WeChat's code URL)."""

    pay_url: str
    code: str


@dataclass(frozen=True, slots=True)
class Notification:
    """A verified notification: what happened to which of our trades."""

    event: Literal["paid", "refunded"]
    out_trade_no: str
    transaction_id: str
    amount_fen: int
    state: TradeState
    refund_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderTrade:
    out_trade_no: str
    state: TradeState
    amount_fen: int
    transaction_id: str | None
    refund_id: str | None = None
    refunded_fen: int = 0


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund_id: str
    status: Literal["SUCCESS", "PROCESSING"]
    amount_fen: int


class Provider(Protocol):
    name: str

    async def create_order(
        self, out_trade_no: str, amount_fen: int, description: str
    ) -> CreatedTrade: ...

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification: ...

    async def query_order(self, out_trade_no: str) -> ProviderTrade | None: ...

    async def refund(self, out_trade_no: str, refund_no: str, amount_fen: int) -> RefundResult: ...

    async def query_refund(self, refund_no: str) -> RefundResult | None: ...


def sandbox_key(settings: Settings) -> bytes:
    if settings.payments_sandbox_key:
        return settings.payments_sandbox_key.encode()
    return hmac.new(
        settings.secret_key.encode(), b"yihao-payments-sandbox", hashlib.sha256
    ).digest()


def sign(key: bytes, timestamp: str, nonce: str, body: bytes) -> str:
    message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def trade_of(row: SandboxTrade) -> ProviderTrade:
    return ProviderTrade(
        out_trade_no=row.out_trade_no,
        state=row.state,  # type: ignore[arg-type]
        amount_fen=row.amount_fen,
        transaction_id=row.transaction_id,
        refund_id=row.refund_id,
        refunded_fen=row.refunded_fen,
    )


class SandboxProvider:
    """The built-in provider: a ledger in its own table, signed asynchronous notifications."""

    name = SANDBOX

    def __init__(self, settings: Settings, db: Database) -> None:
        self.db = db
        self.key = sandbox_key(settings)
        self.max_skew = settings.payments_notify_max_skew_seconds
        self.delay = settings.payments_sandbox_notify_delay_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    # --- the provider interface -------------------------------------------------

    async def create_order(
        self, out_trade_no: str, amount_fen: int, description: str
    ) -> CreatedTrade:
        code = f"{secrets.randbelow(10**6):06d}"
        async with self.db.transaction() as tx:
            existing = await tx.session.get(SandboxTrade, out_trade_no)
            if existing is None:
                tx.session.add(
                    SandboxTrade(out_trade_no=out_trade_no, amount_fen=amount_fen,
                                 description=description[:128], state="NOTPAY", code=code)
                )  # fmt: skip
            else:
                code = existing.code
        return CreatedTrade(pay_url=f"/api/v1/payments/sandbox/{out_trade_no}/pay", code=code)

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        timestamp, nonce = headers.get(TIMESTAMP, ""), headers.get(NONCE, "")
        signature = headers.get(SIGNATURE, "")
        expected = sign(self.key, timestamp, nonce, body)
        if not (timestamp and nonce and hmac.compare_digest(signature, expected)):
            raise SignatureInvalid("the notification's signature does not verify")
        try:
            skew = abs(time.time() - int(timestamp))
        except ValueError:
            raise SignatureInvalid("the notification's timestamp is not a number") from None
        if skew > self.max_skew:
            raise SignatureInvalid("the notification's timestamp is too old or in the future")
        try:
            payload = json.loads(body)
            resource = payload["resource"]
            event = {"TRANSACTION.SUCCESS": "paid", "REFUND.SUCCESS": "refunded"}[
                payload["event_type"]
            ]
            amount = resource["amount"]["total"]
            if not isinstance(amount, int) or isinstance(amount, bool):
                raise TypeError("amount.total is not an integer")
            return Notification(
                event=event,  # type: ignore[arg-type]
                out_trade_no=str(resource["out_trade_no"]),
                transaction_id=str(resource["transaction_id"]),
                amount_fen=amount,
                state=resource["trade_state"],
                refund_id=resource.get("refund_id"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest(
                f"the notification is not a payment notification: {exc}",
                code="payment_notification_malformed",
            ) from None

    async def query_order(self, out_trade_no: str) -> ProviderTrade | None:
        async with self.db.read() as session:
            row = await session.get(SandboxTrade, out_trade_no)
            return None if row is None else trade_of(row)

    async def refund(self, out_trade_no: str, refund_no: str, amount_fen: int) -> RefundResult:
        """Refund a paid trade in full; asking again with the same refund_no answers the same."""
        async with self.db.transaction() as tx:
            row = await tx.session.get(SandboxTrade, out_trade_no, with_for_update=True)
            if row is None:
                raise NotFound(f"the provider knows no trade {out_trade_no}")
            if row.state == "REFUND" and row.refund_no == refund_no:
                return RefundResult(row.refund_id or "", "SUCCESS", row.refunded_fen)
            if row.state != "SUCCESS":
                raise Conflict("the provider's trade is not paid", code="order_not_paid")
            if amount_fen != row.amount_fen:
                raise Conflict("refund amount differs from the paid amount",
                               code="payment_amount_mismatch")  # fmt: skip
            row.state, row.refund_no = "REFUND", refund_no
            row.refund_id = f"SBR{secrets.token_hex(10)}"
            row.refunded_fen, row.refunded_at = amount_fen, utcnow()
            return RefundResult(row.refund_id, "SUCCESS", amount_fen)

    async def query_refund(self, refund_no: str) -> RefundResult | None:
        async with self.db.read() as session:
            row = await session.scalar(
                select(SandboxTrade).where(SandboxTrade.refund_no == refund_no)
            )
            if row is None or row.refund_id is None:
                return None
            return RefundResult(row.refund_id, "SUCCESS", row.refunded_fen)

    # --- the simulated payer ------------------------------------------------------

    async def charge(self, out_trade_no: str) -> ProviderTrade:
        """The payer pays (once): the trade is SUCCESS with a transaction id, then notified."""
        async with self.db.transaction() as tx:
            paid = await tx.session.execute(
                update(SandboxTrade)
                .where(SandboxTrade.out_trade_no == out_trade_no, SandboxTrade.state == "NOTPAY")
                .values(state="SUCCESS", transaction_id=f"SBT{secrets.token_hex(12)}",
                        charges=SandboxTrade.charges + 1, paid_at=utcnow())
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            row = await tx.session.get(SandboxTrade, out_trade_no, populate_existing=True)
            if row is None:
                raise NotFound(f"the provider knows no trade {out_trade_no}")
            if rowcount(paid) != 1 and row.state != "SUCCESS":
                raise Conflict("this trade can no longer be paid", code="order_not_payable")
            return trade_of(row)

    def notification(
        self, trade: ProviderTrade, *, amount_fen: int | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The signed notification of a paid (or refunded) trade: headers and body."""
        refunded = trade.state == "REFUND"
        payload = {
            "id": secrets.token_hex(8),
            "create_time": utcnow().isoformat(),
            "event_type": "REFUND.SUCCESS" if refunded else "TRANSACTION.SUCCESS",
            "resource": {
                "out_trade_no": trade.out_trade_no,
                "transaction_id": trade.transaction_id,
                "trade_state": trade.state,
                "refund_id": trade.refund_id,
                "amount": {"total": trade.amount_fen if amount_fen is None else amount_fen,
                           "currency": "CNY"},
            },
        }  # fmt: skip
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP: timestamp,
            NONCE: nonce,
            SIGNATURE: sign(self.key, timestamp, nonce, body),
        }
        return headers, body

    def send_later(self, trade: ProviderTrade, notify_url: str) -> None:
        """Deliver the notification in the background (retried a few times, as providers do)."""
        task = asyncio.get_running_loop().create_task(self._deliver(trade, notify_url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, trade: ProviderTrade, notify_url: str) -> None:
        for attempt in range(5):
            await asyncio.sleep(self.delay if attempt == 0 else 2.0**attempt)
            headers, body = self.notification(trade)
            try:
                http = self._http or aiohttp.ClientSession()
                self._http = http
                async with http.post(notify_url, data=body, headers=headers) as response:
                    if response.status < 300:
                        return
                    logger.warning("sandbox notification answered %s", response.status)
                    if response.status < 500:
                        return
            except (aiohttp.ClientError, OSError) as exc:
                logger.warning("sandbox notification not delivered: %s", type(exc).__name__)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        yield
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
