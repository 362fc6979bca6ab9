"""policy: the decision log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 12:55:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policy_decision",
        sa.Column("decision_id", sa.String(length=40), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("allow", sa.Boolean(), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=True),
        sa.Column("input_json", sa.Text(), nullable=False),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id"),
    )
    op.create_index(op.f("ix_policy_decision_at_us"), "policy_decision", ["at_us"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_policy_decision_at_us"), table_name="policy_decision")
    op.drop_table("policy_decision")
