"""A follow-up visit is kept as the rules ask: dates on the visit (15 years for the record,
3 years for chat and video), and its room's recordings survive a shorter recording
retention that an operator set, until their 3 years are over."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from server.container import Services
from server.core.db import utcnow
from server.media.models import Recording
from tests.helpers import Api
from tests.visits.conftest import Case
from tests.visits.test_visits import opened


async def recording(network: Services, consult_id: int, patient_id: int, days_ago: int) -> int:
    async with network.db.transaction() as tx:
        row = Recording(
            consult_id=consult_id,
            patient_id=patient_id,
            started_by=1,
            state="finished",
            file_name=f"visit-{consult_id}-{days_ago}.webm",
            started_at=utcnow() - timedelta(days=days_ago),
        )
        tx.session.add(row)
        await tx.session.flush()
        return row.id


async def test_a_visits_recordings_are_kept_three_years(
    backend: str, api: Api, case: Case, network: Services
) -> None:
    visit = await opened(api, case)
    assert visit["record_retain_until"][:4] == str(int(visit["created_at"][:4]) + 15)
    assert visit["media_retain_until"][:4] == str(int(visit["created_at"][:4]) + 3)
    young = await recording(network, visit["consult_id"], case.patient_id, days_ago=400)
    old = await recording(network, visit["consult_id"], case.patient_id, days_ago=3 * 366 + 1)
    # An operator keeps recordings 30 days: a visit's stay 3 years all the same.
    service = network.recording
    service.settings = service.settings.model_copy(update={"recording_retention_days": 30})
    assert await service.purge(dry_run=True) == [old]
    assert await service.purge() == [old]
    async with network.db.read() as session:
        states = {r.id: r.state for r in await session.scalars(select(Recording))}
    assert states[young] == "finished" and states[old] == "purged"
