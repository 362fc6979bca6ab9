"""portal: identities at an upstream OpenID Connect provider linked to customers

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_identity",
        sa.Column("issuer", sa.String(length=512), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("customer_ref", sa.String(length=64), nullable=False),
        sa.Column("linked_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "subject"),
    )
    op.create_index(
        op.f("ix_customer_identity_customer_ref"),
        "customer_identity",
        ["customer_ref"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_customer_identity_customer_ref"), table_name="customer_identity")
    op.drop_table("customer_identity")
