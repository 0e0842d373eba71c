"""Who a user is in the network: the roles, and the named sets of roles the rules use.

One place for every role and role set, so a rule that names "clinicians" means the same
roles everywhere. ``Role`` is a ``StrEnum``: its members compare equal to the strings stored
in the database and carried in tokens.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    SPECIALIST = "specialist"
    GP = "gp"
    NURSE = "nurse"
    PHARMACIST = "pharmacist"
    INSTITUTION_ADMIN = "institution_admin"
    PLATFORM_ADMIN = "platform_admin"
    PATIENT = "patient"


# Accounts that belong to an institution.
PRACTITIONER_ROLES = frozenset(
    {Role.SPECIALIST, Role.GP, Role.PHARMACIST, Role.NURSE, Role.INSTITUTION_ADMIN}
)
ALL_ROLES = PRACTITIONER_ROLES | {Role.PLATFORM_ADMIN, Role.PATIENT}
# Clinical staff: read records under care, consent and access windows.
CLINICIAN_ROLES = frozenset({Role.SPECIALIST, Role.GP, Role.NURSE})
# Roles whose encounters earn an institution a care relationship.
CARE_ROLES = CLINICIAN_ROLES
# Roles that may break the glass (emergency access, reviewed afterwards).
EMERGENCY_ROLES = CLINICIAN_ROLES
# Roles that write prescriptions, request consults and refer patients.
PRESCRIBER_ROLES = frozenset({Role.SPECIALIST, Role.GP})
REQUESTER_ROLES = PRESCRIBER_ROLES
REFERRING_ROLES = PRESCRIBER_ROLES
# Front-desk work (registration, presence, bookings, referral arrivals).
DESK_ROLES = CLINICIAN_ROLES | {Role.INSTITUTION_ADMIN}
REFERRAL_DESK_ROLES = CLINICIAN_ROLES
# Roles that are created only by a platform administrator (or by self-registration).
PLATFORM_ONLY_ROLES = frozenset({Role.PLATFORM_ADMIN, Role.INSTITUTION_ADMIN, Role.PATIENT})
