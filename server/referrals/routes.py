"""HTTP edge of referrals: create, read, and each step of the state machine."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes
from server.referrals import schemas
from server.scheduling.service import DESK_ROLES

routes = Routes(tag="referrals")
REFERRAL = r"/api/v1/referrals/{referral_id:\d+}"


@routes.op(
    "POST",
    "/api/v1/referrals",
    summary="Refer a patient up (community → tertiary department) or down (→ community clinic)",
    body=schemas.ReferralCreate,
    response=schemas.ReferralOut,
    status=201,
    roles={"gp", "specialist"},
    errors=(403, 422),
)
async def create_referral(call: Call) -> schemas.ReferralOut:
    return await services(call).referrals.create(call.user, call.body)


@routes.op(
    "GET",
    "/api/v1/referrals",
    summary="Referrals my institution received or sent (a patient: their own)",
    query=schemas.ReferralQuery,
    response=schemas.ReferralList,
)
async def list_referrals(call: Call) -> schemas.ReferralList:
    return schemas.ReferralList(
        items=await services(call).referrals.list_referrals(call.user, call.query)
    )


@routes.op("GET", REFERRAL, summary="One referral with its history", response=schemas.ReferralOut,
           errors=(404,))  # fmt: skip
async def get_referral(call: Call) -> schemas.ReferralOut:
    return await services(call).referrals.get(call.user, call.path_int("referral_id"))


@routes.op(
    "POST",
    REFERRAL + "/accept",
    summary="Accept (receiving desk; with slot_id: book and schedule at once) — "
    "for a down-referral, the community doctor's acknowledgement",
    body=schemas.AcceptRequest,
    response=schemas.ReferralOut,
    roles=DESK_ROLES,
    errors=(403, 404, 409, 422),
)
async def accept_referral(call: Call) -> schemas.ReferralOut:
    return await services(call).referrals.accept(call.user, call.path_int("referral_id"), call.body)


@routes.op(
    "POST",
    REFERRAL + "/schedule",
    summary="Book a slot for an accepted referral",
    body=schemas.ScheduleRequest,
    response=schemas.ReferralOut,
    roles=DESK_ROLES,
    errors=(403, 404, 409, 422),
)
async def schedule_referral(call: Call) -> schemas.ReferralOut:
    return await services(call).referrals.schedule(
        call.user, call.path_int("referral_id"), call.body.slot_id
    )


@routes.op(
    "POST",
    REFERRAL + "/decline",
    summary="Decline with a reason (receiving desk)",
    body=schemas.ReasonRequest,
    response=schemas.ReferralOut,
    roles=DESK_ROLES,
    errors=(403, 404, 409),
)
async def decline_referral(call: Call) -> schemas.ReferralOut:
    return await services(call).referrals.transition(
        call.user, call.path_int("referral_id"), "decline", call.body.reason
    )


@routes.op(
    "POST",
    REFERRAL + "/cancel",
    summary="Cancel with a reason (referring institution)",
    body=schemas.ReasonRequest,
    response=schemas.ReferralOut,
    roles=DESK_ROLES,
    errors=(403, 404, 409),
)
async def cancel_referral(call: Call) -> schemas.ReferralOut:
    return await services(call).referrals.transition(
        call.user, call.path_int("referral_id"), "cancel", call.body.reason
    )


@routes.op(
    "POST",
    REFERRAL + "/arrive",
    summary="The patient arrived (receiving institution)",
    body=schemas.NoteRequest,
    response=schemas.ReferralOut,
    roles=DESK_ROLES,
    errors=(403, 404, 409),
)
async def arrive_referral(call: Call) -> schemas.ReferralOut:
    return await services(call).referrals.transition(
        call.user, call.path_int("referral_id"), "arrive", call.body.note
    )


@routes.op(
    "POST",
    REFERRAL + "/complete",
    summary="The referral's care is done (receiving institution); the record window closes",
    body=schemas.NoteRequest,
    response=schemas.ReferralOut,
    roles=DESK_ROLES,
    errors=(403, 404, 409),
)
async def complete_referral(call: Call) -> schemas.ReferralOut:
    return await services(call).referrals.transition(
        call.user, call.path_int("referral_id"), "complete", call.body.note
    )
