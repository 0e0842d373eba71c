"""Join the capability branches into one head, so later migrations have one parent.

Revision ID: 0004
Revises: leases_0001, records_0001, consults_0001, prescriptions_0001, scheduling_0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | Sequence[str] | None = (
    "leases_0001",
    "records_0001",
    "consults_0001",
    "prescriptions_0001",
    "scheduling_0001",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
