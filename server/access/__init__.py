"""Access: consent, care relationships, access windows, and the one check of a reason.

The names other capabilities use are re-exported here; the tables live in
:mod:`server.access.models` and are nobody else's to query.
"""

from server.access.care import ENCOUNTERS, CareState
from server.access.consent import RevocationListener
from server.access.policy import (
    CLOSED,
    OPEN,
    SENSITIVE_CATEGORIES,
    ConsentState,
    ContentPolicy,
    withheld_marker,
    withhold,
)
from server.access.service import (
    REASONS,
    AccessDecisions,
    AccessRefused,
    AccessService,
    ReadDecision,
    excluded_only,
)

__all__ = [
    "CLOSED",
    "ENCOUNTERS",
    "OPEN",
    "REASONS",
    "SENSITIVE_CATEGORIES",
    "AccessDecisions",
    "AccessRefused",
    "AccessService",
    "CareState",
    "ConsentState",
    "ContentPolicy",
    "ReadDecision",
    "RevocationListener",
    "excluded_only",
    "withheld_marker",
    "withhold",
]
