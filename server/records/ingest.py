"""Storing FHIR bundles pushed by an institution: transaction (all or nothing) or batch.

Steps for a set of entries, inside one database transaction:

1. every resource is validated as R4 (done before any write);
2. Patient resources register the resident at the sending institution (the
   resident ID identifier is required and checked; an identifier in another
   institution's namespace is refused) and map to the unified account;
3. every other resource gets its row: the same (institution, type, source id)
   pushed again is the same row, updated, with a higher version;
4. references are rewritten to the stored ids (``urn:uuid:`` full URLs, the
   sender's own ``Type/id``, or ids already stored here); a reference that
   resolves to nothing is refused, and so is data about a patient who is not
   registered at the sending institution;
5. index columns are extracted, the resource is stamped with its source
   institution and ingest time (``meta.source``, ``meta.lastUpdated``), and
   each patient's write is audited.

Any issue raises :class:`BundleRefused`, which rolls the transaction back.
"""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_

from server.access import AccessService
from server.core.audit import AuditLog
from server.core.auth import Requester
from server.core.db import Database, Tx, utcnow
from server.core.errors import ValidationFailed
from server.core.ids import RESIDENT_ID_SYSTEM, ResidentIdError, parse_resident_id
from server.identity.patients import PatientIndex, parse_local_system
from server.inbox.service import InboxService
from server.records.fhir import (
    SOURCE_PREFIX,
    BundleRefused,
    Issue,
    index_fields,
    iso,
    issue,
    operation_outcome,
    patient_reference,
    validate_resource,
    walk_references,
)
from server.records.models import RecordEntry

UUID_PREFIX = "urn:uuid:"
# A result the patient is told of: a report or a lab test, once it is final (or corrected).
READY_STATUSES = frozenset({"final", "amended", "corrected", "appended"})


def is_lab_result(row: RecordEntry) -> bool:
    lab = row.resource_type == "DiagnosticReport" or (
        row.resource_type == "Observation" and row.category == "laboratory"
    )
    return lab and row.status in READY_STATUSES


@dataclass
class Item:
    index: int
    path: str
    full_url: str | None
    resource: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.resource["resourceType"])

    @property
    def source_id(self) -> str:
        rid = self.resource.get("id")
        if isinstance(rid, str) and rid:
            return rid
        if self.full_url and self.full_url.startswith(UUID_PREFIX):
            return self.full_url.removeprefix(UUID_PREFIX)
        # Nothing identifies it in its source: each push is a new entry.
        generated = uuid.uuid4().hex
        self.resource["id"] = generated
        return generated


@dataclass
class Sender:
    institution_id: int
    institution_code: str
    actor: Requester | None


@dataclass
class Scope:
    """What one bundle has resolved so far (shared by the entries of a batch)."""

    refs: dict[str, str] = field(default_factory=dict)  # fullUrl or Type/source-id → Type/id
    patients: set[int] = field(default_factory=set)  # registered at the sender


@dataclass
class Stored:
    item: Item
    status: str
    location: str
    version: int
    at: datetime
    patient_id: int | None


