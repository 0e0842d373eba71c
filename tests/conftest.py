"""Fixtures: the real app from the real factory, on SQLite and (integration tier) PostgreSQL + Redis.

The integration tier is switched on by ``YIHAO_TEST_DATABASE_URL``
(``postgresql+asyncpg://…``) and ``YIHAO_TEST_REDIS_URL``. Then every test
that takes the ``backend`` fixture runs twice — on SQLite with the in-process
Socket.IO manager, and on PostgreSQL with Redis — and tests marked
``integration`` run too. A configured service that does not answer fails the
run; it is never skipped.

Each test session (each pytest-xdist worker) gets a database of its own
(created, migrated once, dropped at the end), so parallel runs on one
PostgreSQL server do not collide; each test starts from empty tables.

A test that takes ``network`` starts from the seeded demo network instead: the
network is seeded once per session and backend into a template (a SQLite file,
a PostgreSQL template database) and each such test gets a copy, which is the
state a fresh ``seed_demo`` would leave, for the cost of a file or database copy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import shutil
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from server.app import create_app
from server.cluster import admin_sql
from server.config import Settings, load_settings
from server.container import Services
from server.core.api import SERVICES
from server.core.db import Base, Database, utcnow
from tests.helpers import Api

PG_URL = os.environ.get("YIHAO_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("YIHAO_TEST_REDIS_URL", "")
INTEGRATION = bool(PG_URL)
# "gw0", "gw1", … under pytest-xdist; names what a worker creates on shared servers.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
SECRET = "test-secret-key-that-is-long-enough-0123456789"

# Cheap argon2 for tests: the cost is a setting, the algorithm is the same.
TEST_SETTINGS: dict[str, Any] = {
    "secret_key": SECRET,
    "argon2_time_cost": 1,
    "argon2_memory_kib": 64,
    "log_format": "text",
    # Booking's reminder and no-show jobs are run by the tests that mean to (a reminder
    # arriving mid-test would be an inbox event nobody asked for).
    "booking_job_interval_seconds": 0,
    # The built-in sandbox payment provider (off by default in a deployment).
    "payments_sandbox": True,
    "visit_job_interval_seconds": 0,
}


def pytest_configure(config: pytest.Config) -> None:
    if INTEGRATION and not REDIS_URL:
        raise pytest.UsageError("YIHAO_TEST_DATABASE_URL is set but YIHAO_TEST_REDIS_URL is not")


# Tests whose assertions are about time (latency, media durations, a flood's effect on a
# neighbour's acks): marked ``serial``, so `make test` runs them after the parallel part,
# without a second worker competing for the same cores.
SERIAL = (
    "tests/media/test_precall.py::test_check_echoes_the_picture_and_reports_the_link",
    "tests/media/test_recording.py::test_shutdown_completes_a_running_recording",
    # Media durations of a recorder that starts late on a busy machine (seen under load).
    "tests/media/test_recording.py::test_a_three_party_consult_is_recorded_after_consent",
    "tests/media/test_recording.py::test_a_killed_worker_is_reported_and_the_consult_goes_on",
    "tests/security/test_flood.py::",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker and xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("[")[0].startswith(SERIAL):
            item.add_marker(pytest.mark.serial)
    if INTEGRATION:
        return
    deselected = [item for item in items if item.get_closest_marker("integration")]
    if deselected:
        # Not skipped: the integration tier is simply not part of this run.
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("integration")]


async def _create_pg_database(name: str) -> str:
    await admin_sql(PG_URL, f'CREATE DATABASE "{name}"')
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(name: str) -> None:
    await admin_sql(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_async(coro_fn: Any, *args: Any) -> Any:
    """Run a coroutine to completion from sync code, even under a running loop."""

    async def run() -> Any:
        try:
            return await coro_fn(*args)
        finally:
            # A whole app started and stopped here (the seeded templates) can leave
            # transports in reference cycles; collected later, from another test, they
            # would warn about a loop closed long ago. Collect them while it still runs.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(run())).result()


async def _migrate(settings: Settings) -> None:
    db = Database(settings)
    try:
        await db.migrate()
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def checkpoint_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint key the PostgreSQL tier needs (a cluster is given one, as a file)."""
    from server.core.checkpoints import generate_key_file

    path = tmp_path_factory.mktemp("checkpoint") / "checkpoint_key"
    generate_key_file(path)
    return path


