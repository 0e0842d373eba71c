"""pharmacy choice: the pharmacies' profiles (district, address, phone, weekly hours)

The ``ready`` prescription status needs no schema change (the status is a string).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 18:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.core.db

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pharmacy_profiles",
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("district", sa.String(length=6), nullable=False),
        sa.Column("address", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("hours", sa.JSON(), nullable=False),
        sa.Column("updated_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_pharmacy_profiles_institution_id_institutions"),
        ),
        sa.PrimaryKeyConstraint("institution_id", name=op.f("pk_pharmacy_profiles")),
    )
    op.create_index(
        op.f("ix_pharmacy_profiles_district"), "pharmacy_profiles", ["district"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pharmacy_profiles_district"), table_name="pharmacy_profiles")
    op.drop_table("pharmacy_profiles")
