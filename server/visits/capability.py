"""Follow-up video visits (互联网复诊) as a capability: their routes; the room is a consult's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.core.capability import Capability
from server.core.leases import Periodic
from server.visits.models import Visit
from server.visits.routes import routes

if TYPE_CHECKING:
    from server.container import Services


def _jobs(services: Services) -> Iterable[Periodic]:
    return services.visits.periodic_jobs()


capability = Capability(
    name="visits",
    routes=(routes,),
    jobs=_jobs,
    patient_resolvers={"visit_id": (Visit.id, Visit.patient_id)},
)
