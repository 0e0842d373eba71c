"""The services of one running app, built once by ``create_app`` and handed to the edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.config import Settings
from server.core.access import AccessService
from server.core.api import SERVICES, Call
from server.core.audit import AuditLog
from server.core.checkpoints import Checkpoints
from server.core.db import Database
from server.core.events import Events
from server.core.leases import Jobs
from server.core.signing import Signer
from server.identity.care import CareService
from server.identity.directory import Directory
from server.identity.patients import PatientIndex
from server.identity.service import AuthService, IdentityService

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from server.consults.service import ConsultsService
    from server.core.nodes import Nodes
    from server.inbox.service import InboxService
    from server.media.precall import PrecallService
    from server.media.recording import RecordingService
    from server.prescriptions.service import PrescriptionService
    from server.realtime.gateway import Gateway
    from server.records.service import RecordsService
    from server.referrals.service import ReferralService
    from server.scheduling.service import SchedulingService


@dataclass
class Services:
    settings: Settings
    db: Database
    audit: AuditLog
    events: Events
    auth: AuthService
    identity: IdentityService
    gateway: Gateway
    inbox: InboxService
    scheduling: SchedulingService
    referrals: ReferralService
    precall: PrecallService
    jobs: Jobs
    consults: ConsultsService
    prescriptions: PrescriptionService
    signer: Signer
    checkpoints: Checkpoints
    access: AccessService
    care: CareService
    patients: PatientIndex
    records: RecordsService
    recording: RecordingService
    # Identity's public lookups for the other capabilities (they never import its models).
    directory: Directory = field(default_factory=Directory)
    redis: Redis | None = None
    nodes: Nodes | None = None


def services(call: Call) -> Services:
    return call.request.app[SERVICES]  # type: ignore[no-any-return]
