"""Consult recording: aiortc browsers in a real session, the server's recorder, the WebM file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
from sqlalchemy import select, update

from server.container import Services
from server.core.audit import AuditEvent
from server.core.db import Database, utcnow
from server.media.models import Recording
from tests.consults.conftest import scheduled_consult
from tests.consults.test_room import enter
from tests.helpers import Api, SocketClient
from tests.media.support import RoomPeer

# Grey levels of the participants' cameras: the composed picture shows each in its tile.
LUMA = {"dr_li": 60, "gp_zhang": 130, "dr_wang": 200}
RECORD_SECONDS = 4.0


class Room:
    """A consult in session with its people connected, each with a browser stand-in."""

    def __init__(self, consult: dict[str, Any], ids: dict[str, int]) -> None:
        self.consult, self.ids = consult, ids
        self.id: int = consult["id"]
        self.socks: dict[str, SocketClient] = {}
        self.peers: dict[str, RoomPeer] = {}

    @property
    def host(self) -> SocketClient:
        return self.socks["dr_li"]

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.peers.values()))


async def open_room(api: Api, case: dict[str, Any], third: bool = True) -> Room:
    consult = await scheduled_consult(api, case)
    room = Room(consult, case)
    host, gp = await enter(api, consult)
    room.socks.update(dr_li=host, gp_zhang=gp)
    if third:
        status, body = await api.post(
            f"/api/v1/consults/{room.id}/participants",
            as_="dr_li",
            json={"user_id": case["dr_wang"]},
        )
        assert status == 201, body
        wang = await api.socket("dr_wang")
        ack = await wang.call("consult.join", {"consult_id": room.id})
        assert ack["data"]["state"] == "lobby", ack
        ack = await host.call("consult.admit", {"consult_id": room.id, "user_id": case["dr_wang"]})
        assert ack["ok"], ack
        room.socks["dr_wang"] = wang
    for name, sock in room.socks.items():
        room.peers[name] = RoomPeer(sock, room.id, case[name], LUMA[name])
        if name != "dr_li" and name != "gp_zhang":
            await room.peers[name].join()
    # dr_li and gp_zhang joined in enter(); their peers learn the members from presence.
    for name in ("dr_li", "gp_zhang"):
        ack = await room.socks[name].call("consult.presence", {"consult_id": room.id})
        await room.peers[name]._update(ack["data"]["members"])
    return room


async def consent_all(room: Room) -> None:
    for sock in room.socks.values():
        ack = await sock.call("consult.recording.consent", {"consult_id": room.id, "agree": True})
        assert ack["ok"], ack


def recording_event(op: str, recording_id: int | None = None) -> Any:
    def match(e: dict[str, Any]) -> bool:
        return (
            e["type"] == "recording"
            and e["op"] == op
            and (recording_id is None or e["data"]["recording_id"] == recording_id)
        )

    return match


async def until(condition: Any, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def start_recording(room: Room) -> int:
    ack = await room.host.call("consult.recording.start", {"consult_id": room.id}, timeout=20)
    assert ack["ok"], ack
    assert ack["data"]["state"] == "starting"
    recording_id: int = ack["data"]["recording_id"]
    for sock in room.socks.values():
        await sock.wait_for(recording_event("started", recording_id), timeout=30)
    # Every browser offers to the recorder, which joined after them; wait for the media.
    await until(lambda: all(p.connected() for p in room.peers.values()))
    return recording_id


async def stop_recording(room: Room, recording_id: int) -> dict[str, Any]:
    ack = await room.host.call("consult.recording.stop", {"consult_id": room.id})
    assert ack["ok"] and ack["data"]["state"] == "stopping", ack
    finished = await room.host.wait_for(recording_event("finished", recording_id), timeout=30)
    return finished["data"]  # type: ignore[no-any-return]


def decode(path: Path) -> dict[str, Any]:
    """Decode every packet of the file with PyAV; what a player would get."""
    with av.open(str(path)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        duration = (container.duration or 0) / av.time_base
        video, audio = [], []
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                video.append(frame.to_ndarray(format="yuv420p")[: frame.height])  # luma
            else:
                audio.append(frame.to_ndarray())
    return {"kinds": kinds, "duration": duration, "video": video, "audio": audio}


def tile_levels(picture: np.ndarray, count: int) -> list[int]:
    """The grey level at the middle of each tile of the grid (the recorder's layout)."""
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    height, width = picture.shape
    cell_w, cell_h = width // cols, height // rows
    return [
        int(picture[(i // cols) * cell_h + cell_h // 2, (i % cols) * cell_w + cell_w // 2])
        for i in range(count)
    ]


def close_to(levels: list[int], expected: list[int]) -> bool:
    return len(levels) == len(expected) and all(
        abs(a - b) <= 12 for a, b in zip(levels, expected, strict=True)
    )


async def audit_actions(services: Services, action: str) -> list[AuditEvent]:
    async with services.db.read() as session:
        return list(
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
            )
        )


async def test_a_three_party_consult_is_recorded_after_consent(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    room = await open_room(api, consult_case)
    try:
        await consent_all(room)
        recording_id = await start_recording(room)
        members = room.peers["gp_zhang"].members
        recorder = [m for m in members if m["kind"] == "recorder"]
        assert len(recorder) == 1 and len(members) == 4
        await asyncio.sleep(RECORD_SECONDS)
        finished = await stop_recording(room, recording_id)
    finally:
        await room.close()

    path = network.recording.dir / f"{(await row(network, recording_id)).file_name}"
    data = path.read_bytes()
    assert finished["sha256"] == hashlib.sha256(data).hexdigest()
    assert finished["bytes"] == len(data)
    assert RECORD_SECONDS - 0.5 <= finished["duration_seconds"] <= RECORD_SECONDS + 4

    media = decode(path)
    assert media["kinds"] == {"video": "vp8", "audio": "opus"}
    assert abs(media["duration"] - finished["duration_seconds"]) < 0.5
    # 15 pictures a second when the worker has the CPU it needs; a starved worker skips
    # pictures but never time (the lead's quiet machine shows the full rate in the bench).
    assert len(media["video"]) >= finished["duration_seconds"] * 3
    # Three people in a 2×2 grid, each tile their own camera's grey, the fourth empty (black).
    last = media["video"][-5]
    ids = sorted(consult_case[n] for n in LUMA)
    by_id = {consult_case[n]: LUMA[n] for n in LUMA}
    assert close_to(tile_levels(last, 4)[:3], [by_id[i] for i in ids]), tile_levels(last, 4)
    # Their microphones' tones, mixed: clearly not silence.
    samples = np.concatenate([a.ravel() for a in media["audio"][-100:]]).astype(np.float64)
    assert np.sqrt(np.mean(samples**2)) > 0.05 * (32768 if samples.dtype.kind == "i" else 1)

    # Attached to the consult and to the patient's record.
    status, listed = await api.get(f"/api/v1/consults/{room.id}/recordings", as_="gp_zhang")
    assert status == 200
    [item] = listed["items"]
    assert item["state"] == "finished" and item["sha256"] == finished["sha256"]
    assert item["media_url"] == f"/api/v1/recordings/{recording_id}/media"
    documents = await network.records.resources(consult_case["patient"], "DocumentReference")
    [document] = [d for d in documents if str(d["id"]) == item["document_id"]]
    assert document["content"][0]["attachment"]["url"] == item["media_url"]
    assert document["content"][0]["attachment"]["contentType"] == "video/webm"

    # Download by a participant: the same bytes, audited; an outsider gets nothing, audited.
    response = await api.client.get(
        item["media_url"], headers={"Authorization": f"Bearer {await api.token('gp_zhang')}"}
    )
    assert response.status == 200 and response.content_type == "video/webm"
    assert hashlib.sha256(await response.read()).hexdigest() == finished["sha256"]
    partial = await api.client.get(
        item["media_url"],
        headers={
            "Authorization": f"Bearer {await api.token('dr_li')}",
            "Range": "bytes=0-99",
        },
    )
    assert partial.status == 206 and await partial.read() == data[:100]
    status, problem = await api.get(item["media_url"], as_="dr_zhao")
    assert status == 404, problem
    status, _ = await api.get(f"/api/v1/consults/{room.id}/recordings", as_="dr_zhao")
    assert status == 404
    accesses = await audit_actions(network, "recording.access")
    assert [(a.actor_user_id, a.outcome) for a in accesses] == [
        (consult_case["gp_zhang"], "success"),
        (consult_case["dr_li"], "success"),
        (consult_case["dr_zhao"], "failure"),
    ]
    consents = await audit_actions(network, "recording.consent")
    assert {a.actor_user_id for a in consents} == {consult_case[n] for n in LUMA}


async def row(services: Services, recording_id: int) -> Recording:
    async with services.db.read() as session:
        found = await session.get(Recording, recording_id)
    assert found is not None
    return found


async def test_no_recording_without_everyones_consent(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    room = await open_room(api, consult_case)
    try:
        none = await room.host.call("consult.recording.start", {"consult_id": room.id})
        assert none["problem"]["status"] == 409
        assert none["problem"]["code"] == "recording_consent_missing"
        assert none["problem"]["missing"] == sorted(consult_case[n] for n in LUMA)

        for name in ("dr_li", "gp_zhang"):
            ack = await room.socks[name].call(
                "consult.recording.consent", {"consult_id": room.id, "agree": True}
            )
            assert ack["ok"], ack
        ack = await room.socks["dr_wang"].call(
            "consult.recording.consent", {"consult_id": room.id, "agree": False}
        )
        assert [(c["user_id"], c["agree"]) for c in ack["data"]["consents"]] == [
            (consult_case["dr_li"], True),
            (consult_case["gp_zhang"], True),
            (consult_case["dr_wang"], False),
        ]
        refused = await room.host.call("consult.recording.start", {"consult_id": room.id})
        assert refused["problem"]["code"] == "recording_consent_missing"
        assert refused["problem"]["missing"] == [consult_case["dr_wang"]]
        assert str(consult_case["dr_wang"]) in refused["problem"]["detail"]

        # Only the host starts it, even once everyone agreed.
        await room.socks["dr_wang"].call(
            "consult.recording.consent", {"consult_id": room.id, "agree": True}
        )
        not_host = await room.socks["gp_zhang"].call(
            "consult.recording.start", {"consult_id": room.id}
        )
        assert not_host["problem"]["status"] == 403
        # Everyone sees everyone's answers on the consult's stream.
        await room.socks["gp_zhang"].wait_for(
            lambda e: (
                e["type"] == "recording"
                and e["op"] == "consent"
                and e["data"]
                == {"consult_id": room.id, "user_id": consult_case["dr_wang"], "agree": True}
            )
        )
    finally:
        await room.close()
    status, listed = await api.get(f"/api/v1/consults/{room.id}/recordings", as_="dr_li")
    assert status == 200 and listed["items"] == []
    assert len(network.recording) == 0
    assert (
        not list(network.recording.dir.glob("*.webm")) if network.recording.dir.exists() else True
    )


async def test_recording_survives_a_participant_leaving_and_rejoining(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    room = await open_room(api, consult_case, third=False)
    try:
        await consent_all(room)
        recording_id = await start_recording(room)
        await asyncio.sleep(1.5)
        gp = room.peers["gp_zhang"]
        await gp.leave()
        await until(lambda: len(room.peers["dr_li"].members) == 2)  # dr_li and the recorder
        await asyncio.sleep(1.0)
        # Back in: the recorder was there first now, so it offers and gp_zhang answers.
        await gp.join()
        await until(gp.connected)
        await asyncio.sleep(2.0)
        finished = await stop_recording(room, recording_id)
    finally:
        await room.close()
    path = network.recording.dir / (await row(network, recording_id)).file_name
    media = decode(path)
    assert media["kinds"] == {"video": "vp8", "audio": "opus"}
    assert 4.0 <= finished["duration_seconds"] <= 10.0
    assert abs(media["duration"] - finished["duration_seconds"]) < 0.5
    # After the return both tiles show again (2 people: side by side).
    ids = sorted([consult_case["dr_li"], consult_case["gp_zhang"]])
    by_id = {consult_case["dr_li"]: LUMA["dr_li"], consult_case["gp_zhang"]: LUMA["gp_zhang"]}
    last = media["video"][-3]
    assert close_to(tile_levels(last, 2), [by_id[i] for i in ids]), tile_levels(last, 2)


async def test_a_killed_worker_is_reported_and_the_consult_goes_on(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    room = await open_room(api, consult_case, third=False)
    try:
        await consent_all(room)
        recording_id = await start_recording(room)
        pid = network.recording.pid(recording_id)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        for sock in room.socks.values():
            failed = await sock.wait_for(recording_event("failed", recording_id), timeout=20)
            assert "signal 9" in failed["data"]["reason"]
        assert len(network.recording) == 0
        # The consult goes on: chat reaches the others, the recorder left the session.
        ack = await room.socks["gp_zhang"].call(
            "consult.chat", {"consult_id": room.id, "client_id": "after-crash", "text": "还在吗？"}
        )
        assert ack["ok"], ack
        await room.host.wait_for(
            lambda e: e["type"] == "consult.chat" and e["data"]["text"] == "还在吗？"
        )
        await until(lambda: all(m["kind"] == "person" for m in room.peers["dr_li"].members))
        # And the host may record again.
        again = await start_recording(room)
        assert again != recording_id
        await asyncio.sleep(1.0)
        finished = await stop_recording(room, again)
        assert finished["duration_seconds"] > 0.5
    finally:
        await room.close()
    status, listed = await api.get(f"/api/v1/consults/{room.id}/recordings", as_="dr_li")
    assert status == 200
    assert [(i["state"], i["failure"] is not None) for i in listed["items"]] == [
        ("failed", True),
        ("finished", False),
    ]


def run_cli(network: Services, *args: str) -> subprocess.CompletedProcess[str]:
    settings = network.settings
    environ = {
        "PATH": os.environ["PATH"],
        "YIHAO_DATA_DIR": str(settings.data_dir),
        "YIHAO_SECRET_KEY": settings.secret_key,
        "YIHAO_LOG_LEVEL": "WARNING",
    }
    if settings.database_url:
        environ["YIHAO_DATABASE_URL"] = settings.database_url
        environ["YIHAO_CHECKPOINT_KEY_FILE"] = str(settings.checkpoint_key_file)
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_purge_removes_recordings_past_retention(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    room = await open_room(api, consult_case, third=False)
    try:
        await consent_all(room)
        recording_id = await start_recording(room)
        await asyncio.sleep(1.0)
        await stop_recording(room, recording_id)
        kept_id = await start_recording(room)
        await asyncio.sleep(1.0)
        # This one ends because gp_zhang withdraws consent while it runs.
        ack = await room.socks["gp_zhang"].call(
            "consult.recording.consent", {"consult_id": room.id, "agree": False}
        )
        assert ack["ok"], ack
        stopped = await room.host.wait_for(recording_event("stopped", kept_id))
        assert stopped["data"]["reason"] == "consent withdrawn"
        await room.host.wait_for(recording_event("finished", kept_id), timeout=30)
    finally:
        await room.close()
    old, kept = await row(network, recording_id), await row(network, kept_id)
    # Three years and a day pass for the first one.
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(Recording)
            .where(Recording.id == recording_id)
            .values(started_at=old.started_at.replace(year=old.started_at.year - 3) - _day())
        )
    dry = await asyncio.to_thread(run_cli, network, "recordings", "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would be purged: {recording_id}" in dry.stdout
    assert (network.recording.dir / old.file_name).exists()

    done = await asyncio.to_thread(run_cli, network, "recordings", "purge")
    assert done.returncode == 0, done.stderr
    assert f"1 recordings older than 1095 days purged: {recording_id}" in done.stdout
    assert not (network.recording.dir / old.file_name).exists()
    assert (network.recording.dir / kept.file_name).exists()
    status, listed = await api.get(f"/api/v1/consults/{room.id}/recordings", as_="dr_li")
    assert [i["state"] for i in listed["items"]] == ["purged", "finished"]
    status, problem = await api.get(f"/api/v1/recordings/{recording_id}/media", as_="dr_li")
    assert status == 404 and problem["code"] == "purged"
    [purge] = await audit_actions(network, "recording.purge")
    assert purge.resource == f"Recording/{recording_id}"


def _day() -> timedelta:
    return timedelta(days=1)


async def test_no_disk_space_refuses_and_a_lost_recording_does_not_block(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    room = await open_room(api, consult_case, third=False)
    try:
        await consent_all(room)
        network.recording.min_free_mb = 10**9  # a petabyte: more than this disk has
        ack = await room.host.call("consult.recording.start", {"consult_id": room.id})
        assert ack["problem"]["status"] == 503
        assert ack["problem"]["code"] == "recording_disk_full"
        status, listed = await api.get(f"/api/v1/consults/{room.id}/recordings", as_="dr_li")
        assert status == 200 and listed["items"] == []
        network.recording.min_free_mb = 0

        # A node crashed mid-recording ten minutes ago: its row says "recording", and no
        # heartbeat came since. It blocks no one: the next start fails it and records.
        async with network.db.transaction() as tx:
            lost = Recording(
                consult_id=room.id,
                patient_id=consult_case["patient"],
                started_by=consult_case["dr_li"],
                state="recording",
                file_name="lost.webm",
                started_at=utcnow() - timedelta(minutes=10),
            )
            tx.session.add(lost)
        recording_id = await start_recording(room)
        failed = await room.host.wait_for(recording_event("failed", lost.id))
        assert "incomplete" in failed["data"]["reason"]
        await asyncio.sleep(1.0)
        await stop_recording(room, recording_id)
    finally:
        await room.close()
    status, listed = await api.get(f"/api/v1/consults/{room.id}/recordings", as_="dr_li")
    assert [i["state"] for i in listed["items"]] == ["failed", "finished"]


async def test_shutdown_completes_a_running_recording(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any], client: Any
) -> None:
    room = await open_room(api, consult_case, third=False)
    await consent_all(room)
    recording_id = await start_recording(room)
    await asyncio.sleep(1.5)
    await room.close()
    await api.close()
    await client.server.close()
    assert len(network.recording) == 0
    db = Database(network.settings)
    try:
        async with db.read() as session:
            done = await session.get(Recording, recording_id)
    finally:
        await db.dispose()
    assert done is not None and done.state == "finished", done and done.state
    data = (network.recording.dir / done.file_name).read_bytes()
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert done.duration_seconds is not None and done.duration_seconds >= 1.0


async def test_a_write_failure_is_reported_and_the_consult_goes_on(
    backend: str, api: Api, network: Services, consult_case: dict[str, Any]
) -> None:
    room = await open_room(api, consult_case, third=False)
    try:
        await consent_all(room)
        # The file may not grow past 16 KiB: a few seconds of recording, then writing fails
        # as on a full disk.
        network.recording.max_bytes = 16 * 1024
        recording_id = await start_recording(room)
        failed = await room.host.wait_for(recording_event("failed", recording_id), timeout=30)
        assert "size limit" in failed["data"]["reason"], failed
        ack = await room.socks["gp_zhang"].call(
            "consult.chat", {"consult_id": room.id, "client_id": "after-write", "text": "继续"}
        )
        assert ack["ok"], ack
    finally:
        await room.close()
    status, listed = await api.get(f"/api/v1/consults/{room.id}/recordings", as_="dr_li")
    assert status == 200
    [item] = listed["items"]
    assert item["state"] == "failed" and item["media_url"] is None
