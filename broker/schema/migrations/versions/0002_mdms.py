"""mdms: customers, meters, meter keys, reading days, tallies

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:43:19.137579
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer",
        sa.Column("customer_ref", sa.String(length=64), nullable=False),
        sa.Column("subject_hash", sa.String(length=80), nullable=False),
        sa.Column("name_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("address_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("account_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("customer_ref"),
    )
    op.create_table(
        "ingest_tally",
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("source", sa.String(length=120), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("frames", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "source", "outcome"),
    )
    op.create_table(
        "meter",
        sa.Column("meter_id", sa.String(length=16), nullable=False),
        sa.Column("customer_ref", sa.String(length=64), nullable=False),
        sa.Column("feeder", sa.String(length=64), nullable=False),
        sa.Column("postcode", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("last_ic", sa.BigInteger(), nullable=False),
        sa.Column("downlink_ic", sa.BigInteger(), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("last_end_s", sa.BigInteger(), nullable=True),
        sa.Column("last_register_wh", sa.BigInteger(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_ref"],
            ["customer.customer_ref"],
        ),
        sa.PrimaryKeyConstraint("meter_id"),
    )
    if op.get_context().dialect.name == "postgresql":
        # ingest updates every meter's state once a batch: room for heap-only updates
        op.execute("ALTER TABLE meter SET (fillfactor = 50)")
    with op.batch_alter_table("meter", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_meter_customer_ref"), ["customer_ref"], unique=False)
        batch_op.create_index(batch_op.f("ix_meter_feeder"), ["feeder"], unique=False)

    op.create_table(
        "meter_key",
        sa.Column("meter_id", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kek_id", sa.String(length=80), nullable=True),
        sa.Column("encryption_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("authentication_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("master_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("last_ic", sa.BigInteger(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("valid_until_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["meter_id"],
            ["meter.meter_id"],
        ),
        sa.PrimaryKeyConstraint("meter_id", "version"),
    )
    op.create_table(
        "reading_day",
        sa.Column("meter_id", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("readings", sa.SmallInteger(), nullable=False),
        sa.Column("estimated", sa.SmallInteger(), nullable=False),
        sa.Column("flags", sa.SmallInteger(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("meter_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("reading_day")
    op.drop_table("meter_key")
    with op.batch_alter_table("meter", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_meter_feeder"))
        batch_op.drop_index(batch_op.f("ix_meter_customer_ref"))

    op.drop_table("meter")
    op.drop_table("ingest_tally")
    op.drop_table("customer")
