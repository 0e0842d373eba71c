"""The `yihao` command as an operator uses it (a real subprocess on the test's database)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from server.config import Settings


def _run(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": os.environ["PATH"],
        "YIHAO_DATA_DIR": str(settings.data_dir),
        "YIHAO_SECRET_KEY": settings.secret_key,
        "YIHAO_ARGON2_TIME_COST": "1",
        "YIHAO_ARGON2_MEMORY_KIB": "64",
        "YIHAO_LOG_LEVEL": "WARNING",
    }
    if settings.database_url:
        environ["YIHAO_DATABASE_URL"] = settings.database_url
        environ["YIHAO_CHECKPOINT_KEY_FILE"] = str(settings.checkpoint_key_file)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_operator_sets_up_an_institution_and_accounts(settings: Settings) -> None:
    assert _run(settings, "migrate").returncode == 0
    made = _run(
        settings, "institution", "create", "--code", "QDSL", "--name", "青岛市立医院",
        "--kind", "tertiary", "--region", "370202",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "institution QDSL created" in made.stdout
    user = _run(
        settings, "user", "create", "--username", "dr_li", "--password", "s3cret-pass",
        "--role", "specialist", "--institution", "QDSL", "--name", "李明",
        "--title", "主任医师", "--department", "心内科",
    )  # fmt: skip
    assert user.returncode == 0, user.stderr
    assert "user dr_li created" in user.stdout
    patient = _run(
        settings, "user", "create", "--username", "patient_qian", "--password", "s3cret-pass",
        "--role", "patient", "--resident-id", "11010519491231002X", "--name", "钱女士",
    )  # fmt: skip
    assert patient.returncode == 0, patient.stderr
    verify = _run(settings, "audit", "verify")
    assert verify.returncode == 0
    assert "audit chain intact" in verify.stdout


def test_refusals_explain_themselves(settings: Settings) -> None:
    bad_id = _run(
        settings, "user", "create", "--username", "patient_x", "--password", "s3cret-pass",
        "--role", "patient", "--resident-id", "110105194912310021", "--name", "某人",
    )  # fmt: skip
    assert bad_id.returncode == 1
    assert "resident_id: the check character does not match" in bad_id.stderr
    no_inst = _run(
        settings, "user", "create", "--username", "dr_x", "--password", "s3cret-pass",
        "--role", "gp", "--institution", "NOWHERE",
    )  # fmt: skip
    assert no_inst.returncode == 1
    assert "no institution with code 'NOWHERE'" in no_inst.stderr
    short = _run(
        settings, "user", "create", "--username", "dr_y", "--password", "x", "--role", "gp"
    )
    assert short.returncode == 2
    assert "password:" in short.stderr
    bad_setting = _run(settings, "migrate", env={"YIHAO_PORT": "eighty"})
    assert bad_setting.returncode == 2
    assert "YIHAO_PORT" in bad_setting.stderr


def test_audit_verify_reports_tampering(settings: Settings, backend: str) -> None:
    assert _run(settings, "seed-demo").returncode == 0
    if backend == "sqlite":
        with sqlite3.connect(settings.data_dir / "yihao.db") as conn:
            conn.execute("UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 3")
    else:
        import asyncio

        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        async def tamper() -> None:
            engine = create_async_engine(settings.database_url)
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE audit_events SET reason = 'x' WHERE seq = 3"))
            await engine.dispose()

        asyncio.run(tamper())
    verify = _run(settings, "audit", "verify")
    assert verify.returncode == 1
    assert "audit chain BROKEN at entry 3: content was changed" in verify.stdout