class Ingest:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        access: AccessService,
        patients: PatientIndex,
        inbox: InboxService | None = None,
    ) -> None:
        self.db = db
        self.audit = audit
        self.access = access
        self.patients = patients
        # The patient hears of a new lab result (``result_ready``).
        self.inbox = inbox

    async def bundle(self, sender: Sender, bundle: Any) -> dict[str, Any]:
        kind, items, invalid = parse_bundle(bundle)
        if kind == "transaction":
            if invalid:
                raise BundleRefused([i for issues in invalid.values() for i in issues])
            async with self.db.transaction() as tx:
                stored = await self.store(tx, sender, Scope(), items)
            return response_bundle("transaction-response", [stored[i.index] for i in items])
        responses: dict[int, dict[str, Any]] = {
            index: failed_entry(issues) for index, issues in invalid.items()
        }
        scope = Scope()
        # Patients first, so that the other entries can refer to them.
        for item in sorted(items, key=lambda i: i.type != "Patient"):
            try:
                async with self.db.transaction() as tx:
                    result = await self.store(tx, sender, scope, [item])
                responses[item.index] = entry_response(result[item.index])
            except BundleRefused as exc:
                responses[item.index] = failed_entry(exc.issues)
            except ValidationFailed as exc:
                responses[item.index] = failed_entry([issue(item.path, exc.detail)])
        return {
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [responses[index] for index in sorted(responses)],
        }

    async def store(
        self, tx: Tx, sender: Sender, scope: Scope, items: list[Item]
    ) -> dict[int, Stored]:
        now = utcnow()
        issues: list[Issue] = []
        patient_of: dict[int, int] = {}
        created_accounts: set[int] = set()
        for item in items:
            if item.type == "Patient":
                try:
                    pid, created = await self._register(tx, sender, item)
                except BundleRefused as exc:
                    issues.extend(exc.issues)
                    continue
                patient_of[item.index] = pid
                scope.patients.add(pid)
                if created:
                    created_accounts.add(item.index)
                target = f"Patient/{pid}"
                if item.full_url:
                    scope.refs[item.full_url] = target
                scope.refs[f"Patient/{item.source_id}"] = target
        if issues:
            raise BundleRefused(issues)
        rows = await self._rows(tx, sender, items)
        for item in items:
            row = rows[item.index]
            if item.type != "Patient":
                target = f"{item.type}/{row.id}"
                if item.full_url:
                    scope.refs[item.full_url] = target
                scope.refs[f"{item.type}/{item.source_id}"] = target
        results: dict[int, Stored] = {}
        written: dict[int, Counter[str]] = {}
        results_ready: dict[int, list[str]] = {}
        for item in items:
            row = rows[item.index]
            resource = copy.deepcopy(item.resource)
            item_issues = await self._resolve_references(tx, scope, item, resource)
            patient_id = patient_of.get(item.index)
            if patient_id is None and not item_issues:
                patient_id, problem = await self._patient_of(tx, sender, scope, item, resource)
                if problem:
                    item_issues.append(problem)
            if item_issues:
                issues.extend(item_issues)
                continue
            version = row.version + 1
            resource["id"] = str(row.id)
            kept = (resource.get("meta") or {}).items()
            meta = {k: v for k, v in kept if k in ("tag", "security", "profile")}
            resource["meta"] = {
                "versionId": str(version),
                "lastUpdated": iso(now),
                "source": SOURCE_PREFIX + sender.institution_code,
                **meta,
            }
            for key, value in index_fields(resource).items():
                setattr(row, key, value)
            row.resource, row.version, row.patient_id, row.updated_at = (
                resource,
                version,
                patient_id,
                now,
            )
            if item.type == "Patient":
                assert patient_id is not None
                status = "201 Created" if item.index in created_accounts else "200 OK"
                location = f"Patient/{patient_id}"
            else:
                status = "201 Created" if version == 1 else "200 OK"
                location = f"{item.type}/{row.id}/_history/{version}"
            results[item.index] = Stored(item, status, location, version, now, patient_id)
            if patient_id is not None:
                written.setdefault(patient_id, Counter())[item.type] += 1
                if version == 1 and is_lab_result(row):
                    results_ready.setdefault(patient_id, []).append(f"{item.type}/{row.id}")
        if issues:
            raise BundleRefused(issues)
        for patient_id, counts in written.items():
            await self.audit.record(
                tx.session,
                "record.write",
                actor=sender.actor,
                patient_id=patient_id,
                resource=",".join(sorted(counts)),
                reason="push",
                details={"institution_id": sender.institution_id, "counts": dict(counts)},
            )
        # An institution's push of a new result tells the patient; the operator's import of
        # history (no actor: `yihao import-fhir`, the demo seed) does not message anyone.
        if self.inbox is not None and sender.actor is not None:
            for patient_id, ready in sorted(results_ready.items()):
                await self.inbox.notify(
                    tx,
                    kind="result_ready",
                    title="您有新的检验结果",
                    patients=[patient_id],
                    resource=ready[0],
                    data={"resources": ready, "institution_id": sender.institution_id},
                )
        return results

    async def _rows(self, tx: Tx, sender: Sender, items: list[Item]) -> dict[int, RecordEntry]:
        """Each item's row: the stored one for a re-sent resource, else a new one."""
        keys = {(item.type, item.source_id) for item in items}
        existing: dict[tuple[str, str], RecordEntry] = {}
        key_list = list(keys)
        for start in range(0, len(key_list), 500):
            chunk = key_list[start : start + 500]
            found = await tx.session.scalars(
                select(RecordEntry).where(
                    RecordEntry.institution_id == sender.institution_id,
                    tuple_(RecordEntry.resource_type, RecordEntry.source_id).in_(chunk),
                )
            )
            existing.update({(r.resource_type, r.source_id): r for r in found})
        rows: dict[int, RecordEntry] = {}
        for item in items:
            key = (item.type, item.source_id)
            row = existing.get(key)
            if row is None:
                row = RecordEntry(
                    resource_type=item.type,
                    institution_id=sender.institution_id,
                    source_id=item.source_id,
                    version=0,
                    resource={},
                    ingested_at=utcnow(),
                )
                tx.session.add(row)
                existing[key] = row
            rows[item.index] = row
        await tx.session.flush()
        return rows

    async def _register(self, tx: Tx, sender: Sender, item: Item) -> tuple[int, bool]:
        """The unified account of a pushed Patient, registered at the sender."""
        resource, path = item.resource, item.path + ".resource"
        resident = None
        numbers: dict[str, str | None] = {"mrn": None, "card": None}
        issues: list[Issue] = []
        for j, ident in enumerate(resource.get("identifier") or []):
            system, value = ident.get("system"), ident.get("value")
            if not isinstance(system, str) or not isinstance(value, str):
                continue
            if system == RESIDENT_ID_SYSTEM:
                try:
                    resident = parse_resident_id(value)
                except ResidentIdError as exc:
                    issues.append(
                        issue(f"{path}.identifier[{j}].value", f"resident ID: {exc} ({exc.check})")
                    )
                continue
            local = parse_local_system(system)
            if local is None:
                continue
            if local[0] != sender.institution_code:
                issues.append(
                    issue(
                        f"{path}.identifier[{j}].system",
                        f"an identifier of institution {local[0]}: an institution pushes "
                        "patients only under its own identifiers",
                        "forbidden",
                    )
                )
            else:
                numbers[local[1]] = value
        if resident is not None:
            if resource.get("gender") in ("male", "female") and resource["gender"] != resident.sex:
                issues.append(issue(f"{path}.gender", f"the resident ID says {resident.sex}"))
            birth = resource.get("birthDate")
            if isinstance(birth, str) and birth != resident.birth_date.isoformat():
                issues.append(
                    issue(f"{path}.birthDate", f"the resident ID says {resident.birth_date}")
                )
        if issues:
            raise BundleRefused(issues)
        mrn = numbers["mrn"] = numbers["mrn"] or item.source_id
        if resident is None:
            known = await self.patients.find_by_local_number(
                tx.session, sender.institution_id, mrn, "mrn"
            )
            if known is None:
                raise BundleRefused(
                    [
                        issue(
                            f"{path}.identifier",
                            f"a new patient needs a resident ID identifier (system {RESIDENT_ID_SYSTEM})",
                            "required",
                        )
                    ]
                )
            return known, False
        try:
            patient, created = await self.patients.register_in(
                tx,
                sender.actor,
                institution_id=sender.institution_id,
                resident=resident,
                name=person_name(resource),
                phone=None,
                numbers=numbers,
            )
        except ValidationFailed:  # the name does not match the account's (not revealed)
            raise BundleRefused(
                [issue(f"{path}.name", "does not match the name registered for this resident ID")]
            ) from None
        return patient.id, created

    async def _resolve_references(
        self, tx: Tx, scope: Scope, item: Item, resource: dict[str, Any]
    ) -> list[Issue]:
        issues: list[Issue] = []
        for ref, path in walk_references(resource, item.path + ".resource"):
            value: str = ref["reference"]
            if value.startswith("#") or value.startswith(("http://", "https://")):
                continue
            target = scope.refs.get(value)
            if target is None and not value.startswith(UUID_PREFIX) and "?" not in value:
                target = await self._stored_target(tx, scope, value)
            if target is None:
                if "?" in value:
                    reason = "conditional references are not supported"
                elif value.startswith("Patient/"):
                    reason = f"unknown patient '{value}'"
                else:
                    reason = f"'{value}' refers to nothing in this bundle or the record"
                issues.append(issue(f"{path}.reference", reason, "not-found"))
                continue
            ref["reference"] = target
        return issues

    async def _stored_target(self, tx: Tx, scope: Scope, value: str) -> str | None:
        rtype, _, rid = value.partition("/")
        if not rtype or not rid or "/" in rid:
            return None
        if rtype == "Patient":
            if rid.isdigit() and await self.patients.exists(tx.session, int(rid)):
                scope.refs[value] = value
                return value
            return None
        if rid.isdigit():
            found = await tx.session.scalar(
                select(RecordEntry.id).where(
                    RecordEntry.id == int(rid), RecordEntry.resource_type == rtype
                )
            )
            if found is not None:
                scope.refs[value] = value
                return value
        return None

    async def _patient_of(
        self, tx: Tx, sender: Sender, scope: Scope, item: Item, resource: dict[str, Any]
    ) -> tuple[int | None, Issue | None]:
        """The patient a resource is about; refused unless registered at the sender."""
        found = patient_reference(resource)
        if found is None:
            return None, None
        key, ref = found
        rtype, _, rid = ref.partition("/")
        if rtype != "Patient" or not rid.isdigit():
            return None, None
        pid = int(rid)
        if pid not in scope.patients:
            # Registered here under the sender's own numbers, or in its care: pushing data
            # about a resident needs that, and earns no reading of the rest of the record.
            if not (
                await self.patients.is_linked(tx.session, pid, sender.institution_id)
                or await self.access.has_care(tx.session, pid, sender.institution_id)
            ):
                return None, issue(
                    f"{item.path}.resource.{key}",
                    f"patient {pid} is not registered at this institution; send the Patient "
                    "with the resident ID in the bundle first",
                    "forbidden",
                )
            scope.patients.add(pid)
        return pid, None


