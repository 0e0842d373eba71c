"""Demo data of prescriptions: the demo drug catalogue and the demo pharmacies' profiles
(each loaded once)."""

from __future__ import annotations

from typing import Any

from server.container import Services
from server.prescriptions.catalogue import DEMO_CATALOGUE

EVERY_DAY = [1, 2, 3, 4, 5, 6, 7]
WEEKDAYS = [1, 2, 3, 4, 5]

# institution code -> profile (district is the region code; hours local, China)
DEMO_PHARMACIES: dict[str, dict[str, Any]] = {
    "HCYF": {"district": "370202", "address": "青岛市市南区香港中路 68 号",
             "phone": "0532-85900001",
             "hours": [{"days": EVERY_DAY, "opens": "08:00", "closes": "22:00"}]},
    "TATYF": {"district": "370203", "address": "青岛市市北区辽宁路 155 号",
              "phone": "0532-82800002",
              "hours": [{"days": EVERY_DAY, "opens": "08:30", "closes": "21:00"}]},
    "LSJM": {"district": "370212", "address": "青岛市崂山区海尔路 180 号",
             "phone": "0532-88900003",
             "hours": [{"days": EVERY_DAY, "opens": "00:00", "closes": "24:00"}]},
    "LCRH": {"district": "370213", "address": "青岛市李沧区书院路 92 号",
             "phone": "0532-87600004",
             "hours": [{"days": WEEKDAYS, "opens": "08:00", "closes": "20:00"},
                       {"days": [6, 7], "opens": "09:00", "closes": "18:00"}]},
    "CYKN": {"district": "370214", "address": "青岛市城阳区正阳路 210 号",
             "phone": "0532-87700005",
             "hours": [{"days": EVERY_DAY, "opens": "08:00", "closes": "21:00"}]},
    "HDHM": {"district": "370211", "address": "青岛市黄岛区长江中路 318 号",
             "phone": "0532-86800006",
             "hours": [{"days": WEEKDAYS, "opens": "08:00", "closes": "21:30"},
                       {"days": [6, 7], "opens": "08:30", "closes": "20:00"}]},
}  # fmt: skip


async def seed_pharmacies(services: Services) -> int:
    """The demo pharmacies' profiles; a pharmacy that has one keeps it. Returns how many."""
    codes = {i.code: i.id for i in await services.identity.list_institutions()}
    added = 0
    async with services.db.transaction() as tx:
        for code, profile in DEMO_PHARMACIES.items():
            if code in codes:
                added += await services.prescriptions.pharmacies.set_profile(
                    tx.session, codes[code], **profile
                )
    return added


async def seed_prescriptions(services: Services) -> dict[str, int]:
    await seed_pharmacies(services)
    if not await services.prescriptions.catalogue.is_empty():
        return {}
    return await services.prescriptions.catalogue.load_file(DEMO_CATALOGUE)
