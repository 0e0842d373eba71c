"""The clinical traffic of the failure tests: consult chat and prescription delivery.

One implementation, shared with the chaos suite: it lives in ``chaos/clients.py`` (the
clinic, its personas' tabs, the documented-rule client and the tallies); the failure tests
import it from here.
"""

from __future__ import annotations

from chaos.clients import (
    RETRYABLE,
    Clinic,
    Flow,
    Member,
    Pharmacy,
    chat_key,
    connect_all,
    delivery_key,
    enter_consult,
    me,
    open_clinic,
    prescribe,
    prescription_body,
    presence,
    report,
    request,
    send_chat,
    wait_until,
)

__all__ = [
    "RETRYABLE",
    "Clinic",
    "Flow",
    "Member",
    "Pharmacy",
    "chat_key",
    "connect_all",
    "delivery_key",
    "enter_consult",
    "me",
    "open_clinic",
    "prescribe",
    "prescription_body",
    "presence",
    "report",
    "request",
    "send_chat",
    "wait_until",
]
