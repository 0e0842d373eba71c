"""The prescribing rules (a violation is a 422 naming the rule) and the automatic checks
against the shared record (findings with a severity; severe ones block unless overridden).

Rules — 互联网诊疗管理办法(试行), 处方管理办法, 长期处方管理规范(试行):

========================================  =========================================
code                                      rule
========================================  =========================================
``rx_not_follow_up``                      online only for a diagnosis already made
                                          at an offline visit
``rx_restricted_drug``                    no narcotic, psychotropic or toxic drugs
``rx_validity_exceeded``                  valid the day of issue, at most 3 days
``rx_supply_exceeded``                    ≤ 7 days, ≤ 3 emergency, ≤ 12 weeks long-term
``rx_long_term_not_chronic``              long-term only for a stable chronic condition
``rx_long_term_evaluation_required``      long-term over 4 weeks needs an evaluation
``rx_child_without_guardian``             under 6 only with a guardian recorded
========================================  =========================================
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from server.core.errors import ValidationFailed
from server.prescriptions.catalogue import DrugInfo, Interaction
from server.prescriptions.record import Allergy, RecordedCondition
from server.prescriptions.schemas import TIMES_PER_DAY, Finding, Item, PrescriptionBody

MAX_VALIDITY_DAYS = 3
MAX_SUPPLY_DAYS = {"normal": 7, "emergency": 3, "long_term": 84}
EVALUATION_AFTER_DAYS = 28
GUARDIAN_BELOW_AGE = 6

RULES = {
    "rx_not_follow_up": "online prescribing only as a follow-up of a diagnosis made offline",
    "rx_restricted_drug": "no narcotic, psychotropic or toxic drugs online",
    "rx_validity_exceeded": "valid on the day of issue, extendable to at most 3 days",
    "rx_supply_exceeded": "supply at most 7 days (3 emergency, 12 weeks long-term)",
    "rx_long_term_not_chronic": "long-term prescriptions only for a stable chronic condition",
    "rx_long_term_evaluation_required": "long-term over 4 weeks only with a documented evaluation",
    "rx_child_without_guardian": "children under 6 only with a guardian recorded",
}


def rule_violation(rule: str, field: str, reason: str) -> ValidationFailed:
    error = ValidationFailed.field(field, reason, code=rule)
    error.detail = f"{RULES[rule]}: {reason}"
    error.extra = {"rule": rule}
    return error


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def check_items_known(items: list[Item], drugs: dict[str, DrugInfo]) -> None:
    """Bad input, not a rule: every item names a catalogue drug, consistently."""
    for n, item in enumerate(items):
        drug = drugs.get(item.drug_code)
        if drug is None:
            raise ValidationFailed.field(
                f"items.{n}.drug_code", f"'{item.drug_code}' is not in the catalogue",
                code="unknown_drug",
            )  # fmt: skip
        if item.drug_name != drug.name:
            raise ValidationFailed.field(
                f"items.{n}.drug_name", f"'{item.drug_code}' is {drug.name}", code="drug_mismatch"
            )
        if item.strength != drug.strength:
            raise ValidationFailed.field(
                f"items.{n}.strength", f"{drug.name} comes as {drug.strength}",
                code="drug_mismatch",
            )  # fmt: skip
        if item.dose_unit != drug.dose_unit:
            raise ValidationFailed.field(
                f"items.{n}.dose_unit", f"{drug.name} is dosed in {drug.dose_unit}",
                code="drug_mismatch",
            )  # fmt: skip


def check_rules(
    body: PrescriptionBody,
    drugs: dict[str, DrugInfo],
    *,
    conditions: list[RecordedCondition],
    chronic: bool,
    birth_date: date,
    guardian: str | None,
    today: date,
) -> None:
    """Raise the first rule the prescription breaks."""
    for n, item in enumerate(body.items):
        drug = drugs[item.drug_code]
        if drug.restricted:
            raise rule_violation(
                "rx_restricted_drug", f"items.{n}.drug_code", f"{drug.name} is {drug.restricted}"
            )
    if body.validity_days > MAX_VALIDITY_DAYS:
        raise rule_violation(
            "rx_validity_exceeded", "validity_days", f"{body.validity_days} days asked"
        )
    limit = MAX_SUPPLY_DAYS[body.kind]
    for n, item in enumerate(body.items):
        if item.days > limit:
            raise rule_violation(
                "rx_supply_exceeded",
                f"items.{n}.days",
                f"{item.days} days; a {body.kind} prescription supplies at most {limit}",
            )
    if body.kind == "long_term":
        if not chronic or not body.stable_condition:
            raise rule_violation(
                "rx_long_term_not_chronic",
                "kind",
                f"{body.diagnosis.code} is not attested as a stable chronic condition",
            )
        longest = max(item.days for item in body.items)
        if longest > EVALUATION_AFTER_DAYS and not body.evaluation:
            raise rule_violation(
                "rx_long_term_evaluation_required", "evaluation", f"{longest} days asked"
            )
    if not any(c.offline and _same_diagnosis(body.diagnosis.code, c.codes) for c in conditions):
        raise rule_violation(
            "rx_not_follow_up",
            "diagnosis.code",
            f"no {body.diagnosis.code} diagnosed at an offline visit in the patient's record",
        )
    if age_on(birth_date, today) < GUARDIAN_BELOW_AGE and not guardian:
        raise rule_violation(
            "rx_child_without_guardian", "patient_id", "the patient is under 6; no guardian"
        )


def _overlaps(key: str, token: str) -> bool:
    return len(token) >= 2 and (key in token or token in key)


def _same_diagnosis(code: str, recorded: Iterable[str]) -> bool:
    """I10 matches I10; E11.9 matches E11 and E11.65 (same ICD-10 category, either way)."""
    return any(code.startswith(r) or r.startswith(code) for r in recorded)


def find_problems(
    items: list[Item],
    drugs: dict[str, DrugInfo],
    interactions: list[Interaction],
    allergies: list[Allergy],
    current: set[str],
) -> list[Finding]:
    """Allergy conflicts, interactions, duplicate therapy and overdoses, most severe first.

    ``current``: catalogue codes of the patient's current medication.
    """
    findings: list[Finding] = []
    new = {item.drug_code for item in items}
    for item in items:
        drug = drugs[item.drug_code]
        keys = {a.lower() for a in drug.allergens} | {drug.code.lower(), drug.name.lower()}
        for allergy in allergies:
            if any(_overlaps(key, token) for key in keys for token in allergy.tokens):
                findings.append(
                    Finding(
                        code="allergy",
                        severity="severe",
                        message=f"{drug.name}: the patient is allergic to {allergy.label}",
                        drugs=[drug.code],
                    )
                )
                break
        daily = item.dose * TIMES_PER_DAY[item.frequency]
        if daily > drug.max_daily_dose:
            findings.append(
                Finding(
                    code="dose_over_maximum",
                    severity="severe",
                    message=f"{drug.name}: {daily:g} {drug.dose_unit} a day is over the "
                    f"maximum of {drug.max_daily_dose:g} {drug.dose_unit}",
                    drugs=[drug.code],
                )
            )
    for pair in interactions:
        if pair.a in new or pair.b in new:
            findings.append(
                Finding(
                    code="interaction",
                    severity=pair.severity,
                    message=pair.description,
                    drugs=[pair.a, pair.b],
                )
            )
    findings.extend(_duplicates(items, drugs, current))
    order = {"severe": 0, "moderate": 1, "minor": 2}
    return sorted(findings, key=lambda f: order[f.severity])


def _duplicates(items: list[Item], drugs: dict[str, DrugInfo], current: set[str]) -> list[Finding]:
    found = []
    seen: dict[str, str] = {}
    for code in sorted(current):
        if code in drugs:
            seen.setdefault(drugs[code].drug_class, code)
    for item in items:
        drug = drugs[item.drug_code]
        if item.drug_code in current:
            found.append(
                Finding(
                    code="duplicate_therapy",
                    severity="moderate",
                    message=f"{drug.name} is already among the patient's current medication",
                    drugs=[drug.code],
                )
            )
        elif drug.drug_class in seen:
            other = seen[drug.drug_class]
            found.append(
                Finding(
                    code="duplicate_therapy",
                    severity="moderate",
                    message=f"{drug.name} and {drugs[other].name} are both {drug.drug_class}",
                    drugs=[other, drug.code],
                )
            )
        seen.setdefault(drug.drug_class, drug.code)
    return found
