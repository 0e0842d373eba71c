"""Practitioner signatures: verifiable by public key, and any change is detected.

New signatures are over RFC 8785 and say so (``canon: "jcs"``); signatures made before
it carry no ``canon`` and still verify over the old form.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select

from server.container import Services
from server.core.canonical import canonical_jcs, canonical_json_v1
from server.core.db import utcnow
from server.core.signing import Signature, verify_signature
from server.identity.models import User

DOSE = {"drug": "布洛芬缓释胶囊", "dose": 20.0, "unit": "mg", "days": 3, "note": "饭后\n服"}


async def test_signature_verifies_and_detects_tampering(network: Services) -> None:
    content = {"patient": 1, "items": [{"drug": "氨氯地平片", "dose": "5 mg"}], "days": 7}
    async with network.db.transaction() as tx:
        dr_li = await tx.session.scalar(select(User.id).where(User.username == "dr_li"))
        gp_zhang = await tx.session.scalar(select(User.id).where(User.username == "gp_zhang"))
        assert dr_li is not None and gp_zhang is not None
        signature = await network.signer.sign(tx.session, dr_li, content)
        again = await network.signer.sign(tx.session, dr_li, content)
    assert signature.key_id == again.key_id  # one key per practitioner, kept
    assert verify_signature(signature, content)
    tampered = {**content, "days": 70}
    assert not verify_signature(signature, tampered)
    forged = Signature(**{**signature.model_dump(), "value": again.value[:-4] + "AAA="})
    assert not verify_signature(forged, content)
    async with network.db.read() as session:
        assert await network.signer.verify(session, dr_li, signature, content)
        # A valid signature presented as someone else's is refused.
        assert not await network.signer.verify(session, gp_zhang, signature, content)


async def test_two_first_signatures_at_once_share_one_key(network: Services) -> None:
    async with network.db.read() as session:
        dr_wang = await session.scalar(select(User.id).where(User.username == "dr_wang"))
    assert dr_wang is not None

    async def sign(n: int) -> Signature:
        async with network.db.transaction() as tx:
            return await network.signer.sign(tx.session, dr_wang, {"n": n})

    first, second = await asyncio.gather(sign(1), sign(2))
    assert first.key_id == second.key_id
    assert verify_signature(first, {"n": 1}) and verify_signature(second, {"n": 2})


def test_the_two_canonical_forms() -> None:
    assert canonical_json_v1({"dose": 20.0, "a": 1}) == b'{"a":1,"dose":20.0}'
    # RFC 8785: numbers as ECMAScript writes them, so a JavaScript verifier gets the same bytes.
    assert canonical_jcs({"dose": 20.0, "a": 1}) == b'{"a":1,"dose":20}'
    assert canonical_jcs({"dose": 0.1, "big": 1e21}) == b'{"big":1e+21,"dose":0.1}'
    assert canonical_jcs({"名": "王", "é": 1}) == '{"é":1,"名":"王"}'.encode()


async def test_a_new_signature_is_over_rfc_8785(network: Services) -> None:
    async with network.db.transaction() as tx:
        dr_li = await tx.session.scalar(select(User.id).where(User.username == "dr_li"))
        assert dr_li is not None
        signature = await network.signer.sign(tx.session, dr_li, DOSE)
    assert signature.model_dump(mode="json")["canon"] == "jcs"
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(signature.public_key))
    jcs = '{"days":3,"dose":20,"drug":"布洛芬缓释胶囊","note":"饭后\\n服","unit":"mg"}'
    public.verify(base64.b64decode(signature.value), jcs.encode())  # raises if not these bytes
    assert verify_signature(signature, DOSE)
    # 20.0 and 20 are one number in JSON: the signature holds whichever a parser gives back.
    assert verify_signature(signature, {**DOSE, "dose": 20})
    assert not verify_signature(signature, {**DOSE, "dose": 20.5})
    # The form is part of what is checked: relabelled as the old form, it no longer verifies.
    assert not verify_signature(signature.model_copy(update={"canon": None}), DOSE)


async def test_a_signature_from_before_rfc_8785_still_verifies(network: Services) -> None:
    """A stored signature without ``canon`` was made over ``canonical_json_v1``."""
    async with network.db.transaction() as tx:
        dr_li = await tx.session.scalar(select(User.id).where(User.username == "dr_li"))
        assert dr_li is not None
        current = await network.signer.sign(tx.session, dr_li, DOSE)
        _row, raw_private = await network.signer._key(tx.session, dr_li)
    old_value = Ed25519PrivateKey.from_private_bytes(raw_private).sign(canonical_json_v1(DOSE))
    stored = {  # as a database from before RFC 8785 holds it: no "canon"
        "alg": "Ed25519",
        "key_id": current.key_id,
        "public_key": current.public_key,
        "value": base64.b64encode(old_value).decode(),
        "signed_at": utcnow().isoformat(),
    }
    old = Signature.model_validate(stored)
    assert old.canon is None
    assert verify_signature(old, DOSE)
    assert not verify_signature(old, {**DOSE, "days": 30})  # tampering still fails
    assert not verify_signature(old.model_copy(update={"canon": "jcs"}), DOSE)
    async with network.db.read() as session:
        assert await network.signer.verify(session, dr_li, old, DOSE)
        assert not await network.signer.verify(session, dr_li, old, {**DOSE, "unit": "g"})


def test_an_unknown_canonical_form_is_refused() -> None:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes_raw()
    fields = {
        "key_id": hashlib.sha256(raw).hexdigest(),
        "public_key": base64.b64encode(raw).decode(),
        "value": base64.b64encode(private.sign(canonical_jcs(DOSE))).decode(),
        "signed_at": utcnow().isoformat(),
    }
    assert verify_signature(Signature.model_validate({**fields, "canon": "jcs"}), DOSE)
    with pytest.raises(ValueError):
        Signature.model_validate({**fields, "canon": "c14n-2"})
