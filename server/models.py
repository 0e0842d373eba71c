"""Every table of the app, imported in one place so the metadata is complete (migrations)."""

from server.core.audit import AuditEvent, AuditHead
from server.core.db import Base
from server.core.events import StreamEvent, StreamHead
from server.core.leases import JobLease
from server.identity.models import AuthSession, Department, Institution, Patient, User

__all__ = [
    "AuditEvent",
    "AuditHead",
    "AuthSession",
    "Base",
    "Department",
    "Institution",
    "JobLease",
    "Patient",
    "StreamEvent",
    "StreamHead",
    "User",
]
