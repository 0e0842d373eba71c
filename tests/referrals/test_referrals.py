"""Two-way referrals: the up and down flows, who hears what, bad input, supersession, expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from server.access.models import AccessWindow
from server.container import Services
from server.core.auth import Requester
from server.core.db import utcnow
from server.referrals.models import Referral
from server.referrals.schemas import ReferralCreate
from tests.helpers import Api, SocketClient
from tests.scheduling.support import (
    Network,
    inbox_events,
    network_ids,
    publish_slots,
    register_patient,
)


def up_referral(net: Network, **changes: Any) -> dict[str, Any]:
    return {
        "direction": "up",
        "patient_id": net.patients["patient_sun"],
        "purpose": "胸痛评估",
        "to_institution_id": net.institutions["QDSL"],
        "to_department_id": net.departments[("QDSL", "心内科")],
        "reason": "劳力性胸痛两周，社区心电图 ST 段压低",
        "working_diagnosis": "不稳定型心绞痛?",
        "urgency": "urgent",
        "summary": "高血压十年，规律服药。",
        "attachments": [],
    } | changes


async def record_items(services: Services, patient_id: int) -> list[str]:
    """References to entries of the patient's shared record (seeded by the demo record)."""
    refs = []
    for rtype in ("Condition", "Observation"):
        refs += [f"{rtype}/{r['id']}" for r in await services.records.resources(patient_id, rtype)][
            :2
        ]
    assert refs
    return refs


async def _windows(services: Services, referral_id: int) -> list[AccessWindow]:
    async with services.db.read() as session:
        return list(
            await session.scalars(
                select(AccessWindow).where(
                    AccessWindow.source == "referral", AccessWindow.source_id == referral_id
                )
            )
        )


async def _referral_count(services: Services) -> int:
    async with services.db.read() as session:
        return int(await session.scalar(select(func.count(Referral.id))) or 0)


def statuses(sock: SocketClient, referral_id: int) -> list[str]:
    return [
        e["data"]["data"]["status"]
        for e in inbox_events(sock)
        if e["data"]["data"].get("referral_id") == referral_id
    ]


