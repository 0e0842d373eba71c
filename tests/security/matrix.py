"""The authorization matrix: every operation × every persona × an object of side A and of side B.

The operation list is *generated*: ``test_authz_matrix.py`` enumerates
``app.router.routes()`` (method + canonical path) and the gateway's registered
Socket.IO events (``Gateway.event_names``); a route or event without an entry
in :data:`OPERATIONS` fails the build, naming it.

Personas (the usernames are the demo network's; side A is theirs, see
``tests/security/world.py``):

====== ===================================================== =================
code   persona                                               account
====== ===================================================== =================
pat    the patient (A's)                                     patient_sun
gp     the patient's own community doctor (SNBDH)            gp_zhang
gp2    a doctor of another institution (SBLYL, B's doctor)   gp_liu
spec   the consult's specialist (QDSL, host of A's consult)  dr_li
spec2  a specialist not in the consult (QDFY, B's hospital)  dr_zhao
ph     pharmacist of the chosen pharmacy (HCYF, A's)         pharmacist_chen
ph2    pharmacist of another pharmacy (TATYF, B's)           pharmacist_zhou
iadm   institution admin (QDSL, A's hospital)                admin_qdsl
padm   platform admin                                        admin
anon   anonymous (no token; socket connect refused)          —
exp    expired token (correctly signed, lifetime over)       patient_sun's id
====== ===================================================== =================

Each :class:`Op` says how to build the request for an object of side A and of
side B (``build(world, side)``) and which personas are *allowed* on each side:
``a="pat gp spec"`` / ``b="gp2"``; ``"*"`` is every signed-in persona, ``"all"``
also anonymous and expired. Personas after a ``|`` (``a="gp | spec spec2"``) are
refused by a business rule that applies whatever the object (e.g. a specialist
cannot refer *up*): they must get a 4xx that is not 401/403/404. Everyone else
must be *denied*:

- HTTP: 401 (anonymous/expired), 403 or 404, as ``application/problem+json``
  (``application/fhir+json`` OperationOutcome under /fhir), and every 403/404 is
  in the audit log (an ``outcome="denied"`` row with the response's request id);
- Socket.IO: ``anon``/``exp`` cannot connect; others get an ack
  ``{ok: false, problem: {status: 403|404}}``, audited the same way.

An allowed call must not be 401/403/404 or 5xx; other 4xx (409 a state
conflict, 422 a rule) are fine unless ``accept`` narrows it. ``accept`` adds
statuses an allowed call may legitimately get (e.g. 401 for a login with a
wrong password). Operations run in table order; within an operation and side the
denied personas go first, so an allowed mutation cannot hide a denial. Mutations
that grant access (registering a patient, pushing FHIR data) and that end
sessions come last.

Adding an operation (e.g. a new capability's routes at merge): append an ``Op``
with the key ``"METHOD /canonical/path"`` exactly as aiohttp prints it (``{id}``
names, no regex) or ``"socket event.name"``, a builder, and ``a=``/``b=``; run
``pytest tests/security/test_authz_matrix.py`` — a wrong expectation fails with
the persona, side, status and problem; ``YIHAO_MATRIX_PRINT=1`` prints the
observed allow sets to help write the entry (review them; never paste blindly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from server.seed import DEMO_PASSWORD, PATIENTS
from tests.security.world import AMLODIPINE, DIAGNOSIS, Side, World, mrn, visit_bundle

PERSONAS: dict[str, str | None] = {
    "pat": "patient_sun",
    "gp": "gp_zhang",
    "gp2": "gp_liu",
    "spec": "dr_li",
    "spec2": "dr_zhao",
    "ph": "pharmacist_chen",
    "ph2": "pharmacist_zhou",
    "iadm": "admin_qdsl",
    "padm": "admin",
    "anon": None,
    "exp": "patient_sun",
}
SIGNED_IN = [p for p in PERSONAS if p not in ("anon", "exp")]
SIDES = ("A", "B")


@dataclass
class Req:
    """An HTTP request (``path`` may carry a query) or a socket event's payload."""

    path: str = ""
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    payload: Any = None


Build = Callable[[World, Side], Req]


@dataclass
class Op:
    key: str  # "GET /api/v1/x/{id}" or "socket event.name"
    build: Build
    a: str
    b: str | None = None  # None: the same as ``a``
    accept: tuple[int, ...] = ()
    covers: tuple[str, ...] = ()  # further route keys this entry stands for
    note: str = ""

    @property
    def is_socket(self) -> bool:
        return self.key.startswith("socket ")

    @property
    def method(self) -> str:
        return self.key.split(" ", 1)[0]

    def _spec(self, side: str) -> tuple[str, str]:
        spec = self.a if side == "A" or self.b is None else self.b
        allowed, _, rule = spec.partition("|")
        return allowed.strip(), rule.strip()

    def allowed(self, side: str) -> set[str]:
        """Personas that may do this to the side's object (not refused with 401/403/404)."""
        spec = self._spec(side)[0]
        if spec == "all":
            return set(PERSONAS)
        if spec == "*":
            return set(SIGNED_IN)
        return set(spec.split())

    def by_rule(self, side: str) -> set[str]:
        """Personas refused by a business rule (400/409/422) before any object is touched."""
        return set(self._spec(side)[1].split())


