"""Settings of push delivery and deletion (``BROKER_PUSH_`` variables), split from
``broker.settings`` by concern, as ``broker.oauth.settings`` is."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PushSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_PUSH_", extra="forbid")

    max_attempts: int = Field(default=8, ge=1, le=50)
    """Attempts of one delivery before it becomes a dead letter."""
    backoff_base_s: float = Field(default=2.0, gt=0)
    """Delay ceiling after the first failed attempt; it doubles with every further attempt."""
    backoff_cap_s: float = Field(default=3600.0, gt=0)
    """Largest delay between two attempts (also caps a recipient's Retry-After)."""
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    """Connect and read timeout of one attempt."""
    batch: int = Field(default=50, ge=1, le=1000)
    """Deliveries tried per worker round."""
    poll_s: float = Field(default=5.0, gt=0)
    """How often ``broker serve`` runs the worker round (pushes due, push feeds, deadlines)."""
    ca_file: Path | None = None
    """PEM bundle trusted for recipients' webhook servers; unset: the system's trust store."""
    max_response_bytes: int = Field(default=65_536, ge=1024)
    """How much of a webhook's answer is read (a receipt is small)."""
    deletion_due_days: float = Field(default=30.0, gt=0)
    """Deadline for a recipient to acknowledge a deletion (GDPR Art. 12(3): one month)."""
