"""triage logs: every suggestion of the triage (智能导诊), the patient's own data

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.core.db

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "triage_logs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("age", sa.Integer(), nullable=True),
        sa.Column("sex", sa.String(length=8), nullable=True),
        sa.Column("pregnant", sa.Boolean(), nullable=True),
        sa.Column("matched", sa.JSON(), nullable=False),
        sa.Column("red_flags", sa.JSON(), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("suggestion", sa.JSON(), nullable=False),
        sa.Column("knowledge_version", sa.String(length=32), nullable=False),
        sa.Column("created_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_triage_logs_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_triage_logs_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triage_logs")),
    )
    op.create_index(
        "ix_triage_logs_patient_id_id", "triage_logs", ["patient_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_triage_logs_patient_id_id", table_name="triage_logs")
    op.drop_table("triage_logs")
