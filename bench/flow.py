"""One meter's day from its frames to a feed page, in steps a tracer can wrap (``code_shape``).

A fresh data directory on SQLite with the shipped policy; one simulated household whose
customer consents to one third party for 15-minute consumption; that party's hourly pull feed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from bench.ingest import _rows as key_row
from broker.kit.clock import FixedClock
from broker.policy.service import activate_shipped_if_none
from broker.recipients.models import Kind, Recipient, Status
from broker.release.feeds import FeedService, FeedSpec, Page
from broker.release.service import RecipientInfo, ReleaseConfig
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from broker.runtime.wiring import open_consents, open_pipeline
from broker.settings import Mode, Settings
from connectors.meters.simulator import Fleet
from consent_ledger import ConsentRequest, notice_hash
from deidentify.dp import BudgetRules

RECIPIENT = "acme"
PURPOSE = "personalised_service"


class _Directory:
    """The one recipient, as the registry would describe it (the interfaces take a session)."""

    def describe(self, session: Session, recipient_id: str) -> RecipientInfo | None:  # noqa: ARG002
        return RecipientInfo("third_party", "active") if recipient_id == RECIPIENT else None

    def purposes(self, session: Session, recipient_id: str) -> frozenset[str]:  # noqa: ARG002
        return frozenset({PURPOSE}) if recipient_id == RECIPIENT else frozenset()


@dataclass
class Flow:
    rt: Runtime
    fleet: Fleet
    day: dt.datetime

    @classmethod
    def open(cls, data_dir: Path, day: dt.datetime) -> Flow:
        settings = Settings(mode=Mode.development, data_dir=data_dir / "var")
        prepare_data_dir(settings)
        init_keys(settings)
        upgrade_schema(settings).dispose()
        clock = FixedClock(day + dt.timedelta(days=1, hours=1))
        rt = Runtime.open(settings, clock)
        activate_shipped_if_none(settings, rt.db.transaction, rt.audit, clock, "bench")
        fleet = Fleet.create(1, 7)
        with rt.db.transaction() as session:
            rt.meters.provision(session, [key_row(m) for m in fleet.meters], "bench", "keys.csv")
            session.add(
                Recipient(
                    recipient_id=RECIPIENT,
                    display_name="Acme",
                    kind=Kind.third_party.value,
                    purposes=f'["{PURPOSE}"]',
                    status=Status.active.value,
                    created_us=0,
                    updated_us=0,
                )
            )
        return cls(rt, fleet, day)

    def frames(self) -> list[bytes]:
        return [frame for _meter, frame in self.fleet.frames(self.day.date(), 1, 96)]

    def ingest(self, frames: list[bytes]) -> None:
        with self.rt.db.transaction() as session:
            result = self.rt.ingest.ingest(session, frames, "dc-bench", "b1", "bench")
        assert result.outcomes() == {"accepted": len(frames)}, result.outcomes()

    def consent(self) -> None:
        request = ConsentRequest(
            customer=self.fleet.meters[0].customer_ref,
            recipient=RECIPIENT,
            purposes=(PURPOSE,),
            categories=("consumption",),
            granularity="15min",
            expires_at=self.day + dt.timedelta(days=90),
            notice_hash=notice_hash(b"the notice shown"),
            collection_method="oauth_consent_page",
            controller="utility.example",
            history_days=30,
            identified=True,
            explicit=True,
        )
        with self.rt.db.transaction() as session:
            open_consents(self.rt).give(session, request, "customer")

    def page(self) -> Page:
        directory = _Directory()
        pipeline = open_pipeline(self.rt, directory, ReleaseConfig(BudgetRules()))
        feeds = FeedService(self.rt.db, pipeline, self.rt.clock, self.rt.hasher, directory)
        customer = self.fleet.meters[0].customer_ref
        spec = FeedSpec(PURPOSE, ("consumption",), "hourly", "subject",
                        subject=customer, period_from=self.day)  # fmt: skip
        feed = feeds.subscribe(RECIPIENT, spec)
        return feeds.page(RECIPIENT, feed["feed_id"])

    def close(self) -> None:
        self.rt.close()
