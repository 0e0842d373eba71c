"""Demo record: the demo patients registered at their clinics and hospitals, with real-shaped data.

Chronic conditions diagnosed offline at community clinics (hypertension,
diabetes …), lab results with abnormal flags and a trend, current
medications and allergies, and hospital findings — pushed as FHIR
transactions the way an institution's system would push them, so the demo
exercises the real ingest. Pushing again updates the same entries (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.container import Services
from server.core.ids import RESIDENT_ID_SYSTEM
from server.identity.patients import local_identifier_system
from server.seed import PATIENTS

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

# (code, display, onset)
Problem = tuple[str, str, str]
# (loinc, display, unit, [(date, value)], (low, high))
Lab = tuple[str, str, str, list[tuple[str, float]], tuple[float | None, float | None]]
# (atc, display, authored)
Medication = tuple[str, str, str]
# (snomed, display)
Allergy = tuple[str, str]


@dataclass
class Visit:
    username: str
    institution: str
    mrn: str
    problems: list[Problem] = field(default_factory=list)
    labs: list[Lab] = field(default_factory=list)
    medications: list[Medication] = field(default_factory=list)
    allergies: list[Allergy] = field(default_factory=list)


VISITS = [
    Visit("patient_wang", "SNBDH", "SN-000031",
          problems=[("I10", "原发性高血压", "2016-04-12"), ("E11.9", "2型糖尿病", "2018-09-03")],
          labs=[("4548-4", "糖化血红蛋白", "%", [("2026-03-10", 7.2), ("2026-06-11", 7.6),
                                                  ("2026-09-12", 8.1)], (4.0, 6.0)),
                ("2345-7", "空腹血糖", "mmol/L", [("2026-06-11", 7.4), ("2026-09-12", 8.6)],
                 (3.9, 6.1))],
          medications=[("C08CA01", "苯磺酸氨氯地平片 5mg qd", "2026-09-12"),
                       ("A10BA02", "盐酸二甲双胍片 0.5g bid", "2026-09-12")],
          allergies=[("91936005", "青霉素过敏")]),
    Visit("patient_wang", "QDSL", "QDSL-2026-0031",
          problems=[("I25.1", "冠状动脉粥样硬化性心脏病", "2025-11-20")],
          labs=[("2089-1", "低密度脂蛋白胆固醇", "mmol/L", [("2025-11-20", 4.1), ("2026-08-02", 3.6)],
                 (None, 3.4))]),
    Visit("patient_liu", "SBLYL", "SB-000042",
          problems=[("I10", "原发性高血压", "2012-05-30"), ("E78.5", "高脂血症", "2019-02-14")],
          labs=[("2093-3", "总胆固醇", "mmol/L", [("2026-04-02", 6.3), ("2026-10-08", 5.9)],
                 (None, 5.2))],
          medications=[("C10AA05", "阿托伐他汀钙片 20mg qn", "2026-10-08"),
                       ("C09CA01", "氯沙坦钾片 50mg qd", "2026-10-08")],
          allergies=[("91939003", "磺胺类药物过敏")]),
    Visit("patient_liu", "QDFY", "QDFY-2026-0042",
          problems=[("N18.3", "慢性肾脏病3期", "2026-07-15")],
          labs=[("2160-0", "血肌酐", "umol/L", [("2026-07-15", 128.0), ("2026-10-20", 141.0)],
                 (45.0, 84.0)),
                ("33914-3", "估算肾小球滤过率", "mL/min/1.73m2",
                 [("2026-07-15", 47.0), ("2026-10-20", 41.0)], (90.0, None))]),
    Visit("patient_zhao", "LSZH", "LS-000015",
          problems=[("J45.9", "支气管哮喘", "2010-03-08")],
          medications=[("R03AK06", "沙美特罗替卡松吸入粉雾剂 50/250μg bid", "2026-08-21")]),
    Visit("patient_sun", "SNBDH", "SN-000026",
          problems=[("E03.9", "甲状腺功能减退症", "2021-06-01")],
          labs=[("3016-3", "促甲状腺激素", "mIU/L", [("2026-02-03", 4.1), ("2026-08-05", 6.2)],
                 (0.27, 4.2))],
          medications=[("H03AA01", "左甲状腺素钠片 50μg qd", "2026-08-05")]),
]  # fmt: skip


def _flag(value: float, low: float | None, high: float | None) -> str:
    if low is not None and value < low:
        return "L"
    if high is not None and value > high:
        return "H"
    return "N"


def visit_bundle(visit: Visit, resident_id: str, name: str) -> dict[str, Any]:
    """One institution's transaction for one patient; ids are stable, so re-sending updates."""
    prefix = f"{visit.institution.lower()}-{visit.mrn.lower()}"
    patient_url = f"urn:uuid:{prefix}-patient"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": {
                "resourceType": "Patient",
                "id": f"{prefix}-patient",
                "identifier": [
                    {"system": RESIDENT_ID_SYSTEM, "value": resident_id},
                    {
                        "system": local_identifier_system(visit.institution, "mrn"),
                        "value": visit.mrn,
                    },
                ],
                "name": [{"text": name}],
            },
        }
    ]
    subject = {"reference": patient_url}

    def add(rtype: str, key: str, resource: dict[str, Any]) -> None:
        resource = {"resourceType": rtype, "id": f"{prefix}-{key}", **resource}
        entries.append({"fullUrl": f"urn:uuid:{prefix}-{key}", "resource": resource})

    for code, display, onset in visit.problems:
        # Each diagnosis was made at an in-person (ambulatory) visit: what makes a later
        # online prescription a follow-up rather than a first visit.
        add("Encounter", f"enc-{code}", {
            "status": "finished",
            "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
            "subject": subject, "period": {"start": onset, "end": onset},
        })  # fmt: skip
        add("Condition", f"cond-{code}", {
            "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
            "code": {"coding": [{"system": ICD10, "code": code, "display": display}]},
            "subject": subject, "onsetDateTime": onset, "recordedDate": onset,
            "encounter": {"reference": f"urn:uuid:{prefix}-enc-{code}"},
        })  # fmt: skip
    for code, display, unit, points, (low, high) in visit.labs:
        reference: dict[str, Any] = {}
        if low is not None:
            reference["low"] = {"value": low, "unit": unit}
        if high is not None:
            reference["high"] = {"value": high, "unit": unit}
        for when, value in points:
            add("Observation", f"lab-{code}-{when}", {
                "status": "final",
                "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}],
                "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
                "subject": subject, "effectiveDateTime": f"{when}T08:30:00+08:00",
                "valueQuantity": {"value": value, "unit": unit},
                "interpretation": [{"coding": [{"system": INTERPRETATION,
                                                "code": _flag(value, low, high)}]}],
                "referenceRange": [reference],
            })  # fmt: skip
    for code, display, authored in visit.medications:
        add("MedicationRequest", f"med-{code}", {
            "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": ATC, "code": code,
                                                      "display": display}]},
            "subject": subject, "authoredOn": authored,
        })  # fmt: skip
    for code, display in visit.allergies:
        add("AllergyIntolerance", f"allergy-{code}", {
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
            "patient": subject,
        })  # fmt: skip
    for entry in entries:
        entry["request"] = {"method": "POST", "url": entry["resource"]["resourceType"]}
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def seed_records(services: Services) -> dict[str, int]:
    patients = {p.username: p for p in PATIENTS}
    stored = 0
    for visit in VISITS:
        person = patients[visit.username]
        bundle = visit_bundle(visit, person.resident_id, person.name)
        response = await services.records.push_bundle(None, visit.institution, bundle)
        stored += len(response["entry"])
        # The demo patients were seen there in person: the clinic and hospital care for them.
        # (Pushing the bundle alone earns no reading of the record.)
        patient_id = await services.patients.find_by_identifier(
            RESIDENT_ID_SYSTEM, person.resident_id
        )
        assert patient_id is not None
        async with services.db.transaction() as tx:
            institution = await services.identity.institution_by_code(tx.session, visit.institution)
            await services.access.record_encounter(
                tx, patient_id=patient_id, institution_id=institution.id, reason="demo"
            )
    return {"record_entries": stored}
