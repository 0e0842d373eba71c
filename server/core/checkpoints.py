"""Signed checkpoints: what an insider with database access cannot redo.

The audit chain and the practitioners' keys live in the database, so whoever
can write to it can edit an audit entry and recompute every hash after it, or
put a key of their own on a doctor's account and re-sign a prescription. A
checkpoint pins that state with a signature by a key that is *not* in the
database (a file named by ``YIHAO_CHECKPOINT_KEY_FILE``, or a KMS behind
:class:`CheckpointSigner`)::

    {"n": 7, "at": "…", "kind": "periodic" | "key" | "manual", "prev": <hash of checkpoint 6>,
     "audit": {"seq": 1234, "hash": "…"},               # the audit head
     "keys": {"12": "<fingerprint>", …},                 # keys that first appear here
     "keys_digest": sha256(checkpoint 6's keys_digest + canonical(keys))}

Checkpoints are chained like the audit entries (``prev``), so one deleted from
the middle is named; ``keys_digest`` folds every key ever checkpointed, so the
key history cannot be cut either. They are written by one node per interval
(a lease job, only when the audit head moved), in the very transaction that
creates a practitioner's key, and by ``yihao audit checkpoint``. The first
checkpoint takes every key already on file (installs older than checkpoints).

Verification needs only the public key (``YIHAO_CHECKPOINT_PUBLIC_KEY_FILE``):
``yihao audit verify`` names an audit entry whose hash differs from a signed
checkpoint; a signature is trusted only if its key appears in a signed
checkpoint for that practitioner (:meth:`Checkpoints.check_key`). What is
newer than the latest checkpoint is protected by the hash chain alone.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from sqlalchemy import JSON, BigInteger, Integer, String, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.audit import GENESIS, AuditEvent, AuditLog, Expected, VerifyResult
from server.core.canonical import canonical_json_v1
from server.core.db import Base, Database, UTCDateTime, utcnow
from server.core.errors import Conflict, ServiceUnavailable
from server.core.signing import PractitionerKey

logger = logging.getLogger(__name__)

Kind = str  # "periodic" | "key" | "manual"


# --- the key, outside the database --------------------------------------------------------


class KeyFileError(Exception):
    """A checkpoint key file is missing or not an Ed25519 key; ``public`` says which one."""

    def __init__(self, message: str, *, public: bool = False) -> None:
        super().__init__(message)
        self.public = public


class CheckpointSigner(Protocol):
    """Signs checkpoints; a KMS or HSM can stand in for the file, as long as it signs Ed25519."""

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""

    async def sign(self, data: bytes) -> bytes: ...


class FileCheckpointSigner:
    """The private key in a PEM file (a mounted secret in a cluster)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self._public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def from_file(cls, path: Path) -> FileCheckpointSigner:
        return cls(_load_private(path))

    @property
    def public_key(self) -> bytes:
        return self._public

    async def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)


def fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()


def generate_key_file(path: Path) -> bytes:
    """Write a new private key (PEM, mode 0600) and return its raw public key."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    # Created 0600 from the start: never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def ensure_key_file(path: Path) -> Path:
    """The key file at ``path``, made if there is none yet (the embedded mode, benchmarks)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_key_file(path)
    return path


def public_key_pem(public_key: bytes) -> str:
    return (
        Ed25519PublicKey.from_public_bytes(public_key)
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _read(path: Path, public: bool) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}", public=public) from None


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(_read(path, False), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def _load_public(path: Path) -> bytes:
    try:
        key = load_pem_public_key(_read(path, True))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}", public=True) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 key", public=True)
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_key_files(
    private_file: Path | None, public_file: Path | None
) -> tuple[FileCheckpointSigner | None, bytes]:
    """The signer (None when only the public key is given) and the public key to verify with."""
    signer = FileCheckpointSigner.from_file(private_file) if private_file else None
    public = _load_public(public_file) if public_file else None
    if signer is not None and public is not None and public != signer.public_key:
        raise KeyFileError(f"{public_file} is not the public half of {private_file}", public=True)
    if public is None:
        assert signer is not None  # the settings require one of the two
        public = signer.public_key
    return signer, public


