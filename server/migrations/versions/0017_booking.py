"""booking: department profiles, booking policies, attendance, no-shows and reminders

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.core.db

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "department_profiles",
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("specialty", sa.String(length=32), nullable=False),
        sa.Column("building", sa.String(length=50), nullable=True),
        sa.Column("floor", sa.String(length=20), nullable=True),
        sa.Column("room", sa.String(length=50), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("cancel_cutoff_hours", sa.Integer(), nullable=True),
        sa.Column("updated_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
            name=op.f("fk_department_profiles_department_id_departments"),
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_department_profiles_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("department_id", name=op.f("pk_department_profiles")),
    )
    with op.batch_alter_table("department_profiles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_department_profiles_institution_id"), ["institution_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_department_profiles_specialty"), ["specialty"], unique=False
        )
    op.create_table(
        "booking_policies",
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("cancel_cutoff_hours", sa.Integer(), nullable=False),
        sa.Column("no_show_limit", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.Column("updated_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_booking_policies_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("institution_id", name=op.f("pk_booking_policies")),
    )
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attended", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("attendance_marked_by", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "attendance_marked_at", server.core.db.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column("no_show_at", server.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("reminder_sent_at", server.core.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_column("reminder_sent_at")
        batch_op.drop_column("no_show_at")
        batch_op.drop_column("attendance_marked_at")
        batch_op.drop_column("attendance_marked_by")
        batch_op.drop_column("attended")
    op.drop_table("booking_policies")
    with op.batch_alter_table("department_profiles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_department_profiles_specialty"))
        batch_op.drop_index(batch_op.f("ix_department_profiles_institution_id"))
    op.drop_table("department_profiles")
