"""The patient's access log, as the patient reads it: what each entry did, and sessions.

An audit entry about the patient is labelled by what was done (:func:`kind_of`): a read of
the record, a write (an institution's push or import, the making of the account), a
refusal, a break-the-glass access, or another action about the patient (a consult's chat,
a booking). Grouped (:func:`sessions`), consecutive entries — newest first — of the same
person, institution and kind within :data:`SESSION_SPAN` of the session's newest entry are
one line: loading the record page (summary, timeline, labs) is one 查阅, not three.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta

from server.records import schemas

SESSION_SPAN = timedelta(minutes=30)

# Actions that add to the record or the patient index: 上传 / 建档.
WRITES = frozenset({"record.write", "record.import", "patient.create", "patient.register"})
# Reads that are not ``record.access`` entries (those are reads whatever their action).
READ_SUFFIXES = (
    ".read",
    ".summary",
    ".timeline",
    ".search",
    ".everything",
    ".list",
    ".lookup",
    "_read",
    ".access",
)


def kind_of(audited: str, action: str, outcome: str, emergency: bool) -> schemas.AccessKind:
    """``audited`` is the audit entry's own action (``record.access`` for every checked read
    of the record), ``action`` what the route did (``record.summary``)."""
    if outcome != "success":
        return "denied"
    if emergency:
        return "emergency"
    if action in WRITES or audited in WRITES:
        return "write"
    if audited == "record.access" or action.endswith(READ_SUFFIXES):
        return "read"
    return "other"


def _key(entry: schemas.AccessLogEntry) -> tuple[object, ...]:
    institution = entry.institution.id if entry.institution else None
    # A read's ground is part of what the patient reads; a push and its registration are one.
    reason = entry.reason if entry.kind in ("read", "emergency", "denied") else None
    return (entry.user_id, entry.role, institution, entry.kind, reason)


def sessions(entries: Iterable[schemas.AccessLogEntry]) -> Iterator[schemas.AccessLogEntry]:
    """Entries (newest first) joined into sessions, newest first; a session is yielded once
    the next entry starts another, so a caller may stop reading after the one it needs."""
    current: schemas.AccessLogEntry | None = None
    for entry in entries:
        if (
            current is not None
            and _key(entry) == _key(current)
            and current.at - entry.at <= SESSION_SPAN
        ):
            actions = current.actions
            if entry.action not in actions:
                actions = [*actions, entry.action]
            current = current.model_copy(
                update={
                    "count": current.count + 1,
                    "first_at": entry.at,
                    "actions": actions,
                    "resources": _union(current.resources, entry.resources),
                    "ip": current.ip or entry.ip,
                    "first_seq": entry.seq,
                }
            )
            continue
        if current is not None:
            yield current
        current = entry
    if current is not None:
        yield current


def _union(a: str | None, b: str | None) -> str | None:
    parts = [p for p in (a or "").split(",") + (b or "").split(",") if p]
    return ",".join(dict.fromkeys(parts)) or None