async def test_up_then_down_flow_notifies_the_right_people_only(
    api: Api, network: Services
) -> None:
    net = await network_ids(network)
    await register_patient(api, "gp_zhang", "patient_sun")
    [slot] = await publish_slots(api, net, capacity=2, count=1)
    socks = {name: await api.socket(name) for name in
             ("gp_zhang", "patient_sun", "dr_li", "nurse_he", "dr_zhao", "gp_liu", "patient_liu")}  # fmt: skip

    # Up: the community doctor refers; the tertiary department's desk receives it.
    attachments = await record_items(network, net.patients["patient_sun"])
    status, referral = await api.post(
        "/api/v1/referrals", as_="gp_zhang", json=up_referral(net, attachments=attachments)
    )
    assert status == 201, referral
    rid = referral["id"]
    assert (referral["status"], referral["attachments"]) == ("requested", attachments)
    assert referral["from_institution_id"] == net.institutions["SNBDH"]
    assert [h["to_status"] for h in referral["history"]] == ["requested"]
    for name in ("dr_li", "nurse_he", "patient_sun"):
        await socks[name].wait_for(lambda e: e["type"] == "inbox")
    desk_event = inbox_events(socks["dr_li"], "referral.requested")[0]
    assert desk_event["stream"] == f"desk:{net.institutions['QDSL']}"
    [window] = await _windows(network, rid)
    assert (window.institution_id, window.closed_at) == (net.institutions["QDSL"], None)
    dr_li = Requester(
        net.users["dr_li"], "specialist", "s", institution_id=net.institutions["QDSL"]
    )
    assert (
        await network.access.check_patient_access(dr_li, referral["patient_id"], action="read")
        == "referral"
    )

    # The desk accepts it, booking a slot: referrer and patient hear it at once.
    status, accepted = await api.post(
        f"/api/v1/referrals/{rid}/accept", as_="nurse_he", json={"slot_id": slot["id"]}
    )
    assert status == 200, accepted
    assert accepted["status"] == "scheduled"
    assert [h["to_status"] for h in accepted["history"]] == ["requested", "accepted", "scheduled"]
    assert accepted["appointment_id"] is not None
    for name in ("gp_zhang", "patient_sun"):
        await socks[name].wait_for(
            lambda e: e["type"] == "inbox" and e["data"]["data"]["status"] == "scheduled"
        )
    status, got = await api.get(f"/api/v1/slots/{slot['id']}", as_="nurse_he")
    assert got["booked"] == 1

    status, arrived = await api.post(f"/api/v1/referrals/{rid}/arrive", as_="dr_li", json={})
    assert arrived["status"] == "arrived"
    status, done = await api.post(
        f"/api/v1/referrals/{rid}/complete", as_="dr_li", json={"note": "PCI 术后"}
    )
    assert (status, done["status"]) == (200, "completed")
    [window] = await _windows(network, rid)
    assert window.closed_at is not None

    assert statuses(socks["gp_zhang"], rid) == ["accepted", "scheduled", "arrived", "completed"]
    assert statuses(socks["patient_sun"], rid) == [
        "requested",
        "accepted",
        "scheduled",
        "arrived",
        "completed",
    ]
    assert statuses(socks["dr_li"], rid) == ["requested"]

    # Down: the tertiary doctor sends him back to his community doctor with a follow-up plan.
    down = {
        "direction": "down",
        "patient_id": net.patients["patient_sun"],
        "purpose": "PCI 术后康复随访",
        "to_institution_id": net.institutions["SNBDH"],
        "to_user_id": net.users["gp_zhang"],
        "reason": "PCI 术后病情稳定，转回社区康复",
        "working_diagnosis": "冠心病 PCI 术后",
        "discharge_summary": "前降支植入支架一枚，术后无并发症。",
        "follow_up": [
            {"title": "双抗血小板治疗依从性随访", "due_date": "2026-12-25"},
            {"title": "复查血脂、肝功能", "due_date": "2027-01-25", "detail": "LDL-C < 1.8"},
        ],
    }
    status, down_ref = await api.post("/api/v1/referrals", as_="dr_li", json=down)
    assert status == 201, down_ref
    did = down_ref["id"]
    event = await socks["gp_zhang"].wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["data"].get("referral_id") == did
    )
    assert event["stream"] == f"user:{net.users['gp_zhang']}"
    assert [t["title"] for t in event["data"]["data"]["follow_up"]] == [
        "双抗血小板治疗依从性随访", "复查血脂、肝功能"]  # fmt: skip
    status, box = await api.get("/api/v1/inbox?unread=true", as_="gp_zhang")
    item = next(i for i in box["items"] if i["resource"] == f"Referral/{did}")
    assert item["kind"] == "referral.requested"
    assert item["data"]["follow_up"][1]["detail"] == "LDL-C < 1.8"

    status, acked = await api.post(f"/api/v1/referrals/{did}/accept", as_="gp_zhang", json={})
    assert (status, acked["status"]) == (200, "accepted")
    for name in ("dr_li", "patient_sun"):
        await socks[name].wait_for(
            lambda e: (
                e["type"] == "inbox"
                and e["data"]["data"].get("referral_id") == did
                and e["data"]["data"]["status"] == "accepted"
            )
        )
    assert statuses(socks["dr_li"], did) == ["accepted"]
    assert statuses(socks["patient_sun"], did) == ["requested", "accepted"]

    # Nobody else heard anything.
    for name in ("dr_zhao", "gp_liu", "patient_liu"):
        await socks[name].sync()
        assert inbox_events(socks[name]) == [], name
    status, _ = await api.get(f"/api/v1/referrals/{rid}", as_="dr_zhao")
    assert status == 404
    status, mine = await api.get("/api/v1/referrals", as_="patient_sun")
    assert {r["id"] for r in mine["items"]} == {rid, did}
    status, sent = await api.get("/api/v1/referrals?box=sent", as_="gp_zhang")
    assert [r["id"] for r in sent["items"]] == [rid]


