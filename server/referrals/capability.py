"""Referrals as a capability: routes, the expiry job, and the patient of a refusal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.core.capability import Capability
from server.core.leases import Periodic
from server.referrals.models import Referral
from server.referrals.routes import routes

if TYPE_CHECKING:
    from server.container import Services


def _jobs(services: Services) -> Iterable[Periodic]:
    return services.referrals.periodic_jobs()


capability = Capability(
    name="referrals",
    routes=(routes,),
    jobs=_jobs,
    patient_resolvers={"referral_id": (Referral.id, Referral.patient_id)},
)
