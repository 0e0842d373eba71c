"""Demo schedules: weekly templates for some tertiary departments and two weeks of slots,
each with its doctor; and every demo department's booking profile (specialty, place).

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
from server.scheduling.models import DepartmentProfile, ScheduleTemplate
from server.scheduling.specialties import DEPARTMENT_NAMES

# (institution code, department, desk username); the desk is the department's doctor too.
SCHEDULED = [
    ("QDFY", "心内科", "dr_zhao"),
    ("QDFY", "肾内科", "dr_sun"),
    ("QDSL", "内分泌科", "dr_wang"),
]
DAYS = 14

# (institution code, department) → (building, floor, room, note)
PLACES: dict[tuple[str, str], tuple[str, str, str, str]] = {
    ("QDSL", "心内科"): ("门诊楼", "3层", "301–306诊室", "请携带身份证，提前15分钟到3层分诊台签到"),
    ("QDSL", "内分泌科"): ("门诊楼", "4层", "402诊室", "复诊请带近期血糖记录；空腹抽血请勿进食"),
    ("QDSL", "神经内科"): ("门诊楼", "5层", "501诊室", "请携带身份证，提前15分钟签到"),
    ("QDSL", "呼吸内科"): ("门诊楼", "2层", "210诊室", "请佩戴口罩，提前15分钟签到"),
    ("QDFY", "心内科"): ("东院区门诊楼", "2层", "B区", "请携带身份证，提前15分钟到B区分诊台签到"),
    ("QDFY", "肾内科"): ("东院区门诊楼", "4层", "C区", "复诊请带近期肾功能化验单"),
    ("QDFY", "骨科"): ("西院区外科楼", "1层", "108诊室", "请携带既往影像资料"),
    ("QDFY", "儿科"): ("东院区儿科楼", "1层", "儿科诊区", "6岁以下儿童须监护人陪同"),
}
DEFAULT_PLACE = ("社区卫生服务中心", "1层", "全科诊室", "请携带身份证或社保卡")


def weekly(department_id: int, practitioner_id: int | None = None) -> list[schemas.TemplateCreate]:
    """Mornings on weekdays in person; Wednesday afternoons remote consults."""
    mornings = [
        schemas.TemplateCreate(department_id=department_id, practitioner_id=practitioner_id,
                               weekday=day, start_time="08:00", slot_minutes=30, slot_count=6,
                               capacity=4, visit_type="in_person")
        for day in range(5)
    ]  # fmt: skip
    remote = schemas.TemplateCreate(department_id=department_id, practitioner_id=practitioner_id,
                                    weekday=2, start_time="14:00", slot_minutes=30, slot_count=4,
                                    capacity=1, visit_type="remote")  # fmt: skip
    return [*mornings, remote]


async def seed_department_profiles(services: Services) -> int:
    """Each demo department's profile: its specialty and place (skipping those that have one)."""
    created = 0
    async with services.db.transaction() as tx:
        departments = await services.directory.departments_of(tx.session)
        institutions = await services.directory.institutions(
            tx.session, {d.institution_id for d in departments}
        )
        have = set(await tx.session.scalars(select(DepartmentProfile.department_id)))
        for department in departments:
            specialty = DEPARTMENT_NAMES.get(department.name)
            if department.id in have or specialty is None:
                continue
            code = institutions[department.institution_id].code
            building, floor, room, note = PLACES.get((code, department.name), DEFAULT_PLACE)
            tx.session.add(
                DepartmentProfile(department_id=department.id,
                                  institution_id=department.institution_id, specialty=specialty,
                                  building=building, floor=floor, room=room, note=note,
                                  description=f"{institutions[department.institution_id].name}"
                                  f"{department.name}门诊")
            )  # fmt: skip
            created += 1
    return created


async def seed_scheduling(services: Services) -> int:
    """Publish the demo schedules (skipping departments that have one); returns slots created."""
    await seed_department_profiles(services)
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
        for template in weekly(department_id, desk.id):
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