@pytest.fixture(scope="session")
def pg_database_url(checkpoint_key_file: Path) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    if not INTEGRATION:
        pytest.fail("the PostgreSQL tier is off (set YIHAO_TEST_DATABASE_URL)")
    name = f"yihao_test_{WORKER}_{uuid.uuid4().hex[:10]}"
    url = run_async(_create_pg_database, name)
    run_async(
        _migrate,
        load_settings(
            environ={}, database_url=url, checkpoint_key_file=checkpoint_key_file, **TEST_SETTINGS
        ),
    )
    yield url
    run_async(_drop_pg_database, name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not REDIS_URL:
        pytest.fail("the Redis tier is off (set YIHAO_TEST_REDIS_URL)")
    redis.Redis.from_url(REDIS_URL).ping()  # a configured Redis that is down fails here
    return REDIS_URL


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating per test would be slow)."""
    data_dir = tmp_path_factory.mktemp("template")
    run_async(_migrate, load_settings(environ={}, data_dir=data_dir, **TEST_SETTINGS))
    return data_dir / "yihao.db"


def _backends() -> list[Any]:
    params: list[Any] = ["sqlite"]
    if INTEGRATION:
        params.append(pytest.param("postgres", marks=pytest.mark.integration))
    return params


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _truncate(url: str, snapshot: PgSnapshot | None = None) -> None:
    """Empty every table (then load ``snapshot``, if given) in one transaction."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            await conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            if snapshot is None:
                await conn.execute(
                    sa.text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :h)"),
                    {"h": "0" * 64},
                )
            else:
                await snapshot.load(conn)
    finally:
        await engine.dispose()


class PgSnapshot:
    """Every row of a PostgreSQL database and its sequences' positions, to load again."""

    def __init__(self) -> None:
        self.rows: list[tuple[sa.Table, list[dict[str, Any]]]] = []
        self.sequences: list[tuple[str, int]] = []

    @classmethod
    async def take(cls, url: str) -> PgSnapshot:
        snapshot = cls()
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                for table in Base.metadata.sorted_tables:
                    rows = [dict(r) for r in (await conn.execute(sa.select(table))).mappings()]
                    if rows:
                        snapshot.rows.append((table, rows))
                result = await conn.execute(
                    sa.text(
                        "SELECT schemaname, sequencename, last_value FROM pg_sequences "
                        "WHERE last_value IS NOT NULL AND schemaname = current_schema()"
                    )
                )
                snapshot.sequences = [(f'"{s}"."{n}"', int(v)) for s, n, v in result]
        finally:
            await engine.dispose()
        return snapshot

    async def load(self, conn: Any) -> None:
        for table, rows in self.rows:  # parents before children
            await conn.execute(sa.insert(table), rows)
        for name, value in self.sequences:
            await conn.execute(sa.text("SELECT setval(:s, :v, true)"), {"s": name, "v": value})


# Rows a running app writes for itself (its node's heartbeat, the job leases it holds),
# not part of the demo network: a test's own app writes its own.
_APP_OWN_TABLES = ("cluster_nodes", "job_leases")


async def _seed_into(settings: Settings) -> None:
    """Seed the demo network the way the ``network`` fixture did: through a started app."""
    from aiohttp.test_utils import TestServer

    from server.seed import seed_demo

    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        await seed_demo(app[SERVICES])
    finally:
        await client.close()
    engine = create_async_engine(settings.effective_database_url)
    try:
        async with engine.begin() as conn:
            for table in _APP_OWN_TABLES:
                await conn.execute(sa.text(f'DELETE FROM "{table}"'))
    finally:
        await engine.dispose()


