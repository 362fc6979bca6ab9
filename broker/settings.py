"""Settings (``BROKER_`` environment variables) with an embedded default that needs no server.

The default data directory ``./var`` holds the SQLite database, the key files and the CA.
Outside development mode, placeholder secrets and key files readable by group or others are
refused (fail closed).
"""

from __future__ import annotations

import stat
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from broker.errors import ConfigurationError

PLACEHOLDERS = frozenset(
    {"", "changethis", "changeme", "change-me", "secret", "password", "placeholder", "xxx", "todo"}
)


class Mode(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_", extra="forbid")

    mode: Mode = Mode.production
    data_dir: Path = Path("var")
    database_url: SecretStr | None = None
    """SQLAlchemy URL; default ``sqlite:///<data_dir>/broker.db``. PostgreSQL:
    ``postgresql+psycopg://user:password@host:5432/dbname``."""
    audit_origin: str = "smart-meter-broker.example/audit"
    """The log's origin line in checkpoints (C2SP tlog-checkpoint)."""
    host: str = "127.0.0.1"
    port: int = 8443
    consent_max_days: int = Field(default=365, ge=1, le=3660)
    """The longest a consent may run from the event that gives or modifies it (12 months by
    default, as the design says); beyond it the customer must consent again."""
    mdms_max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest batch body the MDMS reads (413 beyond)."""
    mdms_rate_frames_per_s: float = Field(default=50_000.0, gt=0)
    """Frames a second each concentrator may send (429 with Retry-After beyond)."""
    mdms_burst_frames: float = Field(default=100_000.0, gt=0)
    mdms_queue_batches: int = Field(default=16, ge=1)
    """Batches waiting or in ingest at once (503 with Retry-After beyond)."""
    mdms_workers: int = Field(default=1, ge=1, le=64)
    mdms_max_future_s: int = Field(default=900, ge=0)
    """How far ahead of the MDMS clock an interval may end (a meter clock running fast)."""
    mdms_max_age_s: int = Field(default=35 * 86_400, ge=3600)
    """How old an interval may be when it arrives."""
    mdms_key_grace_s: int = Field(default=86_400, ge=0)
    """How long frames under a rotated-out meter key still verify."""
    api_rate_per_s: float = Field(default=20.0, gt=0)
    """Requests a second each client certificate may make to the feeds and regulator routes
    (429 with Retry-After beyond)."""
    api_burst: float = Field(default=40.0, ge=1)
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest request body of the API's routes (413 beyond); the MDMS ingest and the token
    endpoint keep their own bounds (``mdms_max_body_bytes``, the OAuth settings)."""
    portal_rate_per_s: float = Field(default=1.0, gt=0)
    """Sign-ins a second from one client address, and consent decisions and withdrawals a
    second of one customer, on the portal (429 with Retry-After beyond)."""
    portal_burst: float = Field(default=20.0, ge=1)
    portal_max_body_bytes: int = Field(default=16 * 1024, ge=1024)
    """Largest form the portal reads (413 beyond)."""
    policy_engine: Literal["embedded", "opa"] = "embedded"
    """Where Rego runs: in process (regorus) or on an OPA server (``opa_url``)."""
    policy_compiled: bool = True
    """Run the release decision compiled for regorus's VM (2-3x faster); false: interpreter."""
    opa_url: str | None = None
    """The OPA server, ``https://host:port`` (plain http to a loopback address only)."""
    opa_ca_bundle: Path | None = None
    """PEM CA certificates that sign the OPA server's certificate (a private CA); default: the
    system's public CAs."""
    opa_client_cert: Path | None = None
    opa_client_key: Path | None = None
    """Client certificate and key for mutual TLS with OPA (``--authentication=tls``)."""
    opa_token: SecretStr | None = None
    """Bearer token for OPA (``--authentication=token``)."""
    opa_timeout_s: float = Field(default=1.0, gt=0, le=30)
    """Bound on each connect and each read from OPA; a decision it cuts short is a deny."""
    # portal sessions and sign-in throttling
    portal_session_s: int = Field(default=1800, ge=60, le=86_400)
    """How long a portal session lasts from sign-in (production default 1800 s); sign-out ends
    it at once on the server, a password change ends every session of the customer."""
    portal_signin_free_failures: int = Field(default=3, ge=1, le=100)
    """Consecutive wrong passwords of one account before each further attempt must wait
    (production default 3)."""
    portal_signin_source_free_failures: int = Field(default=20, ge=1, le=10_000)
    """Wrong passwords from one client address, for any accounts, before each further sign-in
    from it must wait (production default 20)."""
    portal_signin_delay_s: float = Field(default=2.0, gt=0, le=3600)
    """The first wait after those failures; each further wrong password doubles it
    (production default 2 s). Attempts during a wait get 429 and are not checked."""
    portal_signin_max_delay_s: float = Field(default=300.0, gt=0, le=86_400)
    """The longest wait (production default 300 s): a stranger can slow an account, never lock
    it; after the wait the right password always signs in."""

    # recipient certificate lifecycle
    recipient_cert_max_days: int = Field(default=90, ge=1, le=397)
    """Longest validity of a recipient's client certificate, in days (production default 90;
    never more than 397, the CA/Browser Forum's ceiling). A request for more is refused."""
    recipient_cert_max_live: int = Field(default=2, ge=1, le=10)
    """Unexpired, unrevoked certificates one recipient may hold at once (production default 2:
    the new one and the one it replaces, so a renewal can roll out). Issuing beyond it revokes
    the oldest (reason superseded, into the CRL)."""

    # HTTP transport hardening
    http_header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Longest wait for a request's headers, from the connection's handshake or from the first
    byte of a request on a kept-alive connection (production default 10 s): a slower client
    (slowloris) is disconnected. Applies to the API and the portal."""
    http_keepalive_timeout_s: int = Field(default=5, ge=1, le=300)
    """How long an idle kept-alive connection stays open (production default 5 s)."""

    # webhook egress (SSRF)
    webhook_allow_private: bool = False
    """Let webhooks reach loopback, private (RFC 1918), unique-local (fc00::/7) and shared
    (100.64.0.0/10) addresses, on the ports of ``webhook_private_ports`` only, for on-premises
    recipients (production default false, in every mode: refused at registration and at every
    connection). Link-local, multicast and reserved addresses stay refused regardless."""
    webhook_private_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, max_length=64
    )
    """The ports a private webhook may use when ``webhook_allow_private`` is on, as JSON:
    ``BROKER_WEBHOOK_PRIVATE_PORTS='[9443]'`` (production default empty: none)."""

    # retention of the broker's own data
    retention_readings_days: int = Field(default=730, ge=1, le=36_500)
    """Days a meter's stored readings are kept, counted in whole UTC days before today
    (production default 730: two years, for billing disputes); older reading days are deleted
    by the retention job (``broker retention run``, and ``broker serve`` every
    ``retention_interval_s``)."""
    retention_delivery_bodies_days: int = Field(default=30, ge=1, le=3660)
    """Days a webhook delivery's sealed body is kept after it was queued (production default
    30); then the body is erased (its SHA-256 and the recipient's receipt stay as proof), and
    a delivery still pending is dead-lettered."""
    retention_decision_inputs_days: int = Field(default=365, ge=1, le=3660)
    """Days the input of a release decision is kept for ``broker policy diff`` replays
    (production default 365); then it is erased, and the decision's outcome, purpose,
    recipient and tier stay for metrics."""
    retention_portal_days: int = Field(default=7, ge=1, le=3660)
    """Days an expired portal session, and a sign-in throttle row whose last failure and wait
    are over, are kept (production default 7); then they are deleted."""
    retention_interval_s: int = Field(default=3600, ge=60, le=7 * 86_400)
    """How often ``broker serve`` runs the retention job (production default 3600 s)."""

    @property
    def development(self) -> bool:
        return self.mode is Mode.development

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def ca_dir(self) -> Path:
        return self.data_dir / "ca"

    def db_url(self) -> str:
        if self.database_url is not None:
            url = self.database_url.get_secret_value()
            self._refuse_placeholder_password(url)
            return url
        return f"sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    def _refuse_placeholder_password(self, url: str) -> None:
        password = make_url(url).password
        if password is not None and password.lower() in PLACEHOLDERS and not self.development:
            raise ConfigurationError(
                "BROKER_DATABASE_URL uses a placeholder password; set a real one "
                "(or BROKER_MODE=development for local experiments)"
            )

    def check_secret_file(self, path: Path) -> None:
        """Refuse a key file that others can read, or that is empty, outside development."""
        if not path.exists():
            raise ConfigurationError(f"key file {path} does not exist; run `broker init` first")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077 and not self.development:
            raise ConfigurationError(
                f"key file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`"
            )


def load_settings() -> Settings:
    """The settings from the environment; a bad value is a ``ConfigurationError`` naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"BROKER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
