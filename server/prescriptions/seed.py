"""Demo data of prescriptions: the demo drug catalogue (loaded once)."""

from __future__ import annotations

from server.container import Services
from server.prescriptions.catalogue import DEMO_CATALOGUE


async def seed_prescriptions(services: Services) -> dict[str, int]:
    if not await services.prescriptions.catalogue.is_empty():
        return {}
    return await services.prescriptions.catalogue.load_file(DEMO_CATALOGUE)
