"""privacy: budget spends and pseudonym domains

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 12:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacy_spend",
        sa.Column("spend_id", sa.String(length=40), nullable=False),
        sa.Column("recipient", sa.String(length=120), nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("mechanism", sa.String(length=32), nullable=False),
        sa.Column("privacy_unit", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("spend_id"),
    )
    op.create_index(op.f("ix_privacy_spend_at_us"), "privacy_spend", ["at_us"], unique=False)
    op.create_index(
        op.f("ix_privacy_spend_recipient"), "privacy_spend", ["recipient"], unique=False
    )
    op.create_table(
        "pseudonym_domain",
        sa.Column("domain", sa.String(length=120), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("rekeyed_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("domain"),
    )


def downgrade() -> None:
    op.drop_table("pseudonym_domain")
    op.drop_index(op.f("ix_privacy_spend_recipient"), table_name="privacy_spend")
    op.drop_index(op.f("ix_privacy_spend_at_us"), table_name="privacy_spend")
    op.drop_table("privacy_spend")
