"""HTTP edge of payments: fee schedules, orders, refunds, provider notifications, the sandbox."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes, read_body
from server.core.roles import Role
from server.payments import schemas

routes = Routes(tag="payments")

# A provider's notification is small (WeChat Pay's are under 2 KB).
NOTIFY_MAX_BYTES = 16 * 1024


@routes.op(
    "GET",
    r"/api/v1/institutions/{institution_id:\d+}/fees",
    summary="The institution's fee schedule (integer fen per service kind, per department)",
    response=schemas.FeeScheduleOut,
    errors=(404,),
)
async def get_fees(call: Call[None, None]) -> schemas.FeeScheduleOut:
    return await services(call).payments.get_fees(call.path_int("institution_id"))


@routes.op(
    "PUT",
    r"/api/v1/institutions/{institution_id:\d+}/fees",
    summary="Replace the institution's fee schedule (its administrator)",
    body=schemas.FeeSchedule,
    response=schemas.FeeScheduleOut,
    roles={Role.INSTITUTION_ADMIN},
    errors=(403, 422),
)
async def set_fees(call: Call[schemas.FeeSchedule, None]) -> schemas.FeeScheduleOut:
    return await services(call).payments.set_fees(
        call.user, call.path_int("institution_id"), call.body
    )


@routes.op(
    "POST",
    "/api/v1/orders",
    summary="Order and pay for my own appointment, visit, consult or prescription (结算支付)",
    body=schemas.OrderCreate,
    response=schemas.OrderOut,
    status=201,
    roles={Role.PATIENT},
    errors=(403, 404, 409, 422),
)
async def create_order(call: Call[schemas.OrderCreate, None]) -> schemas.OrderOut:
    return await services(call).payments.create_order(call.user, call.body)


@routes.op(
    "GET",
    "/api/v1/orders",
    summary="My orders (patient) or my institution's (its staff), newest first",
    response=schemas.OrderList,
)
async def list_orders(call: Call[None, None]) -> schemas.OrderList:
    return schemas.OrderList(items=await services(call).payments.list_orders(call.user))


@routes.op(
    "GET",
    r"/api/v1/orders/{order_id:\d+}",
    summary="One order",
    response=schemas.OrderOut,
    errors=(404,),
)
async def get_order(call: Call[None, None]) -> schemas.OrderOut:
    return await services(call).payments.get_order(call.user, call.path_int("order_id"))


@routes.op(
    "POST",
    r"/api/v1/orders/{order_id:\d+}/refund",
    summary="Refund a paid order: the patient before the service, or the institution's staff",
    body=schemas.RefundRequest,
    response=schemas.OrderOut,
    errors=(404, 409),
)
async def refund_order(call: Call[schemas.RefundRequest, None]) -> schemas.OrderOut:
    return await services(call).payments.refund(
        call.user, call.path_int("order_id"), call.body.reason
    )


@routes.op(
    "POST",
    r"/api/v1/payments/notify/{provider:[a-z0-9_]+}",
    summary="A payment provider's asynchronous notification (signed; no account)",
    response=schemas.NotifyAnswer,
    auth=False,
    errors=(400, 404, 409, 429),
)
async def payment_notify(call: Call[None, None]) -> schemas.NotifyAnswer:
    body = await read_body(call.request, NOTIFY_MAX_BYTES)
    return await services(call).payments.handle_notification(
        call.path_str("provider"), call.request.headers, body, call.request.remote or ""
    )


@routes.op(
    "POST",
    r"/api/v1/payments/sandbox/{trade_no:[A-Za-z0-9]+}/pay",
    summary="The sandbox provider's payer (demo and tests): charge, then notify asynchronously",
    response=schemas.SandboxPaid,
    roles={Role.PATIENT},
    errors=(404, 409),
)
async def sandbox_pay(call: Call[None, None]) -> schemas.SandboxPaid:
    return await services(call).payments.sandbox_pay(
        call.user, call.path_str("trade_no"), str(call.request.url.origin())
    )
