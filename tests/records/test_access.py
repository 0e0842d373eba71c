"""Who may see a patient's record: the matrix, consent, consult windows, break the glass, audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from server.container import Services
from server.core.audit import AuditEvent
from server.core.db import utcnow
from server.identity.models import Institution
from server.seed import PATIENTS
from tests.helpers import Api
from tests.records.conftest import push

# The demo network registered patient_zhao only at his clinic in Laoshan (LSZH).
ZHAO = next(p for p in PATIENTS if p.username == "patient_zhao")
INSTITUTION_OF = {
    "gp_zhang": "SNBDH",
    "dr_li": "QDSL",
    "nurse_he": "QDSL",
    "pharmacist_chen": "HCYF",
    "admin_qdsl": "QDSL",
}


@pytest.fixture
async def zhao(api: Api, network: Services, bundle: dict[str, Any]) -> int:
    """patient_zhao's record, pushed by his community clinic in Laoshan (LSZH, gp_chen)."""
    patient = bundle["entry"][0]["resource"]
    patient["identifier"] = [patient["identifier"][0]]
    patient["identifier"][0]["value"] = ZHAO.resident_id
    patient["birthDate"] = ZHAO.birth.isoformat()
    patient["name"] = [{"text": ZHAO.name}]
    status, body = await push(api, "gp_chen", bundle)
    assert status == 200, body
    return int(body["entry"][0]["response"]["location"].split("/")[1])


async def institution_id(services: Services, code: str) -> int:
    async with services.db.read() as session:
        found = await session.scalar(select(Institution.id).where(Institution.code == code))
    assert found is not None
    return int(found)


async def set_consent(api: Api, pid: int, code: str, **body: Any) -> None:
    status, out = await api.call(
        "PUT", f"/api/v1/patients/{pid}/consents/{code}", as_="patient_zhao", json=body
    )
    assert status == 200, out


async def summary_status(api: Api, pid: int, as_: str, **headers: str) -> tuple[int, Any]:
    return await api.get(f"/api/v1/patients/{pid}/summary", as_=as_, headers=headers)


@pytest.mark.parametrize("own", [True, False], ids=["own", "other"])
@pytest.mark.parametrize("consent", [True, False], ids=["consent", "no-consent"])
@pytest.mark.parametrize("persona", list(INSTITUTION_OF))
async def test_access_matrix(
    api: Api, network: Services, zhao: int, persona: str, own: bool, consent: bool
) -> None:
    if own and persona != "pharmacist_chen":  # the patient was present at that desk
        await api.present(persona, "patient_zhao")
    if consent:
        await set_consent(api, zhao, INSTITUTION_OF[persona], granted=True)
    status, body = await summary_status(api, zhao, persona)
    fhir_status, _ = await api.get(f"/fhir/Patient/{zhao}/$everything", as_=persona)
    if persona in ("admin_qdsl", "pharmacist_chen"):
        # Administrators manage and pharmacists dispense (from the pharmacy's view of a
        # prescription): neither reads records, whatever the relationship or consent.
        expected, reason = 403, None
    elif own:
        expected, reason = 200, "care_relationship"
    elif consent:
        expected, reason = 200, "consent"
    else:
        expected, reason = 403, None
    assert (status, fhir_status) == (expected, expected), body
    if reason:
        assert body["access_reason"] == reason


async def test_the_patient_and_only_the_patient_among_patients(
    api: Api, network: Services, zhao: int
) -> None:
    status, body = await summary_status(api, zhao, "patient_zhao")
    assert (status, body["access_reason"]) == (200, "self")
    assert (await summary_status(api, zhao, "patient_liu"))[0] == 403
    assert (await summary_status(api, zhao, "admin"))[0] == 403
    # Guessing ids: a patient who does not exist looks like one who does.
    unknown = await summary_status(api, 9999, "dr_zhao")
    known = await summary_status(api, zhao, "dr_zhao")
    assert unknown[0] == known[0] == 403
    assert unknown[1]["code"] == known[1]["code"] == "record_access_denied"
    assert unknown[1]["detail"] == known[1]["detail"]
    assert (await api.get(f"/fhir/Patient/{zhao}", as_="dr_zhao"))[0] == 403
    found = await network.records.resources(zhao, "Condition")
    status, body = await api.get(f"/fhir/Condition/{found[0]['id']}", as_="dr_zhao")
    assert status == 403 and body["resourceType"] == "OperationOutcome"


async def test_revoking_consent_takes_effect_on_the_next_request(
    api: Api, network: Services, zhao: int
) -> None:
    await set_consent(api, zhao, "QDSL", granted=True)
    assert (await summary_status(api, zhao, "dr_li"))[0] == 200
    await set_consent(api, zhao, "QDSL", granted=False)
    assert (await summary_status(api, zhao, "dr_li"))[0] == 403
    # A revocation also ends the treating clinic's access.
    assert (await summary_status(api, zhao, "gp_chen"))[0] == 200
    await set_consent(api, zhao, "LSZH", granted=False)
    assert (await summary_status(api, zhao, "gp_chen"))[0] == 403
    status, body = await api.get(f"/api/v1/patients/{zhao}/consents", as_="patient_zhao")
    assert status == 200
    assert {(c["institution"]["code"], c["granted"]) for c in body["items"]} == {
        ("QDSL", False), ("LSZH", False)
    }  # fmt: skip
    # Only the patient decides.
    status, _ = await api.call(
        "PUT", f"/api/v1/patients/{zhao}/consents/QDSL", as_="dr_li", json={"granted": True}
    )
    assert status == 403