# --- the rows ----------------------------------------------------------------------------


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # The signed document (see the module docstring); the columns beside it are for reading.
    content: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # Which checkpoint key signed it (its fingerprint), and the Ed25519 signature (base64).
    key_id: Mapped[str] = mapped_column(String(64), nullable=False)
    signature: Mapped[str] = mapped_column(String(100), nullable=False)


class CheckpointHead(Base):
    """The latest checkpoint; its row lock puts concurrent checkpoint writers in one line."""

    __tablename__ = "checkpoint_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class CheckpointKey(Base):
    """Which checkpoint first signed a practitioner's key: an index into the signed content."""

    __tablename__ = "checkpoint_keys"

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    checkpoint_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json_v1(content)).hexdigest()


def fold_keys(previous_digest: str, keys: dict[str, str]) -> str:
    return hashlib.sha256(previous_digest.encode() + canonical_json_v1(keys)).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def signed_at(row: AuditCheckpoint) -> str:
    """When the checkpoint was signed, from its signed content (the column is only a copy)."""
    return datetime.fromisoformat(row.content["at"]).isoformat(timespec="seconds")


def name(row: AuditCheckpoint) -> str:
    return f"signed checkpoint {row.seq} of {signed_at(row)}"


# --- verifying ---------------------------------------------------------------------------


