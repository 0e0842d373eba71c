"""Realtime edge of prescriptions: the pharmacy acknowledges receipt and asks what is pending."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from server.core.api import Strict
from server.core.auth import Requester
from server.prescriptions.schemas import AckRequest, Receipt
from server.prescriptions.service import PrescriptionService
from server.realtime.gateway import Gateway


class PendingRequest(Strict):
    pass


class PendingEvents(BaseModel):
    """The answer to ``prescription.pending``: deliveries not yet acknowledged, in order."""

    events: list[dict[str, Any]]


def register(gateway: Gateway, service: PrescriptionService) -> None:
    async def ack(sid: str, requester: Requester, data: AckRequest) -> Receipt:
        return await service.delivery.acknowledge(requester, data.prescription_id, data.version)

    async def pending(sid: str, requester: Requester, data: PendingRequest) -> PendingEvents:
        return PendingEvents(events=await service.delivery.pending(requester))

    gateway.on("prescription.ack", AckRequest, ack)
    gateway.on("prescription.pending", PendingRequest, pending)
