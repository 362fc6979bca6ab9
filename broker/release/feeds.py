"""Feeds: subscriptions, and pages that each run the one release pipeline.

A feed names what a recipient receives (purpose, categories, granularity, scope: one customer's
data or the aggregates of some feeders; a period or continuous; a format). ``page`` releases
the next ``limit`` whole days (1 by default, at most ``MAX_DAYS``) through the pipeline: every
page is decided again, so a withdrawn consent refuses the very next page, and the feed is then
marked stopped (with the decision's reasons) and refuses every later page. A continuous feed
releases only days that have ended. A push feed (``delivery="push"``, for a recipient with a
registered webhook) is paged the same way by the push worker (``broker.delivery.service``),
which posts each page; it cannot also be pulled.

A feed's purpose must be one the recipient is registered for (``recipient.purposes``): checked
at subscription and again before every page, ahead of the policy, so a purpose outside the
registration is refused (``PurposeNotRegistered``, 403) without a decision being made or
recorded; a page refused this way stops the feed, as a denial does, since a registration can be
narrowed after the feed was made.

Cursors are opaque: ``<feed id>.<day>.<mac>`` in base64url, the MAC a keyed hash (the broker's
subject-hash key) of the feed id and the day, so a cursor cannot be forged, edited, or used on
another feed. A page is released once (``broker.release.once``): asking again with a cursor
whose page was released is refused (``PageAlreadyReleased``, 409), naming that release and the
next cursor; its data is not handed out a second time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd
from sqlmodel import Session

from broker.audit.events import AuditEvent
from broker.errors import Forbidden, NotFound
from broker.kit.clock import Clock, from_us, to_us
from broker.kit.ids import SubjectHasher, new_id
from broker.recipients.models import Recipient
from broker.recipients.service import purposes_of
from broker.release.errors import FeedStopped, InvalidFeed, PurposeNotRegistered, ReleaseDenied
from broker.release.formats import Body, check_format, serialise
from broker.release.models import Feed
from broker.release.once import refuse_released
from broker.release.service import ReleaseOptions, ReleasePipeline
from broker.storage.db import Database

DAY_S = 86_400
MAX_DAYS = 31
SCOPES = ("subject", "aggregate")
DELIVERIES = ("pull", "push")


STOPS_FEED = (ReleaseDenied, PurposeNotRegistered)
"""What ``page_in`` raises after stopping the feed in the caller's transaction: commit it."""


class PurposeRegistry(Protocol):
    def purposes(self, session: Session, recipient_id: str) -> frozenset[str]: ...


class RegisteredPurposes:
    """The purposes of the recipients registry (``broker.recipients``); none for an unknown
    recipient."""

    def purposes(self, session: Session, recipient_id: str) -> frozenset[str]:
        row = session.get(Recipient, recipient_id)
        return frozenset() if row is None else frozenset(purposes_of(row))


@dataclass(frozen=True)
class FeedSpec:
    purpose: str
    categories: tuple[str, ...]
    granularity: str
    scope: str
    format: str = "json"
    subject: str | None = None
    groups: tuple[str, ...] = ()
    tier: str | None = None
    period_from: datetime | None = None
    period_to: datetime | None = None
    """None: continuous."""
    delivery: str = "pull"
    """``pull`` (paged by the recipient) or ``push`` (posted to its webhook each day)."""


@dataclass(frozen=True)
class Page:
    body: Body
    next_cursor: str | None
    release_id: str | None
    rows: int


def feed_json(feed: Feed) -> dict[str, Any]:
    return {
        "feed_id": feed.feed_id,
        "recipient": feed.recipient,
        "purpose": feed.purpose,
        "categories": json.loads(feed.categories),
        "granularity": feed.granularity,
        "scope": feed.scope,
        "subject": feed.subject,
        "groups": json.loads(feed.groups),
        "tier": feed.tier,
        "period_from": from_us(feed.period_from_us).isoformat(),
        "period_to": None if feed.period_to_us is None else from_us(feed.period_to_us).isoformat(),
        "format": feed.format,
        "delivery": feed.delivery,
        "status": feed.status,
        "stop_reason": feed.stop_reason,
        "created": from_us(feed.created_us).isoformat(),
    }


def _day_start(at: datetime) -> int:
    return int(at.timestamp()) // DAY_S


