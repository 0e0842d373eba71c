"""Idempotency keys: a write retried with the same ``Idempotency-Key`` is done once.

The story: a client's write died with its node (nginx answered 502) and the client sends
it again with the same key. patient_wang books a place, gp_zhang asks for a consult,
dr_li accepts one: each is done once however often it is sent, and the repeat hears the
first answer. Both tiers (the ``backend`` fixture).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from server.app import create_app
from server.config import Settings
from server.consults.models import Consult, ConsultTransition
from server.container import Services
from server.core.db import utcnow
from server.core.idempotency import IdempotencyKey
from server.scheduling.models import Appointment
from tests.consults.conftest import consult_case, consult_request, new_consult
from tests.helpers import Api
from tests.scheduling.support import network_ids, publish_slots

__all__ = ["consult_case"]  # the fixture, shared with the consult tests

KEY = "Idempotency-Key"


async def count(services: Services, model: Any, *where: Any) -> int:
    async with services.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def keys_of(services: Services, user_id: int) -> list[IdempotencyKey]:
    async with services.db.read() as session:
        return list(
            await session.scalars(select(IdempotencyKey).where(IdempotencyKey.user_id == user_id))
        )


async def send(
    api: Api, path: str, as_: str, key: str, body: Any = None
) -> tuple[int, Any, dict[str, str]]:
    """POST with an Idempotency-Key: the status, the body and the headers the client sees."""
    token = await api.token(as_)
    response = await api.client.post(
        path, json=body, headers={"Authorization": f"Bearer {token}", KEY: key}
    )
    text = await response.text()
    return response.status, (await response.json() if text else None), dict(response.headers)


async def test_a_retried_booking_is_booked_once_and_answered_the_same(
    backend: str, api: Api, network: Services
) -> None:
    net = await network_ids(network)
    [slot] = await publish_slots(api, net, capacity=3, count=1)
    booking = {"slot_id": slot["id"]}
    status, first, headers = await send(
        api, "/api/v1/appointments", "patient_wang", "book-1", booking
    )
    assert status == 201, first
    assert "Idempotent-Replayed" not in headers
    status, again, headers = await send(
        api, "/api/v1/appointments", "patient_wang", "book-1", booking
    )
    assert (status, again) == (201, first)
    assert headers["Idempotent-Replayed"] == "true"
    held = Appointment.slot_id == slot["id"]
    assert await count(network, Appointment, held) == 1

    # The same key for another place: refused, naming the header; nothing booked.
    [other] = await publish_slots(api, net, capacity=3, count=1)
    status, problem, _ = await send(
        api, "/api/v1/appointments", "patient_wang", "book-1", {"slot_id": other["id"]}
    )
    assert (status, problem["code"]) == (422, "idempotency_key_reused")
    assert problem["errors"][0]["field"] == KEY
    assert await count(network, Appointment, Appointment.slot_id == other["id"]) == 0

    # Another user's key of the same spelling is hers: she books her own place.
    status, hers, headers = await send(
        api, "/api/v1/appointments", "patient_liu", "book-1", booking
    )
    assert status == 201 and hers["id"] != first["id"], hers
    assert "Idempotent-Replayed" not in headers
    assert await count(network, Appointment, held) == 2


async def test_a_malformed_key_is_refused_naming_the_header(api: Api, network: Services) -> None:
    net = await network_ids(network)
    [slot] = await publish_slots(api, net, capacity=1, count=1)
    for bad in ("k" * 101, "键-1", "tab\there"):
        status, problem, _ = await send(
            api, "/api/v1/appointments", "patient_wang", bad, {"slot_id": slot["id"]}
        )
        assert (status, problem["code"]) == (422, "validation_failed"), problem
        assert problem["errors"] == [
            {"field": KEY, "reason": "1 to 100 printable ASCII characters"}
        ]
    assert await count(network, Appointment, Appointment.slot_id == slot["id"]) == 0


async def test_concurrent_requests_with_one_key_create_one_consult(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    services = network
    body = consult_request(consult_case)
    before = await count(services, Consult)
    results = await asyncio.gather(
        *(send(api, "/api/v1/consults", "gp_zhang", "consult-1", body) for _ in range(4))
    )
    created = [answer for status, answer, _ in results if status == 201]
    waiting = [answer for status, answer, _ in results if status == 409]
    print(f"\none key, four at once [{backend}]: {[status for status, _, _ in results]}")
    assert created and len(created) + len(waiting) == 4, results
    assert all(answer["id"] == created[0]["id"] for answer in created)
    assert all(answer["code"] == "idempotency_in_progress" for answer in waiting)
    assert all(headers.get("Retry-After") for status, _, headers in results if status == 409)
    assert await count(services, Consult) == before + 1
    # Once the first is answered, every retry hears its answer.
    status, again, headers = await send(api, "/api/v1/consults", "gp_zhang", "consult-1", body)
    assert (status, again["id"], headers["Idempotent-Replayed"]) == (201, created[0]["id"], "true")
    assert await count(services, Consult) == before + 1


async def accepting(api: Api, case: dict[str, Any]) -> tuple[str, dict[str, str], Any]:
    """A new consult request: dr_li's accept path, its body, and where its steps are."""
    consult = await new_consult(api, case)
    when = {"scheduled_at": (utcnow() + timedelta(hours=3)).isoformat()}
    steps = ConsultTransition.consult_id == consult["id"]
    return f"/api/v1/consults/{consult['id']}/accept", when, steps


