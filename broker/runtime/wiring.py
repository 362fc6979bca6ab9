"""Every service built from a runtime: the one place that hands services their collaborators.

Services below this package take what they work with as constructor arguments; these builders
read the runtime's settings and keys and pass them on. Each builds a fresh service: callers that
need one instance across calls (the push worker's consent service) keep theirs.

Data directories made before the consent ledger existed have no receipt key; the first use
creates it (0600, as ``broker init`` does now) instead of failing, and a second process that
races to do the same reads the key the first one wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from broker.ca.authority import CertificateAuthority, Issued
from broker.ca.models import IssuedCertificate
from broker.consent.service import AppendHook, ConsentService
from broker.delivery.deletion import Deletions
from broker.delivery.erasure import Erasure
from broker.delivery.outbox import Outbox
from broker.delivery.service import PushService
from broker.delivery.settings import PushSettings
from broker.delivery.signing import load_delivery_key
from broker.keys.files import load_ed25519_key
from broker.oauth.settings import OAuthSettings
from broker.policy.service import (
    EngineFactory,
    LiveDecisionPoint,
    active_vocabulary,
    embedded_engines,
)
from broker.privacy.service import BudgetLedger, PseudonymKeys, load_pseudonym_master
from broker.recipients.egress import Egress
from broker.recipients.service import CertificateRules, Recipients
from broker.release.feeds import FeedService
from broker.release.service import (
    RecipientDirectory,
    RegistryDirectory,
    ReleaseConfig,
    ReleasePipeline,
)
from broker.release.store import ReadingsRepository
from broker.runtime.core import (
    Runtime,
    consent_receipt_key_path,
    consent_receipt_public_key_path,
)
from broker.settings import Settings
from connectors.opa.client import OpaServerEngine
from consent_ledger import ReceiptSigner

SERVER_NAME = "broker-server"


def open_consents(rt: Runtime) -> ConsentService:
    """The consent service; its withdrawals and expiries propagate to recipients (deletion
    requests, ``broker.delivery.deletion``) in the transaction that writes them."""
    service = ConsentService(
        rt.audit,
        rt.clock,
        rt.hasher,
        load_receipt_signer(rt.settings),
        rt.settings.consent_max_days,
        active_vocabulary(rt.settings, rt.audit, rt.clock),
    )
    service.after_append.append(_propagate(rt))
    return service


def _propagate(rt: Runtime) -> AppendHook:
    def hook(session: Session, events: list[tuple[str, str, str, str]], actor: str) -> None:
        if any(kind in ("withdrawn", "expired") for kind, *_ in events):
            open_deletions(rt).on_consent_events(session, events, actor)

    return hook


def load_receipt_signer(settings: Settings) -> ReceiptSigner:
    key = load_ed25519_key(
        settings,
        consent_receipt_key_path(settings),
        consent_receipt_public_key_path(settings),
        "consent receipt key",
    )
    return ReceiptSigner(key)


def open_recipients(rt: Runtime, egress: Egress | None = None) -> Recipients:
    """The recipients service every path uses (command line, API, demo): registrations are
    checked against the active revision's purpose catalogue, read at each registration, with the
    certificate rules of the settings (``recipient_cert_max_days``, ``recipient_cert_max_live``)
    and where webhooks may point (``webhook_allow_private``, ``webhook_private_ports``)."""
    settings = rt.settings
    rules = CertificateRules(settings.recipient_cert_max_days, settings.recipient_cert_max_live)
    return Recipients(
        rt.audit,
        rt.clock,
        lambda: active_vocabulary(rt.settings, rt.audit, rt.clock).purposes,
        rules,
        egress or Egress.of(rt.settings),
    )


def open_ca(rt: Runtime) -> CertificateAuthority:
    return CertificateAuthority(rt.settings, rt.clock)


def server_identity(rt: Runtime, ca: CertificateAuthority, actor: str) -> tuple[Path, Path]:
    """The server's certificate and key, issued (role broker) on first use."""
    issued = ca.dir / "issued"
    cert, key = issued / f"{SERVER_NAME}.pem", issued / f"{SERVER_NAME}.key"
    if not (cert.exists() and key.exists()):
        with rt.db.transaction() as session:
            made: Issued = ca.issue(session, rt.audit, role="broker", name=SERVER_NAME, actor=actor)
        assert made.key_path is not None
        cert, key = made.cert_path, made.key_path
    return cert, key


def recorded_fingerprints(rt: Runtime) -> Callable[[str], str | None]:
    """Serial → the fingerprint the CA recorded when it issued that certificate, or None: the
    register the TLS layer checks peers against (``RevocationCheck``)."""

    def lookup(serial: str) -> str | None:
        with rt.db.transaction() as session:
            row = session.get(IssuedCertificate, serial)
            return None if row is None else row.fingerprint_sha256

    return lookup


def policy_engines(settings: Settings) -> EngineFactory:
    """The policy engine the settings name: the embedded one (regorus), or the OPA server
    (``BROKER_POLICY_ENGINE=opa``, ``connectors.opa``)."""
    if settings.policy_engine == "opa":
        return lambda _decision_path: OpaServerEngine.from_settings(settings)
    return embedded_engines(settings.policy_compiled)


def open_pipeline(
    rt: Runtime, recipients: RecipientDirectory | None = None, config: ReleaseConfig | None = None
) -> ReleasePipeline:
    """The release pipeline: the active policy revision (and the next one ``broker policy
    activate`` swaps in, without a restart), the consent service, the pseudonym master key and
    the budget ledger."""
    return ReleasePipeline(
        LiveDecisionPoint(
            rt.settings, rt.audit, rt.clock, rt.hasher, engines=policy_engines(rt.settings)
        ),
        open_consents(rt),
        ReadingsRepository(rt.data_keys, rt.hasher),
        PseudonymKeys(load_pseudonym_master(rt.settings), rt.audit, rt.clock),
        BudgetLedger(rt.audit, rt.clock),
        recipients or RegistryDirectory(),
        rt.audit,
        rt.clock,
        rt.hasher,
        config,
    )


def open_feeds(rt: Runtime, pipeline: ReleasePipeline | None = None) -> FeedService:
    return FeedService(rt.db, pipeline or open_pipeline(rt), rt.clock, rt.hasher)


def open_outbox(rt: Runtime, settings: PushSettings | None = None) -> Outbox:
    return Outbox(
        rt.db, rt.data_keys, rt.audit, rt.clock, rt.hasher, settings or PushSettings(),
        load_delivery_key(rt.settings),
    )  # fmt: skip


def open_deletions(rt: Runtime, outbox: Outbox | None = None) -> Deletions:
    outbox = outbox or open_outbox(rt)
    due = timedelta(days=outbox.settings.deletion_due_days)
    issuer = OAuthSettings().issuer
    return Deletions(rt.audit, rt.clock, rt.hasher, load_delivery_key(rt.settings), outbox,
                     due, issuer)  # fmt: skip


def open_push(rt: Runtime, feeds: FeedService, settings: PushSettings | None = None) -> PushService:
    """The push worker's service: one consent service for all its rounds (each round refreshes
    it incrementally)."""
    return PushService(rt.db, feeds, open_outbox(rt, settings), open_consents(rt))


def erase_customer(rt: Runtime, customer: str, actor: str, reason: str) -> dict[str, Any]:
    """Erase ``customer`` (``broker.delivery.erasure``); the summary of what was done."""
    erasure = Erasure(
        rt.db, open_consents(rt), open_deletions(rt), rt.data_keys, rt.audit, rt.hasher
    )
    return erasure.erase(customer, actor, reason)
