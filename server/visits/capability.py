"""Follow-up video visits (互联网复诊) as a capability: their routes; the room is a consult's."""

from __future__ import annotations

from server.core.capability import Capability
from server.visits.models import Visit
from server.visits.routes import routes

capability = Capability(
    name="visits",
    routes=(routes,),
    patient_resolvers={"visit_id": (Visit.id, Visit.patient_id)},
)
