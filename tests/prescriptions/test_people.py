"""What prescribing reads of the people in one statement: the prescriber's right, the
patient (and their account), the pharmacy asked for, the prescriber's institution."""

from __future__ import annotations

from sqlalchemy import update

from server.identity.models import User
from tests.helpers import Api
from tests.prescriptions.conftest import PATIENT, World, prescription

RX = "/api/v1/prescriptions"


async def test_only_a_prescriber_with_the_right_prescribes(api: Api, world: World) -> None:
    body = prescription(world)
    for path in (RX, f"{RX}/check"):
        status, problem = await api.post(path, as_="nurse_he", json=body)
        assert status == 403, problem  # not a prescriber's role (refused at the route)

    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            update(User).where(User.username == "dr_li").values(can_prescribe=False)
        )
    for path in (RX, f"{RX}/check"):
        status, problem = await api.post(path, as_="dr_li", json=body)
        assert status == 403 and problem["code"] == "no_prescribing_right", problem
    status, mine = await api.get(RX, as_="dr_li")
    assert status == 200 and mine["items"] == []

    async with world.services.db.transaction() as tx:
        await tx.session.execute(
            update(User).where(User.username == "dr_li").values(can_prescribe=True)
        )
    status, created = await api.post(RX, as_="dr_li", json=body)
    assert status == 201, created


async def test_a_routed_prescription_carries_the_people_read_with_it(
    api: Api, world: World
) -> None:
    """The pharmacy's copy names the prescriber's institution and the patient (masked);
    the patient's own account hears of it; the pharmacist's reads say the same."""
    patient = await api.socket(PATIENT)
    status, created = await api.post(
        RX, as_="dr_li", json=prescription(world, pharmacy_id=world.hcyf)
    )
    assert status == 201, created
    event = await patient.wait_for(
        lambda e: e["type"] == "prescription" and e["data"]["prescription_id"] == created["id"]
    )
    assert event["op"] == "created"

    status, copy = await api.get(f"{RX}/{created['id']}", as_="pharmacist_chen")
    assert status == 200, copy
    assert copy["prescriber"]["institution_name"] == "青岛市立医院"
    assert copy["prescriber"]["name"] == "李明" and copy["prescriber"]["title"] == "主任医师"
    assert copy["patient"]["name"] == "钱国华"
    assert "*" in copy["patient"]["resident_id_masked"]
    assert copy["content"]["patient"]["resident_id"] == copy["patient"]["resident_id_masked"]
