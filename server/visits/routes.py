"""HTTP edge of follow-up video visits: request, answer, room, record, prescriptions, end."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes, Strict
from server.core.roles import PRESCRIBER_ROLES, Role
from server.visits import schemas

routes = Routes(tag="visits")
ONE = r"/api/v1/visits/{visit_id:\d+}"
PATIENT: frozenset[str] = frozenset({Role.PATIENT})


class VisitQuery(Strict):
    status: schemas.Status | None = None


@routes.op(
    "GET",
    "/api/v1/visits/doctors",
    summary="The doctors a patient may ask for a follow-up video visit",
    response=schemas.VisitDoctorList,
    roles=PATIENT,
)
async def list_visit_doctors(call: Call[None, None]) -> schemas.VisitDoctorList:
    return await services(call).visits.doctors(call.user)


@routes.op(
    "GET",
    "/api/v1/visits/conditions",
    summary="My diagnoses, each marked whether it was made in person (follow-up only)",
    response=schemas.FollowUpConditionList,
    roles=PATIENT,
)
async def list_visit_conditions(call: Call[None, None]) -> schemas.FollowUpConditionList:
    return await services(call).visits.conditions(call.user)


@routes.op(
    "POST",
    "/api/v1/visits",
    summary="Ask a doctor for a follow-up video visit (互联网复诊)",
    body=schemas.VisitCreate,
    response=schemas.VisitOut,
    status=201,
    roles=PATIENT,
    errors=(403, 422),
)
async def request_visit(call: Call[schemas.VisitCreate, None]) -> schemas.VisitOut:
    return await services(call).visits.request(call.user, call.body)


@routes.op(
    "GET",
    "/api/v1/visits",
    summary="My follow-up visits (a patient's), or the visits asked of me (a doctor's)",
    query=VisitQuery,
    response=schemas.VisitList,
    errors=(403,),
)
async def list_visits(call: Call[None, VisitQuery]) -> schemas.VisitList:
    return await services(call).visits.list_visits(call.user, call.query.status)


@routes.op("GET", ONE, summary="One visit", response=schemas.VisitOut, errors=(403, 404))
async def get_visit(call: Call[None, None]) -> schemas.VisitOut:
    return await services(call).visits.get(call.user, call.path_int("visit_id"))


@routes.op(
    "POST", ONE + "/accept", summary="The doctor accepts", response=schemas.VisitOut,
    roles=PRESCRIBER_ROLES, errors=(403, 404, 409),
)  # fmt: skip
async def visit_accept(call: Call[None, None]) -> schemas.VisitOut:
    return await services(call).visits.accept(call.user, call.path_int("visit_id"))


@routes.op(
    "POST", ONE + "/decline", summary="The doctor declines, with a reason",
    body=schemas.VisitDecline, response=schemas.VisitOut, roles=PRESCRIBER_ROLES,
    errors=(403, 404, 409),
)  # fmt: skip
async def visit_decline(call: Call[schemas.VisitDecline, None]) -> schemas.VisitOut:
    return await services(call).visits.decline(call.user, call.path_int("visit_id"), call.body)


@routes.op(
    "POST", ONE + "/cancel", summary="The patient cancels (before the room opens)",
    response=schemas.VisitOut, roles=PATIENT, errors=(403, 404, 409),
)  # fmt: skip
async def visit_cancel(call: Call[None, None]) -> schemas.VisitOut:
    return await services(call).visits.cancel(call.user, call.path_int("visit_id"))


@routes.op(
    "POST", ONE + "/open",
    summary="The doctor, authenticated, opens the visit's room (the patient is told)",
    body=schemas.VisitOpen, response=schemas.VisitOut, roles=PRESCRIBER_ROLES,
    errors=(401, 403, 404, 409),
)  # fmt: skip
async def visit_open_room(call: Call[schemas.VisitOpen, None]) -> schemas.VisitOut:
    return await services(call).visits.open(call.user, call.path_int("visit_id"), call.body)


@routes.op(
    "POST", ONE + "/admit", summary="The doctor admits the patient from the waiting room",
    response=schemas.VisitOut, roles=PRESCRIBER_ROLES, errors=(403, 404, 409),
)  # fmt: skip
async def visit_admit(call: Call[None, None]) -> schemas.VisitOut:
    return await services(call).visits.admit(call.user, call.path_int("visit_id"))


@routes.op(
    "PUT", ONE + "/record",
    summary="The visit record (complaint, findings, assessment, plan), into the patient's record",
    body=schemas.VisitRecord, response=schemas.VisitOut, roles=PRESCRIBER_ROLES,
    errors=(403, 404, 409, 422),
)  # fmt: skip
async def visit_write_record(call: Call[schemas.VisitRecord, None]) -> schemas.VisitOut:
    return await services(call).visits.write_record(call.user, call.path_int("visit_id"), call.body)


@routes.op(
    "POST", ONE + "/prescriptions",
    summary="Link a prescription the doctor signed for this visit",
    body=schemas.VisitPrescriptionLink, response=schemas.VisitOut, roles=PRESCRIBER_ROLES,
    errors=(403, 404, 409, 422),
)  # fmt: skip
async def visit_link_prescription(
    call: Call[schemas.VisitPrescriptionLink, None],
) -> schemas.VisitOut:
    return await services(call).visits.link_prescription(
        call.user, call.path_int("visit_id"), call.body
    )


@routes.op(
    "POST", ONE + "/end", summary="The doctor ends the visit (the record written)",
    response=schemas.VisitOut, roles=PRESCRIBER_ROLES, errors=(403, 404, 409),
)  # fmt: skip
async def visit_end(call: Call[None, None]) -> schemas.VisitOut:
    return await services(call).visits.end(call.user, call.path_int("visit_id"))
