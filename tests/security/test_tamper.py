"""Tamper evidence: rows edited, deleted or reordered directly in the database are named.

``yihao audit verify`` walks the audit hash chain; ``yihao verify-signatures``
checks every signed prescription and consult opinion. Both are run as the
operator runs them (the CLI, its own process state, the same database), after
the test changed rows behind the server's back.

The insider here can do everything the database allows — recompute the whole
chain, put a key of their own on a doctor's account and re-sign with it, delete
checkpoints — but does not hold the checkpoint key, which is not in the database.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import delete, select, text, update

from server.cli import main
from server.config import Settings
from server.consults.models import Consult
from server.container import Services
from server.core.audit import AuditEvent, entry_hash
from server.core.canonical import canonical_jcs
from server.core.checkpoints import AuditCheckpoint, CheckpointHead, public_key_pem
from server.core.signing import Signature, verify_signature
from server.prescriptions.models import Prescription
from tests.conftest import TEST_SETTINGS
from tests.helpers import Api
from tests.security.world import World, build_world


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No periodic checkpoints here: the tests write them, and count them."""
    return settings.with_overrides(checkpoint_interval_seconds=0)


def cli_env(settings: Settings) -> dict[str, str]:
    env = {
        "YIHAO_SECRET_KEY": TEST_SETTINGS["secret_key"],
        "YIHAO_LOG_LEVEL": "ERROR",
        "YIHAO_CHECKPOINT_KEY_FILE": str(settings.checkpoint_key_file),
        "YIHAO_CHECKPOINT_INTERVAL_SECONDS": "0",
    }
    if settings.database_url:
        env["YIHAO_DATABASE_URL"] = settings.database_url
    else:
        env["YIHAO_DATA_DIR"] = str(settings.data_dir)
    return env


async def yihao(
    settings: Settings, *argv: str, env: dict[str, str | None] | None = None
) -> tuple[int, str]:
    """Run the ``yihao`` CLI against the test's database (in a thread: it runs its own loop).

    ``env`` replaces variables of :func:`cli_env` (None values remove them).
    """

    def run() -> tuple[int, str]:
        out = io.StringIO()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level  # the CLI sets up logging for itself
        try:
            with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
                for key in [k for k in os.environ if k.startswith("YIHAO_")]:
                    patch.delenv(key)
                merged: dict[str, str | None] = {**cli_env(settings), **(env or {})}
                for key, value in merged.items():
                    if value is not None:
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


async def test_intact_database_verifies(settings: Settings, world: World, tmp_path: Path) -> None:
    code, out = await yihao(settings, "audit", "verify")
    assert code == 0, out
    assert "audit chain intact" in out
    code, out = await yihao(settings, "verify-signatures")
    assert code == 0, out
    assert "2 prescriptions, 2 consult opinions checked; 0 do not verify" in out
    # Signed checkpoints: one per new practitioner key (four signed above), and one now.
    code, out = await yihao(settings, "audit", "checkpoint")
    assert code == 0, out
    assert re.search(r"checkpoint 5 signed: audit entries up to \d+ \(hash [0-9a-f]{64}\)", out)
    code, out = await yihao(settings, "audit", "verify")
    assert code == 0, out
    assert "5 signed checkpoints verified; the latest, checkpoint 5 of " in out
    assert "entries after it are verified by the hash chain alone" in out
    # An auditor holds only the public key: the same verdicts, and nothing to sign with.
    public = tmp_path / "checkpoint.pub"
    public.write_text(public_key_pem(world.services.checkpoints.verifier.public_bytes_raw()))
    auditor: dict[str, str | None] = {
        "YIHAO_CHECKPOINT_KEY_FILE": None,
        "YIHAO_CHECKPOINT_PUBLIC_KEY_FILE": str(public),
    }
    code, out = await yihao(settings, "audit", "verify", env=auditor)
    assert code == 0, out
    assert "5 signed checkpoints verified" in out
    code, out = await yihao(settings, "verify-signatures", env=auditor)
    assert code == 0, out
    assert "2 prescriptions, 2 consult opinions checked; 0 do not verify" in out
    code, out = await yihao(settings, "audit", "checkpoint", env=auditor)
    assert code == 1
    code, out = await yihao(settings, "serve", env=auditor)  # refused at once, never listens
    assert code == 2


async def test_audit_verify_names_a_recomputed_chain(settings: Settings, world: World) -> None:
    code, out = await yihao(settings, "audit", "checkpoint")
    assert code == 0, out
    covered = int(re.findall(r"audit entries up to (\d+)", out)[0])
    # The insider edits entry 7 and recomputes every hash after it, and the head, in SQL:
    # the chain alone holds together again.
    async with world.services.db.read() as session:
        rows = list(
            (
                await session.scalars(
                    select(AuditEvent).where(AuditEvent.seq >= 7).order_by(AuditEvent.seq)
                )
            ).all()
        )
    prev = rows[0].prev_hash
    rewritten = []
    for row in rows:
        if row.seq == 7:
            row.outcome, row.reason = "success", "ordinary access"  # it was something else
        row.prev_hash = prev
        prev = entry_hash(row)
        rewritten.append({"s": row.seq, "o": row.outcome, "r": row.reason, "p": row.prev_hash,
                          "h": prev})  # fmt: skip
    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            text(
                "UPDATE audit_events SET outcome = :o, reason = :r, prev_hash = :p, hash = :h "
                "WHERE seq = :s"
            ),
            rewritten,
        )
        await tx.session.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})
    assert (await world.services.audit.verify()).ok  # the chain alone is fooled
    code, out = await yihao(settings, "audit", "verify")
    assert code == 1, out
    named = re.search(
        r"audit chain BROKEN at entry (\d+): differs from signed checkpoint \d+ of ", out
    )
    assert named, out
    assert 7 <= int(named[1]) <= covered


