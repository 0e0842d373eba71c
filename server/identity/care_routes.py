"""HTTP edge of earning a care relationship: presence codes, link requests, what the patient sees."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes
from server.identity import schemas

routes = Routes(tag="care")


@routes.op(
    "POST",
    "/api/v1/me/presence-code",
    summary="A short-lived 一号通 presence code for the desk (the patient's app shows it)",
    response=schemas.PresenceCodeOut,
    status=201,
    roles={"patient"},
    errors=(403,),
    # The code is kept only as a hash: its answer is not stored for a retry (a new one is).
    idempotency="none",
)
async def issue_presence_code(call: Call[None, None]) -> schemas.PresenceCodeOut:
    return await services(call).care.issue_presence_code(call.user)


@routes.op(
    "POST",
    "/api/v1/care/presence",
    summary="The desk read the patient's presence code: my institution now cares for them",
    body=schemas.PresenceConfirm,
    response=schemas.CareRelationshipOut,
    status=201,
    roles={"specialist", "gp", "nurse", "institution_admin"},
    errors=(403, 422),
)
async def confirm_presence(
    call: Call[schemas.PresenceConfirm, None],
) -> schemas.CareRelationshipOut:
    return await services(call).care.confirm_presence(call.user, call.body)


@routes.op(
    "POST",
    r"/api/v1/patients/{patient_id:\d+}/care-requests",
    summary="Ask the patient (in their app) to let my institution care for them",
    body=schemas.CareRequestCreate,
    response=schemas.CareRequestOut,
    status=201,
    roles={"specialist", "gp", "nurse", "institution_admin"},
    errors=(403, 404),
)
async def request_care(call: Call[schemas.CareRequestCreate, None]) -> schemas.CareRequestOut:
    return await services(call).care.request_care(call.user, call.path_int("patient_id"), call.body)


@routes.op(
    "GET",
    r"/api/v1/patients/{patient_id:\d+}/care-requests",
    summary="The institutions asking to care for me, and my answers (the patient)",
    response=schemas.CareRequestList,
    roles={"patient"},
    errors=(403,),
)
async def list_care_requests(call: Call[None, None]) -> schemas.CareRequestList:
    return await services(call).care.list_requests(call.user, call.path_int("patient_id"))


@routes.op(
    "POST",
    r"/api/v1/care-requests/{request_id:\d+}/decision",
    summary="Approve or decline an institution's request (the patient)",
    body=schemas.CareDecision,
    response=schemas.CareRequestOut,
    roles={"patient"},
    errors=(403, 404, 422),
)
async def decide_care_request(call: Call[schemas.CareDecision, None]) -> schemas.CareRequestOut:
    return await services(call).care.decide(call.user, call.path_int("request_id"), call.body)


@routes.op(
    "GET",
    r"/api/v1/patients/{patient_id:\d+}/care-relationships",
    summary="Which institutions care for me, since when, why, and when it ends (the patient)",
    response=schemas.CareRelationshipList,
    roles={"patient"},
    errors=(403,),
)
async def list_care_relationships(call: Call[None, None]) -> schemas.CareRelationshipList:
    return await services(call).care.list_relationships(call.user, call.path_int("patient_id"))


@routes.op(
    "GET",
    "/api/v1/emergency-accesses",
    summary="Break-the-glass reads to review (my institution's clinicians; all for the platform)",
    query=schemas.EmergencyQuery,
    response=schemas.EmergencyAccessList,
    roles={"institution_admin", "platform_admin"},
    errors=(403,),
)
async def list_emergency_accesses(
    call: Call[None, schemas.EmergencyQuery],
) -> schemas.EmergencyAccessList:
    return await services(call).care.list_emergencies(call.user, call.query)


@routes.op(
    "POST",
    r"/api/v1/emergency-accesses/{seq:\d+}/review",
    summary="Record the verdict on a break-the-glass read (reaches the patient's access log)",
    body=schemas.EmergencyReviewSet,
    response=schemas.EmergencyAccessOut,
    roles={"institution_admin", "platform_admin"},
    errors=(403, 404, 422),
)
async def review_emergency_access(
    call: Call[schemas.EmergencyReviewSet, None],
) -> schemas.EmergencyAccessOut:
    return await services(call).care.review_emergency(call.user, call.path_int("seq"), call.body)
