"""sessions: used TOTP steps, rotated refresh tokens

Revision ID: 0011 (before the history was made linear: 0008)
Revises: 0010
Create Date: 2026-12-01 22:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.core.db

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    op.create_table(
        "auth_rotated_refresh",
        sa.Column("refresh_hash", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("rotated_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["auth_sessions.id"],
            name=op.f("fk_auth_rotated_refresh_session_id_auth_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("refresh_hash", name=op.f("pk_auth_rotated_refresh")),
    )
    with op.batch_alter_table("auth_rotated_refresh", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_auth_rotated_refresh_session_id"), ["session_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("auth_rotated_refresh", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_rotated_refresh_session_id"))
    op.drop_table("auth_rotated_refresh")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("totp_last_step")
