"""Payments as a capability: its routes, the reconciliation job, the sandbox's lifespan."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.core.capability import Capability, CleanupContext
from server.core.leases import Periodic
from server.payments.routes import routes

if TYPE_CHECKING:
    from server.container import Services


def _jobs(services: Services) -> Iterable[Periodic]:
    every = services.settings.payments_reconcile_interval_seconds
    if every:
        yield Periodic(
            "payments.reconcile_pending", every, services.payments.reconcile_pending_tick
        )


def _lifespan(services: Services) -> Iterable[CleanupContext]:
    # Notifications still waiting to be sent are dropped at shutdown (reconciliation
    # records their payments).
    if services.payments.sandbox is not None:
        yield services.payments.sandbox.lifespan


capability = Capability(name="payments", routes=(routes,), jobs=_jobs, lifespan=_lifespan)
