"""The capabilities of the app, in the order ``create_app`` adds them.

The order is the order of the REST route tables (and so of the OpenAPI document),
of socket event registration, and of the capabilities' lifespans at start (they end
in reverse). ``platform`` is the small core every node runs whatever the
capabilities: the cluster's node reaper and the audit log's signed checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.access.capability import capability as access
from server.consults.capability import capability as consults
from server.core.capability import Capability, CleanupContext
from server.core.leases import Periodic
from server.identity.capability import capability as identity
from server.inbox.capability import capability as inbox
from server.media.capability import capability as media
from server.payments.capability import capability as payments
from server.prescriptions.capability import capability as prescriptions
from server.records.capability import capability as records
from server.referrals.capability import capability as referrals
from server.scheduling.capability import capability as scheduling
from server.triage.capability import capability as triage
from server.visits.capability import capability as visits

if TYPE_CHECKING:
    from server.container import Services


def _platform_jobs(services: Services) -> Iterable[Periodic]:
    settings = services.settings
    yield Periodic("cluster.reap_nodes", settings.node_heartbeat_seconds, services.nodes.reap)
    if settings.idempotency_purge_interval_seconds:
        yield Periodic(
            "idempotency.purge",
            settings.idempotency_purge_interval_seconds,
            services.idempotency.purge,
        )
    if settings.checkpoint_interval_seconds and services.checkpoints_enabled:
        yield Periodic(
            "audit.checkpoint", settings.checkpoint_interval_seconds, services.checkpoints.run_tick
        )


def _platform_lifespan(services: Services) -> Iterable[CleanupContext]:
    # Registered before the first socket, gone after the last.
    yield services.nodes.lifespan()


platform = Capability(name="platform", jobs=_platform_jobs, lifespan=_platform_lifespan)

CAPABILITIES: tuple[Capability, ...] = (
    platform,
    identity,
    access,
    records,
    inbox,
    scheduling,
    referrals,
    consults,
    prescriptions,
    media,
    triage,
    payments,
    visits,
)
