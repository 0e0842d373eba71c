"""Practitioner signatures: verifiable by public key, and any change is detected."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from server.container import Services
from server.core.signing import Signature, verify_signature
from server.identity.models import User


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
