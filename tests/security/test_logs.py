"""No patient data in logs, even at DEBUG.

The main flows — login, registering and looking up a patient, pushing a FHIR
record, a consult with its opinion and chat, a prescription to a pharmacy that
searches its queue by name, a referral — run against the app served as
``yihao serve`` serves it (its access-log class), with the server's own log
setup at DEBUG and aiohttp.access, socketio and engineio forced to DEBUG too.
Every line, with its structured fields (the JSON formatter), is searched for
the patients' names, resident IDs and phone numbers.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.core.observability import JsonFormatter, QuerylessAccessLogger, setup_logging
from server.seed import PATIENTS, seed_demo
from tests.helpers import Api
from tests.security.world import build_world

# Forced to DEBUG. (The Socket.IO server is created with logger=False and
# engineio_logger=False, which pins its own loggers to ERROR: engine.io logs packet
# payloads — chat text — at INFO, so they stay off; docs/security.md.)
LOUD = ("aiohttp.access", "aiohttp.server", "aiohttp.web", "socketio", "engineio", "asyncio")


class ServedLikeServe(TestServer):
    """The test server with ``yihao serve``'s access logging (tests default to aiohttp's)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs.update(access_log_class=QuerylessAccessLogger)
        return web.AppRunner(self.app, **kwargs)


def secrets_of_patients() -> dict[str, str]:
    found: dict[str, str] = {}
    for p in PATIENTS:
        found[f"{p.username} name"] = p.name
        found[f"{p.username} resident id"] = p.resident_id
        found[f"{p.username} phone"] = p.phone
    return found


async def test_main_flows_at_debug_log_no_patient_data(
    aiohttp_client: Any, settings: Settings
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in LOUD})
    captured = io.StringIO()
    setup_logging("DEBUG", "json")  # what `yihao serve` does with YIHAO_LOG_LEVEL=DEBUG
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root.addHandler(handler)
    for name in LOUD:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        app = create_app(settings.with_overrides(log_level="DEBUG"))
        api = Api(await aiohttp_client(ServedLikeServe(app)))
        services: Services = app[SERVICES]
        await seed_demo(services)
        world = await build_world(api, services)  # register, push, consult, opinion, rx, referral
        a = world.a
        name, resident = PATIENTS[3].name, PATIENTS[3].resident_id
        # Look-ups that carry patient data in the query string.
        status, _ = await api.get(f"/api/v1/pharmacy/prescriptions?patient={name}",
                                  as_="pharmacist_chen")  # fmt: skip
        assert status == 200
        status, _ = await api.get(f"/api/v1/pharmacy/prescriptions?patient={resident}",
                                  as_="pharmacist_chen")  # fmt: skip
        assert status == 200
        status, _ = await api.get(
            f"/fhir/Patient?identifier=urn:oid:2.16.840.1.113883.2.23.1.8.4.1|{resident}",
            as_="gp_zhang",
        )
        assert status == 200
        status, _ = await api.get(f"/api/v1/patients/{a.patient_id}/summary", as_="gp_zhang")
        assert status == 200
        # Chat in the consult, with the patient's name and phone in the text.
        sock = await api.socket("gp_zhang")
        ack = await sock.call("consult.chat", {"consult_id": a.consult_id,
                                               "client_id": "logs-chat-0001",
                                               "text": f"{name} 电话 {PATIENTS[3].phone}"})  # fmt: skip
        assert ack["ok"], ack
        # Refusals and bad input that name a patient.
        status, _ = await api.get(f"/api/v1/patients/{a.patient_id}/timeline", as_="gp_liu")
        assert status == 403
        status, _ = await api.post("/api/v1/patients", as_="gp_zhang",
                                   json={"resident_id": resident[:-1] + "0", "name": name})  # fmt: skip
        assert status == 422
        status, _ = await api.post("/api/v1/auth/login",
                                   json={"username": resident, "password": PATIENTS[3].phone})  # fmt: skip
        assert status == 401
        await api.close()
    finally:
        root.removeHandler(handler)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for logger_name, level in saved[2].items():
            logging.getLogger(logger_name).setLevel(level)
    text = captured.getvalue()
    lines = text.count("\n")
    assert lines > 20, f"too little was logged to prove anything ({lines} lines)"
    assert "GET /api/v1/pharmacy/prescriptions " in text  # the access log was on
    assert "socket connected" in text
    leaks = {what: value for what, value in secrets_of_patients().items() if value in text}
    leaking = [line for line in text.splitlines() if any(v in line for v in leaks.values())]
    print(
        f"\nlogs at DEBUG: {lines} lines searched for {len(secrets_of_patients())} patient values"
    )
    assert not leaks, f"patient data in the logs: {leaks}\n" + "\n".join(leaking[:10])
