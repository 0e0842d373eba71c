"""payments: fee schedules, orders in integer fen, payment events, the sandbox provider's trades

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 17:57:09.637079
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.core.db

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_sandbox_trades",
        sa.Column("out_trade_no", sa.String(length=64), nullable=False),
        sa.Column("amount_fen", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("charges", sa.Integer(), nullable=False),
        sa.Column("refund_id", sa.String(length=64), nullable=True),
        sa.Column("refund_no", sa.String(length=64), nullable=True),
        sa.Column("refunded_fen", sa.Integer(), nullable=False),
        sa.Column("created_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", server.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refunded_at", server.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("out_trade_no", name=op.f("pk_payment_sandbox_trades")),
        sa.UniqueConstraint(
            "transaction_id", name=op.f("uq_payment_sandbox_trades_transaction_id")
        ),
    )
    op.create_table(
        "payment_fees",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("amount_fen", sa.Integer(), nullable=False),
        sa.Column("updated_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.CheckConstraint("amount_fen >= 0", name=op.f("ck_payment_fees_fee_not_negative")),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
            name=op.f("fk_payment_fees_department_id_departments"),
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_payment_fees_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["updated_by"], ["users.id"], name=op.f("fk_payment_fees_updated_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_fees")),
    )
    with op.batch_alter_table("payment_fees", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_fees_institution_id"), ["institution_id"], unique=False
        )

    op.create_table(
        "payment_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("holds", sa.String(length=64), nullable=True),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("amount_fen", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("out_trade_no", sa.String(length=64), nullable=False),
        sa.Column("provider_trade_no", sa.String(length=64), nullable=True),
        sa.Column("pay_url", sa.String(length=300), nullable=True),
        sa.Column("pay_code", sa.String(length=32), nullable=True),
        sa.Column("refund_no", sa.String(length=64), nullable=True),
        sa.Column("refund_requested_at", server.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refund_reason", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", server.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refunded_at", server.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", server.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_payment_orders_order_amount_positive")),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_payment_orders_created_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_payment_orders_institution_id_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_payment_orders_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_orders")),
        sa.UniqueConstraint("holds", name=op.f("uq_payment_orders_holds")),
        sa.UniqueConstraint("out_trade_no", name=op.f("uq_payment_orders_out_trade_no")),
    )
    with op.batch_alter_table("payment_orders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_orders_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(
            "ix_payment_orders_status_created", ["status", "created_at"], unique=False
        )
        batch_op.create_index("ix_payment_orders_subject", ["kind", "subject_id"], unique=False)

    op.create_table(
        "payment_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("event_key", sa.String(length=140), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_fen", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", server.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["payment_orders.id"],
            name=op.f("fk_payment_events_order_id_payment_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_events")),
        sa.UniqueConstraint("event_key", name=op.f("uq_payment_events_event_key")),
    )
    with op.batch_alter_table("payment_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_events_order_id"), ["order_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payment_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_events_order_id"))

    op.drop_table("payment_events")
    with op.batch_alter_table("payment_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_orders_subject")
        batch_op.drop_index("ix_payment_orders_status_created")
        batch_op.drop_index(batch_op.f("ix_payment_orders_patient_id"))

    op.drop_table("payment_orders")
    with op.batch_alter_table("payment_fees", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_fees_institution_id"))

    op.drop_table("payment_fees")
    op.drop_table("payment_sandbox_trades")
