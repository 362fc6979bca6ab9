"""The runtime: everything a command or the server needs, built from settings in one place.

``init_data_dir`` creates a fresh data directory (keys, database schema); the CA is created by
``broker ca init`` or ``broker init``. ``Runtime.open`` loads what exists and fails with a
clear message when something is missing or unsafe.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.log import AuditLog
from broker.audit.note import NoteSigner
from broker.ca.authority import CertificateAuthority
from broker.errors import ConfigurationError
from broker.keys.files import (
    read_b64_key,
    read_ed25519_key,
    write_b64_key,
    write_ed25519_key,
    write_secret_file,
)
from broker.keys.provider import FileKeyProvider
from broker.keys.service import DataKeys
from broker.kit.clock import Clock, SystemClock
from broker.kit.ids import SubjectHasher
from broker.schema import migrate
from broker.settings import Settings
from broker.storage.db import Database
from connectors.mdms.ingest import IngestPipeline, IngestSettings
from connectors.mdms.limits import LimitSettings
from connectors.mdms.registry import MeterRegistry


def subject_key_path(settings: Settings) -> Path:
    return settings.keys_dir / "subject-hash.key"


def audit_signing_key_path(settings: Settings) -> Path:
    return settings.keys_dir / "audit-signing.key"


def audit_public_key_path(settings: Settings) -> Path:
    """The audit log's verifier key (C2SP note format), public: give it to regulators."""
    return settings.keys_dir / "audit-signing.pub"


def init_keys(settings: Settings) -> None:
    """Generate the KEK, the subject-hash key, the audit signing key and the consent receipt
    key (each once, 0600)."""
    settings.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    FileKeyProvider.create(settings)
    write_b64_key(subject_key_path(settings), secrets.token_bytes(32))
    signing = Ed25519PrivateKey.generate()
    pem = signing.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret_file(audit_signing_key_path(settings), pem)
    vkey = NoteSigner(settings.audit_origin, signing).verifier_key()
    audit_public_key_path(settings).write_text(vkey + "\n")
    create_consent_receipt_key(settings)


def consent_receipt_key_path(settings: Settings) -> Path:
    return settings.keys_dir / "consent-receipt.key"


def consent_receipt_public_key_path(settings: Settings) -> Path:
    """The consent receipts' verifier key (PEM), public: customers check receipts with it."""
    return settings.keys_dir / "consent-receipt.pub"


def create_consent_receipt_key(settings: Settings) -> None:
    """Generate the Ed25519 key that signs consent receipts (0600; refuses to overwrite one)
    and write its public key beside it."""
    write_ed25519_key(consent_receipt_key_path(settings), consent_receipt_public_key_path(settings))


def load_audit_signer(settings: Settings) -> NoteSigner:
    key = read_ed25519_key(settings, audit_signing_key_path(settings), "audit signing key")
    return NoteSigner(settings.audit_origin, key)


def keys_initialised(settings: Settings) -> bool:
    return audit_signing_key_path(settings).exists()


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory (0700) if needed; the first step of ``broker init``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    hasher: SubjectHasher
    kek: FileKeyProvider
    audit: AuditLog
    data_keys: DataKeys
    meters: MeterRegistry
    ingest: IngestPipeline

    @classmethod
    def open(cls, settings: Settings, clock: Clock | None = None) -> Runtime:
        if not settings.data_dir.is_dir():
            raise ConfigurationError(
                f"data directory {settings.data_dir} does not exist; run `broker init` first"
            )
        clock = clock or SystemClock()
        hasher = SubjectHasher(read_b64_key(settings, subject_key_path(settings)))
        kek = FileKeyProvider(settings)
        audit = AuditLog(settings.audit_origin, load_audit_signer(settings), clock)
        db = Database.from_url(settings.db_url())
        data_keys = DataKeys(kek, audit, clock, hasher)
        meters = MeterRegistry(kek, data_keys, audit, clock, hasher)
        ingest = IngestPipeline(meters, data_keys, audit, clock, hasher, ingest_settings(settings))
        return cls(settings, db, clock, hasher, kek, audit, data_keys, meters, ingest)

    def close(self) -> None:
        self.db.dispose()


def ingest_settings(settings: Settings) -> IngestSettings:
    return IngestSettings(
        max_future_s=settings.mdms_max_future_s,
        max_age_s=settings.mdms_max_age_s,
        key_grace_s=settings.mdms_key_grace_s,
    )


def limit_settings(settings: Settings) -> LimitSettings:
    return LimitSettings(
        max_body_bytes=settings.mdms_max_body_bytes,
        rate_frames_per_s=settings.mdms_rate_frames_per_s,
        burst_frames=settings.mdms_burst_frames,
        queue_batches=settings.mdms_queue_batches,
        workers=settings.mdms_workers,
    )


def initialise(settings: Settings, clock: Clock) -> None:
    """Create what is missing of the data directory, keys, schema and CA (safe to repeat)."""
    prepare_data_dir(settings)
    if not keys_initialised(settings):
        init_keys(settings)
    upgrade_schema(settings).dispose()
    if not (settings.ca_dir / "ca.pem").exists():
        CertificateAuthority.create(settings, clock)


def upgrade_schema(settings: Settings) -> Database:
    db = Database.from_url(settings.db_url())
    db.ping()
    migrate.upgrade(db.engine)
    return db


def rotate_kek(rt: Runtime, actor: str) -> dict[str, object]:
    """Add a KEK version, re-wrap every data key and meter key under it (no data is
    re-encrypted), then retire the versions nothing is wrapped by any more."""
    new_kek = rt.kek.add_version()
    with rt.db.transaction() as session:
        report = rt.data_keys.rewrap_all(session, actor)
        meter_keys = rt.meters.rewrap_all(session, actor)
        in_use = set(rt.data_keys.usage_by_kek(session)) | set(rt.meters.usage_by_kek(session))
    retired = [k for k in rt.kek.kek_ids() if k != new_kek and k not in in_use]
    for kek_id in retired:
        rt.kek.retire(kek_id)
    return {
        "kek": new_kek,
        "rewrapped": report.rewrapped,
        "meter_keys_rewrapped": meter_keys,
        "retired": retired,
    }
