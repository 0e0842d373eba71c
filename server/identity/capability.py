"""Identity as a capability: accounts and logins, the patient index, earned care."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.core.capability import Capability
from server.core.leases import Periodic
from server.identity.care_routes import routes as care_routes
from server.identity.patient_routes import routes as patient_routes
from server.identity.routes import routes as identity_routes

if TYPE_CHECKING:
    from server.container import Services


def _jobs(services: Services) -> Iterable[Periodic]:
    # Idle logoff as a sweep, not only when a request shows up: an idle browser's socket
    # would otherwise stay open and keep receiving pushes.
    yield Periodic(
        "auth.idle_logoff",
        services.settings.session_check_seconds,
        services.auth.end_idle_sessions,
    )


capability = Capability(
    name="identity",
    routes=(identity_routes, patient_routes, care_routes),
    jobs=_jobs,
)
