"""delivery: webhook outbox, deletion requests, push feeds

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 15:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery",
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("feed_id", sa.String(length=40), nullable=True),
        sa.Column("release_id", sa.String(length=40), nullable=True),
        sa.Column("deletion_id", sa.String(length=40), nullable=True),
        sa.Column("media_type", sa.String(length=80), nullable=False),
        sa.Column("body_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("receipt", sa.Text(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("delivered_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("delivery_id"),
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_recipient"), ["recipient"], unique=False)
        batch_op.create_index(batch_op.f("ix_delivery_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_delivery_next_attempt_us"), ["next_attempt_us"], unique=False
        )
    op.create_table(
        "deletion_request",
        sa.Column("deletion_id", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=120), nullable=False),
        sa.Column("subject_hash", sa.String(length=80), nullable=False),
        sa.Column("consent_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("release_ids", sa.Text(), nullable=False),
        sa.Column("request_jws", sa.Text(), nullable=False),
        sa.Column("requested_us", sa.BigInteger(), nullable=False),
        sa.Column("due_us", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ack_jws", sa.Text(), nullable=True),
        sa.Column("acked_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("deletion_id"),
    )
    with op.batch_alter_table("deletion_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deletion_request_recipient"), ["recipient"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_deletion_request_subject_hash"), ["subject_hash"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_deletion_request_due_us"), ["due_us"], unique=False)
        batch_op.create_index(batch_op.f("ix_deletion_request_status"), ["status"], unique=False)
    with op.batch_alter_table("feed", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("delivery", sa.String(length=8), nullable=False, server_default="pull")
        )
        batch_op.add_column(sa.Column("push_cursor", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feed", schema=None) as batch_op:
        batch_op.drop_column("push_cursor")
        batch_op.drop_column("delivery")
    op.drop_table("deletion_request")
    op.drop_table("delivery")