class SeededTemplates:
    """The demo network seeded once per backend (and per day: the schedules start today)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: dict[str, tuple[Any, Any]] = {}

    def sqlite(self, request: pytest.FixtureRequest) -> Path:
        """A data directory holding the seeded ``yihao.db`` and the checkpoint key it used."""
        return Path(self._get("sqlite", request))

    def postgres(self, request: pytest.FixtureRequest) -> PgSnapshot:
        """The rows of the seeded session database (it is emptied for every test)."""
        snapshot = self._get("postgres", request)
        assert isinstance(snapshot, PgSnapshot)
        return snapshot

    def _get(self, backend: str, request: pytest.FixtureRequest) -> Any:
        today = utcnow().date()
        made = self.made.get(backend)
        if made is None or made[0] != today:
            self.made[backend] = (today, self._make(backend, request))
        return self.made[backend][1]

    def _make(self, backend: str, request: pytest.FixtureRequest) -> Any:
        tag = uuid.uuid4().hex[:10]
        data_dir = self.root / tag
        data_dir.mkdir(parents=True)
        values = dict(TEST_SETTINGS, data_dir=data_dir, redis_channel=f"yihao-test-seed-{tag}")
        if backend == "postgres":
            url = request.getfixturevalue("pg_database_url")
            values.update(
                database_url=url,
                checkpoint_key_file=request.getfixturevalue("checkpoint_key_file"),
                redis_url=request.getfixturevalue("redis_url"),
            )
            run_async(_truncate, url)
            run_async(_seed_into, load_settings(environ={}, **values))
            return run_async(PgSnapshot.take, url)
        shutil.copy(request.getfixturevalue("sqlite_template"), data_dir / "yihao.db")
        run_async(_seed_into, load_settings(environ={}, **values))
        return data_dir


@pytest.fixture(scope="session")
def seeded_templates(tmp_path_factory: pytest.TempPathFactory) -> SeededTemplates:
    return SeededTemplates(tmp_path_factory.mktemp("seeded"))


SEEDED = pytest.StashKey[bool]()


@pytest.fixture
async def settings(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    sqlite_template: Path,
    seeded_templates: SeededTemplates,
) -> Settings:
    values = dict(TEST_SETTINGS, data_dir=tmp_path)
    # The demo network is copied in, not seeded, for a test that asks for it by fixture.
    seeded = "network" in request.fixturenames
    request.node.stash[SEEDED] = seeded
    if backend == "postgres":
        url = request.getfixturevalue("pg_database_url")
        await _truncate(url, seeded_templates.postgres(request) if seeded else None)
        values.update(
            database_url=url,
            checkpoint_key_file=request.getfixturevalue("checkpoint_key_file"),
            redis_url=request.getfixturevalue("redis_url"),
            redis_channel=f"yihao-test-{uuid.uuid4().hex[:8]}",
        )
    elif seeded:
        template = seeded_templates.sqlite(request)
        shutil.copy(template / "yihao.db", tmp_path / "yihao.db")
        shutil.copy(template / "checkpoint_key", tmp_path / "checkpoint_key")
    else:
        shutil.copy(sqlite_template, tmp_path / "yihao.db")
    return load_settings(environ={}, **values)


@pytest.fixture
async def app(settings: Settings) -> web.Application:
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application) -> TestClient[Any, Any]:
    return await aiohttp_client(app)  # type: ignore[no-any-return]


@pytest.fixture
def services(app: web.Application) -> Services:
    return app[SERVICES]  # type: ignore[no-any-return]


@pytest.fixture
async def network(
    client: TestClient[Any, Any], services: Services, request: pytest.FixtureRequest
) -> Services:
    """The demo network (institutions, practitioners, patients) in the test's database."""
    if not request.node.stash.get(SEEDED, False):
        # Asked for late (getfixturevalue), after the database was laid out empty.
        from server.seed import seed_demo

        await seed_demo(services)
    return services


@pytest.fixture
async def api(client: TestClient[Any, Any]) -> AsyncIterator[Api]:
    helper = Api(client)
    yield helper
    await helper.close()
