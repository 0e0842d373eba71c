"""Query budgets of the hot paths: exactly how many statements and transactions each costs.

Zulip's discipline: a budget is the measured figure, asserted with ``==``. A
change that makes a path cost more fails here, and so does one that makes it
cheaper, so the number in this file is always what the path costs. The failure
message lists every transaction (where it was opened, file:line) and its
statements; if the change is intended, update the number it names.
Each path is measured warm (once through first), as it runs all day.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

import pytest

from server.config import Settings
from server.container import Services
from tests.budget import AUDIT_HEAD, Counts, count_queries
from tests.consults.conftest import consult_case, scheduled_consult
from tests.helpers import Api, amlodipine

__all__ = ["consult_case"]  # the fixture, shared with the consult tests


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No background job ticks while a path is measured (the node heartbeat is one: its
    tick, every few seconds, would otherwise land in a measurement now and then)."""
    return settings.with_overrides(
        node_heartbeat_seconds=3600,
        node_dead_after_seconds=7200,
        checkpoint_interval_seconds=0,
        referral_expiry_interval_seconds=0,
        consult_escalation_interval_seconds=0,
        prescription_sweep_seconds=0,
        session_check_seconds=3600,
        # Nor a look of the heads beacon (one range read of stream_events a second).
        socket_heads_seconds=3600,
        # Nor a session cache refresh (one read, in the background, past half the TTL).
        session_cache_seconds=60,
    )


class Budget(NamedTuple):
    statements: int
    transactions: int  # every BEGIN, reads included
    writes: int  # transactions that committed an INSERT, UPDATE or DELETE


# The same on SQLite and PostgreSQL: the paths send the same statements on both (the
# backends differ in how a transaction begins, which is counted as its start, not as
# a statement). A path that comes to differ gets an entry in BY_BACKEND.
BUDGETS: dict[str, Budget] = {
    # The session check is answered from the node's session cache (warm: no statement;
    # issue 16 took one read out of every authenticated path). Then one write: the people
    # (prescriber, patient, account, institution, pharmacy) in one statement, the access
    # decision (its entry queued on the write; consent, care and window in one statement),
    # the record read once, the checks, signing (the key read once per process), the step's
    # history, every stream head in one upsert and every stream event in one INSERT, and the
    # audit chain (locked once, last). Was 22 in 5, then 19 in 2.
    "prescription.create": Budget(13, 1, 1),
    # One transaction: the checks' reads (the consult, membership, a re-send, the sender's
    # consent), then the message inserted only while the consult is open, numbered by its
    # event. Was 11 in 5.
    "consult.chat": Budget(6, 1, 1),
    # Connect (session check from the cache, rooms and their consent), consult.open (one
    # read: consult, consent, participants, head), consult.join (a read, the
    # reauthentication, the write that also reads who is present); the previous socket's
    # leave reads presence in its write. Was 25 in 15.
    "consult.join": Budget(19, 6, 2),
    # One read: the access decision (the patient, then consent, care and window in one
    # statement) with the reader's excluded categories, the summary in one statement and its
    # institutions; then the decision's audit entry (one short append). Was 14 in 6.
    "patient.summary": Budget(7, 2, 1),
    # One read: the decision, the count and the page; the audit entry. Was 10 in 5.
    "fhir.search": Budget(7, 2, 1),
}
BY_BACKEND: dict[tuple[str, str], Budget] = {}


def check(backend: str, path: str, counts: Counts) -> None:
    budget = BY_BACKEND.get((backend, path), BUDGETS[path])
    print(f"{backend} {path}: {counts}")
    assert counts.figures == budget, (
        f"{path} on {backend}: measured {counts}, the budget is {budget.statements} "
        f"statements in {budget.transactions} transactions ({budget.writes} committed "
        f"writes).\nIf the change is intended, set BUDGETS[{path!r}] in "
        f"tests/test_query_budgets.py to Budget{counts.figures}; if not, the listing "
        f"below shows where the difference comes from.\n{counts.listing()}"
    )


def check_audited_read(counts: Counts) -> None:
    """The audit head is locked once, in a transaction that appends the entry and does
    nothing else: never held while the record is read."""
    locking = [t for t in counts.each if t.locks_audit_head]
    assert len(locking) == 1 and locking[0].only_audit, counts.listing()


