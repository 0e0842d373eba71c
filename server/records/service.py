"""The shared record: ingest, the FHIR read side, the clinician views, consent and access lists.

Every read of a patient's data goes through
:meth:`AccessService.check_patient_access` (deny by default, audited), and
what the reader sees leaves out the sensitive categories the patient excluded
for the reader's institution. ``resources`` and ``add_resource`` are the
trusted calls other capabilities make after their own checks.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    Text,
    bindparam,
    desc,
    func,
    literal_column,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy import (
    cast as sql_cast,
)
from sqlalchemy.ext.asyncio import AsyncSession

from server.access import (
    AccessService,
    ContentPolicy,
    excluded_only,
    withheld_marker,
    withhold,
)
from server.core.audit import AuditEvent, AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx
from server.core.errors import BadRequest, Forbidden, NotFound, ValidationFailed
from server.core.ids import RESIDENT_ID_SYSTEM
from server.core.roles import PRACTITIONER_ROLES
from server.identity.directory import Directory
from server.identity.patients import PatientIndex, local_identifier_system
from server.identity.schemas import InstitutionOut, PatientOut
from server.identity.service import IdentityService
from server.inbox.service import InboxService
from server.records import access_log, schemas
from server.records.fhir import (
    SEARCH_PARAMS,
    BundleRefused,
    parse_fhir_datetime,
)
from server.records.ingest import Ingest, Item, Scope, Sender
from server.records.models import RecordEntry

ACTIVE_PROBLEM = ("active", "recurrence", "relapse")
ABNORMAL_FLAGS = frozenset({"H", "HH", "HU", "L", "LL", "LU", "A", "AA", "<", ">", "POS", "DET"})
LAB_CODES = 20  # distinct tests shown
TREND_POINTS = 5
# The lists of a clinical summary, each of record items (what a snapshot freezes).
SUMMARY_LISTS = ("active_problems", "recent_labs", "current_medications", "allergies")
_SUMMARY_TYPES = ("Condition", "Observation", "MedicationRequest", "AllergyIntolerance")
# The members of a lab result a summary reads (its value, flag and range).
_LAB_MEMBERS = (
    "valueQuantity",
    "valueString",
    "valueCodeableConcept",
    "interpretation",
    "referenceRange",
)
T = TypeVar("T")


class RecordsService:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        access: AccessService,
        patients: PatientIndex,
        identity: IdentityService,
        directory: Directory,
        inbox: InboxService | None = None,
    ) -> None:
        self.db = db
        self.audit = audit
        self.access = access
        self.patients = patients
        self.identity = identity
        self.directory = directory
        self.ingest = Ingest(db, audit, access, patients, inbox)

    # --- writes ----------------------------------------------------------------

    async def push_bundle(
        self, requester: Requester | None, institution_code: str | None, bundle: Any
    ) -> dict[str, Any]:
        """An institution's FHIR push; ``requester`` None is the operator's import."""
        institution = await self._sender_institution(requester, institution_code)
        sender = Sender(institution.id, institution.code, requester)
        return await self.ingest.bundle(sender, bundle)

    async def _sender_institution(
        self, requester: Requester | None, institution_code: str | None
    ) -> InstitutionOut:
        if requester is None:
            assert institution_code is not None
            for inst in await self.identity.list_institutions():
                if inst.code == institution_code:
                    return inst
            raise NotFound(f"no institution '{institution_code}'")
        if requester.role not in PRACTITIONER_ROLES or requester.institution_id is None:
            raise Forbidden("clinical data is pushed by the staff of an institution, for it")
        return await self.identity.get_institution(requester.institution_id)

    async def add_resource(
        self, tx: Tx, *, patient_id: int, institution_id: int, resource: dict[str, Any]
    ) -> dict[str, Any]:
        """Trusted write of one resource into the caller's transaction; returns it stored."""
        resource = copy.deepcopy(resource)
        for key in ("subject", "patient"):
            if key in resource:
                break
        else:
            resource["subject"] = {"reference": f"Patient/{patient_id}"}
        # Inside the caller's transaction: no second connection (SQLite has one writer).
        institution = await self.directory.institution(tx.session, institution_id)
        if institution is None:
            raise NotFound(f"no institution {institution_id}")
        item = Item(0, "resource", None, resource)
        scope = Scope(patients={patient_id})
        try:
            stored = await self.ingest.store(
                tx, Sender(institution.id, institution.code, None), scope, [item]
            )
        except BundleRefused as exc:
            raise ValidationFailed(
                exc.detail,
                errors=[
                    {"field": i["expression"][0], "reason": i["diagnostics"]} for i in exc.issues
                ],
            ) from None
        location = stored[0].location.split("/")
        row = await tx.session.get(RecordEntry, int(location[1]))
        assert row is not None
        return dict(row.resource)

    # --- trusted reads --------------------------------------------------------

    async def resources(
        self,
        patient_id: int,
        resource_type: str,
        *,
        status: str | None = None,
        code: str | None = None,
    ) -> list[dict[str, Any]]:
        """The patient's resources of a type, newest first (no access check: callers have
        checked, or need one fact for a job that is not reading the record)."""
        query = select(RecordEntry.resource).where(
            RecordEntry.patient_id == patient_id, RecordEntry.resource_type == resource_type
        )
        if status is not None:
            query = query.where(RecordEntry.status == status)
        if code is not None:
            query = query.where(RecordEntry.code == code)
        async with self.db.read() as session:
            rows = await session.scalars(query.order_by(RecordEntry.date.desc(), RecordEntry.id))
            return [dict(r) for r in rows]

    # --- record content that travels (snapshots, attachments, documents) -------------

    async def sensitivities(self, ids: Iterable[int]) -> dict[int, str | None]:
        """The sensitive category of stored entries, as ingest classified them (one classifier)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        async with self.db.read() as session:
            rows = await session.execute(
                select(RecordEntry.id, RecordEntry.sensitivity).where(RecordEntry.id.in_(wanted))
            )
            return {row.id: row.sensitivity for row in rows}

    async def withhold_items(
        self, policy: ContentPolicy, items: Sequence[T]
    ) -> tuple[list[T], int]:
        """Record items a reader may receive: anything naming its entry (a FHIR resource, a
        summary item, an attachment, a ``Type/id`` reference), and how many were left out."""
        if policy.revoked:
            return [], len(items)
        if not policy.excluded:
            return list(items), 0
        found = await self.sensitivities(i for i in map(_entry_id, items) if i is not None)
        return withhold(items, policy, lambda item: found.get(_entry_id(item) or 0))

    async def withhold_snapshot(
        self, policy: ContentPolicy, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        """A frozen record snapshot (summary and items) as this reader may see it."""
        out = copy.deepcopy(snapshot)
        count = int((snapshot.get("withheld") or {}).get("count", 0))
        summary = out.get("summary")
        if isinstance(summary, dict):
            for key in SUMMARY_LISTS:
                if isinstance(summary.get(key), list):
                    summary[key], left_out = await self.withhold_items(policy, summary[key])
                    count += left_out
        if isinstance(out.get("items"), list):
            out["items"], left_out = await self.withhold_items(policy, out["items"])
            count += left_out
        out.pop("withheld", None)
        marker = withheld_marker(count)
        if marker is not None:
            out["withheld"] = marker
        return out

    # --- access-checked reads -------------------------------------------------

    async def _checked(
        self,
        requester: Requester,
        patient_id: int,
        action: str,
        resources: str,
        emergency_reason: str | None,
    ) -> tuple[str, frozenset[str]]:
        """The reason and the excluded categories, audited (for a read in a session of its own)."""
        return await self.access.read_checked(
            requester,
            patient_id,
            excluded_only,
            action=action,
            resources=resources,
            emergency_reason=emergency_reason,
        )

    @staticmethod
    def _visible(query: Select[Any], patient_id: Any, excluded: frozenset[str]) -> Select[Any]:
        query = query.where(RecordEntry.patient_id == patient_id)
        if excluded:
            query = query.where(
                or_(RecordEntry.sensitivity.is_(None), RecordEntry.sensitivity.notin_(excluded))
            )
        return query

    async def _institutions(self) -> dict[int, schemas.SourceInstitution]:
        return {
            i.id: schemas.SourceInstitution(id=i.id, code=i.code, name=i.name)
            for i in await self.identity.list_institutions()
        }

    async def _sources(
        self, session: AsyncSession, ids: Iterable[int]
    ) -> dict[int, schemas.SourceInstitution]:
        """The institutions that sent these rows, in the caller's session (one query)."""
        return {
            i.id: schemas.SourceInstitution(id=i.id, code=i.code, name=i.name)
            for i in (await self.directory.institutions(session, ids)).values()
        }

    async def clinical_summary(
        self, requester: Requester, patient_id: int, emergency_reason: str | None = None
    ) -> schemas.ClinicalSummary:
        """Active problems, the latest lab results with their trend, current medications and
        allergies: one statement, the database picking the rows (and, of a lab result, only
        the members the summary shows), never the whole record in Python."""

        async def read(session: AsyncSession, excluded: frozenset[str]) -> list[Any]:
            dialect = session.get_bind().dialect.name
            query = _summary_query(excluded, dialect)
            rows = list(await session.execute(query, {"patient_id": patient_id}))
            institutions = await self._sources(session, {r.institution_id for r in rows})
            return [rows, institutions]

        reason, (rows, institutions) = await self.access.read_checked(
            requester,
            patient_id,
            read,
            action="record.summary",
            resources="summary",
            emergency_reason=emergency_reason,
        )
        lists: dict[str, list[Any]] = {t: [] for t in _SUMMARY_TYPES}
        for row in rows:  # newest first
            lists[row.resource_type].append(row)
        return schemas.ClinicalSummary(
            patient_id=patient_id,
            active_problems=[_item(r, institutions) for r in lists["Condition"]],
            recent_labs=_lab_results(lists["Observation"], institutions),
            current_medications=[_item(r, institutions) for r in lists["MedicationRequest"]],
            allergies=[_item(r, institutions) for r in lists["AllergyIntolerance"]],
            access_reason=reason,
        )

    async def timeline(
        self,
        requester: Requester,
        patient_id: int,
        query: schemas.TimelineQuery,
        emergency_reason: str | None = None,
    ) -> schemas.Timeline:
        reason, excluded = await self._checked(
            requester, patient_id, "record.timeline", query.type or "timeline", emergency_reason
        )
        institutions = await self._institutions()
        filters: list[Any] = [RecordEntry.resource_type != "Patient"]
        if query.type:
            filters.append(RecordEntry.resource_type == query.type)
        if query.code:
            filters.append(RecordEntry.code == query.code)
        if query.date_from:
            filters.append(RecordEntry.date >= datetime.combine(query.date_from, time(), UTC))
        if query.date_to:
            filters.append(RecordEntry.date < _day_after(query.date_to))
        if query.institution:
            wanted = [i.id for i in institutions.values() if i.code == query.institution]
            if not wanted:
                raise ValidationFailed.field("institution", f"no institution '{query.institution}'")
            filters.append(RecordEntry.institution_id == wanted[0])
        async with self.db.read() as session:
            base = self._visible(select(*_item_columns()), patient_id, excluded).where(*filters)
            total = await session.scalar(select(func.count()).select_from(base.subquery()))
            rows = await session.execute(
                base.order_by(RecordEntry.date.desc(), RecordEntry.id.desc())
                .offset(query.offset)
                .limit(query.limit)
            )
            items = [_item(r, institutions) for r in rows]
        total = int(total or 0)
        following = query.offset + len(items)
        return schemas.Timeline(
            patient_id=patient_id,
            items=items,
            total=total,
            next_offset=following if following < total else None,
            access_reason=reason,
        )

    # --- FHIR read side --------------------------------------------------------

    async def read(
        self, requester: Requester, rtype: str, rid: str, emergency_reason: str | None = None
    ) -> dict[str, Any]:
        if not rid.isdigit():
            raise NotFound(f"no {rtype}/{rid}")
        if rtype == "Patient":
            await self._checked(
                requester, int(rid), "fhir.read", f"Patient/{rid}", emergency_reason
            )
            return await self.patient_resource(int(rid))
        async with self.db.read() as session:
            row = await session.scalar(
                select(RecordEntry).where(
                    RecordEntry.id == int(rid), RecordEntry.resource_type == rtype
                )
            )
        if row is None:
            raise NotFound(f"no {rtype}/{rid}")
        if row.patient_id is None:
            if requester.role not in PRACTITIONER_ROLES:
                raise Forbidden("shared reference data is for practitioners")
            return dict(row.resource)
        _, excluded = await self._checked(
            requester, row.patient_id, "fhir.read", f"{rtype}/{rid}", emergency_reason
        )
        if row.sensitivity in excluded:
            raise Forbidden(
                "the patient does not share this category with your institution",
                code="consent_excluded",
            )
        return dict(row.resource)

    async def patient_resource(self, patient_id: int) -> dict[str, Any]:
        account = await self.patients.account(patient_id)
        if account is None:
            raise NotFound(f"no Patient/{patient_id}")
        return patient_fhir(account)

    async def search(
        self,
        requester: Requester,
        rtype: str,
        params: Sequence[tuple[str, str]],
        *,
        count: int,
        offset: int,
        emergency_reason: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        allowed = SEARCH_PARAMS.get(rtype)
        if allowed is None:
            raise BadRequest(f"searching {rtype} is not supported", code="unsupported_search")
        unknown = sorted({k for k, _ in params if k not in allowed})
        if unknown:
            raise BadRequest(
                f"unknown search parameter(s) for {rtype}: {', '.join(unknown)}; "
                f"supported: {', '.join(allowed)}, _count, _offset",
                code="unknown_search_parameter",
            )
        if rtype == "Patient":
            return await self._search_patients(requester, params, emergency_reason)
        patients = [v for k, v in params if k == "patient"]
        if len(patients) != 1:
            raise BadRequest(f"searching {rtype} needs one 'patient' parameter")
        patient_id = _patient_param(patients[0])
        filters: list[Any] = [RecordEntry.resource_type == rtype]
        for key, value in params:
            if key == "code":
                system, bar, code = value.rpartition("|")
                filters.append(RecordEntry.code.in_(code.split(",")))
                if bar and system:
                    filters.append(RecordEntry.code_system == system)
            elif key == "status":
                filters.append(RecordEntry.status.in_(value.split(",")))
            elif key == "category":
                filters.append(RecordEntry.category.in_(value.split(",")))
            elif key == "date":
                filters.append(_date_filter(value))
        # The parameters are checked first: a bad request is a 400 before any access decision.

        async def read(
            session: AsyncSession, excluded: frozenset[str]
        ) -> tuple[list[dict[str, Any]], int]:
            query = self._visible(select(RecordEntry.resource), patient_id, excluded).where(
                *filters
            )
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(
                query.order_by(RecordEntry.date.desc(), RecordEntry.id.desc())
                .offset(offset)
                .limit(count)
            )
            return [dict(r) for r in rows], int(total or 0)

        _, found = await self.access.read_checked(
            requester,
            patient_id,
            read,
            action="fhir.search",
            resources=rtype,
            emergency_reason=emergency_reason,
        )
        return found

    async def _search_patients(
        self,
        requester: Requester,
        params: Sequence[tuple[str, str]],
        emergency_reason: str | None,
    ) -> tuple[list[dict[str, Any]], int]:
        ids: set[int] = set()
        for key, value in params:
            if key == "_id":
                if value.isdigit():
                    ids.add(int(value))
            else:
                system, bar, ident = value.partition("|")
                if not bar:
                    raise BadRequest("identifier takes system|value")
                found = await self.patients.find_by_identifier(system, ident)
                if found is not None:
                    ids.add(found)
        out = []
        for pid in sorted(ids):
            # A patient one may not see is left out, audited, exactly as an unknown one is
            # (no answer tells who is in the network).
            try:
                await self._checked(requester, pid, "fhir.search", "Patient", emergency_reason)
            except Forbidden:
                continue
            out.append(await self.patient_resource(pid))
        return out, len(out)

    async def everything_page(
        self,
        requester: Requester,
        patient_id: int,
        *,
        count: int,
        offset: int,
        emergency_reason: str | None = None,
    ) -> EverythingPage:
        """The patient (first page) and every entry about them, paged by id: each entry as
        its stored JSON text, which is already the resource (nothing decoded here)."""

        async def read(session: AsyncSession, excluded: frozenset[str]) -> EverythingPage:
            columns: tuple[Any, ...] = (RecordEntry.resource_type, RecordEntry.id)
            query = self._visible(select(*columns), patient_id, excluded).where(
                RecordEntry.resource_type != "Patient"
            )
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.execute(
                query.add_columns(sql_cast(RecordEntry.resource, Text))
                .order_by(RecordEntry.id)
                .offset(max(offset - 1, 0))
                .limit(count - (offset == 0))
            )
            entries = [(t, i, text) for t, i, text in rows]
            return EverythingPage(None, entries, int(total or 0) + 1)

        _, page = await self.access.read_checked(
            requester,
            patient_id,
            read,
            action="fhir.everything",
            resources="Patient/$everything",
            emergency_reason=emergency_reason,
        )
        if offset == 0:
            page = replace(page, patient=await self.patient_resource(patient_id))
        return page

    # --- consent and the patient's access list ---------------------------------

    async def set_consent(
        self, requester: Requester, patient_id: int, institution_code: str, data: schemas.ConsentSet
    ) -> schemas.ConsentOut:
        institutions = await self._institutions()
        match = [i for i in institutions.values() if i.code == institution_code]
        if not match:
            raise NotFound(f"no institution '{institution_code}'")
        state = await self.access.set_consent(
            requester,
            patient_id,
            match[0].id,
            granted=data.granted,
            excluded_categories=list(data.excluded_categories),
        )
        return schemas.ConsentOut(
            institution=match[0],
            granted=state.granted,
            excluded_categories=state.excluded_categories,
            updated_at=state.updated_at,
        )

    async def consents(self, requester: Requester, patient_id: int) -> schemas.ConsentList:
        _check_self(requester, patient_id)
        institutions = await self._institutions()
        return schemas.ConsentList(
            items=[
                schemas.ConsentOut(
                    institution=institutions[c.institution_id],
                    granted=c.granted,
                    excluded_categories=c.excluded_categories,
                    updated_at=c.updated_at,
                )
                for c in await self.access.list_consents(patient_id)
            ]
        )

    async def access_log(
        self, requester: Requester, patient_id: int, query: schemas.AccessLogQuery
    ) -> schemas.AccessLog:
        """Everything others did or were refused about the patient, newest first, paged;
        ``grouped``: one item per session of access (:mod:`server.records.access_log`)."""
        if requester.role != "platform_admin":
            _check_self(requester, patient_id)
        institutions = await self._institutions()
        users = {u.id: u for u in await self.identity.list_users(_OPERATOR, None, None)}
        stmt = select(AuditEvent).where(AuditEvent.patient_id == patient_id)
        if requester.role == "patient":  # their own doings are not "who looked"
            stmt = stmt.where(
                or_(
                    AuditEvent.actor_user_id.is_(None),
                    AuditEvent.actor_user_id != requester.user_id,
                ),
                or_(AuditEvent.reason.is_(None), AuditEvent.reason != "self"),
            )

        def entry(event: AuditEvent) -> schemas.AccessLogEntry:
            user = users.get(event.actor_user_id or 0)
            inst_id = event.details.get("institution_id")
            if inst_id is None and user is not None and user.institution is not None:
                inst_id = user.institution.id
            action = str(event.details.get("action", event.action))
            emergency = bool(event.details.get("break_the_glass"))
            return schemas.AccessLogEntry(
                seq=event.seq,
                at=event.at,
                user_id=event.actor_user_id,
                user_name=user.name if user else None,
                role=event.actor_role,
                institution=institutions.get(inst_id) if inst_id else None,
                action=action,
                outcome=event.outcome,
                reason=event.reason,
                resources=event.resource,
                ip=event.ip,
                emergency=emergency,
                kind=access_log.kind_of(event.action, action, event.outcome, emergency),
                first_at=event.at,
                first_seq=event.seq,
                actions=[action],
            )

        async def page(before: int | None, size: int) -> list[schemas.AccessLogEntry]:
            page_stmt = stmt if before is None else stmt.where(AuditEvent.seq < before)
            async with self.db.read() as session:
                rows = await session.scalars(page_stmt.order_by(AuditEvent.seq.desc()).limit(size))
                return [entry(e) for e in rows]

        if not query.grouped:
            items = await page(query.before, query.limit + 1)
            more = len(items) > query.limit
            items = items[: query.limit]
            return schemas.AccessLog(items=items, next_before=items[-1].seq if more else None)
        # Sessions: read entries in chunks until a session after the last one wanted starts
        # (so that one is whole), or the log ends, or GROUPED_READ_MAX entries were read.
        entries: list[schemas.AccessLogEntry] = []
        cursor, done = query.before, False
        while not done:
            chunk = await page(cursor, GROUPED_CHUNK)
            entries += chunk
            done = len(chunk) < GROUPED_CHUNK or len(entries) >= GROUPED_READ_MAX
            cursor = chunk[-1].seq if chunk else cursor
            grouped = list(access_log.sessions(entries))
            if len(grouped) > query.limit:
                return schemas.AccessLog(
                    items=grouped[: query.limit], next_before=grouped[query.limit - 1].first_seq
                )
        grouped = list(access_log.sessions(entries))
        truncated = len(entries) >= GROUPED_READ_MAX and bool(grouped)
        return schemas.AccessLog(
            items=grouped, next_before=grouped[-1].first_seq if truncated else None
        )

    # --- trusted reads in a caller's session --------------------------------------------

    async def resources_of_types(
        self,
        session: AsyncSession,
        patient_id: int,
        resource_types: Iterable[str],
        coded: Iterable[tuple[str, str]] = (),
    ) -> dict[str, list[dict[str, Any]]]:
        """Several resource types of a patient in one query inside the caller's session (as
        :meth:`resources`: no access check), by type, newest first; ``coded`` adds
        ``(type, code)`` pairs (one Observation code, not all Observations)."""
        wanted = sorted(set(resource_types))
        pairs = sorted(set(coded))
        match: list[ColumnElement[bool]] = [RecordEntry.resource_type.in_(wanted)] if wanted else []
        match += [(RecordEntry.resource_type == t) & (RecordEntry.code == c) for t, c in pairs]
        found: dict[str, list[dict[str, Any]]] = {t: [] for t in [*wanted, *(t for t, _ in pairs)]}
        if not match:
            return found
        rows = await session.execute(
            select(RecordEntry.resource_type, RecordEntry.resource)
            .where(RecordEntry.patient_id == patient_id, or_(*match))
            .order_by(RecordEntry.date.desc(), RecordEntry.id)
        )
        for resource_type, resource in rows:
            found[resource_type].append(dict(resource))
        return found


@dataclass(frozen=True)
class EverythingPage:
    """A page of ``Patient/$everything``: the Patient (first page only), then the entries
    as ``(type, id, stored JSON text)`` in id order; ``total`` counts the Patient."""

    patient: dict[str, Any] | None
    entries: list[tuple[str, int, str]]
    total: int


_OPERATOR = Requester(user_id=0, role="platform_admin", session_id="")
# The grouped access log reads the audit in chunks of this many entries, at most this many.
GROUPED_CHUNK = 200
GROUPED_READ_MAX = 5000


def _check_self(requester: Requester, patient_id: int) -> None:
    if requester.role != "patient" or requester.patient_id != patient_id:
        raise Forbidden("only the patient sees this")


def _entry_id(item: Any) -> int | None:
    """The record entry an item names: ``{"id": …}`` (resource, summary item) or ``Type/id``."""
    raw = item.get("id") if isinstance(item, dict) else str(item).rpartition("/")[2]
    text = str(raw) if raw is not None else ""
    return int(text) if text.isdigit() else None


def _item_columns() -> tuple[Any, ...]:
    return (
        RecordEntry.id,
        RecordEntry.resource_type,
        RecordEntry.code,
        RecordEntry.code_system,
        RecordEntry.display,
        RecordEntry.date,
        RecordEntry.status,
        RecordEntry.category,
        RecordEntry.institution_id,
        RecordEntry.ingested_at,
    )


def _item(row: Any, institutions: dict[int, schemas.SourceInstitution]) -> schemas.RecordItem:
    return schemas.RecordItem(
        id=row.id,
        resource_type=row.resource_type,
        code=row.code,
        code_system=row.code_system,
        display=row.display,
        date=row.date,
        status=row.status,
        category=row.category,
        institution=institutions[row.institution_id],
        ingested_at=row.ingested_at,
    )


@functools.lru_cache(maxsize=128)
def _summary_query(excluded: frozenset[str], dialect: str) -> Select[Any]:
    """Every row of a clinical summary, newest first: the active problems, current
    medications and allergies, and the latest results (with their trend) of the
    ``LAB_CODES`` tests measured last, each lab row with only the members a summary shows.

    Built once per set of excluded categories (the patient is the ``patient_id``
    parameter): building it costs more than the database takes for a small record."""
    visible = RecordsService._visible
    patient_id: Any = bindparam("patient_id", type_=Integer)
    lists = visible(select(*_item_columns(), null().label("facts")), patient_id, excluded).where(
        # The types on their own first: the (patient, type, date) index finds the three lists.
        RecordEntry.resource_type.in_(("Condition", "MedicationRequest", "AllergyIntolerance")),
        or_(
            (RecordEntry.resource_type == "Condition") & RecordEntry.status.in_(ACTIVE_PROBLEM),
            (RecordEntry.resource_type == "MedicationRequest") & (RecordEntry.status == "active"),
            (RecordEntry.resource_type == "AllergyIntolerance")
            & or_(RecordEntry.status.is_(None), RecordEntry.status == "active"),
        ),
    )
    newest_first = (RecordEntry.date.desc(), RecordEntry.id.desc())
    # Each test's results ranked newest first, then the tests ranked by their latest result,
    # so that only those rows leave the database (a long record has thousands of results).
    ranked = (
        visible(
            select(
                RecordEntry.id,
                RecordEntry.code,
                RecordEntry.date,
                func.row_number()
                .over(partition_by=RecordEntry.code, order_by=newest_first)
                .label("rank"),
            ),
            patient_id,
            excluded,
        )
        .where(
            RecordEntry.resource_type == "Observation",
            RecordEntry.category == "laboratory",
            RecordEntry.code.is_not(None),
        )
        .cte("ranked")  # read twice below: computed once
    )
    tests = (
        select(
            ranked.c.code,
            func.row_number()
            .over(order_by=(ranked.c.date.desc(), ranked.c.id.desc()))
            .label("code_rank"),
        )
        .where(ranked.c.rank == 1)
        .subquery("tests")
    )
    labs = (
        select(*_item_columns(), _lab_members(dialect).label("facts"))
        .join(ranked, ranked.c.id == RecordEntry.id)
        .join(tests, tests.c.code == ranked.c.code)
        .where(ranked.c.rank <= TREND_POINTS + 1, tests.c.code_rank <= LAB_CODES)
    )
    return union_all(lists, labs).order_by(desc("date"), desc("id"))  # type: ignore[return-value]


def _lab_members(dialect: str) -> ColumnElement[str]:
    """A JSON object of the members of a lab result the summary reads (null when absent),
    built by the database from the stored resource."""
    pairs: list[Any] = []
    for member in _LAB_MEMBERS:
        name: ColumnElement[str] = literal_column(f"'{member}'")
        pairs.append(name)
        if dialect == "postgresql":
            pairs.append(RecordEntry.resource.op("->")(name))
        else:
            pairs.append(func.json_extract(RecordEntry.resource, literal_column(f"'$.{member}'")))
    if dialect == "postgresql":
        return sql_cast(func.json_build_object(*pairs), Text)
    return func.json_object(*pairs, type_=Text)


def _facts(row: Any) -> dict[str, Any]:
    """A lab row's members (:func:`_lab_members`) as the resource has them (absent: left out)."""
    found = orjson.loads(row.facts) if row.facts else {}
    return {key: value for key, value in found.items() if value is not None}


def _lab_results(
    rows: list[Any], institutions: dict[int, schemas.SourceInstitution]
) -> list[schemas.LabResult]:
    by_code: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for row in rows:  # newest first
        by_code.setdefault(row.code, []).append((row, _facts(row)))
    results = []
    for group in list(by_code.values())[:LAB_CODES]:
        latest, facts = group[0]
        value, unit = _value(facts)
        flag = _interpretation(facts, value)
        trend = [
            schemas.TrendPoint(date=r.date, value=v if isinstance(v, float) else None)
            for r, f in group[1 : TREND_POINTS + 1]
            for v in (_value(f)[0],)
        ]
        results.append(
            schemas.LabResult(
                **_item(latest, institutions).model_dump(),
                value=value,
                unit=unit,
                interpretation=flag,
                abnormal=flag is not None and flag.upper() in ABNORMAL_FLAGS,
                reference_range=_range_text(facts),
                trend=trend,
                direction=_direction(value, trend),
            )
        )
    return results


def _value(resource: dict[str, Any]) -> tuple[float | str | None, str | None]:
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        return float(quantity["value"]), quantity.get("unit") or quantity.get("code")
    if "valueString" in resource:
        return str(resource["valueString"]), None
    concept = resource.get("valueCodeableConcept")
    if isinstance(concept, dict):
        return concept.get("text") or (concept.get("coding") or [{}])[0].get("display"), None
    return None, None


def _interpretation(resource: dict[str, Any], value: float | str | None) -> str | None:
    for concept in resource.get("interpretation") or []:
        for coding in concept.get("coding") or []:
            if coding.get("code"):
                return str(coding["code"])
    # No flag sent: derive it from the reference range.
    if isinstance(value, float):
        for ref in resource.get("referenceRange") or []:
            low, high = (ref.get("low") or {}).get("value"), (ref.get("high") or {}).get("value")
            if low is not None and value < float(low):
                return "L"
            if high is not None and value > float(high):
                return "H"
            if low is not None or high is not None:
                return "N"
    return None


def _range_text(resource: dict[str, Any]) -> str | None:
    for ref in resource.get("referenceRange") or []:
        if ref.get("text"):
            return str(ref["text"])
        low, high = (ref.get("low") or {}).get("value"), (ref.get("high") or {}).get("value")
        if low is not None or high is not None:
            return f"{'' if low is None else low}–{'' if high is None else high}"
    return None


def _direction(value: float | str | None, trend: list[schemas.TrendPoint]) -> str | None:
    if not isinstance(value, float) or not trend or trend[0].value is None:
        return None
    previous = trend[0].value
    if abs(value - previous) <= abs(previous) * 0.05:
        return "stable"
    return "up" if value > previous else "down"


def _day_after(day: Any) -> datetime:
    return datetime.combine(day, time(), UTC) + timedelta(days=1)


def _patient_param(value: str) -> int:
    raw = value.removeprefix("Patient/")
    if not raw.isdigit():
        raise BadRequest("patient takes a Patient id (123 or Patient/123)")
    return int(raw)


_DATE_PREFIXES = {"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"}


def _date_filter(value: str) -> Any:
    prefix, raw = (value[:2], value[2:]) if value[:2] in _DATE_PREFIXES else ("eq", value)
    moment = parse_fhir_datetime(raw)
    if moment is None:
        raise BadRequest(f"'{value}' is not a FHIR date")
    column = RecordEntry.date
    if prefix == "eq":
        # A date without a time means the whole day (or month, year).
        end = _period_end(raw, moment)
        return (column >= moment) & (column < end)
    return {
        "gt": column > moment,
        "sa": column > moment,
        "ge": column >= moment,
        "lt": column < moment,
        "eb": column < moment,
        "le": column <= _period_end(raw, moment),
        "ne": column != moment,
    }[prefix]


def _period_end(raw: str, moment: datetime) -> datetime:
    if len(raw) == 4:
        return moment.replace(year=moment.year + 1)
    if len(raw) == 7:
        return (moment.replace(day=28) + timedelta(days=4)).replace(day=1)
    if len(raw) == 10:
        return moment + timedelta(days=1)
    return moment + timedelta(seconds=1)


def patient_fhir(account: PatientOut) -> dict[str, Any]:
    """The unified account as an R4 Patient, with every institution's number."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(account.id),
        "identifier": [
            {"use": "official", "system": RESIDENT_ID_SYSTEM, "value": account.resident_id}
        ]
        + [
            {
                "use": "secondary" if link.kind == "card" else "usual",
                "system": local_identifier_system(link.institution.code, link.kind),
                "value": link.number,
                "assigner": {"display": link.institution.name},
            }
            for link in account.links
        ],
        "active": account.merged_into_id is None,
        "name": [{"use": "official", "text": account.name}],
        "gender": account.sex,
        "birthDate": account.birth_date.isoformat(),
        "extension": [
            {
                "url": "https://yihao.dev/fhir/StructureDefinition/real-name-verified",
                "valueBoolean": account.real_name_verified,
            }
        ],
    }
    if account.phone:
        resource["telecom"] = [{"system": "phone", "value": account.phone}]
    if account.merged_into_id is not None:
        resource["link"] = [
            {"other": {"reference": f"Patient/{account.merged_into_id}"}, "type": "replaced-by"}
        ]
    return resource
