"""earned care relationships: last encounter, presence codes, care requests, emergency reviews

Revision ID: 0010 (before the history was made linear: 0007)
Revises: 0009
Create Date: 2026-12-01 23:00:00

Care relationships that came from registering a resident (reason "registered") are
removed: knowing a resident ID and name no longer earns reading the record, and such
rows cannot be told from ones an attacker made. Institutions earn them again by the
patient's presence code or approval.

Clinical work left the institution streams (``institution:<id>`` now carries only
administrative events, which administrators read): stored consult, referral and
prescription events there are removed, and the desk's inbox items move to the
clinicians' ``desk:<id>`` inbox.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.core.db

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM care_relationships WHERE reason = 'registered'")
    op.execute(
        "DELETE FROM stream_events WHERE stream LIKE 'institution:%' AND type <> 'institution'"
    )
    op.execute(
        "UPDATE inbox_items SET stream = 'desk:' || substr(stream, 13), seq = NULL "
        "WHERE stream LIKE 'institution:%'"
    )
    with op.batch_alter_table("care_relationships", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_encounter_at", server.core.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.execute("UPDATE care_relationships SET last_encounter_at = created_at")
    with op.batch_alter_table("care_relationships", schema=None) as batch_op:
        batch_op.alter_column("last_encounter_at", nullable=False)

    op.create_table(
        "presence_codes",
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_presence_codes_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_presence_codes")),
    )
    op.create_table(
        "care_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.Integer(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", server.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_care_requests_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_care_requests_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"], ["users.id"], name=op.f("fk_care_requests_requested_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_requests")),
    )
    with op.batch_alter_table("care_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_care_requests_patient_status", ["patient_id", "status"], unique=False
        )
    op.create_table(
        "emergency_reviews",
        sa.Column("audit_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("reviewed_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reviewer_id"], ["users.id"], name=op.f("fk_emergency_reviews_reviewer_id_users")
        ),
        sa.PrimaryKeyConstraint("audit_seq", name=op.f("pk_emergency_reviews")),
    )


def downgrade() -> None:
    op.drop_table("emergency_reviews")
    with op.batch_alter_table("care_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_care_requests_patient_status")
    op.drop_table("care_requests")
    op.drop_table("presence_codes")
    with op.batch_alter_table("care_relationships", schema=None) as batch_op:
        batch_op.drop_column("last_encounter_at")
