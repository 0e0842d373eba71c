"""Consult recording: consent, the supervised recording worker, the file and its retention.

A consult is recorded only when every participant agreed (``recording_consents``,
each answer a ``recording``/``consent`` event on the consult's stream). The host
then starts it: the server makes a ``recordings`` row, a login session for the
system "recorder" user good for this recording only, and a worker process
(``python -m server.media.recorder``) that joins the session like a browser and
writes one WebM file. The server supervises the worker: a registry with a
per-process limit, a longest duration, a stop on request, on withdrawn consent,
on the consult's end, and at shutdown; a worker that dies is reported to the room
(``recording``/``failed``) and logged, and the consult goes on.

When the file is complete its SHA-256, duration and size are stored and it is
attached to the consult (the row) and to the patient's record (a FHIR
DocumentReference pointing at ``/api/v1/recordings/{id}/media``); every access
to the media is audited, and ``yihao recordings purge`` removes files older than
the retention period.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from server.config import Settings
from server.consults.states import (
    FOLLOWUP_KIND,
    FOLLOWUP_MEDIA_RETENTION_DAYS,
    RECORDER_ROLE,
    ConsultFacts,
    ConsultStatus,
    consult_stream,
)
from server.core.auth import Requester
from server.core.db import Tx, utcnow
from server.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
)
from server.identity.auth_service import AuthService
from server.identity.directory import Directory
from server.media.models import Recording, RecordingConsent
from server.media.schemas import ConsentItem, ConsentsOut, RecordingOut

if TYPE_CHECKING:
    from server.consults.service import ConsultsService

logger = logging.getLogger(__name__)

RECORDER_USERNAME = "_recorder"
RECORDER_NAME = "会诊录制"
RUNNING = ("starting", "recording", "stopping")
# How long a stopping worker gets to close its file before it is killed.
STOP_GRACE_S = 15.0
# The node running a recording marks it alive this often; one not marked for LOST_AFTER_S was
# lost with its node (crashed, killed): a new start fails it and goes ahead.
HEARTBEAT_S = 30.0
LOST_AFTER_S = 120.0
LOST = "the server recording it stopped; the recording is incomplete"
RECORDING_DOC_TYPE = {
    "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}],
    "text": "会诊录像",
}
SHA256_EXTENSION = "https://yihao.dev/fhir/StructureDefinition/attachment-sha256"


@dataclass
class Worker:
    recording_id: int
    consult_id: int
    process: asyncio.subprocess.Process
    path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    stop_requested: bool = False
    monitor: asyncio.Task[None] | None = None


@dataclass
class Probe:
    sha256: str
    bytes: int
    duration_seconds: float
    tracks: list[str]


def probe_file(path: Path) -> Probe:
    """Hash and measure a finished file (on a thread: it reads the whole file)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    with av.open(str(path)) as container:
        tracks = [str(s.type) for s in container.streams]
        duration = (container.duration or 0) / av.time_base
    return Probe(digest.hexdigest(), size, round(duration, 3), tracks)


def recording_document(recording: Recording, probe: Probe) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": RECORDING_DOC_TYPE,
        "date": (recording.started_at or utcnow()).isoformat(),
        "description": f"远程会诊录像 (consult {recording.consult_id}, recording {recording.id})",
        "content": [
            {
                "attachment": {
                    "contentType": "video/webm",
                    "url": f"/api/v1/recordings/{recording.id}/media",
                    "size": probe.bytes,
                    "title": recording.file_name,
                    "creation": (recording.started_at or utcnow()).isoformat(),
                    "extension": [{"url": SHA256_EXTENSION, "valueString": probe.sha256}],
                }
            }
        ],
    }