VISIT = {
    "resourceType": "Encounter",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    "period": {"start": "2026-03-01T09:00:00+08:00", "end": "2026-03-01T09:30:00+08:00"},
}
HYPERTENSION = {
    "resourceType": "Condition",
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "code": {
        "coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": "原发性高血压"}
        ]
    },
    "onsetDateTime": "2026-03-01",
}


def rx(case: dict[str, Any]) -> dict[str, Any]:
    return {
        "patient_id": case["patient"],
        "diagnosis": {"code": "I10", "display": "原发性高血压"},
        "items": [amlodipine()],
        "notes": "复诊续方",
    }


async def diagnosed_in_person(services: Services, case: dict[str, Any]) -> None:
    """Hypertension (I10) diagnosed at an outpatient visit: what an online renewal follows."""
    where = {"patient_id": case["patient"], "institution_id": case["inst_SNBDH"]}
    async with services.db.transaction() as tx:
        visit = await services.records.add_resource(tx, **where, resource=VISIT)
        await services.records.add_resource(
            tx,
            **where,
            resource=HYPERTENSION | {"encounter": {"reference": f"Encounter/{visit['id']}"}},
        )


async def test_prescription_create(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    await diagnosed_in_person(network, consult_case)
    status, body = await api.post("/api/v1/prescriptions", as_="gp_zhang", json=rx(consult_case))
    assert status == 201, body
    with count_queries(network.db) as counts:
        status, body = await api.post(
            "/api/v1/prescriptions", as_="gp_zhang", json=rx(consult_case)
        )
    assert status == 201, body
    check(backend, "prescription.create", counts)
    # The audit chain is the write's last work: the head is locked once, after every
    # other statement of the write, and so only until the commit.
    write = counts.each[-1]
    assert [t for t in counts.each if t.locks_audit_head] == [write], counts.listing()
    audit_tail = [s.upper().startswith(AUDIT_HEAD) for s in write.sql]
    assert audit_tail == sorted(audit_tail), counts.listing()


async def test_consult_chat_send(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    consult = await scheduled_consult(api, consult_case)
    host = await api.socket("dr_li")
    ack = await host.call("consult.join", {"consult_id": consult["id"]})
    assert ack["ok"], ack

    async def say(text: str) -> dict[str, Any]:
        payload = {"consult_id": consult["id"], "client_id": str(uuid.uuid4()), "text": text}
        return await host.call("consult.chat", payload)

    assert (await say("您好"))["ok"]
    with count_queries(network.db) as counts:
        ack = await say("请上传最近的心电图")
    assert ack["ok"], ack
    check(backend, "consult.chat", counts)


async def test_consult_join(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    """What the web client does to enter a session: connect, ``consult.open``, ``consult.join``."""
    consult = await scheduled_consult(api, consult_case)
    token = await api.token("dr_li")
    first = await api.socket("dr_li")
    assert (await first.call("consult.join", {"consult_id": consult["id"]}))["ok"]
    await first.close()
    with count_queries(network.db) as counts:
        sock = await api.socket("dr_li")
        opened = await sock.call("consult.open", {"consult_id": consult["id"]})
        joined = await sock.call("consult.join", {"consult_id": consult["id"]})
    assert token and opened["ok"] and joined["ok"], (opened, joined)
    check(backend, "consult.join", counts)


async def test_clinical_summary(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    path = f"/api/v1/patients/{consult_case['patient']}/summary"
    assert (await api.get(path, as_="gp_zhang"))[0] == 200
    with count_queries(network.db) as counts:
        status, body = await api.get(path, as_="gp_zhang")
    assert status == 200, body
    check(backend, "patient.summary", counts)
    check_audited_read(counts)


async def test_fhir_search(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    params = {"patient": str(consult_case["patient"])}
    assert (await api.get("/fhir/Observation", as_="gp_zhang", params=params))[0] == 200
    with count_queries(network.db) as counts:
        status, body = await api.get("/fhir/Observation", as_="gp_zhang", params=params)
    assert status == 200, body
    assert body["total"] >= 1
    check(backend, "fhir.search", counts)
    check_audited_read(counts)
