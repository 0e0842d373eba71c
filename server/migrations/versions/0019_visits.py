"""follow-up video visits (互联网复诊): visits, their history; consult rooms get a kind

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.core.db

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = server.core.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("consults") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), server_default="remote", nullable=False)
        )
    op.create_table(
        "visits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("patient_user_id", sa.Integer(), nullable=False),
        sa.Column("doctor_id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("condition_id", sa.String(length=64), nullable=False),
        sa.Column("condition_code", sa.String(length=64), nullable=True),
        sa.Column("condition_display", sa.String(length=300), nullable=False),
        sa.Column("condition_sensitivity", sa.String(length=32), nullable=True),
        sa.Column("complaint", sa.Text(), nullable=False),
        sa.Column("preferred_at", UTC, nullable=True),
        sa.Column("guardian", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decline_reason", sa.Text(), nullable=True),
        sa.Column("consult_id", sa.Integer(), nullable=True),
        sa.Column("doctor_auth", sa.String(length=16), nullable=True),
        sa.Column("record", sa.JSON(), nullable=True),
        sa.Column("encounter_id", sa.String(length=64), nullable=True),
        sa.Column("prescription_ids", sa.JSON(), nullable=False),
        sa.Column("opened_at", UTC, nullable=True),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("reminder_sent_at", UTC, nullable=True),
        sa.Column("ended_at", UTC, nullable=True),
        sa.Column("record_retain_until", UTC, nullable=False),
        sa.Column("media_retain_until", UTC, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["consult_id"], ["consults.id"], name=op.f("fk_visits_consult_id_consults")
        ),
        sa.ForeignKeyConstraint(
            ["doctor_id"], ["users.id"], name=op.f("fk_visits_doctor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_visits_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_visits_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["patient_user_id"], ["users.id"], name=op.f("fk_visits_patient_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visits")),
    )
    op.create_index("ix_visits_doctor_status", "visits", ["doctor_id", "status"], unique=False)
    op.create_index("ix_visits_patient", "visits", ["patient_id"], unique=False)
    op.create_table(
        "visit_transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.JSON(), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_visit_transitions_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"],
            ["visits.id"],
            name=op.f("fk_visit_transitions_visit_id_visits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_transitions")),
    )
    op.create_index(
        op.f("ix_visit_transitions_visit_id"), "visit_transitions", ["visit_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_visit_transitions_visit_id"), table_name="visit_transitions")
    op.drop_table("visit_transitions")
    op.drop_index("ix_visits_patient", table_name="visits")
    op.drop_index("ix_visits_doctor_status", table_name="visits")
    op.drop_table("visits")
    with op.batch_alter_table("consults") as batch:
        batch.drop_column("kind")