async def test_verify_signatures_names_a_swapped_key_and_a_resigned_prescription(
    settings: Settings, world: World, api: Api
) -> None:
    rx_id, gp_id = world.a.prescription_id, world.a.gp_user_id
    # The insider's own key on gp_zhang's account (sealed as the server seals keys: this
    # insider even has the server secret), and a prescription changed and re-signed with it.
    insider = Ed25519PrivateKey.generate()
    public = insider.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    fingerprint = hashlib.sha256(public).hexdigest()
    nonce = os.urandom(12)
    sealed = AESGCM(world.services.signer._kek).encrypt(
        nonce, insider.private_bytes_raw(), str(gp_id).encode()
    )
    async with world.services.db.transaction() as tx:
        row = await tx.session.get(Prescription, rx_id)
        assert row is not None
        content: dict[str, Any] = dict(row.content)
        items = [dict(item) for item in content["items"]]
        items[0]["quantity"] = 30
        content["items"] = items
        signature = {
            **row.signature,
            "key_id": fingerprint,
            "public_key": base64.b64encode(public).decode(),
            "value": base64.b64encode(insider.sign(canonical_jcs(content))).decode(),
        }
        await tx.session.execute(
            text(
                "UPDATE practitioner_keys SET fingerprint = :f, public_key = :p, "
                "private_key_enc = :e WHERE user_id = :u"
            ),
            {"f": fingerprint, "p": base64.b64encode(public).decode(), "u": gp_id,
             "e": base64.b64encode(nonce + sealed).decode()},
        )  # fmt: skip
        await tx.session.execute(
            update(Prescription)
            .where(Prescription.id == rx_id)
            .values(content=content, signature=signature)
        )
    # The signature itself is perfect, with the key now on file.
    assert verify_signature(Signature.model_validate(signature), content)
    code, out = await yihao(settings, "verify-signatures")
    assert code == 1, out
    assert (
        f"signing key of user {gp_id}: TAMPERED — key {fingerprint[:16]}… is not the key in "
        "signed checkpoint "
    ) in out
    assert f"prescription {rx_id}: TAMPERED — does not match its signature" in out
    assert f"prescription {world.b.prescription_id}:" not in out
    api_status, body = await api.get(f"/api/v1/prescriptions/{rx_id}/verify", as_="gp_zhang")
    assert api_status == 200 and body["valid"] is False, body


async def test_audit_verify_names_deleted_checkpoints(settings: Settings, world: World) -> None:
    for _ in range(2):
        code, out = await yihao(settings, "audit", "checkpoint")
        assert code == 0, out
    latest = re.findall(r"checkpoint (\d+) signed: .*\(hash ([0-9a-f]{64})\)", out)[0]
    last = int(latest[0])
    async with world.services.db.transaction() as tx:
        await tx.session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq == last - 1))
    code, out = await yihao(settings, "audit", "verify")
    assert code == 1, out
    assert f"audit checkpoints BROKEN: checkpoint {last - 1} is missing" in out
    # Nor does any node sign on top of the gap.
    code, out = await yihao(settings, "audit", "checkpoint")
    assert code == 1, out
    # The latest deleted too, the head rolled back to the one before: no gap is left to see,
    # so the checkpoint an auditor noted earlier is the witness.
    async with world.services.db.transaction() as tx:
        await tx.session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq >= last - 1))
        before = await tx.session.get(AuditCheckpoint, last - 2)
        assert before is not None
        await tx.session.execute(update(CheckpointHead).values(seq=before.seq, hash=before.hash))
    code, out = await yihao(settings, "audit", "verify")
    assert code == 0, out
    code, out = await yihao(
        settings, "audit", "verify", "--expect-checkpoint", f"{latest[0]}:{latest[1]}"
    )
    assert code == 1, out
    assert f"audit checkpoints BROKEN: checkpoint {last}, noted earlier, is missing" in out
    # Deleted without fixing the head: the head names it.
    async with world.services.db.transaction() as tx:
        await tx.session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq == last - 2))
    code, out = await yihao(settings, "audit", "verify")
    assert code == 1, out
    assert (
        f"checkpoints after checkpoint {last - 3} were removed (the checkpoint head is at {last - 2})"
        in out
    )


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


async def test_keygen_makes_a_private_key_file_and_never_overwrites_one(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "new_checkpoint_key"
    code, out = await yihao(settings, "audit", "keygen", str(path))
    assert code == 0, out
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert "-----BEGIN PUBLIC KEY-----" in out
    before = path.read_bytes()
    code, out = await yihao(settings, "audit", "keygen", str(path))
    assert code == 1
    assert path.read_bytes() == before
