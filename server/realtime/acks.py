"""The acks of client → server events, and the problem codes the gateway itself answers.

Every event with an ack callback is answered with exactly one :data:`Ack`:
``{"ok": true, "data": …}`` after the handler's work committed, or
``{"ok": false, "problem": {…}}`` with the RFC 9457 problem the REST API would give.

:data:`GATEWAY_PROBLEMS` is the registry of the codes any event may get from the
gateway (before or around a capability's handler); ``docs/realtime.md``'s table of
common problem codes lists exactly these, and ``tests/realtime`` holds the two in step.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class AckOk(TypedDict):
    ok: Literal[True]
    data: Any


class AckRefused(TypedDict):
    ok: Literal[False]
    problem: dict[str, Any]


Ack = AckOk | AckRefused


def ack_ok(data: Any) -> AckOk:
    return {"ok": True, "data": data}


def ack_refused(problem: dict[str, Any]) -> AckRefused:
    return {"ok": False, "problem": problem}


# (status, code) of every problem the gateway answers on its own, whatever the event.
GATEWAY_PROBLEMS: frozenset[tuple[int, str]] = frozenset(
    {
        (400, "bad_request"),
        (401, "unauthorized"),
        (401, "session_revoked"),
        (403, "forbidden"),
        (403, "not_a_member"),
        (404, "unknown_event"),
        (413, "payload_too_large"),
        (422, "validation_failed"),
        (422, "out_of_range"),
        (422, "json_too_deep"),
        (429, "too_many_requests"),
        (500, "internal"),
        (503, "database_unavailable"),
    }
)
