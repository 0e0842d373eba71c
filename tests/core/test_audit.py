"""The audit chain: every administrative action leaves an entry; tampering is found."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import delete, select, update

from server.config import Settings
from server.container import Services
from server.core.audit import AuditEvent
from server.core.checkpoints import AuditCheckpoint
from server.core.errors import Conflict
from server.identity.models import User
from tests.helpers import Api


async def _entries(services: Services) -> list[AuditEvent]:
    async with services.db.read() as session:
        return list((await session.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all())


async def test_actions_are_audited_with_who_and_where(api: Api, network: Services) -> None:
    await api.post(
        "/api/v1/institutions",
        as_="admin",
        json={"code": "JMZX", "name": "即墨区中医医院", "kind": "secondary"},
        headers={"X-Request-Id": "req-audit-1"},
    )
    entries = await _entries(network)
    login = [e for e in entries if e.action == "auth.login" and e.outcome == "success"][-1]
    created = [e for e in entries if e.action == "institution.create"][-1]
    assert created.actor_role == "platform_admin"
    assert created.actor_user_id == login.actor_user_id
    assert created.ip == "127.0.0.1"
    assert created.request_id == "req-audit-1"
    assert created.details == {"code": "JMZX", "kind": "secondary"}
    # The chain links each entry to the one before it.
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    result = await network.audit.verify()
    assert result.ok and result.checked == len(entries)


async def test_verify_finds_an_edited_entry(network: Services) -> None:
    async with network.db.transaction() as tx:
        await tx.session.execute(
            update(AuditEvent).where(AuditEvent.seq == 5).values(action="user.delete")
        )
    result = await network.audit.verify()
    assert not result.ok
    assert (result.broken_at, result.problem) == (5, "content was changed")
    assert result.checked == 4


async def test_verify_finds_a_deleted_entry(network: Services) -> None:
    async with network.db.transaction() as tx:
        await tx.session.execute(delete(AuditEvent).where(AuditEvent.seq == 7))
    result = await network.audit.verify()
    assert not result.ok
    assert (result.broken_at, result.problem) == (7, "entry 7 is missing")


async def test_verify_finds_reordered_entries(network: Services) -> None:
    async with network.db.transaction() as tx:
        # Swap the positions of entries 3 and 4 (moving one aside to keep the key unique).
        await tx.session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(seq=-3))
        await tx.session.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(seq=3))
        await tx.session.execute(update(AuditEvent).where(AuditEvent.seq == -3).values(seq=4))
    result = await network.audit.verify()
    assert not result.ok
    assert result.broken_at == 3


async def test_verify_finds_entries_cut_from_the_end(network: Services) -> None:
    last = (await _entries(network))[-1].seq
    async with network.db.transaction() as tx:
        await tx.session.execute(delete(AuditEvent).where(AuditEvent.seq >= last - 1))
    result = await network.audit.verify()
    assert not result.ok
    assert result.problem == "entries after this were removed"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The checkpoint job on an interval no test lasts across: the tests run its ticks."""
    return settings.with_overrides(checkpoint_interval_seconds=10**6)


async def _checkpoints(services: Services) -> list[AuditCheckpoint]:
    async with services.db.read() as session:
        return list(
            (await session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))).all()
        )


async def test_the_periodic_job_checkpoints_the_head_when_it_moved(
    api: Api, network: Services
) -> None:
    assert network.jobs.jobs["audit.checkpoint"].every == 10**6
    # Ticks far past the clock's: the app's own loop cannot have claimed them first.
    tick = 10**12
    assert await network.jobs.run_tick("audit.checkpoint", tick)
    first = (await _checkpoints(network))[-1]
    head = (await _entries(network))[-1]
    assert first.content["kind"] == "periodic"
    assert first.content["audit"] == {"seq": head.seq, "hash": head.hash}
    # Nothing happened since: an idle network does not grow the table.
    assert await network.jobs.run_tick("audit.checkpoint", tick + 1)
    assert (await _checkpoints(network))[-1].seq == first.seq
    await api.post(
        "/api/v1/institutions",
        as_="admin",
        json={"code": "JMZX", "name": "即墨区中医医院", "kind": "secondary"},
    )
    assert await network.jobs.run_tick("audit.checkpoint", tick + 2)
    second = (await _checkpoints(network))[-1]
    assert second.seq == first.seq + 1
    assert second.content["prev"] == first.hash
    assert second.content["audit"]["seq"] > head.seq
    report = await network.checkpoints.verify_audit()
    assert report.ok and report.checkpoints.checked == second.seq


async def test_a_practitioner_key_is_checkpointed_in_the_transaction_that_makes_it(
    network: Services,
) -> None:
    async with network.db.transaction() as tx:
        dr_li = await tx.session.scalar(select(User.id).where(User.username == "dr_li"))
        assert dr_li is not None
        signature = await network.signer.sign(tx.session, dr_li, {"n": 1})
    (checkpoint,) = await _checkpoints(network)
    assert checkpoint.content["kind"] == "key"
    assert checkpoint.content["keys"] == {str(dr_li): signature.key_id}
    async with network.db.read() as session:
        assert await network.signer.verify(session, dr_li, signature, {"n": 1})


async def test_no_checkpoint_is_signed_over_a_broken_chain(network: Services) -> None:
    await network.checkpoints.checkpoint()
    async with network.db.transaction() as tx:
        await network.audit.record(tx.session, "test.entry")
    last = (await _entries(network))[-1].seq

    async def set_action(action: str) -> None:
        async with network.db.transaction() as tx:
            await tx.session.execute(
                update(AuditEvent).where(AuditEvent.seq == last).values(action=action)
            )

    # An entry after the latest checkpoint, edited (without recomputing the chain).
    await set_action("user.delete")
    with pytest.raises(Conflict) as caught:
        await network.checkpoints.checkpoint()
    assert f"the audit chain is broken at entry {last} (content was changed)" in caught.value.detail
    await set_action("test.entry")  # put back: the chain is whole again
    covering = await network.checkpoints.checkpoint()
    assert covering.content["audit"]["seq"] == last
    # The very entry the latest checkpoint signed, edited.
    await set_action("user.delete")
    with pytest.raises(Conflict) as caught:
        await network.checkpoints.checkpoint()
    assert f"the audit chain is broken at entry {last}" in caught.value.detail
    assert (await _checkpoints(network))[-1].seq == covering.seq
