"""The demo network: what ``yihao seed-demo`` creates (idempotent: it skips what exists).

Two tertiary hospitals with departments and specialists, three community
health service centres with community doctors, six pharmacies (one per urban
district; two with pharmacists), patients with valid resident IDs. Every demo account has the
password :data:`DEMO_PASSWORD`; the README lists the logins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from server.container import Services
from server.core.ids import make_resident_id
from server.identity import schemas
from server.payments.seed import seed_payments
from server.prescriptions.seed import seed_prescriptions
from server.scheduling.seed import seed_scheduling

DEMO_PASSWORD = "Yihao@2026"

INSTITUTIONS: list[dict[str, Any]] = [
    {"code": "QDSL", "name": "青岛市立医院", "kind": "tertiary", "region": "370202",
     "departments": ["心内科", "内分泌科", "神经内科", "呼吸内科"]},
    {"code": "QDFY", "name": "青岛大学附属医院", "kind": "tertiary", "region": "370202",
     "departments": ["心内科", "肾内科", "骨科", "儿科"]},
    {"code": "SNBDH", "name": "市南区八大湖街道社区卫生服务中心", "kind": "community", "region": "370202",
     "departments": ["全科"]},
    {"code": "SBLYL", "name": "市北区辽源路街道社区卫生服务中心", "kind": "community", "region": "370203",
     "departments": ["全科"]},
    {"code": "LSZH", "name": "崂山区中韩街道社区卫生服务中心", "kind": "community", "region": "370212",
     "departments": ["全科"]},
    {"code": "HCYF", "name": "海川大药房（香港中路店）", "kind": "pharmacy", "region": "370202",
     "departments": []},
    {"code": "TATYF", "name": "同安堂药房（辽宁路店）", "kind": "pharmacy", "region": "370203",
     "departments": []},
    # issue 19 (rxpick): a pharmacy in every urban district, for the patient's choice
    {"code": "LSJM", "name": "崂山健民大药房（海尔路店）", "kind": "pharmacy", "region": "370212",
     "departments": []},
    {"code": "LCRH", "name": "李沧仁和药房（书院路店）", "kind": "pharmacy", "region": "370213",
     "departments": []},
    {"code": "CYKN", "name": "城阳康宁药房（正阳路店）", "kind": "pharmacy", "region": "370214",
     "departments": []},
    {"code": "HDHM", "name": "黄岛惠民药房（长江中路店）", "kind": "pharmacy", "region": "370211",
     "departments": []},
]  # fmt: skip

PRACTITIONERS: list[dict[str, Any]] = [
    {"username": "admin", "role": "platform_admin", "name": "平台管理员"},
    {"username": "dr_li", "role": "specialist", "name": "李明", "institution": "QDSL",
     "department": "心内科", "title": "主任医师"},
    {"username": "dr_wang", "role": "specialist", "name": "王芳", "institution": "QDSL",
     "department": "内分泌科", "title": "副主任医师"},
    {"username": "dr_zhao", "role": "specialist", "name": "赵强", "institution": "QDFY",
     "department": "心内科", "title": "主治医师"},
    {"username": "dr_sun", "role": "specialist", "name": "孙丽", "institution": "QDFY",
     "department": "肾内科", "title": "主任医师"},
    {"username": "gp_zhang", "role": "gp", "name": "张伟", "institution": "SNBDH",
     "department": "全科", "title": "主治医师"},
    {"username": "gp_liu", "role": "gp", "name": "刘洋", "institution": "SBLYL",
     "department": "全科", "title": "主治医师"},
    {"username": "gp_chen", "role": "gp", "name": "陈静", "institution": "LSZH",
     "department": "全科", "title": "住院医师"},
    {"username": "nurse_he", "role": "nurse", "name": "何雪", "institution": "QDSL",
     "department": "心内科", "title": "主管护师"},
    {"username": "pharmacist_chen", "role": "pharmacist", "name": "陈红", "institution": "HCYF",
     "title": "主管药师"},
    {"username": "pharmacist_zhou", "role": "pharmacist", "name": "周敏", "institution": "TATYF",
     "title": "药师"},
    {"username": "admin_qdsl", "role": "institution_admin", "name": "高峰", "institution": "QDSL"},
]  # fmt: skip


@dataclass(frozen=True)
class DemoPatient:
    username: str
    name: str
    region: str
    birth: date
    sequence: int  # odd: male, even: female
    phone: str

    @property
    def resident_id(self) -> str:
        return make_resident_id(self.region, self.birth, self.sequence)


PATIENTS = [
    DemoPatient("patient_wang", "王建国", "370202", date(1955, 3, 12), 31, "13805320001"),
    DemoPatient("patient_liu", "刘秀英", "370203", date(1962, 8, 25), 42, "13805320002"),
    DemoPatient("patient_zhao", "赵文博", "370212", date(1978, 11, 3), 15, "13805320003"),
    DemoPatient("patient_sun", "孙美玲", "370202", date(1990, 6, 18), 26, "13805320004"),
]


async def seed_demo(services: Services) -> dict[str, int]:
    created = {"institutions": 0, "users": 0}
    existing = {institution.code for institution in await services.identity.list_institutions()}
    for spec in INSTITUTIONS:
        if spec["code"] in existing:
            continue
        data = schemas.InstitutionCreate(
            code=spec["code"], name=spec["name"], kind=spec["kind"], region=spec["region"]
        )
        institution = await services.identity.create_institution(None, data)
        for department in spec["departments"]:
            await services.identity.create_department(
                None, institution.id, schemas.DepartmentCreate(name=department)
            )
        created["institutions"] += 1
    accounts = [dict(spec) for spec in PRACTITIONERS] + [
        {"username": p.username, "role": "patient", "name": p.name,
         "resident_id": p.resident_id, "phone": p.phone}
        for p in PATIENTS
    ]  # fmt: skip
    async with services.db.read() as session:
        usernames = {
            str(spec["username"])
            for spec in accounts
            if await services.directory.user_id_by_username(session, str(spec["username"]))
            is not None
        }
    for spec in accounts:
        if spec["username"] in usernames:
            continue
        await services.identity.create_user(
            None, schemas.UserCreate(password=DEMO_PASSWORD, **spec)
        )
        created["users"] += 1
    # The demo patients' accounts were checked in person (实名认证): they may see doctors
    # online (follow-up video visits, server/visits).
    async with services.db.read() as session:
        verify = []
        for person in PATIENTS:
            user_id = await services.directory.user_id_by_username(session, person.username)
            user = await services.directory.user(session, user_id) if user_id else None
            if user is not None and user.patient_id is not None:
                verify.append(user.patient_id)
    for patient_id in verify:
        await services.patients.set_verified(None, patient_id, True)
    await seed_prescriptions(services)
    from server.records.seed import seed_records  # imports this module's PATIENTS

    await seed_records(services)
    await seed_scheduling(services)
    await seed_payments(services)
    return created
