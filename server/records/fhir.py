"""FHIR R4 plumbing with no database: validation, references, index fields, outcomes, bundles.

Resources are validated with the ``fhir.resources`` R4B models (R4B shares R4's
resource structures). Paths in errors use FHIRPath-like expressions rooted at
the bundle entry (``Bundle.entry[3].resource.code.coding[0].code``), so the
sender can find the offending element.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from server.core.errors import YihaoError

FHIR_JSON = "application/fhir+json"
# The institution that sent a resource, in meta.source.
SOURCE_PREFIX = "urn:yihao:institution:"

# Types indexed for search and the clinician views; every other valid type is kept as is.
CLINICAL_TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
    "Immunization",
    "Procedure",
    "CarePlan",
    "DocumentReference",
    "ImagingStudy",
)
SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "Patient": ("identifier", "_id"),
    **{t: ("patient", "code", "date", "status", "category") for t in CLINICAL_TYPES[1:]},
}

# Where each type keeps its code, date and status (first match wins).
_CODE_FIELDS: dict[str, tuple[str, ...]] = {
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationStatement": ("medicationCodeableConcept",),
    "Immunization": ("vaccineCode",),
    "Encounter": ("type",),
    "DocumentReference": ("type",),
    "ImagingStudy": ("procedureCode",),
    "CarePlan": ("category",),
}
_DATE_FIELDS = (
    "effectiveDateTime",
    "effectivePeriod.start",
    "onsetDateTime",
    "onsetPeriod.start",
    "recordedDate",
    "authoredOn",
    "occurrenceDateTime",
    "performedDateTime",
    "performedPeriod.start",
    "period.start",
    "started",
    "date",
    "issued",
    "created",
    "billablePeriod.start",
)
_STATUS_FIELDS = ("clinicalStatus", "status")
_PATIENT_FIELDS = ("subject", "patient", "beneficiary")

# Security labels (v3 ActCode) and ICD-10 chapters that mark a sensitive category.
_SECURITY_LABELS = {
    "PSY": "mental_health",
    "PSYTHPN": "mental_health",
    "MH": "mental_health",
    "SEX": "reproductive_health",
    "SDV": "reproductive_health",
    "REPRO": "reproductive_health",
    "HIV": "hiv",
    "ETH": "substance_use",
    "SUD": "substance_use",
    "GDIS": "genetic",
}
_ICD10_SENSITIVE: tuple[tuple[str, str], ...] = (
    (r"^F", "mental_health"),
    (r"^(O|Z3[0-9])", "reproductive_health"),
    (r"^B2[0-4]", "hiv"),
)
_ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cn")

Issue = dict[str, Any]


def issue(path: str, message: str, code: str = "invalid") -> Issue:
    return {"severity": "error", "code": code, "diagnostics": message, "expression": [path]}


class BundleRefused(YihaoError):
    """Entries of a bundle that cannot be stored; each issue names the entry and the path."""

    status = 422
    default_code = "invalid_bundle"
    title = "Invalid bundle"

    def __init__(self, issues: list[Issue], *, status: int | None = None) -> None:
        first = issues[0]
        summary = f"{first['expression'][0]}: {first['diagnostics']}"
        if len(issues) > 1:
            summary += f" (and {len(issues) - 1} more)"
        super().__init__(summary, extra={"issues": issues})
        self.issues = issues
        if all(i["code"] == "forbidden" for i in issues):
            self.status = 403
        if status is not None:
            self.status = status


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": issues}


def outcome_of(error: YihaoError) -> dict[str, Any]:
    """Any error of the one tree as an OperationOutcome."""
    issues = error.extra.get("issues")
    if issues:
        return operation_outcome(issues)
    code = {
        400: "invalid",
        401: "login",
        403: "forbidden",
        404: "not-found",
        405: "not-supported",
        409: "conflict",
        413: "too-costly",
        415: "not-supported",
        422: "invalid",
        429: "throttled",
    }.get(error.status, "exception")
    found: list[Issue] = [
        {"severity": "error", "code": code, "diagnostics": f"{e['field']}: {e['reason']}",
         "expression": [e["field"]]}
        for e in error.errors
    ]  # fmt: skip
    return operation_outcome(
        found or [{"severity": "error", "code": code, "diagnostics": error.detail}]
    )


def validate_resource(resource: Any, path: str) -> list[Issue]:
    """Issues that make ``resource`` invalid R4 (empty when it is valid)."""
    if not isinstance(resource, dict):
        return [issue(path, "must be a FHIR resource (a JSON object)", "structure")]
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return [issue(f"{path}.resourceType", "missing resourceType", "required")]
    try:
        model = get_fhir_model_class(rtype)
    except (ValueError, KeyError):
        return [issue(f"{path}.resourceType", f"'{rtype}' is not a FHIR R4 resource type")]
    if rtype in ("Bundle", "Parameters"):
        return [issue(f"{path}.resourceType", f"a {rtype} is not stored as a record entry")]
    try:
        model.model_validate(resource)
    except RecursionError:
        # Nesting within fhir_json_max_depth that the R4 models still cannot walk (each
        # level costs them several stack frames): the sender's 422, never a 500.
        return [issue(path, "nested too deeply to validate", "too-costly")]
    except ValidationError as exc:
        return [
            issue(
                ".".join([path, *(_loc(part) for part in err["loc"])]).replace(".[", "["),
                err["msg"].removeprefix("Value error, "),
            )
            for err in exc.errors(include_url=False)[:20]
        ]
    return []


def _loc(part: Any) -> str:
    return f"[{part}]" if isinstance(part, int) else str(part)


def walk_references(node: Any, path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every Reference object inside a resource, with its path."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node, path
        for key, value in node.items():
            if key != "contained":
                yield from walk_references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk_references(value, f"{path}[{index}]")


def _dig(resource: dict[str, Any], dotted: str) -> Any:
    value: Any = resource
    for key in dotted.split("."):
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def first_coding(concept: Any) -> tuple[str | None, str | None, str | None]:
    """(system, code, display) of a CodeableConcept (or the first of a list)."""
    if isinstance(concept, list):
        concept = concept[0] if concept else None
    if not isinstance(concept, dict):
        return None, None, None
    for coding in concept.get("coding") or []:
        if coding.get("code"):
            return (
                coding.get("system"),
                coding["code"],
                coding.get("display") or concept.get("text"),
            )
    return None, None, concept.get("text")


def parse_fhir_datetime(value: Any) -> datetime | None:
    """A FHIR date/dateTime/instant (possibly partial) as a UTC datetime."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if re.fullmatch(r"\d{4}", text):
        text += "-01-01"
    elif re.fullmatch(r"\d{4}-\d{2}", text):
        text += "-01"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def index_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns of a stored resource."""
    rtype = resource["resourceType"]
    system, code, display = None, None, None
    for key in (*_CODE_FIELDS.get(rtype, ()), "code"):
        system, code, display = first_coding(resource.get(key))
        if code or display:
            break
    date = None
    for dotted in _DATE_FIELDS:
        date = parse_fhir_datetime(_dig(resource, dotted))
        if date is not None:
            break
    status = None
    for key in _STATUS_FIELDS:
        value = resource.get(key)
        status = first_coding(value)[1] if isinstance(value, dict) else value
        if isinstance(status, str):
            break
    category = first_coding(resource.get("category"))[1] if rtype != "CarePlan" else None
    return {
        "code": code[:128] if code else None,
        "code_system": system[:200] if system else None,
        "display": display[:300] if display else None,
        "date": date,
        "status": status if isinstance(status, str) else None,
        "category": category[:64] if category else None,
        "sensitivity": sensitivity(resource, system, code),
    }


def sensitivity(resource: dict[str, Any], system: str | None, code: str | None) -> str | None:
    for label in (resource.get("meta") or {}).get("security") or []:
        found = _SECURITY_LABELS.get(str(label.get("code", "")).upper())
        if found:
            return found
    if code and system in _ICD10_SYSTEMS:
        for pattern, category in _ICD10_SENSITIVE:
            if re.match(pattern, code):
                return category
    return None


def patient_reference(resource: dict[str, Any]) -> tuple[str, str] | None:
    """(field, reference) of the patient a resource is about, if any."""
    for key in _PATIENT_FIELDS:
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return key, ref["reference"]
    return None


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def searchset(
    resources: list[dict[str, Any]],
    *,
    base: str,
    self_url: str,
    total: int | None,
    next_url: str | None,
    modes: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": modes(r) if modes else "match"},
            }
            for r in resources
        ],
    }
    if total is not None:
        bundle["total"] = total
    if next_url:
        bundle["link"].append({"relation": "next", "url": next_url})
    return bundle
