"""server-side portal sessions and sign-in throttling: a session row per signed-in browser
(sign-out and password changes end them), consecutive failures and waits per account and per
client address instead of the account lockout (whose columns go)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_session",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("customer_ref", sa.String(length=64), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    op.create_index(
        op.f("ix_portal_session_customer_ref"), "portal_session", ["customer_ref"], unique=False
    )
    op.create_index(
        op.f("ix_portal_session_expires_us"), "portal_session", ["expires_us"], unique=False
    )
    op.create_table(
        "portal_throttle",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("wait_until_us", sa.BigInteger(), nullable=False),
        sa.Column("last_failure_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(
        op.f("ix_portal_throttle_last_failure_us"),
        "portal_throttle",
        ["last_failure_us"],
        unique=False,
    )
    with op.batch_alter_table("customer_account") as batch:
        batch.drop_column("locked_until_us")
        batch.drop_column("failed_logins")


def downgrade() -> None:
    with op.batch_alter_table("customer_account") as batch:
        batch.add_column(
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("locked_until_us", sa.BigInteger(), nullable=True))
    op.drop_index(op.f("ix_portal_throttle_last_failure_us"), table_name="portal_throttle")
    op.drop_table("portal_throttle")
    op.drop_index(op.f("ix_portal_session_expires_us"), table_name="portal_session")
    op.drop_index(op.f("ix_portal_session_customer_ref"), table_name="portal_session")
    op.drop_table("portal_session")
