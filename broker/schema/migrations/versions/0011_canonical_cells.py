"""canonical cells: the recorded aggregate cells of each substation-day, served to everyone;
the dp budget charged to the cell (its household-days), not to the recipient

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "canonical_unit",
        sa.Column("unit_key", sa.String(length=240), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("parent", sa.String(length=120), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("cells_json", sa.Text(), nullable=False),
        sa.Column("members_json", sa.Text(), nullable=False),
        sa.Column("release_id", sa.String(length=40), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("unit_key"),
    )
    with op.batch_alter_table("privacy_spend") as batch:
        batch.add_column(sa.Column("cell", sa.String(length=200), nullable=True))
        batch.create_index("ix_privacy_spend_cell", ["cell"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("privacy_spend") as batch:
        batch.drop_index("ix_privacy_spend_cell")
        batch.drop_column("cell")
    op.drop_table("canonical_unit")
