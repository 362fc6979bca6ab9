"""Push delivery: the outbox, deletion requests, push feeds, and the worker
round that ``broker serve`` runs every ``BROKER_PUSH_POLL_S`` seconds.

A worker round:
1. appends ``expired`` events for consents whose expiry has come (so expiry propagates like a
   withdrawal: feeds stop, deletion requests go out);
2. releases the next ended days of every active push feed through the one pipeline
   (``FeedService.page_in``) and queues each page for the recipient's webhook in the same
   transaction as its release, holding the feed's row (``broker.release.once.claim_feed``:
   another ``broker serve`` on the same database skips the feed meanwhile, and a page is
   released once); a denial, or a purpose the recipient is no longer registered for, stops the
   feed (as a pull page would);
3. posts every due delivery (``Outbox.run_due``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlmodel import col, select

from broker.consent.service import ConsentService
from broker.delivery.outbox import HttpPoster, Outbox, Poster, push_client_context
from broker.delivery.settings import PushSettings
from broker.errors import BrokerError
from broker.kit.supervise import Periodic
from broker.recipients.egress import NO_PRIVATE, Egress
from broker.recipients.models import Recipient
from broker.release.errors import PageAlreadyReleased
from broker.release.feeds import STOPS_FEED, FeedService
from broker.release.models import Feed
from broker.release.once import claim_feed
from broker.storage.db import Database

logger = logging.getLogger(__name__)
PUSH_DAYS_PER_ROUND = 7
"""A push feed catches up at most this many days per round (one release per day)."""


@dataclass
class RoundReport:
    expired: int = 0
    pushed_pages: int = 0
    stopped_feeds: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)


class PushService:
    def __init__(
        self, db: Database, feeds: FeedService, outbox: Outbox, consents: ConsentService
    ) -> None:
        self.db = db
        self.feeds = feeds
        self.outbox = outbox
        self.consents = consents  # one instance: each round refreshes incrementally

    def push_feeds(self, report: RoundReport) -> None:
        with self.db.transaction() as session:
            ids = list(
                session.exec(
                    select(Feed.feed_id)
                    .where(col(Feed.delivery) == "push", col(Feed.status) == "active")
                    .order_by(col(Feed.created_us))
                )
            )
        for feed_id in ids:
            for _ in range(PUSH_DAYS_PER_ROUND):
                if not self._push_one(feed_id, report):
                    break

    def _push_one(self, feed_id: str, report: RoundReport) -> bool:
        """Release and queue the next day of one push feed; False when there is none now."""
        try:
            with self.db.transaction() as session:
                feed = claim_feed(session, feed_id)  # None: another worker is pushing it now
                if feed is None or feed.status != "active":
                    return False
                hook = session.get(Recipient, feed.recipient)
                if hook is None or not hook.webhook_url:
                    self.feeds.stop_in(session, feed, "the recipient has no webhook any more")
                    report.stopped_feeds += 1
                    return False
                try:
                    page = self.feeds.page_in(session, feed, feed.push_cursor, 1, None)
                except STOPS_FEED:  # the feed is stopped in this transaction: commit it
                    report.stopped_feeds += 1
                    return False
                if page.release_id is None:  # nothing ended yet, or the period is done
                    if page.next_cursor is None:
                        self.feeds.stop_in(session, feed, "the feed's period is complete")
                    return False
                self.outbox.enqueue(
                    session,
                    recipient=feed.recipient,
                    url=hook.webhook_url,
                    kind="release",
                    body=page.body.content,
                    media_type=page.body.media_type,
                    subject=feed.subject,
                    feed_id=feed.feed_id,
                    release_id=page.release_id,
                )
                feed.push_cursor = page.next_cursor
                if page.next_cursor is None:
                    self.feeds.stop_in(session, feed, "the feed's period is complete")
                session.add(feed)
                report.pushed_pages += 1
                return page.next_cursor is not None
        except PageAlreadyReleased as exc:  # another process released and queued it
            logger.info("push feed %s: %s", feed_id, exc)
            return False
        except BrokerError as exc:  # refused, or the store failed: next round
            logger.warning("push feed %s: %s", feed_id, exc)
            return False

    def round(self, post: Poster) -> RoundReport:
        report = RoundReport()
        with self.db.transaction() as session:
            report.expired = len(self.consents.expire_due(session, "system:expiry"))
        self.push_feeds(report)
        report.deliveries = self.outbox.run_due(post)
        return report


class PushLoop(Periodic):
    """The worker round on a supervised thread, every ``poll_s`` seconds, until ``stop``: a round
    failing with a ``BrokerError`` is tried again next time; anything else is logged at CRITICAL
    and the worker is started again (``broker.kit.supervise``), so pushes never stop silently."""

    def __init__(self, service: PushService, post: Poster, poll_s: float) -> None:
        work = partial(service.round, post)
        super().__init__("push-worker", work, poll_s, expected=(BrokerError,), log=logger)


def http_poster(
    settings: PushSettings, identity: tuple[Path, Path], egress: Egress = NO_PRIVATE
) -> HttpPoster:
    """The poster ``broker serve`` uses: the broker's certificate as client certificate,
    connecting only where ``egress`` admits (``Egress.of(rt.settings)``)."""
    cert, key = identity
    return HttpPoster(push_client_context(settings.ca_file, cert, key), settings, egress)