async def test_excluded_categories_are_hidden_from_the_institution(
    api: Api, network: Services, zhao: int
) -> None:
    await set_consent(api, zhao, "QDSL", granted=True, excluded_categories=["mental_health"])
    status, body = await summary_status(api, zhao, "dr_li")
    assert {p["code"] for p in body["active_problems"]} == {"I10", "J45.9"}
    status, found = await api.get("/fhir/Condition", as_="dr_li", params={"patient": str(zhao)})
    assert {e["resource"]["code"]["coding"][0]["code"] for e in found["entry"]} == {"I10", "J45.9"}
    depression = next(
        r for r in await network.records.resources(zhao, "Condition")
        if r["code"]["coding"][0]["code"] == "F32.9"
    )  # fmt: skip
    status, body = await api.get(f"/fhir/Condition/{depression['id']}", as_="dr_li")
    assert status == 403 and body["issue"][0]["code"] == "forbidden"
    # The patient sees everything.
    status, body = await summary_status(api, zhao, "patient_zhao")
    assert {p["code"] for p in body["active_problems"]} == {"I10", "F32.9", "J45.9"}
    status, _ = await api.call(
        "PUT", f"/api/v1/patients/{zhao}/consents/QDSL", as_="patient_zhao",
        json={"granted": True, "excluded_categories": ["astrology"]},
    )  # fmt: skip
    assert status == 422


async def test_a_consult_window_opens_and_closes_access(
    api: Api, network: Services, zhao: int
) -> None:
    qdfy = await institution_id(network, "QDFY")
    async with network.db.transaction() as tx:
        await network.access.open_window(
            tx, patient_id=zhao, institution_id=qdfy, source="consult", source_id=7
        )
    status, body = await summary_status(api, zhao, "dr_zhao")
    assert (status, body["access_reason"]) == (200, "consult")
    async with network.db.transaction() as tx:
        await network.access.close_window(tx, source="consult", source_id=7)
    assert (await summary_status(api, zhao, "dr_zhao"))[0] == 403
    async with network.db.transaction() as tx:  # a referral window that has already run out
        await network.access.open_window(
            tx, patient_id=zhao, institution_id=qdfy, source="referral", source_id=3,
            until=utcnow() - timedelta(minutes=1),
        )  # fmt: skip
    assert (await summary_status(api, zhao, "dr_zhao"))[0] == 403


async def test_break_the_glass_needs_a_reason_and_is_flagged(
    api: Api, network: Services, zhao: int
) -> None:
    status, body = await summary_status(api, zhao, "dr_sun", **{"X-Emergency-Reason": " "})
    assert status == 422, body
    status, body = await summary_status(
        api, zhao, "dr_sun", **{"X-Emergency-Reason": "急诊昏迷，需查过敏史"}
    )
    assert (status, body["access_reason"]) == (200, "emergency")
    status, _ = await summary_status(
        api, zhao, "pharmacist_zhou", **{"X-Emergency-Reason": "想看看"}
    )
    assert status == 403
    async with network.db.read() as session:
        flagged = list(
            await session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == "record.access", AuditEvent.reason == "emergency"
                )
            )
        )
    assert len(flagged) == 1
    assert flagged[0].details["review"] == "pending"
    assert flagged[0].details["statement"] == "急诊昏迷，需查过敏史"


async def test_the_patient_sees_who_accessed_their_record(
    api: Api, network: Services, zhao: int
) -> None:
    await set_consent(api, zhao, "QDSL", granted=True)
    await summary_status(api, zhao, "dr_li")
    await api.get("/fhir/Condition", as_="dr_li", params={"patient": str(zhao)})
    await summary_status(api, zhao, "dr_zhao")  # denied
    await summary_status(api, zhao, "dr_sun", **{"X-Emergency-Reason": "抢救"})
    status, log = await api.get(f"/api/v1/patients/{zhao}/access-log", as_="patient_zhao")
    assert status == 200, log
    seen = [
        (e["user_name"], e["institution"]["code"] if e["institution"] else None, e["action"],
         e["outcome"], e["reason"], e["emergency"])
        for e in log["items"]
    ]  # fmt: skip
    assert seen[:4] == [
        ("孙丽", "QDFY", "record.summary", "success", "emergency", True),
        ("赵强", "QDFY", "record.summary", "denied", "no_reason", False),
        ("李明", "QDSL", "fhir.search", "success", "consent", False),
        ("李明", "QDSL", "record.summary", "success", "consent", False),
    ]
    # Everything others did about him is there, down to the making of his account.
    assert ("record.write", "success", "push") in [e[2:5] for e in seen]
    assert seen[-1][2] == "patient.create"
    assert all(e["at"] and e["ip"] for e in log["items"][:4])
    assert (await api.get(f"/api/v1/patients/{zhao}/access-log", as_="patient_liu"))[0] == 403
    assert (await api.get(f"/api/v1/patients/{zhao}/access-log", as_="dr_li"))[0] == 403
    verified = await network.audit.verify()
    assert verified.ok, verified


