"""The states of a follow-up visit and its steps (taken through server/core/lifecycle.py).

requested ──accept (doctor)──► accepted ──open (doctor, authenticated)──► waiting
    ├──decline (doctor, reason)──► declined                                  │
    └──cancel (patient)──► cancelled (also from accepted)      admit (doctor)│
                                                                             ▼
                                     completed ◄──end (doctor, record written)── in_progress
"""

from __future__ import annotations

from enum import StrEnum


class VisitStatus(StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    WAITING = "waiting"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    DECLINED = "declined"
    CANCELLED = "cancelled"


ENDED = frozenset({VisitStatus.COMPLETED, VisitStatus.DECLINED, VisitStatus.CANCELLED})
# A child under this age is seen online only with a guardian present (互联网诊疗管理办法).
GUARDIAN_BELOW_AGE = 6
RECORD_RETENTION_YEARS = 15
MEDIA_RETENTION_YEARS = 3
# A sensitive category of the record (server/records/fhir.py) → the HL7 v3 security label
# that makes ingest classify the visit's Encounter the same way.
SECURITY_LABELS = {
    "mental_health": "PSY",
    "reproductive_health": "SEX",
    "hiv": "HIV",
    "substance_use": "SUD",
    "genetic": "GDIS",
}
SECURITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# The FHIR v3-ActCode class of the encounter a visit writes into the record.
VIRTUAL_CLASS = "VR"