def person_name(resource: dict[str, Any]) -> str | None:
    for name in resource.get("name") or []:
        if name.get("text"):
            return str(name["text"])[:100]
        family, given = name.get("family") or "", name.get("given") or []
        if family and any("\u4e00" <= ch <= "\u9fff" for ch in family):
            return (family + "".join(given))[:100]
        joined = " ".join([*given, family]).strip()
        if joined:
            return joined[:100]
    return None


def parse_bundle(bundle: Any) -> tuple[str, list[Item], dict[int, list[Issue]]]:
    """The bundle's type, its valid items, and the issues of its invalid entries."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleRefused(
            [issue("Bundle.resourceType", "POST /fhir takes a Bundle", "structure")], status=400
        )
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise BundleRefused(
            [issue("Bundle.type", "the bundle must be a 'transaction' or a 'batch'", "structure")],
            status=400,
        )
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise BundleRefused([issue("Bundle.entry", "must be a list", "structure")], status=400)
    items: list[Item] = []
    invalid: dict[int, list[Issue]] = {}
    seen_urls: set[str] = set()
    for index, entry in enumerate(entries):
        path = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict) or "resource" not in entry:
            invalid[index] = [issue(path, "an entry needs a resource", "required")]
            continue
        method = (entry.get("request") or {}).get("method", "POST")
        if method not in ("POST", "PUT"):
            invalid[index] = [
                issue(f"{path}.request.method", f"{method} is not supported here", "not-supported")
            ]
            continue
        found = validate_resource(entry["resource"], f"{path}.resource")
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url in seen_urls:
            found.append(issue(f"{path}.fullUrl", "two entries have this fullUrl", "duplicate"))
        if found:
            invalid[index] = found
            continue
        if isinstance(full_url, str):
            seen_urls.add(full_url)
        items.append(
            Item(index, path, full_url if isinstance(full_url, str) else None, entry["resource"])
        )
    return kind, items, invalid


def entry_response(stored: Stored) -> dict[str, Any]:
    return {
        "response": {
            "status": stored.status,
            "location": stored.location,
            "etag": f'W/"{stored.version}"',
            "lastModified": iso(stored.at),
        }
    }


def failed_entry(issues: list[Issue]) -> dict[str, Any]:
    status = (
        "403 Forbidden"
        if any(i["code"] == "forbidden" for i in issues)
        else "422 Unprocessable Entity"
    )
    return {"response": {"status": status, "outcome": operation_outcome(issues)}}


def response_bundle(kind: str, stored: list[Stored]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [entry_response(s) for s in stored]}
