"""Scheduling as a capability: schedules, slots, appointments and booking over REST, and
booking's reminder and no-show jobs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.core.capability import Capability
from server.core.leases import Periodic
from server.scheduling.booking_routes import routes as booking_routes
from server.scheduling.routes import routes

if TYPE_CHECKING:
    from server.container import Services


def _jobs(services: Services) -> Iterable[Periodic]:
    return services.scheduling.booking.periodic_jobs()


capability = Capability(name="scheduling", routes=(routes, booking_routes), jobs=_jobs)
