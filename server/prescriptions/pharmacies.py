"""The network's pharmacies as a patient chooses among them: where, when open, how near.

"Distance" is by district (区): the patient's district (given in the query, or else the
one of their registered address, the resident ID's address code) first, then the
districts next to it, then the rest. :data:`NEIGHBOURS` is the small adjacency table of
Qingdao's urban districts (sharing a border, or joined by the Jiaozhou Bay tunnel or
bridge). Opening hours are weekly, in China's local time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.auth import Requester
from server.core.db import Database
from server.core.roles import Role
from server.identity.directory import Directory
from server.prescriptions import schemas
from server.prescriptions.models import PharmacyProfile

CHINA = timezone(timedelta(hours=8))
PHARMACY = "pharmacy"

# Region code (GB/T 2260) -> district name.
DISTRICTS: dict[str, str] = {
    "370202": "市南区",
    "370203": "市北区",
    "370211": "黄岛区",
    "370212": "崂山区",
    "370213": "李沧区",
    "370214": "城阳区",
}
CODES = {name: code for code, name in DISTRICTS.items()}
_EDGES = (
    ("370202", "370203"),  # 市南 – 市北
    ("370202", "370212"),  # 市南 – 崂山
    ("370202", "370211"),  # 市南 – 黄岛 (胶州湾隧道)
    ("370203", "370212"),  # 市北 – 崂山
    ("370203", "370213"),  # 市北 – 李沧
    ("370213", "370212"),  # 李沧 – 崂山
    ("370213", "370214"),  # 李沧 – 城阳
    ("370212", "370214"),  # 崂山 – 城阳
    ("370214", "370211"),  # 城阳 – 黄岛 (胶州湾大桥)
)
NEIGHBOURS: dict[str, frozenset[str]] = {
    code: frozenset({b for a, b in _EDGES if a == code} | {a for a, b in _EDGES if b == code})
    for code in DISTRICTS
}
Distance = Literal["same_district", "neighbouring", "other"]
RANK: dict[str, int] = {"same_district": 0, "neighbouring": 1, "other": 2}


def distance(home: str, district: str) -> Distance:
    if district == home:
        return "same_district"
    if district in NEIGHBOURS.get(home, frozenset()):
        return "neighbouring"
    return "other"


def is_open(hours: Iterable[dict[str, Any]], at: datetime) -> bool:
    """Open at ``at`` (any time zone) by weekly ``hours`` in China's local time."""
    local = at.astimezone(CHINA)
    now = local.strftime("%H:%M")
    weekday = local.isoweekday()
    return any(weekday in span["days"] and span["opens"] <= now < span["closes"] for span in hours)


@dataclass(frozen=True)
class Home:
    code: str | None
    source: Literal["query", "profile"] | None


class Pharmacies:
    """The pharmacy list (``GET /api/v1/pharmacies``) and the profiles' seed."""

    def __init__(self, db: Database, directory: Directory) -> None:
        self.db = db
        self.directory = directory

    async def home(self, session: AsyncSession, requester: Requester, district: str | None) -> Home:
        if district is not None:
            return Home(CODES[district], "query")
        if requester.role == Role.PATIENT and requester.patient_id is not None:
            patient = await self.directory.patient(session, requester.patient_id)
            if patient is not None and patient.resident_id[:6] in DISTRICTS:
                return Home(patient.resident_id[:6], "profile")
        return Home(None, None)

    async def listing(
        self,
        requester: Requester,
        query: schemas.PharmacyQuery,
        *,
        now: datetime | None = None,
    ) -> schemas.PharmacyList:
        at = now or datetime.now(CHINA)
        async with self.db.read() as session:
            home = await self.home(session, requester, query.district)
            ids = await self.directory.institution_ids_of_kind(session, PHARMACY)
            institutions = await self.directory.institutions(session, ids)
            profiles = {
                p.institution_id: p
                for p in await session.scalars(
                    select(PharmacyProfile).where(PharmacyProfile.institution_id.in_(ids))
                )
            }
        items = []
        for institution in institutions.values():
            profile = profiles.get(institution.id)
            code = profile.district if profile else institution.region
            hours = profile.hours if profile else []
            open_now = is_open(hours, at)
            if query.open_now and not open_now:
                continue
            items.append(
                schemas.PharmacyOut(
                    id=institution.id,
                    code=institution.code,
                    name=institution.name,
                    district=DISTRICTS.get(code or ""),
                    district_code=code,
                    address=profile.address if profile else None,
                    phone=profile.phone if profile else None,
                    hours=[schemas.OpeningHours.model_validate(h) for h in hours],
                    open_now=open_now,
                    distance=distance(home.code, code or "") if home.code else None,
                )
            )
        items.sort(key=lambda p: (RANK.get(p.distance or "", 0), p.district_code or "", p.id))
        return schemas.PharmacyList(
            items=items,
            district=DISTRICTS[home.code] if home.code else None,
            district_source=home.source,
        )

    async def set_profile(
        self,
        session: AsyncSession,
        institution_id: int,
        *,
        district: str,
        address: str,
        phone: str | None,
        hours: list[dict[str, Any]],
    ) -> bool:
        """Add a pharmacy's profile once (the demo seed); False when it has one."""
        if await session.get(PharmacyProfile, institution_id) is not None:
            return False
        session.add(
            PharmacyProfile(
                institution_id=institution_id,
                district=district,
                address=address,
                phone=phone,
                hours=hours,
            )
        )
        return True
