"""Every stream, for every role: clinical content reaches only those whose job it is.

The two-sided world of the matrix (``tests/security/world.py``) is built while every
persona has a socket open, so each records what is pushed to it live; then a consult
chat message is posted, the prescription goes through receipt, review and dispensing,
and the referral is accepted. Afterwards every persona connects again and ``sync``s
every stream the server placed it in from the beginning. What each one received,
pushed or replayed, is checked:

- administrators (``iadm``, ``padm``) sit in no clinical stream and receive no clinical
  text, drug, patient name or resident ID;
- pharmacists receive prescriptions of their own pharmacy only, as the pharmacy's view
  (age, sex, allergies, prescriber, masked resident ID), and nothing of consults or
  referrals, and no full resident ID;
- clinicians of other institutions receive nothing about the other side's objects.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.seed import PATIENTS, seed_demo
from tests.helpers import Api, SocketClient
from tests.security.matrix import PERSONAS, SIGNED_IN
from tests.security.world import AMLODIPINE, Side, World, build_world

CHAT = "心电图示ST段压低，建议加做运动试验"
# What the world writes about its patients (both sides use the same clinical texts).
CLINICAL = [
    "血压控制不佳", "调整降压方案", "下一步检查建议", "高血压十年",  # consult request
    "血压偏高", "调整用药",  # opinion
    "劳力性胸痛", "不稳定型心绞痛", "胸痛评估",  # referral
    "原发性高血压", AMLODIPINE["drug_name"], "复诊续方",  # prescription
    CHAT,
]  # fmt: skip
CONSULT_AND_REFERRAL = [t for t in CLINICAL[:9]] + [CHAT]
PATIENT_OF = {p.username: p for p in PATIENTS}
# Whose objects each persona may hear about (by side), beyond their own user stream.
SIDE_OF = {"pat": "A", "gp": "A", "spec": "A", "ph": "A", "gp2": "B", "spec2": "B", "ph2": "B"}


def identity_of(side: Side) -> list[str]:
    patient = PATIENT_OF[side.patient_user]
    return [patient.name, patient.resident_id]


def text(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope["data"], ensure_ascii=False)


def objects(envelope: dict[str, Any]) -> set[tuple[str, int]]:
    """The consults, referrals and prescriptions an event is about."""
    data = envelope["data"]
    found = set()
    if "consult_id" in data:
        found.add(("consult", data["consult_id"]))
    if isinstance(data.get("prescription"), dict):
        found.add(("prescription", data["prescription"]["id"]))
    if "prescription_id" in data:
        found.add(("prescription", data["prescription_id"]))
    inner = data.get("data") if envelope["type"] == "inbox" else None
    if isinstance(inner, dict) and "referral_id" in inner:
        found.add(("referral", inner["referral_id"]))
    return found


def side_objects(side: Side) -> set[tuple[str, int]]:
    return {
        ("consult", side.consult_id),
        ("referral", side.referral_id),
        ("prescription", side.prescription_id),
    }


@pytest.fixture
async def streams_app(settings: Settings) -> web.Application:
    # Every persona logs in at once from one address: lift the per-address login limit.
    return create_app(settings.with_overrides(login_rate_per_minute=10_000))


async def drive_lifecycles(api: Api, world: World) -> None:
    """A chat message in A's consult; A's prescription received, reviewed and dispensed;
    A's referral accepted (the world already requested, accepted and answered the consult,
    and prescribed and routed the prescription)."""
    a = world.a
    gp = await api.socket(a.gp)
    opened = await gp.call("consult.open", {"consult_id": a.consult_id})
    assert opened["ok"], opened
    sent = await gp.call(
        "consult.chat", {"consult_id": a.consult_id, "client_id": "streams-0001", "text": CHAT}
    )
    assert sent["ok"], sent
    rx = f"/api/v1/prescriptions/{a.prescription_id}"
    ack = {"prescription_id": a.prescription_id, "version": a.prescription_version}
    for path, body in (
        ("/receipt", ack),
        ("/review", {"decision": "start"}),
        ("/review", {"decision": "approve"}),
        ("/dispense", {"items": [{"drug_code": AMLODIPINE["drug_code"], "quantity": 1}]}),
    ):
        status, answer = await api.post(rx + path, as_="pharmacist_chen", json=body)
        assert status == 200, (path, answer)
    status, answer = await api.post(
        f"/api/v1/referrals/{a.referral_id}/accept", as_=a.specialist, json={}
    )
    assert status == 200, answer


async def replay_everything(api: Api, username: str) -> tuple[set[str], list[dict[str, Any]]]:
    """A fresh connection: the streams it sits in, and all that ``sync`` replays from 0."""
    sock = SocketClient()
    await sock.connect(api.url, await api.token(username))
    api.sockets.append(sock)
    heads = (await sock.sync())["data"]["heads"]
    ack = await sock.call("sync", {"positions": dict.fromkeys(heads, 0)})
    assert ack["ok"], ack
    assert not ack["data"]["more"]
    return set(heads), ack["data"]["events"]


async def test_every_stream_carries_only_what_each_role_needs(
    aiohttp_client: Any, streams_app: web.Application
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(streams_app)
    services: Services = streams_app[SERVICES]
    await seed_demo(services)
    api = Api(client)
    try:
        live = {p: await api.socket(PERSONAS[p] or "") for p in SIGNED_IN}
        world = await build_world(api, services)
        await drive_lifecycles(api, world)
        # The last pushes (the referral's desk notification) have arrived for the desk.
        await live["spec"].wait_for(
            lambda e: (
                ("referral", world.a.referral_id) in objects(e) and e["stream"].startswith("desk:")
            )
        )
        received: dict[str, list[dict[str, Any]]] = {}
        rooms: dict[str, set[str]] = {}
        for persona in SIGNED_IN:
            username = PERSONAS[persona]
            assert username is not None
            rooms[persona], replayed = await replay_everything(api, username)
            received[persona] = live[persona].events + replayed
    finally:
        await api.close()

    a, b = world.a, world.b
    users, insts = world.users, world.institutions
    everyone = identity_of(a) + identity_of(b)

    # Administrators: the institution stream and their own, nothing clinical in either.
    assert rooms["iadm"] == {f"user:{users['admin_qdsl']}", f"institution:{insts['QDSL']}"}
    assert rooms["padm"] == {f"user:{users['admin']}"}
    for persona in ("iadm", "padm"):
        for envelope in received[persona]:
            leaked = [t for t in CLINICAL + everyone if t in text(envelope)]
            assert not leaked, (persona, leaked, envelope)
            assert not objects(envelope), (persona, envelope)

    # Pharmacists: their pharmacy's prescriptions, as the pharmacy's view, nothing else.
    for persona, side in (("ph", a), ("ph2", b)):
        pharmacist = PERSONAS[persona]
        assert pharmacist is not None
        stream = f"pharmacy:{side.pharmacy_id}"
        assert rooms[persona] == {
            f"user:{users[pharmacist]}",
            f"institution:{side.pharmacy_id}",
            stream,
        }
        delivered = [e for e in received[persona] if e["op"] == "delivered"]
        assert delivered, persona  # the positive control: the prescription did arrive
        for envelope in received[persona]:
            body = text(envelope)
            assert objects(envelope) <= {("prescription", side.prescription_id)}, envelope
            leaked = [t for t in CONSULT_AND_REFERRAL if t in body]
            leaked += [
                r for r in (PATIENT_OF[s.patient_user].resident_id for s in (a, b)) if r in body
            ]
            assert not leaked, (persona, leaked, envelope)
        for envelope in delivered:
            assert envelope["stream"] == stream
            view = envelope["data"]["prescription"]
            patient = PATIENT_OF[side.patient_user]
            assert view["patient"]["name"] == patient.name
            assert view["patient"]["resident_id_masked"] == (
                patient.resident_id[:4] + "*" * 10 + patient.resident_id[-4:]
            )
            assert (
                view["content"]["patient"]["resident_id"] == view["patient"]["resident_id_masked"]
            )
            assert view["patient"]["sex"] in ("male", "female")
            assert isinstance(view["patient"]["age"], int) and view["patient"]["age"] > 0
            assert isinstance(view["patient"]["allergies"], list)
            assert view["content"]["diagnosis"]["display"] == "原发性高血压"
            assert view["prescriber"]["user_id"] == users[side.gp]
            assert view["prescriber"]["institution_id"] == side.institution_id

    # Clinicians and patients: nothing about the other side's objects or patient.
    for persona, mine in SIDE_OF.items():
        other = b if mine == "A" else a
        for envelope in received[persona]:
            assert not objects(envelope) & side_objects(other), (persona, envelope)
            leaked = [t for t in identity_of(other) if t in text(envelope)]
            assert not leaked, (persona, leaked, envelope)

    # The positive controls: the clinicians of side A did hear their work.
    gp_heard = set().union(*(objects(e) for e in received["gp"]))
    assert side_objects(a) - {("referral", a.referral_id)} <= gp_heard
    assert any(e["type"] == "consult.chat" and e["data"]["text"] == CHAT for e in received["gp"])
    spec_desk = [e for e in received["spec"] if e["stream"] == f"desk:{insts['QDSL']}"]
    assert {("referral", a.referral_id), ("consult", a.consult_id)} <= set().union(
        *(objects(e) for e in spec_desk)
    )
