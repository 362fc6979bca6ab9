"""The errors of ``broker.oauth``: each a ``BrokerError`` with its status and exit code."""

from __future__ import annotations

from broker.errors import BrokerError, Forbidden


class AuthorizeError(BrokerError):
    """The request cannot even be answered at its redirect URI (unknown client or URI)."""

    status_code = 400


class InvalidGrant(BrokerError):
    status_code = 400


class InsufficientScope(Forbidden):
    """The token lacks a scope the route needs, or its narrowing (``purpose:``, ``consent:``)
    leaves out what was asked (RFC 6750 ``insufficient_scope``)."""

    def __init__(self, needed: list[str], detail: str | None = None) -> None:
        scope = " ".join(needed)
        super().__init__(detail or f"the access token lacks the scope {scope}")
        self.headers = {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'}


class InvalidToken(BrokerError):
    """The bearer token is missing, malformed, expired, not ours, or shown on the wrong
    connection (RFC 6750 ``invalid_token``)."""

    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        safe = message.replace('"', "'").replace("\\", "/")
        self.headers = {
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{safe}"'
        }
