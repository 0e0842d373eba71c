"""The PostgreSQL backup and restore procedure of deploy/backup, run for real.

Back up the demo network, restore it into a scratch database, and check that
the copy holds the same rows and an intact audit chain.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from server.cluster import LocalCluster
from tests.cluster.test_artifacts import DEPLOY
from tests.conftest import _create_pg_database, _drop_pg_database

pytestmark = pytest.mark.integration

SCRIPT = DEPLOY / "backup" / "yihao-pg-backup.sh"
TABLES = ("institutions", "departments", "users", "patients", "audit_events", "stream_events")


async def row_counts(url: str) -> dict[str, int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return {t: (await conn.execute(sa.text(f"SELECT count(*) FROM {t}"))).scalar_one()
                    for t in TABLES}  # fmt: skip
    finally:
        await engine.dispose()


def script(*args: str) -> str:
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_backup_restores_into_a_scratch_database_with_an_intact_audit_chain(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    source = node_env["YIHAO_DATABASE_URL"]
    await LocalCluster(node_env, tmp_path / "seed", nodes=0, nginx=False).run_cli("seed-demo")
    dump = tmp_path / "yihao.dump"
    assert "backup written" in script("backup", source, str(dump))
    assert "tables with data" in script("verify", str(dump))

    scratch_name = f"yihao_restore_{uuid.uuid4().hex[:8]}"
    scratch = await _create_pg_database(scratch_name)
    try:
        script("restore", str(dump), scratch)
        assert await row_counts(scratch) == await row_counts(source)
        assert (await row_counts(scratch))["users"] > 0
        restored = dict(node_env, YIHAO_DATABASE_URL=scratch)
        output = await LocalCluster(restored, tmp_path / "check", nodes=0, nginx=False).run_cli(
            "audit", "verify"
        )
        assert "audit chain intact" in output
    finally:
        await _drop_pg_database(scratch_name)
