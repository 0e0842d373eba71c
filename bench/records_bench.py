"""Benchmark: the clinical summary and $everything of a patient with a large shared record.

One patient with about 5,000 resources pushed by 10 institutions (problems,
lab results, vital signs, medications, allergies, encounters). Each workload is
measured through the service (access check and its audit entry included), beside
its floor: the raw SQL fetching the same rows through the same engine.

    .venv/bin/python bench/records_bench.py                       # SQLite, 5,000 resources
    .venv/bin/python bench/records_bench.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/records_bench.py --smoke               # tiny, for CI

With a PostgreSQL URL the benchmark creates a database of its own next to the
one named, and drops it at the end. Target: summary p95 ≤ 50 ms on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.app import create_app
from server.config import load_settings
from server.core.api import SERVICES
from server.core.auth import Requester
from server.core.checkpoints import generate_key_file
from server.core.ids import RESIDENT_ID_SYSTEM, make_resident_id
from server.identity import schemas
from server.identity.patients import local_identifier_system

SECRET = "bench-secret-key-that-is-long-enough-0123456789"
LABS = [("2345-7", "Glucose", 3.9, 6.1), ("4548-4", "HbA1c", 4.0, 6.0),
        ("2160-0", "Creatinine", 45.0, 84.0), ("2089-1", "LDL", None, 3.4),
        ("718-7", "Hemoglobin", 130.0, 175.0), ("6690-2", "WBC", 3.5, 9.5)]  # fmt: skip


def institution_bundle(
    code: str, index: int, resident_id: str, per_institution: int
) -> dict[str, Any]:
    """One institution's share of the record, as a transaction of ``per_institution`` entries."""
    patient_url = f"urn:uuid:bench-{code}-patient"
    entries: list[dict[str, Any]] = [{"fullUrl": patient_url, "resource": {
        "resourceType": "Patient", "id": f"{code}-p",
        "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": resident_id},
                       {"system": local_identifier_system(code, "mrn"), "value": f"{code}-1"}],
        "name": [{"text": "测试患者"}]}}]  # fmt: skip
    subject = {"reference": patient_url}
    start = date(2020, 1, 1)
    for n in range(per_institution - 1):
        day = (start + timedelta(days=(n * 7 + index) % 2000)).isoformat()
        kind = n % 20
        rid = f"{code}-{n}"
        if kind == 0:
            resource = {"resourceType": "Condition", "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active" if n % 40 == 0 else "resolved"}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10",
                                     "code": f"I{10 + n % 50}"}]},
                "subject": subject, "onsetDateTime": day}  # fmt: skip
        elif kind == 1:
            resource = {"resourceType": "MedicationRequest",
                        "status": "active" if n % 60 == 1 else "completed", "intent": "order",
                        "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc",
                                                                  "code": f"C08CA{n % 9:02d}"}]},
                        "subject": subject, "authoredOn": day}  # fmt: skip
        elif kind == 2 and n < 60:
            resource = {"resourceType": "AllergyIntolerance", "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "code": "active"}]}, "code": {"text": f"allergen {n}"}, "patient": subject}  # fmt: skip
        elif kind in (3, 4):
            resource = {"resourceType": "Encounter", "status": "finished",
                        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                  "code": "AMB"}, "subject": subject,
                        "period": {"start": f"{day}T09:00:00+08:00"}}  # fmt: skip
        else:
            code_, display, low, high = LABS[n % len(LABS)]
            category = "vital-signs" if kind == 5 else "laboratory"
            value = round((low or 1.0) * (0.8 + (n % 13) / 10), 2)
            ref: dict[str, Any] = {}
            if low is not None:
                ref["low"] = {"value": low}
            if high is not None:
                ref["high"] = {"value": high}
            resource = {"resourceType": "Observation", "status": "final",
                        "category": [{"coding": [{"system":
                            "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": category}]}],
                        "code": {"coding": [{"system": "http://loinc.org", "code": code_,
                                             "display": display}]},
                        "subject": subject, "effectiveDateTime": f"{day}T08:00:00+08:00",
                        "valueQuantity": {"value": value}, "referenceRange": [ref]}  # fmt: skip
        resource["id"] = rid
        entries.append({"fullUrl": f"urn:uuid:bench-{rid}", "resource": resource})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = (
        statistics.quantiles(ordered, n=100, method="inclusive")
        if len(ordered) > 1
        else ordered * 99
    )
    return {"p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000}


async def measure(fn: Callable[[], Awaitable[Any]], iterations: int) -> dict[str, float]:
    for _ in range(min(5, iterations)):
        await fn()  # warm caches and the pool
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


async def run(database_url: str, data_dir: Path, resources: int, iterations: int) -> dict[str, Any]:
    checkpoint_key = data_dir / "checkpoint_key"  # PostgreSQL mode is given one, not made
    generate_key_file(checkpoint_key)
    settings = load_settings(
        environ={}, data_dir=data_dir, database_url=database_url, secret_key=SECRET,
        checkpoint_key_file=checkpoint_key,
        auto_migrate=True, argon2_time_cost=1, argon2_memory_kib=64, log_level="WARNING",
    )  # fmt: skip
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        services = app[SERVICES]
        resident_id = make_resident_id("370202", date(1956, 2, 3), 17)
        codes = [f"BENCH{i:02d}" for i in range(10)]
        for i, code in enumerate(codes):
            await services.identity.create_institution(
                None, schemas.InstitutionCreate(code=code, name=f"医院{i}", kind="tertiary")
            )
        loaded = time.perf_counter()
        for i, code in enumerate(codes):
            response = await services.records.push_bundle(
                None, code, institution_bundle(code, i, resident_id, resources // len(codes))
            )
            patient_id = int(response["entry"][0]["response"]["location"].split("/")[1])
        load_seconds = time.perf_counter() - loaded
        doctor = await services.identity.create_user(None, schemas.UserCreate(
            username="bench_dr", password="Bench@2026x", role="specialist", institution=codes[0]))  # fmt: skip
        requester = Requester(
            user_id=doctor.id, role="specialist", session_id="bench",
            institution_id=doctor.institution.id if doctor.institution else None,
        )  # fmt: skip
        async with services.db.transaction() as tx:  # the patient was seen there in person
            assert doctor.institution is not None
            await services.access.record_encounter(
                tx, patient_id=patient_id, institution_id=doctor.institution.id, reason="presence"
            )
        engine = services.db.engine
        stored = await services.records.everything(requester, patient_id, count=100000, offset=0)

        async def summary() -> None:
            await services.records.clinical_summary(requester, patient_id)

        async def summary_floor() -> None:
            async with engine.connect() as conn:
                for where in (
                    "resource_type = 'Condition' AND status IN ('active','recurrence','relapse')",
                    "resource_type = 'MedicationRequest' AND status = 'active'",
                    "resource_type = 'AllergyIntolerance' AND (status IS NULL OR status = 'active')",
                ):
                    await conn.exec_driver_sql(
                        f"SELECT id, resource_type, code, code_system, display, date, status, "
                        f"category, institution_id, ingested_at FROM record_entries "
                        f"WHERE patient_id = {patient_id} AND {where} ORDER BY date DESC"
                    )
                await conn.exec_driver_sql(
                    "SELECT r.id, r.resource_type, r.code, r.code_system, r.display, r.date, "
                    "r.status, r.category, r.institution_id, r.ingested_at, r.resource "
                    "FROM record_entries r JOIN (SELECT id, row_number() OVER (PARTITION BY code "
                    "ORDER BY date DESC, id DESC) AS rank FROM record_entries "
                    f"WHERE patient_id = {patient_id} AND resource_type = 'Observation' "
                    "AND category = 'laboratory' AND code IS NOT NULL) k ON k.id = r.id "
                    "WHERE k.rank <= 6 ORDER BY r.date DESC, r.id DESC"
                )

        async def everything() -> None:
            await services.records.everything(requester, patient_id, count=100000, offset=0)

        async def everything_floor() -> None:
            async with engine.connect() as conn:
                result = await conn.exec_driver_sql(
                    "SELECT resource FROM record_entries WHERE patient_id = "
                    f"{patient_id} AND resource_type != 'Patient' ORDER BY id"
                )
                for (resource,) in result:
                    json.loads(resource) if isinstance(resource, str) else resource

        results = {
            "summary": await measure(summary, iterations),
            "summary (raw SQL floor)": await measure(summary_floor, iterations),
            "$everything": await measure(everything, max(iterations // 5, 3)),
            "$everything (raw SQL floor)": await measure(everything_floor, max(iterations // 5, 3)),
        }
        return {"resources": len(stored[0]), "institutions": len(codes),
                "load_seconds": round(load_seconds, 1), "results": results}  # fmt: skip
    finally:
        await runner.cleanup()


async def with_pg_database(admin_url: str, work: Callable[[str], Awaitable[Any]]) -> Any:
    name = f"yihao_bench_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        return await work(
            make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (default: SQLite)")
    parser.add_argument("--resources", type=int, default=5000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="tiny run that checks it works")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.smoke:
        args.resources, args.iterations = 100, 5
    with tempfile.TemporaryDirectory() as tmp:
        if args.database_url:
            report = asyncio.run(with_pg_database(
                args.database_url,
                lambda url: run(url, Path(tmp), args.resources, args.iterations)))  # fmt: skip
            backend = "postgresql"
        else:
            report = asyncio.run(run("", Path(tmp), args.resources, args.iterations))
            backend = "sqlite"
    report["backend"] = backend
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{backend}: {report['resources']} resources from {report['institutions']} institutions "
          f"(loaded in {report['load_seconds']}s)")  # fmt: skip
    print(f"{'workload':32} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for name, figures in report["results"].items():
        print(f"{name:32} {figures['p50']:8.2f} {figures['p95']:8.2f} {figures['p99']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
