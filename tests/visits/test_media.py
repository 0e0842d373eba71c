"""The visit's room carries real media: two aiortc peers (the doctor's and the patient's
stand-ins) exchange frames, signaled only through the server, after the doctor admits the
patient from the waiting room."""

from __future__ import annotations

import asyncio

from tests.consults.test_webrtc import Peer
from tests.helpers import Api
from tests.prescriptions.conftest import PATIENT
from tests.visits.conftest import Case
from tests.visits.test_visits import V, opened


async def test_the_doctor_and_the_patient_exchange_video(
    backend: str, api: Api, case: Case
) -> None:
    visit = await opened(api, case)
    cid = visit["consult_id"]
    patient_sock = await api.socket(PATIENT)
    doctor_sock = await api.socket("dr_li")
    ack = await doctor_sock.call("consult.join", {"consult_id": cid})
    assert ack["ok"] and ack["data"]["state"] == "joined", ack
    ack = await patient_sock.call("consult.join", {"consult_id": cid})
    assert ack["ok"] and ack["data"]["state"] == "lobby", ack
    # Not admitted yet: the waiting patient may not signal the doctor.
    ack = await patient_sock.call(
        "consult.signal",
        {"consult_id": cid, "to": visit["doctor_id"], "kind": "offer", "data": {"sdp": "v=0"}},
    )
    assert not ack["ok"] and ack["problem"]["code"] == "not_in_session", ack
    status, body = await api.post(f"{V}/{visit['id']}/admit", as_="dr_li")
    assert status == 200, body
    await patient_sock.wait_for(lambda e: e["type"] == "consult.lobby" and e["op"] == "admitted")
    ack = await patient_sock.call("consult.join", {"consult_id": cid})
    assert ack["ok"] and ack["data"]["state"] == "joined", ack

    doctor = Peer(doctor_sock, cid, visit["patient_user_id"])
    patient = Peer(patient_sock, cid, visit["doctor_id"])
    try:
        await doctor.offer()
        doctor_frames, patient_frames = await asyncio.gather(doctor.frames(3), patient.frames(3))
        assert all(f.width == 640 and f.height == 480 for f in doctor_frames + patient_frames)
        assert doctor.pc.connectionState == "connected"
        assert patient.pc.connectionState == "connected"
    finally:
        await asyncio.gather(doctor.pc.close(), patient.pc.close())
