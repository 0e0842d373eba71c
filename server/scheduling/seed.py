"""Demo schedules: weekly templates for some tertiary departments and two weeks of slots.

QDSL 心内科 is left without a schedule on purpose: its desk publishes one in the demos
(and the tests), starting from an empty calendar.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from server.container import Services
from server.core.auth import Requester
from server.core.db import utcnow
from server.scheduling import schemas
from server.scheduling.models import ScheduleTemplate

# (institution code, department, desk username)
SCHEDULED = [
    ("QDFY", "心内科", "dr_zhao"),
    ("QDFY", "肾内科", "dr_sun"),
    ("QDSL", "内分泌科", "dr_wang"),
]
DAYS = 14


def weekly(department_id: int) -> list[schemas.TemplateCreate]:
    """Mornings on weekdays in person; Wednesday afternoons remote consults."""
    mornings = [
        schemas.TemplateCreate(department_id=department_id, weekday=day, start_time="08:00",
                               slot_minutes=30, slot_count=6, capacity=4, visit_type="in_person")
        for day in range(5)
    ]  # fmt: skip
    remote = schemas.TemplateCreate(department_id=department_id, weekday=2, start_time="14:00",
                                    slot_minutes=30, slot_count=4, capacity=1, visit_type="remote")  # fmt: skip
    return [*mornings, remote]


async def seed_scheduling(services: Services) -> int:
    """Publish the demo schedules (skipping departments that have one); returns slots created."""
    created = 0
    today = utcnow().date()
    for code, name, username in SCHEDULED:
        async with services.db.read() as session:
            department_id = await services.directory.department_id_named(session, code, name)
            desk_id = await services.directory.user_id_by_username(session, username)
            desk = await services.directory.user(session, desk_id) if desk_id else None
            if department_id is None or desk is None:
                continue
            if await session.scalar(
                select(ScheduleTemplate.id).where(ScheduleTemplate.department_id == department_id)
            ):
                continue
        actor = Requester(desk.id, desk.role, "seed", institution_id=desk.institution_id)
        for template in weekly(department_id):
            await services.scheduling.create_template(actor, template)
        result = await services.scheduling.generate_slots(
            actor,
            schemas.GenerateSlots(
                department_id=department_id,
                from_date=today,
                to_date=today + timedelta(days=DAYS - 1),
            ),
        )
        created += result.created
    return created
