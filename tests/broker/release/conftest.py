"""A broker with real readings in its MDMS, on SQLite and PostgreSQL.

The reference path, kept small: 110 simulated households on feeder F-001 and 10 on F-002 (the
simulator's layout, 150 meters a feeder) push two days of 15-minute load profiles as DLMS frames
(security suite 0) that the MDMS verifies and stores sealed under each customer's key. The
shipped policy is activated; recipients come from a small directory. ``wired`` serves the same
broker as ``broker serve`` does (the recipients registry, certificate-bound tokens) on its
readings and clock, for tests through the real HTTPS server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlmodel import Session

from broker.api.server import build, running
from broker.ca.authority import CertificateAuthority
from broker.kit.clock import FixedClock, SystemClock
from broker.oauth.settings import OAuthSettings
from broker.policy.service import activate_shipped_if_none
from broker.recipients.models import Recipient
from broker.release.service import RecipientInfo, ReleaseConfig, ReleasePipeline
from broker.runtime.core import Runtime, init_keys, prepare_data_dir
from broker.runtime.wiring import open_consents, open_pipeline
from broker.storage.db import Database
from connectors.meters.simulator import Fleet
from consent_ledger import ConsentRequest, notice_hash
from deidentify.dp import BudgetRules
from tests.broker.fakes import settings_for
from tests.broker.oauth import conftest as oauth
from tests.broker.parties import enrol
from tests.connectors.mdms.factory import key_rows

DAY0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
NOW = DAY0 + dt.timedelta(days=2, hours=1)
SEED = 7
CUSTOMER = "CUST-0000001"
OTHER_CUSTOMER = "CUST-0000002"


class Directory:
    """Recipients' kind and status for the pipeline, and their registered purposes for feeds."""

    def __init__(self) -> None:
        self.known = {
            "acme": RecipientInfo("third_party", "active"),
            "rival": RecipientInfo("third_party", "active"),
            "ems-grid": RecipientInfo("ems", "active"),
        }
        self.registered = {
            "acme": frozenset({"personalised_service"}),
            "rival": frozenset({"personalised_service"}),
            "ems-grid": frozenset({"grid_operations"}),
        }

    def describe(self, session: Session, recipient_id: str) -> RecipientInfo | None:
        return self.known.get(recipient_id)

    def purposes(self, session: Session, recipient_id: str) -> frozenset[str]:
        return self.registered.get(recipient_id, frozenset())


@dataclass
class Broker:
    rt: Runtime
    clock: FixedClock
    fleet: Fleet
    directory: Directory

    def pipeline(self, budget: BudgetRules | None = None) -> ReleasePipeline:
        return open_pipeline(self.rt, self.directory, ReleaseConfig(budget or BudgetRules()))

    def consent(self, customer: str = CUSTOMER, recipient: str = "acme",
                purpose: str = "personalised_service", identified: bool = True) -> str:  # fmt: skip
        """A consent given at the portal: 15-minute consumption, explicit, 90 days."""
        consents = open_consents(self.rt)
        request = ConsentRequest(
            customer=customer,
            recipient=recipient,
            purposes=(purpose,),
            categories=("consumption",),
            granularity="15min",
            expires_at=NOW + dt.timedelta(days=90),
            notice_hash=notice_hash(b"the notice shown"),
            collection_method="oauth_consent_page",
            controller="utility.example",
            history_days=30,
            identified=identified,
            explicit=True,
        )
        with self.rt.db.transaction() as session:
            enrol(session, [], [recipient])  # unless onboarded: a consent names a registered one
            return consents.give(session, request, "customer").event.consent_id

    def withdraw(self, consent_id: str) -> None:
        with self.rt.db.transaction() as session:
            open_consents(self.rt).withdraw(session, consent_id, "customer")


def _fill(rt: Runtime, fleet: Fleet) -> None:
    with rt.db.transaction() as session:
        rt.meters.provision(session, key_rows(fleet.meters), "test", "keys.csv")
    frames = [frame for _meter, frame in fleet.frames(DAY0.date(), 2, 96)]
    with rt.db.transaction() as session:
        result = rt.ingest.ingest(session, frames, "dc-test", "b", "test")
    assert result.outcomes() == {"accepted": len(frames)}


@pytest.fixture
def broker(database: Database, tmp_path: Path) -> Broker:
    settings = settings_for(tmp_path / "var")
    prepare_data_dir(settings)
    init_keys(settings)
    clock = FixedClock(NOW)
    rt = Runtime.open(settings, clock)
    rt.db.dispose()
    rt = dataclasses.replace(rt, db=database)
    activate_shipped_if_none(settings, rt.db.transaction, rt.audit, clock, "test")
    big = Fleet.create(110, SEED)
    small = Fleet.create(10, SEED, first=150)
    fleet = dataclasses.replace(big, meters=[*big.meters, *small.meters])
    _fill(rt, big)
    _fill(rt, small)
    return Broker(rt, clock, fleet, Directory())


def set_purposes(rt: Runtime, recipient_id: str, purposes: tuple[str, ...]) -> None:
    """Change a registered recipient's purposes, as an operator narrowing its registration."""
    with rt.db.transaction() as session:
        row = session.get(Recipient, recipient_id)
        assert row is not None
        row.purposes = json.dumps(sorted(purposes))
        session.add(row)


@pytest.fixture
def wired(broker: Broker, tmp_path: Path) -> Iterator[oauth.Broker]:
    """``broker``'s runtime served as ``broker serve`` serves it (the recipients registry,
    certificate-bound tokens, the one pipeline); recipients join with ``onboard``."""
    rt = broker.rt
    CertificateAuthority.create(rt.settings, SystemClock())
    settings = OAuthSettings(issuer=oauth.ISSUER, rate_per_s=1000, burst=1000)
    with running(build(rt, "test", poll_s=3600, oauth=settings)) as port:
        yield oauth.Broker(rt, f"https://127.0.0.1:{port}", rt.settings.ca_dir / "ca.pem", tmp_path)
