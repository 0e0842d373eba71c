"""HTTP edge of the triage: a suggestion for my complaint, and my past suggestions."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes
from server.core.roles import CLINICIAN_ROLES, Role
from server.triage import schemas

routes = Routes(tag="triage")

# The patient; and clinicians, who try the table (their log names no patient).
TRIAGE_ROLES = frozenset({Role.PATIENT}) | CLINICIAN_ROLES


@routes.op(
    "POST",
    "/api/v1/triage",
    summary="Which department to book and how urgent, from my complaint in my own words "
    "(never a diagnosis; red flags say: go to the emergency department or call 120 now)",
    body=schemas.TriageRequest,
    response=schemas.TriageAnswer,
    roles=TRIAGE_ROLES,
    errors=(422,),
)
async def triage(call: Call[schemas.TriageRequest, None]) -> schemas.TriageAnswer:
    return await services(call).triage.suggest(call.user, call.body)


@routes.op(
    "GET",
    "/api/v1/triage/history",
    summary="My triage suggestions, newest first",
    query=schemas.TriageHistoryQuery,
    response=schemas.TriageHistory,
    roles={Role.PATIENT},
)
async def triage_history(call: Call[None, schemas.TriageHistoryQuery]) -> schemas.TriageHistory:
    return await services(call).triage.history(
        call.user, limit=call.query.limit, before=call.query.before
    )
