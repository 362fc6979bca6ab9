"""retention of the broker's own data: the outbox is indexed by age, for the retention job
that erases delivery bodies past their period (the other purged columns are indexed already:
policy_decision.at_us, portal_session.expires_us, portal_throttle.last_failure_us; reading_day is
purged by day without an index of its own, to keep ingest's bulk writes lean)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.create_index("ix_delivery_created_us", ["created_us"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_index("ix_delivery_created_us")
