"""E-prescriptions (电子处方流转): the capability's parts, built together.

- :mod:`~server.prescriptions.prescribing`: the doctor checks, signs, revises, cancels;
- :mod:`~server.prescriptions.delivery`: routing to the pharmacy, receipts, pushing again;
- :mod:`~server.prescriptions.review`: the pharmacist's review, ready for pickup, dispensing;
- :mod:`~server.prescriptions.pharmacies`: the pharmacies a patient chooses among;
- :mod:`~server.prescriptions.views`: the answers, the reads, signature verification;
- :mod:`~server.prescriptions.lifecycle`: the steps and what every step writes, expiry.

Routes and socket handlers call the part that does the job (``services.prescriptions
.prescribing.create``); this module builds the parts and the background jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from server.config import Settings
from server.core.audit import AuditLog
from server.core.db import Database
from server.core.events import Events
from server.core.leases import Periodic
from server.core.signing import Signer
from server.prescriptions.catalogue import Catalogue
from server.prescriptions.delivery import Deliveries, Push
from server.prescriptions.lifecycle import PrescriptionSteps
from server.prescriptions.pharmacies import Pharmacies
from server.prescriptions.prescribing import Prescribing
from server.prescriptions.record import PatientRecord
from server.prescriptions.review import PharmacyReview
from server.prescriptions.views import Views

if TYPE_CHECKING:
    from server.inbox.service import InboxService

logger = logging.getLogger(__name__)


class PrescriptionService:
    """The parts of the capability, sharing one lifecycle and one record adapter."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: AuditLog,
        events: Events,
        signer: Signer,
        catalogue: Catalogue,
        record: PatientRecord,
        push: Push,
        inbox: InboxService,
    ) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.record = record
        self.steps = PrescriptionSteps(db, audit, events, record)
        self.views = Views(db, audit, signer, record, self.steps)
        self.delivery = Deliveries(db, audit, events, record, self.steps, self.views, push)
        self.prescribing = Prescribing(
            db, signer, catalogue, record, self.steps, self.views, self.delivery
        )
        self.review = PharmacyReview(db, self.steps, self.views, inbox, record.directory)
        self.pharmacies = Pharmacies(db, record.directory)
        # What the command line and the jobs call.
        self.expire_due = self.steps.expire_due
        self.relay_pending = self.delivery.relay_pending
        self.verify_all = self.views.verify_all


def periodic_jobs(service: PrescriptionService, interval: float) -> list[Periodic]:
    """Expiry and the outbox relay, each round run by one node of the cluster (0: none).

    The relay is a safety net, not the delivery path: a delivery is pushed by the
    node that committed it, right after the commit, and a push from any node
    reaches every node's sockets through Redis. Re-pushing what is still
    unacknowledged from every node would only multiply the copies, so one node
    relays per round (see docs/deploy.md, "Background jobs").
    """
    if interval <= 0:
        return []

    async def expire(tick: int) -> None:
        expired = await service.expire_due()
        if expired:
            logger.info("prescriptions expired", extra={"count": expired})

    async def relay(tick: int) -> None:
        # Older than a round: what the commit's own push (or an earlier relay) did not settle.
        await service.relay_pending(interval)

    return [
        Periodic("prescriptions.expire", interval, expire),
        Periodic("prescriptions.relay", interval, relay),
    ]


def background(service: PrescriptionService, interval: float) -> Any:
    """cleanup_ctx: at this node's start, relay what was left unacknowledged (once).

    A node that crashed between a commit and its push comes back here; the
    periodic rounds are lease jobs (:func:`periodic_jobs`).
    """

    async def ctx(app: Any) -> AsyncIterator[None]:
        async def once() -> None:
            try:
                await service.relay_pending(0.0)
            except Exception:
                logger.exception("prescription relay at start failed")

        task = asyncio.create_task(once()) if interval > 0 else None
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return ctx
