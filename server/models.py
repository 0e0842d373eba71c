"""Every table of the app, imported in one place so the metadata is complete (migrations)."""

from server.access.models import AccessWindow, CareRelationship, Consent
from server.consults.models import (
    Consult,
    ConsultMessage,
    ConsultParticipant,
    ConsultPresence,
    ConsultTransition,
)
from server.core.audit import AuditEvent, AuditHead
from server.core.checkpoints import AuditCheckpoint, CheckpointHead, CheckpointKey
from server.core.db import Base
from server.core.events import StreamEvent, StreamHead
from server.core.idempotency import IdempotencyKey
from server.core.leases import JobLease
from server.core.nodes import ClusterNode
from server.core.signing import PractitionerKey
from server.identity.care import CareRequest, EmergencyReview, PresenceCode
from server.identity.models import (
    AuthSession,
    Department,
    Institution,
    Patient,
    PatientLink,
    PatientMerge,
    User,
)
from server.inbox.models import InboxItem, NotificationPreference, OutboundMessage
from server.media.models import Recording, RecordingConsent
from server.payments.models import Fee, Order, PaymentEvent, SandboxTrade
from server.prescriptions.models import (
    ChronicCondition,
    Delivery,
    Dispensation,
    Drug,
    DrugInteraction,
    PharmacyProfile,
    Prescription,
    PrescriptionHistory,
)
from server.records.models import RecordEntry
from server.referrals.models import Referral, ReferralHistory
from server.scheduling.models import (
    Appointment,
    BookingPolicy,
    DepartmentProfile,
    Holiday,
    ScheduleTemplate,
    Slot,
)
from server.triage.models import TriageLog
from server.visits.models import Visit, VisitTransition

__all__ = [
    "AccessWindow",
    "Appointment",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditHead",
    "AuthSession",
    "Base",
    "BookingPolicy",
    "CareRelationship",
    "CareRequest",
    "CheckpointHead",
    "CheckpointKey",
    "ChronicCondition",
    "ClusterNode",
    "Consent",
    "Consult",
    "ConsultMessage",
    "ConsultParticipant",
    "ConsultPresence",
    "ConsultTransition",
    "Delivery",
    "Department",
    "DepartmentProfile",
    "Dispensation",
    "Drug",
    "DrugInteraction",
    "EmergencyReview",
    "Fee",
    "Holiday",
    "IdempotencyKey",
    "InboxItem",
    "Institution",
    "JobLease",
    "NotificationPreference",
    "Order",
    "OutboundMessage",
    "Patient",
    "PatientLink",
    "PatientMerge",
    "PaymentEvent",
    "PharmacyProfile",
    "PractitionerKey",
    "Prescription",
    "PrescriptionHistory",
    "PresenceCode",
    "RecordEntry",
    "Recording",
    "RecordingConsent",
    "Referral",
    "ReferralHistory",
    "SandboxTrade",
    "ScheduleTemplate",
    "Slot",
    "StreamEvent",
    "StreamHead",
    "TriageLog",
    "User",
    "Visit",
    "VisitTransition",
]