def _soon(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def _account(w: World, s: Side) -> int:
    """An account for the administrators' access operations (no persona's)."""
    return w.users["dr_wang" if s.name == "A" else "gp_chen"]


def _resident(s: Side) -> str:
    return next(p for p in PATIENTS if p.username == s.patient_user).resident_id


def _name(s: Side) -> str:
    return next(p for p in PATIENTS if p.username == s.patient_user).name


def get(path: Callable[[World, Side], str]) -> Build:
    return lambda w, s: Req(path(w, s))


def body(path: Callable[[World, Side], str], data: Callable[[World, Side], Any]) -> Build:
    return lambda w, s: Req(path(w, s), json=data(w, s))


def sock(payload: Callable[[World, Side], Any]) -> Build:
    return lambda w, s: Req(payload=payload(w, s))


def rx_body(w: World, s: Side) -> dict[str, Any]:
    return {"patient_id": s.patient_id, "diagnosis": DIAGNOSIS, "items": [AMLODIPINE]}


def referral_body(w: World, s: Side) -> dict[str, Any]:
    return {
        "direction": "up",
        "patient_id": s.patient_id,
        "purpose": "复查",
        "to_institution_id": s.hospital_id,
        "to_department_id": s.department_id,
        "reason": "复查",
        "urgency": "routine",
        "summary": "高血压。",
        "attachments": [],
    }


def consult_body(w: World, s: Side) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "patient_id": s.patient_id,
        "consent": {
            "given_by": "patient",
            "name": _name(s),
            "method": "written",
            "given_at": (now - timedelta(hours=1)).isoformat(),
        },
        "reason": "复诊",
        "purpose": "调整方案",
        "clinical_question": "建议？",
        "case_summary": "高血压。",
        "urgency": "routine",
        "window_start": _soon(1),
        "window_end": _soon(30),
        "invited_institution_id": s.hospital_id,
    }


C = "/api/v1/consults/{}"
P = "/api/v1/prescriptions/{}"
R = "/api/v1/referrals/{}"
PT = "/api/v1/patients/{}"
V = "/api/v1/visits/{}"
FHIR = {"Content-Type": "application/fhir+json"}

# Everything an expired or absent token may still do.
PUBLIC = "all"

