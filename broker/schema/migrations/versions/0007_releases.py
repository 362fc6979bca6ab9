"""releases and feeds: subscriptions, release records, deletion requests

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 13:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "release",
        sa.Column("release_id", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=120), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("decision_id", sa.String(length=40), nullable=False),
        sa.Column("revision", sa.String(length=40), nullable=False),
        sa.Column("consent_ids", sa.Text(), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("manifest_digest", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("feed_id", sa.String(length=40), nullable=True),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("release_id"),
    )
    op.create_index(op.f("ix_release_at_us"), "release", ["at_us"], unique=False)
    op.create_index(op.f("ix_release_recipient"), "release", ["recipient"], unique=False)
    op.create_table(
        "release_group",
        sa.Column("release_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("recipient", sa.String(length=120), nullable=False),
        sa.Column("group_name", sa.String(length=120), nullable=False),
        sa.Column("start_us", sa.BigInteger(), nullable=False),
        sa.Column("end_us", sa.BigInteger(), nullable=False),
        sa.Column("members_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("release_id", "seq"),
    )
    op.create_index(op.f("ix_release_group_end_us"), "release_group", ["end_us"], unique=False)
    op.create_index(
        op.f("ix_release_group_recipient"), "release_group", ["recipient"], unique=False
    )
    op.create_table(
        "feed",
        sa.Column("feed_id", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=120), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("granularity", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=True),
        sa.Column("period_from_us", sa.BigInteger(), nullable=False),
        sa.Column("period_to_us", sa.BigInteger(), nullable=True),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("stopped_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("feed_id"),
    )
    op.create_index(op.f("ix_feed_recipient"), "feed", ["recipient"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_feed_recipient"), table_name="feed")
    op.drop_table("feed")
    op.drop_index(op.f("ix_release_group_recipient"), table_name="release_group")
    op.drop_index(op.f("ix_release_group_end_us"), table_name="release_group")
    op.drop_table("release_group")
    op.drop_index(op.f("ix_release_recipient"), table_name="release")
    op.drop_index(op.f("ix_release_at_us"), table_name="release")
    op.drop_table("release")