class RecordingService:
    def __init__(
        self,
        settings: Settings,
        consults: ConsultsService,
        auth: AuthService,
        directory: Directory,
    ) -> None:
        self.settings = settings
        # Consult facts come from the consults capability's public methods, never its tables.
        self.consults = consults
        self.directory = directory
        self.db = consults.db
        self.audit = consults.audit
        self.events = consults.events
        self.records = consults.records
        self.auth = auth
        self.dir = settings.effective_recordings_dir
        self.max_concurrent = settings.recording_max_concurrent
        self.min_free_mb = settings.recording_min_free_mb
        self.max_bytes = settings.recording_max_bytes
        self.workers: dict[int, Worker] = {}
        self._recorder_id: int | None = None

    def __len__(self) -> int:
        return len(self.workers)

    # --- consent -----------------------------------------------------------------------

    async def _person_participant(self, requester: Requester, consult_id: int) -> ConsultFacts:
        async with self.db.read() as session:
            return await self.consults.check_participant(session, consult_id, requester)

    async def consents(self, consult_id: int) -> list[ConsentItem]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(RecordingConsent)
                .where(RecordingConsent.consult_id == consult_id)
                .order_by(RecordingConsent.id)
            )
            return [ConsentItem(user_id=r.user_id, agree=r.agree, at=r.at) for r in rows]

    async def consent(self, requester: Requester, consult_id: int, agree: bool) -> ConsentsOut:
        consult = await self._person_participant(requester, consult_id)
        if consult.ended:
            raise Conflict(f"the consult is {consult.status}", code="consult_ended")
        stop: Recording | None = None
        try:
            async with self.db.transaction() as tx:
                row = await tx.session.scalar(
                    select(RecordingConsent).where(
                        RecordingConsent.consult_id == consult_id,
                        RecordingConsent.user_id == requester.user_id,
                    )
                )
                if row is None:
                    tx.session.add(
                        RecordingConsent(
                            consult_id=consult_id, user_id=requester.user_id, agree=agree
                        )
                    )
                else:
                    row.agree, row.at = agree, utcnow()
                await self.events.append(
                    tx,
                    consult_stream(consult_id),
                    "recording",
                    "consent",
                    {"consult_id": consult_id, "user_id": requester.user_id, "agree": agree},
                )
                await self.audit.record(
                    tx.session,
                    "recording.consent",
                    actor=requester,
                    patient_id=consult.patient_id,
                    resource=f"Consult/{consult_id}",
                    details={"agree": agree},
                )
                if not agree:
                    # A withdrawn consent stops a recording that is on.
                    stop = await self._running(tx, consult_id)
                    if stop is not None and stop.state != "stopping":
                        await self._mark_stopping(tx, stop, requester, "consent withdrawn")
                    else:
                        stop = None
        except IntegrityError:
            # The same user answered twice at once; the other answer is in: answer again.
            return await self.consent(requester, consult_id, agree)
        if stop is not None:
            self._signal_stop(stop.id)
        return ConsentsOut(consult_id=consult_id, consents=await self.consents(consult_id))

    # --- start / stop ------------------------------------------------------------------

    async def _running(self, tx: Tx, consult_id: int) -> Recording | None:
        return await tx.session.scalar(
            select(Recording).where(
                Recording.consult_id == consult_id, Recording.state.in_(RUNNING)
            )
        )

    async def _recorder_user(self) -> int:
        """The system account the workers log in as (identity's row, created on first use);
        kept once its creation committed."""
        if self._recorder_id is not None:
            return self._recorder_id
        async with self.db.transaction() as tx:
            found = await self.directory.system_user(
                tx.session, RECORDER_USERNAME, RECORDER_ROLE, RECORDER_NAME
            )
        self._recorder_id = found
        return found

    def _check_disk(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        free_mb = shutil.disk_usage(self.dir).free // (1024 * 1024)
        if free_mb < self.min_free_mb:
            logger.error(
                "recording refused: %d MB free in %s, %d MB needed",
                free_mb,
                self.dir,
                self.min_free_mb,
            )
            raise ServiceUnavailable(
                f"not enough disk space to record ({free_mb} MB free)",
                code="recording_disk_full",
            )

    async def start(self, requester: Requester, consult_id: int, server_url: str) -> RecordingOut:
        consult = await self._person_participant(requester, consult_id)
        self.consults.check_host(consult, requester)
        if consult.status != ConsultStatus.IN_SESSION:
            raise Conflict(
                f"the consult is {consult.status}: record during the session",
                code="consult_not_live",
            )
        if len(self.workers) >= self.max_concurrent:
            raise TooManyRequests(
                "too many recordings on this server right now; try again shortly",
                code="recording_busy",
                headers={"Retry-After": "30"},
            )
        self._check_disk()
        recorder_id = await self._recorder_user()
        now = utcnow()
        ttl = self.settings.recording_max_seconds + 600
        async with self.db.transaction() as tx:
            consult = await self.consults.consult_facts(tx.session, consult_id, lock=True)
            running = await self._running(tx, consult_id)
            if running is not None and await self._lost(tx, running):
                # Its node died with it: no worker anywhere records it any more.
                self._log_failure(running.id, LOST)
                await self._mark_failed(tx, running, LOST)
                running = None
            if running is not None:
                raise Conflict("this consult is being recorded already", code="recording_active")
            participants = await self.consults.participant_ids(tx.session, consult_id)
            agreed = set(
                await tx.session.scalars(
                    select(RecordingConsent.user_id).where(
                        RecordingConsent.consult_id == consult_id,
                        RecordingConsent.agree.is_(True),
                    )
                )
            )
            missing = sorted(set(participants) - agreed)
            if missing:
                raise Conflict(
                    "every participant must agree to the recording first; not yet: "
                    + ", ".join(str(u) for u in missing),
                    code="recording_consent_missing",
                    extra={"missing": missing},
                )
            session_id = await self.directory.open_system_session(tx.session, recorder_id, ttl)
            recording = Recording(
                consult_id=consult_id,
                patient_id=consult.patient_id,
                started_by=requester.user_id,
                state="starting",
                recorder_session_id=session_id,
                file_name="",
                started_at=now,
            )
            tx.session.add(recording)
            await tx.session.flush()
            recording.file_name = (
                f"consult-{consult_id}-recording-{recording.id}-{now:%Y%m%dT%H%M%S}.webm"
            )
            await self.audit.record(
                tx.session,
                "recording.start",
                actor=requester,
                patient_id=consult.patient_id,
                resource=f"Consult/{consult_id}",
                details={"recording_id": recording.id, "participants": sorted(participants)},
            )
            out = self._out(recording)
        token = self.auth.tokens.issue(
            Requester(user_id=recorder_id, role=RECORDER_ROLE, session_id=session_id), ttl=ttl
        )
        try:
            await self._spawn(recording, server_url, token)
        except Exception as exc:
            logger.exception("recording %s: the worker did not start", recording.id)
            await self._fail(recording.id, f"the recording worker did not start: {exc}")
            raise ServiceUnavailable(
                "the recording could not be started", code="recording_unavailable"
            ) from None
        return out

    async def _spawn(self, recording: Recording, server_url: str, token: str) -> None:
        path = self.dir / recording.file_name
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.media.recorder",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Its own process group: a terminal's Ctrl-C reaches the server, which stops it.
            start_new_session=True,
        )
        worker = Worker(recording.id, recording.consult_id, process, path)
        self.workers[recording.id] = worker
        job = {
            "url": server_url,
            "token": token,
            "consult_id": recording.consult_id,
            "recording_id": recording.id,
            "path": str(path),
            "width": self.settings.recording_width,
            "height": self.settings.recording_height,
            "fps": self.settings.recording_fps,
            "idle_seconds": self.settings.recording_idle_seconds,
            "max_seconds": self.settings.recording_max_seconds,
            "nice": self.settings.recording_worker_nice,
            "max_bytes": self.max_bytes,
        }
        assert process.stdin is not None
        process.stdin.write(json.dumps(job).encode() + b"\n")
        await process.stdin.drain()
        worker.monitor = asyncio.get_running_loop().create_task(self._supervise(worker))
        logger.info(
            "recording %s: worker %s started for consult %s",
            recording.id,
            process.pid,
            recording.consult_id,
            extra={"recording_id": recording.id, "pid": process.pid},
        )

    async def stop(self, requester: Requester, consult_id: int) -> RecordingOut:
        consult = await self._person_participant(requester, consult_id)
        self.consults.check_host(consult, requester)
        async with self.db.transaction() as tx:
            await self.consults.consult_facts(tx.session, consult_id, lock=True)
            recording = await self._running(tx, consult_id)
            if recording is None:
                raise Conflict("no recording of this consult is on", code="recording_not_running")
            if recording.state != "stopping":
                await self._mark_stopping(tx, recording, requester, "stopped by the host")
            out = self._out(recording)
        self._signal_stop(recording.id)
        return out

    async def _mark_stopping(
        self, tx: Tx, recording: Recording, actor: Requester | None, why: str
    ) -> None:
        recording.state = "stopping"
        # The worker hears this event too (on any node) and closes its file.
        await self.events.append(
            tx,
            consult_stream(recording.consult_id),
            "recording",
            "stopped",
            {"consult_id": recording.consult_id, "recording_id": recording.id, "reason": why},
        )
        await self.audit.record(
            tx.session,
            "recording.stop",
            actor=actor,
            patient_id=recording.patient_id,
            resource=f"Consult/{recording.consult_id}",
            details={"recording_id": recording.id, "reason": why},
        )

    def _signal_stop(self, recording_id: int) -> None:
        worker = self.workers.get(recording_id)
        if worker is None or worker.stop_requested:
            return
        worker.stop_requested = True
        stdin = worker.process.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(Exception):
                stdin.write(b"stop\n")

    # --- supervision -------------------------------------------------------------------

    async def _supervise(self, worker: Worker) -> None:
        process = worker.process
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                worker.events.append(message)
                if message.get("event") == "recording":
                    await self._started(worker.recording_id)
            code = await process.wait()
            # Out of the registry before the room hears: a new start is not refused as busy.
            self.workers.pop(worker.recording_id, None)
            closed = next((m for m in worker.events if m.get("event") == "closed"), None)
            failed = next((m for m in worker.events if m.get("event") == "failed"), None)
            if closed is not None:
                logger.info(
                    "recording %s: worker closed the file (%s pictures, %s skipped)",
                    worker.recording_id,
                    closed.get("pictures"),
                    closed.get("skipped"),
                )
            if code == 0 and closed is not None:
                await self._finish(worker, str(closed.get("reason", "")))
            else:
                if failed is not None:
                    reason = str(failed.get("reason"))
                elif code < 0:
                    reason = f"the recording worker stopped unexpectedly (signal {-code})"
                else:
                    reason = f"the recording worker stopped unexpectedly (exit code {code})"
                await self._fail(worker.recording_id, reason)
        except Exception:
            logger.exception("recording %s: supervision failed", worker.recording_id)
            with contextlib.suppress(Exception):
                await self._fail(worker.recording_id, "the recording could not be completed")
        finally:
            self.workers.pop(worker.recording_id, None)
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    async def _started(self, recording_id: int) -> None:
        async with self.db.transaction() as tx:
            recording = await tx.session.get(Recording, recording_id)
            if recording is None or recording.state != "starting":
                return
            recording.state = "recording"
            await self.events.append(
                tx,
                consult_stream(recording.consult_id),
                "recording",
                "started",
                {"consult_id": recording.consult_id, "recording_id": recording.id},
            )

    async def _end_session(self, tx: Tx, recording: Recording) -> None:
        if recording.recorder_session_id:
            await self.directory.end_system_session(
                tx.session, recording.recorder_session_id, "recording_ended"
            )

    @staticmethod
    def _log_failure(recording_id: int, reason: str) -> None:
        logger.error(
            "recording %s failed: %s",
            recording_id,
            reason,
            extra={"recording_id": recording_id, "reason": reason},
        )

    async def _fail(self, recording_id: int, reason: str) -> None:
        self._log_failure(recording_id, reason)
        async with self.db.transaction() as tx:
            recording = await tx.session.get(Recording, recording_id)
            if recording is None or recording.state not in RUNNING:
                return
            await self._mark_failed(tx, recording, reason)

    async def _mark_failed(self, tx: Tx, recording: Recording, reason: str) -> None:
        recording.state, recording.failure, recording.ended_at = "failed", reason, utcnow()
        await self._end_session(tx, recording)
        await self.events.append(
            tx,
            consult_stream(recording.consult_id),
            "recording",
            "failed",
            {"consult_id": recording.consult_id, "recording_id": recording.id, "reason": reason},
        )
        await self.audit.record(
            tx.session,
            "recording.fail",
            outcome="failure",
            patient_id=recording.patient_id,
            resource=f"Consult/{recording.consult_id}",
            reason=reason,
            details={"recording_id": recording.id},
        )

    async def _lost(self, tx: Tx, recording: Recording) -> bool:
        """A recording no worker runs: not ours, and no heartbeat from its node for long."""
        if recording.id in self.workers:
            return False
        last = recording.heartbeat_at or recording.started_at
        return utcnow() - last > timedelta(seconds=LOST_AFTER_S)

    async def _finish(self, worker: Worker, why: str) -> None:
        try:
            probe = await asyncio.to_thread(probe_file, worker.path)
        except Exception as exc:
            await self._fail(worker.recording_id, f"the recorded file is not readable: {exc}")
            return
        async with self.db.transaction() as tx:
            recording = await tx.session.get(Recording, worker.recording_id)
            if recording is None or recording.state not in RUNNING:
                return
            consult = await self.consults.consult_facts(tx.session, recording.consult_id)
            document = await self.records.add_resource(
                tx,
                patient_id=recording.patient_id,
                # Where the signed opinion goes too: the requesting (treating) institution.
                institution_id=consult.requesting_institution_id,
                resource=recording_document(recording, probe),
            )
            recording.state, recording.ended_at = "finished", utcnow()
            recording.sha256, recording.bytes = probe.sha256, probe.bytes
            recording.duration_seconds = probe.duration_seconds
            recording.document_id = str(document["id"])
            await self._end_session(tx, recording)
            await self.events.append(
                tx,
                consult_stream(recording.consult_id),
                "recording",
                "finished",
                {
                    "consult_id": recording.consult_id,
                    "recording_id": recording.id,
                    "duration_seconds": probe.duration_seconds,
                    "sha256": probe.sha256,
                    "bytes": probe.bytes,
                },
            )
            await self.audit.record(
                tx.session,
                "recording.finish",
                patient_id=recording.patient_id,
                resource=f"Consult/{recording.consult_id}",
                details={
                    "recording_id": recording.id,
                    "sha256": probe.sha256,
                    "bytes": probe.bytes,
                    "duration_seconds": probe.duration_seconds,
                    "document": f"DocumentReference/{document['id']}",
                    "reason": why,
                },
            )
        logger.info(
            "recording %s finished: %.1f s, %d bytes (%s)",
            worker.recording_id,
            probe.duration_seconds,
            probe.bytes,
            why,
            extra={"recording_id": worker.recording_id},
        )

    async def close_all(self) -> None:
        """Stop every local recording, letting each close its file; kill the slow ones."""
        workers = list(self.workers.values())
        for worker in workers:
            self._signal_stop(worker.recording_id)

        async def settle(worker: Worker) -> None:
            if worker.monitor is None:
                return
            try:
                await asyncio.wait_for(asyncio.shield(worker.monitor), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await asyncio.gather(worker.monitor, return_exceptions=True)

        await asyncio.gather(*(settle(w) for w in workers), return_exceptions=True)

    async def on_shutdown(self, app: web.Application) -> None:
        """First thing at shutdown, before the server waits for connections to end: the
        workers close their files and their sockets (their completion is awaited below)."""
        for worker in list(self.workers.values()):
            self._signal_stop(worker.recording_id)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: the heartbeat of local recordings; at shutdown, recordings still
        on are completed (or failed)."""
        beat = asyncio.get_running_loop().create_task(self._heartbeat())
        yield
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        await self.close_all()

    async def _heartbeat(self) -> None:
        """Mark the recordings this process runs as alive, so others can tell lost ones."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if not self.workers:
                continue
            try:
                async with self.db.transaction() as tx:
                    await tx.session.execute(
                        update(Recording)
                        .where(Recording.id.in_(list(self.workers)))
                        .values(heartbeat_at=utcnow())
                    )
            except Exception:
                logger.exception("recording heartbeat failed")

    def pid(self, recording_id: int) -> int | None:
        worker = self.workers.get(recording_id)
        return worker.process.pid if worker else None

    # --- reading -----------------------------------------------------------------------

    @staticmethod
    def _out(recording: Recording) -> RecordingOut:
        return RecordingOut(
            recording_id=recording.id,
            consult_id=recording.consult_id,
            state=recording.state,
            started_by=recording.started_by,
            started_at=recording.started_at,
            ended_at=recording.ended_at,
            duration_seconds=recording.duration_seconds,
            sha256=recording.sha256,
            bytes=recording.bytes,
            document_id=recording.document_id,
            failure=recording.failure,
            media_url=(
                f"/api/v1/recordings/{recording.id}/media"
                if recording.state == "finished"
                else None
            ),
        )

    async def list_for(self, requester: Requester, consult_id: int) -> list[RecordingOut]:
        await self.consults.get_consult(requester, consult_id)  # 404 to those who may not see it
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Recording).where(Recording.consult_id == consult_id).order_by(Recording.id)
            )
            return [self._out(r) for r in rows]

    async def media(self, requester: Requester, recording_id: int) -> tuple[Path, Recording]:
        """The file of a finished recording, for one allowed to see the consult; audited."""
        async with self.db.read() as session:
            recording = await session.get(Recording, recording_id)
        if recording is None:
            raise NotFound(f"no recording {recording_id}")
        try:
            await self.consults.get_consult(requester, recording.consult_id)
        except (NotFound, Forbidden):
            await self.audit.record_alone(
                "recording.access",
                actor=requester,
                outcome="failure",
                patient_id=recording.patient_id,
                resource=f"Recording/{recording_id}",
                reason="may not see the consult",
            )
            denied = NotFound(f"no recording {recording_id}")
            denied.audited = True  # just written: the error middleware need not write it again
            raise denied from None
        if recording.state == "purged":
            raise NotFound("the recording was removed after its retention period", code="purged")
        if recording.state != "finished":
            raise Conflict(f"the recording is {recording.state}", code="recording_not_finished")
        path = self.dir / recording.file_name
        if not path.is_file():
            raise NotFound("the recording's file is missing", code="file_missing")
        await self.audit.record_alone(
            "recording.access",
            actor=requester,
            patient_id=recording.patient_id,
            resource=f"Recording/{recording_id}",
            details={"consult_id": recording.consult_id, "sha256": recording.sha256},
        )
        return path, recording

    # --- retention ---------------------------------------------------------------------

    async def purge(self, dry_run: bool = False, now: datetime | None = None) -> list[int]:
        """Delete the files of recordings older than the retention period; mark them purged."""
        cutoff = (now or utcnow()) - timedelta(days=self.settings.recording_retention_days)
        async with self.db.read() as session:
            due = list(
                await session.scalars(
                    select(Recording)
                    .where(
                        Recording.started_at < cutoff,
                        Recording.state.in_(("finished", "failed")),
                    )
                    .order_by(Recording.id)
                )
            )
            # A follow-up visit's recordings are kept 3 years at least (server/visits).
            kept = {
                r.id
                for r in due
                if r.started_at >= (now or utcnow()) - timedelta(days=FOLLOWUP_MEDIA_RETENTION_DAYS)
                and (await self.consults.consult_facts(session, r.consult_id)).kind == FOLLOWUP_KIND
            }
            due = [r for r in due if r.id not in kept]
        if dry_run:
            return [r.id for r in due]
        purged = []
        for recording in due:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / recording.file_name)
            async with self.db.transaction() as tx:
                row = await tx.session.get(Recording, recording.id)
                if row is None or row.state == "purged":
                    continue
                row.state, row.purged_at = "purged", utcnow()
                await self.audit.record(
                    tx.session,
                    "recording.purge",
                    patient_id=row.patient_id,
                    resource=f"Recording/{row.id}",
                    details={
                        "consult_id": row.consult_id,
                        "sha256": row.sha256,
                        "retention_days": self.settings.recording_retention_days,
                    },
                )
            purged.append(recording.id)
        return purged
