"""portal: customer accounts, authorization codes, redirect URIs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 13:25:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_account",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("customer_ref", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until_us", sa.BigInteger(), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username"),
        sa.UniqueConstraint("customer_ref"),
    )
    op.create_table(
        "oauth_code",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=120), nullable=False),
        sa.Column("customer_ref", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("consent_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("expires_us", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_table(
        "oauth_redirect_uri",
        sa.Column("client_id", sa.String(length=120), nullable=False),
        sa.Column("uri", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "uri"),
    )


def downgrade() -> None:
    op.drop_table("oauth_redirect_uri")
    op.drop_table("oauth_code")
    op.drop_table("customer_account")
