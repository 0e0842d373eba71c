"""The referral's steps: which status each action starts from and leads to, and who takes it.

    requested ──accept──► accepted ──schedule──► scheduled ──arrive──► arrived ──complete──► completed
        │                    │  ▲                    │
        │                    │  └──(slot cancelled)──┘
        ├──decline──► declined
        ├──expire───► expired            (requested, unanswered past expires_at)
        └──cancel───► cancelled          (from requested, accepted or scheduled; also by supersession)

The receiving institution's clinicians answer (accept, decline, schedule, arrive,
complete); the referring institution's cancel; the system expires and unschedules.
"""

from __future__ import annotations

from typing import Any

from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import utcnow
from server.core.errors import Conflict, Forbidden
from server.core.lifecycle import Lifecycle, Step, steps
from server.core.roles import REFERRAL_DESK_ROLES
from server.referrals.models import Referral, ReferralHistory
from server.referrals.models import ReferralStatus as S

OPEN = frozenset({S.REQUESTED, S.ACCEPTED, S.SCHEDULED})
ENDED = frozenset({S.COMPLETED, S.DECLINED, S.CANCELLED, S.EXPIRED})
# Steps the receiving side takes (the referring side hears of them, and the reverse).
RECEIVING_STEPS = frozenset({"accept", "decline", "schedule", "arrive", "complete"})


def _desk_of(side: str, action: str) -> Any:
    def guard(requester: Requester, referral: Referral) -> None:
        institution_id = (
            referral.from_institution_id if side == "referring" else referral.to_institution_id
        )
        if requester.role not in REFERRAL_DESK_ROLES or requester.institution_id != institution_id:
            raise Forbidden(f"only the {side} institution may {action} this referral")

    return guard


def _receiving(action: str, sources: frozenset[S], target: S) -> Step[Referral]:
    return Step(action, frozenset(sources), target, guard=_desk_of("receiving", action))


STEPS = steps(
    Step("create", frozenset(), S.REQUESTED),
    _receiving("accept", frozenset({S.REQUESTED}), S.ACCEPTED),
    _receiving("decline", frozenset({S.REQUESTED}), S.DECLINED),
    _receiving("schedule", frozenset({S.ACCEPTED}), S.SCHEDULED),
    Step("unschedule", frozenset({S.SCHEDULED}), S.ACCEPTED),
    _receiving("arrive", frozenset({S.ACCEPTED, S.SCHEDULED}), S.ARRIVED),
    _receiving("complete", frozenset({S.ARRIVED}), S.COMPLETED),
    Step("cancel", frozenset(OPEN), S.CANCELLED, guard=_desk_of("referring", "cancel")),
    Step("expire", frozenset({S.REQUESTED}), S.EXPIRED),
)


def check_allowed(referral: Referral, action: str) -> None:
    """Before any work (a booking) is done: may the referral take this step now?"""
    if not STEPS[action].allows(referral.status):
        raise Conflict(
            f"cannot {action} a referral that is {referral.status}",
            code="invalid_transition",
            extra={"referral_status": referral.status, "action": action},
        )


def _refuse(referral: Referral, action: str, current: str | None) -> Exception:
    return Conflict(
        f"cannot {action} a referral that is {current}",
        code="invalid_transition",
        extra={"status": current, "action": action},
    )


def _history(
    referral: Referral,
    previous: str | None,
    step: Step[Referral],
    actor: Requester | None,
    reason: str | None,
    details: dict[str, Any],
) -> ReferralHistory:
    return ReferralHistory(
        referral_id=referral.id,
        from_status=previous,
        to_status=step.recorded,
        actor_user_id=actor.user_id if actor else None,
        note=reason,
        at=utcnow(),
    )


def _audit_details(
    referral: Referral, previous: str | None, step: Step[Referral]
) -> dict[str, Any]:
    return {"from": previous, "to": step.recorded}


def referral_lifecycle(audit: AuditLog) -> Lifecycle[Referral]:
    return Lifecycle(
        kind="referral",
        resource="Referral",
        model=Referral,
        table=STEPS,
        refuse=_refuse,
        history=_history,
        audit=audit,
        audit_details=_audit_details,
    )
