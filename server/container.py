"""The services of one running app, built once by ``server.app.build_services`` and handed
to the edges.

``Services`` is frozen: every component gets its collaborators through its constructor
when the app is built, and nothing is attached afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.core.api import SERVICES, Call

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from server.access import AccessService
    from server.config import Settings
    from server.consults.service import ConsultsService
    from server.consults.socket import ConsultSockets
    from server.core.audit import AuditLog
    from server.core.checkpoints import Checkpoints
    from server.core.db import Database
    from server.core.events import Events
    from server.core.idempotency import Idempotency
    from server.core.leases import Jobs
    from server.core.nodes import Nodes
    from server.core.ratelimit import RateLimits
    from server.core.sessions import SessionEnds
    from server.core.signing import Signer
    from server.identity.auth_service import AuthService
    from server.identity.care import CareService
    from server.identity.directory import Directory
    from server.identity.patients import PatientIndex
    from server.identity.service import IdentityService
    from server.inbox.service import InboxService
    from server.media.precall import PrecallService
    from server.media.recording import RecordingService
    from server.payments.service import PaymentsService
    from server.prescriptions.service import PrescriptionService
    from server.realtime.gateway import Gateway
    from server.records.service import RecordsService
    from server.referrals.service import ReferralService
    from server.scheduling.service import SchedulingService
    from server.triage.service import TriageService
    from server.visits.service import VisitsService


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    audit: AuditLog
    events: Events
    # Write operations retried with the same Idempotency-Key are done once.
    idempotency: Idempotency
    auth: AuthService
    identity: IdentityService
    # Identity's public lookups for the other capabilities (they never import its models).
    directory: Directory
    # The request, login and ingest limits (in Redis when the cluster shares one).
    limits: RateLimits
    gateway: Gateway
    inbox: InboxService
    scheduling: SchedulingService
    referrals: ReferralService
    precall: PrecallService
    jobs: Jobs
    consults: ConsultsService
    # The consult room's socket edge (per-socket presence and signaling live there).
    consult_sockets: ConsultSockets
    prescriptions: PrescriptionService
    # Follow-up video visits (互联网复诊); their rooms are consult rooms of kind followup.
    visits: VisitsService
    signer: Signer
    checkpoints: Checkpoints
    access: AccessService
    care: CareService
    patients: PatientIndex
    records: RecordsService
    recording: RecordingService
    nodes: Nodes
    ends: SessionEnds
    # The checkpoint job runs only where the signing key was given.
    # The triage (智能导诊): the knowledge table's suggestions, logged.
    triage: TriageService
    checkpoints_enabled: bool
    # Fee schedules, orders, provider notifications, refunds and reconciliation.
    payments: PaymentsService
    # Shared by readiness and the session broadcasts; opened lazily, closed by the app.
    redis: Redis | None = None


def services(call: Call[Any, Any]) -> Services:
    return call.request.app[SERVICES]
