"""Messages outside the app: the channel interface, its adapters and the templates per kind.

A channel sends one templated message to one person and answers the provider's message
id: ``await channel.send(recipient, template_id, params)``. Three are built in, chosen by
``NOTIFY_CHANNELS``:

- ``log``, the default and the demo's: one structured log line (ids and the template, never
  a phone number); the ``outbound_messages`` row the dispatcher keeps is its record;
- ``sms``: an HTTP gateway at ``NOTIFY_SMS_URL`` (a JSON POST of the phone number, the
  template id and its parameters, answered ``{"message_id": …}``), the shape of the
  template-SMS APIs of the Chinese cloud providers;
- ``wechat``: a WeChat template-message gateway at ``NOTIFY_WECHAT_URL``, the same shape
  with ``touser`` instead of a phone number.

A failure raises :class:`ChannelError`; the dispatcher retries it later.

**No clinical detail leaves the app.** A template per kind says only that there is
something to look at ("您有一条新的检验报告"); its parameters are a time or an amount,
taken from the inbox item's data by :func:`template_for`, never its title, a diagnosis, a
drug or a result.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import aiohttp

from server.config import Settings, SettingsError

logger = logging.getLogger(__name__)

# The patient notification kinds (the common list every capability notifies with).
KINDS = (
    "appointment_reminder",
    "booking_confirmed",
    "booking_cancelled",
    "visit_ready",
    "visit_reminder",
    "prescription_approved",
    "prescription_ready",
    "prescription_dispensed",
    "result_ready",
    "opinion_available",
    "payment_paid",
    "payment_refunded",
)
CHANNELS = ("log", "sms", "wechat")
LOCAL_TIME = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Template:
    id: str
    text: str  # zh, with {name} slots for the parameters below
    params: tuple[str, ...] = ()


# What a message says, per kind: that there is news, and where to look. Nothing clinical.
TEMPLATES: dict[str, Template] = {
    "appointment_reminder": Template(
        "YH_APPT_REMIND", "【一号通】您预约的就诊将于{time}开始，请按时到院。", ("time",)
    ),
    "booking_confirmed": Template(
        "YH_BOOK_OK", "【一号通】您已预约成功，就诊时间{time}。", ("time",)
    ),
    "booking_cancelled": Template("YH_BOOK_CANCEL", "【一号通】您{time}的预约已取消。", ("time",)),
    "visit_ready": Template("YH_VISIT_READY", "【一号通】医生已开始复诊，请打开一号通进入候诊室。"),
    "visit_reminder": Template(
        "YH_VISIT_REMIND", "【一号通】您的在线复诊将于{time}开始，请提前打开一号通。", ("time",)
    ),
    "prescription_approved": Template(
        "YH_RX_APPROVED", "【一号通】您的处方已审核通过，请在一号通查看。"
    ),
    "prescription_ready": Template("YH_RX_READY", "【一号通】您的药品已备好，请到所选药房取药。"),
    "prescription_dispensed": Template("YH_RX_DISPENSED", "【一号通】您的处方药品已发放。"),
    "result_ready": Template("YH_RESULT", "【一号通】您有一条新的检验报告，请在一号通查看。"),
    "opinion_available": Template("YH_OPINION", "【一号通】您的会诊意见已出具，请在一号通查看。"),
    "payment_paid": Template("YH_PAID", "【一号通】您已成功支付{amount}元。", ("amount",)),
    "payment_refunded": Template(
        "YH_REFUNDED", "【一号通】您的{amount}元退款已办理。", ("amount",)
    ),
}


def _time(data: dict[str, Any]) -> str | None:
    for key in ("time", "start", "starts_at", "start_at"):
        value = data.get(key)
        if isinstance(value, str):
            try:
                at = datetime.fromisoformat(value)
            except ValueError:
                continue
            if at.tzinfo is not None:
                at = at.astimezone(LOCAL_TIME)
            return f"{at.month}月{at.day}日 {at:%H:%M}"
    return None


def _amount(data: dict[str, Any]) -> str | None:
    for key in ("amount_fen", "amount", "refund_fen"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return f"{value // 100}.{value % 100:02d}"
    return None


_PARAMS = {"time": _time, "amount": _amount}


def template_for(kind: str, data: dict[str, Any]) -> tuple[Template, dict[str, str]] | None:
    """The template of a patient kind and its parameters from the item's data (None: not a
    patient kind). A parameter the data lacks is said without it ("近期")."""
    template = TEMPLATES.get(kind)
    if template is None:
        return None
    params = {}
    for name in template.params:
        value = _PARAMS[name](data)
        params[name] = value if value is not None else ("近期" if name == "time" else "—")
    return template, params


def render(template_id: str, params: dict[str, Any]) -> str:
    """The text of a template (what the log channel shows and the tests read)."""
    for template in TEMPLATES.values():
        if template.id == template_id:
            return template.text.format(**params)
    raise KeyError(template_id)


@dataclass(frozen=True)
class Recipient:
    user_id: int
    phone: str | None  # the patient's registered phone number, if any


class ChannelError(Exception):
    """The message was not sent. ``retry``: the provider surely did not take it (no
    connection, 5xx, 429), so trying again cannot make a second message; otherwise (refused
    for good, or no clear answer: a timeout, a dropped connection, a 2xx without an id) it
    is never tried again, since the provider may have sent it."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Channel(Protocol):
    name: str

    def reaches(self, recipient: Recipient) -> bool:
        """Whether the channel has an address for the recipient."""

    async def send(self, recipient: Recipient, template_id: str, params: dict[str, Any]) -> str:
        """Send one templated message; the provider's message id."""


