"""Fixtures for the OPA engine's tests: the broker's private CA, and the OPA stand-in serving HTTPS
on 127.0.0.1 with a certificate that CA issued, so the client's CA-bundle path is really used.

The CA is ``broker.ca.authority.CertificateAuthority`` on a SQLite database of its own (it records
each certificate it issues); a second CA plays the stranger whose certificates must be refused.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.ca.authority import CertificateAuthority, Issued
from broker.kit.clock import SystemClock
from broker.schema import migrate
from broker.storage.db import Database
from connectors.opa import OpaServerEngine
from tests.broker.fakes import RecordingAuditSink, settings_for
from tests.connectors.concentrator.mdms_server import serving
from tests.connectors.opa.standin import OpaStandIn, create_standin_app

_names = itertools.count()
Serve = Callable[..., AbstractContextManager[str]]
MakeEngine = Callable[..., OpaServerEngine]


@dataclass
class Pki:
    """A private CA in a temporary directory, issuing certificates on demand."""

    ca: CertificateAuthority
    db: Database

    @classmethod
    def create(cls, where: Path) -> Pki:
        settings = settings_for(where / "var")
        db = Database.from_url(f"sqlite:///{where / 'ca.db'}")
        migrate.upgrade(db.engine)
        return cls(CertificateAuthority.create(settings, SystemClock()), db)

    def issue(self, role: str = "broker") -> tuple[Path, Path]:
        """A certificate and key for 127.0.0.1 (a server's, or a client's)."""
        with self.db.transaction() as session:
            issued: Issued = self.ca.issue(
                session,
                RecordingAuditSink(),
                role=role,
                name=f"opa-{next(_names)}",
                actor="test",
                ips=("127.0.0.1",),
            )
        assert issued.key_path is not None
        return issued.cert_path, issued.key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    made = Pki.create(tmp_path_factory.mktemp("pki"))
    yield made
    made.db.dispose()


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    """Another CA: its certificates look fine but the broker does not trust it."""
    made = Pki.create(tmp_path_factory.mktemp("stranger"))
    yield made
    made.db.dispose()


def server_context(identity: tuple[Path, Path], client_ca: Path | None = None) -> ssl.SSLContext:
    """The stand-in's TLS: its certificate, and client certificates of ``client_ca`` required
    when given (as ``opa run --authentication=tls --tls-ca-cert-file``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(*identity)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=client_ca)
    return ctx


@pytest.fixture
def opa() -> OpaStandIn:
    return OpaStandIn()


@pytest.fixture
def serve(opa: OpaStandIn, pki: Pki) -> Serve:
    """``with serve(ctx) as url``: the stand-in on HTTPS (default: a certificate of ``pki``)."""

    @contextmanager
    def run(ctx: ssl.SSLContext | None = None) -> Iterator[str]:
        with serving(create_standin_app(opa), ctx or server_context(pki.issue())) as port:
            yield f"https://127.0.0.1:{port}"

    return run


@pytest.fixture
def opa_url(serve: Serve) -> Iterator[str]:
    with serve() as url:
        yield url


@pytest.fixture
def make_engine(pki: Pki) -> Iterator[MakeEngine]:
    """Engines that trust ``pki`` by default, with short timeouts; closed after the test."""
    made: list[OpaServerEngine] = []

    def make(url: str, **options: object) -> OpaServerEngine:
        options = {"ca_bundle": pki.ca.cert_path, "timeout_s": 0.5, **options}
        engine = OpaServerEngine(url, **options)  # type: ignore[arg-type]
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()
