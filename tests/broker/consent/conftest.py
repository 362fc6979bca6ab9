"""A consent service over the ``database`` fixture (SQLite and PostgreSQL) and a real audit log;
customers C-0 to C-9 and recipient acme-energy exist (a consent must name known parties)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.log import AuditLog
from broker.audit.note import NoteSigner
from broker.consent.service import ConsentService
from broker.kit.clock import FixedClock
from broker.kit.ids import SubjectHasher
from broker.storage.db import Database
from consent_ledger import ReceiptSigner
from tests.broker.parties import enrol
from tests.consent_ledger.factories import T0

ORIGIN = "test.example/audit"
HASHER = SubjectHasher(b"k" * 32)


@pytest.fixture(autouse=True)
def parties(database: Database) -> None:
    with database.transaction() as session:
        enrol(session, [f"C-{n}" for n in range(10)], ["acme-energy"])


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def signer() -> ReceiptSigner:
    return ReceiptSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def new_service(clock: FixedClock, signer: ReceiptSigner) -> Callable[[], ConsentService]:
    """Another service instance on the same database, as another process would hold."""

    def build() -> ConsentService:
        log = AuditLog(ORIGIN, NoteSigner(ORIGIN, Ed25519PrivateKey.generate()), clock)
        return ConsentService(log, clock, HASHER, signer, max_days=365)

    return build


@pytest.fixture
def service(new_service: Callable[[], ConsentService]) -> ConsentService:
    return new_service()
