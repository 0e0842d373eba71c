"""The migration history: one linear chain that builds exactly the models' schema.

Every test starts from an empty database of its own (a fresh SQLite file, or on the
integration tier a PostgreSQL database created for the test and dropped after it).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from server.config import Settings, load_settings
from server.core.db import MIGRATIONS_DIR, Database, alembic_config
from server.models import Base
from tests.conftest import TEST_SETTINGS, _create_pg_database, _drop_pg_database

SCRIPTS = ScriptDirectory.from_config(alembic_config())
HEAD = SCRIPTS.get_current_head()


@pytest.fixture
async def empty(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    """A database with no tables at all."""
    values: dict[str, Any] = dict(TEST_SETTINGS, data_dir=tmp_path)
    name = f"yihao_migrations_{uuid.uuid4().hex[:10]}"
    if backend == "postgres":
        values.update(
            database_url=await _create_pg_database(name),
            checkpoint_key_file=request.getfixturevalue("checkpoint_key_file"),
        )
    settings: Settings = load_settings(environ={}, **values)
    db = Database(settings)
    try:
        yield db
    finally:
        await db.dispose()
        if backend == "postgres":
            await _drop_pg_database(name)


async def _run(db: Database, fn: Callable[[Connection], Any]) -> Any:
    async with db.engine.begin() as conn:
        return await conn.run_sync(fn)


def _alembic(command_fn: Callable[..., None], *args: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command_fn(cfg, *args)

    return run


def _versions(connection: Connection) -> list[str]:
    rows = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
    return sorted(r[0] for r in rows)


def _tables(connection: Connection) -> set[str]:
    return set(sa.inspect(connection).get_table_names())


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


def test_one_linear_history_named_by_revision() -> None:
    assert SCRIPTS.get_heads() == [HEAD]
    scripts = list(SCRIPTS.walk_revisions())
    assert all(not script.is_merge_point for script in scripts)
    assert [s.revision for s in reversed(scripts)] == [
        f"{n:04d}" for n in range(1, len(scripts) + 1)
    ]
    for script in scripts:
        assert script.path is not None
        assert Path(script.path).name.startswith(f"{script.revision}_"), script.path
    # No stray file beside the chain, and no two files share a number.
    files = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py"))
    assert len(files) == len(scripts)
    numbers = [re.sub(r"_.*", "", name) for name in files]
    assert len(set(numbers)) == len(files), files


async def test_upgrade_from_empty_reaches_the_head_without_drift(empty: Database) -> None:
    # compare_metadata sees tables, columns, types, server defaults, nullability, indexes,
    # unique and foreign-key constraints; nothing is excluded from it.
    assert await _run(empty, _tables) == set()
    await empty.migrate()
    assert await _run(empty, _versions) == [HEAD]
    assert set(Base.metadata.tables) <= await _run(empty, _tables)
    assert await _run(empty, _drift) == []


async def test_latest_revision_downgrades_and_upgrades_again(empty: Database) -> None:
    await empty.migrate()
    before = await _run(empty, _tables)
    await _run(empty, _alembic(command.downgrade, "-1"))
    assert await _run(empty, _versions) == [SCRIPTS.get_revision(HEAD).down_revision]
    await empty.migrate()
    assert await _run(empty, _versions) == [HEAD]
    assert await _run(empty, _tables) == before
    assert await _run(empty, _drift) == []


def _stamp_rows(rows: list[str]) -> Callable[[Connection], None]:
    """Write ``alembic_version`` as a database migrated before the history was linear."""

    def run(connection: Connection) -> None:
        connection.execute(sa.text("DELETE FROM alembic_version"))
        for row in rows:
            connection.execute(sa.text("INSERT INTO alembic_version VALUES (:v)"), {"v": row})

    return run


BRANCHES = ["leases_0001", "records_0001", "consults_0001", "prescriptions_0001", "scheduling_0001"]


@pytest.mark.parametrize(
    ("schema_at", "old_rows"),
    [
        pytest.param("0007", BRANCHES, id="five-branch-heads"),
        pytest.param("0004", ["0002", "leases_0001", "records_0001"], id="between-branches"),
        pytest.param("0007", ["0004"], id="old-merge-0004"),
        pytest.param("0008", ["0005"], id="old-0005-recording"),
        pytest.param("0011", ["0008"], id="old-0008-sessions"),
        pytest.param("0012", ["0009"], id="old-0009-checkpoints"),
        # Ids the old and new histories share with different meanings: a database of the
        # new chain at 0005 (consults) must not be taken for an old one at 0005 (recording).
        pytest.param("0005", ["0005"], id="new-0005-stays"),
        pytest.param("0009", ["0009"], id="new-0009-stays"),
        pytest.param("0002", ["0002"], id="same-in-both"),
    ],
)
async def test_a_database_stamped_with_old_ids_upgrades_to_the_head(
    empty: Database, schema_at: str, old_rows: list[str]
) -> None:
    await _run(empty, _alembic(command.upgrade, schema_at))
    await _run(empty, _stamp_rows(old_rows))
    await empty.migrate()
    assert await _run(empty, _versions) == [HEAD]
    assert await _run(empty, _drift) == []
    await empty.migrate()  # and again: nothing left to do
    assert await _run(empty, _versions) == [HEAD]


async def test_old_ids_the_linear_history_cannot_express_are_refused(empty: Database) -> None:
    # consults ran without records: neither skipping nor re-running a migration is right.
    await _run(empty, _alembic(command.upgrade, "0003"))
    await _run(empty, _stamp_rows(["consults_0001", "leases_0001"]))
    with pytest.raises(RuntimeError, match=r"skips revisions \['0004'\]"):
        await empty.migrate()
    assert await _run(empty, _versions) == ["consults_0001", "leases_0001"]