async def test_a_retried_accept_is_replayed_not_refused_as_already_accepted(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    path, when, steps = await accepting(api, consult_case)
    status, accepted, _ = await send(api, path, "dr_li", "accept-1", when)
    assert status == 200 and accepted["status"] == "scheduled", accepted
    written = await count(network, ConsultTransition, steps)
    status, again, headers = await send(api, path, "dr_li", "accept-1", when)
    assert (status, again, headers["Idempotent-Replayed"]) == (200, accepted, "true")
    assert await count(network, ConsultTransition, steps) == written
    # Without the key the same request is a new one, refused as it should be.
    status, problem = await api.post(path, as_="dr_li", json=when)
    assert status == 409, problem


async def test_a_repeat_after_the_retry_window_hears_the_refusal_not_the_stored_answer(
    backend: str,
    api: Api,
    network: Services,
    consult_case: dict[str, Any],
    settings: Settings,
    aiohttp_client: Any,
) -> None:
    """The stored answer is what the accept said then, clinical text included; once the
    patient revoked the institution, a repeat past a client's retries hears what a fresh
    request hears (the accept refused), never that text."""
    short = Api(await aiohttp_client(create_app(settings.with_overrides(
        idempotency_replay_seconds=0.5))))  # fmt: skip
    try:
        path, when, _ = await accepting(api, consult_case)
        status, accepted, _ = await send(short, path, "dr_li", "accept-revoked", when)
        assert status == 200 and accepted["case_summary"], accepted
        status, out = await api.call(
            "PUT",
            f"/api/v1/patients/{consult_case['patient']}/consents/QDSL",
            as_="patient_sun",
            json={"granted": False},
        )
        assert status == 200, out
        await asyncio.sleep(0.6)
        status, again, headers = await send(short, path, "dr_li", "accept-revoked", when)
        assert status == 409, again
        assert "Idempotent-Replayed" not in headers
        assert "case_summary" not in again
    finally:
        await short.close()


async def test_a_refusal_is_not_remembered_and_a_lost_answer_is_not_redone(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    path, when, steps = await accepting(api, consult_case)
    dr_li = (await network_ids(network)).users["dr_li"]
    # Refused before it wrote anything (only the requester confirms): the key stays free
    # (the refusal's audit entry is not the operation's write), and the right request
    # sent with it next is done.
    confirm = path.replace("/accept", "/confirm")
    status, problem, _ = await send(api, confirm, "dr_li", "accept-2")
    assert status == 403, problem
    assert await keys_of(network, dr_li) == []
    status, accepted, _ = await send(api, path, "dr_li", "accept-2", when)
    assert status == 200, accepted
    [row] = await keys_of(network, dr_li)
    assert row.status == 200 and row.body is not None

    # The node died between the commit and the answer: the row has no answer. A retry is
    # told to wait (and, if that persists, to reload), and is never done a second time.
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(IdempotencyKey).where(IdempotencyKey.id == row.id).values(status=None)
        )
    written = await count(network, ConsultTransition, steps)
    status, problem, headers = await send(api, path, "dr_li", "accept-2", when)
    assert (status, problem["code"], headers["Retry-After"]) == (
        409,
        "idempotency_in_progress",
        "1",
    )
    assert await count(network, ConsultTransition, steps) == written


async def test_keys_expire_after_the_keep_period(
    api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    body = consult_request(consult_case)
    status, first, _ = await send(api, "/api/v1/consults", "gp_zhang", "consult-old", body)
    assert status == 201, first
    gp_zhang = (await network_ids(network)).users["gp_zhang"]
    assert len(await keys_of(network, gp_zhang)) == 1
    await network.idempotency.purge()
    assert len(await keys_of(network, gp_zhang)) == 1  # younger than 24 hours: kept
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25))
        )
    await network.idempotency.purge()
    assert await keys_of(network, gp_zhang) == []


async def test_the_openapi_document_offers_the_key_on_every_write(api: Api) -> None:
    status, document = await api.get("/api/openapi.json")
    assert status == 200
    without = set()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if method not in {"post", "put", "patch", "delete"} or not operation["security"]:
                continue
            names = {(p["in"], p["name"]) for p in operation["parameters"]}
            if ("header", KEY) not in names:
                without.add(operation["operationId"])
            else:
                assert {"409", "422"} <= set(operation["responses"]), path
    # Their answers are secrets that are not kept for a retry (a retry makes a new one).
    assert without == {"setup_totp", "issue_presence_code"}
