"""Content policy: what record content about a patient may reach a reader.

Record content leaves the record service in many shapes: consult snapshots, chat
attachments, consult and referral documents. Each of them asks one question
(:meth:`server.access.service.AccessService.content_policy`) and filters with these
values, so an exclusion or a revocation holds wherever the content goes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

SENSITIVE_CATEGORIES = ("mental_health", "reproductive_health", "hiv", "substance_use", "genetic")


@dataclass(frozen=True)
class ConsentState:
    institution_id: int
    granted: bool
    excluded_categories: list[str]
    updated_at: datetime


@dataclass(frozen=True)
class ContentPolicy:
    """The patient's consent as it applies to one reader: revoked, or categories left out."""

    revoked: bool
    excluded: frozenset[str]

    def allows(self, sensitivity: str | None) -> bool:
        return not self.revoked and (sensitivity is None or sensitivity not in self.excluded)

    def stricter(self, other: ContentPolicy) -> ContentPolicy:
        """Content shown to two institutions at once (a consult's chat) obeys both."""
        return ContentPolicy(self.revoked or other.revoked, self.excluded | other.excluded)


OPEN = ContentPolicy(revoked=False, excluded=frozenset())
CLOSED = ContentPolicy(revoked=True, excluded=frozenset())


def withheld_marker(count: int) -> dict[str, Any] | None:
    """What a payload says about items left out: how many, never of which category."""
    return {"count": count, "reason": "consent"} if count else None


T = TypeVar("T")


def withhold(
    items: Sequence[T], policy: ContentPolicy, sensitivity_of: Callable[[T], str | None]
) -> tuple[list[T], int]:
    """The items the policy allows, and how many it left out."""
    kept = [item for item in items if policy.allows(sensitivity_of(item))]
    return kept, len(items) - len(kept)