OPERATIONS: list[Op] = [
    # --- operations and the web client: public by design -------------------------------
    Op("GET /healthz", get(lambda w, s: "/healthz"), a="all"),
    Op("GET /readyz", get(lambda w, s: "/readyz"), a="all"),
    Op(
        "GET /metrics",
        get(lambda w, s: "/metrics"),
        a="all",
        note="counts and latencies by route template only; no ids, no patient data",
    ),
    Op("GET /api/openapi.json", get(lambda w, s: "/api/openapi.json"), a="all"),
    Op("GET /", get(lambda w, s: "/"), a="all"),
    Op(
        "GET /assets",
        get(lambda w, s: "/assets/app.js"),
        a="all",
        note="the web client's static files (the test app has a built client of its own)",
    ),
    Op(
        "GET /{path}",
        get(lambda w, s: f"/consults/{s.consult_id}"),
        a="all",
        note="the single-page app's shell; the data behind it is what is checked",
    ),
    Op("GET /fhir/metadata", get(lambda w, s: "/fhir/metadata"), a="all"),
    # --- identity ------------------------------------------------------------------------
    Op("GET /api/v1/me", get(lambda w, s: "/api/v1/me"), a="*"),
    Op("GET /api/v1/institutions", get(lambda w, s: "/api/v1/institutions?kind=tertiary"), a="*"),
    Op(
        "GET /api/v1/institutions/{institution_id}",
        get(lambda w, s: f"/api/v1/institutions/{s.institution_id}"),
        a="*",
    ),
    Op(
        "GET /api/v1/users",
        get(lambda w, s: f"/api/v1/users?institution={s.hospital_code}"),
        note="an institution admin sees only their own institution's accounts: B's filter gives an empty list",
        a="iadm padm",
    ),
    Op(
        "GET /api/v1/users/{user_id}",
        get(lambda w, s: f"/api/v1/users/{s.specialist_id}"),
        a="gp gp2 spec spec2 ph ph2 iadm padm",
    ),
    Op(
        "GET /api/v1/patients",
        get(lambda w, s: f"/api/v1/patients?q={mrn(s)}"),
        note="a list of the caller's own institution's patients (what it holds is checked in "
        "tests/identity/test_my_patients.py); clinicians only, whichever side's number is asked",
        a="gp gp2 spec spec2",
    ),
    Op(
        "GET /api/v1/patients/lookup",
        get(
            lambda w, s: f"/api/v1/patients/lookup?institution={s.institution_code}&number={mrn(s)}"
        ),
        a="pat gp spec padm",
        b="gp2 spec2 padm",
    ),
    Op(
        "GET /api/v1/patients/{patient_id}",
        get(lambda w, s: PT.format(s.patient_id)),
        a="pat gp spec padm",
        b="gp2 spec2 padm",
    ),
    Op(
        "GET /api/v1/patients/{patient_id}/summary",
        get(lambda w, s: PT.format(s.patient_id) + "/summary"),
        a="pat gp spec",
        b="gp2 spec2",
    ),
    Op(
        "GET /api/v1/patients/{patient_id}/timeline",
        get(lambda w, s: PT.format(s.patient_id) + "/timeline"),
        a="pat gp spec",
        b="gp2 spec2",
    ),
    Op(
        "GET /api/v1/patients/{patient_id}/consents",
        get(lambda w, s: PT.format(s.patient_id) + "/consents"),
        a="pat",
        b="",
    ),
    Op(
        "GET /api/v1/patients/{patient_id}/access-log",
        get(lambda w, s: PT.format(s.patient_id) + "/access-log"),
        a="pat padm",
        b="padm",
    ),
    # --- earning care: presence at the desk, the patient's agreement ------------------------
    Op(
        "POST /api/v1/me/presence-code",
        body(lambda w, s: "/api/v1/me/presence-code", lambda w, s: None),
        a="pat",
        note="the patient's own code (a new one replaces the last)",
    ),
    Op(
        "POST /api/v1/care/presence",
        body(
            lambda w, s: "/api/v1/care/presence",
            lambda w, s: {"resident_id": _resident(s), "code": "00000000"},
        ),
        a="| gp gp2 spec spec2 iadm",
        note="a desk with a wrong code is told it does not match (422), as for an unknown "
        "resident; everyone else, pharmacies included, is refused",
    ),
    Op(
        "POST /api/v1/patients/{patient_id}/care-requests",
        body(
            lambda w, s: PT.format(s.patient_id) + "/care-requests", lambda w, s: {"note": "矩阵"}
        ),
        a="gp gp2 spec spec2 iadm",
        note="any care institution may ask; asking grants nothing until the patient approves",
    ),
    Op(
        "GET /api/v1/patients/{patient_id}/care-requests",
        get(lambda w, s: PT.format(s.patient_id) + "/care-requests"),
        a="pat",
        b="",
    ),
    Op(
        "GET /api/v1/patients/{patient_id}/care-relationships",
        get(lambda w, s: PT.format(s.patient_id) + "/care-relationships"),
        a="pat",
        b="",
    ),
    Op(
        "GET /api/v1/emergency-accesses",
        get(lambda w, s: "/api/v1/emergency-accesses?status=all"),
        a="iadm padm",
        note="an institution admin sees only their own clinicians' break-the-glass reads",
    ),
    Op(
        "POST /api/v1/emergency-accesses/{seq}/review",
        body(
            lambda w, s: "/api/v1/emergency-accesses/1/review",
            lambda w, s: {"verdict": "justified", "note": "矩阵"},
        ),
        a="",
        note="audit entry 1 is no emergency read: not found for the reviewers, refused to the rest "
        "(the review itself: tests/identity/test_care.py)",
    ),
    # --- records over FHIR ---------------------------------------------------------------
    Op(
        "GET /fhir/{rtype}",
        get(lambda w, s: f"/fhir/Condition?patient={s.patient_id}"),
        a="pat gp spec",
        b="gp2 spec2",
    ),
    Op(
        "GET /fhir/{rtype}/{rid}",
        get(lambda w, s: f"/fhir/Patient/{s.patient_id}"),
        a="pat gp spec",
        b="gp2 spec2",
    ),
    Op(
        "GET /fhir/Patient/{rid}/$everything",
        get(lambda w, s: f"/fhir/Patient/{s.patient_id}/$everything"),
        a="pat gp spec",
        b="gp2 spec2",
    ),
    # --- inbox ---------------------------------------------------------------------------
    Op("GET /api/v1/inbox", get(lambda w, s: "/api/v1/inbox"), a="*"),
    Op(
        "POST /api/v1/inbox/read",
        body(lambda w, s: "/api/v1/inbox/read", lambda w, s: {"ids": [1]}),
        note="ids of other people's items are ignored",
        a="*",
    ),
    # issue 19: notify
    Op(
        "GET /api/v1/me/notification-preferences",
        get(lambda w, s: "/api/v1/me/notification-preferences"),
        a="pat",
        note="the patient's own choices; nobody else has any",
    ),
    Op(
        "PUT /api/v1/me/notification-preferences",
        body(
            lambda w, s: "/api/v1/me/notification-preferences",
            lambda w, s: {
                "preferences": [{"kind": "result_ready", "channel": "log", "enabled": True}]
            },
        ),
        a="pat",
    ),
    # issue 19: triage
    Op(
        "POST /api/v1/triage",
        body(lambda w, s: "/api/v1/triage", lambda w, s: {"text": "咳嗽三天，不发烧"}),
        a="pat gp gp2 spec spec2",
        note="the patient, and clinicians trying the table; no object: both sides alike",
    ),
    Op(
        "GET /api/v1/triage/history",
        get(lambda w, s: "/api/v1/triage/history"),
        a="pat",
        note="the patient's own suggestions only",
    ),
    # --- scheduling ----------------------------------------------------------------------
    Op(
        "GET /api/v1/slots",
        get(lambda w, s: f"/api/v1/slots?department_id={s.slot_department_id}"),
        a="*",
    ),
    Op("GET /api/v1/slots/{slot_id}", get(lambda w, s: f"/api/v1/slots/{s.slot_id}"), a="*"),
    Op(
        "GET /api/v1/schedules/templates",
        get(lambda w, s: f"/api/v1/schedules/templates?department_id={s.slot_department_id}"),
        note="desk roles; scoped to the caller's own institution: another's department is empty",
        a="gp gp2 spec spec2 iadm",
    ),
    Op(
        "GET /api/v1/schedules/holidays",
        get(lambda w, s: "/api/v1/schedules/holidays"),
        note="desk roles; the caller's own institution's closed days",
        a="gp gp2 spec spec2 iadm",
    ),
    Op(
        "GET /api/v1/appointments",
        get(lambda w, s: "/api/v1/appointments"),
        a="pat gp gp2 spec spec2 iadm padm",
    ),
    # --- referrals -----------------------------------------------------------------------
    Op(
        "GET /api/v1/referrals",
        get(lambda w, s: "/api/v1/referrals?box=sent"),
        note="clinicians and patients; administrators and pharmacists never list clinical text",
        a="pat gp gp2 spec spec2",
    ),
    Op(
        "GET /api/v1/referrals/{referral_id}",
        get(lambda w, s: R.format(s.referral_id)),
        note="reason, working diagnosis, summary: not for the receiving hospital's admin",
        a="pat gp spec",
        b="gp2 spec2",
    ),
    # --- consults ------------------------------------------------------------------------
    Op(
        "GET /api/v1/consults",
        get(lambda w, s: "/api/v1/consults"),
        note="clinicians and patients; administrators and pharmacists are refused (403)",
        a="pat gp gp2 spec spec2",
    ),
    Op(
        "GET /api/v1/consults/{consult_id}",
        get(lambda w, s: C.format(s.consult_id)),
        a="pat gp spec",
        b="gp2 spec2",
    ),
    Op(
        "GET /api/v1/consults/{consult_id}/history",
        get(lambda w, s: C.format(s.consult_id) + "/history"),
        a="pat gp spec",
        b="gp2 spec2",
    ),
    Op(
        "GET /api/v1/consults/{consult_id}/record",
        get(lambda w, s: C.format(s.consult_id) + "/record"),
        a="gp spec",
        b="gp2",
    ),
    Op(
        "GET /api/v1/consults/{consult_id}/opinion",
        get(lambda w, s: C.format(s.consult_id) + "/opinion"),
        a="pat gp spec",
        b="gp2 spec2",
    ),
    Op(
        "GET /api/v1/consults/{consult_id}/ice-servers",
        get(lambda w, s: C.format(s.consult_id) + "/ice-servers"),
        a="gp spec",
        b="gp2",
    ),
    Op(
        "GET /api/v1/consults/{consult_id}/recordings",
        get(lambda w, s: C.format(s.consult_id) + "/recordings"),
        a="pat gp spec",
        b="gp2 spec2",
    ),
    Op(
        "GET /api/v1/recordings/{recording_id}/media",
        get(lambda w, s: "/api/v1/recordings/1/media"),
        note="no recording exists in the matrix world (one needs the recorder process): 404 "
        "for all; a participant's download and an outsider's 404 are tests/media/test_recording.py",
        a="",
    ),
    # --- prescriptions -------------------------------------------------------------------
    Op(
        "GET /api/v1/prescriptions",
        get(lambda w, s: "/api/v1/prescriptions"),
        a="pat gp gp2 spec spec2",
    ),
    Op(
        "GET /api/v1/prescriptions/{prescription_id}",
        get(lambda w, s: P.format(s.prescription_id)),
        a="pat gp ph",
        b="gp2 ph2",
    ),
    Op(
        "GET /api/v1/prescriptions/{prescription_id}/history",
        get(lambda w, s: P.format(s.prescription_id) + "/history"),
        a="pat gp ph",
        b="gp2 ph2",
    ),
    Op(
        "GET /api/v1/prescriptions/{prescription_id}/verify",
        get(lambda w, s: P.format(s.prescription_id) + "/verify"),
        a="pat gp ph",
        b="gp2 ph2",
    ),
    Op(
        "GET /api/v1/pharmacy/prescriptions",
        get(lambda w, s: "/api/v1/pharmacy/prescriptions"),
        a="ph ph2",
    ),
    Op(
        "GET /api/v1/pharmacy/deliveries/pending",
        get(lambda w, s: "/api/v1/pharmacy/deliveries/pending"),
        a="ph ph2",
    ),
    # --- realtime (socket events; the transport routes are the connect) -------------------
    Op(
        "socket connect",
        lambda w, s: Req(),
        a="*",
        covers=("GET /socket.io/", "POST /socket.io/", "OPTIONS /socket.io/"),
    ),
    Op(
        "socket sync",
        sock(lambda w, s: {"positions": {f"consult:{s.consult_id}": 0}}),
        a="gp spec",
        b="gp2",
    ),
    Op("socket inbox.read", sock(lambda w, s: {"ids": [1]}), a="*"),
    Op("socket prescription.pending", sock(lambda w, s: {}), a="ph ph2"),
    Op(
        "socket prescription.ack",
        sock(
            lambda w, s: {"prescription_id": s.prescription_id, "version": s.prescription_version}
        ),
        a="ph",
        b="ph2",
    ),
    Op(
        "socket precall.stats",
        sock(lambda w, s: None),
        note="own connection's pre-call check: none runs in the matrix (404 no_precall for all); the live path is tests/media/test_precall.py",
        a="",
    ),
    Op("socket precall.stop", sock(lambda w, s: None), note="as precall.stats", a=""),
    Op("socket precall.offer", sock(lambda w, s: {"type": "offer", "sdp": "v=0"}), a="*"),
    Op(
        "socket consult.open", sock(lambda w, s: {"consult_id": s.consult_id}), a="gp spec", b="gp2"
    ),
    Op(
        "socket consult.presence",
        sock(lambda w, s: {"consult_id": s.consult_id}),
        a="gp spec",
        b="gp2",
    ),
    Op(
        "socket consult.ice_servers",
        sock(lambda w, s: {"consult_id": s.consult_id}),
        a="gp spec",
        b="gp2",
    ),
    Op(
        "socket consult.chat",
        sock(
            lambda w, s: {
                "consult_id": s.consult_id,
                "client_id": "matrix-chat-0001",
                "text": "matrix",
            }
        ),
        a="gp spec",
        b="gp2",
    ),
    Op(
        "socket consult.join", sock(lambda w, s: {"consult_id": s.consult_id}), a="gp spec", b="gp2"
    ),
    Op(
        "socket consult.media",
        sock(lambda w, s: {"consult_id": s.consult_id, "camera": False, "mic": True}),
        note="needs a place in the live session (403 not_in_session for a participant outside it, 403 not_a_participant for anyone else); the in-session path is tests/consults/test_room.py",
        a="",
    ),
    Op(
        "socket consult.signal",
        sock(
            lambda w, s: {
                "consult_id": s.consult_id,
                "to": s.specialist_id,
                "kind": "bye",
                "data": {},
            }
        ),
        note="as consult.media",
        a="",
    ),
    Op(
        "socket consult.admit",
        sock(lambda w, s: {"consult_id": s.consult_id, "user_id": s.gp_user_id}),
        a="spec",
        b="",
    ),
    Op(
        "socket consult.recording.consent",
        sock(lambda w, s: {"consult_id": s.consult_id, "agree": False}),
        note="a refusal, so that no recording (and no recorder process) can start",
        a="gp spec",
        b="gp2",
    ),
    Op(
        "socket consult.recording.start",
        sock(lambda w, s: {"consult_id": s.consult_id}),
        a="spec",
        b="",
    ),
    Op(
        "socket consult.recording.stop",
        sock(lambda w, s: {"consult_id": s.consult_id}),
        a="spec",
        b="",
    ),
    Op(
        "socket consult.leave",
        sock(lambda w, s: {"consult_id": s.consult_id}),
        note="a participant not in the session leaves nothing ({left: false}); anyone else is refused (403 not_a_participant)",
        a="gp spec",
        b="gp2",
    ),
    # --- mutations that keep the objects usable -------------------------------------------
    Op(
        "POST /api/v1/prescriptions/check",
        body(lambda w, s: "/api/v1/prescriptions/check", rx_body),
        a="gp spec",
        b="gp2 spec2",
    ),
    Op(
        "POST /api/v1/prescriptions/{prescription_id}/review",
        body(
            lambda w, s: P.format(s.prescription_id) + "/review", lambda w, s: {"decision": "start"}
        ),
        a="ph",
        b="ph2",
    ),
    Op(
        "POST /api/v1/prescriptions/{prescription_id}/dispense",
        body(
            lambda w, s: P.format(s.prescription_id) + "/dispense",
            lambda w, s: {"items": [{"drug_code": "C08CA01", "quantity": 1}]},
        ),
        a="ph",
        b="ph2",
    ),
    # issue 19: rxpick
    Op(
        "GET /api/v1/pharmacies",
        get(lambda w, s: "/api/v1/pharmacies?district=%E5%B8%82%E5%8D%97%E5%8C%BA"),
        note="the network's pharmacies (no patient data): every signed-in persona",
        a="*",
    ),
    Op(
        "POST /api/v1/prescriptions/{prescription_id}/ready",
        body(lambda w, s: P.format(s.prescription_id) + "/ready", lambda w, s: {}),
        note="only the chosen pharmacy's pharmacist (409 while under review is fine)",
        a="ph",
        b="ph2",
    ),
    Op(
        "POST /api/v1/prescriptions/{prescription_id}/receipt",
        body(
            lambda w, s: P.format(s.prescription_id) + "/receipt",
            lambda w, s: {"prescription_id": s.prescription_id, "version": s.prescription_version},
        ),
        a="ph",
        b="ph2",
    ),
    Op(
        "POST /api/v1/prescriptions/{prescription_id}/route",
        body(
            lambda w, s: P.format(s.prescription_id) + "/route",
            lambda w, s: {"pharmacy_id": s.pharmacy_id, "patient_choice": True},
        ),
        a="pat gp",
        b="gp2",
    ),
    Op(
        "POST /api/v1/prescriptions/{prescription_id}/revise",
        body(
            lambda w, s: P.format(s.prescription_id) + "/revise",
            lambda w, s: {"diagnosis": DIAGNOSIS, "items": [AMLODIPINE]},
        ),
        a="gp",
        b="gp2",
    ),
    Op(
        "POST /api/v1/referrals/{referral_id}/accept",
        body(lambda w, s: R.format(s.referral_id) + "/accept", lambda w, s: {}),
        a="spec",
        b="spec2",
    ),
    Op(
        "POST /api/v1/referrals/{referral_id}/schedule",
        body(
            lambda w, s: R.format(s.referral_id) + "/schedule", lambda w, s: {"slot_id": s.slot_id}
        ),
        a="spec",
        b="spec2",
    ),
    Op(
        "POST /api/v1/referrals/{referral_id}/arrive",
        body(lambda w, s: R.format(s.referral_id) + "/arrive", lambda w, s: {}),
        a="spec",
        b="spec2",
    ),
    Op(
        "POST /api/v1/referrals/{referral_id}/complete",
        body(lambda w, s: R.format(s.referral_id) + "/complete", lambda w, s: {}),
        a="spec",
        b="spec2",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/participants",
        body(
            lambda w, s: C.format(s.consult_id) + "/participants",
            lambda w, s: {"user_id": w.users["nurse_he"]},
        ),
        a="gp spec",
        b="gp2",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/accept",
        body(lambda w, s: C.format(s.consult_id) + "/accept", lambda w, s: {}),
        a="spec",
        b="spec2",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/propose",
        body(
            lambda w, s: C.format(s.consult_id) + "/propose", lambda w, s: {"proposed_at": _soon(5)}
        ),
        a="spec",
        b="spec2",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/schedule",
        body(
            lambda w, s: C.format(s.consult_id) + "/schedule",
            lambda w, s: {"scheduled_at": _soon(5)},
        ),
        a="spec",
        b="",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/confirm",
        body(lambda w, s: C.format(s.consult_id) + "/confirm", lambda w, s: None),
        a="gp",
        b="gp2",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/opinion",
        body(
            lambda w, s: C.format(s.consult_id) + "/opinion",
            lambda w, s: {
                "findings": "f",
                "diagnostic_opinion": "d",
                "treatment_advice": "t",
                "refer": False,
            },
        ),
        a="spec",
        b="",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/referral",
        body(lambda w, s: C.format(s.consult_id) + "/referral", referral_body),
        a="gp",
        b="gp2",
    ),
    # issue 19: payments
    Op(
        "GET /api/v1/institutions/{institution_id}/fees",
        get(lambda w, s: f"/api/v1/institutions/{s.hospital_id}/fees"),
        note="prices are public to every signed-in account",
        a="*",
    ),
    Op(
        "PUT /api/v1/institutions/{institution_id}/fees",
        body(
            lambda w, s: f"/api/v1/institutions/{s.hospital_id}/fees",
            lambda w, s: {
                "items": [
                    {"kind": k, "amount_fen": v}
                    for k, v in (
                        ("appointment", 2500),
                        ("visit", 3000),
                        ("consult", 20000),
                        ("prescription", 800),
                    )
                ]
            },
        ),
        note="the institution's own administrator only",
        a="iadm",
        b="",
    ),
    Op(
        "POST /api/v1/orders",
        body(
            lambda w, s: "/api/v1/orders",
            lambda w, s: {"kind": "appointment", "subject_id": s.appointment_id},
        ),
        note="a patient, for their own subject (another's: 404 subject_not_found)",
        a="pat",
        b="",
    ),
    Op(
        "GET /api/v1/orders",
        get(lambda w, s: "/api/v1/orders"),
        note="a patient's own; staff their institution's; others an empty list",
        a="*",
    ),
    Op(
        "GET /api/v1/orders/{order_id}",
        get(lambda w, s: f"/api/v1/orders/{s.extra['order_id']}"),
        note="the patient and the institution's desk roles",
        a="pat spec iadm",
        b="spec2",
    ),
    Op(
        "POST /api/v1/payments/sandbox/{trade_no}/pay",
        body(lambda w, s: f"/api/v1/payments/sandbox/{s.extra['trade_no']}/pay", lambda w, s: None),
        note="the sandbox payer: the order's own patient",
        a="pat",
        b="",
    ),
    Op(
        "POST /api/v1/payments/notify/{provider}",
        body(lambda w, s: "/api/v1/payments/notify/sandbox", lambda w, s: {}),
        note="no account: an unsigned notification is 400 payment_signature_invalid for everyone",
        a="all",
    ),
    Op(
        "POST /api/v1/orders/{order_id}/refund",
        body(lambda w, s: f"/api/v1/orders/{s.extra['order_id']}/refund", lambda w, s: {}),
        note="the patient (before the service) and the institution's desk roles",
        a="pat spec iadm",
        b="spec2",
    ),
    Op(
        "POST /api/v1/slots/{slot_id}/cancel",
        body(lambda w, s: f"/api/v1/slots/{s.slot_id}/cancel", lambda w, s: {"reason": "停诊"}),
        a="spec iadm",
        b="spec2",
    ),
    Op(
        "POST /api/v1/appointments/{appointment_id}/cancel",
        body(lambda w, s: f"/api/v1/appointments/{s.appointment_id}/cancel", lambda w, s: {}),
        a="pat spec iadm",
        b="spec2",
    ),
    Op(
        "PUT /api/v1/patients/{patient_id}/verification",
        body(
            lambda w, s: PT.format(s.patient_id) + "/verification", lambda w, s: {"verified": True}
        ),
        a="iadm padm",
        b="padm",
    ),
    Op(
        "PUT /api/v1/patients/{patient_id}/consents/{institution}",
        body(
            lambda w, s: PT.format(s.patient_id) + f"/consents/{s.institution_code}",
            lambda w, s: {"granted": True},
        ),
        a="pat",
        b="",
    ),
    # issue 19: booking
    Op(
        "GET /api/v1/booking/specialties",
        get(lambda w, s: "/api/v1/booking/specialties"),
        a="*",
    ),
    Op(
        "GET /api/v1/booking/directory",
        get(lambda w, s: f"/api/v1/booking/directory?institution={s.hospital_id}"),
        note="the network's departments, doctors and free slots: no clinical data",
        a="*",
    ),
    Op(
        "GET /api/v1/booking/policy",
        get(lambda w, s: "/api/v1/booking/policy"),
        note="the caller's own institution's policy",
        a="iadm",
    ),
    Op(
        "PUT /api/v1/booking/policy",
        body(
            lambda w, s: "/api/v1/booking/policy",
            lambda w, s: {"cancel_cutoff_hours": 2, "no_show_limit": 3},
        ),
        note="the caller's own institution's policy",
        a="iadm",
    ),
    Op(
        "PUT /api/v1/booking/departments/{department_id}",
        body(
            lambda w, s: f"/api/v1/booking/departments/{s.slot_department_id}",
            lambda w, s: {"specialty": "endocrinology" if s.name == "A" else "cardiology"},
        ),
        a="iadm",
        b="",
    ),
    Op(
        "PUT /api/v1/appointments/{appointment_id}/attendance",
        body(
            lambda w, s: f"/api/v1/appointments/{s.appointment_id}/attendance",
            lambda w, s: {"attended": True},
        ),
        note="the institution's desk or clinicians, on the day (409 attendance_not_today else)",
        a="spec iadm",
        b="spec2",
    ),
    # --- creating (new objects about the side's patient / in the side's institutions) ----
    Op(
        "POST /api/v1/institutions",
        body(
            lambda w, s: "/api/v1/institutions",
            lambda w, s: {
                "code": f"MX{s.name}",
                "name": "矩阵测试医院",
                "kind": "community",
                "region": "370202",
            },
        ),
        a="padm",
    ),
    Op(
        "POST /api/v1/institutions/{institution_id}/departments",
        body(
            lambda w, s: f"/api/v1/institutions/{s.hospital_id}/departments",
            lambda w, s: {"name": f"矩阵科{s.name}"},
        ),
        a="iadm padm",
        b="padm",
    ),
    Op(
        "POST /api/v1/users",
        body(
            lambda w, s: "/api/v1/users",
            lambda w, s: {
                "username": f"mx_{s.name.lower()}",
                "password": DEMO_PASSWORD,
                "role": "nurse",
                "name": "矩阵护士",
                "institution": s.hospital_code,
            },
        ),
        a="iadm padm",
        b="padm",
    ),
    Op(
        "POST /api/v1/schedules/templates",
        body(
            lambda w, s: "/api/v1/schedules/templates",
            lambda w, s: {
                "department_id": s.slot_department_id,
                "weekday": 5,
                "start_time": "08:00",
                "slot_minutes": 30,
                "slot_count": 1,
                "capacity": 1,
                "visit_type": "in_person",
            },
        ),
        a="spec iadm",
        b="spec2",
    ),
    Op(
        "POST /api/v1/schedules/generate",
        body(
            lambda w, s: "/api/v1/schedules/generate",
            lambda w, s: {
                "department_id": s.slot_department_id,
                "from_date": (datetime.now(UTC) + timedelta(days=20)).date().isoformat(),
                "to_date": (datetime.now(UTC) + timedelta(days=20)).date().isoformat(),
            },
        ),
        a="spec iadm",
        b="spec2",
    ),
    Op(
        "POST /api/v1/schedules/holidays",
        body(
            lambda w, s: "/api/v1/schedules/holidays",
            lambda w, s: {
                "day": (datetime.now(UTC) + timedelta(days=40)).date().isoformat(),
                "reason": "矩阵",
            },
        ),
        a="gp gp2 spec spec2 iadm",
    ),
    Op(
        "POST /api/v1/appointments",
        body(
            lambda w, s: "/api/v1/appointments",
            lambda w, s: {"slot_id": s.slot_id, "patient_id": s.patient_id},
        ),
        a="pat spec iadm",
        b="spec2",
    ),
    Op(
        "POST /api/v1/prescriptions",
        body(lambda w, s: "/api/v1/prescriptions", rx_body),
        a="gp spec",
        b="gp2 spec2",
    ),
    Op(
        "POST /api/v1/referrals",
        body(lambda w, s: "/api/v1/referrals", referral_body),
        a="gp | spec spec2",
        b="gp2 | spec spec2",
    ),
    Op(
        "POST /api/v1/consults",
        body(lambda w, s: "/api/v1/consults", consult_body),
        a="gp spec",
        b="gp2 spec2",
    ),
    Op(
        "POST /api/v1/patient-merges",
        body(
            lambda w, s: "/api/v1/patient-merges",
            lambda w, s: {
                "source_patient_id": s.patient_id,
                "target_patient_id": s.patient_id,
                "reason": "矩阵测试",
            },
        ),
        a="padm",
    ),
    Op(
        "POST /api/v1/patient-merges/{merge_id}/undo",
        body(lambda w, s: "/api/v1/patient-merges/999999/undo", lambda w, s: None),
        accept=(404,),
        a="padm",
        note="no such merge: the platform admin's answer is a 404 about the merge, others 403",
    ),
    # --- ending objects ------------------------------------------------------------------
    Op(
        "POST /api/v1/prescriptions/{prescription_id}/cancel",
        body(lambda w, s: P.format(s.prescription_id) + "/cancel", lambda w, s: {"reason": "矩阵"}),
        a="gp",
        b="gp2",
    ),
    Op(
        "POST /api/v1/referrals/{referral_id}/decline",
        body(lambda w, s: R.format(s.referral_id) + "/decline", lambda w, s: {"reason": "矩阵"}),
        a="spec",
        b="spec2",
    ),
    Op(
        "POST /api/v1/referrals/{referral_id}/cancel",
        body(lambda w, s: R.format(s.referral_id) + "/cancel", lambda w, s: {"reason": "矩阵"}),
        a="gp",
        b="gp2",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/decline",
        body(lambda w, s: C.format(s.consult_id) + "/decline", lambda w, s: {"reason": "矩阵"}),
        a="spec",
        b="spec2",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/cancel",
        body(lambda w, s: C.format(s.consult_id) + "/cancel", lambda w, s: {"reason": "矩阵"}),
        a="gp",
        b="gp2",
    ),
    Op(
        "POST /api/v1/consults/{consult_id}/close",
        body(lambda w, s: C.format(s.consult_id) + "/close", lambda w, s: None),
        a="gp spec",
        b="gp2",
    ),
    # --- mutations that grant access: after every denial above was checked ----------------
    Op(
        "POST /api/v1/patients",
        body(
            lambda w, s: "/api/v1/patients",
            lambda w, s: {"resident_id": _resident(s), "name": _name(s)},
        ),
        note="registering a resident (id + the registered name) links the desk's numbers and "
        "grants no reading (tests/identity/test_care.py)",
        a="gp gp2 spec spec2 ph ph2 iadm",
    ),
    Op(
        "POST /api/v1/care-requests/{request_id}/decision",
        body(
            lambda w, s: f"/api/v1/care-requests/{s.care_request_id}/decision",
            lambda w, s: {"approve": False},
        ),
        a="pat",
        b="",
        note="only the patient answers; another's request answers like none (404)",
    ),
    Op(
        "POST /fhir",
        lambda w, s: Req("/fhir", json=visit_bundle(s, _resident(s)), headers=FHIR),
        note="an institution pushes only under its own identifiers (the MRN system names SNBDH / SBLYL)",
        a="gp",
        b="gp2",
        covers=("POST /fhir/",),
    ),
    # issue 19: visits (follow-up video visits; the room's socket events are the consult
    # room's, above). Side A's visit is patient_sun's with dr_li (spec), waiting in its room;
    # side B's is patient_liu's with dr_sun, no persona's. Admit, record and end succeed
    # for spec on A, in that order.
    Op("GET /api/v1/visits/doctors", get(lambda w, s: "/api/v1/visits/doctors"), a="pat"),
    Op(
        "GET /api/v1/visits/conditions",
        get(lambda w, s: "/api/v1/visits/conditions"),
        a="pat",
        note="the patient's own diagnoses only",
    ),
    Op(
        "GET /api/v1/visits",
        get(lambda w, s: "/api/v1/visits"),
        a="pat gp gp2 spec spec2",
        note="a patient's own, a doctor's asked of them; administrators and pharmacists 403",
    ),
    Op(
        "POST /api/v1/visits",
        body(
            lambda w, s: "/api/v1/visits",
            lambda w, s: {
                "doctor_id": s.specialist_id,
                "condition_id": s.extra["condition_id"],
                "complaint": "复诊",
            },
        ),
        a="pat",
        note="a patient asks for themself: B's condition is not in A's record (422)",
    ),
    Op("GET /api/v1/visits/{visit_id}", get(lambda w, s: V.format(s.visit_id)), a="pat spec", b=""),
    Op(
        "POST /api/v1/visits/{visit_id}/accept",
        body(lambda w, s: V.format(s.visit_id) + "/accept", lambda w, s: None),
        a="spec",
        b="",
        note="already accepted and open: 409 for its doctor",
    ),
    Op(
        "POST /api/v1/visits/{visit_id}/decline",
        body(lambda w, s: V.format(s.visit_id) + "/decline", lambda w, s: {"reason": "矩阵"}),
        a="spec",
        b="",
    ),
    Op(
        "POST /api/v1/visits/{visit_id}/cancel",
        body(lambda w, s: V.format(s.visit_id) + "/cancel", lambda w, s: None),
        a="pat",
        b="",
        note="its room is open: 409 for its patient",
    ),
    Op(
        "POST /api/v1/visits/{visit_id}/open",
        body(lambda w, s: V.format(s.visit_id) + "/open", lambda w, s: {}),
        a="spec",
        b="",
    ),
    Op(
        "POST /api/v1/visits/{visit_id}/admit",
        body(lambda w, s: V.format(s.visit_id) + "/admit", lambda w, s: None),
        a="spec",
        b="",
    ),
    Op(
        "PUT /api/v1/visits/{visit_id}/record",
        body(
            lambda w, s: V.format(s.visit_id) + "/record",
            lambda w, s: {
                "complaint": "复诊",
                "findings": "平稳",
                "assessment": "稳定",
                "plan": "续用",
            },
        ),
        a="spec",
        b="",
    ),
    Op(
        "POST /api/v1/visits/{visit_id}/prescriptions",
        body(
            lambda w, s: V.format(s.visit_id) + "/prescriptions",
            lambda w, s: {"prescription_id": s.prescription_id},
        ),
        a="spec",
        b="",
        note="the side's prescription is its gp's, not the visit doctor's: 422 not_this_visit",
    ),
    Op(
        "POST /api/v1/visits/{visit_id}/end",
        body(lambda w, s: V.format(s.visit_id) + "/end", lambda w, s: None),
        a="spec",
        b="",
    ),
    # --- account access (administrators): they end sessions, so late ----------------------
    # The targets are no persona's account: dr_wang (QDSL, side A's hospital, the institution
    # admin's own) and gp_chen (LSZH, no institution admin among the personas).
    *(
        Op(
            f"POST /api/v1/users/{{user_id}}/{action}",
            body(
                lambda w, s, action=action: f"/api/v1/users/{_account(w, s)}/{action}",
                lambda w, s: None,
            ),
            a="iadm padm",
            b="padm",
            note="an institution admin manages his own institution's practitioners; "
            "disable ends every session of the account (enable follows, for the later rows)",
        )
        for action in ("unlock", "sessions/end", "disable", "enable")
    ),
    # --- the session itself: last ----------------------------------------------------------
    Op(
        "POST /api/v1/auth/login",
        body(
            lambda w, s: "/api/v1/auth/login",
            lambda w, s: {"username": f"nobody_{s.name.lower()}", "password": "not-the-password"},
        ),
        a="all",
        accept=(401,),
        note="an unknown account: 401 for everyone, token or not (no lockout of a real one)",
    ),
    Op(
        "POST /api/v1/auth/refresh",
        body(lambda w, s: "/api/v1/auth/refresh", lambda w, s: {"refresh_token": "x" * 43}),
        a="all",
        accept=(401,),
        note="an unknown refresh token: 401 for everyone",
    ),
    Op(
        "POST /api/v1/auth/totp/setup",
        body(lambda w, s: "/api/v1/auth/totp/setup", lambda w, s: {}),
        a="*",
        note="without the current password: 422 naming it (no failed sign-in is counted)",
    ),
    Op(
        "POST /api/v1/auth/totp/confirm",
        body(lambda w, s: "/api/v1/auth/totp/confirm", lambda w, s: {"code": "000000"}),
        a="*",
        note="without the current password: 422 naming it",
    ),
    Op(
        "POST /api/v1/auth/password",
        body(
            lambda w, s: "/api/v1/auth/password",
            lambda w, s: {"current_password": "wrong-password", "new_password": "Matrix@2026x"},
        ),
        a="*",
    ),
    Op(
        "POST /api/v1/auth/logout",
        body(lambda w, s: "/api/v1/auth/logout", lambda w, s: None),
        a="*",
    ),
]


