"""The errors of ``broker.recipients``: each a ``BrokerError`` with its status and exit code."""

from __future__ import annotations

from broker.errors import BrokerError


class EgressRefused(BrokerError):
    """A webhook host that reaches an address the broker must not connect to."""


class InvalidRecipient(BrokerError):
    """A registration or change that cannot be accepted (bad name, URL, key, state)."""


class RecipientExists(BrokerError):
    status_code = 409
