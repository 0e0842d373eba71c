"""Demo fee schedules (integer fen): every hospital and community clinic of the network.

A tertiary hospital's registration (挂号) is 25 元, an online follow-up visit 30 元, a remote
consult 200 元, a prescription's review 8 元; a community clinic charges less. QDFY 心内科
has a department fee of its own (an expert clinic, 30 元), to show the per-department line.
"""

from __future__ import annotations

from server.container import Services
from server.payments import schemas

FEES: dict[str, dict[str, int]] = {
    "tertiary": {"appointment": 2500, "visit": 3000, "consult": 20000, "prescription": 800},
    "community": {"appointment": 1000, "visit": 1500, "consult": 10000, "prescription": 500},
}
# (institution code, department name, kind) → fen
DEPARTMENT_FEES = {("QDFY", "心内科", "appointment"): 3000}


async def seed_payments(services: Services) -> int:
    """Set the demo fees where an institution has none yet; returns the schedules set."""
    done = 0
    for institution in await services.identity.list_institutions():
        fees = FEES.get(institution.kind)
        if fees is None:
            continue
        current = await services.payments.get_fees(institution.id)
        if current.items:
            continue
        items = [schemas.FeeItem(kind=kind, amount_fen=fen) for kind, fen in fees.items()]
        for department in institution.departments:
            fen = DEPARTMENT_FEES.get((institution.code, department.name, "appointment"))
            if fen is not None:
                items.append(
                    schemas.FeeItem(kind="appointment", department_id=department.id, amount_fen=fen)
                )
        await services.payments.set_fees(None, institution.id, schemas.FeeSchedule(items=items))
        done += 1
    return done