async def test_bad_referrals_are_refused_and_write_nothing(api: Api, network: Services) -> None:
    net = await network_ids(network)
    # patient_zhao is cared for at LSZH, not at gp_zhang's SNBDH.
    status, problem = await api.post(
        "/api/v1/referrals",
        as_="gp_zhang",
        json=up_referral(net, patient_id=net.patients["patient_zhao"]),
    )
    assert (status, problem["code"]) == (403, "no_care_relationship")
    await register_patient(api, "gp_zhang", "patient_sun")
    cases = [
        (up_referral(net, to_institution_id=net.institutions["SBLYL"], to_department_id=None,
                     direction="down", discharge_summary="x"), "institution_cannot_send"),
        (up_referral(net, to_institution_id=net.institutions["HCYF"]), "institution_cannot_receive"),
        (up_referral(net, to_institution_id=net.institutions["SBLYL"]), "institution_cannot_receive"),
        (up_referral(net, to_department_id=net.departments[("QDFY", "骨科")]), "validation_failed"),
        (up_referral(net, to_department_id=None), "validation_failed"),
        (up_referral(net, attachments=["drop table"]), "validation_failed"),
        (up_referral(net, attachments=["Observation/999999"]), "unknown_record_item"),
        (up_referral(net, urgency="whenever"), "validation_failed"),
    ]  # fmt: skip
    for body, code in cases:
        status, problem = await api.post("/api/v1/referrals", as_="gp_zhang", json=body)
        assert (status, problem["code"]) == (422, code), (body, problem)
    status, problem = await api.post("/api/v1/referrals", as_="nurse_he", json=up_referral(net))
    assert status == 403
    status, problem = await api.post("/api/v1/referrals", as_="patient_sun", json=up_referral(net))
    assert status == 403
    assert await _referral_count(network) == 0

    # Out-of-order steps are 409 and change nothing.
    status, referral = await api.post("/api/v1/referrals", as_="gp_zhang", json=up_referral(net))
    rid = referral["id"]
    for step, as_, body in [("complete", "dr_li", {}), ("arrive", "dr_li", {}),
                            ("schedule", "nurse_he", {"slot_id": 1})]:  # fmt: skip
        status, problem = await api.post(f"/api/v1/referrals/{rid}/{step}", as_=as_, json=body)
        assert (status, problem["code"], problem["status"]) == (409, "invalid_transition", 409)
        assert (problem["referral_status"], problem["action"]) == ("requested", step)
    status, problem = await api.post(
        f"/api/v1/referrals/{rid}/decline", as_="gp_zhang", json={"reason": "x"}
    )
    assert status == 403  # the referring side does not decline
    status, problem = await api.post(
        f"/api/v1/referrals/{rid}/cancel", as_="dr_li", json={"reason": "x"}
    )
    assert status == 403  # the receiving side does not cancel
    status, problem = await api.post(f"/api/v1/referrals/{rid}/accept", as_="dr_zhao", json={})
    assert status == 404  # not a party
    status, declined = await api.post(
        f"/api/v1/referrals/{rid}/decline",
        as_="dr_li",
        json={"reason": "本院床位已满，建议转青大附院"},
    )
    assert (status, declined["status"], declined["status_reason"]) == (
        200,
        "declined",
        "本院床位已满，建议转青大附院",
    )
    status, problem = await api.post(f"/api/v1/referrals/{rid}/accept", as_="dr_li", json={})
    assert (status, problem["code"]) == (409, "invalid_transition")
    status, got = await api.get(f"/api/v1/referrals/{rid}", as_="gp_zhang")
    assert [h["to_status"] for h in got["history"]] == ["requested", "declined"]
    [window] = await _windows(network, rid)
    assert window.closed_at is not None


async def test_accepting_into_a_full_slot_keeps_the_referral_requested(
    api: Api, network: Services
) -> None:
    net = await network_ids(network)
    await register_patient(api, "gp_zhang", "patient_sun")
    [slot] = await publish_slots(api, net, capacity=1, count=1)
    status, _ = await api.post(
        "/api/v1/appointments", as_="patient_liu", json={"slot_id": slot["id"]}
    )
    assert status == 201
    status, referral = await api.post("/api/v1/referrals", as_="gp_zhang", json=up_referral(net))
    rid = referral["id"]
    status, problem = await api.post(
        f"/api/v1/referrals/{rid}/accept", as_="nurse_he", json={"slot_id": slot["id"]}
    )
    assert (status, problem["code"]) == (409, "slot_full")
    status, got = await api.get(f"/api/v1/referrals/{rid}", as_="nurse_he")
    assert (got["status"], len(got["history"])) == ("requested", 1)

    # Accept now, schedule later; the hospital then cancels that slot: back to accepted.
    [other] = await publish_slots(api, net, capacity=1, count=1, department="心内科")
    status, _ = await api.post(f"/api/v1/referrals/{rid}/accept", as_="nurse_he", json={})
    status, scheduled = await api.post(
        f"/api/v1/referrals/{rid}/schedule", as_="nurse_he", json={"slot_id": other["id"]}
    )
    assert (status, scheduled["status"]) == (200, "scheduled"), scheduled
    status, _ = await api.post(
        f"/api/v1/slots/{other['id']}/cancel", as_="nurse_he", json={"reason": "停诊"}
    )
    status, got = await api.get(f"/api/v1/referrals/{rid}", as_="nurse_he")
    assert (got["status"], got["appointment_id"], got["status_reason"]) == (
        "accepted",
        None,
        "the slot was cancelled",
    )


