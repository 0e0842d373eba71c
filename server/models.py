"""Every table of the app, imported in one place so the metadata is complete (migrations)."""

from server.core.audit import AuditEvent, AuditHead
from server.core.db import Base
from server.core.events import StreamEvent, StreamHead
from server.core.signing import PractitionerKey
from server.identity.models import AuthSession, Department, Institution, Patient, User
from server.prescriptions.models import (
    ChronicCondition,
    Delivery,
    Dispensation,
    Drug,
    DrugInteraction,
    Prescription,
    PrescriptionHistory,
)

__all__ = [
    "AuditEvent",
    "AuditHead",
    "AuthSession",
    "Base",
    "ChronicCondition",
    "Delivery",
    "Department",
    "Dispensation",
    "Drug",
    "DrugInteraction",
    "Institution",
    "Patient",
    "PractitionerKey",
    "Prescription",
    "PrescriptionHistory",
    "StreamEvent",
    "StreamHead",
    "User",
]
