"""Tamper evidence: rows edited, deleted or reordered directly in the database are named.

``yihao audit verify`` walks the audit hash chain; ``yihao verify-signatures``
checks every signed prescription and consult opinion. Both are run as the
operator runs them (the CLI, its own process state, the same database), after
the test changed rows behind the server's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from server.cli import main
from server.config import Settings
from server.consults.models import Consult
from server.container import Services
from server.core.audit import AuditEvent
from server.prescriptions.models import Prescription
from tests.conftest import TEST_SETTINGS
from tests.helpers import Api
from tests.security.world import World, build_world


def cli_env(settings: Settings) -> dict[str, str]:
    env = {"YIHAO_SECRET_KEY": TEST_SETTINGS["secret_key"], "YIHAO_LOG_LEVEL": "ERROR"}
    if settings.database_url:
        env["YIHAO_DATABASE_URL"] = settings.database_url
    else:
        env["YIHAO_DATA_DIR"] = str(settings.data_dir)
    return env


async def yihao(settings: Settings, *argv: str) -> tuple[int, str]:
    """Run the ``yihao`` CLI against the test's database (in a thread: it runs its own loop)."""

    def run() -> tuple[int, str]:
        out = io.StringIO()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level  # the CLI sets up logging for itself
        try:
            with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
                for key in [k for k in os.environ if k.startswith("YIHAO_")]:
                    patch.delenv(key)
                for key, value in cli_env(settings).items():
                    patch.setenv(key, value)
                code = main(list(argv))
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        return code, out.getvalue()

    return await asyncio.to_thread(run)


@pytest.fixture
async def world(api: Api, network: Services) -> World:
    return await build_world(api, network)


async def test_intact_database_verifies(settings: Settings, world: World) -> None:
    code, out = await yihao(settings, "audit", "verify")
    assert code == 0, out
    assert "audit chain intact" in out
    code, out = await yihao(settings, "verify-signatures")
    assert code == 0, out
    assert "2 prescriptions, 2 consult opinions checked; 0 do not verify" in out


async def test_audit_verify_names_an_edited_entry(settings: Settings, world: World) -> None:
    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            update(AuditEvent).where(AuditEvent.seq == 7).values(outcome="success", reason="x")
        )
    code, out = await yihao(settings, "audit", "verify")
    assert code == 1
    assert "BROKEN at entry 7: content was changed" in out


async def test_audit_verify_names_a_deleted_entry(settings: Settings, world: World) -> None:
    async with world.services.db.transaction() as tx:
        await tx.session.execute(delete(AuditEvent).where(AuditEvent.seq == 9))
    code, out = await yihao(settings, "audit", "verify")
    assert code == 1
    assert "BROKEN at entry 9: entry 9 is missing" in out


async def test_audit_verify_names_reordered_entries(settings: Settings, world: World) -> None:
    async with world.services.db.transaction() as tx:
        session = tx.session
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(seq=-4))
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(seq=4))
        await session.execute(update(AuditEvent).where(AuditEvent.seq == -4).values(seq=5))
    code, out = await yihao(settings, "audit", "verify")
    assert code == 1
    assert "BROKEN at entry 4" in out


async def test_verify_signatures_names_an_edited_prescription(
    settings: Settings, world: World, api: Api
) -> None:
    rx_id = world.a.prescription_id
    async with world.services.db.transaction() as tx:
        row = await tx.session.get(Prescription, rx_id)
        assert row is not None
        content: dict[str, Any] = dict(row.content)
        items = [dict(item) for item in content["items"]]
        items[0]["quantity"] = 30  # one box became thirty
        await tx.session.execute(
            update(Prescription)
            .where(Prescription.id == rx_id)
            .values(content={**content, "items": items})
        )
    code, out = await yihao(settings, "verify-signatures")
    assert code == 1
    assert f"prescription {rx_id}: TAMPERED" in out
    assert f"prescription {world.b.prescription_id}:" not in out
    # The API says so too: the stored prescription no longer verifies.
    api_status, body = await api.get(f"/api/v1/prescriptions/{rx_id}/verify", as_="gp_zhang")
    assert api_status == 200 and body["valid"] is False, body


async def test_verify_signatures_names_a_prescription_moved_to_another_patient(
    settings: Settings, world: World
) -> None:
    rx_id = world.b.prescription_id
    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            update(Prescription)
            .where(Prescription.id == rx_id)
            .values(patient_id=world.a.patient_id)
        )
    code, out = await yihao(settings, "verify-signatures")
    assert code == 1
    assert f"prescription {rx_id}: TAMPERED" in out


async def test_verify_signatures_names_an_edited_opinion(settings: Settings, world: World) -> None:
    consult_id = world.b.consult_id
    async with world.services.db.transaction() as tx:
        opinion = await tx.session.scalar(select(Consult.opinion).where(Consult.id == consult_id))
        assert opinion is not None
        await tx.session.execute(
            update(Consult)
            .where(Consult.id == consult_id)
            .values(opinion={**opinion, "treatment_advice": "停用所有药物"})
        )
    code, out = await yihao(settings, "verify-signatures")
    assert code == 1
    assert f"consult {consult_id} opinion: TAMPERED — opinion does not match its signature" in out
    assert f"consult {world.a.consult_id} opinion" not in out
