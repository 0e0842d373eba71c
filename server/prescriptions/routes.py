"""HTTP edge of prescriptions: prescribing, routing, the pharmacies, the pharmacy work queue,
review, ready for pickup, dispensing."""

from __future__ import annotations

from typing import Any

from server.core.api import Call, Routes
from server.core.errors import ValidationFailed
from server.core.history import HistoryList
from server.core.idempotency import key_of
from server.core.roles import PRESCRIBER_ROLES, Role
from server.prescriptions import schemas
from server.prescriptions.service import PrescriptionService

routes = Routes(tag="prescriptions")
PRESCRIBERS = PRESCRIBER_ROLES
ONE = r"/api/v1/prescriptions/{prescription_id:\d+}"
RULE_ERRORS = (403, 404, 422)


def _rx(call: Call[Any, Any]) -> PrescriptionService:
    return call.services.prescriptions


@routes.op(
    "POST",
    "/api/v1/prescriptions/check",
    summary="Check a prescription against the rules and the patient's record, before signing",
    body=schemas.PrescriptionCreate,
    response=schemas.CheckResult,
    roles=PRESCRIBERS,
    errors=RULE_ERRORS,
)
async def check_prescription(call: Call[schemas.PrescriptionCreate, None]) -> schemas.CheckResult:
    return await _rx(call).prescribing.check(call.user, call.body)


@routes.op(
    "POST",
    "/api/v1/prescriptions",
    summary="Write and sign a prescription (send Idempotency-Key to retry safely)",
    body=schemas.PrescriptionCreate,
    response=schemas.PrescriptionOut,
    status=201,
    roles=PRESCRIBERS,
    errors=RULE_ERRORS,
    # The key is kept on the prescription row, in the prescribing transaction.
    idempotency="own",
)
async def create_prescription(
    call: Call[schemas.PrescriptionCreate, None],
) -> schemas.PrescriptionOut:
    return await _rx(call).prescribing.create(call.user, call.body, key_of(call.request))


@routes.op(
    "GET",
    "/api/v1/prescriptions",
    summary="My prescriptions (patient: mine; doctor: written by me) and where each stands",
    query=schemas.MineQuery,
    response=schemas.PrescriptionList,
    errors=(403,),
)
async def list_my_prescriptions(call: Call[None, schemas.MineQuery]) -> schemas.PrescriptionList:
    return await _rx(call).views.mine(call.user, call.query)


@routes.op("GET", ONE, summary="One prescription", response=schemas.PrescriptionOut, errors=(404,))
async def get_prescription(call: Call[None, None]) -> schemas.PrescriptionOut:
    return await _rx(call).views.get(call.user, call.path_int("prescription_id"))


@routes.op(
    "GET",
    ONE + "/history",
    summary="The full status history",
    response=HistoryList,
    errors=(404,),
)
async def get_prescription_history(call: Call[None, None]) -> HistoryList:
    return await _rx(call).views.history(call.user, call.path_int("prescription_id"))


@routes.op(
    "GET",
    ONE + "/verify",
    summary="Verify the doctor's signature over the prescription as stored",
    response=schemas.VerifyResult,
    errors=(404,),
)
async def verify_prescription(call: Call[None, None]) -> schemas.VerifyResult:
    return await _rx(call).views.verify(call.user, call.path_int("prescription_id"))


@routes.op(
    "POST",
    ONE + "/route",
    summary="Send to the pharmacy the patient chose",
    body=schemas.RouteRequest,
    response=schemas.PrescriptionOut,
    roles=PRESCRIBERS | {Role.PATIENT},
    errors=(404, 409, 422),
)
async def route_prescription(call: Call[schemas.RouteRequest, None]) -> schemas.PrescriptionOut:
    return await _rx(call).delivery.route(call.user, call.path_int("prescription_id"), call.body)


@routes.op(
    "POST",
    ONE + "/revise",
    summary="Change and re-sign (after a rejection, or before review)",
    body=schemas.PrescriptionBody,
    response=schemas.PrescriptionOut,
    roles=PRESCRIBERS,
    errors=(404, 409, 422),
)
async def revise_prescription(
    call: Call[schemas.PrescriptionBody, None],
) -> schemas.PrescriptionOut:
    return await _rx(call).prescribing.revise(
        call.user, call.path_int("prescription_id"), call.body
    )


