"""Settings of the portal's upstream OpenID Connect sign-in (``BROKER_PORTAL_OIDC_``
variables), split from ``broker.settings`` by concern as ``broker.oauth.settings`` is. Unset
issuer or client id: the portal signs customers in with local accounts only, as before."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.errors import ConfigurationError
from broker.settings import PLACEHOLDERS

CALLBACK_PATH = "/login/oidc/callback"


class PortalOidcSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_PORTAL_OIDC_", extra="forbid")

    issuer: str | None = None
    """The provider's issuer URL (https); discovery is read from
    ``<issuer>/.well-known/openid-configuration`` and its ``issuer`` must be this, exactly."""
    client_id: str | None = None
    """The portal's client id at the provider (the ``aud`` of the ID tokens it accepts)."""
    client_secret: SecretStr | None = None
    """Sent with ``client_secret_basic``; unset: a public client (``none``), PKCE only."""
    redirect_uri: str = "https://localhost:8444" + CALLBACK_PATH
    """The portal's own callback as the provider has it registered."""
    scopes: str = "openid"
    """Space-separated; must include ``openid``."""
    customer_claim: str | None = None
    """An ID token claim whose value is the customer reference; unset: the identity
    (issuer, subject) is looked up in the table ``broker customers link-identity`` fills."""
    ca_bundle: Path | None = None
    """PEM CA certificates trusted for the provider's TLS; unset: the system trust store."""
    provider_name: str | None = None
    """Shown on the sign-in page ("Sign in with ..."); default: the issuer's host name."""
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    """Connect and read timeout of each call to the provider."""
    leeway_s: int = Field(default=60, ge=0, le=300)
    """Clock skew allowed on an ID token's ``exp`` and ``iat``."""
    max_age_s: int = Field(default=600, ge=60, le=3600)
    """How long a sign-in may take from the portal's redirect to the provider's answer (the
    signed state cookie's lifetime), and how old an ID token's ``iat`` may be."""
    discovery_ttl_s: int = Field(default=3600, ge=0)
    """How long discovery and the provider's JWKS are cached (an unknown ``kid`` re-reads the
    JWKS sooner, at most once a minute)."""

    @field_validator("issuer")
    @classmethod
    def _https_issuer(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
                raise ValueError("the issuer must be an https URL without query or fragment")
        return value

    @field_validator("redirect_uri")
    @classmethod
    def _own_callback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or parts.path != CALLBACK_PATH or parts.query:
            raise ValueError(f"the redirect URI is the portal's own https://<host>{CALLBACK_PATH}")
        return value

    @field_validator("scopes")
    @classmethod
    def _openid(cls, value: str) -> str:
        if "openid" not in value.split():
            raise ValueError("the scopes must include openid")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.issuer and self.client_id)

    @property
    def label(self) -> str:
        return self.provider_name or urlsplit(self.issuer or "").hostname or "your provider"

    def refuse_placeholder_secret(self) -> None:
        """Outside development, a placeholder client secret is refused (fail closed)."""
        secret = self.client_secret
        if secret is not None and secret.get_secret_value().lower() in PLACEHOLDERS:
            raise ConfigurationError(
                "BROKER_PORTAL_OIDC_CLIENT_SECRET is a placeholder; set the secret the provider "
                "gave (or BROKER_MODE=development for local experiments)"
            )
