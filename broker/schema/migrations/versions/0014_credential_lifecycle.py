"""credential lifecycle: issued certificate records and caps, token cut-off at suspension

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # token cut-off at suspension (recipient.suspended_us)
    with op.batch_alter_table("recipient") as batch:
        batch.add_column(sa.Column("suspended_us", sa.BigInteger(), nullable=True))
    # certificate lifecycle (ca_certificate.issued_us): when each certificate was issued, to
    # the microsecond, so a renewal past the cap retires the oldest; earlier rows were issued
    # five minutes after their notBefore
    with op.batch_alter_table("ca_certificate") as batch:
        batch.add_column(sa.Column("issued_us", sa.BigInteger(), nullable=True))
    op.execute("UPDATE ca_certificate SET issued_us = not_before_us + 300000000")
    with op.batch_alter_table("ca_certificate") as batch:
        batch.alter_column("issued_us", existing_type=sa.BigInteger(), nullable=False)


def downgrade() -> None:
    # certificate lifecycle
    with op.batch_alter_table("ca_certificate") as batch:
        batch.drop_column("issued_us")
    # token cut-off at suspension: last, as its upgrade is first
    with op.batch_alter_table("recipient") as batch:
        batch.drop_column("suspended_us")
