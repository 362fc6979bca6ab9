"""The errors of ``broker.customers``: each a ``BrokerError`` with its status and exit code."""

from __future__ import annotations

from broker.errors import BrokerError


class SignInFailed(BrokerError):
    status_code = 401


class AccountError(BrokerError):
    status_code = 422


class IdentityError(BrokerError):
    status_code = 422
