"""HTTP edge of remote consultations: request, answer, life cycle, record panel, opinion, ICE."""

from __future__ import annotations

from server.consults import schemas
from server.container import services
from server.core.api import Call, Routes
from server.core.history import HistoryList
from server.core.roles import REQUESTER_ROLES, Role
from server.media.ice import ice_servers

routes = Routes(tag="consults")
ONE = r"/api/v1/consults/{consult_id:\d+}"


@routes.op(
    "POST",
    "/api/v1/consults",
    summary="Request a remote consultation (informed consent first)",
    body=schemas.ConsultCreate,
    response=schemas.ConsultOut,
    status=201,
    roles=REQUESTER_ROLES,
    errors=(403, 404, 422),
)
async def request_consult(call: Call[schemas.ConsultCreate, None]) -> schemas.ConsultOut:
    return await services(call).consults.lifecycle.request(call.user, call.body)


@routes.op(
    "GET",
    "/api/v1/consults",
    summary="Consults of my institution (requested or invited) or, for a patient, mine",
    query=schemas.ConsultQuery,
    response=schemas.ConsultList,
)
async def list_consults(call: Call[None, schemas.ConsultQuery]) -> schemas.ConsultList:
    items = await services(call).consults.reads.list_consults(call.user, call.query.status)
    return schemas.ConsultList(items=items)


@routes.op("GET", ONE, summary="One consult", response=schemas.ConsultOut, errors=(404,))
async def get_consult(call: Call[None, None]) -> schemas.ConsultOut:
    return await services(call).consults.reads.get_consult(call.user, call.path_int("consult_id"))


@routes.op(
    "GET", ONE + "/history", summary="The consult's life cycle", response=HistoryList,
    errors=(404,),
)  # fmt: skip
async def get_history(call: Call[None, None]) -> HistoryList:
    return await services(call).consults.reads.history(call.user, call.path_int("consult_id"))


@routes.op(
    "POST",
    ONE + "/accept",
    summary="Accept (with a time: scheduled at once)",
    body=schemas.Accept,
    response=schemas.ConsultOut,
    roles={Role.SPECIALIST},
    errors=(403, 404, 409),
)
async def accept(call: Call[schemas.Accept, None]) -> schemas.ConsultOut:
    return await services(call).consults.lifecycle.accept(
        call.user, call.path_int("consult_id"), call.body
    )


@routes.op(
    "POST",
    ONE + "/propose",
    summary="Accept, proposing another time for the requester to confirm",
    body=schemas.Propose,
    response=schemas.ConsultOut,
    roles={Role.SPECIALIST},
    errors=(403, 404, 409),
)
async def propose(call: Call[schemas.Propose, None]) -> schemas.ConsultOut:
    return await services(call).consults.lifecycle.propose(
        call.user, call.path_int("consult_id"), call.body
    )


@routes.op(
    "POST",
    ONE + "/decline",
    summary="Decline, with a reason",
    body=schemas.Decline,
    response=schemas.ConsultOut,
    roles={Role.SPECIALIST},
    errors=(403, 404, 409),
)
async def decline(call: Call[schemas.Decline, None]) -> schemas.ConsultOut:
    return await services(call).consults.lifecycle.decline(
        call.user, call.path_int("consult_id"), call.body
    )


@routes.op(
    "POST",
    ONE + "/schedule",
    summary="Schedule an accepted consult (host)",
    body=schemas.Schedule,
    response=schemas.ConsultOut,
    errors=(403, 404, 409),
)
async def schedule(call: Call[schemas.Schedule, None]) -> schemas.ConsultOut:
    return await services(call).consults.lifecycle.schedule(
        call.user, call.path_int("consult_id"), call.body
    )


@routes.op(
    "POST",
    ONE + "/confirm",
    summary="Take the proposed time (requester)",
    response=schemas.ConsultOut,
    errors=(403, 404, 409),
)
async def confirm(call: Call[None, None]) -> schemas.ConsultOut:
    return await services(call).consults.lifecycle.confirm(call.user, call.path_int("consult_id"))


@routes.op(
    "POST",
    ONE + "/cancel",
    summary="Cancel (requester)",
    body=schemas.Cancel,
    response=schemas.ConsultOut,
    errors=(403, 404, 409),
)
async def cancel(call: Call[schemas.Cancel, None]) -> schemas.ConsultOut:
    return await services(call).consults.lifecycle.cancel(
        call.user, call.path_int("consult_id"), call.body
    )


@routes.op(
    "POST",
    ONE + "/close",
    summary="Close after the opinion (requester or host); the record window closes",
    response=schemas.ConsultOut,
    errors=(403, 404, 409),
)
async def close(call: Call[None, None]) -> schemas.ConsultOut:
    return await services(call).consults.lifecycle.close(call.user, call.path_int("consult_id"))


@routes.op(
    "POST",
    ONE + "/participants",
    summary="Invite a colleague into the consult room",
    body=schemas.AddParticipant,
    response=schemas.ConsultOut,
    status=201,
    errors=(403, 404, 409, 422),
)
async def add_participant(call: Call[schemas.AddParticipant, None]) -> schemas.ConsultOut:
    return await services(call).consults.lifecycle.add_participant(
        call.user, call.path_int("consult_id"), call.body
    )


@routes.op(
    "GET",
    ONE + "/record",
    summary="Record panel: the frozen snapshot and the live shared record (participants)",
    response=schemas.RecordPanel,
    errors=(403, 404),
)
async def record_panel(call: Call[None, None]) -> schemas.RecordPanel:
    return await services(call).consults.panel.get_panel(call.user, call.path_int("consult_id"))


@routes.op(
    "POST",
    ONE + "/opinion",
    summary="Write and sign the consult opinion (host); it goes into the patient's record",
    body=schemas.OpinionIn,
    response=schemas.OpinionOut,
    status=201,
    errors=(403, 404, 409, 422),
)
async def write_opinion(call: Call[schemas.OpinionIn, None]) -> schemas.OpinionOut:
    return await services(call).consults.opinion.write(
        call.user, call.path_int("consult_id"), call.body
    )


@routes.op(
    "GET",
    ONE + "/opinion",
    summary="The signed opinion, with its signature checked now",
    response=schemas.OpinionOut,
    errors=(404,),
)
async def get_opinion(call: Call[None, None]) -> schemas.OpinionOut:
    return await services(call).consults.opinion.get(call.user, call.path_int("consult_id"))


@routes.op(
    "GET",
    ONE + "/ice-servers",
    summary="STUN/TURN servers for the session, with short-lived TURN credentials",
    response=schemas.IceServers,
    errors=(403, 404),
)
async def get_ice_servers(call: Call[None, None]) -> schemas.IceServers:
    svc = services(call)
    await svc.consults.room.check_open(call.user, call.path_int("consult_id"))
    return schemas.IceServers(**ice_servers(svc.settings, call.user.user_id))
