"""The running broker of the OAuth tests, for the recipients routes."""

from __future__ import annotations

from tests.broker.oauth.conftest import broker as broker
