"""HTTP edge of referrals: create, read, and each step of the state machine."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes
from server.core.roles import DESK_ROLES, REFERRING_ROLES
from server.referrals import schemas

routes = Routes(tag="referrals")
REFERRAL = r"/api/v1/referrals/{referral_id:\d+}"


@routes.op(
    "POST",
    "/api/v1/referrals",
    summary="Refer a patient up (community → tertiary department) or down (→ community clinic)",
    body=schemas.ReferralCreate,
    response=schemas.ReferralOut,
    status=201,
    roles=REFERRING_ROLES,
    errors=(403, 422),
)
async def create_referral(call: Call[schemas.ReferralCreate, None]) -> schemas.ReferralOut:
    return await services(call).referrals.create(call.user, call.body)


@routes.op(
    "POST",
    r"/api/v1/consults/{consult_id:\d+}/referral",
    summary="Turn a consult whose opinion recommends referral into a referral, in one step",
    body=schemas.ReferralCreate,
    response=schemas.ReferralOut,
    status=201,
    roles=REFERRING_ROLES,
    errors=(403, 404, 409, 422),
)
async def create_referral_from_consult(
    call: Call[schemas.ReferralCreate, None],
) -> schemas.ReferralOut:
    svc = services(call)
    basis = await svc.consults.referral_basis(
        call.user, call.path_int("consult_id"), call.body.patient_id
    )
    return await svc.referrals.create_from_consult(call.user, basis["consult_id"], basis, call.body)


@routes.op(
    "GET",
    "/api/v1/referrals",
    summary="Referrals my institution received or sent (a patient: their own)",
    query=schemas.ReferralQuery,
    response=schemas.ReferralList,
)
async def list_referrals(call: Call[None, schemas.ReferralQuery]) -> schemas.ReferralList:
    return schemas.ReferralList(
        items=await services(call).referrals.list_referrals(call.user, call.query)
    )


@routes.op("GET", REFERRAL, summary="One referral with its history", response=schemas.ReferralOut,
           errors=(404,))  # fmt: skip
async def get_referral(call: Call[None, None]) -> schemas.ReferralOut:
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
async def accept_referral(call: Call[schemas.AcceptRequest, None]) -> schemas.ReferralOut:
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
async def schedule_referral(call: Call[schemas.ScheduleRequest, None]) -> schemas.ReferralOut:
    return await services(call).referrals.schedule(
        call.user, call.path_int("referral_id"), call.body.slot_id
    )


# The plain steps: each moves the referral along, with a reason or an optional note.
StepBody = type[schemas.ReasonRequest] | type[schemas.NoteRequest]
STEPS: dict[str, tuple[str, StepBody]] = {
    "decline": ("Decline with a reason (receiving desk)", schemas.ReasonRequest),
    "cancel": ("Cancel with a reason (referring institution)", schemas.ReasonRequest),
    "arrive": ("The patient arrived (receiving institution)", schemas.NoteRequest),
    "complete": (
        "The referral's care is done (receiving institution); the record window closes",
        schemas.NoteRequest,
    ),
}


def _add_step(action: str, summary: str, body: StepBody) -> None:
    async def step(
        call: Call[schemas.ReasonRequest | schemas.NoteRequest, None],
    ) -> schemas.ReferralOut:
        note = call.body.reason if isinstance(call.body, schemas.ReasonRequest) else call.body.note
        return await services(call).referrals.transition(
            call.user, call.path_int("referral_id"), action, note
        )

    step.__name__ = f"{action}_referral"
    routes.op(
        "POST",
        f"{REFERRAL}/{action}",
        summary=summary,
        body=body,
        response=schemas.ReferralOut,
        roles=DESK_ROLES,
        errors=(403, 404, 409),
    )(step)


for _action, (_summary, _body) in STEPS.items():
    _add_step(_action, _summary, _body)