def _check(spec: FeedSpec) -> None:
    check_format(spec.format)
    if spec.scope not in SCOPES:
        raise InvalidFeed(f"scope must be one of {', '.join(SCOPES)}")
    if spec.scope == "subject" and not spec.subject:
        raise InvalidFeed("a subject feed names the customer (subject)")
    if spec.scope == "aggregate" and (spec.subject or not spec.groups):
        raise InvalidFeed("an aggregate feed names groups (feeders) and no subject")
    if not spec.categories:
        raise InvalidFeed("a feed names at least one category")
    if spec.period_from and spec.period_to and spec.period_to <= spec.period_from:
        raise InvalidFeed("the period ends before it starts")
    if spec.delivery not in DELIVERIES:
        raise InvalidFeed(f"delivery must be one of {', '.join(DELIVERIES)}")


class FeedService:
    def __init__(
        self,
        db: Database,
        pipeline: ReleasePipeline,
        clock: Clock,
        hasher: SubjectHasher,
        registry: PurposeRegistry | None = None,
    ) -> None:
        self.db = db
        self.pipeline = pipeline
        self.clock = clock
        self._hasher = hasher
        self._registry = registry or RegisteredPurposes()

    def _registered(self, session: Session, recipient: str, purpose: str) -> None:
        """Refuse a purpose outside ``recipient``'s registration (before any decision)."""
        registered = self._registry.purposes(session, recipient)
        if purpose not in registered:
            raise PurposeNotRegistered(recipient, purpose, registered)

    def subscribe(self, recipient: str, spec: FeedSpec) -> dict[str, Any]:
        _check(spec)
        now = self.clock.now()
        start = spec.period_from or datetime.fromtimestamp(_day_start(now) * DAY_S, UTC)
        feed = Feed(
            feed_id=new_id("fd"),
            recipient=recipient,
            purpose=spec.purpose,
            categories=json.dumps(list(spec.categories)),
            granularity=spec.granularity,
            scope=spec.scope,
            subject=spec.subject,
            groups=json.dumps(sorted(set(spec.groups))),
            tier=spec.tier,
            period_from_us=to_us(start),
            period_to_us=None if spec.period_to is None else to_us(spec.period_to),
            format=spec.format,
            delivery=spec.delivery,
            status="active",
            created_us=to_us(now),
        )
        with self.db.transaction() as session:
            if spec.delivery == "push":
                row = session.get(Recipient, recipient)
                if row is None or not row.webhook_url:
                    raise InvalidFeed("a push feed needs a webhook_url registered for you")
            self._registered(session, recipient, spec.purpose)
            session.add(feed)
            session.flush()
            return feed_json(feed)

    def _own(self, session: Session, recipient: str, feed_id: str) -> Feed:
        feed = session.get(Feed, feed_id)
        if feed is None or feed.recipient != recipient:  # another's feed: as if none existed
            raise NotFound(f"no feed {feed_id}")
        return feed

    def get(self, recipient: str, feed_id: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            return feed_json(self._own(session, recipient, feed_id))

    def stop(self, recipient: str, feed_id: str, reason: str = "stopped by the recipient") -> None:
        with self.db.transaction() as session:
            self.stop_in(session, self._own(session, recipient, feed_id), reason)

    def stop_in(self, session: Session, feed: Feed, reason: str) -> None:
        """Stop ``feed`` in the caller's transaction (once; later calls change nothing)."""
        if feed.status != "stopped":
            feed.status, feed.stop_reason = "stopped", reason[:1000]
            feed.stopped_us = to_us(self.clock.now())
            session.add(feed)

    def _stop_unregistered(self, session: Session, feed: Feed, exc: PurposeNotRegistered) -> None:
        """Stop ``feed`` and enter the refused page in the audit log (no decision was made)."""
        self.stop_in(session, feed, exc.message)
        subject = None if feed.subject is None else self._hasher(feed.subject)
        details = {"recipient": feed.recipient, "purpose": feed.purpose, "feed_id": feed.feed_id,
                   "decision_id": None, "reasons": ["purpose_not_registered"],
                   "why": exc.message[:500]}  # fmt: skip
        event = AuditEvent("release.refused", f"recipient:{feed.recipient}", subject, details)
        self.pipeline.audit.record(session, [event])

    def cursor(self, feed_id: str, day: int) -> str:
        mac = self._hasher(f"feed-cursor|{feed_id}|{day}")[-32:]
        return base64.urlsafe_b64encode(f"{feed_id}.{day}.{mac}".encode()).decode().rstrip("=")

    def _day_of(self, feed_id: str, cursor: str) -> int:
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            fid, day_text, _mac = text.split(".")
            day = int(day_text)
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidFeed("the cursor is not one this broker issued") from exc
        if fid != feed_id or not hmac.compare_digest(self.cursor(feed_id, day), cursor):
            raise InvalidFeed("the cursor is not one this broker issued for this feed")
        return day

    def page(
        self,
        recipient: str,
        feed_id: str,
        cursor: str | None = None,
        limit: int = 1,
        fmt: str | None = None,
    ) -> Page:
        """The next page of a pull feed, in a transaction of its own."""
        denied: Forbidden | None = None
        with self.db.transaction() as session:
            feed = self._own(session, recipient, feed_id)
            if feed.delivery == "push":
                raise FeedStopped(f"feed {feed_id} is pushed to the webhook; it cannot be pulled")
            try:
                return self.page_in(session, feed, cursor, limit, fmt)
            except STOPS_FEED as exc:  # the feed was stopped: commit that, then answer
                denied = exc
        raise denied

    def page_in(
        self,
        session: Session,
        feed: Feed,
        cursor: str | None = None,
        limit: int = 1,
        fmt: str | None = None,
    ) -> Page:
        """The next page of ``feed`` in the caller's transaction (pull routes and the push
        worker). A purpose no longer registered, or a denial (withdrawn, expired, suspended),
        stops the feed in that transaction and raises one of ``STOPS_FEED``: commit it."""
        if not 1 <= limit <= MAX_DAYS:
            raise InvalidFeed(f"limit is the days per page, 1 to {MAX_DAYS}")
        feed_id, recipient = feed.feed_id, feed.recipient
        if feed.status != "active":
            raise FeedStopped(f"feed {feed_id} is stopped: {feed.stop_reason}")
        try:
            self._registered(session, recipient, feed.purpose)
        except PurposeNotRegistered as exc:
            self._stop_unregistered(session, feed, exc)
            raise
        fmt = check_format(fmt or feed.format)
        day = _day_start(from_us(feed.period_from_us))
        if cursor:
            day = self._day_of(feed_id, cursor)
        last = _day_start(self.clock.now())  # days before today have ended
        if feed.period_to_us is not None:
            last = min(last, -(-feed.period_to_us // (DAY_S * 1_000_000)))
        end_day = min(day + limit, last)
        meta: dict[str, Any] = {"feed_id": feed_id}
        if end_day <= day:  # nothing ended yet (continuous) or the period is done
            done = feed.period_to_us is not None and day >= last
            next_cursor = None if done else self.cursor(feed_id, day)
            return Page(serialise(_empty(), fmt, meta), next_cursor, None, 0)
        start = datetime.fromtimestamp(day * DAY_S, UTC)
        refuse_released(session, feed, to_us(start), self.cursor)  # a page is released once
        end = datetime.fromtimestamp(end_day * DAY_S, UTC)
        if feed.period_to_us is not None:
            end = min(end, from_us(feed.period_to_us))
        request = self.pipeline.request_for(
            session, recipient, feed.purpose, json.loads(feed.categories), feed.granularity,
            start, end, feed.subject, feed.tier,
        )  # fmt: skip
        options = ReleaseOptions(groups=tuple(json.loads(feed.groups)), feed_id=feed_id)
        try:
            result = self.pipeline.release(session, request, options)
        except ReleaseDenied as exc:  # withdrawn, expired, suspended: the feed stops
            self.stop_in(session, feed, f"{exc.message}")
            raise
        meta |= {
            "release_id": result.release_id,
            "tier": result.tier,
            "granularity": result.granularity,
            "decision_id": result.decision.decision_id,
            "manifest_sha256": result.manifest_digest,
            "from": start.isoformat(),
            "to": end.isoformat(),
        }
        body = serialise(result.frame, fmt, meta)
        more = feed.period_to_us is None or end_day < last
        next_cursor = self.cursor(feed_id, end_day) if more else None
        return Page(body, next_cursor, result.release_id, result.rows)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"start": pd.to_datetime([], utc=True), "energy_wh": []})
