"""Electronic signatures: an Ed25519 key per practitioner over canonical JSON.

What is signed is the content's canonical form, named by the signature's ``canon``:
``"jcs"`` is RFC 8785 (every signature made now); a signature without ``canon`` was made
before RFC 8785 and is verified over the older form
(:func:`server.core.canonical.canonical_json_v1`), so signatures already stored keep
verifying. ``docs/signatures.md`` says how an outside verifier rebuilds the bytes.

The server keeps each practitioner's private key encrypted (AES-256-GCM under
a key derived from the server secret) and signs only on that practitioner's
own authenticated request. A signature names its key by fingerprint; anyone
holding the public key can verify it later, without the server secret. Any
change to the signed content makes verification fail.

A key is written in the same transaction as a signed checkpoint naming it
(``server/core/checkpoints.py``), and a signature counts only if its key is in
such a checkpoint: a key put on an account behind the server's back, and
whatever was signed with it, do not verify.
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.config import Settings
from server.core.canonical import canonical_jcs, canonical_json_v1
from server.core.db import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from server.core.checkpoints import Checkpoints

ALGORITHM = "Ed25519"
# The canonical form new signatures are made over (RFC 8785).
CANON = "jcs"


class PractitionerKey(Base):
    __tablename__ = "practitioner_keys"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    public_key: Mapped[str] = mapped_column(String(64), nullable=False)
    private_key_enc: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Signature(BaseModel):
    alg: str = ALGORITHM
    key_id: str
    public_key: str
    value: str
    signed_at: datetime
    # The canonical form the value signs: "jcs" (RFC 8785); None for signatures made before
    # it, which sign canonical_json_v1. Stored signatures without the field read as None.
    canon: Literal["jcs"] | None = None


def signed_bytes(signature: Signature, payload: Any) -> bytes:
    """The exact bytes ``signature`` covers for ``payload``, in the form it names."""
    return canonical_jcs(payload) if signature.canon == CANON else canonical_json_v1(payload)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def verify_signature(signature: Signature, payload: Any) -> bool:
    """Check a signature against content with the public key it carries."""
    try:
        raw = _unb64(signature.public_key)
        if hashlib.sha256(raw).hexdigest() != signature.key_id:
            return False
        Ed25519PublicKey.from_public_bytes(raw).verify(
            _unb64(signature.value), signed_bytes(signature, payload)
        )
    except (InvalidSignature, ValueError):
        return False
    return signature.alg == ALGORITHM


class KeyOnFile(NamedTuple):
    fingerprint: str
    public_key: str


class Signer:
    def __init__(self, settings: Settings, checkpoints: Checkpoints) -> None:
        self.checkpoints = checkpoints
        self._kek = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"yihao practitioner keys"
        ).derive(settings.secret_key.encode())
        # Keys already on file when first read (fingerprint, public key, private key): a
        # practitioner's key never changes once committed, so signing reads it once per
        # process. A key created in a transaction is not kept (that transaction may roll back).
        self._keys: dict[int, tuple[KeyOnFile, bytes]] = {}

    async def _key(self, session: AsyncSession, user_id: int) -> tuple[KeyOnFile, bytes]:
        """The practitioner's key on file and its raw private key."""
        known = self._keys.get(user_id)
        if known is not None:
            return known
        row = await session.get(PractitionerKey, user_id)
        committed = row is not None
        if row is None:
            private = Ed25519PrivateKey.generate()
            public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            nonce = os.urandom(12)
            sealed = AESGCM(self._kek).encrypt(
                nonce, private.private_bytes_raw(), str(user_id).encode()
            )
            insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
            # Two first signatures at once: one key wins, both then use it.
            created = await session.scalar(
                insert(PractitionerKey)
                .values(
                    user_id=user_id,
                    fingerprint=hashlib.sha256(public).hexdigest(),
                    public_key=_b64(public),
                    private_key_enc=_b64(nonce + sealed),
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["user_id"])
                .returning(PractitionerKey.fingerprint)
            )
            if created is not None:
                # Signed outside the database in the same transaction: no key without it.
                await self.checkpoints.write(session, "key", {user_id: created})
            row = await session.get(PractitionerKey, user_id)
            assert row is not None
        blob = _unb64(row.private_key_enc)
        raw_private = AESGCM(self._kek).decrypt(blob[:12], blob[12:], str(user_id).encode())
        key = (KeyOnFile(row.fingerprint, row.public_key), raw_private)
        if committed:
            self._keys[user_id] = key
        return key

    async def sign(self, session: AsyncSession, user_id: int, payload: Any) -> Signature:
        """Sign ``payload`` (RFC 8785) with the practitioner's key, creating it on first use."""
        on_file, raw_private = await self._key(session, user_id)
        value = Ed25519PrivateKey.from_private_bytes(raw_private).sign(canonical_jcs(payload))
        return Signature(
            key_id=on_file.fingerprint,
            public_key=on_file.public_key,
            value=_b64(value),
            signed_at=utcnow(),
            canon=CANON,
        )

    async def verify(
        self, session: AsyncSession, user_id: int, signature: Signature, payload: Any
    ) -> bool:
        """Verify, and that the key is the one on file and in a signed checkpoint for them."""
        fingerprint = await session.scalar(
            select(PractitionerKey.fingerprint).where(PractitionerKey.user_id == user_id)
        )
        return (
            fingerprint == signature.key_id
            and verify_signature(signature, payload)
            and await self.checkpoints.check_key(session, user_id, signature.key_id)
        )
