"""The escalation job: one node of the cluster runs each round (a lease, server/core/leases.py)."""

from __future__ import annotations

import logging

from server.consults.service import ConsultsService
from server.core.leases import Jobs

logger = logging.getLogger(__name__)


def register_escalation(jobs: Jobs, consults: ConsultsService, interval: float) -> None:
    """Escalate overdue requests every ``interval`` seconds (0: no job)."""
    if interval <= 0:
        return

    async def escalate(tick: int) -> None:
        escalated = await consults.escalation.escalate_overdue()
        if escalated:
            logger.info("consults escalated", extra={"consult_ids": escalated})

    jobs.every("consults.escalate", interval, escalate)