async def test_a_newer_referral_for_the_same_purpose_supersedes_the_open_one(
    api: Api, network: Services
) -> None:
    net = await network_ids(network)
    await register_patient(api, "gp_zhang", "patient_sun")
    desk = await api.socket("nurse_he")
    status, first = await api.post("/api/v1/referrals", as_="gp_zhang", json=up_referral(net))
    status, other = await api.post(
        "/api/v1/referrals", as_="gp_zhang", json=up_referral(net, purpose="糖尿病评估",
                                                              to_department_id=net.departments[("QDSL", "内分泌科")])
    )  # fmt: skip
    status, second = await api.post(
        "/api/v1/referrals", as_="gp_zhang", json=up_referral(net, urgency="emergency")
    )
    assert status == 201
    status, old = await api.get(f"/api/v1/referrals/{first['id']}", as_="gp_zhang")
    assert (old["status"], old["superseded_by_id"]) == ("cancelled", second["id"])
    assert old["status_reason"] == f"superseded by referral {second['id']}"
    status, kept = await api.get(f"/api/v1/referrals/{other['id']}", as_="gp_zhang")
    assert kept["status"] == "requested"
    await desk.wait_for(
        lambda e: e["type"] == "inbox" and e["data"]["kind"] == "referral.cancelled"
    )
    assert statuses(desk, first["id"]) == ["requested", "cancelled"]
    [window] = await _windows(network, first["id"])
    assert window.closed_at is not None


async def test_unanswered_referrals_expire_once(api: Api, network: Services) -> None:
    net = await network_ids(network)
    await register_patient(api, "gp_zhang", "patient_sun")
    gp = await api.socket("gp_zhang")
    status, referral = await api.post("/api/v1/referrals", as_="gp_zhang", json=up_referral(net))
    rid = referral["id"]
    assert await network.referrals.expire_overdue() == []  # not yet due
    later = utcnow() + timedelta(hours=network.settings.referral_expiry_hours, minutes=1)
    assert await network.referrals.expire_overdue(later) == [rid]
    assert await network.referrals.expire_overdue(later) == []  # run-once-safe
    await gp.wait_for(lambda e: e["type"] == "inbox" and e["data"]["kind"] == "referral.expired")
    status, got = await api.get(f"/api/v1/referrals/{rid}", as_="gp_zhang")
    assert got["status"] == "expired"
    assert got["history"][-1]["actor_user_id"] is None
    status, problem = await api.post(f"/api/v1/referrals/{rid}/accept", as_="nurse_he", json={})
    assert (status, problem["code"]) == (409, "invalid_transition")
    [window] = await _windows(network, rid)
    assert window.closed_at is not None


async def test_a_consult_becomes_a_referral_in_one_step(api: Api, network: Services) -> None:
    net = await network_ids(network)
    await register_patient(api, "gp_zhang", "patient_sun")
    gp_zhang = Requester(net.users["gp_zhang"], "gp", "s", institution_id=net.institutions["SNBDH"])
    snapshot = {"consult_id": 41, "summary": "会诊意见：建议转上级医院行冠脉造影",
                "opinion": {"recommendation": "referral", "signed_by": net.users["dr_li"]}}  # fmt: skip
    data = ReferralCreate.model_validate(up_referral(net, summary=None))
    out = await network.referrals.create_from_consult(gp_zhang, 41, snapshot, data)
    assert (out.consult_id, out.consult_snapshot, out.summary) == (
        41,
        snapshot,
        snapshot["summary"],
    )
    assert out.history[0].note == "from consult 41"
    _, got = await api.get(f"/api/v1/referrals/{out.id}", as_="nurse_he")
    assert got["consult_snapshot"]["opinion"]["recommendation"] == "referral"


async def test_the_history_is_one_shape_with_the_names_clients_read(
    api: Api, network: Services
) -> None:
    """Each step: when, the status left and reached, who, why (``note`` kept as before)."""
    net = await network_ids(network)
    await register_patient(api, "gp_zhang", "patient_sun")
    status, referral = await api.post("/api/v1/referrals", as_="gp_zhang", json=up_referral(net))
    assert status == 201, referral
    reason = "本院床位已满"
    status, declined = await api.post(
        f"/api/v1/referrals/{referral['id']}/decline", as_="dr_li", json={"reason": reason}
    )
    assert status == 200, declined
    created, step = declined["history"]
    assert (created["from_status"], created["to_status"]) == (None, "requested")
    assert created["actor_user_id"] == referral["from_user_id"]
    assert (step["from_status"], step["to_status"]) == ("requested", "declined")
    assert step["reason"] == step["note"] == reason
    assert step["at"] and step["actor_user_id"] is not None
