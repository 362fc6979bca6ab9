"""Settings of the OAuth side (``BROKER_OAUTH_`` variables), split from ``broker.settings``
by concern: the token endpoint's identity, token lifetime and its limits (T7, C1.8)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OAuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_OAUTH_", extra="forbid")

    issuer: str = "https://localhost:8443"
    """The broker's public base URL: ``iss`` of its tokens, and ``<issuer>/oauth/token`` is
    the only ``aud`` a client assertion may name (RFC 7523 §3)."""
    audience: str = "smart-meter-broker"
    """``aud`` of the access tokens: the broker's resource routes."""
    token_ttl_s: int = Field(default=300, ge=30, le=3600)
    """Lifetime of an access token."""
    assertion_max_s: int = Field(default=300, ge=30, le=3600)
    """How far ahead a client assertion's ``exp`` may lie (and how long its jti is kept)."""
    max_body_bytes: int = Field(default=8192, ge=512)
    """Largest token request body (413 beyond)."""
    rate_per_s: float = Field(default=5.0, gt=0)
    """Token requests a second per client certificate (429 with Retry-After beyond)."""
    burst: float = Field(default=20.0, ge=1)

    @property
    def token_endpoint(self) -> str:
        return self.issuer.rstrip("/") + "/oauth/token"
