"""Benchmark: the clinical summary and $everything of a patient with a large shared record.

One patient with about 5,000 resources pushed by 10 institutions (problems,
lab results, vital signs, medications, allergies, encounters), generated here.
Each workload is measured through the service (access check and its audit entry
included) beside its peer in the same run: the raw SQL fetching the same rows
through the same engine. Also: the CPU of one summary of a small demo patient
(18 entries: ``patient_wang`` read by ``gp_zhang``), through the service and
through the real HTTP route of ``yihao serve`` (:class:`bench.common.YihaoServer`),
and the peak Python memory (tracemalloc) of one big summary.

    .venv/bin/python bench/records_bench.py                       # SQLite, 5,000 resources
    .venv/bin/python bench/records_bench.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench_rec
    .venv/bin/python bench/records_bench.py --smoke               # tiny, for CI

A PostgreSQL database named by ``--database-url`` is emptied (its public schema
dropped and recreated) before the run.

Targets (issue 16): big summary p95 ≤ 2× its raw SQL; small summary ≤ 5 ms CPU;
``$everything`` p50 ≤ 2× its raw SQL (fetch and decode every resource).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Report,
    Row,
    YihaoServer,
    add_common_arguments,
    login,
    machine,
    summary_ms,
    wait_quiet,
)
from server.app import create_app
from server.config import load_settings
from server.container import Services
from server.core.api import SERVICES
from server.core.auth import Requester
from server.core.checkpoints import generate_key_file
from server.core.ids import RESIDENT_ID_SYSTEM, make_resident_id
from server.identity import schemas
from server.identity.patients import local_identifier_system
from server.seed import PATIENTS, seed_demo

SECRET = "bench-secret-key-that-is-long-enough-0123456789"
LABS = [("2345-7", "Glucose", 3.9, 6.1), ("4548-4", "HbA1c", 4.0, 6.0),
        ("2160-0", "Creatinine", 45.0, 84.0), ("2089-1", "LDL", None, 3.4),
        ("718-7", "Hemoglobin", 130.0, 175.0), ("6690-2", "WBC", 3.5, 9.5)]  # fmt: skip
SUMMARY_RATIO = 2.0
SMALL_CPU_MS = 5.0
EVERYTHING_RATIO = 2.0
SMALL_PATIENT, SMALL_READER = "patient_wang", "gp_zhang"


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


@dataclass
class Record:
    """The app under test in this process, its big patient and a reader of each patient."""

    app: web.Application
    runner: web.AppRunner
    services: Services
    patient_id: int
    reader: Requester
    small_patient_id: int
    small_reader: Requester
    resources: int

    @property
    def backend(self) -> str:
        return self.services.db.engine.dialect.name

    async def summary(self) -> Any:
        return await self.services.records.clinical_summary(self.reader, self.patient_id)

    async def small_summary(self) -> Any:
        return await self.services.records.clinical_summary(
            self.small_reader, self.small_patient_id
        )

    async def everything(self) -> int:
        """The whole record as one Bundle's bytes, as ``GET …/$everything`` sends them."""
        from server.records.facade import everything_bundle

        page = await self.services.records.everything_page(
            self.reader, self.patient_id, count=self.resources + 1, offset=0
        )
        return sum(
            len(chunk)
            for chunk in everything_bundle(
                page, base="http://bench/fhir", self_url="http://bench/fhir/x", next_url=None
            )
        )

    async def summary_floor(self) -> None:
        async with self.services.db.engine.connect() as conn:
            for where in (
                "resource_type = 'Condition' AND status IN ('active','recurrence','relapse')",
                "resource_type = 'MedicationRequest' AND status = 'active'",
                "resource_type = 'AllergyIntolerance' AND (status IS NULL OR status = 'active')",
            ):
                await conn.exec_driver_sql(
                    f"SELECT id, resource_type, code, code_system, display, date, status, "
                    f"category, institution_id, ingested_at FROM record_entries "
                    f"WHERE patient_id = {self.patient_id} AND {where} ORDER BY date DESC"
                )
            await conn.exec_driver_sql(
                "SELECT r.id, r.resource_type, r.code, r.code_system, r.display, r.date, "
                "r.status, r.category, r.institution_id, r.ingested_at, r.resource "
                "FROM record_entries r JOIN (SELECT id, row_number() OVER (PARTITION BY code "
                "ORDER BY date DESC, id DESC) AS rank FROM record_entries "
                f"WHERE patient_id = {self.patient_id} AND resource_type = 'Observation' "
                "AND category = 'laboratory' AND code IS NOT NULL) k ON k.id = r.id "
                "WHERE k.rank <= 6 ORDER BY r.date DESC, r.id DESC"
            )

    async def everything_floor(self) -> None:
        async with self.services.db.engine.connect() as conn:
            result = await conn.exec_driver_sql(
                "SELECT resource FROM record_entries WHERE patient_id = "
                f"{self.patient_id} AND resource_type != 'Patient' ORDER BY id"
            )
            for (resource,) in result:
                json.loads(resource) if isinstance(resource, str) else resource


