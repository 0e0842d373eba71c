"""The visit's steps: which status each action starts from and leads to, and who takes it."""

from __future__ import annotations

from typing import Any

from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.errors import Conflict, Forbidden
from server.core.lifecycle import Lifecycle, Step, steps
from server.visits.models import Visit, VisitTransition
from server.visits.states import VisitStatus as S


def check_doctor(requester: Requester, visit: Visit) -> None:
    if requester.user_id != visit.doctor_id:
        raise Forbidden("only the visit's doctor may do this", code="not_the_doctor")


def check_patient(requester: Requester, visit: Visit) -> None:
    if requester.user_id != visit.patient_user_id:
        raise Forbidden("only the patient may do this", code="not_the_patient")


STEPS = steps(
    Step("request", frozenset(), S.REQUESTED),
    Step("accept", frozenset({S.REQUESTED}), S.ACCEPTED, guard=check_doctor),
    Step("decline", frozenset({S.REQUESTED}), S.DECLINED, guard=check_doctor),
    Step("cancel", frozenset({S.REQUESTED, S.ACCEPTED}), S.CANCELLED, guard=check_patient),
    Step("open", frozenset({S.ACCEPTED}), S.WAITING, guard=check_doctor),
    Step("admit", frozenset({S.WAITING}), S.IN_PROGRESS, guard=check_doctor),
    Step("end", frozenset({S.IN_PROGRESS}), S.COMPLETED, guard=check_doctor),
)


def _refuse(visit: Visit, action: str, current: str | None) -> Exception:
    sources = STEPS[action].sources
    return Conflict(
        f"a visit that is {current} cannot be {action}ed (only from {', '.join(sorted(sources))})",
        code="invalid_transition",
        extra={"status": current, "action": action},
    )


def _history(
    visit: Visit,
    previous: str | None,
    step: Step[Visit],
    actor: Requester | None,
    reason: str | None,
    details: dict[str, Any],
) -> VisitTransition:
    return VisitTransition(
        visit_id=visit.id,
        from_status=previous,
        to_status=step.recorded,
        actor_id=actor.user_id if actor else None,
        note={**details, **({"reason": reason} if reason else {})},
        at=visit.updated_at,
    )


def visit_lifecycle(audit: AuditLog) -> Lifecycle[Visit]:
    return Lifecycle(
        kind="visit",
        resource="Visit",
        model=Visit,
        table=STEPS,
        refuse=_refuse,
        history=_history,
        audit=audit,
    )
