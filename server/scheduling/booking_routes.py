"""HTTP edge of booking (预约挂号): the network's directory, department profiles, the
institution's booking policy, and the desk's attendance mark."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes
from server.core.roles import DESK_ROLES, Role
from server.scheduling import schemas

routes = Routes(tag="booking")


@routes.op(
    "GET",
    "/api/v1/booking/specialties",
    summary="The specialty codes of departments, with their Chinese and English names",
    response=schemas.SpecialtyList,
)
async def list_specialties(call: Call[None, None]) -> schemas.SpecialtyList:
    return services(call).scheduling.booking.specialties()


@routes.op(
    "GET",
    "/api/v1/booking/directory",
    summary="Institutions of the network → departments (specialty, place) → doctors (title) "
    "→ their next free slots; paged by institution, no clinical data",
    query=schemas.DirectoryQuery,
    response=schemas.DirectoryOut,
    errors=(422,),
)
async def booking_directory(call: Call[None, schemas.DirectoryQuery]) -> schemas.DirectoryOut:
    return await services(call).scheduling.booking.directory_view(call.query)


@routes.op(
    "PUT",
    r"/api/v1/booking/departments/{department_id:\d+}",
    summary="Set a department's profile: specialty, place, description, note, cut-off "
    "(its institution's administrator)",
    body=schemas.DepartmentProfileIn,
    response=schemas.DepartmentProfileOut,
    roles={Role.INSTITUTION_ADMIN},
    errors=(403, 404, 422),
)
async def set_department_profile(
    call: Call[schemas.DepartmentProfileIn, None],
) -> schemas.DepartmentProfileOut:
    return await services(call).scheduling.booking.set_department(
        call.user, call.path_int("department_id"), call.body
    )


@routes.op(
    "GET",
    "/api/v1/booking/policy",
    summary="My institution's booking policy: cancellation cut-off and no-show limit",
    response=schemas.PolicyOut,
    roles={Role.INSTITUTION_ADMIN},
    errors=(403,),
)
async def get_booking_policy(call: Call[None, None]) -> schemas.PolicyOut:
    return await services(call).scheduling.booking.get_policy(call.user)


@routes.op(
    "PUT",
    "/api/v1/booking/policy",
    summary="Set my institution's booking policy",
    body=schemas.PolicyIn,
    response=schemas.PolicyOut,
    roles={Role.INSTITUTION_ADMIN},
    errors=(403, 422),
)
async def set_booking_policy(call: Call[schemas.PolicyIn, None]) -> schemas.PolicyOut:
    return await services(call).scheduling.booking.set_policy(call.user, call.body)


@routes.op(
    "PUT",
    r"/api/v1/appointments/{appointment_id:\d+}/attendance",
    summary="Mark on the day whether the patient came (the institution's desk or clinicians)",
    body=schemas.Attendance,
    response=schemas.AppointmentOut,
    roles=DESK_ROLES,
    errors=(403, 404, 409),
)
async def mark_attendance(call: Call[schemas.Attendance, None]) -> schemas.AppointmentOut:
    return await services(call).scheduling.mark_attendance(
        call.user, call.path_int("appointment_id"), call.body.attended
    )
