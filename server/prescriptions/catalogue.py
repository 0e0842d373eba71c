"""The drug catalogue: loaded from a JSON file into the database, read per prescription.

File format (see ``data/drug_catalogue.json``, the demo catalogue)::

    {"drugs": [{"code", "name", "class", "strength", "dose_unit", "max_daily_dose",
                "restricted": null | "narcotic" | "psychotropic" | "toxic",
                "allergens": [...], ...}],
     "interactions": [{"a", "b", "severity": "minor|moderate|severe", "description"}],
     "chronic_conditions": [{"code": "I10", "display": "原发性高血压"}]}

Loading replaces the catalogue in one transaction, so readers see the old one
or the new one, never half of each.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import delete, select

from server.core.db import Database
from server.prescriptions.models import ChronicCondition, Drug, DrugInteraction

DEMO_CATALOGUE = Path(__file__).resolve().parent / "data" / "drug_catalogue.json"
RESTRICTED = ("narcotic", "psychotropic", "toxic")


class CatalogueError(ValueError):
    pass


class DrugSpec(BaseModel):
    code: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=100)
    drug_class: str = Field(alias="class", min_length=1, max_length=64)
    strength: str = Field(min_length=1, max_length=32)
    dose_unit: str = Field(min_length=1, max_length=8)
    max_daily_dose: float = Field(gt=0)
    restricted: Literal["narcotic", "psychotropic", "toxic"] | None = None
    allergens: list[str] = []


class InteractionSpec(BaseModel):
    a: str
    b: str
    severity: Literal["minor", "moderate", "severe"]
    description: str = Field(max_length=500)


class ConditionSpec(BaseModel):
    code: str = Field(pattern=r"^[A-Z]\d{2}$")
    display: str


class CatalogueFile(BaseModel):
    drugs: list[DrugSpec] = Field(min_length=1)
    interactions: list[InteractionSpec] = []
    chronic_conditions: list[ConditionSpec] = []


@dataclass(frozen=True)
class DrugInfo:
    code: str
    name: str
    drug_class: str
    strength: str
    dose_unit: str
    max_daily_dose: float
    restricted: str | None
    allergens: tuple[str, ...]


@dataclass(frozen=True)
class Interaction:
    a: str
    b: str
    severity: str
    description: str


def _info(row: Drug) -> DrugInfo:
    return DrugInfo(
        code=row.code,
        name=row.name,
        drug_class=row.drug_class,
        strength=row.strength,
        dose_unit=row.dose_unit,
        max_daily_dose=row.max_daily_dose,
        restricted=row.restricted,
        allergens=tuple(row.data.get("allergens", [])),
    )


def parse_catalogue(raw: Any) -> CatalogueFile:
    try:
        catalogue = CatalogueFile.model_validate(raw)
    except ValidationError as exc:
        raise CatalogueError(f"not a drug catalogue: {exc.errors()[0]['msg']}") from None
    codes = {d.code for d in catalogue.drugs}
    if len(codes) != len(catalogue.drugs):
        raise CatalogueError("a drug code appears twice")
    for pair in catalogue.interactions:
        unknown = {pair.a, pair.b} - codes
        if unknown:
            raise CatalogueError(f"interaction names unknown drugs: {sorted(unknown)}")
    return catalogue


@dataclass(frozen=True)
class Snapshot:
    drugs: dict[str, DrugInfo]
    interactions: dict[tuple[str, str], Interaction]
    chronic: frozenset[str]


class Catalogue:
    def __init__(self, db: Database, ttl: float = 60.0) -> None:
        self.db = db
        self.ttl = ttl
        self._snapshot: Snapshot | None = None
        self._read_at = 0.0

    async def load_file(self, path: Path) -> dict[str, int]:
        try:
            raw = json.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogueError(f"{path}: {exc}") from None
        return await self.load(parse_catalogue(raw))

    async def load(self, catalogue: CatalogueFile) -> dict[str, int]:
        async with self.db.transaction() as tx:
            for table in (DrugInteraction, Drug, ChronicCondition):
                await tx.session.execute(delete(table))
            for spec in catalogue.drugs:
                tx.session.add(
                    Drug(
                        code=spec.code,
                        name=spec.name,
                        drug_class=spec.drug_class,
                        strength=spec.strength,
                        dose_unit=spec.dose_unit,
                        max_daily_dose=spec.max_daily_dose,
                        restricted=spec.restricted,
                        data=spec.model_dump(mode="json", by_alias=True),
                    )
                )
            pairs = {}
            for pair in catalogue.interactions:
                a, b = sorted((pair.a, pair.b))
                pairs[(a, b)] = DrugInteraction(
                    drug_a=a, drug_b=b, severity=pair.severity, description=pair.description
                )
            tx.session.add_all(pairs.values())
            tx.session.add_all(
                ChronicCondition(code=c.code, display=c.display)
                for c in catalogue.chronic_conditions
            )
        self._snapshot = None
        return {
            "drugs": len(catalogue.drugs),
            "interactions": len(pairs),
            "chronic_conditions": len(catalogue.chronic_conditions),
        }

    async def is_empty(self) -> bool:
        return not (await self.snapshot()).drugs

    async def snapshot(self) -> Snapshot:
        """The catalogue in memory, re-read at most every ``ttl`` seconds (another node may
        have loaded a new one) and at once after a load on this node."""
        now = time.monotonic()
        if self._snapshot is None or now - self._read_at > self.ttl:
            async with self.db.read() as session:
                drugs = {row.code: _info(row) for row in await session.scalars(select(Drug))}
                pairs = {
                    (r.drug_a, r.drug_b): Interaction(r.drug_a, r.drug_b, r.severity, r.description)
                    for r in await session.scalars(select(DrugInteraction))
                }
                chronic = frozenset(await session.scalars(select(ChronicCondition.code)))
            self._snapshot = Snapshot(drugs, pairs, chronic)
            self._read_at = now
        return self._snapshot

    async def drugs(self, codes: set[str]) -> dict[str, DrugInfo]:
        known = (await self.snapshot()).drugs
        return {code: known[code] for code in codes if code in known}

    async def resolve(self, codes: set[str], labels: list[str]) -> set[str]:
        """Catalogue codes of medication known by our code, or by a label naming the drug
        (record entries from other institutions often carry their own drug codes)."""
        known = (await self.snapshot()).drugs
        found = {code for code in codes if code in known}
        for label in filter(None, labels):
            found |= {drug.code for drug in known.values() if drug.name in label}
        return found

    async def interactions(self, codes: set[str]) -> list[Interaction]:
        """Pairs among ``codes`` (both drugs in the set)."""
        pairs = (await self.snapshot()).interactions
        ordered = sorted(codes)
        return [
            pairs[(a, b)]
            for i, a in enumerate(ordered)
            for b in ordered[i + 1 :]
            if (a, b) in pairs
        ]

    async def is_chronic(self, icd10: str) -> bool:
        return icd10[:3] in (await self.snapshot()).chronic
