"""recipients and OAuth: the registry of third parties and the EMS, used assertion ids

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 13:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recipient",
        sa.Column("recipient_id", sa.String(length=100), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("purposes", sa.Text(), nullable=False),
        sa.Column("webhook_url", sa.String(length=2000), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("recipient_id"),
    )
    op.create_table(
        "recipient_key",
        sa.Column("recipient_id", sa.String(length=100), nullable=False),
        sa.Column("kid", sa.String(length=100), nullable=False),
        sa.Column("jwk", sa.Text(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["recipient_id"], ["recipient.recipient_id"]),
        sa.PrimaryKeyConstraint("recipient_id", "kid"),
    )
    op.create_table(
        "oauth_jti",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("expires_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index(op.f("ix_oauth_jti_expires_us"), "oauth_jti", ["expires_us"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_oauth_jti_expires_us"), table_name="oauth_jti")
    op.drop_table("oauth_jti")
    op.drop_table("recipient_key")
    op.drop_table("recipient")
