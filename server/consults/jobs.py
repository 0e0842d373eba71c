"""The escalation job: one node of the cluster runs each round (a lease, server/core/leases.py)."""

from __future__ import annotations

import logging

from server.consults.service import ConsultsService
from server.core.leases import Periodic

logger = logging.getLogger(__name__)


def escalation_jobs(consults: ConsultsService, interval: float) -> list[Periodic]:
    """Escalate overdue requests every ``interval`` seconds (0: no job)."""
    if interval <= 0:
        return []

    async def escalate(tick: int) -> None:
        escalated = await consults.escalation.escalate_overdue()
        if escalated:
            logger.info("consults escalated", extra={"consult_ids": escalated})

    return [Periodic("consults.escalate", interval, escalate)]
