"""HTTP edge of the shared record: the clinician views, consent, the patient's access list.

A clinician without another reason may "break the glass" by sending the
``X-Emergency-Reason`` header (a non-empty statement); the access is flagged
for review in the audit log.
"""

from __future__ import annotations

from typing import Any

from server.container import services
from server.core.api import Call, Routes
from server.records import schemas

routes = Routes(tag="records")
EMERGENCY_HEADER = "X-Emergency-Reason"


def emergency_reason(call: Call[Any, Any]) -> str | None:
    return call.request.headers.get(EMERGENCY_HEADER)


@routes.op(
    "GET",
    r"/api/v1/patients/{patient_id:\d+}/summary",
    summary="Clinical summary: active problems, recent labs, current medications, allergies",
    response=schemas.ClinicalSummary,
    errors=(403, 404),
)
async def get_summary(call: Call[None, None]) -> schemas.ClinicalSummary:
    return await services(call).records.clinical_summary(
        call.user, call.path_int("patient_id"), emergency_reason(call)
    )


@routes.op(
    "GET",
    r"/api/v1/patients/{patient_id:\d+}/timeline",
    summary="The patient's record across institutions, newest first",
    query=schemas.TimelineQuery,
    response=schemas.Timeline,
    errors=(403, 404, 422),
)
async def get_timeline(call: Call[None, schemas.TimelineQuery]) -> schemas.Timeline:
    return await services(call).records.timeline(
        call.user, call.path_int("patient_id"), call.query, emergency_reason(call)
    )


@routes.op(
    "GET",
    r"/api/v1/patients/{patient_id:\d+}/consents",
    summary="My sharing decisions (the patient)",
    response=schemas.ConsentList,
    errors=(403,),
)
async def list_consents(call: Call[None, None]) -> schemas.ConsentList:
    return await services(call).records.consents(call.user, call.path_int("patient_id"))


@routes.op(
    "PUT",
    r"/api/v1/patients/{patient_id:\d+}/consents/{institution:[A-Z0-9_-]+}",
    summary="Grant or revoke sharing with an institution, excluding sensitive categories",
    body=schemas.ConsentSet,
    response=schemas.ConsentOut,
    errors=(403, 404),
)
async def set_consent(call: Call[schemas.ConsentSet, None]) -> schemas.ConsentOut:
    return await services(call).records.set_consent(
        call.user, call.path_int("patient_id"), call.path_str("institution"), call.body
    )


@routes.op(
    "GET",
    r"/api/v1/patients/{patient_id:\d+}/access-log",
    summary="Who accessed, or was refused, anything about me, newest first, paged (the patient)",
    query=schemas.AccessLogQuery,
    response=schemas.AccessLog,
    errors=(403,),
)
async def get_access_log(call: Call[None, schemas.AccessLogQuery]) -> schemas.AccessLog:
    return await services(call).records.access_log(
        call.user, call.path_int("patient_id"), call.query
    )
