"""Request and answer: consent first, snapshot and window, decline with reason, the state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from server.access.models import AccessWindow
from server.container import Services
from tests.consults.conftest import consult_request, new_consult, scheduled_consult
from tests.helpers import Api


async def test_no_consult_without_informed_consent(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    status, body = await api.post(
        "/api/v1/consults", as_="gp_zhang", json=consult_request(consult_case, consent=None)
    )
    assert status == 422
    assert body["code"] == "consent_required"
    assert "consent" in body["detail"] and body["errors"][0]["field"] == "consent"
    relative = consult_request(consult_case)["consent"] | {"name": None}
    status, body = await api.post(
        "/api/v1/consults", as_="gp_zhang", json=consult_request(consult_case, consent=relative)
    )
    assert status == 422 and body["errors"][0]["field"] == "consent.name"
    status, body = await api.get("/api/v1/consults", as_="gp_zhang")
    assert body["items"] == []


async def test_request_freezes_snapshot_opens_window_and_notifies_invited_side(
    backend: str, api: Api, consult_case: dict[str, Any], services: Services
) -> None:
    dr_li = await api.socket("dr_li")
    consult = await new_consult(api, consult_case)
    assert consult["status"] == "requested"
    assert consult["consent"]["given_by"] == "guardian"
    event = await dr_li.wait_for(lambda e: e["type"] == "consult" and e["op"] == "requested")
    assert event["stream"] == f"desk:{consult_case['inst_QDSL']}"
    assert event["data"]["consult_id"] == consult["id"]

    async with services.db.read() as session:
        window = await session.scalar(
            select(AccessWindow).where(AccessWindow.source_id == consult["id"])
        )
    assert window is not None and window.institution_id == consult_case["inst_QDSL"]
    assert window.closed_at is None

    # dr_li is not a participant yet: the record panel is closed to him; gp_zhang sees it.
    status, body = await api.get(f"/api/v1/consults/{consult['id']}/record", as_="dr_li")
    assert status == 403 and body["code"] == "not_a_participant"
    status, panel = await api.get(f"/api/v1/consults/{consult['id']}/record", as_="gp_zhang")
    assert status == 200, panel
    snapshot = panel["snapshot"]
    assert [i["id"] for i in snapshot["items"]] == [str(consult_case["observation"])]
    assert "高血压" in [p["display"] for p in snapshot["summary"]["active_problems"]]


async def test_unknown_record_item_and_wrong_institution_are_refused(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    bad = consult_request(
        consult_case, record_items=[{"resource_type": "Observation", "id": "99999"}]
    )
    status, body = await api.post("/api/v1/consults", as_="gp_zhang", json=bad)
    assert status == 422 and body["errors"][0]["field"] == "record_items.0"
    own = consult_request(consult_case, invited_institution_id=consult_case["inst_SNBDH"])
    status, body = await api.post("/api/v1/consults", as_="gp_zhang", json=own)
    assert status == 422 and body["errors"][0]["field"] == "invited_institution_id"
    # gp_liu's clinic has no reason to read patient_wang's record.
    status, body = await api.post(
        "/api/v1/consults", as_="gp_liu", json=consult_request(consult_case)
    )
    assert status == 403 and body["code"] == "record_access_denied"


async def test_decline_needs_a_reason_and_ends_the_consult(
    backend: str, api: Api, consult_case: dict[str, Any], services: Services
) -> None:
    gp = await api.socket("gp_zhang")
    consult = await new_consult(api, consult_case)
    url = f"/api/v1/consults/{consult['id']}"
    status, body = await api.post(url + "/decline", as_="dr_li", json={"reason": ""})
    assert status == 422 and body["errors"][0]["field"] == "reason"
    status, body = await api.post(url + "/decline", as_="dr_zhao", json={"reason": "忙"})
    assert status == 403  # QDFY was not invited
    status, body = await api.post(url + "/decline", as_="dr_li", json={"reason": "本周出诊已满"})
    assert status == 200 and body["status"] == "declined"
    assert body["decline_reason"] == "本周出诊已满"
    # The requester hears it on its own stream (and, sitting in the room, on consult:<id>).
    event = await gp.wait_for(lambda e: e["op"] == "declined" and e["stream"].startswith("user:"))
    assert event["stream"] == f"user:{consult_case['gp_zhang']}"
    assert event["data"]["reason"] == "本周出诊已满"

    status, body = await api.post(url + "/accept", as_="dr_li", json={})
    assert status == 409 and body["code"] == "invalid_transition"
    async with services.db.read() as session:
        window = await session.scalar(
            select(AccessWindow).where(AccessWindow.source_id == consult["id"])
        )
    assert window is not None and window.closed_at is not None
    status, history = await api.get(url + "/history", as_="gp_zhang")
    assert [(h["from_status"], h["to_status"]) for h in history["items"]] == [
        (None, "requested"),
        ("requested", "declined"),
    ]


async def test_accept_propose_confirm_and_named_specialist(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    gp = await api.socket("gp_zhang")
    consult = await scheduled_consult(api, consult_case)
    assert consult["status"] == "scheduled" and consult["host_id"] == consult_case["dr_li"]
    await gp.wait_for(lambda e: e["op"] == "scheduled" and e["stream"].startswith("user:"))

    named = await new_consult(api, consult_case, invited_specialist_id=consult_case["dr_wang"])
    url = f"/api/v1/consults/{named['id']}"
    status, body = await api.post(url + "/accept", as_="dr_li", json={})
    assert status == 403 and body["code"] == "named_specialist"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    status, body = await api.post(url + "/propose", as_="dr_wang", json={"proposed_at": later})
    assert status == 200 and body["status"] == "accepted" and body["proposed_at"]
    status, body = await api.post(url + "/confirm", as_="dr_wang")
    assert status == 403
    status, body = await api.post(url + "/confirm", as_="gp_zhang")
    assert status == 200 and body["status"] == "scheduled"
    assert body["scheduled_at"] == body["proposed_at"]
    status, body = await api.post(url + "/cancel", as_="gp_zhang", json={"reason": "患者已好转"})
    assert status == 200 and body["status"] == "cancelled"


async def test_unanswered_requests_escalate_once_to_the_invited_admins(
    backend: str, api: Api, consult_case: dict[str, Any], services: Services
) -> None:
    admin = await api.socket("admin_qdsl")
    consult = await new_consult(api, consult_case)
    assert await services.consults.escalation.escalate_overdue() == []  # not overdue yet
    later = datetime.now(UTC) + timedelta(
        seconds=services.settings.consult_answer_timeout_seconds + 1
    )
    assert await services.consults.escalation.escalate_overdue(later) == [consult["id"]]
    assert await services.consults.escalation.escalate_overdue(later) == []  # once
    event = await admin.wait_for(
        lambda e: e["op"] == "escalated" and e["stream"] == f"user:{consult_case['admin_qdsl']}"
    )
    assert event["data"]["consult_id"] == consult["id"]
    status, body = await api.get(f"/api/v1/consults/{consult['id']}", as_="gp_zhang")
    assert status == 200
    assert body["escalated_at"] is not None


async def test_ice_servers_with_turn_credentials(
    backend: str, api: Api, consult_case: dict[str, Any]
) -> None:
    import base64
    import hashlib
    import hmac

    from server.config import load_settings
    from server.media.ice import ice_servers

    settings = load_settings(
        environ={},
        secret_key="x" * 40,
        ice_servers=["stun:stun.example.org:3478", "turn:turn.example.org:3478?transport=udp"],
        turn_secret="coturn-static-auth-secret",
        turn_credential_ttl_seconds=600,
    )
    answer = ice_servers(settings, 7, now=1_800_000_000)
    stun, turn = answer["ice_servers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    assert turn["username"] == "1800000600:7"
    expected = hmac.new(b"coturn-static-auth-secret", b"1800000600:7", hashlib.sha1).digest()
    assert turn["credential"] == base64.b64encode(expected).decode()

    consult = await new_consult(api, consult_case)
    status, body = await api.get(f"/api/v1/consults/{consult['id']}/ice-servers", as_="gp_zhang")
    assert status == 200 and body == {"ice_servers": [], "ttl": 3600}
    status, body = await api.get(f"/api/v1/consults/{consult['id']}/ice-servers", as_="gp_liu")
    assert status == 403
