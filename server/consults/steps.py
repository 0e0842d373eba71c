"""The consult's steps: which status each action starts from and leads to, and who takes it.

    requested ──accept──► accepted ──schedule/confirm──► scheduled ──host joins──► in_session
        │  └──propose (another time)──► accepted (proposed_at; requester confirms)    │
        ├──decline (reason)──► declined                              opinion ◄──────────┘
        └──cancel──► cancelled (also from accepted, scheduled)   opinion_written ──close──► closed

The table is declared like every other kind's (:mod:`server.core.lifecycle`): the invited
institution's specialist answers (accept, propose, decline), the host schedules, starts and
writes the opinion, the requester confirms a proposed time and cancels, either closes. A
step's structured note (a reason, a time, the opinion's document) is its history row's
``note`` and goes into its audit entry and its stream event.
"""

from __future__ import annotations

from typing import Any

from server.consults.guards import check_host, check_requester
from server.consults.models import Consult, ConsultTransition
from server.consults.states import ConsultStatus as S
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.errors import Conflict, Forbidden
from server.core.history import HistoryEntry
from server.core.lifecycle import Lifecycle, Step, steps
from server.core.roles import Role


def check_answerer(requester: Requester, consult: Consult) -> None:
    """The invited institution's specialist (the one named, if the request names one)."""
    if (
        requester.role != Role.SPECIALIST
        or requester.institution_id != consult.invited_institution_id
    ):
        raise Forbidden("the invited institution's specialists answer this request")
    if consult.invited_specialist_id not in (None, requester.user_id):
        raise Forbidden("this request names another specialist", code="named_specialist")


def _host(requester: Requester, consult: Consult) -> None:
    check_host(consult, requester)


def _requester(requester: Requester, consult: Consult) -> None:
    check_requester(consult, requester)


def _requester_or_host(requester: Requester, consult: Consult) -> None:
    if requester.user_id not in (consult.requester_id, consult.host_id):
        raise Forbidden("the requester or the host closes a consult")


STEPS = steps(
    Step("request", frozenset(), S.REQUESTED),
    Step("accept", frozenset({S.REQUESTED}), S.ACCEPTED, guard=check_answerer),
    Step("propose", frozenset({S.REQUESTED}), S.ACCEPTED, guard=check_answerer),
    Step("decline", frozenset({S.REQUESTED}), S.DECLINED, guard=check_answerer),
    Step("schedule", frozenset({S.ACCEPTED}), S.SCHEDULED, guard=_host),
    Step("confirm", frozenset({S.ACCEPTED}), S.SCHEDULED, guard=_requester),
    Step("start", frozenset({S.ACCEPTED, S.SCHEDULED}), S.IN_SESSION, guard=_host),
    Step("opinion", frozenset({S.IN_SESSION}), S.OPINION_WRITTEN, guard=_host),
    Step("close", frozenset({S.OPINION_WRITTEN}), S.CLOSED, guard=_requester_or_host),
    # A follow-up visit's room only (server/consults/followup.py): its host ends it.
    Step("finish", frozenset({S.ACCEPTED, S.SCHEDULED, S.IN_SESSION}), S.CLOSED, guard=_host),
    Step(
        "cancel", frozenset({S.REQUESTED, S.ACCEPTED, S.SCHEDULED}), S.CANCELLED, guard=_requester
    ),
)


def _refuse(consult: Consult, action: str, current: str | None) -> Exception:
    sources = STEPS[action].sources
    return Conflict(
        f"a consult that is {current} cannot be {action}ed "
        f"(only from {', '.join(sorted(sources))})",
        code="invalid_transition",
        extra={"status": current, "action": action},
    )


def _history(
    consult: Consult,
    previous: str | None,
    step: Step[Consult],
    actor: Requester | None,
    reason: str | None,
    details: dict[str, Any],
) -> ConsultTransition:
    return ConsultTransition(
        consult_id=consult.id,
        from_status=previous,
        to_status=step.recorded,
        actor_id=actor.user_id if actor else None,
        note=details,
        at=consult.updated_at,
    )


def _audit_details(consult: Consult, previous: str | None, step: Step[Consult]) -> dict[str, Any]:
    # The request's entry names what was asked instead (the invited institution, consent).
    return {"from": previous, "to": step.recorded} if step.sources else {}


def consult_lifecycle(audit: AuditLog) -> Lifecycle[Consult]:
    return Lifecycle(
        kind="consult",
        resource="Consult",
        model=Consult,
        table=STEPS,
        refuse=_refuse,
        history=_history,
        audit=audit,
        audit_details=_audit_details,
    )


def history_entry(row: ConsultTransition) -> HistoryEntry:
    """A history row as the one history answer; the structured note is its ``details``
    (and, as before, its ``note``); a reason the actor gave (decline, cancel) its ``reason``."""
    note = dict(row.note or {})
    reason = note.get("reason")
    return HistoryEntry(
        at=row.at,
        from_status=row.from_status,
        to_status=row.to_status,
        actor_user_id=row.actor_id,
        reason=reason if isinstance(reason, str) else None,
        details=note,
        actor_id=row.actor_id,
        note=note,
    )
