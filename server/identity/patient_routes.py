"""HTTP edge of the patient index: registration, lookup by local number, merge, verification."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes
from server.identity import schemas

routes = Routes(tag="patients")


@routes.op(
    "POST",
    "/api/v1/patients",
    summary="Register a resident at my institution (links to their account if they have one)",
    body=schemas.PatientRegister,
    response=schemas.PatientRegistered,
    status=201,
    errors=(403, 409, 422),
)
async def register_patient(call: Call[schemas.PatientRegister, None]) -> schemas.PatientRegistered:
    return await services(call).patients.register(call.user, call.body)


@routes.op(
    "GET",
    "/api/v1/patients",
    summary="Patients registered at or seen by my institution (clinicians; audited)",
    query=schemas.MyPatientsQuery,
    response=schemas.MyPatientList,
    roles={"gp", "specialist", "nurse"},
    errors=(403,),
)
async def list_my_patients(call: Call[None, schemas.MyPatientsQuery]) -> schemas.MyPatientList:
    return await services(call).patients.list_mine(call.user, call.query)


@routes.op(
    "GET",
    "/api/v1/patients/lookup",
    summary="Find a patient by an institution's own patient or card number",
    query=schemas.PatientLookup,
    response=schemas.PatientOut,
    errors=(403, 404),
)
async def lookup_patient(call: Call[None, schemas.PatientLookup]) -> schemas.PatientOut:
    return await services(call).patients.lookup(call.user, call.query)


@routes.op(
    "GET",
    r"/api/v1/patients/{patient_id:\d+}",
    summary="A patient's unified account and linked numbers",
    response=schemas.PatientOut,
    errors=(403, 404),
)
async def get_patient(call: Call[None, None]) -> schemas.PatientOut:
    return await services(call).patients.get(call.user, call.path_int("patient_id"))


@routes.op(
    "PUT",
    r"/api/v1/patients/{patient_id:\d+}/verification",
    summary="Record the real-name verification status",
    body=schemas.VerificationSet,
    response=schemas.PatientOut,
    roles={"platform_admin", "institution_admin"},
    errors=(403, 404),
)
async def set_verification(call: Call[schemas.VerificationSet, None]) -> schemas.PatientOut:
    return await services(call).patients.set_verified(
        call.user, call.path_int("patient_id"), call.body.verified
    )


@routes.op(
    "POST",
    "/api/v1/patient-merges",
    summary="Merge a duplicate account into the one that stays (its record follows)",
    body=schemas.PatientMergeRequest,
    response=schemas.PatientMergeOut,
    status=201,
    roles={"platform_admin"},
    errors=(404, 409, 422),
)
async def merge_patients(call: Call[schemas.PatientMergeRequest, None]) -> schemas.PatientMergeOut:
    return await services(call).patients.merge(call.user, call.body)


@routes.op(
    "POST",
    r"/api/v1/patient-merges/{merge_id:\d+}/undo",
    summary="Undo a merge: what moved goes back",
    response=schemas.PatientMergeOut,
    roles={"platform_admin"},
    errors=(404, 409),
)
async def unmerge_patients(call: Call[None, None]) -> schemas.PatientMergeOut:
    return await services(call).patients.unmerge(call.user, call.path_int("merge_id"))
