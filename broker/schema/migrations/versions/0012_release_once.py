"""one release per feed page: a unique (feed, period) on releases, so a second broker process
cannot release the same page again

Adds ``release.period_from_us`` and ``period_to_us`` and the unique index
``uq_release_feed_period`` on ``(feed_id, period_from_us)``.

Existing rows get their period from their decision record (``policy_decision.input_json``,
``request.from_s`` / ``to_s``). Pages released twice before this revision (two workers racing)
keep every row: each copy was delivered, is named by the audit log, and stays in the
recipient's deletion scope. The first release of such a (feed, period) (earliest ``at_us``,
then ``release_id``) becomes the page of record; the later copies keep a NULL period, which the
unique index does not compare (their period stays in their decision record). A release whose
decision record is missing keeps a NULL period too.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = 1_000_000


def _period(input_json: str | None) -> tuple[int, int] | None:
    try:
        request = json.loads(input_json or "")["request"]
        return int(request["from_s"]) * _S, int(request["to_s"]) * _S
    except (ValueError, KeyError, TypeError):
        return None


def _fill_periods() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            'SELECT r.release_id, r.feed_id, d.input_json FROM "release" r '
            "LEFT JOIN policy_decision d ON d.decision_id = r.decision_id "
            "ORDER BY r.at_us, r.release_id"
        )
    ).all()
    recorded: set[tuple[str, int]] = set()
    updates = []
    for release_id, feed_id, input_json in rows:
        period = _period(input_json)
        if period is None:
            continue
        if feed_id is not None:
            if (feed_id, period[0]) in recorded:
                continue  # a later copy of a page released twice: kept, not the page of record
            recorded.add((feed_id, period[0]))
        updates.append({"id": release_id, "lo": period[0], "hi": period[1]})
    if updates:
        bind.execute(
            sa.text(
                'UPDATE "release" SET period_from_us = :lo, period_to_us = :hi '
                "WHERE release_id = :id"
            ),
            updates,
        )


def upgrade() -> None:
    with op.batch_alter_table("release") as batch:
        batch.add_column(sa.Column("period_from_us", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("period_to_us", sa.BigInteger(), nullable=True))
    _fill_periods()
    with op.batch_alter_table("release") as batch:
        batch.create_unique_constraint("uq_release_feed_period", ["feed_id", "period_from_us"])


def downgrade() -> None:
    with op.batch_alter_table("release") as batch:
        batch.drop_constraint("uq_release_feed_period", type_="unique")
        batch.drop_column("period_to_us")
        batch.drop_column("period_from_us")
