"""Every table of the app, imported in one place so the metadata is complete (migrations)."""

from server.core.access import AccessWindow, CareRelationship, Consent
from server.core.audit import AuditEvent, AuditHead
from server.core.db import Base
from server.core.events import StreamEvent, StreamHead
from server.core.signing import PractitionerKey
from server.identity.models import (
    AuthSession,
    Department,
    Institution,
    Patient,
    PatientLink,
    PatientMerge,
    User,
)
from server.inbox.models import InboxItem
from server.records.models import RecordEntry
from server.referrals.models import Referral, ReferralHistory
from server.scheduling.models import Appointment, Holiday, ScheduleTemplate, Slot

__all__ = [
    "AccessWindow",
    "Appointment",
    "AuditEvent",
    "AuditHead",
    "AuthSession",
    "Base",
    "CareRelationship",
    "Consent",
    "Department",
    "Holiday",
    "InboxItem",
    "Institution",
    "Patient",
    "PatientLink",
    "PatientMerge",
    "PractitionerKey",
    "RecordEntry",
    "Referral",
    "ReferralHistory",
    "ScheduleTemplate",
    "Slot",
    "StreamEvent",
    "StreamHead",
    "User",
]
