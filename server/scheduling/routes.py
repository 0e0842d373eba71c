"""HTTP edge of scheduling: templates, slot generation, holidays, slots, appointments."""

from __future__ import annotations

from server.container import services
from server.core.api import Call, Routes
from server.core.roles import DESK_ROLES
from server.scheduling import schemas

routes = Routes(tag="scheduling")


@routes.op(
    "POST",
    "/api/v1/schedules/templates",
    summary="Publish a weekly schedule template for a department (or one of its doctors)",
    body=schemas.TemplateCreate,
    response=schemas.TemplateOut,
    status=201,
    roles=DESK_ROLES,
    errors=(403, 422),
)
async def create_template(call: Call[schemas.TemplateCreate, None]) -> schemas.TemplateOut:
    return await services(call).scheduling.create_template(call.user, call.body)


@routes.op(
    "GET",
    "/api/v1/schedules/templates",
    summary="My institution's weekly schedule templates (of one department, when named)",
    query=schemas.TemplateQuery,
    response=schemas.TemplateList,
    roles=DESK_ROLES,
    errors=(403,),
)
async def list_templates(call: Call[None, schemas.TemplateQuery]) -> schemas.TemplateList:
    return schemas.TemplateList(
        items=await services(call).scheduling.list_templates(call.user, call.query)
    )


@routes.op(
    "POST",
    "/api/v1/schedules/generate",
    summary="Generate the department's slots from its templates for a date range (idempotent)",
    body=schemas.GenerateSlots,
    response=schemas.GenerateResult,
    roles=DESK_ROLES,
    errors=(403, 422),
)
async def generate_slots(call: Call[schemas.GenerateSlots, None]) -> schemas.GenerateResult:
    return await services(call).scheduling.generate_slots(call.user, call.body)


@routes.op(
    "POST",
    "/api/v1/schedules/holidays",
    summary="Close my institution on a day: no slots are generated, open slots are cancelled",
    body=schemas.HolidayCreate,
    response=schemas.HolidayOut,
    status=201,
    roles=DESK_ROLES,
    errors=(403, 409),
)
async def add_holiday(call: Call[schemas.HolidayCreate, None]) -> schemas.HolidayOut:
    return await services(call).scheduling.add_holiday(call.user, call.body)


@routes.op(
    "GET",
    "/api/v1/schedules/holidays",
    summary="My institution's closed days, in date order",
    query=schemas.HolidayQuery,
    response=schemas.HolidayList,
    roles=DESK_ROLES,
    errors=(403,),
)
async def list_holidays(call: Call[None, schemas.HolidayQuery]) -> schemas.HolidayList:
    return schemas.HolidayList(
        items=await services(call).scheduling.list_holidays(call.user, call.query)
    )


@routes.op(
    "GET",
    "/api/v1/slots",
    summary="Find slots (available=true: open, in the future, with a free place)",
    query=schemas.SlotQuery,
    response=schemas.SlotList,
)
async def list_slots(call: Call[None, schemas.SlotQuery]) -> schemas.SlotList:
    return schemas.SlotList(items=await services(call).scheduling.list_slots(call.query))


@routes.op(
    "GET",
    r"/api/v1/slots/{slot_id:\d+}",
    summary="One slot",
    response=schemas.SlotOut,
    errors=(404,),
)
async def get_slot(call: Call[None, None]) -> schemas.SlotOut:
    return await services(call).scheduling.get_slot(call.path_int("slot_id"))


@routes.op(
    "POST",
    r"/api/v1/slots/{slot_id:\d+}/cancel",
    summary="Cancel a slot (the hospital): its appointments are cancelled and their patients told",
    body=schemas.SlotCancel,
    response=schemas.SlotOut,
    roles=DESK_ROLES,
    errors=(403, 404, 409),
)
async def cancel_slot(call: Call[schemas.SlotCancel, None]) -> schemas.SlotOut:
    return await services(call).scheduling.cancel_slot(
        call.user, call.path_int("slot_id"), call.body.reason
    )


@routes.op(
    "POST",
    "/api/v1/appointments",
    summary="Book a place on a slot (预约挂号): a patient for themself, a desk for a patient",
    body=schemas.AppointmentCreate,
    response=schemas.AppointmentOut,
    status=201,
    errors=(403, 404, 409, 422),
)
async def book_appointment(call: Call[schemas.AppointmentCreate, None]) -> schemas.AppointmentOut:
    return await services(call).scheduling.book(call.user, call.body)


@routes.op(
    "GET",
    "/api/v1/appointments",
    summary="My appointments (patient) or my institution's (desk)",
    response=schemas.AppointmentList,
)
async def list_appointments(call: Call[None, None]) -> schemas.AppointmentList:
    return schemas.AppointmentList(
        items=await services(call).scheduling.list_appointments(call.user)
    )


@routes.op(
    "POST",
    r"/api/v1/appointments/{appointment_id:\d+}/cancel",
    summary="Cancel an appointment; its place is freed",
    body=schemas.AppointmentCancel,
    response=schemas.AppointmentOut,
    errors=(403, 404, 409),
)
async def cancel_appointment(call: Call[schemas.AppointmentCancel, None]) -> schemas.AppointmentOut:
    return await services(call).scheduling.cancel_appointment(
        call.user, call.path_int("appointment_id"), call.body.reason
    )