@dataclass
class CheckpointReport:
    """What the checkpoints prove, after checking each one's signature and the chain of them."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)
    # Audit seq → the hash a genuine checkpoint signed for it.
    audit: dict[int, Expected] = field(default_factory=dict)
    # User id → {fingerprint: the genuine checkpoint that first signed it}.
    keys: dict[int, dict[str, str]] = field(default_factory=dict)
    latest: AuditCheckpoint | None = None
    # The highest audit seq a checkpoint signed so far (while collecting).
    covered: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class AuditReport:
    chain: VerifyResult
    checkpoints: CheckpointReport

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.checkpoints.ok


class Checkpoints:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        signer: CheckpointSigner | None,
        public_key: bytes,
    ) -> None:
        self.db = db
        self.audit = audit
        self.signer = signer
        self.verifier = Ed25519PublicKey.from_public_bytes(public_key)
        self.key_id = fingerprint(public_key)
        # (user id, fingerprint) pairs already found in a genuine checkpoint: a valid
        # signature stays valid, so a positive answer never has to be looked up again.
        self._trusted: set[tuple[int, str]] = set()

    def genuine(self, row: AuditCheckpoint) -> bool:
        """Signed by our checkpoint key, over exactly this content."""
        if row.key_id != self.key_id or content_hash(row.content) != row.hash:
            return False
        try:
            self.verifier.verify(base64.b64decode(row.signature), canonical_json_v1(row.content))
        except (InvalidSignature, ValueError):
            return False
        return row.content.get("n") == row.seq

    # --- writing ---

    async def write(
        self, session: AsyncSession, kind: Kind, keys: dict[int, str] | None = None
    ) -> AuditCheckpoint:
        """Sign the audit head (and ``keys``, new since the last one) inside ``session``'s work."""
        if self.signer is None:
            raise ServiceUnavailable(
                "no checkpoint key on this node (YIHAO_CHECKPOINT_KEY_FILE)",
                code="checkpoint_key_missing",
            )
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        await session.execute(
            insert(CheckpointHead).values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing()
        )
        head = (
            await session.execute(
                update(CheckpointHead)
                .where(CheckpointHead.id == 1)
                .values(seq=CheckpointHead.seq + 1)
                .returning(CheckpointHead.seq, CheckpointHead.hash)
            )
        ).one()
        n, prev_hash = head.seq, head.hash
        keys_digest, new_keys = GENESIS, {str(k): v for k, v in (keys or {}).items()}
        if n == 1:
            # The first checkpoint vouches for the keys made before checkpoints existed.
            on_file = (
                await session.execute(select(PractitionerKey.user_id, PractitionerKey.fingerprint))
            ).all()
            new_keys = {str(user_id): fp for user_id, fp in on_file} | new_keys
        else:
            previous = await session.get(AuditCheckpoint, n - 1)
            if previous is None or previous.hash != prev_hash or not self.genuine(previous):
                # Never sign on top of a chain someone broke: that would bless the break.
                logger.error("checkpoint chain broken; not signing", extra={"checkpoint": n - 1})
                raise Conflict(
                    f"checkpoint {n - 1} is missing or changed; run `yihao audit verify`",
                    code="checkpoint_chain_broken",
                )
            keys_digest = previous.content["keys_digest"]
        audit_seq, audit_hash = await self.audit.head(session)
        at = utcnow()
        content = {
            "n": n,
            "at": at.isoformat(),
            "kind": kind,
            "prev": prev_hash,
            "audit": {"seq": audit_seq, "hash": audit_hash},
            "keys": new_keys,
            "keys_digest": fold_keys(keys_digest, new_keys),
        }
        row = AuditCheckpoint(
            seq=n,
            at=at,
            content=content,
            hash=content_hash(content),
            key_id=self.key_id,
            signature=_b64(await self.signer.sign(canonical_json_v1(content))),
        )
        session.add(row)
        session.add_all(
            CheckpointKey(user_id=int(user_id), fingerprint=fp, checkpoint_seq=n)
            for user_id, fp in new_keys.items()
        )
        await session.execute(
            update(CheckpointHead).where(CheckpointHead.id == 1).values(hash=row.hash)
        )
        return row

    async def checkpoint(self, kind: Kind = "manual", *, force: bool = True) -> AuditCheckpoint:
        """A checkpoint in a transaction of its own, over a chain checked since the last one.

        Without ``force`` nothing is written when the audit head has not moved (the
        periodic job: an idle network does not grow the table). Returns the latest.
        """
        async with self.db.read() as session:
            latest = await self._latest(session)
            head = await self.audit.head(session)
            count = await session.scalar(select(func.count()).select_from(AuditCheckpoint))
        if latest is not None and count != latest.seq:
            logger.error("checkpoints missing; not checkpointing", extra={"checkpoint": latest.seq})
            raise Conflict(
                f"checkpoints before checkpoint {latest.seq} are missing; run `yihao audit verify`",
                code="checkpoint_chain_broken",
            )
        after, expected = (0, GENESIS), {}
        if latest is not None:
            signed = latest.content["audit"]
            if not force and (signed["seq"], signed["hash"]) == head:
                return latest
            if signed["seq"] > 0:
                # From the checkpointed entry itself: it must still have the signed hash.
                async with self.db.read() as session:
                    entry = await session.get(AuditEvent, signed["seq"])
                after = (signed["seq"] - 1, entry.prev_hash if entry else GENESIS)
                expected = {signed["seq"]: Expected(signed["hash"], name(latest))}
        # A checkpoint blesses what it covers; a chain already broken is refused, not signed.
        chain = await self.audit.verify(after=after, expected=expected)
        if not chain.ok:
            logger.error("audit chain broken; not checkpointing", extra={"seq": chain.broken_at})
            raise Conflict(
                f"the audit chain is broken at entry {chain.broken_at} ({chain.problem}); "
                "run `yihao audit verify`",
                code="audit_chain_broken",
            )
        async with self.db.transaction() as tx:
            return await self.write(tx.session, kind)

    async def run_tick(self, tick: int) -> None:
        await self.checkpoint("periodic", force=False)

    @staticmethod
    async def _latest(session: AsyncSession) -> AuditCheckpoint | None:
        return await session.scalar(
            select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1)
        )

    # --- verifying ---

    async def verify_checkpoints(self, batch: int = 1000) -> CheckpointReport:
        """Check every checkpoint's signature and the chain of them; collect what they sign."""
        report = CheckpointReport()
        expected_n, prev_hash, keys_digest, last = 1, GENESIS, GENESIS, 0
        previous: AuditCheckpoint | None = None
        async with self.db.read() as session:
            while True:
                rows = (
                    await session.scalars(
                        select(AuditCheckpoint)
                        .where(AuditCheckpoint.seq > last)
                        .order_by(AuditCheckpoint.seq)
                        .limit(batch)
                    )
                ).all()
                for row in rows:
                    last = row.seq
                    if not self.genuine(row):
                        # Forged or edited: nothing it says is believed.
                        report.problems.append(
                            f"checkpoint {row.seq}: the signature does not verify "
                            "(edited, or not signed with the checkpoint key)"
                        )
                        continue
                    if row.seq != expected_n:
                        missing = f"{expected_n}" + (
                            f"–{row.seq - 1}" if row.seq - 1 > expected_n else ""
                        )
                        report.problems.append(f"checkpoint {missing} is missing")
                    elif row.content["prev"] != prev_hash:
                        report.problems.append(
                            f"checkpoint {row.seq} does not follow checkpoint {row.seq - 1}"
                        )
                    elif row.content["keys_digest"] != fold_keys(keys_digest, row.content["keys"]):
                        report.problems.append(f"checkpoint {row.seq}: the key history differs")
                    self._collect(report, row)
                    expected_n, prev_hash, previous = row.seq + 1, row.hash, row
                    keys_digest = row.content["keys_digest"]
                if len(rows) < batch:
                    break
            head = await session.get(CheckpointHead, 1)
        report.latest = previous
        if head is not None and (head.seq, head.hash) != (expected_n - 1, prev_hash):
            report.problems.append(
                f"checkpoints after checkpoint {expected_n - 1} were removed "
                f"(the checkpoint head is at {head.seq})"
            )
        elif head is None and previous is not None:
            report.problems.append("the checkpoint head is missing")
        return report

    @staticmethod
    def _collect(report: CheckpointReport, row: AuditCheckpoint) -> None:
        report.checked += 1
        seq, signed_hash = int(row.content["audit"]["seq"]), str(row.content["audit"]["hash"])
        if seq > report.covered:
            # The walk stops at the first checkpoint that differs, so every earlier one
            # matched: the rewritten entry lies between the two.
            since = f"; the change lies after entry {report.covered}" if report.covered else ""
            report.audit[seq] = Expected(signed_hash, name(row), since)
            report.covered = seq
        for user_id, fp in row.content["keys"].items():
            report.keys.setdefault(int(user_id), {}).setdefault(fp, name(row))

    async def verify_audit(self) -> AuditReport:
        """``yihao audit verify``: the chain, every checkpoint, and the chain against them."""
        checkpoints = await self.verify_checkpoints()
        chain = await self.audit.verify(expected=checkpoints.audit)
        return AuditReport(chain, checkpoints)

    async def check_keys(self) -> list[tuple[int, str]]:
        """Every practitioner key on file against the checkpoints: ``(user id, problem)``."""
        report = await self.verify_checkpoints()
        problems = []
        async with self.db.read() as session:
            on_file = (
                await session.execute(select(PractitionerKey.user_id, PractitionerKey.fingerprint))
            ).all()
        for user_id, fp in on_file:
            signed = report.keys.get(user_id, {})
            if fp in signed:
                continue
            if signed:
                first, where = next(iter(signed.items()))
                problems.append(
                    (user_id, f"key {fp[:16]}… is not the key in {where} ({first[:16]}…)")
                )
            else:
                problems.append((user_id, f"key {fp[:16]}… is in no signed checkpoint"))
        return problems

    async def check_key(self, session: AsyncSession, user_id: int, key_fingerprint: str) -> bool:
        """Whether a genuine checkpoint signed this practitioner's key (for every signature check)."""
        if (user_id, key_fingerprint) in self._trusted:
            return True
        row = await session.scalar(
            select(AuditCheckpoint)
            .join(CheckpointKey, CheckpointKey.checkpoint_seq == AuditCheckpoint.seq)
            .where(CheckpointKey.user_id == user_id, CheckpointKey.fingerprint == key_fingerprint)
        )
        # The index row only points; the signed content must say so itself.
        if (
            row is None
            or not self.genuine(row)
            or row.content["keys"].get(str(user_id)) != key_fingerprint
        ):
            return False
        self._trusted.add((user_id, key_fingerprint))
        return True

    async def check_expected(self, noted: str) -> str | None:
        """A checkpoint an auditor noted outside the database (``N:HASH``) must still be there.

        What is deleted from the end of the checkpoint chain leaves no gap to see; a
        checkpoint kept elsewhere (the last ``audit verify`` output) is the witness.
        """
        number, _, expected = noted.partition(":")
        if not number.isdigit() or len(expected) != 64:
            return f"--expect-checkpoint {noted!r}: expected N:HASH (64 hex digits)"
        async with self.db.read() as session:
            row = await session.get(AuditCheckpoint, int(number))
        if row is None:
            return f"checkpoint {number}, noted earlier, is missing"
        if row.hash != expected or not self.genuine(row):
            return f"checkpoint {number} is not the one noted earlier"
        return None