@routes.op(
    "POST",
    ONE + "/cancel",
    summary="Cancel before dispensing (the prescribing doctor)",
    body=schemas.PrescriptionCancel,
    response=schemas.PrescriptionOut,
    errors=(403, 404, 409),
)
async def cancel_prescription(
    call: Call[schemas.PrescriptionCancel, None],
) -> schemas.PrescriptionOut:
    return await _rx(call).prescribing.cancel(
        call.user, call.path_int("prescription_id"), call.body.reason
    )


@routes.op(
    "POST",
    ONE + "/receipt",
    summary="The pharmacy acknowledges receipt of a version (repeating it is harmless)",
    body=schemas.AckRequest,
    response=schemas.Receipt,
    errors=(403, 404, 422),
)
async def acknowledge_prescription(call: Call[schemas.AckRequest, None]) -> schemas.Receipt:
    prescription_id = call.path_int("prescription_id")
    if call.body.prescription_id != prescription_id:
        raise ValidationFailed.field("prescription_id", "does not match the path")
    return await _rx(call).delivery.acknowledge(call.user, prescription_id, call.body.version)


@routes.op(
    "POST",
    ONE + "/review",
    summary="Pharmacist review (审方): start, approve, or reject with a reason",
    body=schemas.ReviewRequest,
    response=schemas.PrescriptionOut,
    errors=(403, 404, 409),
)
async def review_prescription(call: Call[schemas.ReviewRequest, None]) -> schemas.PrescriptionOut:
    return await _rx(call).review.review(call.user, call.path_int("prescription_id"), call.body)


@routes.op(
    "POST",
    ONE + "/ready",
    summary="Ready for pickup (备药完成): the chosen pharmacy's pharmacist, after approval",
    body=schemas.ReadyRequest,
    response=schemas.PrescriptionOut,
    errors=(403, 404, 409, 422),
)
async def ready_prescription(call: Call[schemas.ReadyRequest, None]) -> schemas.PrescriptionOut:
    return await _rx(call).review.ready(call.user, call.path_int("prescription_id"), call.body)


@routes.op(
    "GET",
    "/api/v1/pharmacies",
    summary="The network's pharmacies: address, district, hours, open now; nearest district first",
    query=schemas.PharmacyQuery,
    response=schemas.PharmacyList,
    errors=(422,),
)
async def list_pharmacies(call: Call[None, schemas.PharmacyQuery]) -> schemas.PharmacyList:
    return await _rx(call).pharmacies.listing(call.user, call.query)


@routes.op(
    "POST",
    ONE + "/dispense",
    summary="Record what was handed out; a prescription is dispensed once",
    body=schemas.DispenseRequest,
    response=schemas.PrescriptionOut,
    errors=(403, 404, 409, 422),
)
async def dispense_prescription(
    call: Call[schemas.DispenseRequest, None],
) -> schemas.PrescriptionOut:
    return await _rx(call).review.dispense(call.user, call.path_int("prescription_id"), call.body)


@routes.op(
    "GET",
    "/api/v1/pharmacy/prescriptions",
    summary="The pharmacy work queue: new, under review, approved, dispensed; search by patient",
    query=schemas.QueueQuery,
    response=schemas.PrescriptionList,
    errors=(403,),
)
async def pharmacy_queue(call: Call[None, schemas.QueueQuery]) -> schemas.PrescriptionList:
    return await _rx(call).views.queue(call.user, call.query)


@routes.op(
    "GET",
    "/api/v1/pharmacy/deliveries/pending",
    summary="Deliveries to my pharmacy not yet acknowledged, in order (stream envelopes)",
    response=schemas.PendingList,
    errors=(403,),
)
async def pending_deliveries(call: Call[None, None]) -> schemas.PendingList:
    return schemas.PendingList(items=await _rx(call).delivery.pending(call.user))
