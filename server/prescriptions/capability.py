"""Prescriptions as a capability: routes, pharmacy events, expiry and relay, refusals' patient."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.core.capability import Capability, CleanupContext
from server.core.leases import Periodic
from server.prescriptions import socket
from server.prescriptions.models import Prescription
from server.prescriptions.routes import routes
from server.prescriptions.service import background, periodic_jobs

if TYPE_CHECKING:
    from server.container import Services
    from server.realtime.gateway import Gateway


def _socket(gateway: Gateway, services: Services) -> None:
    socket.register(gateway, services.prescriptions)


def _jobs(services: Services) -> Iterable[Periodic]:
    return periodic_jobs(services.prescriptions, services.settings.prescription_sweep_seconds)


def _lifespan(services: Services) -> Iterable[CleanupContext]:
    yield background(services.prescriptions, services.settings.prescription_sweep_seconds)


capability = Capability(
    name="prescriptions",
    routes=(routes,),
    socket=_socket,
    jobs=_jobs,
    lifespan=_lifespan,
    patient_resolvers={"prescription_id": (Prescription.id, Prescription.patient_id)},
)
