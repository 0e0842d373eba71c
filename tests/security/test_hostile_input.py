"""Regressions from fuzzing: values the database cannot hold are the client's 4xx, never a 500."""

from __future__ import annotations

from server.container import Services
from tests.helpers import Api


async def test_an_id_beyond_any_row_is_not_found(api: Api, network: Services) -> None:
    for path in ("/api/v1/consults/99999999999999999999999", "/api/v1/prescriptions/2147483648"):
        status, body = await api.get(path, as_="gp_zhang")
        assert status == 404, body
        assert body["status"] == 404


async def test_a_huge_number_in_a_body_is_refused_as_out_of_range(
    api: Api, network: Services
) -> None:
    status, body = await api.post(
        "/api/v1/appointments", as_="patient_sun", json={"slot_id": 2**70}
    )
    assert status == 422, body
    assert body["code"] == "out_of_range"
    status, body = await api.post("/api/v1/inbox/read", as_="gp_zhang", json={"ids": [2**63 + 5]})
    assert status == 422, body


async def test_a_date_at_the_edge_of_the_calendar_is_refused(api: Api, network: Services) -> None:
    # 23:00 at UTC-12 on the last day of 9999 is in the year 10000 in UTC.
    status, body = await api.get(
        "/api/v1/slots", as_="patient_sun", params={"start_from": "9999-12-31T23:00:00-12:00"}
    )
    assert status == 422, body
    assert body["code"] == "out_of_range"


async def test_a_huge_number_in_a_socket_event_is_a_problem_in_the_ack(
    api: Api, network: Services
) -> None:
    sock = await api.socket("gp_zhang")
    ack = await sock.call("inbox.read", {"ids": [2**64]})
    assert ack["ok"] is False
    assert ack["problem"]["status"] == 422
    assert ack["problem"]["code"] == "out_of_range"
    assert sock.sio.connected
