"""Realtime edge of prescriptions: the pharmacy acknowledges receipt and asks what is pending."""

from __future__ import annotations

from typing import Any

from server.core.api import Strict
from server.core.auth import Requester
from server.prescriptions.schemas import AckRequest
from server.prescriptions.service import PrescriptionService
from server.realtime.gateway import Gateway


class PendingRequest(Strict):
    pass


def register(gateway: Gateway, service: PrescriptionService) -> None:
    async def ack(sid: str, requester: Requester, data: AckRequest) -> dict[str, Any]:
        receipt = await service.delivery.acknowledge(requester, data.prescription_id, data.version)
        return receipt.model_dump()

    async def pending(sid: str, requester: Requester, data: PendingRequest) -> dict[str, Any]:
        return {"events": await service.delivery.pending(requester)}

    gateway.on("prescription.ack", AckRequest, ack)
    gateway.on("prescription.pending", PendingRequest, pending)