class LogChannel:
    """The demo's channel: a structured log line, the message id from the outbox row."""

    name = "log"

    def reaches(self, recipient: Recipient) -> bool:
        return True

    async def send(self, recipient: Recipient, template_id: str, params: dict[str, Any]) -> str:
        message_id = f"log-{uuid.uuid4().hex}"
        logger.info(
            "outbound message",
            extra={
                "channel": self.name,
                "user_id": recipient.user_id,
                "template_id": template_id,
                "message_id": message_id,
            },
        )
        return message_id


class HttpChannel:
    """A provider gateway spoken to over HTTP: POST JSON, ``{"message_id": …}`` back."""

    name = ""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def reaches(self, recipient: Recipient) -> bool:
        return True

    def payload(
        self, recipient: Recipient, template_id: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def send(self, recipient: Recipient, template_id: str, params: dict[str, Any]) -> str:
        body = self.payload(recipient, template_id, params)
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.post(self.url, json=body) as response,
            ):
                if response.status >= 300:
                    retry = response.status >= 500 or response.status == 429
                    raise ChannelError(
                        f"{self.name} gateway answered {response.status}", retry=retry
                    )
                answer = await response.json(content_type=None)
        except aiohttp.ClientConnectorError as exc:
            raise ChannelError(f"{self.name} gateway unreachable", retry=True) from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ChannelError(
                f"{self.name} gateway: outcome unknown ({type(exc).__name__})", retry=False
            ) from exc
        message_id = answer.get("message_id") if isinstance(answer, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise ChannelError(f"{self.name} gateway: outcome unknown (no message_id)", retry=False)
        return message_id


class SmsChannel(HttpChannel):
    """Template SMS: the phone number, the template id and its parameters."""

    name = "sms"

    def reaches(self, recipient: Recipient) -> bool:
        return bool(recipient.phone)

    def payload(
        self, recipient: Recipient, template_id: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        return {"phone": recipient.phone, "template_id": template_id, "params": params}


class WechatChannel(HttpChannel):
    """WeChat template messages: ``touser`` is the account id; the gateway maps it to the
    openid the official account knows (Yihao stores no openid)."""

    name = "wechat"

    def payload(
        self, recipient: Recipient, template_id: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "touser": str(recipient.user_id),
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in params.items()},
        }


def build_channels(settings: Settings) -> dict[str, Channel]:
    """The configured channels, by name; a gateway channel without its URL stops the start."""
    channels: dict[str, Channel] = {}
    for name in settings.notify_channels:
        if name == "log":
            channels[name] = LogChannel()
        elif name == "sms":
            if not settings.notify_sms_url:
                raise SettingsError("YIHAO_NOTIFY_SMS_URL: required when notify_channels has sms")
            channels[name] = SmsChannel(
                settings.notify_sms_url, settings.notify_send_timeout_seconds
            )
        else:
            if not settings.notify_wechat_url:
                raise SettingsError(
                    "YIHAO_NOTIFY_WECHAT_URL: required when notify_channels has wechat"
                )
            channels[name] = WechatChannel(
                settings.notify_wechat_url, settings.notify_send_timeout_seconds
            )
    return channels