async def reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        await conn.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()


async def prepare(database_url: str, data_dir: Path, resources: int) -> Record:
    """The app in this process, the demo seeded, the big patient loaded, readers allowed."""
    if database_url.startswith("postgresql"):
        await reset_postgres(database_url)
    checkpoint_key = data_dir / "checkpoint_key"
    generate_key_file(checkpoint_key)
    settings = load_settings(
        environ={}, data_dir=data_dir, database_url=database_url, secret_key=SECRET,
        checkpoint_key_file=checkpoint_key,
        auto_migrate=True, argon2_time_cost=1, argon2_memory_kib=64, log_level="WARNING",
    )  # fmt: skip
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    services = app[SERVICES]
    await seed_demo(services)
    resident_id = make_resident_id("370202", date(1956, 2, 3), 17)
    codes = [f"BENCH{i:02d}" for i in range(10)]
    for i, code in enumerate(codes):
        await services.identity.create_institution(
            None, schemas.InstitutionCreate(code=code, name=f"医院{i}", kind="tertiary")
        )
    patient_id = 0
    for i, code in enumerate(codes):
        response = await services.records.push_bundle(
            None, code, institution_bundle(code, i, resident_id, resources // len(codes))
        )
        patient_id = int(response["entry"][0]["response"]["location"].split("/")[1])
    doctor = await services.identity.create_user(None, schemas.UserCreate(
        username="bench_dr", password="Bench@2026x", role="specialist", institution=codes[0]))  # fmt: skip
    assert doctor.institution is not None
    reader = Requester(
        user_id=doctor.id, role="specialist", session_id="bench",
        institution_id=doctor.institution.id,
    )  # fmt: skip
    async with services.db.transaction() as tx:  # the patient was seen there in person
        await services.access.record_encounter(
            tx, patient_id=patient_id, institution_id=doctor.institution.id, reason="presence"
        )
    small = next(p for p in PATIENTS if p.username == SMALL_PATIENT)
    small_patient_id = await services.patients.find_by_identifier(
        RESIDENT_ID_SYSTEM, small.resident_id
    )
    assert small_patient_id is not None
    async with services.db.read() as session:
        gp_id = await services.directory.user_id_by_username(session, SMALL_READER)
        assert gp_id is not None
        gp = await services.directory.user(session, gp_id)
        assert gp is not None
    small_reader = Requester(
        user_id=gp.id, role=gp.role, session_id="bench", institution_id=gp.institution_id
    )
    async with services.db.engine.connect() as conn:
        stored = await conn.scalar(
            sa.text(  # what $everything returns: the entries and the Patient
                "SELECT count(*) + 1 FROM record_entries "
                "WHERE patient_id = :p AND resource_type != 'Patient'"
            ),
            {"p": patient_id},
        )
    return Record(app, runner, services, patient_id, reader, small_patient_id, small_reader,
                  int(stored or 0))  # fmt: skip


async def timed(fn: Callable[[], Awaitable[Any]], iterations: int) -> dict[str, float]:
    """Latency percentiles (ms) and CPU per call (ms) of ``fn`` run back to back."""
    for _ in range(min(3, iterations)):
        await fn()  # warm caches and the pool
    samples = []
    cpu = time.process_time()
    for _ in range(iterations):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    figures = summary_ms(samples)
    figures["cpu"] = (time.process_time() - cpu) * 1000 / iterations
    return figures


async def peak_memory(fn: Callable[[], Awaitable[Any]]) -> float:
    """The peak of Python allocations (KiB) while ``fn`` runs once."""
    await fn()
    tracemalloc.start()
    try:
        result = await fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak / 1024


async def http_small_summary(
    database_url: str, data_dir: Path, iterations: int
) -> dict[str, float]:
    """CPU (ms) of the server per ``GET /api/v1/patients/{id}/summary`` of the small patient."""
    import aiohttp

    async with (
        YihaoServer(str(data_dir), database_url=database_url or None) as server,
        aiohttp.ClientSession() as http,
    ):
        token = await login(http, server.url, SMALL_READER)
        headers = {"Authorization": f"Bearer {token}"}
        small = next(p for p in PATIENTS if p.username == SMALL_PATIENT)
        async with http.get(
            server.url + "/fhir/Patient",
            headers=headers,
            params={"identifier": f"{RESIDENT_ID_SYSTEM}|{small.resident_id}"},
        ) as response:
            found = await response.json()
        patient_id = found["entry"][0]["resource"]["id"]
        url = f"{server.url}/api/v1/patients/{patient_id}/summary"
        for _ in range(5):
            async with http.get(url, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()
        assert server.cpu is not None
        samples = []
        server.cpu.start()
        for _ in range(iterations):
            started = time.perf_counter()
            async with http.get(url, headers=headers) as response:
                await response.read()
            samples.append(time.perf_counter() - started)
        server.cpu.stop()
        figures = summary_ms(samples)
        figures["cpu"] = server.cpu.per_op_ms(iterations)
        return figures


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


async def run(args: argparse.Namespace, data_dir: Path) -> Report:
    load = wait_quiet(smoke=args.smoke)
    record = await prepare(args.database_url, data_dir / "inproc", args.resources)
    backend = record.backend
    report = Report("records", f"Clinical summary and $everything ({backend})")
    try:
        iterations = args.iterations
        summary = await timed(record.summary, iterations)
        floor = await timed(record.summary_floor, iterations)
        small = await timed(record.small_summary, iterations)
        slow = max(iterations // 5, 3)
        everything = await timed(record.everything, slow)
        everything_floor = await timed(record.everything_floor, slow)
        memory = await peak_memory(record.summary)
    finally:
        await record.runner.cleanup()
    n = record.resources
    ratio = summary["p95"] / floor["p95"]
    report.add(Row(
        f"clinical summary, {n:,} resources from 10 institutions, p95 (p50)",
        f"{_ms(summary['p95'])} ({_ms(summary['p50'])}); {summary['cpu']:.1f} ms CPU",
        f"raw SQL {_ms(floor['p95'])} ({_ms(floor['p50'])}); ratio {ratio:.2f}",
        f"≤ {SUMMARY_RATIO:g}× raw", ratio <= SUMMARY_RATIO,
    ))  # fmt: skip
    report.add(Row(
        "summary of a small demo patient (18 entries), through the service",
        f"{small['cpu']:.2f} ms CPU (p50 {_ms(small['p50'])})", "—",
        f"≤ {SMALL_CPU_MS:g} ms CPU", small["cpu"] <= SMALL_CPU_MS,
    ))  # fmt: skip
    if not args.no_http:
        http = await http_small_summary(args.database_url, data_dir / "served", iterations)
        report.add(Row(
            "summary of a small demo patient (18 entries), GET …/summary (server CPU)",
            f"{http['cpu']:.2f} ms CPU (p50 {_ms(http['p50'])})", "—",
            f"≤ {SMALL_CPU_MS:g} ms CPU", http["cpu"] <= SMALL_CPU_MS,
        ))  # fmt: skip
    ratio = everything["p50"] / everything_floor["p50"]
    report.add(Row(
        f"$everything, {n:,} resources, p50 (the Bundle's bytes)",
        f"{_ms(everything['p50'])}; {everything['cpu']:.1f} ms CPU",
        f"raw SQL + decode {_ms(everything_floor['p50'])}; ratio {ratio:.2f}",
        f"≤ {EVERYTHING_RATIO:g}× raw", ratio <= EVERYTHING_RATIO,
    ))  # fmt: skip
    report.add(Row(
        f"peak Python memory of one summary of {n:,} resources (tracemalloc)",
        f"{memory:,.0f} KiB",
    ))  # fmt: skip
    facts = machine()
    report.notes.append(
        f"{backend}; {n:,} resources; {iterations} calls per workload "
        f"({slow} for $everything); load {load:.2f} before the run; "
        f"{facts['cores']} cores, Python {facts['python']}."
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (default: SQLite)")
    parser.add_argument("--resources", type=int, default=5000)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--no-http", action="store_true", help="skip the served HTTP route")
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.resources, args.iterations = 100, 5
    with tempfile.TemporaryDirectory() as tmp:
        for folder in ("inproc", "served"):
            (Path(tmp) / folder).mkdir()
        report = asyncio.run(run(args, Path(tmp)))
    report.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
