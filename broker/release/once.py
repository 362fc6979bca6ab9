"""Each page of a feed is released once, however many broker processes share the database.

Two guards, so neither a second ``broker serve`` nor a second request can release a page again:

- ``claim_feed``: the push worker takes the feed's row before it releases the feed's next page
  (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL: a feed another worker holds is skipped
  this round; on SQLite every transaction starts with ``BEGIN IMMEDIATE``, so the read of the
  push cursor already happens under the database's one write lock);
- the unique index ``uq_release_feed_period`` on ``release (feed_id, period_from_us)``
  (migration 0012): a release of a page already recorded cannot be written. A writer that loses
  the race gets ``PageAlreadyReleased`` (409), and its transaction (decision record, audit
  entry, budget spend, delivery) rolls back whole.

Pages of a feed start on distinct days: a cursor is the end of a released page (or the feed's
first day), so with one release per start day the released pages of a feed never overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.release.errors import PageAlreadyReleased
from broker.release.models import Feed, ReleaseRecord

UNIQUE_PAGE = "uq_release_feed_period"
_SQLITE_PAGE = "release.feed_id, release.period_from_us"
DAY_US = 86_400 * 1_000_000


def is_page_conflict(exc: IntegrityError) -> bool:
    """Whether ``exc`` is the unique (feed, period) index refusing a second release."""
    text = str(exc.orig)
    return UNIQUE_PAGE in text or _SQLITE_PAGE in text


def claim_feed(session: Session, feed_id: str) -> Feed | None:
    """The feed's row, locked for this transaction; None when another transaction holds it
    (PostgreSQL) or it does not exist."""
    query = select(Feed).where(col(Feed.feed_id) == feed_id).with_for_update(skip_locked=True)
    return session.exec(query.execution_options(populate_existing=True)).first()


def recorded_page(session: Session, feed_id: str, period_from_us: int) -> ReleaseRecord | None:
    """The release of record of the feed's page starting at ``period_from_us``, if any."""
    query = select(ReleaseRecord).where(
        col(ReleaseRecord.feed_id) == feed_id, col(ReleaseRecord.period_from_us) == period_from_us
    )
    return session.exec(query).first()


def refuse_released(
    session: Session, feed: Feed, period_from_us: int, cursor: Callable[[str, int], str]
) -> None:
    """Refuse (409) the page of ``feed`` starting at ``period_from_us`` when it was released
    before, naming its release and the cursor of the page after it (``cursor(feed_id, day)``),
    so a recipient whose answer was lost can carry on; its data is not handed out again."""
    done = recorded_page(session, feed.feed_id, period_from_us)
    if done is None:
        return
    start = datetime.fromtimestamp(period_from_us / 1e6, UTC).isoformat()
    end_us = done.period_to_us if done.period_to_us is not None else period_from_us + DAY_US
    end_day = -(-end_us // DAY_US)
    more = feed.period_to_us is None or end_day < -(-feed.period_to_us // DAY_US)
    after = "it was the feed's last page"
    if more:
        after = f"the next page's cursor is {cursor(feed.feed_id, end_day)}"
    raise PageAlreadyReleased(
        f"feed {feed.feed_id}'s page from {start} was already released "
        f"(release {done.release_id}); {after}"
    )