async def test_the_patient_reads_one_line_per_session_labelled_by_what_was_done(
    api: Api, network: Services, zhao: int
) -> None:
    await set_consent(api, zhao, "QDSL", granted=True)
    assert (await summary_status(api, zhao, "patient_zhao"))[0] == 200  # his own: not listed
    # dr_li opens the record page: summary, timeline and a FHIR search, one session.
    assert (await summary_status(api, zhao, "dr_li"))[0] == 200
    assert (await api.get(f"/api/v1/patients/{zhao}/timeline", as_="dr_li"))[0] == 200
    await api.get("/fhir/Condition", as_="dr_li", params={"patient": str(zhao)})
    assert (await summary_status(api, zhao, "dr_zhao"))[0] == 403
    assert (await summary_status(api, zhao, "dr_zhao"))[0] == 403
    await summary_status(api, zhao, "dr_sun", **{"X-Emergency-Reason": "抢救"})

    path = f"/api/v1/patients/{zhao}/access-log"
    status, flat = await api.get(path, as_="patient_zhao")
    assert status == 200, flat
    status, log = await api.get(path, as_="patient_zhao", params={"grouped": "1"})
    assert status == 200, log
    seen = [
        (e["user_name"], e["institution"]["code"] if e["institution"] else None, e["kind"],
         e["count"], e["reason"])
        for e in log["items"]
    ]  # fmt: skip
    assert seen[:3] == [
        ("孙丽", "QDFY", "emergency", 1, "emergency"),
        ("赵强", "QDFY", "denied", 2, "no_reason"),
        ("李明", "QDSL", "read", 3, "consent"),
    ]
    li = log["items"][2]
    assert li["actions"] == ["fhir.search", "record.timeline", "record.summary"]
    assert li["first_at"] <= li["at"] and li["first_seq"] < li["seq"]
    # The clinic's push is an upload (上传), never a view; his own reads are not there.
    uploads = [e for e in log["items"] if e["kind"] == "write"]
    assert uploads and all(e["institution"]["code"] == "LSZH" for e in uploads[:2])
    assert uploads[0]["user_name"] == "陈静"
    assert uploads[0]["actions"] == ["record.write", "patient.register"]
    assert all(e["reason"] != "self" for e in flat["items"])
    assert sum(e["count"] for e in log["items"]) == len(flat["items"])
    assert [e["kind"] for e in flat["items"][:3]] == ["emergency", "denied", "denied"]

    # Paged by session: one a page, each page continuing where the last one stopped.
    status, first = await api.get(path, as_="patient_zhao", params={"grouped": "1", "limit": "2"})
    assert status == 200, first
    assert [e["kind"] for e in first["items"]] == ["emergency", "denied"]
    status, second = await api.get(
        path,
        as_="patient_zhao",
        params={"grouped": "1", "limit": "2", "before": str(first["next_before"])},
    )
    assert status == 200, second
    assert second["items"][0]["kind"] == "read" and second["items"][0]["count"] == 3
    assert (await api.get(path, as_="patient_zhao", params={"grouped": "yes please"}))[0] == 422
    assert (await api.get(path, as_="patient_liu", params={"grouped": "1"}))[0] == 403


def test_a_session_ends_after_thirty_minutes_and_at_another_reader() -> None:
    from datetime import UTC, datetime

    from server.records.access_log import sessions
    from server.records.schemas import AccessLogEntry

    start = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)

    def entry(seq: int, minutes: int, user: int) -> AccessLogEntry:
        at = start + timedelta(minutes=minutes)
        return AccessLogEntry(
            seq=seq, at=at, user_id=user, user_name=None, role="gp", institution=None,
            action="record.summary", outcome="success", reason="care_relationship",
            resources=None, ip=None, emergency=False, kind="read", first_at=at,
            first_seq=seq, actions=["record.summary"],
        )  # fmt: skip

    newest_first = [
        entry(5, 50, 1),
        entry(4, 25, 1),
        entry(3, 20, 1),
        entry(2, 10, 2),
        entry(1, 5, 1),
    ]
    got = [(s.seq, s.first_seq, s.count) for s in sessions(newest_first)]
    # 09:50 and 09:25 are 25 minutes apart (one session); 09:20 is 30 minutes from 09:50
    # (still one); another reader at 09:10 ends it; 09:05 is a new one.
    assert got == [(5, 3, 3), (2, 2, 1), (1, 1, 1)]
    assert [(s.seq, s.count) for s in sessions([entry(2, 40, 1), entry(1, 5, 1)])] == [
        (2, 1),
        (1, 1),
    ]
