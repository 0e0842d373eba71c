"""Consults as a capability: routes, the consult room's events, escalation, refusals' patient."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.consults.jobs import escalation_jobs
from server.consults.models import Consult
from server.consults.routes import routes
from server.core.capability import Capability
from server.core.leases import Periodic

if TYPE_CHECKING:
    from server.container import Services
    from server.realtime.gateway import Gateway


def _socket(gateway: Gateway, services: Services) -> None:
    services.consult_sockets.register()


def _jobs(services: Services) -> Iterable[Periodic]:
    return escalation_jobs(services.consults, services.settings.consult_escalation_interval_seconds)


capability = Capability(
    name="consults",
    routes=(routes,),
    socket=_socket,
    jobs=_jobs,
    patient_resolvers={"consult_id": (Consult.id, Consult.patient_id)},
)
