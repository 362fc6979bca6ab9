"""The errors of ``broker.delivery``: each a ``BrokerError`` with its status and exit code."""

from __future__ import annotations

from broker.errors import BrokerError


class AlreadyAcknowledged(BrokerError):
    status_code = 409


class BadAcknowledgement(BrokerError):
    status_code = 422


class NotRedrivable(BrokerError):
    status_code = 409


class BadSignature(BrokerError):
    status_code = 401