def by_key() -> dict[str, Op]:
    table: dict[str, Op] = {}
    for op in OPERATIONS:
        for key in (op.key, *op.covers):
            assert key not in table, f"two matrix entries for {key}"
            table[key] = op
    return table


# --- consent: a revoked institution (tests/security/test_consent_paths.py) ------------------
#
# The same operations on side A's objects once patient_sun has revoked sharing with QDSL
# (A's consult host dr_li = ``spec`` and ``iadm``): who is still allowed. The consult's and
# the referral's workflow stays readable (their clinical text is withheld in the body); the
# record, the consult's opinion, record panel and room are refused, and audited.
REVOKED_QDSL: dict[str, str] = {
    "GET /api/v1/patients/{patient_id}/summary": "pat gp",
    "GET /api/v1/patients/{patient_id}/timeline": "pat gp",
    "GET /fhir/{rtype}": "pat gp",
    "GET /fhir/{rtype}/{rid}": "pat gp",
    "GET /fhir/Patient/{rid}/$everything": "pat gp",
    "GET /api/v1/consults/{consult_id}": "pat gp spec",
    "GET /api/v1/consults/{consult_id}/record": "gp",
    "GET /api/v1/consults/{consult_id}/opinion": "pat gp",
    "GET /api/v1/referrals/{referral_id}": "pat gp spec",
    "socket sync": "gp",
    "socket consult.open": "gp",
    "socket consult.presence": "gp",
    "socket consult.ice_servers": "gp",
    "socket consult.chat": "gp",
    "socket consult.join": "gp",
}
